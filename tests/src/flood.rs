//! A bounded UDP flood from many spoofed sources, sent as ready-made
//! Ethernet frames through `AF_PACKET` sockets with `sendmmsg`.
//!
//! Why this generator: every frame (one per source, UDP checksum included)
//! is built once, so the sender's per-packet work is one copy into an skb and
//! the driver's transmit, the same in every row of a comparison. 64 frames
//! go per system call, with the qdisc bypassed. It is bounded by a packet
//! count and a deadline in the same loop, and needs no package beyond this
//! crate.

use std::{
    ffi::CString,
    net::Ipv6Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;

use crate::lab::Netns;

/// Frames per `sendmmsg` call.
const BATCH: usize = 64;

/// An OPTIONS request the size of what scanners and trunks send (about 560
/// bytes of UDP payload): full header set, a User-Agent, no body.
pub fn options_payload(src: Ipv6Addr, dst: Ipv6Addr, n: usize) -> Vec<u8> {
    options_payload_as(src, dst, n, "friendly-scanner")
}

/// The same OPTIONS with another User-Agent.
pub fn options_payload_as(src: Ipv6Addr, dst: Ipv6Addr, n: usize, user_agent: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:100@[{dst}]:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP [{src}]:5060;branch=z9hG4bK-{n:08x}-flood;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"100\" <sip:100@[{src}]>;tag={n:08x}a1b2c3d4\r\n\
         To: \"100\" <sip:100@[{dst}]>\r\n\
         Call-ID: {n:08x}-7f3a9c1e5b2d4f6a8c0e@[{src}]\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:100@[{src}]:5060>\r\n\
         Accept: application/sdp\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY, REFER, UPDATE\r\n\
         Supported: replaces, timer, path\r\n\
         User-Agent: {user_agent}\r\n\
         Accept-Language: en\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A REGISTER without credentials from `src`, as a registration storm
/// (or a phone's first try) sends it: a registrar challenges each.
pub fn register_payload(src: Ipv6Addr, dst: Ipv6Addr, n: usize) -> Vec<u8> {
    format!(
        "REGISTER sip:[{dst}] SIP/2.0\r\n\
         Via: SIP/2.0/UDP [{src}]:5060;branch=z9hG4bK-{n:08x}-reg;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1{n:03}@[{dst}]>;tag={n:08x}r\r\n\
         To: <sip:1{n:03}@[{dst}]>\r\n\
         Call-ID: {n:08x}-reg@[{src}]\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:1{n:03}@[{src}]:5060>\r\n\
         Expires: 3600\r\n\
         User-Agent: Grandstream GXP2170\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One REGISTER frame per source (`register_payload`).
pub fn register_frames(target: &Target, sources: &[Ipv6Addr]) -> Vec<Vec<u8>> {
    sources
        .iter()
        .enumerate()
        .map(|(n, src)| v6_frame(target, *src, &register_payload(*src, target.dst, n % 1000)))
        .collect()
}

/// `n` pseudo-random IPv6 sources (xorshift from `seed`, so a run can be
/// repeated): `prefix`, then random bytes to the end of the address.
pub fn random_sources(prefix: &[u8], n: usize, seed: u64) -> Vec<Ipv6Addr> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            let mut a = [0u8; 16];
            a[..prefix.len()].copy_from_slice(prefix);
            for chunk in a[prefix.len()..].chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_be_bytes()[..chunk.len()]);
            }
            Ipv6Addr::from(a)
        })
        .collect()
}

/// What a sender is aimed at.
pub struct Target {
    pub src_mac: [u8; 6],
    /// The receiving veth end's MAC.
    pub dst_mac: [u8; 6],
    pub dst: Ipv6Addr,
    pub dport: u16,
}

/// One frame per source, UDP 5060 -> `target.dport`.
pub fn frames(target: &Target, sources: &[Ipv6Addr]) -> Vec<Vec<u8>> {
    frames_as(target, sources, "friendly-scanner")
}

/// An IPv6/UDP frame from `src` port 5060 to the target carrying `payload`.
fn v6_frame(target: &Target, src: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(target.src_mac, target.dst_mac)
        .ipv6(src.octets(), target.dst.octets(), 64)
        .udp(5060, target.dport);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, payload).expect("building a flood frame");
    f
}

/// One frame per source, carrying `user_agent`.
pub fn frames_as(target: &Target, sources: &[Ipv6Addr], user_agent: &str) -> Vec<Vec<u8>> {
    sources
        .iter()
        .enumerate()
        .map(|(n, src)| {
            let payload = options_payload_as(*src, target.dst, n, user_agent);
            v6_frame(target, *src, &payload)
        })
        .collect()
}

/// What a flood did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub packets: u64,
    pub elapsed: Duration,
    /// Whether it stopped at the deadline rather than the count.
    pub timed_out: bool,
}

impl Sent {
    pub fn pps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64()
    }
}

/// `AF_PACKET` senders bound to an interface in the generator namespace.
pub struct Generator {
    socks: Vec<OwnedFd>,
}

impl Generator {
    /// One socket per sending thread.
    pub fn new(ns: &Netns, iface: &str, threads: usize) -> Self {
        let iface = iface.to_string();
        let socks = ns.enter(move || (0..threads).map(|_| packet_socket(&iface)).collect());
        Self { socks }
    }

    /// Sends `count` frames (cycling through `frames`), spread over the
    /// threads, each pinned to its own CPU; stops early at `max_time` or
    /// when `stop` is set.
    pub fn send(
        &self,
        frames: &[Vec<u8>],
        count: u64,
        max_time: Duration,
        stop: &AtomicBool,
    ) -> Sent {
        self.run(frames, count, max_time, stop, None)
    }

    /// Like `send`, but every packet comes from a source address of its
    /// own: the 96 bits after `2001:db8::/32` are rewritten per packet (and
    /// the UDP checksum updated to match), so no source is ever seen twice,
    /// as in a spoofed random-source storm. IPv6 frames without VLAN tags.
    pub fn send_unique(
        &self,
        frames: &[Vec<u8>],
        count: u64,
        max_time: Duration,
        stop: &AtomicBool,
    ) -> Sent {
        self.run(frames, count, max_time, stop, Some(Spoof::V6Random))
    }

    /// Like `send_unique`, with the sources drawn as `spoof` says (IPv4
    /// frames without VLAN tags for the IPv4 kinds).
    pub fn send_spoofed(
        &self,
        frames: &[Vec<u8>],
        count: u64,
        max_time: Duration,
        stop: &AtomicBool,
        spoof: Spoof,
    ) -> Sent {
        self.run(frames, count, max_time, stop, Some(spoof))
    }

    fn run(
        &self,
        frames: &[Vec<u8>],
        count: u64,
        max_time: Duration,
        stop: &AtomicBool,
        unique: Option<Spoof>,
    ) -> Sent {
        let threads = self.socks.len() as u64;
        let start = Instant::now();
        let deadline = start + max_time;
        let sent: Vec<(u64, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .socks
                .iter()
                .enumerate()
                .map(|(t, sock)| {
                    let share = count / threads + u64::from((t as u64) < count % threads);
                    // Each thread starts at a different frame so that the
                    // sources interleave as in a distributed flood.
                    let offset = t * frames.len() / self.socks.len();
                    s.spawn(move || {
                        pin_to_cpu(t);
                        if let Some(spoof) = unique {
                            // A private, rewritable copy of one batch.
                            let own: Vec<Vec<u8>> =
                                frames.iter().cycle().take(BATCH).cloned().collect();
                            let mut seq = (t as u64) << 48;
                            let mut patch = |f: &mut [u8]| {
                                seq += 1;
                                spoof.rewrite(f, seq);
                            };
                            send_loop(
                                sock.as_raw_fd(),
                                &own,
                                0,
                                share,
                                deadline,
                                stop,
                                Some(&mut patch),
                            )
                        } else {
                            send_loop(
                                sock.as_raw_fd(),
                                frames,
                                offset,
                                share,
                                deadline,
                                stop,
                                None,
                            )
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        Sent {
            packets: sent.iter().map(|s| s.0).sum(),
            elapsed: start.elapsed(),
            timed_out: sent.iter().any(|s| s.1),
        }
    }
}

/// How a spoofed storm draws its sources.
#[derive(Clone, Copy, Debug)]
pub enum Spoof {
    /// The 96 bits after 2001:db8::/32, new for every packet.
    V6Random,
    /// A random IPv4 address inside `base/len` for every packet.
    V4Random { base: [u8; 4], len: u8 },
    /// `size` (a power of two) IPv4 addresses from `base`, each back every
    /// `size` packets of a thread, in a shuffled order: a pool an attacker
    /// recycles on purpose.
    V4Pool { base: [u8; 4], size: u32 },
}

impl Spoof {
    fn rewrite(self, frame: &mut [u8], seq: u64) {
        let base = |b: [u8; 4]| u32::from_be_bytes(b);
        match self {
            Spoof::V6Random => new_source(frame, seq),
            Spoof::V4Random { base: b, len } => {
                let host = (mix(seq) as u32) & (u32::MAX >> len);
                new_source_v4(frame, base(b) | host);
            }
            Spoof::V4Pool { base: b, size } => {
                // An odd multiplier permutes the residues of a power of
                // two: every address once per round, in a shuffled order.
                let i = (seq % u64::from(size)).wrapping_mul(0x9e37_79b1) % u64::from(size);
                new_source_v4(frame, base(b).wrapping_add(i as u32));
            }
        }
    }
}

/// splitmix64: neighbouring sequence numbers land far apart.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Gives an untagged IPv4/UDP frame the source `src`, and its header
/// checksum to match (its UDP checksum is 0: none, as IPv4 allows).
pub fn new_source_v4(frame: &mut [u8], src: u32) {
    frame[26..30].copy_from_slice(&src.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let mut sum: u32 = frame[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// REGISTER frames over IPv4 toward `dst:5060`, from `src` (rewritten
/// per packet by `Spoof`'s IPv4 kinds), with no UDP checksum.
pub fn register_frames_v4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
) -> Vec<Vec<u8>> {
    (0..64)
        .map(|n| {
            let payload = format!(
                "REGISTER sip:{dst} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-{n:08x}-reg;rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:1{n:03}@{dst}>;tag={n:08x}r\r\n\
                 To: <sip:1{n:03}@{dst}>\r\n\
                 Call-ID: {n:08x}-reg@{src}\r\n\
                 CSeq: 1 REGISTER\r\n\
                 Contact: <sip:1{n:03}@{src}:5060>\r\n\
                 Expires: 3600\r\n\
                 User-Agent: Grandstream GXP2170\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .into_bytes();
            let b = PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src.octets(), dst.octets(), 64)
                .udp(5060, 5060);
            let mut f = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut f, &payload).expect("building a flood frame");
            // No checksum: the generator rewrites the source per packet.
            f[40..42].copy_from_slice(&[0, 0]);
            f
        })
        .collect()
}

/// Offsets in an untagged IPv6/UDP frame: the source bytes rewritten per
/// packet (after 2001:db8::/32), and the UDP checksum.
const SRC_TAIL: std::ops::Range<usize> = 26..38;
const UDP_CSUM: usize = 14 + 40 + 6;

/// Gives `frame` a source address of its own, derived from `seq` (one
/// value, one address), and fixes the UDP checksum incrementally (RFC
/// 1624) for the words that changed.
pub fn new_source(frame: &mut [u8], seq: u64) {
    let z = mix(seq);
    let mut new = [0u8; 12];
    new[..8].copy_from_slice(&z.to_be_bytes());
    new[8..].copy_from_slice(&(seq as u32).to_be_bytes());
    let mut sum = u32::from(!u16::from_be_bytes([frame[UDP_CSUM], frame[UDP_CSUM + 1]]));
    for (o, n) in frame[SRC_TAIL].chunks(2).zip(new.chunks(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // UDP over IPv6 never carries a zero checksum.
    let csum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[SRC_TAIL].copy_from_slice(&new);
    frame[UDP_CSUM..UDP_CSUM + 2].copy_from_slice(&csum.to_be_bytes());
}

/// What rewrites a frame before it is sent.
type Patch<'a> = dyn FnMut(&mut [u8]) + 'a;

fn send_loop(
    fd: i32,
    frames: &[Vec<u8>],
    offset: usize,
    count: u64,
    deadline: Instant,
    stop: &AtomicBool,
    mut patch: Option<&mut Patch<'_>>,
) -> (u64, bool) {
    let mut iov: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut _,
            iov_len: f.len(),
        })
        .collect();
    // Repeat the table so that any window of BATCH entries is contiguous.
    let n = iov.len();
    iov.extend_from_within(..n.min(BATCH));
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control).
            unsafe { std::mem::zeroed() }
        })
        .collect();
    let mut next = offset % n;
    let mut done = 0u64;
    while done < count {
        if Instant::now() >= deadline {
            return (done, true);
        }
        if stop.load(Ordering::Relaxed) {
            return (done, false);
        }
        let want = (count - done).min(BATCH as u64) as usize;
        for (i, h) in hdrs.iter_mut().take(want).enumerate() {
            let k = (next + i) % iov.len();
            if let Some(p) = patch.as_mut() {
                // SAFETY: with a patch the frames are this thread's private
                // copy, and iov[k] covers one of them whole; nothing else
                // touches it until sendmmsg below has copied it.
                p(unsafe {
                    std::slice::from_raw_parts_mut(iov[k].iov_base as *mut u8, iov[k].iov_len)
                });
            }
            h.msg_hdr.msg_iov = &mut iov[k];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `want` headers, each pointing at one iovec over a live
        // frame; the socket is bound to its interface, so no address.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), want as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // The transmit path was busy for a moment: try again.
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                _ => panic!("sendmmsg: {e}"),
            }
        }
        done += r as u64;
        next = (next + r as usize) % n;
    }
    (done, false)
}

/// A raw `AF_PACKET` socket bound to `iface` that sends without queueing
/// discipline and receives nothing.
pub fn packet_socket(iface: &str) -> OwnedFd {
    // Protocol 0: the socket receives no frames, it only sends.
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_PACKET): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(iface).unwrap();
    // SAFETY: NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index > 0, "no interface {iface} in the generator namespace");
    let one: libc::c_int = 1;
    // SAFETY: an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert!(
        r == 0,
        "PACKET_QDISC_BYPASS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: zeroed sockaddr_ll, then the fields bind(2) reads.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = index as i32;
    sll.sll_protocol = 0;
    // SAFETY: a valid sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(
        r == 0,
        "bind(AF_PACKET, {iface}): {}",
        std::io::Error::last_os_error()
    );
    fd
}

/// Pins the calling thread to `cpu` (modulo the CPUs online).
pub fn pin_to_cpu(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t filled with CPU_SET for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The unprotected server of the drop-cost rows: a UDP socket on
/// [::]:`port` that reads every datagram and discards it, one `recv` per
/// packet as SIP servers do, on its own thread pinned to `cpu`.
pub struct Sink {
    stop: std::sync::Arc<AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    pub fn start(ns: &Netns, port: u16, cpu: usize) -> Self {
        let sock = ns.enter(|| {
            use socket2::{Domain, Socket, Type};
            let s = Socket::new(Domain::IPV6, Type::DGRAM, None).expect("socket(AF_INET6)");
            s.set_only_v6(true).expect("IPV6_V6ONLY");
            let addr: std::net::SocketAddr = format!("[::]:{port}").parse().unwrap();
            s.bind(&addr.into()).expect("binding the sink");
            std::net::UdpSocket::from(s)
        });
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, n) = (stop.clone(), count.clone());
        let handle = std::thread::spawn(move || {
            pin_to_cpu(cpu);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            stop,
            count,
            handle: Some(handle),
        }
    }

    /// Datagrams read so far.
    pub fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops reading; returns the datagrams read.
    pub fn stop(mut self) -> u64 {
        self.finish();
        self.received()
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one's-complement sum of the IPv6 pseudo-header and the UDP
    /// segment: 0xffff when the checksum is right.
    fn udp6_sum(f: &[u8]) -> u16 {
        let udp = &f[54..];
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&f[22..54]);
        add(&(udp.len() as u32).to_be_bytes());
        add(&[0, 0, 0, 17]);
        add(udp);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn every_rewritten_source_is_new_and_its_checksum_right() {
        let t = Target {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst: "2001:db8:2::1".parse().unwrap(),
            dport: 5060,
        };
        let mut f = frames(&t, &["2001:db8:2::2".parse().unwrap()]).remove(0);
        assert_eq!(udp6_sum(&f), 0xffff);
        let mut seen = std::collections::HashSet::new();
        for seq in 0..10_000u64 {
            new_source(&mut f, seq);
            assert_eq!(udp6_sum(&f), 0xffff, "seq {seq}");
            assert_eq!(&f[22..26], &[0x20, 0x01, 0x0d, 0xb8]);
            assert!(
                seen.insert(f[22..38].to_vec()),
                "seq {seq} repeated a source"
            );
        }
    }
}
