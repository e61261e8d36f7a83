//! The kernel side of detection, through BPF_PROG_TEST_RUN on the real
//! object: the per-source rate limit, the sample ring buffer and the egress
//! reply counter. Needs root; run with `cargo xtask test`.

use sip_xdp::{
    detect::sip::{decode, Sampled},
    kernel::ring::open_ring,
};
use sip_xdp_common::{
    addr::key_of,
    maps::{SampleHeader, SampleKind},
    Counter, KernelConfig as Config, CONFIG_MONITOR,
};
use sip_xdp_tests::{
    flood::pin_to_cpu,
    frames::{
        first_fragment, set_udp_len, with_dest_opts, with_vlan_stack, Frame, INVITE, OPTIONS,
        REGISTER,
    },
    prog::{delta, TestProg, XDP_DROP, XDP_PASS},
};

use Counter::*;

/// Runs a frame and returns its action and the counters that moved.
fn run(p: &TestProg, frame: &[u8]) -> (u32, Vec<(Counter, u64)>) {
    let before = p.stats();
    let action = p.run(frame);
    (action, delta(&before, &p.stats()))
}

fn configure(p: &TestProg, c: Config) {
    p.maps().set_config(c).unwrap();
}

fn drain(p: &TestProg) -> Vec<Sampled> {
    let mut ring = open_ring(&p.pins).unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(decode(&item).expect("a well-formed sample record"));
    }
    out
}

/// What `top` shows a source was refused.
fn dropped_of(p: &TestProg, ip: &str) -> u64 {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    p.maps()
        .top(100_000)
        .into_iter()
        .find(|r| r.src_ip == ip)
        .map_or(0, |r| r.dropped)
}

/// Runs `n` copies of a frame one call each (the limit is per packet, and
/// BPF_PROG_TEST_RUN's repeat would share one clock reading).
fn run_each(p: &TestProg, frame: &[u8], n: usize) -> Vec<u32> {
    (0..n).map(|_| p.run(frame)).collect()
}

#[test]
fn rate_limit_drops_past_the_limit_and_reports_the_first_crossing_once() {
    let p = TestProg::load("ratelimit");
    configure(
        &p,
        Config {
            rate_limit: 5,
            rate_window_ns: 60_000_000_000,
            ..Default::default()
        },
    );
    let flood = Frame::sip("203.0.113.20", OPTIONS).build();
    let before = p.stats();
    let got = run_each(&p, &flood, 9);
    assert_eq!(
        got,
        [vec![XDP_PASS; 5], vec![XDP_DROP; 4]].concat(),
        "five pass, the rest are cut"
    );
    assert_eq!(
        delta(&before, &p.stats()),
        vec![(Sip, 5), (RateLimited, 4), (Sampled, 1), (ClassOptions, 9)]
    );
    // One sample, the crossing, with the packet's own bytes.
    let s = drain(&p);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].kind, SampleKind::RateLimit);
    assert_eq!(s[0].src.to_string(), "203.0.113.20");
    assert_eq!((s[0].src_port, s[0].dst_port), (5062, 5060));
    assert_eq!(
        s[0].sip.as_ref().unwrap().method.as_deref(),
        Some("OPTIONS")
    );
    // The dropped packets are charged to the source, for the flood detector.
    let top = p.maps().top(1);
    assert_eq!((top[0].packets, top[0].dropped), (9, 4));
    // Another source has its own window.
    assert_eq!(
        p.run(&Frame::sip("2001:db8::20", OPTIONS).build()),
        XDP_PASS
    );
    // The allow-list is never limited.
    p.maps()
        .allow(sip_xdp::parse::parse_net("203.0.113.20").unwrap())
        .unwrap();
    assert_eq!(run_each(&p, &flood, 3), vec![XDP_PASS; 3]);
}

#[test]
fn rate_limit_window_reopens_and_monitor_mode_only_counts() {
    let p = TestProg::load("ratewindow");
    configure(
        &p,
        Config {
            flags: CONFIG_MONITOR,
            rate_limit: 2,
            rate_window_ns: 200_000_000,
            ..Default::default()
        },
    );
    let f = Frame::sip("203.0.113.21", REGISTER).build();
    let before = p.stats();
    assert_eq!(run_each(&p, &f, 4), vec![XDP_PASS; 4]);
    assert_eq!(
        delta(&before, &p.stats()),
        vec![
            (Sip, 2),
            (MonitorRateLimited, 2),
            (Sampled, 1),
            (ClassRegister, 4)
        ]
    );
    // After the window, the source starts over: two pass, and the next
    // crossing is reported again.
    std::thread::sleep(std::time::Duration::from_millis(250));
    configure(
        &p,
        Config {
            rate_limit: 2,
            rate_window_ns: 200_000_000,
            ..Default::default()
        },
    );
    assert_eq!(run_each(&p, &f, 3), vec![XDP_PASS, XDP_PASS, XDP_DROP]);
    let kinds: Vec<_> = drain(&p).iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SampleKind::RateLimit, SampleKind::RateLimit]);
}

#[test]
fn first_packets_then_a_trickle_are_sampled_with_their_payload() {
    let p = TestProg::load("samples");
    configure(
        &p,
        Config {
            sample_first: 2,
            sample_every: 4,
            sample_per_sec: 1000,
            ..Default::default()
        },
    );
    let f = Frame::sip("203.0.113.30", INVITE).build();
    let before = p.stats();
    run_each(&p, &f, 12);
    assert_eq!(
        delta(&before, &p.stats()),
        vec![(Sip, 12), (Sampled, 5), (ClassInvite, 12)]
    );
    let s = drain(&p);
    let kinds: Vec<_> = s.iter().map(|s| s.kind).collect();
    use SampleKind::*;
    assert_eq!(kinds, vec![First, First, Trickle, Trickle, Trickle]);
    let info = s[0].sip.as_ref().unwrap();
    assert_eq!(info.method.as_deref(), Some("INVITE"));
    assert_eq!(info.ruri_user.as_deref(), Some("200"));
    assert_eq!(info.to_user.as_deref(), Some("200"));
    // A large INVITE is cut at 1 KiB and still parses; non-SIP is reported
    // as malformed, not dropped by the reader.
    let mut big = INVITE[..INVITE.len() - 2].to_vec();
    big.extend_from_slice(b"User-Agent: friendly-scanner\r\n");
    big.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "a".repeat(1400)).as_bytes());
    p.run(&Frame::sip("2001:db8::30", &big).build());
    p.run(&Frame::sip("203.0.113.31", b"GET / HTTP/1.1\r\n\r\n").build());
    let s = drain(&p);
    assert_eq!(s.len(), 2);
    let info = s[0].sip.as_ref().unwrap();
    assert_eq!(info.user_agent.as_deref(), Some("friendly-scanner"));
    assert_eq!(s[0].src.to_string(), "2001:db8::30");
    assert!(s[1].sip.is_err());
}

#[test]
fn the_sample_budget_caps_samples_per_cpu_per_second() {
    let p = TestProg::load("budget");
    configure(
        &p,
        Config {
            sample_first: 100,
            sample_per_sec: 3,
            ..Default::default()
        },
    );
    let before = p.stats();
    for i in 0..10 {
        p.run(&Frame::sip(&format!("203.0.113.{}", 40 + i), OPTIONS).build());
    }
    assert_eq!(
        delta(&before, &p.stats()),
        vec![
            (Sip, 10),
            (Sampled, 3),
            (SampleBudget, 7),
            (ClassOptions, 10)
        ]
    );
    assert_eq!(drain(&p).len(), 3);
}

#[test]
fn egress_counts_final_responses_per_client_and_never_drops() {
    let p = TestProg::load("egress");
    let reply_from = |client: &str, line: &str, sport: u16| {
        Frame::reply(
            client,
            format!("{line}\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK-1\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .udp_sport(sport)
        .build()
    };
    let reply = |client: &str, line: &str| reply_from(client, line, 5060);
    let before = p.stats();
    for line in [
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 407 Proxy Authentication Required",
        "SIP/2.0 403 Forbidden",
        "SIP/2.0 404 Not Found",
        "SIP/2.0 200 OK",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 486 Busy Here",
    ] {
        assert_eq!(p.run_egress(&reply("203.0.113.50", line)), -1, "{line}");
    }
    // IPv6 client; a request leaving (not a response) and another source
    // port are not counted.
    p.run_egress(&reply("2001:db8::50", "SIP/2.0 404 Not Found"));
    p.run_egress(&Frame::reply("203.0.113.51", OPTIONS).build());
    p.run_egress(&reply_from(
        "203.0.113.52",
        "SIP/2.0 401 Unauthorized",
        5999,
    ));
    assert_eq!(
        delta(&before, &p.stats()),
        vec![
            (ReplySuccess, 1),
            (Reply401, 2),
            (Reply403, 1),
            (Reply404, 2),
            (Reply407, 1)
        ]
    );
    let mut r = p.maps().reply_totals().unwrap();
    r.sort();
    let v4 = key_of("203.0.113.50".parse().unwrap());
    let v6 = key_of("2001:db8::50".parse().unwrap());
    // The 2xx is counted for the client only when it answers a REGISTER
    // or INVITE ingress saw (`trust_comes_only_from_a_real_exchange`).
    let mut want = vec![(v4, [0, 2, 1, 1, 1, 0]), (v6, [0, 0, 0, 1, 0, 0])];
    want.sort();
    assert_eq!(r, want);
}

/// Both CPUs answering one client at once, from its first reply on: one
/// value shared by all CPUs, so every count must survive the race (the
/// adds are atomic, and the insert that loses adds to the winner's entry).
#[test]
fn replies_counted_on_two_cpus_at_once_lose_nothing() {
    const EACH: u32 = 500_000;
    let p = TestProg::load("egress-race");
    let frame = Frame::reply(
        "203.0.113.60",
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK-1\r\nContent-Length: 0\r\n\r\n",
    )
    .build();
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for cpu in 0..2 {
            let (p, frame, start) = (&p, &frame, &start);
            s.spawn(move || {
                pin_to_cpu(cpu);
                start.wait();
                assert_eq!(p.run_egress_n(frame, EACH), -1);
            });
        }
    });
    let r = p.maps().reply_totals().unwrap();
    let client = key_of("203.0.113.60".parse().unwrap());
    assert_eq!(r, vec![(client, [0, 2 * u64::from(EACH), 0, 0, 0, 0])]);
}

/// A message between the SBC and `client` in transaction `call`/`cseq`,
/// with `extra` header lines: the request or response a UAC and a
/// registrar exchange (Via, From, To, Call-ID and CSeq copied by the
/// response).
fn sip_msg(start: &str, client: &str, call: &str, cseq: &str, extra: &str) -> Vec<u8> {
    format!(
        "{start}\r\nVia: SIP/2.0/UDP {client}:5062;branch=z9hG4bK-{call};rport\r\n\
         From: <sip:1001@example.com>;tag=a1\r\nTo: <sip:1001@example.com>\r\n\
         Call-ID: {call}@{client}\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn challenge(nonce: &str) -> String {
    format!("WWW-Authenticate: Digest realm=\"example.com\", nonce=\"{nonce}\", qop=\"auth\"\r\n")
}

fn credentials(nonce: &str) -> String {
    format!(
        "Authorization: Digest username=\"1001\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"6629fae49393a05397450978507c4ef1\", cnonce=\"0a4f113b\", nc=00000001, qop=auth\r\n"
    )
}

/// Trust only from what needs a reply read: a 2xx to a REGISTER or INVITE
/// that ingress saw as such and that carried back a nonce the SBC sent to
/// that address, or an answer to a request the SBC sent. Every packet a
/// spoofer can send, alone or in pairs, earns nothing.
#[test]
fn trust_comes_only_from_a_real_exchange() {
    use sip_xdp_common::maps::{Pending, Trust};
    const REG: &str = "REGISTER sip:example.com SIP/2.0";
    const INV: &str = "INVITE sip:200@example.com SIP/2.0";
    const OPT: &str = "OPTIONS sip:sbc SIP/2.0";
    const OK: &str = "SIP/2.0 200 OK";
    const E401: &str = "SIP/2.0 401 Unauthorized";
    const E407: &str = "SIP/2.0 407 Proxy Authentication Required";
    let p = TestProg::load("trust");
    let trusted = |ip: &str| p.maps().trust_of(ip.parse().unwrap());
    let set = |flags: u32| {
        let ttl = 3_600_000_000_000;
        let c = Config {
            trust_ttl_ns: ttl,
            flags,
            ..Default::default()
        };
        configure(&p, c)
    };
    set(0);
    // A message from `src` to the SBC, and one from the SBC to `dst`.
    let to_sbc = |src: &str, start: &str, call: &str, cseq: &str, extra: &str| {
        p.run(&Frame::sip(src, &sip_msg(start, src, call, cseq, extra)).build())
    };
    let from_sbc = |dst: &str, start: &str, call: &str, cseq: &str, extra: &str| {
        p.run_egress(&Frame::reply(dst, &sip_msg(start, dst, call, cseq, extra)).build())
    };
    let proxy = |s: String| s.replace("WWW-Authenticate", "Proxy-Authenticate");
    let proxy_auth = |s: String| s.replace("Authorization", "Proxy-Authorization");

    // A digest registration: 401 with a nonce, REGISTER carrying it back,
    // 200 to that REGISTER.
    let phone = "203.0.113.70";
    to_sbc(phone, REG, "r1", "1 REGISTER", "");
    from_sbc(phone, E401, "r1", "1 REGISTER", &challenge("n70"));
    assert_eq!(trusted(phone), None, "a challenge proves nothing");
    let auth = credentials("n70");
    assert_eq!(to_sbc(phone, REG, "r1", "2 REGISTER", &auth), XDP_PASS);
    assert_eq!(trusted(phone), None, "credentials are not yet accepted");
    assert_eq!(from_sbc(phone, OK, "r1", "2 REGISTER", ""), -1);
    assert_eq!(trusted(phone), Some(Trust::Registered));

    // The CSeq trick: an OPTIONS carrying a REGISTER's CSeq gets a 2xx
    // that echoes it (a stateless keep-alive answer). From a source in no
    // exchange it passes, and its 2xx earns nothing.
    let trick = "203.0.113.71";
    assert_eq!(to_sbc(trick, OPT, "t1", "1 REGISTER", ""), XDP_PASS);
    from_sbc(trick, "SIP/2.0 200 Keepalive", "t1", "1 REGISTER", "");
    assert_eq!(trusted(trick), None, "the CSeq trick earned trust");
    // In an exchange (challenged, a proven REGISTER pending) the trick is
    // dropped, so the registrar never answers it: with a CSeq naming the
    // pending REGISTER, after CR/LF (Kamailio skips them), with no CSeq
    // where the scan reads (in the next fragment), or as a REGISTER whose
    // CSeq names INVITE.
    from_sbc(trick, E401, "t2", "1 REGISTER", &challenge("n71"));
    to_sbc(trick, REG, "t2", "2 REGISTER", &credentials("n71"));
    let before = p.stats();
    assert_eq!(to_sbc(trick, OPT, "t2", "2 REGISTER", ""), XDP_DROP);
    let options = sip_msg(OPT, trick, "t2", "2 REGISTER", "");
    let after_crlf = [b"\r\n\r\n".as_slice(), &options].concat();
    assert_eq!(p.run(&Frame::sip(trick, &after_crlf).build()), XDP_DROP);
    let cut = &options[..options.len() - 40];
    assert_eq!(p.run(&Frame::sip(trick, cut).build()), XDP_DROP);
    assert_eq!(to_sbc(trick, REG, "t3", "3 INVITE", ""), XDP_DROP);
    // The OPTIONS after CR/LF is one too: servers skip the CR/LF.
    let classes = [(ClassRegister, 1), (ClassOptions, 3)];
    assert_eq!(
        delta(&before, &p.stats()),
        [&classes[..], &[(BadCSeq, 4)]].concat()
    );
    // A forged 2xx for the pending REGISTER sent to the SBC for it to relay
    // to the address (a proxy forwards a response it has no transaction
    // for to the next Via), from anywhere: dropped.
    let ours = String::from_utf8(sip_msg(OK, trick, "t2", "2 REGISTER", "")).unwrap();
    let relayed = ours.replace(
        "Via:",
        "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-x\r\nVia:",
    );
    let relayed = Frame::sip("203.0.113.99", relayed.as_bytes()).build();
    assert_eq!(p.run(&relayed), XDP_DROP);
    assert_eq!(to_sbc(trick, OK, "t2", "2 REGISTER", ""), XDP_DROP);
    assert_eq!(trusted(trick), None);
    // The phone's own OPTIONS and ACK pass while it is in an exchange.
    assert_eq!(to_sbc(phone, OPT, "o1", "1 OPTIONS", ""), XDP_PASS);
    let ack = "ACK sip:200@example.com SIP/2.0";
    assert_eq!(to_sbc(phone, ack, "o2", "1 ACK", ""), XDP_PASS);

    // Credentials without the nonce sent to that address: another nonce,
    // or the nonce sent to someone else. The 2xx still answers the
    // challenge for the brute-force count, but proves no address.
    let spoofed = "203.0.113.72";
    from_sbc(spoofed, E401, "s1", "1 REGISTER", &challenge("n72"));
    to_sbc(spoofed, REG, "s1", "2 REGISTER", &credentials("guessed"));
    from_sbc(spoofed, OK, "s1", "2 REGISTER", "");
    let other = "203.0.113.73";
    from_sbc(other, E401, "s2", "1 REGISTER", &challenge("n73"));
    to_sbc(other, REG, "s2", "2 REGISTER", &credentials("n72"));
    from_sbc(other, OK, "s2", "2 REGISTER", "");
    // A 2xx to a REGISTER the SBC never saw come in, or of another
    // transaction than the one pending.
    let unseen = "203.0.113.74";
    from_sbc(unseen, E401, "u1", "1 REGISTER", &challenge("n74"));
    from_sbc(unseen, OK, "u1", "2 REGISTER", "");
    to_sbc(unseen, REG, "u2", "2 REGISTER", &credentials("n74"));
    from_sbc(unseen, OK, "u2", "3 REGISTER", "");
    for ip in [spoofed, other, unseen] {
        assert_eq!(trusted(ip), None, "{ip}");
    }

    // An INVITE answering a 407 and answered 200 answers the 407, and
    // verifies nothing: an SBC answers some calls (a public number, an
    // IVR) without checking the credentials they carry.
    let caller = "2001:db8::70";
    from_sbc(caller, E407, "i1", "1 INVITE", &proxy(challenge("n75")));
    to_sbc(
        caller,
        INV,
        "i1",
        "2 INVITE",
        &proxy_auth(credentials("n75")),
    );
    from_sbc(caller, OK, "i1", "2 INVITE", "");
    assert_eq!(trusted(caller), None);
    // A call that passed its challenge and found the callee busy answered
    // the challenge too; a 400 does not.
    let busy = "203.0.113.76";
    for (call, status) in [
        ("b1", "SIP/2.0 486 Busy Here"),
        ("b2", "SIP/2.0 400 Bad Request"),
    ] {
        let nonce = format!("n-{call}");
        from_sbc(busy, E407, call, "1 INVITE", &proxy(challenge(&nonce)));
        to_sbc(
            busy,
            INV,
            call,
            "2 INVITE",
            &proxy_auth(credentials(&nonce)),
        );
        from_sbc(busy, status, call, "2 INVITE", "");
    }

    // Peers by answer: a request the SBC sends earns nothing until the
    // address answers it; a response naming another transaction, nothing.
    let trunk = "203.0.113.80";
    let phone2 = "203.0.113.81";
    from_sbc(trunk, "OPTIONS sip:trunk SIP/2.0", "k1", "1 OPTIONS", "");
    from_sbc(phone2, "NOTIFY sip:1001@x SIP/2.0", "k2", "1 NOTIFY", "");
    assert_eq!(
        trusted(trunk),
        None,
        "an unanswered request verifies nothing"
    );
    to_sbc(trunk, OK, "k9", "1 OPTIONS", "");
    let stolen = sip_msg(OK, phone2, "k2", "1 NOTIFY", "");
    p.run(&Frame::sip("203.0.113.82", &stolen).build());
    for ip in [trunk, phone2, "203.0.113.82"] {
        assert_eq!(trusted(ip), None, "{ip}");
    }
    assert_eq!(to_sbc(trunk, OK, "k1", "1 OPTIONS", ""), XDP_PASS);
    assert_eq!(trusted(trunk), Some(Trust::Peer));
    // A request the SBC relays (a second Via: someone else's, routed to an
    // address it chose) makes no peer of who answers it.
    let routed = "203.0.113.83";
    let relay = String::from_utf8(sip_msg(
        "OPTIONS sip:x SIP/2.0",
        routed,
        "k5",
        "5 OPTIONS",
        "",
    ))
    .unwrap();
    let relay = relay.replace(
        "\r\nFrom:",
        "\r\nVia: SIP/2.0/UDP 203.0.113.83:5062;branch=z9hG4bK-a\r\nFrom:",
    );
    p.run_egress(&Frame::reply(routed, relay.as_bytes()).build());
    assert_eq!(to_sbc(routed, OK, "k5", "5 OPTIONS", ""), XDP_PASS);
    assert_eq!(trusted(routed), None, "an answer to a relayed request");
    // A call the SBC sends the trunk: its answers pass, 180 and 200 alike.
    from_sbc(
        trunk,
        "INVITE sip:+15550100@trunk SIP/2.0",
        "k3",
        "1 INVITE",
        "",
    );
    assert_eq!(
        to_sbc(trunk, "SIP/2.0 180 Ringing", "k3", "1 INVITE", ""),
        XDP_PASS
    );
    assert_eq!(to_sbc(trunk, OK, "k3", "1 INVITE", ""), XDP_PASS);
    // A call's answers are never held, known or not; a REGISTER's answer
    // the SBC never asked for is.
    assert_eq!(to_sbc(trunk, OK, "k4", "1 INVITE", ""), XDP_PASS);
    assert_eq!(to_sbc(trunk, OK, "k4", "1 REGISTER", ""), XDP_DROP);
    from_sbc(trunk, "REGISTER sip:trunk SIP/2.0", "k6", "1 REGISTER", "");
    assert_eq!(to_sbc(trunk, E401, "k6", "1 REGISTER", ""), XDP_PASS);
    // A call may ring for minutes before its 2xx: the SBC's INVITE waits
    // for its answer longer than other requests do.
    let waits = {
        use aya::maps::{HashMap, Map, MapData};
        use sip_xdp_common::maps::{Exchange, ExchangeKey, MAP_ASKED};
        let data = MapData::from_pin(p.pins.map(MAP_ASKED)).unwrap();
        let map: HashMap<MapData, ExchangeKey, Exchange> =
            HashMap::try_from(Map::LruHashMap(data)).unwrap();
        let now = sip_xdp::kernel::clock::monotonic_ns();
        let trunk_key = key_of(trunk.parse().unwrap());
        let mut waits: Vec<u64> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, e)| k.addr == trunk_key && e.kind == Pending::Asked as u32)
            .map(|(_, e)| e.expires_ns.saturating_sub(now) / 1_000_000_000)
            .collect();
        waits.sort();
        waits
    };
    assert!(
        matches!(waits[..], [.., w, v] if w <= 32 && v >= 290),
        "{waits:?}"
    );

    // The brute-force count: only what answers a REGISTER or INVITE that
    // ingress saw answers a challenge; the keep-alive 2xx answers nothing.
    let answered = |ip: &str| {
        let k = key_of(ip.parse().unwrap());
        let all = p.maps().reply_totals().unwrap();
        all.into_iter()
            .find(|(c, _)| *c == k)
            .map(|(_, r)| r)
            .unwrap()
    };
    assert_eq!(answered(phone)[0], 1, "the phone's 2xx answers its 401");
    assert_eq!(answered(spoofed)[0], 1);
    assert_eq!(
        answered(trick)[0],
        0,
        "the keep-alive 2xx answered a challenge"
    );
    assert_eq!(answered(unseen)[0], 0);
    assert_eq!(
        answered(busy),
        [0, 0, 0, 0, 2, 1],
        "the busy call answered one 407"
    );
    assert_eq!(answered(caller)[5], 1);
    assert_eq!(p.maps().list_verified().len(), 2);

    // A REGISTER sent again in its transaction but inside a dialog (a To
    // tag: a proxy relays it by its Route, maybe back to the sender, who
    // answers it 200 for the SBC to relay back): the pending REGISTER is
    // void.
    let looped = "203.0.113.78";
    from_sbc(looped, E401, "l1", "1 REGISTER", &challenge("n78"));
    to_sbc(looped, REG, "l1", "2 REGISTER", &credentials("n78"));
    let in_dialog = String::from_utf8(sip_msg(REG, looped, "l1", "2 REGISTER", ""))
        .unwrap()
        .replace(
            "To: <sip:1001@example.com>",
            "To: <sip:1001@example.com>;tag=z1",
        );
    assert_eq!(
        p.run(&Frame::sip(looped, in_dialog.as_bytes()).build()),
        XDP_PASS
    );
    from_sbc(looped, OK, "l1", "2 REGISTER", "");
    assert_eq!(trusted(looped), None);

    // Monitor mode: the trick passes, and the REGISTER it rode on earns
    // nothing when answered.
    set(CONFIG_MONITOR);
    let watched = "203.0.113.77";
    from_sbc(watched, E401, "m1", "1 REGISTER", &challenge("n77"));
    to_sbc(watched, REG, "m1", "2 REGISTER", &credentials("n77"));
    assert_eq!(to_sbc(watched, OPT, "m1", "2 REGISTER", ""), XDP_PASS);
    from_sbc(watched, "SIP/2.0 200 Keepalive", "m1", "2 REGISTER", "");
    assert_eq!(trusted(watched), None);
    assert_eq!(p.stat(MonitorBadCSeq), 1);
}

#[test]
fn ipv6_sources_are_counted_and_limited_per_prefix() {
    let p = TestProg::load("prefix");
    configure(
        &p,
        Config {
            rate_limit: 5,
            rate_window_ns: 10_000_000_000,
            prefix_v4: 32,
            prefix_v6: 64,
            ..Default::default()
        },
    );
    // A host rotating through its /64, one new address per packet.
    let verdicts: Vec<u32> = (1..=8)
        .map(|i| p.run(&Frame::sip(&format!("2001:db8:5:0:{i:x}::{i:x}"), OPTIONS).build()))
        .collect();
    assert_eq!(
        verdicts,
        [XDP_PASS, XDP_PASS, XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP]
    );
    // Another /64 has its own budget; IPv4 stays per address.
    assert_eq!(
        p.run(&Frame::sip("2001:db8:5:1::1", OPTIONS).build()),
        XDP_PASS
    );
    for i in 0..3 {
        assert_eq!(
            p.run(&Frame::sip(&format!("203.0.113.{}", 90 + i), OPTIONS).build()),
            XDP_PASS
        );
    }
    let top = p.maps().top(10);
    let rotator = top
        .iter()
        .find(|r| r.src_ip.to_string() == "2001:db8:5::")
        .unwrap_or_else(|| panic!("{top:?}"));
    assert_eq!((rotator.packets, rotator.prefix_len), (8, 64));
    assert_eq!(top.len(), 5, "{top:?}");
    assert!(top
        .iter()
        .any(|r| r.src_ip.to_string() == "203.0.113.91" && r.prefix_len == 32));
}

/// Overload admission with a load mark of 5 per second, strangers' share
/// `strangers`, two per bucket, buckets by /16 and /32.
fn overload(strangers: u32) -> Config {
    Config {
        shed_per_cpu: 5,
        strangers_per_cpu: strangers,
        bucket_cap: 2,
        bucket_prefix_v4: 16,
        bucket_prefix_v6: 32,
        bucket_seed: 0x5eed,
        trust_ttl_ns: 3_600_000_000_000,
        ..Default::default()
    }
}

/// Waits for the start of a new second of the clock the program reads, so
/// the overload window and the buckets' window both start empty and no
/// run of a test straddles them.
fn next_window() {
    let ns = sip_xdp::kernel::clock::coarse_ns();
    let to_window = (1u64 << 30) - (ns & ((1 << 30) - 1));
    std::thread::sleep(std::time::Duration::from_nanos(to_window + 20_000_000));
}

#[test]
fn overload_admits_proven_and_remembered_sources_and_strangers_by_bucket() {
    // The windows are per CPU: keep every run on one.
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("shed");
    configure(&p, overload(100));
    // A registered phone: the SBC answered its authenticated REGISTER
    // with a 200.
    let phone = "203.0.113.60";
    p.run_egress(
        &Frame::reply(
            phone,
            &sip_msg(
                "SIP/2.0 401 Unauthorized",
                phone,
                "r",
                "1 REGISTER",
                &challenge("n"),
            ),
        )
        .build(),
    );
    p.run(
        &Frame::sip(
            phone,
            &sip_msg(
                "REGISTER sip:example.com SIP/2.0",
                phone,
                "r",
                "2 REGISTER",
                &credentials("n"),
            ),
        )
        .build(),
    );
    p.run_egress(
        &Frame::reply(
            phone,
            &sip_msg("SIP/2.0 200 OK", phone, "r", "2 REGISTER", ""),
        )
        .build(),
    );
    assert!(p.maps().trust_of(phone.parse().unwrap()).is_some());
    // A phone that proved itself yesterday, remembered; and one whose
    // memory lapsed.
    let now = sip_xdp::kernel::clock::monotonic_ns();
    let mut maps = p.maps();
    maps.remember("198.51.100.20".parse().unwrap(), now + 3_600_000_000_000)
        .unwrap();
    maps.remember("198.51.100.21".parse().unwrap(), now - 1)
        .unwrap();
    next_window();
    let run = |src: &str| p.run(&Frame::sip(src, REGISTER).build());
    let before = p.stats();
    // Under the mark everyone passes.
    for i in 0..5 {
        assert_eq!(run(&format!("2001:db8:7::{i}")), XDP_PASS);
    }
    // Overloaded: a storm from one /32 spends its bucket's two, and no
    // more of it passes.
    let storm: Vec<u32> = (10..30).map(|i| run(&format!("2001:db8:7::{i}"))).collect();
    assert_eq!(
        storm.iter().filter(|v| **v == XDP_PASS).count(),
        2,
        "{storm:?}"
    );
    // The verified and the remembered phone pass, every time; the lapsed
    // one is a stranger, in a bucket of its own.
    for _ in 0..3 {
        assert_eq!(run(phone), XDP_PASS);
        assert_eq!(run("198.51.100.20"), XDP_PASS);
    }
    assert_eq!(run("198.51.100.21"), XDP_PASS);
    // A new phone in another prefix: its REGISTER and its answer to the
    // challenge pass, a third packet in the same second does not.
    assert_eq!(run("100.64.1.9"), XDP_PASS);
    assert_eq!(run("100.64.1.9"), XDP_PASS);
    assert_eq!(run("100.64.1.9"), XDP_DROP);
    // A shed packet writes nothing for its source: no entry for a storm
    // to evict known clients with.
    let top = p.maps().top(1000);
    let tracked = |ip: &str| top.iter().any(|r| r.src_ip.to_string() == ip);
    assert!(!tracked("2001:db8:7::29"), "{top:?}");
    assert!(tracked("2001:db8:7::4") && tracked("100.64.1.9"), "{top:?}");
    assert_eq!(dropped_of(&p, "100.64.1.9"), 0);
    let d = delta(&before, &p.stats());
    let n = |c| d.iter().find(|(k, _)| *k == c).map_or(0, |(_, n)| *n);
    assert_eq!(
        (n(Sip), n(Shed), n(AdmitProven), n(AdmitStranger)),
        (5 + 2 + 6 + 1 + 2, 18 + 1, 6, 2 + 1 + 2),
        "{d:?}"
    );
    // Monitor mode counts what it would shed and drops nothing.
    configure(
        &p,
        Config {
            flags: CONFIG_MONITOR,
            ..overload(100)
        },
    );
    let before = p.stats();
    assert_eq!(run("2001:db8:7::99"), XDP_PASS);
    assert_eq!(
        delta(&before, &p.stats()),
        vec![(Sip, 1), (ClassRegister, 1), (MonitorShed, 1)]
    );
    // With the next second under the mark, everyone passes again.
    next_window();
    configure(&p, overload(100));
    assert_eq!(run("2001:db8:7::100"), XDP_PASS);
}

/// A storm's buckets are busy from its second window on and share only
/// half of the strangers' share: a new phone from a prefix the storm does
/// not use finds the other half, however many of the storm's prefixes
/// there are.
#[test]
fn overload_keeps_half_the_share_for_prefixes_the_storm_does_not_use() {
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("shbusy");
    configure(&p, overload(8));
    let run = |src: &str| p.run(&Frame::sip(src, REGISTER).build());
    let storm = |p: &dyn Fn(&str) -> u32| -> usize {
        (1..=10)
            .flat_map(|b| (0..3).map(move |i| format!("100.{b}.0.{i}")))
            .filter(|src| p(src) == XDP_PASS)
            .count()
    };
    next_window();
    for i in 0..5 {
        assert_eq!(run(&format!("2001:db8:7::{i}")), XDP_PASS);
    }
    // The first window: every bucket is quiet, the storm takes the share.
    assert_eq!(storm(&run), 8);
    assert_eq!(run("198.51.100.9"), XDP_DROP);
    next_window();
    for i in 0..5 {
        assert_eq!(run(&format!("2001:db8:7::{i}")), XDP_PASS);
    }
    // The next: its ten buckets are busy, and take half.
    assert_eq!(storm(&run), 4);
    assert_eq!(run("198.51.100.9"), XDP_PASS);
    assert_eq!(run("198.51.100.9"), XDP_PASS);
}

/// Blocked sources are dropped as blocked in overload too, and never
/// count toward the load mark or take a stranger's place: an attacker
/// spoofing from a blocked range cannot spend the share new phones need.
#[test]
fn overload_spends_nothing_on_blocked_sources() {
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("shblk");
    configure(&p, overload(2));
    p.maps()
        .block(
            &sip_xdp::guard::Guard::with_addresses(vec![]),
            "100.0.0.0/8".parse().unwrap(),
            None,
            sip_xdp_common::BanReason::Manual,
        )
        .unwrap();
    next_window();
    let run = |src: &str| p.run(&Frame::sip(src, REGISTER).build());
    let before = p.stats();
    // The blocked range first: none of it counts toward the mark.
    for i in 0..40 {
        assert_eq!(run(&format!("100.{i}.0.1")), XDP_DROP);
    }
    for i in 0..5 {
        assert_eq!(run(&format!("2001:db8:7::{i}")), XDP_PASS);
    }
    // Overloaded: more of the blocked range, from 40 prefixes, then two
    // strangers from prefixes of their own: the share of two is theirs.
    for i in 40..80 {
        assert_eq!(run(&format!("100.{i}.0.1")), XDP_DROP);
    }
    assert_eq!(run("198.51.100.9"), XDP_PASS);
    assert_eq!(run("203.0.113.9"), XDP_PASS);
    assert_eq!(run("2001:db8:99::1"), XDP_DROP, "the share is spent");
    let d = delta(&before, &p.stats());
    let n = |c| d.iter().find(|(k, _)| *k == c).map_or(0, |(_, n)| *n);
    assert_eq!(
        (n(Blocked), n(Sip), n(AdmitStranger), n(Shed)),
        (80, 7, 2, 1),
        "{d:?}"
    );
}

/// One word of a pinned hint, and writing one behind the writers' back.
fn hint_word(p: &TestProg, map: &str, i: u32) -> u64 {
    let data = aya::maps::MapData::from_pin(p.pins.map(map)).expect("pinned hint");
    let hint: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array");
    hint.get(&i, 0).expect("a word")
}

fn set_hint_word(p: &TestProg, map: &str, i: u32, v: u64) {
    let data = aya::maps::MapData::from_pin(p.pins.map(map)).expect("pinned hint");
    let mut hint: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array");
    hint.set(i, v, 0).expect("writing a word");
}

/// In overload the allow hint says whom the allow-list may hold: an
/// entry sets its bits before it goes in, and the program trusts a built
/// hint (a bit cleared behind the writers' back sheds the trunk, until
/// the controller's check writes it again), asks the trie for everyone
/// while it is not built, and outside overload always asks the trie. A
/// removal's stale bits go at the next check.
#[test]
fn in_overload_the_allow_hint_says_whom_the_allow_list_may_hold() {
    use sip_xdp_common::hints::{allow_slot, ALLOW_HINT_FLAGS, BUILT, PROOF_HINT_FLAGS};
    use sip_xdp_common::maps::{MAP_ALLOW_HINT, MAP_PROOF_HINT};
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("allowhint");
    assert_eq!(
        hint_word(&p, MAP_ALLOW_HINT, ALLOW_HINT_FLAGS) & BUILT,
        BUILT
    );
    assert_eq!(
        hint_word(&p, MAP_PROOF_HINT, PROOF_HINT_FLAGS) & BUILT,
        BUILT
    );
    let trunk_ip = "203.0.113.20";
    let (slot, _) = allow_slot(&sip_xdp_common::addr::key_of(trunk_ip.parse().unwrap()));
    assert_eq!(hint_word(&p, MAP_ALLOW_HINT, slot.word) & slot.mask, 0);
    p.maps().allow("203.0.113.16/28".parse().unwrap()).unwrap();
    assert_ne!(hint_word(&p, MAP_ALLOW_HINT, slot.word) & slot.mask, 0);
    configure(&p, overload(0));
    let trunk = Frame::sip(trunk_ip, REGISTER).build();
    let verdict = |frame: &[u8]| {
        let (_, moved) = run(&p, frame);
        moved
            .into_iter()
            .map(|(c, _)| c)
            .find(|c| matches!(c, Allowed | Shed | Sip))
    };
    next_window();
    // Past the mark: five strangers count toward it, the sixth is shed.
    for i in 0..5 {
        p.run(&Frame::sip(&format!("198.51.100.{i}"), REGISTER).build());
    }
    assert_eq!(
        verdict(&Frame::sip("198.51.100.9", REGISTER).build()),
        Some(Shed)
    );
    assert_eq!(verdict(&trunk), Some(Allowed));
    let word = hint_word(&p, MAP_ALLOW_HINT, slot.word);
    set_hint_word(&p, MAP_ALLOW_HINT, slot.word, word & !slot.mask);
    assert_eq!(verdict(&trunk), Some(Shed));
    set_hint_word(&p, MAP_ALLOW_HINT, ALLOW_HINT_FLAGS, 0);
    assert_eq!(verdict(&trunk), Some(Allowed));
    let check = p.maps().check_allow_hint().unwrap();
    assert_eq!(check.missing, 2, "{check:?}");
    assert_eq!(verdict(&trunk), Some(Allowed));
    // A removal's bits stay until the check clears them.
    assert!(p
        .maps()
        .disallow(&"203.0.113.16/28".parse().unwrap())
        .unwrap());
    assert_ne!(hint_word(&p, MAP_ALLOW_HINT, slot.word) & slot.mask, 0);
    assert_eq!(verdict(&trunk), Some(Shed));
    let check = p.maps().check_allow_hint().unwrap();
    assert_eq!((check.missing, check.written), (0, 1), "{check:?}");
    assert_eq!(hint_word(&p, MAP_ALLOW_HINT, slot.word) & slot.mask, 0);
    // An IPv6 entry wider than the hint's /32 sends every IPv6 source to
    // the trie.
    p.maps().allow("2001:db8::/16".parse().unwrap()).unwrap();
    assert_eq!(
        verdict(&Frame::sip("2001:db8:7::1", REGISTER).build()),
        Some(Allowed)
    );
    assert_eq!(
        verdict(&Frame::sip("2a00:db8::1", REGISTER).build()),
        Some(Shed)
    );
    // Outside overload the trie answers, whatever the hint says.
    configure(&p, Config::default());
    p.maps().allow("203.0.113.16/28".parse().unwrap()).unwrap();
    let word = hint_word(&p, MAP_ALLOW_HINT, slot.word);
    set_hint_word(&p, MAP_ALLOW_HINT, slot.word, word & !slot.mask);
    assert_eq!(verdict(&trunk), Some(Allowed));
}

#[test]
fn overload_holds_strangers_to_their_share_however_often_they_come_back() {
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("cycle");
    configure(
        &p,
        Config {
            prefix_v6: 64,
            ..overload(50)
        },
    );
    // A pool of sources, each from a /32 of its own, sent through twice
    // within a second: coming back proves nothing.
    let frames: Vec<Vec<u8>> = (0..300)
        .map(|i| Frame::sip(&format!("2001:{i:x}::1"), OPTIONS).build())
        .collect();
    next_window();
    let before = p.stats();
    let first: usize = frames.iter().filter(|f| p.run(f) == XDP_PASS).count();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again: usize = frames.iter().filter(|f| p.run(f) == XDP_PASS).count();
    assert_eq!((first, again), (5 + 50, 0));
    let d = delta(&before, &p.stats());
    let n = |c| d.iter().find(|(k, _)| *k == c).map_or(0, |(_, n)| *n);
    assert_eq!((n(Sip), n(Shed), n(AdmitStranger)), (55, 545, 50), "{d:?}");
    // Shed sources left no trace in the source table.
    assert_eq!(p.maps().top(1000).len(), 55);
}

#[test]
fn a_source_back_after_silence_is_sampled_again() {
    // Per-CPU accounting: keep every run on one CPU.
    sip_xdp_tests::flood::pin_to_cpu(0);
    let p = TestProg::load("burst");
    configure(
        &p,
        Config {
            sample_first: 1,
            sample_per_sec: 100,
            burst_idle_ms: 100,
            ..Default::default()
        },
    );
    let send = || p.run(&Frame::sip("203.0.113.77", OPTIONS).build());
    for _ in 0..4 {
        send();
    }
    assert_eq!(drain(&p).len(), 1, "the first packet only");
    std::thread::sleep(std::time::Duration::from_millis(150));
    send();
    send();
    let again = drain(&p);
    assert_eq!(again.len(), 1, "the first packet of the new burst only");
    assert_eq!(again[0].kind, SampleKind::First);
    // Off: a returning source is not sampled again.
    configure(
        &p,
        Config {
            sample_first: 1,
            sample_per_sec: 100,
            ..Default::default()
        },
    );
    std::thread::sleep(std::time::Duration::from_millis(150));
    send();
    assert!(drain(&p).is_empty());
}

/// The deny lists, from a source's first packet: a scanner's User-Agent,
/// a method the SBC never serves, a denied From/To/Contact user or domain.
/// The allow-list is exempt; monitor mode counts and passes; with the
/// lists off, nothing is judged.
#[test]
fn the_deny_lists_drop_from_the_first_packet() {
    use sip_xdp::detect::settings::Settings;
    use sip_xdp_common::{rules::compile, CONFIG_MATCH};
    let p = TestProg::load("deny");
    let mut s = Settings::default();
    s.deny.methods = vec!["SUBSCRIBE".into()];
    s.deny.users = vec!["sipvicious".into()];
    s.deny.domains = vec!["evil.example".into()];
    let lists = s.rule_lists();
    let table = compile(&lists).unwrap();
    let mut maps = p.maps();
    sip_xdp::kernel::rules::install(&mut maps, &table, lists.reads()).unwrap();
    assert_ne!(maps.config().unwrap().flags & CONFIG_MATCH, 0);
    let svmap = |src: &str| {
        let m = String::from_utf8(OPTIONS.to_vec()).unwrap().replace(
            "Content-Length",
            "User-Agent: friendly-scanner\r\nContent-Length",
        );
        Frame::sip(src, m.as_bytes()).build()
    };
    let before = p.stats();
    // Each from a new source: its first packet.
    assert_eq!(p.run(&svmap("203.0.113.80")), XDP_DROP);
    let subscribe = String::from_utf8(OPTIONS.to_vec())
        .unwrap()
        .replace("OPTIONS", "SUBSCRIBE");
    assert_eq!(
        p.run(&Frame::sip("203.0.113.81", subscribe.as_bytes()).build()),
        XDP_DROP
    );
    let from = String::from_utf8(INVITE.to_vec()).unwrap().replace(
        "<sip:100@example.com>",
        "\"x\" <sip:SIPVicious@example.com>",
    );
    assert_eq!(
        p.run(&Frame::sip("203.0.113.82", from.as_bytes()).build()),
        XDP_DROP
    );
    let contact = String::from_utf8(REGISTER.to_vec())
        .unwrap()
        .replace("<sip:100@203.0.113.9>", "<sip:100@EVIL.example:5060>");
    assert_eq!(
        p.run(&Frame::sip("203.0.113.83", contact.as_bytes()).build()),
        XDP_DROP
    );
    for clean in [OPTIONS, REGISTER, INVITE] {
        assert_eq!(p.run(&Frame::sip("203.0.113.84", clean).build()), XDP_PASS);
    }
    // Each drop is charged to its source, as `top` shows it.
    assert_eq!(dropped_of(&p, "203.0.113.80"), 1);
    assert_eq!(dropped_of(&p, "203.0.113.84"), 0);
    assert_eq!(
        delta(&before, &p.stats()),
        [
            (Sip, 3),
            (ClassRegister, 2),
            (ClassInvite, 2),
            (ClassOptions, 2),
            (ClassOtherRequest, 1),
            (Scanner, 1),
            (Method, 1),
            (DeniedHeader, 2),
        ]
    );
    // Behind a first byte that SigComp begins with, Kamailio still reads a
    // request (its method is "\xffPTIONS"): the lists read it too.
    let mut hidden = String::from_utf8(OPTIONS.to_vec())
        .unwrap()
        .replace(
            "Content-Length",
            "User-Agent: friendly-scanner\r\nContent-Length",
        )
        .into_bytes();
    hidden[0] = 0xff;
    let before = p.stats();
    assert_eq!(
        p.run(&Frame::sip("203.0.113.88", &hidden).build()),
        XDP_DROP
    );
    assert_eq!(
        delta(&before, &p.stats()),
        [(Scanner, 1), (ClassSigComp, 1)]
    );
    // The allow-list is never judged by them.
    maps.put_allow(&"203.0.113.85/32".parse().unwrap()).unwrap();
    assert_eq!(p.run(&svmap("203.0.113.85")), XDP_PASS);
    // Monitor mode counts what it would drop.
    let mut c = maps.config().unwrap();
    c.flags |= CONFIG_MONITOR;
    configure(&p, c);
    let before = p.stats();
    assert_eq!(p.run(&svmap("203.0.113.86")), XDP_PASS);
    assert_eq!(
        delta(&before, &p.stats()),
        [(ClassOptions, 1), (MonitorScanner, 1)]
    );
    // Lists off: nothing is judged.
    c.flags &= !CONFIG_MONITOR;
    configure(&p, c);
    sip_xdp::kernel::rules::install(&mut maps, &table, 0).unwrap();
    assert_eq!(p.run(&svmap("203.0.113.87")), XDP_PASS);
}

/// An IPv6 UDP length of 0, which Linux delivers as "the rest of the
/// datagram": the payload is classified, sampled and matched as the
/// socket will get it, not taken for empty.
#[test]
fn a_udp_length_of_zero_hides_nothing() {
    use sip_xdp::detect::settings::Settings;
    use sip_xdp_common::rules::compile;
    let p = TestProg::load("udp0");
    configure(
        &p,
        Config {
            sample_first: 1,
            sample_per_sec: 100,
            ..Default::default()
        },
    );
    let lists = Settings::default().rule_lists();
    let table = compile(&lists).unwrap();
    sip_xdp::kernel::rules::install(&mut p.maps(), &table, lists.reads()).unwrap();
    let msg = String::from_utf8(REGISTER.to_vec()).unwrap().replace(
        "Content-Length",
        "User-Agent: friendly-scanner\r\nContent-Length",
    );
    let mut f = Frame::sip("2001:db8:9::1", msg.as_bytes()).build();
    // Ethernet, the IPv6 header, then the UDP length.
    let udp_len = 14 + 40 + 4;
    assert_eq!(
        usize::from(u16::from_be_bytes([f[udp_len], f[udp_len + 1]])),
        8 + msg.len()
    );
    f[udp_len..udp_len + 2].copy_from_slice(&[0, 0]);
    let before = p.stats();
    assert_eq!(p.run(&f), XDP_DROP);
    assert_eq!(
        delta(&before, &p.stats()),
        vec![(Sampled, 1), (ClassRegister, 1), (Scanner, 1)]
    );
    let s = drain(&p);
    let info = s[0].sip.as_ref().expect("the sample holds the message");
    assert_eq!(info.user_agent.as_deref(), Some("friendly-scanner"));
}

/// What the program cannot read to its payload is never judged more
/// leniently than SIP: a header chain past the walk, a first fragment too
/// short to classify, a UDP length Linux refuses. Each is counted against
/// its source as malformed, under its rate limit, and dropped.
#[test]
fn what_cannot_be_read_is_counted_and_dropped() {
    let p = TestProg::load("unread");
    configure(
        &p,
        Config {
            rate_limit: 3,
            rate_window_ns: 60_000_000_000,
            ..Default::default()
        },
    );
    let reg = Frame::sip("2001:db8:2::140", REGISTER).build();
    // Six extension headers are walked, as RFC 8200 orders at most.
    let six = with_dest_opts(&reg, 6);
    assert_eq!(
        run(&p, &six),
        (XDP_PASS, vec![(Sip, 1), (ClassRegister, 1)])
    );
    // A seventh put the rest past the walk, and it passed unjudged.
    let seven = with_dest_opts(&reg, 7);
    assert_eq!(
        run(&p, &seven),
        (XDP_DROP, vec![(ClassMalformed, 1), (Invalid, 1)])
    );
    // They count against the source's limit: its third packet reaches it,
    // and the fourth crosses it (sampled, for the ban).
    assert_eq!(run(&p, &seven).0, XDP_DROP);
    assert_eq!(
        run(&p, &six),
        (
            XDP_DROP,
            vec![(RateLimited, 1), (Sampled, 1), (ClassRegister, 1)]
        )
    );
    assert_eq!(dropped_of(&p, "2001:db8:2::140"), 3);
    // A first fragment holding the UDP header and nothing more, or less
    // of the payload than any stack fragments at; the rest would
    // reassemble into a scanner's REGISTER whose User-Agent nobody read.
    let scanner = [
        REGISTER,
        b"X-Pad: 0123456789\r\n".repeat(40).as_slice(),
        b"User-Agent: friendly-scanner\r\n\r\n",
    ]
    .concat();
    for v6 in [false, true] {
        // A source each, under the rate limit.
        let src = |i: usize| {
            if v6 {
                format!("2001:db8:2:{}::141", i + 1)
            } else {
                format!("100.64.9.{}", i + 1)
            }
        };
        for (i, head) in [0, 8, 16, 64, 504].into_iter().enumerate() {
            let src = src(i);
            assert_eq!(
                run(&p, &first_fragment(&src, &scanner, head)),
                (XDP_DROP, vec![(ClassMalformed, 1), (Invalid, 1)]),
                "{src}: {head} bytes of payload"
            );
        }
        // As much as a 552-byte path MTU leaves: judged as any first
        // fragment.
        let src = src(9);
        assert_eq!(
            run(&p, &first_fragment(&src, &scanner, 520)),
            (XDP_PASS, vec![(Sip, 1), (ClassRegister, 1)]),
            "{src}"
        );
    }
    // A UDP length past the IP length: Linux drops it, and so does the
    // filter; a UDP length of 0 over IPv4 likewise.
    for len in [8 + REGISTER.len() as u16 + 1, 0] {
        let mut f = Frame::sip("203.0.113.142", REGISTER).build();
        set_udp_len(&mut f, 14 + 20, len);
        assert_eq!(
            run(&p, &f),
            (XDP_DROP, vec![(ClassMalformed, 1), (Invalid, 1)]),
            "UDP length {len}"
        );
    }
    // The allow-list still passes its own.
    p.maps().allow("203.0.113.142/32".parse().unwrap()).unwrap();
    let mut f = Frame::sip("203.0.113.142", REGISTER).build();
    set_udp_len(&mut f, 14 + 20, 0);
    assert_eq!(
        run(&p, &f),
        (XDP_PASS, vec![(Allowed, 1), (ClassMalformed, 1)])
    );
}

/// The payload ends where the IP datagram does: bytes after it (Ethernet
/// padding, a trailer) are neither classified nor sampled, an IPv6 UDP
/// length of 0 included.
#[test]
fn samples_hold_nothing_past_the_datagram() {
    let p = TestProg::load("padsample");
    configure(
        &p,
        Config {
            sample_first: 1,
            sample_per_sec: 100,
            ..Default::default()
        },
    );
    let mut f = Frame::sip("2001:db8:2::143", OPTIONS).build();
    set_udp_len(&mut f, 14 + 40, 0);
    f.extend_from_slice(&[0xab; 40]);
    assert_eq!(run(&p, &f).0, XDP_PASS);
    let mut ring = open_ring(&p.pins).unwrap();
    let item = ring.next().expect("a sample");
    assert!(item.len() >= std::mem::size_of::<SampleHeader>());
    // SAFETY: the ring holds `Sample` records, header first.
    let h = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const SampleHeader) };
    assert_eq!(
        (usize::from(h.payload_len), usize::from(h.cap_len)),
        (OPTIONS.len(), OPTIONS.len())
    );
    assert_eq!(
        &item[std::mem::size_of::<SampleHeader>()..][..OPTIONS.len()],
        OPTIONS
    );
}

/// VLAN stacks deeper than two tags are read (stacked VLAN devices deliver
/// them), so a ban holds on them; past eight tags the frame is dropped.
#[test]
fn deep_vlan_stacks_are_judged() {
    let p = TestProg::load("qinqinq");
    p.maps()
        .block(
            &sip_xdp::guard::Guard::with_addresses(vec![]),
            "203.0.113.144/32".parse().unwrap(),
            None,
            sip_xdp_common::maps::BanReason::Manual,
        )
        .unwrap();
    let banned = Frame::sip("203.0.113.144", OPTIONS)
        .vlan(10)
        .vlan(20)
        .build();
    let other = Frame::sip("203.0.113.145", OPTIONS)
        .vlan(10)
        .vlan(20)
        .build();
    for extra in [vec![30], vec![30, 40, 50, 60, 70, 80]] {
        assert_eq!(
            run(&p, &with_vlan_stack(&banned, &extra)),
            (XDP_DROP, vec![(Banned, 1)]),
            "{} tags",
            extra.len() + 2
        );
        assert_eq!(
            run(&p, &with_vlan_stack(&other, &extra)),
            (XDP_PASS, vec![(Sip, 1), (ClassOptions, 1)])
        );
    }
    let nine = with_vlan_stack(&other, &[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(run(&p, &nine), (XDP_DROP, vec![(Invalid, 1)]));
}
