#!/usr/bin/python3
"""Mutated frames for the parser's end-to-end invariant, built with scapy.

Writes frames to OUT as a stream of (u16 big-endian length, frame bytes),
each source's frames together: IPv4 and IPv6 SIP datagrams with IPv4
options, IPv6 extension-header chains past any walk, fragments in either
order (first fragments of only the UDP header, or ending inside the IPv6
extension chain, among them), UDP and IP lengths that disagree, trailers
past the datagram, v4-mapped IPv6 sources and VLAN stacks up to three
deep. Every source (IPv4 address, or IPv6 /64)
appears under one index only, so what a socket receives from it can be
compared with what the XDP program counted for it.

usage: mutated_frames.py OUT SOURCES SEED SRC_MAC DST_MAC DST4 DST6 VLANS
(VLANS: comma-separated tag ids, outermost first, that the server has
stacked devices for.)
"""

import random
import struct
import sys

from scapy.all import (
    IP,
    UDP,
    Dot1Q,
    Ether,
    IPOption_NOP,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
)

out, sources, seed, src_mac, dst_mac, dst4, dst6, vlans = sys.argv[1:9]
rng = random.Random(int(seed))
vlans = [int(v) for v in vlans.split(",") if v]

METHODS = [b"OPTIONS", b"REGISTER", b"INVITE", b"SUBSCRIBE", b"BYE"]


def payload(i):
    kind = rng.random()
    if kind < 0.08:
        return b"\r\n\r\n"
    if kind < 0.12:
        return rng.randbytes(rng.randrange(1, 40))
    m = rng.choice(METHODS)
    body = b"a=x\r\n" * rng.choice([0, 0, 0, 20, 200, 400])
    msg = (
        m + b" sip:100@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.77;branch=z9hG4bK-%d\r\n"
        b"From: <sip:%d@example.com>;tag=1\r\nTo: <sip:100@example.com>\r\n"
        b"Call-ID: %d@lab\r\nCSeq: 1 " % (i, i, i)
        + m
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    return msg


def source(i, family):
    """Source `i`'s address bytes: an IPv4 address, a v4-mapped IPv6 one,
    or an address in a /64 of its own."""
    v4 = bytes([100, 64 + (i >> 16), (i >> 8) & 255, i & 255])
    if family == 4:
        return v4
    if family == 46:
        return bytes(10) + b"\xff\xff" + v4
    return struct.pack("!HHHH", 0x2001, 0xDB8, 0x8000 | (i >> 16), i & 0xFFFF) + rng.randbytes(8)


def v6_chain():
    n = rng.choice([0, 0, 1, 2, 6, 7, 8, 9])
    hdrs = []
    if n and rng.random() < 0.3:
        hdrs.append(IPv6ExtHdrHopByHop())
        n -= 1
    for _ in range(n):
        hdrs.append(rng.choice([IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(segleft=0)]))
    return hdrs


def template(family):
    """A datagram built by scapy, and where its UDP header starts."""
    udp = UDP(sport=rng.randrange(1024, 65535), dport=5060) / Raw(payload(rng.randrange(1 << 20)))
    if family == 4:
        opts = [IPOption_NOP()] * rng.choice([0, 0, 0, 4, 8, 20])
        pkt = IP(src="100.64.0.1", dst=dst4, options=opts) / udp
    else:
        pkt = IPv6(src="2001:db8:8000::1", dst=dst6)
        for h in v6_chain():
            pkt = pkt / h
        pkt = pkt / udp
    raw = bytes(pkt)
    return raw, len(raw) - len(bytes(udp))


TEMPLATES = {f: [template(f) for _ in range(150)] for f in (4, 6)}


def from_source(family, src, ident):
    """A template datagram re-addressed from `src`, its checksums set."""
    raw, l4 = rng.choice(TEMPLATES[4 if family == 4 else 6])
    raw = bytearray(raw)
    udp_len = len(raw) - l4
    raw[l4 + 6 : l4 + 8] = b"\0\0"
    if family == 4:
        raw[12:16] = src
        raw[4:6] = struct.pack("!H", ident & 0xFFFF)
        raw[10:12] = b"\0\0"
        raw[10:12] = struct.pack("!H", checksum(bytes(raw[: (raw[0] & 15) * 4])))
        pseudo = src + raw[16:20] + struct.pack("!BBH", 0, 17, udp_len)
    else:
        raw[8:24] = src
        pseudo = src + raw[24:40] + struct.pack("!IxxxB", udp_len, 17)
    c = checksum(bytes(pseudo) + bytes(raw[l4:])) or 0xFFFF
    raw[l4 + 6 : l4 + 8] = struct.pack("!H", c)
    return raw, l4


def pieces(length, first):
    """The (start, end) of each fragment of `length` fragmentable bytes: the
    first `first`, then the rest in two at an eight-byte boundary."""
    cuts = [0, first]
    rest = length - first
    if rest > 16:
        cuts.append(first + (rest // 2) // 8 * 8)
    cuts.append(length)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def v4_fragments(raw, first):
    """The datagram `raw` (checksums set) cut after `first` bytes of L4 and
    again in the middle of the rest: IPv4 fragments, offsets in 8-byte
    units, each header's checksum recomputed."""
    hlen = (raw[0] & 15) * 4
    head, body = raw[:hlen], raw[hlen:]
    frames = []
    for a, b in pieces(len(body), first):
        h = bytearray(head)
        more = 0x2000 if b < len(body) else 0
        h[2:4] = struct.pack("!H", hlen + b - a)
        h[6:8] = struct.pack("!H", more | (a // 8))
        h[10:12] = b"\0\0"
        h[10:12] = struct.pack("!H", checksum(bytes(h)))
        frames.append(bytes(h) + body[a:b])
    return frames


def v6_fragments(raw, first, ident):
    """The datagram `raw` with a Fragment header after its IPv6 header and
    everything after it fragmentable: cut after `first` bytes, then in the
    middle of the rest."""
    head, body = bytearray(raw[:40]), raw[40:]
    nh = head[6]
    head[6] = 44
    frames = []
    for a, b in pieces(len(body), first):
        more = 1 if b < len(body) else 0
        h = bytearray(head)
        h[4:6] = struct.pack("!H", 8 + b - a)
        frag = struct.pack("!BBHI", nh, 0, a | more, ident)
        frames.append(bytes(h) + frag + body[a:b])
    return frames


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def datagrams(src, family):
    raw, l4 = from_source(family, src, rng.randrange(65536))
    r = rng.random()
    if r < 0.25:
        # Fragments, in either order; some first fragments carry the UDP
        # header and nothing more, or too little to classify.
        ip = (raw[0] & 15) * 4 if family == 4 else 40
        first = (l4 - ip + rng.choice([8, 16, 24, 64, 256, 512, 1024]) + 7) // 8 * 8
        if family != 4 and l4 - ip >= 16 and rng.random() < 0.3:
            # A first fragment that ends inside the extension chain: Linux
            # queues it, and the datagram that reassembles is delivered.
            first = 8
        if family == 4:
            frames = v4_fragments(bytes(raw), first)
        else:
            frames = v6_fragments(bytes(raw), first, rng.randrange(1 << 32))
        if rng.random() < 0.5:
            frames.reverse()
        return frames
    if r < 0.4:
        # The UDP length disagrees with the IP length.
        ulen = struct.unpack("!H", raw[l4 + 4 : l4 + 6])[0]
        new = rng.choice([0, 0, 7, 8, ulen - 1, ulen + 1, ulen + 100, ulen // 2])
        raw[l4 + 4 : l4 + 6] = struct.pack("!H", max(0, min(new, 65535)))
    elif r < 0.45:
        # A trailer past the IP datagram.
        raw += rng.randbytes(rng.randrange(1, 60))
    return [bytes(raw)]


def ether(frame, family):
    tags = vlans[: rng.choice([0, 0, 0, 0, 1, 2, 3])] if vlans else []
    ethertype = 0x0800 if family == 4 else 0x86DD
    head = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    for t in tags:
        head += struct.pack("!HH", 0x8100, t)
    return head + struct.pack("!H", ethertype) + frame


written = 0
with open(out, "wb") as f:
    for i in range(int(sources)):
        family = rng.choice([4, 4, 4, 6, 6, 6, 46])
        src = source(i, family)
        for _ in range(rng.choice([1, 2, 3, 4, 5])):
            for frame in datagrams(src, family):
                e = ether(frame, 4 if family == 4 else 6)
                f.write(struct.pack("!H", len(e)) + e)
                written += 1
print(written)
