//! Reading a frame down to its UDP payload as Linux's receive path does,
//! so that what the XDP program judges is what a socket would be given:
//! the source, the ports, and the payload bounded by the frame, the IP
//! length and the UDP length, whichever ends first. A frame Linux would
//! not deliver, or whose shape no IP stack sends, is refused as invalid
//! rather than passed unread.
//!
//! Pure: the kernel runs it over its packet, the host tests and the fuzz
//! target over byte slices, against `model`, a plain transcription of the
//! checks Linux makes. Imports nothing but the address key and the
//! classifier's window.

#[cfg(not(target_arch = "bpf"))]
pub mod model;
#[cfg(test)]
mod tests;

use crate::{addr::v4_mapped, IpKey};

/// A frame's bytes, bounds-checked.
pub trait Packet {
    /// The frame's length.
    fn frame_len(&self) -> usize;
    /// The `N` bytes at `off`, or `None` where the frame ends first.
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
    /// `v`, in a form the BPF verifier knows only by the bound checked
    /// after it: the code after the call is then walked once, not once per
    /// header layout. Elsewhere `v` itself.
    #[inline(always)]
    fn opaque(&self, v: usize) -> usize {
        v
    }
}

impl Packet for [u8] {
    fn frame_len(&self) -> usize {
        self.len()
    }
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

pub const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// VLAN tags walked. Linux delivers a stack of any depth to stacked VLAN
/// devices; past this one no network is built, and the frame is refused.
pub const MAX_VLAN_TAGS: usize = 8;
/// IPv6 extension headers walked before the upper layer. RFC 8200 §4.1
/// orders at most six before it (Hop-by-Hop, Destination Options, Routing,
/// Fragment, AH, Destination Options); a longer chain is `LongChain`.
pub const MAX_EXT_HDRS: usize = 6;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const UDP_HLEN: usize = 8;

/// Why a frame has no network layer to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
    NotIp,
    /// The frame ends inside a header Linux must read: it drops the frame.
    Truncated,
    /// Linux drops it (a version that is not the EtherType's, an IP length
    /// past the frame or short of its header, an IPv6 payload length of
    /// 0, a header chain or UDP header past the IP length), or no network
    /// sends it (more VLAN tags than `MAX_VLAN_TAGS`).
    Invalid,
}

/// What part of a datagram the frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Whole,
    /// Offset 0 with more to come: the upper-layer header and the head of
    /// the payload, which Linux reassembles with the rest.
    FirstFragment,
    /// No upper-layer header: judged by its source alone.
    LaterFragment,
    /// An IPv6 extension chain longer than `MAX_EXT_HDRS`: Linux walks it,
    /// no stack sends it. Not read further; never passed as unreadable.
    LongChain,
}

/// The network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    pub src: IpKey,
    pub dst: IpKey,
    pub v6: bool,
    /// The upper-layer protocol, as far as the walk got.
    pub proto: u8,
    pub l4_off: usize,
    /// Where the IP datagram (or fragment, trimmed as Linux trims it)
    /// ends in the frame: Ethernet padding after it is never read as
    /// payload.
    pub end: usize,
    pub shape: Shape,
}

/// The EtherType and offset of the IP header, past up to `MAX_VLAN_TAGS`
/// 802.1Q/802.1ad tags.
#[inline(always)]
pub fn ethernet(p: &(impl Packet + ?Sized)) -> Result<(u16, usize), Refusal> {
    let t: &[u8; 2] = p.bytes(12).ok_or(Refusal::Truncated)?;
    let mut proto = u16::from_be_bytes(*t);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            return Ok((proto, off));
        }
        let t: &[u8; 2] = p.bytes(off + 2).ok_or(Refusal::Truncated)?;
        proto = u16::from_be_bytes(*t);
        off += VLAN_HLEN;
    }
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        return Err(Refusal::Invalid);
    }
    Ok((proto, off))
}

/// The network layer: the addresses, the upper layer and its offset, and
/// the datagram's end.
#[inline(always)]
pub fn network(p: &(impl Packet + ?Sized)) -> Result<Network, Refusal> {
    let (proto, off) = ethernet(p)?;
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return Err(Refusal::NotIp);
    }
    let off = p.opaque(off);
    if off > ETH_HLEN + VLAN_HLEN * MAX_VLAN_TAGS {
        return Err(Refusal::Truncated);
    }
    if proto == ETH_P_IP {
        ipv4(p, off)
    } else {
        ipv6(p, off)
    }
}

#[inline(always)]
fn ipv4(p: &(impl Packet + ?Sized), off: usize) -> Result<Network, Refusal> {
    let h: &[u8; 20] = p.bytes(off).ok_or(Refusal::Truncated)?;
    // IHL counts 32-bit words, options included.
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || off + total > p.frame_len() {
        return Err(Refusal::Invalid);
    }
    let frags = u16::from_be_bytes([h[6], h[7]]);
    let (shape, data) = if frags & 0x1fff != 0 {
        (Shape::LaterFragment, total - ihl)
    } else if frags & 0x2000 != 0 {
        // Linux trims a fragment with more to come to whole eight-byte
        // units (`ip_frag_queue`): the rest never reaches the socket.
        (Shape::FirstFragment, (total - ihl) & !7)
    } else {
        (Shape::Whole, total - ihl)
    };
    Ok(Network {
        src: v4_mapped([h[12], h[13], h[14], h[15]]),
        dst: v4_mapped([h[16], h[17], h[18], h[19]]),
        v6: false,
        proto: h[9],
        l4_off: off + ihl,
        end: off + ihl + data,
        shape,
    })
}

#[inline(always)]
fn ipv6(p: &(impl Packet + ?Sized), off: usize) -> Result<Network, Refusal> {
    let h: &[u8; 40] = p.bytes(off).ok_or(Refusal::Truncated)?;
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    // A payload length of 0 is a jumbogram's, which needs a link with
    // frames past 64 KiB; Linux drops one anywhere else.
    if h[0] >> 4 != 6 || len == 0 || off + 40 + len > p.frame_len() {
        return Err(Refusal::Invalid);
    }
    let mut n = Network {
        src: addr16(h, 8),
        dst: addr16(h, 24),
        v6: true,
        proto: h[6],
        l4_off: off + 40,
        end: off + 40 + len,
        shape: Shape::Whole,
    };
    for _ in 0..MAX_EXT_HDRS {
        let at = n.l4_off;
        let step = match n.proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let e: &[u8; 2] = p.bytes(at).ok_or(Refusal::Invalid)?;
                n.proto = e[0];
                (usize::from(e[1]) + 1) * 8
            }
            IPPROTO_AH => {
                let e: &[u8; 2] = p.bytes(at).ok_or(Refusal::Invalid)?;
                n.proto = e[0];
                (usize::from(e[1]) + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let e: &[u8; 4] = p.bytes(at).ok_or(Refusal::Invalid)?;
                n.proto = e[0];
                let frag = u16::from_be_bytes([e[2], e[3]]);
                if frag & 0xfff8 != 0 {
                    n.l4_off = at + 8;
                    n.shape = Shape::LaterFragment;
                    return if n.l4_off > n.end {
                        Err(Refusal::Invalid)
                    } else {
                        Ok(n)
                    };
                }
                // Offset 0 without more is an atomic fragment (RFC 6946):
                // a whole datagram.
                if frag & 1 != 0 {
                    n.shape = Shape::FirstFragment;
                }
                8
            }
            _ => return checked_end(n),
        };
        n.l4_off = at + step;
        if n.l4_off > n.end {
            return Err(Refusal::Invalid);
        }
    }
    if is_extension(n.proto) {
        n.shape = Shape::LongChain;
    }
    checked_end(n)
}

#[inline(always)]
fn checked_end(n: Network) -> Result<Network, Refusal> {
    if n.l4_off > n.end {
        Err(Refusal::Invalid)
    } else {
        Ok(n)
    }
}

#[inline(always)]
fn addr16(h: &[u8; 40], at: usize) -> IpKey {
    let mut a = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        a[i] = h[at + i];
        i += 1;
    }
    a
}

/// The extension headers the walk steps over.
#[inline(always)]
pub fn is_extension(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH
    )
}

/// UDP payload bytes a first fragment must hold (or all of the payload, if
/// less): the classifier, the deny lists and the samples read the head of
/// a fragmented datagram only, and no stack fragments earlier. Linux's
/// smallest path MTU (`min_pmtu`, 552) leaves a first fragment 520 bytes
/// of payload, Windows' 576 more, and IPv6's 1,280-byte minimum MTU more
/// than twice that; a fragment of a few bytes only hides what follows.
pub const FIRST_FRAGMENT_HEAD: usize = 512;

/// A UDP header and the payload a socket is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_off: usize,
    /// Bytes of payload in this frame that the socket gets: the UDP length
    /// (an IPv6 UDP length of 0 meaning the rest of the datagram, as Linux
    /// reads it), bounded by the IP length. For a first fragment, the head
    /// in this frame.
    pub payload_len: usize,
    /// False for a length Linux refuses (shorter than the header, past the
    /// IP length, an IPv4 length of 0) and for a first fragment shorter
    /// than `FIRST_FRAGMENT_HEAD`: its head is not what the socket will be
    /// given, and no stack fragments so early.
    pub valid: bool,
}

/// The UDP header at `n.l4_off`. Only for a `Whole` or `FirstFragment`
/// network layer whose protocol is UDP.
#[inline(always)]
pub fn udp(p: &(impl Packet + ?Sized), n: &Network) -> Result<Udp, Refusal> {
    let l4 = n.l4_off;
    // A UDP header cut by the IP length (a first fragment of 8 bytes
    // carries a whole one): Linux drops it.
    if l4 + UDP_HLEN > n.end {
        return Err(Refusal::Invalid);
    }
    let h: &[u8; 8] = p.bytes(l4).ok_or(Refusal::Truncated)?;
    let ulen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let room = n.end - l4 - UDP_HLEN;
    let (payload_len, valid) = if n.v6 && ulen == 0 {
        // RFC 2675's reading, which Linux applies to any IPv6 datagram.
        (room, n.shape == Shape::Whole || room >= FIRST_FRAGMENT_HEAD)
    } else if ulen < UDP_HLEN {
        (0, false)
    } else if n.shape == Shape::Whole {
        let want = ulen - UDP_HLEN;
        if want > room {
            (0, false)
        } else {
            // Linux trims the datagram to the UDP length.
            (want, true)
        }
    } else {
        let want = ulen - UDP_HLEN;
        let head = if want < room { want } else { room };
        let least = if want < FIRST_FRAGMENT_HEAD {
            want
        } else {
            FIRST_FRAGMENT_HEAD
        };
        (head, head >= least)
    };
    Ok(Udp {
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        payload_off: l4 + UDP_HLEN,
        payload_len,
        valid,
    })
}

/// The destination port of a TCP segment: all a ban needs.
#[inline(always)]
pub fn tcp_dst_port(p: &(impl Packet + ?Sized), n: &Network) -> Result<u16, Refusal> {
    let h: &[u8; 4] = p.bytes(n.l4_off).ok_or(Refusal::Truncated)?;
    Ok(u16::from_be_bytes([h[2], h[3]]))
}
