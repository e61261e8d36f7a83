//! The real XDP object, loaded by sip-xdp's own loader, driven frame by
//! frame through BPF_PROG_TEST_RUN: every verdict path and its counters.
//! Needs root; run with `cargo xtask test`.

use std::time::Duration;

use sip_xdp::guard::Guard;
use sip_xdp_common::{
    maps::BanReason, Counter, KernelConfig as Config, CONFIG_BAN_ALL, CONFIG_DROP_MALFORMED,
    CONFIG_MONITOR,
};
use sip_xdp_tests::{
    frames::{arp, first_fragment, Frame, INVITE, OPTIONS, REGISTER},
    prog::{delta, TestProg, XDP_DROP, XDP_PASS},
};

fn net(s: &str) -> ipnet::IpNet {
    sip_xdp::parse::parse_net(s).unwrap()
}

/// No host addresses: these tests block lab addresses only.
fn guard() -> Guard {
    Guard::with_addresses(vec![])
}

fn ban(p: &TestProg, s: &str, d: Option<Duration>) {
    p.maps()
        .block(&guard(), net(s), d, BanReason::Manual)
        .unwrap_or_else(|e| panic!("blocking {s}: {e}"));
}

/// Runs a frame and returns its action and the counters that moved.
fn run(p: &TestProg, frame: &[u8]) -> (u32, Vec<(Counter, u64)>) {
    let before = p.stats();
    let action = p.run(frame);
    (action, delta(&before, &p.stats()))
}

use Counter::*;

#[test]
fn non_sip_traffic_passes_untouched() {
    let p = TestProg::load("nonsip");
    assert_eq!(run(&p, &arp()), (XDP_PASS, vec![(NonIp, 1)]));
    let tcp = Frame::sip("203.0.113.9", OPTIONS).tcp(5060).build();
    assert_eq!(run(&p, &tcp), (XDP_PASS, vec![(NonUdp, 1)]));
    let other = Frame::sip("203.0.113.9", OPTIONS).udp_port(53).build();
    assert_eq!(run(&p, &other), (XDP_PASS, vec![(OtherPort, 1)]));
    // A banned source: its SIP over TCP (5060) and TLS (5061) is dropped,
    // the rest is not ours to judge unless the ban scope is `all`.
    ban(&p, "203.0.113.9", None);
    assert_eq!(run(&p, &tcp), (XDP_DROP, vec![(Banned, 1)]));
    let tls = Frame::sip("203.0.113.9", OPTIONS).tcp(5061).build();
    assert_eq!(run(&p, &tls), (XDP_DROP, vec![(Banned, 1)]));
    let web = Frame::sip("203.0.113.9", OPTIONS).tcp(443).build();
    assert_eq!(run(&p, &web), (XDP_PASS, vec![(NonUdp, 1)]));
    assert_eq!(run(&p, &other), (XDP_PASS, vec![(OtherPort, 1)]));
    let mut maps = p.maps();
    maps.set_tcp_ports(&[]).unwrap();
    assert_eq!(run(&p, &tcp), (XDP_PASS, vec![(NonUdp, 1)]));
    maps.set_config(Config {
        flags: CONFIG_BAN_ALL,
        ..Default::default()
    })
    .unwrap();
    for f in [&tcp, &web, &other] {
        assert_eq!(run(&p, f), (XDP_DROP, vec![(Banned, 1)]));
    }
    // Nothing changes for anyone else.
    let clean = Frame::sip("203.0.113.10", OPTIONS).tcp(443).build();
    assert_eq!(run(&p, &clean), (XDP_PASS, vec![(NonUdp, 1)]));
}

#[test]
fn sip_over_ipv4_and_ipv6_is_counted_and_passed() {
    let p = TestProg::load("sip");
    let v4 = Frame::sip("203.0.113.9", OPTIONS).build();
    assert_eq!(run(&p, &v4), (XDP_PASS, vec![(Sip, 1), (ClassOptions, 1)]));
    let v6 = Frame::sip("2001:db8:2::9", REGISTER).build();
    assert_eq!(run(&p, &v6), (XDP_PASS, vec![(Sip, 1), (ClassRegister, 1)]));
    let resp = Frame::sip("203.0.113.9", b"SIP/2.0 200 OK\r\n\r\n").build();
    assert_eq!(run(&p, &resp).1, vec![(Sip, 1), (ClassResponse, 1)]);
}

#[test]
fn per_source_accounting_sums_over_cpus() {
    let p = TestProg::load("acct");
    let reg = Frame::sip("203.0.113.20", REGISTER).build();
    let inv = Frame::sip("203.0.113.20", INVITE).build();
    let other = Frame::sip("2001:db8:2::20", OPTIONS).build();
    for _ in 0..3 {
        p.run(&reg);
    }
    p.run(&inv);
    p.run(&inv);
    p.run(&other);
    let top = p.maps().top(10);
    assert_eq!(top.len(), 2);
    let first = &top[0];
    assert_eq!(first.src_ip.to_string(), "203.0.113.20");
    assert_eq!(first.packets, 5);
    assert_eq!(first.bytes, (3 * reg.len() + 2 * inv.len()) as u64);
    assert_eq!(first.classes["register"], 3);
    assert_eq!(first.classes["invite"], 2);
    assert_eq!(first.dropped, 0);
    assert_eq!(top[1].src_ip.to_string(), "2001:db8:2::20");
    assert_eq!(top[1].classes["options"], 1);
}

#[test]
fn per_cpu_lru_lists_are_created_with_their_flag_and_count_as_the_common_ones() {
    use sip_xdp::kernel::loader::{Capacities, LruLists, BPF_F_NO_COMMON_LRU};
    let caps = Capacities {
        source_lists: LruLists::PerCpu,
        ..Capacities::default()
    };
    let p = TestProg::load_with("lru", caps);
    let flags = aya::maps::MapData::from_pin(p.pins.map(sip_xdp_common::maps::MAP_SOURCES))
        .and_then(|m| m.info())
        .expect("SOURCES info")
        .map_flags();
    assert_ne!(flags & BPF_F_NO_COMMON_LRU, 0, "flags {flags:#x}");
    let reg = Frame::sip("203.0.113.21", REGISTER).build();
    for _ in 0..3 {
        assert_eq!(p.run(&reg), XDP_PASS);
    }
    let top = p.maps().top(10);
    assert_eq!(
        (top.len(), top[0].packets, top[0].classes["register"]),
        (1, 3, 3)
    );
    // A later load (another version, same layout) accepts the pinned map
    // whatever its lists: the program reads both alike.
    sip_xdp::kernel::upgrade::check_compatible(&p.pins)
        .expect("per-CPU lists are compatible with the object");
    // A configuration asking otherwise is told what the pins keep.
    use sip_xdp::kernel::upgrade::{kept_choices, Kept};
    assert_eq!(kept_choices(&p.pins, &caps), vec![]);
    let other = Capacities {
        bans: caps.bans * 2,
        ..Capacities::default()
    };
    assert_eq!(
        kept_choices(&p.pins, &other),
        vec![
            Kept {
                map: "BANS",
                kept: format!("{} entries", caps.bans),
                configured: format!("{} entries", caps.bans * 2),
            },
            Kept {
                map: "SOURCES",
                kept: "per-cpu LRU lists".into(),
                configured: "common LRU lists".into(),
            },
        ]
    );
}

/// The verifier walks every path of each program, up to a million
/// instructions; loading and upgrading cost its time. What keeps the walk
/// short is in the program's comments (the L4 offset, the payload and the
/// class made opaque after parsing, a word-at-a-time classifier): a
/// quarter of the limit leaves room for older kernels' verifiers, which
/// prune less, and a walk past it means something made it branch again.
#[test]
fn the_verifier_walks_the_program_well_under_its_limit() {
    let p = TestProg::load("verifier");
    let info = sip_xdp::kernel::loader::program_info(&p.pins).expect("program info");
    let walked = info
        .verified_instruction_count()
        .expect("the kernel reports verified instructions");
    eprintln!("the verifier walked {walked} instructions of the XDP program");
    assert!(
        walked < 250_000,
        "the verifier walked {walked} instructions (limit 1,000,000)"
    );
    // The egress program parses the same headers: its L4 offset is opaque
    // too (30,920 instructions before, about 10,000 with it).
    let egress =
        aya::programs::ProgramInfo::from_pin(p.pins.egress_prog()).expect("egress program info");
    let walked = egress
        .verified_instruction_count()
        .expect("the kernel reports verified instructions");
    assert!(
        walked < 20_000,
        "the verifier walked {walked} instructions of the egress program"
    );
    // The tail-called trust and exchange programs run the header scan as
    // a bpf_loop body, which the verifier walks once per step of a call:
    // each is found by the scratch map only this load's programs use.
    let scratch = aya::maps::MapInfo::from_pin(p.pins.map(sip_xdp_common::maps::MAP_SCAN))
        .expect("scratch map")
        .id();
    let mut seen = Vec::new();
    for info in aya::programs::loaded_programs().flatten() {
        let name = info.name_as_str().unwrap_or_default().to_string();
        if !name.starts_with("sip_xdp_")
            || !info
                .map_ids()
                .ok()
                .flatten()
                .is_some_and(|m| m.contains(&scratch))
        {
            continue;
        }
        let walked = info
            .verified_instruction_count()
            .expect("verified instructions");
        eprintln!("the verifier walked {walked} instructions of {name}");
        if name != "sip_xdp_egress" {
            assert!(
                walked < 300_000,
                "the verifier walked {walked} instructions of {name} (limit 1,000,000)"
            );
            seen.push(name);
        }
    }
    seen.sort();
    // The kernel keeps 15 bytes of a name.
    assert_eq!(seen, ["sip_xdp_exchang", "sip_xdp_trust"]);
}

#[test]
fn banned_source_is_dropped_with_its_hit_counter() {
    let p = TestProg::load("ban");
    ban(&p, "203.0.113.66", None);
    ban(&p, "2001:db8:2::66", None);
    let f = Frame::sip("203.0.113.66", OPTIONS).build();
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
    p.run(&f);
    let f6 = Frame::sip("2001:db8:2::66", INVITE).build();
    assert_eq!(run(&p, &f6), (XDP_DROP, vec![(Banned, 1)]));
    let listed = p.maps().list_blocked();
    let e = listed
        .iter()
        .find(|e| e.net == net("203.0.113.66"))
        .unwrap();
    assert_eq!((e.kind, e.hits, e.expired), ("ban", 2, false));
    // A neighbour is untouched.
    assert_eq!(
        p.run(&Frame::sip("203.0.113.67", OPTIONS).build()),
        XDP_PASS
    );
    // Unblock lifts it at once.
    assert!(p.maps().unblock(&net("203.0.113.66")).unwrap());
    assert_eq!(p.run(&f), XDP_PASS);
}

#[test]
fn expired_ban_no_longer_drops() {
    let p = TestProg::load("expiry");
    ban(&p, "203.0.113.70", Some(Duration::from_millis(200)));
    let cidr = net("198.51.100.128/25");
    p.maps()
        .block(
            &guard(),
            cidr,
            Some(Duration::from_millis(200)),
            BanReason::Manual,
        )
        .unwrap();
    let f = Frame::sip("203.0.113.70", OPTIONS).build();
    let g = Frame::sip("198.51.100.200", OPTIONS).build();
    assert_eq!(p.run(&f), XDP_DROP);
    assert_eq!(p.run(&g), XDP_DROP);
    // Coarse clock ticks are a few ms; 400 ms is well past the expiry.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        run(&p, &f),
        (XDP_PASS, vec![(Sip, 1), (BanExpired, 1), (ClassOptions, 1)])
    );
    assert_eq!(run(&p, &g).0, XDP_PASS);
    assert!(p.maps().list_blocked().iter().all(|e| e.expired));
}

#[test]
fn allow_list_beats_block_cidr() {
    let p = TestProg::load("allow");
    p.maps()
        .block(&guard(), net("203.0.113.0/24"), None, BanReason::Manual)
        .unwrap();
    p.maps().allow(net("203.0.113.16/28")).unwrap();
    let trunk = Frame::sip("203.0.113.20", OPTIONS).build();
    assert_eq!(
        run(&p, &trunk),
        (XDP_PASS, vec![(Allowed, 1), (ClassOptions, 1)])
    );
    let other = Frame::sip("203.0.113.99", OPTIONS).build();
    assert_eq!(run(&p, &other), (XDP_DROP, vec![(Blocked, 1)]));
    // Same for IPv6.
    p.maps()
        .block(&guard(), net("2001:db8:2::/48"), None, BanReason::Manual)
        .unwrap();
    p.maps().allow(net("2001:db8:2:5::/64")).unwrap();
    assert_eq!(
        p.run(&Frame::sip("2001:db8:2:5::1", OPTIONS).build()),
        XDP_PASS
    );
    assert_eq!(
        p.run(&Frame::sip("2001:db8:2:6::1", OPTIONS).build()),
        XDP_DROP
    );
}

#[test]
fn allow_lifts_bans_and_allowed_addresses_cannot_be_banned() {
    let p = TestProg::load("allowban");
    ban(&p, "203.0.113.40", None);
    let lifted = p.maps().allow(net("203.0.113.32/27")).unwrap();
    assert_eq!(
        lifted,
        vec!["203.0.113.40".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        p.run(&Frame::sip("203.0.113.40", OPTIONS).build()),
        XDP_PASS
    );
    let e = p
        .maps()
        .block(&guard(), net("203.0.113.41"), None, BanReason::Manual)
        .unwrap_err();
    assert!(e.to_string().contains("allow-list"), "{e}");
}

#[test]
fn block_cidr_drops_and_counts_hits_per_rule() {
    let p = TestProg::load("cidr");
    p.maps()
        .block(&guard(), net("198.51.100.0/24"), None, BanReason::Manual)
        .unwrap();
    p.maps()
        .block(&guard(), net("2001:db8:1::/48"), None, BanReason::Manual)
        .unwrap();
    for i in 0..5 {
        let f = Frame::sip(&format!("198.51.100.{}", 10 + i), OPTIONS).build();
        assert_eq!(run(&p, &f), (XDP_DROP, vec![(Blocked, 1)]));
    }
    assert_eq!(
        p.run(&Frame::sip("2001:db8:1:ff::1", INVITE).build()),
        XDP_DROP
    );
    let rules = p.maps().list_blocked();
    let v4 = rules
        .iter()
        .find(|e| e.net == net("198.51.100.0/24"))
        .unwrap();
    let v6 = rules
        .iter()
        .find(|e| e.net == net("2001:db8:1::/48"))
        .unwrap();
    assert_eq!((v4.kind, v4.hits), ("cidr", 5));
    assert_eq!(v6.hits, 1);
    assert_eq!(
        p.run(&Frame::sip("198.51.101.1", OPTIONS).build()),
        XDP_PASS
    );
}

#[test]
fn vlan_tags_one_and_two() {
    let p = TestProg::load("vlan");
    ban(&p, "203.0.113.80", None);
    for tags in [vec![100], vec![100, 200]] {
        let mut f = Frame::sip("203.0.113.80", OPTIONS);
        let mut ok = Frame::sip("203.0.113.81", OPTIONS);
        for t in &tags {
            f = f.vlan(*t);
            ok = ok.vlan(*t);
        }
        assert_eq!(
            run(&p, &f.build()),
            (XDP_DROP, vec![(Banned, 1)]),
            "{tags:?}"
        );
        assert_eq!(
            run(&p, &ok.build()),
            (XDP_PASS, vec![(Sip, 1), (ClassOptions, 1)]),
            "{tags:?}"
        );
    }
    let v6 = Frame::sip("2001:db8:2::80", OPTIONS)
        .vlan(7)
        .vlan(8)
        .build();
    assert_eq!(run(&p, &v6).1, vec![(Sip, 1), (ClassOptions, 1)]);
}

#[test]
fn ipv4_options_are_skipped() {
    let p = TestProg::load("opts");
    ban(&p, "203.0.113.90", None);
    // Record-route style option (type 7, 11 bytes) padded with NOPs to 12,
    // then 40 bytes: the maximum IHL.
    let rr = [7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let f = Frame::sip("203.0.113.91", OPTIONS)
        .ipv4_options(&rr)
        .build();
    assert_eq!(run(&p, &f), (XDP_PASS, vec![(Sip, 1), (ClassOptions, 1)]));
    let max = [1u8; 40];
    let f = Frame::sip("203.0.113.90", REGISTER)
        .ipv4_options(&max)
        .build();
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
}

#[test]
fn fragments_follow_the_source_rules() {
    let p = TestProg::load("frag");
    ban(&p, "203.0.113.100", None);
    // First fragment (offset 0, more fragments) carries UDP: judged fully.
    // A large INVITE, cut where a 552-byte path MTU would.
    let big = [INVITE, &b"a=x\r\n".repeat(300)].concat();
    let first = first_fragment("203.0.113.101", &big, 512);
    assert_eq!(run(&p, &first).1, vec![(Sip, 1), (ClassInvite, 1)]);
    // Later fragments have no port: passed for unknown sources...
    let later = Frame::sip("203.0.113.101", b"a=rtpmap:0 PCMU/8000\r\n")
        .fragment(185, false)
        .build();
    assert_eq!(run(&p, &later), (XDP_PASS, vec![(Fragment, 1)]));
    // ...dropped for banned ones, so their INVITEs never reassemble.
    let banned = Frame::sip("203.0.113.100", b"a=rtpmap:0 PCMU/8000\r\n")
        .fragment(185, false)
        .build();
    assert_eq!(run(&p, &banned), (XDP_DROP, vec![(Banned, 1)]));
    // IPv6 fragment header, first and later.
    let first6 = first_fragment("2001:db8:2::101", &big, 1224);
    assert_eq!(run(&p, &first6).1, vec![(Sip, 1), (ClassInvite, 1)]);
    let later6 = Frame::sip("2001:db8:2::101", b"tail")
        .fragment(100, false)
        .build();
    assert_eq!(run(&p, &later6), (XDP_PASS, vec![(Fragment, 1)]));
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let p = TestProg::load("ext");
    ban(&p, "2001:db8:2::110", None);
    let ok = Frame::sip("2001:db8:2::111", OPTIONS).hop_by_hop().build();
    assert_eq!(run(&p, &ok).1, vec![(Sip, 1), (ClassOptions, 1)]);
    let bad = Frame::sip("2001:db8:2::110", OPTIONS)
        .hop_by_hop()
        .fragment(0, true)
        .build();
    assert_eq!(run(&p, &bad), (XDP_DROP, vec![(Banned, 1)]));
}

#[test]
fn truncated_frames_at_every_header_boundary() {
    let p = TestProg::load("trunc");
    ban(&p, "203.0.113.120", None);
    // VLAN + IPv4 with 8 bytes of options + UDP + payload.
    let full = Frame::sip("203.0.113.120", OPTIONS)
        .vlan(5)
        .ipv4_options(&[1; 8])
        .build();
    let ip_header_end = 14 + 4 + 20;
    // The kernel refuses XDP test frames shorter than an Ethernet header.
    for len in 14..full.len() {
        let (action, moved) = run(&p, &full[..len]);
        if len < ip_header_end {
            assert_eq!(
                (action, moved),
                (XDP_PASS, vec![(Truncated, 1)]),
                "cut at {len}"
            );
        } else {
            // The IP length says more than the frame holds: Linux drops
            // such a datagram, and so does the filter, for anyone.
            assert_eq!(
                (action, moved),
                (XDP_DROP, vec![(Invalid, 1)]),
                "cut at {len}"
            );
        }
    }
    assert_eq!(run(&p, &full), (XDP_DROP, vec![(Banned, 1)]));
    // IPv6: cuts inside the fixed header, then past it.
    let v6 = Frame::sip("2001:db8:2::120", OPTIONS).hop_by_hop().build();
    for len in 14..(14 + 40 + 8 + 8) {
        let want = if len < 14 + 40 { Truncated } else { Invalid };
        assert_eq!(run(&p, &v6[..len]).1, vec![(want, 1)], "v6 cut at {len}");
    }
}

#[test]
fn ethernet_padding_is_not_payload() {
    let p = TestProg::load("pad");
    // A CRLF keep-alive is far below the 60-byte Ethernet minimum.
    let f = Frame::sip("203.0.113.130", b"\r\n\r\n").pad_to(60).build();
    assert_eq!(f.len(), 60);
    assert_eq!(run(&p, &f).1, vec![(Sip, 1), (ClassKeepalive, 1)]);
}

#[test]
fn malformed_payload_counted_and_dropped_only_when_configured() {
    let p = TestProg::load("malformed");
    let junk = Frame::sip("203.0.113.140", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").build();
    assert_eq!(
        run(&p, &junk),
        (XDP_PASS, vec![(Sip, 1), (ClassMalformed, 1)])
    );
    p.maps()
        .set_config(Config {
            flags: CONFIG_DROP_MALFORMED,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        run(&p, &junk),
        (XDP_DROP, vec![(Malformed, 1), (ClassMalformed, 1)])
    );
    // Real SIP still passes, and an allow-listed source is never dropped.
    assert_eq!(
        p.run(&Frame::sip("203.0.113.140", OPTIONS).build()),
        XDP_PASS
    );
    // As the RFCs write it, not only as most stacks do: the version in
    // any case (RFC 3261 §7.1), any URI scheme (RFC 3856's pres:), CR/LF
    // before the start line (§7.5), and SigComp (RFC 3320 §7: compressed
    // SIP, a first byte of 0xf8 to 0xff).
    for (valid, class) in [
        (
            &b"sip/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            ClassResponse,
        ),
        (
            b"SUBSCRIBE pres:alice@example.com SIP/2.0\r\n\r\n",
            ClassOtherRequest,
        ),
        (
            b"\r\nREGISTER sip:example.com SIP/2.0\r\n\r\n",
            ClassRegister,
        ),
        (
            b"\xf9\x1c\x52\x8e\x07\x3a\x11\x90\xc4\x2b\x00\x65\xfd\x83\x20\x4e\x9a",
            ClassSigComp,
        ),
    ] {
        assert_eq!(
            run(&p, &Frame::sip("203.0.113.141", valid).build()),
            (XDP_PASS, vec![(Sip, 1), (class, 1)]),
            "{}",
            String::from_utf8_lossy(valid)
        );
    }
    p.maps().allow(net("203.0.113.140")).unwrap();
    assert_eq!(run(&p, &junk).0, XDP_PASS);
    let top = p.maps().top(1);
    assert_eq!(
        top[0].dropped, 1,
        "the dropped packet is charged to its source"
    );
}

#[test]
fn monitor_mode_counts_but_never_drops() {
    let p = TestProg::load("monitor");
    ban(&p, "203.0.113.150", None);
    p.maps()
        .block(&guard(), net("198.51.100.0/24"), None, BanReason::Manual)
        .unwrap();
    p.maps()
        .set_config(Config {
            flags: CONFIG_MONITOR | CONFIG_DROP_MALFORMED,
            ..Default::default()
        })
        .unwrap();
    let banned = Frame::sip("203.0.113.150", OPTIONS).build();
    assert_eq!(run(&p, &banned), (XDP_PASS, vec![(MonitorBanned, 1)]));
    let blocked = Frame::sip("198.51.100.9", OPTIONS).build();
    assert_eq!(run(&p, &blocked), (XDP_PASS, vec![(MonitorBlocked, 1)]));
    let junk = Frame::sip("203.0.113.151", b"\x16\x03\x01 hello").build();
    assert_eq!(
        run(&p, &junk),
        (XDP_PASS, vec![(MonitorMalformed, 1), (ClassMalformed, 1)])
    );
    assert_eq!(p.stat(Banned) + p.stat(Blocked) + p.stat(Malformed), 0);
    // Switching it off at run time enforces again.
    p.maps().set_config(Config::default()).unwrap();
    assert_eq!(p.run(&banned), XDP_DROP);
}

#[test]
fn sip_port_set_is_configurable() {
    let p = TestProg::load("ports");
    assert_eq!(p.maps().ports().unwrap(), vec![5060]);
    let f5080 = Frame::sip("203.0.113.160", OPTIONS).udp_port(5080).build();
    assert_eq!(run(&p, &f5080).1, vec![(OtherPort, 1)]);
    let ports = [5060, 5061, 5080, 5160, 6060, 7060, 8060, 15060, 65535];
    p.maps().set_ports(&ports).unwrap();
    assert_eq!(p.maps().ports().unwrap(), ports.to_vec());
    for port in ports {
        let f = Frame::sip("203.0.113.160", OPTIONS).udp_port(port).build();
        assert_eq!(
            run(&p, &f).1,
            vec![(Sip, 1), (ClassOptions, 1)],
            "port {port}"
        );
    }
    p.maps().set_ports(&[5080]).unwrap();
    let f5060 = Frame::sip("203.0.113.160", OPTIONS).build();
    assert_eq!(run(&p, &f5060).1, vec![(OtherPort, 1)]);
}

#[test]
fn full_maps_give_a_clear_error() {
    let caps = sip_xdp::kernel::loader::Capacities {
        bans: 4,
        ..Default::default()
    };
    let p = TestProg::load_with("full", caps);
    for i in 0..4 {
        ban(&p, &format!("203.0.113.{}", 200 + i), None);
    }
    let e = p
        .maps()
        .block(&guard(), net("203.0.113.250"), None, BanReason::Manual)
        .unwrap_err();
    assert!(
        e.to_string().contains("BANS map is full (4 entries)"),
        "{e}"
    );
}

/// A batch of new bans that fills BANS part-way: the bans written are
/// enforced at once (indexed, not left for the controller's check), the
/// prefixes after them still go in, and the error says the map is full and
/// how many were written.
#[test]
fn a_batch_that_fills_bans_enforces_what_it_wrote_and_the_rest_of_the_plan() {
    let caps = sip_xdp::kernel::loader::Capacities {
        bans: 20,
        ..Default::default()
    };
    let p = TestProg::load_with("partial", caps);
    for i in 0..4 {
        ban(&p, &format!("203.0.113.{}", 200 + i), None);
    }
    let mut entries: Vec<(ipnet::IpNet, u64, BanReason)> = (1..=20u8)
        .map(|i| (net(&format!("198.51.100.{i}")), 0, BanReason::Feed))
        .collect();
    entries.push((net("203.0.113.0/25"), 0, BanReason::Feed));
    let e = p.maps().put_new(&entries).unwrap_err();
    assert!(
        e.to_string()
            .contains("BANS map is full (20 entries): 16 of 20"),
        "{e}"
    );
    for i in 1..=16 {
        assert_eq!(
            run(&p, &Frame::sip(&format!("198.51.100.{i}"), OPTIONS).build()),
            (XDP_DROP, vec![(Banned, 1)]),
            "198.51.100.{i}, written by the batch"
        );
    }
    assert_eq!(
        run(&p, &Frame::sip("203.0.113.77", OPTIONS).build()).0,
        XDP_DROP,
        "the prefix after the failed batch"
    );
}

/// A feed's worth of new bans written in batches: every one enforced, hit
/// counts from zero, prefixes beside them in the trie.
#[test]
fn new_bans_go_in_batches() {
    let p = TestProg::load("batch");
    let mut entries: Vec<(ipnet::IpNet, u64, BanReason)> = (0..20_000u32)
        .map(|i| {
            let a = std::net::Ipv6Addr::from(
                0x2001_0db8_0042_0000_0000_0000_0000_0000u128 + u128::from(i),
            );
            (
                ipnet::IpNet::from(std::net::IpAddr::V6(a)),
                0,
                BanReason::Feed,
            )
        })
        .collect();
    entries.push((net("203.0.113.9"), 0, BanReason::Feed));
    entries.push((net("198.51.100.0/25"), 0, BanReason::Feed));
    let mut maps = p.maps();
    maps.put_new(&entries).unwrap();
    assert_eq!(maps.bans_raw().len(), 20_001);
    assert_eq!(
        run(&p, &Frame::sip("203.0.113.9", OPTIONS).build()),
        (XDP_DROP, vec![(Banned, 1)])
    );
    assert_eq!(
        run(&p, &Frame::sip("2001:db8:42::4e1f", OPTIONS).build()),
        (XDP_DROP, vec![(Banned, 1)])
    );
    assert_eq!(
        run(&p, &Frame::sip("198.51.100.77", OPTIONS).build()),
        (XDP_DROP, vec![(Blocked, 1)])
    );
    let listed = maps.list_blocked();
    let one = listed.iter().find(|b| b.net == net("203.0.113.9")).unwrap();
    assert_eq!((one.hits, one.reason), (1, "feed"));
}

/// The memory figures computed for other machines (BENCHMARKS.md, 16 and
/// 64 CPUs) use the formula the kernel charges: on this machine it must
/// give what fdinfo reports for every hash map. Kernels before 6.4 report
/// an estimate of their own in fdinfo (no `map_mem_usage`), which says
/// nothing of the formula.
#[test]
fn computed_map_memory_is_what_the_kernel_charges() {
    let release = nix::sys::utsname::uname().unwrap();
    let release = release.release().to_string_lossy().into_owned();
    let mut v = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 4) {
        println!("kernel {release}: fdinfo's memlock is an estimate before 6.4; not compared");
        return;
    }
    let caps = sip_xdp::kernel::loader::Capacities::default();
    let p = TestProg::load_with("memory", caps);
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    for (map, bytes) in caps.hash_map_bytes(cpus) {
        let charged = p.pins.map_kib(map).expect("pinned map");
        let computed = bytes / 1024;
        // The map's own header and its per-CPU lock counters are left out.
        assert!(
            charged >= computed && charged - computed <= 4 + computed / 1000,
            "{map}: the kernel charges {charged} KiB, computed {computed} KiB on {cpus} CPUs"
        );
    }
}

/// A source is filed for the sampling pass once its packets in the unit
/// reach the mark on one CPU; a pass reads only the filed sources, and
/// sweeps every source when the hot map overflowed.
#[test]
fn hot_sources_are_filed_and_a_pass_reads_only_them() {
    use sip_xdp::kernel::Sampler;
    use sip_xdp_common::{addr::key_of, maps::MAX_HOT};
    // One CPU: the mark counts per CPU.
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("hot");
    let mut maps = p.maps();
    maps.set_config(Config {
        hot_at: 3,
        ..Default::default()
    })
    .unwrap();
    let quiet = Frame::sip("203.0.113.30", OPTIONS).build();
    let busy = Frame::sip("2001:db8:3::31", REGISTER).build();
    let mut sampler = Sampler::full_only_every(Duration::from_secs(3600));
    let mut pass = |s: &mut Sampler| {
        let mut read = Vec::new();
        let r = s
            .pass(&mut maps, |k, t, filed| {
                read.push((k, t.packets, t.recent, filed))
            })
            .unwrap();
        read.sort_by_key(|(k, ..)| *k);
        (r.full, read)
    };
    // The first pass reads everything, to know what the kernel tracks.
    for _ in 0..2 {
        p.run(&quiet);
    }
    let (full, read) = pass(&mut sampler);
    assert!(full);
    assert_eq!(read.len(), 1);
    // Two units: the busy source reaches the mark in each, the quiet one
    // never does. Each pass reads the busy one alone, with all its packets.
    for (unit, packets) in [(1u64, 3u64), (2, 7)] {
        for _ in 0..2 {
            p.run(&quiet);
        }
        let before = p.stat(HotFull);
        for _ in 0..packets {
            p.run(&busy);
        }
        assert_eq!(p.stat(HotFull), before);
        let (full, read) = pass(&mut sampler);
        assert!(!full, "unit {unit}");
        let want_total = if unit == 1 { 3 } else { 10 };
        assert_eq!(
            read,
            vec![(
                key_of("2001:db8:3::31".parse().unwrap()),
                want_total,
                packets,
                true
            )],
            "unit {unit}"
        );
    }
    // Nothing filed: nothing read.
    p.run(&quiet);
    assert_eq!(pass(&mut sampler), (false, vec![]));
    // A full hot map: the source is counted as lost and the next pass
    // sweeps every source, here in one part.
    p.file_hot(MAX_HOT);
    for _ in 0..3 {
        p.run(&busy);
    }
    assert_eq!(p.stat(HotFull), 1);
    let (full, read) = pass(&mut sampler);
    assert!(full);
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(|(.., filed)| !filed));
}

/// A sweep reads every tracked source over several passes, a part per
/// pass, and a pass never hands the detector a source twice: a filed
/// source that the sweep's part also holds is judged once, as filed.
#[test]
fn a_sweep_reads_every_source_in_parts_and_each_once_per_pass() {
    use sip_xdp::kernel::Sampler;
    use std::collections::{BTreeMap, BTreeSet};
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("sweep");
    p.maps()
        .set_config(Config {
            hot_at: 3,
            ..Default::default()
        })
        .unwrap();
    let quiet: Vec<Vec<u8>> = (40..52)
        .map(|i| Frame::sip(&format!("203.0.113.{i}"), OPTIONS).build())
        .collect();
    let busy = Frame::sip("2001:db8:3::52", REGISTER).build();
    for f in &quiet {
        p.run(f);
    }
    let mut maps = p.maps();
    let mut sampler = Sampler::full_only_every(Duration::from_secs(3600)).sweeping_at_most(2);
    let mut seen = BTreeSet::new();
    let mut passes = 0;
    loop {
        for _ in 0..3 {
            p.run(&busy);
        }
        let mut this_pass = BTreeMap::new();
        let r = sampler
            .pass(&mut maps, |k, _, filed| {
                assert!(
                    this_pass.insert(k, filed).is_none(),
                    "{k:?} read twice in one pass"
                );
            })
            .unwrap();
        passes += 1;
        assert_eq!(r.sources, this_pass.len());
        // The busy source is filed every unit and read as filed.
        let busy_key = sip_xdp_common::addr::key_of("2001:db8:3::52".parse().unwrap());
        assert_eq!(this_pass.get(&busy_key), Some(&true), "pass {passes}");
        assert!(!r.full, "a part is not every source");
        seen.extend(this_pass.into_keys());
        if !sampler.sweeping() {
            break;
        }
        assert!(passes < 20, "the sweep never ended");
    }
    assert!(
        passes >= 3,
        "13 sources in parts of about 2: {passes} passes"
    );
    assert_eq!(seen.len(), 13, "every source read during the sweep");
    assert_eq!(sampler.tracked(), Some(13));
    // Swept: the next passes read the filed source alone.
    for _ in 0..3 {
        p.run(&busy);
    }
    let mut n = 0;
    let r = sampler.pass(&mut maps, |_, _, filed| {
        assert!(filed);
        n += 1;
    });
    assert_eq!((r.unwrap().sources, n), (1, 1));
    // The hot map overflows: the busy sources it could not hold are found
    // by a sweep that starts at once, a part per pass, never by reading
    // every source in one pass.
    use sip_xdp_common::{addr::key_of, maps::MAX_HOT};
    p.file_hot(MAX_HOT);
    let unfiled = Frame::sip("2001:db8:3::53", REGISTER).build();
    for _ in 0..3 {
        p.run(&unfiled);
    }
    assert_eq!(p.stat(HotFull), 1);
    let unfiled_key = key_of("2001:db8:3::53".parse().unwrap());
    let (mut found, mut after) = (false, 0);
    loop {
        let mut n = 0;
        let r = sampler
            .pass(&mut maps, |k, _, filed| {
                if k == unfiled_key {
                    assert!(!filed);
                    found = true;
                }
                n += 1;
            })
            .unwrap();
        after += 1;
        // The filed keys are not in the source table: a part, and only a
        // part (parts of 2, a bucket's worth more at most), of 14 sources.
        assert!(n <= 4, "pass {after} after the overflow read {n}");
        assert!(!r.full);
        if !sampler.sweeping() {
            break;
        }
        assert!(after < 20, "the sweep never ended");
    }
    assert!(found, "the unfiled busy source was read by the sweep");
    assert!(after >= 3, "14 sources in parts of about 2: {after} passes");
    assert_eq!(sampler.tracked(), Some(14));
}

/// Six IPv4 addresses whose index bucket is the same (five slots). The
/// hash spreads consecutive addresses evenly (four per bucket in a /15), so
/// they come from the benchmarking /15 and the shared /10: map keys and
/// test frames only, nothing is sent.
fn one_bucket() -> Vec<std::net::Ipv4Addr> {
    use sip_xdp_common::banindex::{addr_word, bucket_of};
    use std::net::Ipv4Addr;
    let bucket = |a: &Ipv4Addr| bucket_of(addr_word(a.octets()));
    let want = bucket(&Ipv4Addr::new(198, 18, 0, 1));
    let from = |base: Ipv4Addr, n: u32| (0..n).map(move |i| Ipv4Addr::from(u32::from(base) + i));
    let same: Vec<_> = from(Ipv4Addr::new(198, 18, 0, 0), 1 << 17)
        .chain(from(Ipv4Addr::new(100, 64, 0, 0), 1 << 22))
        .filter(|a| bucket(a) == want)
        .take(6)
        .collect();
    assert_eq!(same.len(), 6);
    same
}

fn index_map(
    p: &TestProg,
) -> aya::maps::Array<aya::maps::MapData, sip_xdp_common::banindex::Bucket> {
    let data = aya::maps::MapData::from_pin(p.pins.map(sip_xdp_common::maps::MAP_BAN_INDEX))
        .expect("BAN_INDEX pin");
    aya::maps::Array::try_from(aya::maps::Map::Array(data)).unwrap()
}

fn hits_of(p: &TestProg, a: std::net::Ipv4Addr) -> u64 {
    let n = ipnet::IpNet::from(std::net::IpAddr::V4(a));
    p.maps()
        .list_blocked()
        .iter()
        .find(|e| e.net == n)
        .map(|e| e.hits)
        .unwrap_or_else(|| panic!("{a} listed"))
}

/// IPv4 bans are found in the index (one cache line) before
/// BANS. A full bucket leaves the ban to BANS; every hit is counted once
/// either way; an unban or allow takes the address out of the index first,
/// so the index never drops what BANS does not ban.
#[test]
fn ipv4_bans_go_through_the_index_and_leave_it_at_once() {
    let p = TestProg::load("banindex");
    let same = one_bucket();
    for a in &same {
        ban(&p, &a.to_string(), None);
    }
    assert_eq!(
        p.maps().ban_index_used(),
        Some(5),
        "five slots, the sixth in BANS only"
    );
    let b =
        sip_xdp_common::banindex::bucket_of(sip_xdp_common::banindex::addr_word(same[0].octets()));
    let marked = |p: &TestProg| index_map(p).get(&b, 0).unwrap().spill != 0;
    assert!(marked(&p), "the bucket tells the program to ask BANS");
    for a in &same {
        let f = Frame::sip(&a.to_string(), OPTIONS).build();
        for _ in 0..3 {
            assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]), "{a}");
        }
        assert_eq!(hits_of(&p, *a), 3, "{a}");
    }
    // Unblocked: passes at the next packet.
    assert!(p.maps().unblock(&net(&same[0].to_string())).unwrap());
    let f0 = Frame::sip(&same[0].to_string(), OPTIONS).build();
    assert_eq!(p.run(&f0), XDP_PASS);
    assert_eq!(p.maps().ban_index_used(), Some(4));
    // Allow-listed: the ban is lifted from both maps.
    p.maps().allow(net(&same[1].to_string())).unwrap();
    let f1 = Frame::sip(&same[1].to_string(), OPTIONS).build();
    assert_eq!(run(&p, &f1).0, XDP_PASS);
    assert_eq!(p.maps().ban_index_used(), Some(3));
    // A batch removal (the sync's) too.
    let nets: Vec<_> = same[2..4].iter().map(|a| net(&a.to_string())).collect();
    assert_eq!(p.maps().remove_many(&nets).unwrap(), 2);
    assert_eq!(
        p.run(&Frame::sip(&same[2].to_string(), OPTIONS).build()),
        XDP_PASS
    );
    assert_eq!(p.maps().ban_index_used(), Some(1));
    // Still marked (the sixth is in BANS only) until a rebuild moves the
    // sixth into a free slot and clears the mark.
    assert!(marked(&p));
    assert_eq!(p.maps().rebuild_ban_index().unwrap(), (2, 0));
    assert!(!marked(&p));
    for a in &same[4..] {
        let f = Frame::sip(&a.to_string(), OPTIONS).build();
        assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]), "{a}");
    }
    // A timed ban ends in the index within a unit of its end.
    ban(&p, &same[0].to_string(), Some(Duration::from_millis(200)));
    assert_eq!(p.run(&f0), XDP_DROP);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(p.run(&f0), XDP_PASS);
}

/// A slot's 32-bit count stops at its cap and the address's packets go on
/// through BANS: the count the operator sees never wraps. And an index
/// emptied behind BANS' back (a program from before it, a crash between
/// two writes) is rebuilt from BANS, keeping the counts it had.
#[test]
fn the_index_count_never_wraps_and_the_index_is_rebuilt_from_bans() {
    use sip_xdp_common::banindex::{addr_word, bucket_of, Bucket, HITS_CAP};
    let p = TestProg::load("banindexcap");
    let a: std::net::Ipv4Addr = "203.0.113.90".parse().unwrap();
    ban(&p, "203.0.113.90", None);
    let mut idx = index_map(&p);
    let b = bucket_of(addr_word(a.octets()));
    let mut bucket: Bucket = idx.get(&b, 0).unwrap();
    let slot = bucket
        .slots
        .iter_mut()
        .find(|s| !s.is_empty())
        .expect("indexed");
    slot.hits = HITS_CAP - 1;
    idx.set(b, bucket, 0).unwrap();
    let f = Frame::sip("203.0.113.90", OPTIONS).build();
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
    assert_eq!(hits_of(&p, a), u64::from(HITS_CAP) + 1);
    let bucket: Bucket = idx.get(&b, 0).unwrap();
    assert_eq!(bucket.slots.iter().map(|s| s.hits).max(), Some(HITS_CAP));

    // Emptied behind BANS' back (a crash between two writes): the program
    // trusts the index for IPv4, so an unmarked bucket answers "not
    // banned" without asking BANS. IPv6 bans always go to BANS.
    for b in 0..sip_xdp_common::banindex::BUCKETS {
        idx.set(b, Bucket::default(), 0).unwrap();
    }
    ban(&p, "2001:db8:7::90", None);
    assert_eq!(p.maps().ban_index_used(), Some(0));
    assert_eq!(p.run(&f), XDP_PASS, "an unmarked bucket skips BANS");
    let f6 = Frame::sip("2001:db8:7::90", OPTIONS).build();
    assert_eq!(p.run(&f6), XDP_DROP);
    // Marked, the bucket sends the packet to BANS.
    idx.set(
        b,
        Bucket {
            spill: 1,
            ..Bucket::default()
        },
        0,
    )
    .unwrap();
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
    // The rebuild (every load and controller start) puts it back and
    // clears the mark.
    assert_eq!(p.maps().rebuild_ban_index().unwrap(), (1, 0));
    assert_eq!(p.maps().ban_index_used(), Some(1));
    assert_eq!(idx.get(&b, 0).unwrap().spill, 0);
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
    // The emptied slot's count went with it: BANS' two, the new slot's one.
    assert_eq!(hits_of(&p, a), 3);
}

/// A ban written to BANS behind the index (a CLI command killed between
/// its two writes, a binary of another build) is invisible to the program
/// for IPv4: its bucket is not marked. The controller's periodic check
/// finds it and indexes it.
#[test]
fn bans_written_behind_the_index_are_found_and_indexed() {
    use aya::maps::{HashMap, Map, MapData};
    use sip_xdp_common::{maps::BanValue, IpKey};
    let p = TestProg::load("banheal");
    ban(&p, "203.0.113.92", None);
    let data = MapData::from_pin(p.pins.map(sip_xdp_common::maps::MAP_BANS)).unwrap();
    let mut bans: HashMap<MapData, IpKey, BanValue> =
        HashMap::try_from(Map::HashMap(data)).unwrap();
    let a: std::net::IpAddr = "203.0.113.91".parse().unwrap();
    let behind = BanValue {
        expires_ns: 0,
        hits: 0,
        reason: BanReason::Manual as u32,
        _pad: 0,
    };
    bans.insert(sip_xdp_common::addr::key_of(a), behind, 0)
        .unwrap();
    let f = Frame::sip("203.0.113.91", OPTIONS).build();
    assert_eq!(
        p.run(&f),
        XDP_PASS,
        "in BANS, but not in its unmarked bucket"
    );
    assert_eq!(p.maps().heal_ban_index().unwrap(), 1);
    assert_eq!(run(&p, &f), (XDP_DROP, vec![(Banned, 1)]));
    assert_eq!(p.maps().heal_ban_index().unwrap(), 0, "nothing left unseen");
    // The ban made through `Maps` was visible all along.
    let g = Frame::sip("203.0.113.92", OPTIONS).build();
    assert_eq!(p.run(&g), XDP_DROP);
}
