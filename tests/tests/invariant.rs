//! One invariant, end to end: every datagram the kernel delivers to the SIP
//! port was seen by the XDP program as UDP to that port from that source,
//! counted and judged. Mutated frames built with scapy (extension-header
//! chains, fragments in either order, lengths that disagree, trailers,
//! v4-mapped sources, VLAN stacks) go over a veth to a socket on 5060 in
//! the server's namespace; what the socket got from each source is
//! compared with what the program let through for it. Needs root and
//! Debian's python3-scapy; run with `cargo xtask test`.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sip_xdp::kernel::{pins::Pins, Maps};
use sip_xdp_tests::{
    cli::Cli,
    flood::packet_socket,
    lab::{mac, Lab, Netns},
};

/// Sources in the run (each an IPv4 address or an IPv6 /64 of its own),
/// and the frames they send between them.
const SOURCES: usize = 30_000;
const AT_LEAST_FRAMES: usize = 100_000;

/// Where a delivered datagram's source is counted: its address, or its
/// /64 (what the program counts an IPv6 host by, whatever prefix the
/// rows use).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

fn udp_socket(v6: bool) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(
        if v6 { Domain::IPV6 } else { Domain::IPV4 },
        Type::DGRAM,
        None,
    )
    .expect("a UDP socket");
    if v6 {
        s.set_only_v6(true).unwrap();
    }
    let size: libc::c_int = 32 << 20;
    // SAFETY: an int option of the right size; root may exceed rmem_max.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    let addr: SocketAddr = if v6 { "[::]:5060" } else { "0.0.0.0:5060" }
        .parse()
        .unwrap();
    s.bind(&addr.into()).expect("binding 5060");
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s.into()
}

/// The frames the generator wrote, (u16 length, bytes) each.
fn read_frames(path: &std::path::Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("the generated frames");
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= data.len() {
        let n = usize::from(u16::from_be_bytes([data[at], data[at + 1]]));
        out.push(data[at + 2..at + 2 + n].to_vec());
        at += 2 + n;
    }
    out
}

fn sysctl(ns: &Netns, setting: &str) {
    let out = ns
        .command("sysctl")
        .args(["-qw", setting])
        .output()
        .unwrap();
    assert!(out.status.success(), "sysctl {setting}: {out:?}");
}

#[test]
fn every_datagram_the_sip_socket_gets_was_judged() {
    let lab = Lab::new("inv", &[("198.51.100", "2001:db8:1")]);
    let (server, client) = (&lab.server, &lab.clients[0]);
    // Spoofed sources arrive on an interface with no route back to them.
    for s in ["all", "default", "s1"] {
        sysctl(server, &format!("net.ipv4.conf.{s}.rp_filter=0"));
    }
    // Stacked VLAN devices, so that Linux delivers frames tagged 10, 10/20
    // and 10/20/30 to the socket as well, where the kernel has 802.1Q
    // (without it, it drops every tagged frame, and the tagged frames test
    // only that the program judges them).
    let mut parent = "s1".to_string();
    for (i, id) in ["10", "20", "30"].iter().enumerate() {
        let dev = format!("{parent}.{id}");
        let added = server
            .command("ip")
            .args([
                "link", "add", "link", &parent, "name", &dev, "type", "vlan", "id", id,
            ])
            .output()
            .unwrap();
        if !added.status.success() {
            eprintln!(
                "no VLAN devices here ({}): tagged frames are dropped by the stack",
                String::from_utf8_lossy(&added.stderr).trim()
            );
            break;
        }
        server.ip(&[
            "addr",
            "add",
            &format!("198.51.100.{}/32", 10 + i),
            "dev",
            &dev,
        ]);
        server.ip(&["link", "set", &dev, "up"]);
        parent = dev;
    }
    let cli = Cli::new(server);
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);

    let frames_path = cli.dir.join("frames.bin");
    let gen = Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/mutated_frames.py"
        ))
        .arg(&frames_path)
        .args([&SOURCES.to_string(), "1"])
        .arg(fmt_mac(mac(client, "e0")))
        .arg(fmt_mac(mac(server, "s1")))
        .args(["198.51.100.1", "2001:db8:1::1", "10,20,30"])
        .output()
        .expect("running python3");
    assert!(gen.status.success(), "the frame generator: {gen:?}");
    let frames = read_frames(&frames_path);
    assert!(frames.len() >= AT_LEAST_FRAMES, "{} frames", frames.len());

    let socks = server.enter(|| [udp_socket(false), udp_socket(true)]);
    let sender = client.enter(|| packet_socket("e0"));
    let done = AtomicBool::new(false);
    let got = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut got: HashMap<IpAddr, u64> = HashMap::new();
            let mut buf = [0u8; 65536];
            let mut quiet_since = Instant::now();
            let start = Instant::now();
            // Until the sender is done and nothing came for a second, or
            // two minutes at most.
            while start.elapsed() < Duration::from_secs(120)
                && !(done.load(Ordering::Relaxed) && quiet_since.elapsed() > Duration::from_secs(1))
            {
                let mut any = false;
                for sock in &socks {
                    while let Ok((_, from)) = sock.recv_from(&mut buf) {
                        *got.entry(key(from.ip())).or_default() += 1;
                        any = true;
                    }
                }
                if any {
                    quiet_since = Instant::now();
                }
            }
            got
        });
        for (i, f) in frames.iter().enumerate() {
            // SAFETY: a bound packet socket and a frame of the length given.
            unsafe { libc::send(sender.as_raw_fd(), f.as_ptr() as *const _, f.len(), 0) };
            // Paced, so the veth ring and the socket keep up.
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap()
    });

    let maps = Maps::open(&Pins::new(&cli.pins)).unwrap();
    let mut passed: HashMap<IpAddr, u64> = HashMap::new();
    for row in maps.top(1_000_000) {
        *passed.entry(key(row.src_ip)).or_default() += row.packets - row.dropped;
    }
    let delivered: u64 = got.values().sum();
    let unjudged: Vec<_> = got
        .iter()
        .filter(|(k, n)| passed.get(k).copied().unwrap_or(0) < **n)
        .map(|(k, n)| (*k, *n, passed.get(k).copied().unwrap_or(0)))
        .collect();
    let stats = cli.stats();
    eprintln!(
        "{} frames from {SOURCES} sources; {delivered} datagrams from {} sources delivered; \
         passed {}, fragments {}, invalid {}, malformed {}",
        frames.len(),
        got.len(),
        stats["pass_sip"],
        stats["pass_fragment"],
        stats["drop_invalid"],
        stats["sip_malformed"]
    );
    assert!(
        unjudged.is_empty(),
        "{} sources got more datagrams to the socket than the program passed, \
         (source, delivered, passed): {:?}",
        unjudged.len(),
        &unjudged[..unjudged.len().min(10)]
    );
    // The run exercised what it claims to: most sources reached the
    // socket, and every kind of verdict the mutations aim at was given.
    assert!(got.len() > SOURCES / 2, "{} sources delivered", got.len());
    for counter in ["pass_sip", "pass_fragment", "drop_invalid"] {
        assert!(stats[counter].as_u64().unwrap() > 100, "{counter}: {stats}");
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
