//! Detection end to end: the real controller in a namespace lab on a real
//! MariaDB, attacked from a client namespace, while a legitimate SIPp client
//! makes calls from another. Every case is checked in the kernel,
//! `security_events`, `blocked_ips`, the log line and the metrics. Needs
//! root, MariaDB and SIPp; run with `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_xdp::{
    db::Store,
    kernel::{Maps, Pins},
};
use sip_xdp_tests::sbc::Sbc;
use sip_xdp_tests::{
    cli::{eventually, Cli, Daemon},
    lab::{Lab, Netns},
    sipp::{self, Uas, UAS_404},
};

/// The sampling unit of these tests.
const UNIT: Duration = Duration::from_millis(500);
const METRICS: &str = "127.0.0.1:9477";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn kernel_bans(cli: &Cli) -> Vec<(IpAddr, &'static str)> {
    let maps = Maps::open(&Pins::new(&cli.pins)).unwrap();
    maps.bans_raw()
        .into_iter()
        .filter(|(_, v)| v.active_at(sip_xdp::kernel::clock::monotonic_ns()))
        .map(|(ip, v)| {
            (
                ip,
                sip_xdp_common::maps::BanReason::from_u32(v.reason).map_or("?", |r| r.as_str()),
            )
        })
        .collect()
}

fn banned(cli: &Cli, ip: IpAddr) -> Option<&'static str> {
    kernel_bans(cli)
        .into_iter()
        .find(|(a, _)| *a == ip)
        .map(|(_, r)| r)
}

/// A UDP socket in `ns` bound to `ip:5060`, non-blocking, for counting
/// what the filter let through.
fn listener(ns: &Netns, ip: IpAddr) -> UdpSocket {
    let s = ns.enter(|| UdpSocket::bind(SocketAddr::new(ip, 5060)).unwrap());
    s.set_nonblocking(true).unwrap();
    s
}

fn drain(s: &UdpSocket, quiet: Duration) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        match s.recv_from(&mut buf) {
            Ok(_) => {
                n += 1;
                last = Instant::now();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    n
}

fn request(method: &str, user: &str, to: IpAddr, ua: &str, seq: usize) -> Vec<u8> {
    format!(
        "{method} sip:{user}@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.2:5062;branch=z9hG4bK-{seq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:attacker@203.0.113.2>;tag={seq}\r\n\
         To: <sip:{user}@{to}>\r\n\
         Call-ID: {seq}-{user}@203.0.113.2\r\n\
         CSeq: 1 {method}\r\n\
         User-Agent: {ua}\r\n\
         Contact: <sip:attacker@203.0.113.2:5062>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `n` datagrams from `ns`, one every `gap`, built by `make(i)`.
/// Bounded by count; returns when all are sent.
fn send_each(ns: &Netns, to: SocketAddr, n: usize, gap: Duration, make: impl Fn(usize) -> Vec<u8>) {
    let any = if to.is_ipv4() {
        "0.0.0.0:5062"
    } else {
        "[::]:5062"
    };
    let sock = ns.enter(|| UdpSocket::bind(any).unwrap());
    for i in 0..n {
        let _ = sock.send_to(&make(i), to);
        std::thread::sleep(gap);
    }
}

/// The lines of the log at `log` that the shipped fail2ban filter
/// (dist/fail2ban/filter.d/sip-xdp.conf) matches, as the real
/// `fail2ban-regex` reports them.
fn fail2ban_matched(log: &std::path::Path) -> Vec<String> {
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/fail2ban/filter.d/sip-xdp.conf"
    );
    let out = std::process::Command::new("fail2ban-regex")
        .args(["--print-all-matched", log.to_str().unwrap(), filter])
        .output()
        .expect("fail2ban-regex (installed by `cargo xtask test`)");
    assert!(out.status.success(), "fail2ban-regex: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split("|- Matched line(s):")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .skip(1)
                .take_while(|l| l.starts_with("|  "))
                .map(|l| l[3..].to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn scrape(ns: &Netns) -> String {
    sip_xdp_tests::http::scrape(ns, METRICS)
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn events(store: &Store, event_type: &str) -> Vec<(Option<String>, serde_json::Value)> {
    let since = sip_xdp::db::store::now() - chrono::Duration::hours(1);
    store
        .events(since, Some(event_type), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.source_ip,
                serde_json::from_str(e.details.as_deref().unwrap_or("{}")).unwrap(),
            )
        })
        .collect()
}

/// The controller on both server interfaces with a 500 ms sampling unit
/// and the metrics endpoint on.
fn controller(cli: &Cli, lab: &Lab, detect: &str) -> Daemon {
    cli.add_config(&format!(
        "metrics = \"{METRICS}\"\n[detect]\ninterval = \"500ms\"\n{detect}"
    ));
    let d = cli.start_controller(
        &[&lab.links[0].server_if, &lab.links[1].server_if],
        "sbc-1",
        "500ms",
    );
    d.wait_log("controller running", Duration::from_secs(20));
    // Its migrations first: the test's own connection comes after, as an
    // operator's tools would.
    d.wait_log("database connected", Duration::from_secs(20));
    d
}

#[test]
fn flood_is_banned_within_two_units_and_the_kernel_limit_holds_without_the_controller() {
    let sbc = Sbc::mariadb("fl");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    // Kernel limit 100/s, reported but not banned on: the flood detector
    // must be what bans here.
    let mut daemon = controller(
        cli,
        lab,
        "[detect.rate_limit]\npackets = 100\nwindow = \"1s\"\nban = \"0s\"\n",
    );
    let legit = &lab.links[0];
    let attack = &lab.links[1];
    let _uas = Uas::start(&lab.server, legit.server_v4, None);
    let hits = listener(&lab.server, attack.server_v4);
    let target = SocketAddr::new(attack.server_v4, 5060);

    // A legitimate caller keeps calling through the attack.
    let uac = std::thread::scope(|s| {
        let uac = s.spawn(|| sipp::uac(&lab.clients[0], legit.client_v4, legit.server_v4, 20, 5));
        std::thread::sleep(Duration::from_millis(500));
        // 200 packets/s from the attacker, bounded: 600 packets, 3 s.
        let start = Instant::now();
        let attacker = &lab.clients[1];
        let flood = s.spawn(move || {
            send_each(attacker, target, 600, Duration::from_millis(5), |i| {
                request("OPTIONS", "100", target.ip(), "Linphone/5.2", i)
            })
        });
        assert!(
            eventually(Duration::from_secs(5), || banned(cli, attack.client_v4)
                .is_some()),
            "flood never banned:\n{}",
            daemon.log_text()
        );
        let took = start.elapsed();
        println!("flood banned {took:?} after its first packet (unit {UNIT:?})");
        assert!(
            took <= 2 * UNIT + Duration::from_millis(700),
            "banned after {took:?}, more than two sampling units"
        );
        assert_eq!(banned(cli, attack.client_v4), Some("flood"));
        flood.join().unwrap();
        uac.join().unwrap()
    });
    assert!(
        uac.exit_ok && uac.failed == 0 && uac.successful == 20,
        "legitimate calls failed under the flood: {uac:?}"
    );
    // What reached the server before the ban: bounded by two units of
    // flood, and cut to the kernel limit meanwhile.
    let before_ban = drain(&hits, Duration::from_millis(300));
    assert!(before_ban <= 250, "{before_ban} flood packets delivered");

    daemon.wait_log(
        "banned src_ip=203.0.113.2 reason=flood",
        Duration::from_secs(2),
    );
    let m = scrape(&lab.server);
    assert!(
        metric(&m, "sipxdp_bans_total{kind=\"flood\"}") >= 1.0,
        "{m}"
    );
    assert!(metric(&m, "sipxdp_tracked_sources") >= 2.0);
    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "flood_detected")).is_empty()
    }));
    let ev = rt.block_on(events(&store, "flood_detected"));
    assert_eq!(ev[0].0.as_deref(), Some("203.0.113.2"));
    assert!(ev[0].1["packets"].as_u64().unwrap() > 30, "{}", ev[0].1);
    assert_eq!(ev[0].1["action"], "banned");
    assert_eq!(ev[0].1["ban_s"], 120);
    let rows = rt.block_on(store.blocks_of("203.0.113.2")).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].source, "flood");
    assert!(rows[0].expires_at.is_some());
    assert_eq!(rt.block_on(events(&store, "ip_blocked")).len(), 1);

    // The controller stops; the kernel limit stays. With the ban lifted, a
    // fast flood gets through at 100 per one-second window, no more.
    assert!(daemon.stop().success());
    cli.ok(&["unblock", "203.0.113.2"]);
    assert_eq!(banned(cli, attack.client_v4), None);
    // Dropped by the kernel: by the rate limit, or shed first where the
    // burst pushes a CPU past its load mark (a fast sender does).
    let kernel_drops = || {
        let s = cli.stats();
        s["drop_rate_limited"].as_u64().unwrap_or(0) + s["drop_shed"].as_u64().unwrap_or(0)
    };
    let before = kernel_drops();
    let start = Instant::now();
    send_each(
        &lab.clients[1],
        target,
        2000,
        Duration::from_micros(250),
        |i| request("OPTIONS", "100", target.ip(), "Linphone/5.2", i),
    );
    let secs = start.elapsed().as_secs_f64();
    let through = drain(&hits, Duration::from_millis(300));
    let windows = secs.ceil() as usize + 1;
    println!("controller stopped: {through} of 2000 delivered in {secs:.2} s");
    assert!(
        through <= 100 * windows,
        "{through} delivered in {secs:.2} s with a 100/s kernel limit"
    );
    assert!(
        through >= 100,
        "the limit lets the first 100 of a window through"
    );
    let after = kernel_drops();
    assert!(
        after - before >= (2000 - through) as u64,
        "{} of {} undelivered were dropped by the kernel",
        after - before,
        2000 - through
    );
}

/// A scanner in the SBC's own /64 (a hosting provider's shared prefix):
/// the /64 may not be banned, since it holds the SBC's address, so the
/// scanner's address alone is.
#[test]
fn a_scanner_next_door_is_banned_without_the_hosts_own_prefix() {
    let sbc = Sbc::mariadb("nd");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(cli, lab, "");
    let attack = &lab.links[1];
    let hits = listener(&lab.server, attack.server_v6);
    let target = SocketAddr::new(attack.server_v6, 5060);
    send_each(
        &lab.clients[1],
        target,
        30,
        Duration::from_millis(20),
        |i| {
            request(
                "OPTIONS",
                &format!("{}", 100 + i),
                target.ip(),
                "friendly-scanner",
                i,
            )
        },
    );
    assert_eq!(drain(&hits, Duration::from_millis(300)), 0);
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, attack.client_v6)
            .is_some()),
        "the scanner next door was never banned; kernel bans: {:?}",
        kernel_bans(cli)
    );
    assert_eq!(banned(cli, attack.client_v6), Some("scanner"));
    // The scanner's address alone: no prefix holding it is blocked.
    let maps = Maps::open(&Pins::new(&cli.pins)).unwrap();
    assert!(maps
        .blocks_raw()
        .iter()
        .all(|(n, _)| !n.contains(&attack.client_v6)));
    daemon.wait_log(
        "banned src_ip=2001:db8:2::2 reason=scanner_user_agent",
        Duration::from_secs(2),
    );
    // Another neighbour in the same /64, outside the ban, still reaches
    // the SBC.
    lab.clients[1].ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:2::9/64",
        "dev",
        "e0",
        "nodad",
    ]);
    let phone = lab.clients[1].enter(|| UdpSocket::bind("[2001:db8:2::9]:5070").unwrap());
    phone
        .send_to(
            &request("OPTIONS", "100", target.ip(), "Yealink SIP-T46S", 1),
            target,
        )
        .unwrap();
    assert_eq!(drain(&hits, Duration::from_millis(300)), 1);
}

/// A controller that can open no descriptor more (a flood of connections
/// to its metrics port, a low `LimitNOFILE`) still bans from the handles
/// it holds: a flood, judged by the sampling pass, and a scanner, from
/// its samples, are banned in the kernel.
#[test]
fn with_no_descriptor_left_the_controller_still_bans() {
    let sbc = Sbc::mariadb("nf");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(
        cli,
        lab,
        "[detect.rate_limit]\npackets = 100\nwindow = \"1s\"\nban = \"0s\"\n",
    );
    // A few rounds first, so that what the controller keeps is open.
    std::thread::sleep(Duration::from_secs(3));
    let pid = daemon.child.id().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=0:"])
        .status()
        .unwrap();
    assert!(limited.success());
    let flooder = &lab.links[1];
    let target = SocketAddr::new(flooder.server_v4, 5060);
    send_each(
        &lab.clients[1],
        target,
        600,
        Duration::from_millis(5),
        |i| request("OPTIONS", "100", target.ip(), "Linphone/5.2", i),
    );
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, flooder.client_v4)
            == Some("flood")),
        "the flood was never banned; kernel bans: {:?}\n{}",
        kernel_bans(cli),
        daemon.log_text()
    );
    let scanner = &lab.links[0];
    let target = SocketAddr::new(scanner.server_v4, 5060);
    send_each(
        &lab.clients[0],
        target,
        10,
        Duration::from_millis(20),
        |i| request("OPTIONS", "100", target.ip(), "friendly-scanner", i),
    );
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, scanner.client_v4)
            == Some("scanner")),
        "the scanner was never banned; kernel bans: {:?}\n{}",
        kernel_bans(cli),
        daemon.log_text()
    );
}

#[test]
fn scanner_user_agent_is_banned_at_its_first_packets() {
    let sbc = Sbc::mariadb("sc");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(
        cli,
        lab,
        // The flood detector's pike default (30 per unit) would also catch
        // the burst below, and whichever pass ran first would name the ban:
        // lifted here so that the burst is the kernel rate limit's alone.
        "[detect.rate_limit]\npackets = 50\nwindow = \"10s\"\nban = \"60s\"\n\
         [detect.flood]\nlimit = 10000\n",
    );
    let attack = &lab.links[1];
    let hits = listener(&lab.server, attack.server_v4);
    let target = SocketAddr::new(attack.server_v4, 5060);
    // sipvicious-style: OPTIONS, REGISTER, INVITE, 20 ms apart, bounded.
    let start = Instant::now();
    send_each(
        &lab.clients[1],
        target,
        30,
        Duration::from_millis(20),
        |i| {
            let m = ["OPTIONS", "REGISTER", "INVITE"][i % 3];
            request(
                m,
                &format!("{}", 100 + i),
                target.ip(),
                "friendly-scanner",
                i,
            )
        },
    );
    let sent_for = start.elapsed();
    let through = drain(&hits, Duration::from_millis(300));
    println!("scanner: {through} of 30 packets reached the server (sent over {sent_for:?})");
    assert_eq!(through, 0, "scanner packets reached the server");
    // Dropped by the kernel's match from the first, then by the ban.
    assert!(cli.stats()["drop_scanner"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(banned(cli, attack.client_v4), Some("scanner"));
    daemon.wait_log(
        "banned src_ip=203.0.113.2 reason=scanner_user_agent",
        Duration::from_secs(2),
    );
    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "scanner_detected")).is_empty()
    }));
    let ev = rt.block_on(events(&store, "scanner_detected"));
    assert_eq!(ev.len(), 1, "one attack, one event: {ev:?}");
    assert_eq!(ev[0].1["user_agent"], "friendly-scanner");
    assert_eq!(ev[0].1["method"], "OPTIONS");
    assert_eq!(ev[0].1["uris"][0], "sip:100@203.0.113.1");
    assert_eq!(ev[0].1["ban_s"], 3600);
    let rows = rt.block_on(store.blocks_of("203.0.113.2")).unwrap();
    assert_eq!(rows[0].source, "scanner_user_agent");
    // The log as fail2ban reads it: no colour codes (stderr is a file), and
    // the shipped filter (dist/fail2ban/filter.d/sip-xdp.conf) matches the
    // ban line, with the real fail2ban.
    let log = daemon.log_text();
    assert!(!log.contains('\x1b'), "escape codes in the log: {log:?}");
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/fail2ban/filter.d/sip-xdp.conf"
    );
    let f2b = std::process::Command::new("fail2ban-regex")
        .args([daemon.log.to_str().unwrap(), filter])
        .output()
        .expect("fail2ban-regex (installed by `cargo xtask test`)");
    let out = String::from_utf8_lossy(&f2b.stdout);
    assert!(out.contains(" ignored, 1 matched"), "{out}");
    let m = scrape(&lab.server);
    assert_eq!(
        metric(&m, "sipxdp_bans_total{kind=\"scanner_user_agent\"}"),
        1.0,
        "{m}"
    );
    assert!(metric(&m, "sipxdp_samples_total{result=\"parsed\"}") >= 1.0);

    // A burst over the kernel limit from the other client, with an
    // ordinary User-Agent: reported by the kernel, banned at once.
    let other = &lab.links[0];
    let to = SocketAddr::new(other.server_v4, 5060);
    send_each(&lab.clients[0], to, 80, Duration::from_micros(500), |i| {
        request("REGISTER", "200", to.ip(), "Yealink SIP-T46S", i)
    });
    assert!(eventually(Duration::from_secs(3), || {
        banned(cli, other.client_v4) == Some("ratelimit")
    }));
    daemon.wait_log(
        "banned src_ip=198.51.100.2 reason=rate_limit",
        Duration::from_secs(2),
    );
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "rate_limit_exceeded"))
            .is_empty()
    }));
    let ev = rt.block_on(events(&store, "rate_limit_exceeded"));
    assert_eq!(ev[0].1["limit"], 50);
    assert_eq!(ev[0].1["method"], "REGISTER");
}

#[test]
fn extension_enumeration_is_banned_from_the_servers_404s() {
    let sbc = Sbc::mariadb("en");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    // Sample-based enumeration and floods out of the way: the egress path
    // alone must find it.
    let daemon = controller(
        cli,
        lab,
        "[detect.flood]\nlimit = 10000\n[detect.scanner]\ndistinct_users = 500\nnot_found = 10\n",
    );
    let attack = &lab.links[1];
    let _uas = Uas::start(&lab.server, attack.server_v4, Some(UAS_404));
    let target = SocketAddr::new(attack.server_v4, 5060);
    send_each(
        &lab.clients[1],
        target,
        40,
        Duration::from_millis(30),
        |i| {
            request(
                "INVITE",
                &format!("{}", 1000 + i),
                target.ip(),
                "Grandstream GXP2170",
                i,
            )
        },
    );
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, attack.client_v4)
            == Some("scanner")),
        "no ban from 404s:\n{}",
        daemon.log_text()
    );
    daemon.wait_log(
        "banned src_ip=203.0.113.2 reason=enumeration_wire",
        Duration::from_secs(2),
    );
    let stats = cli.stats();
    assert!(stats["reply_404"].as_u64().unwrap() >= 10, "{stats}");
    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "scanner_detected")).is_empty()
    }));
    let ev = rt.block_on(events(&store, "scanner_detected"));
    assert_eq!(ev[0].1["seen_by"], "egress");
    assert!(ev[0].1["not_found"].as_u64().unwrap() >= 10);
    let m = scrape(&lab.server);
    assert_eq!(
        metric(&m, "sipxdp_bans_total{kind=\"enumeration_wire\"}"),
        1.0,
        "{m}"
    );
    assert!(metric(&m, "sipxdp_kernel_events_total{event=\"reply_404\"}") >= 10.0);
}

/// An OPTIONS keep-alive from `local` in its own transaction (`call`),
/// with the CSeq given.
fn keepalive(server: SocketAddr, local: SocketAddr, call: usize, cseq: &str) -> Vec<u8> {
    use sip_xdp_tests::registrar::register_with;
    let reg = String::from_utf8(register_with("1001", server.ip(), local, call, 1, None)).unwrap();
    reg.replacen("REGISTER sip:", "OPTIONS sip:", 1)
        .replace("CSeq: 1 REGISTER", &format!("CSeq: {cseq}"))
        .into_bytes()
}

/// A password guesser on `sock`: a REGISTER in registration `call`, then
/// up to 20 wrong guesses with the nonce of the last challenge, each
/// paired with a keep-alive, 50 ms apart; stops when nothing answers (the
/// ban). Every guess must be challenged again. Returns how many
/// keep-alives got a 200.
fn guess_with_keepalives(sock: &UdpSocket, server: SocketAddr, call: usize) -> u64 {
    use sip_xdp_tests::registrar::{nonce_of, register_with};
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    let mut ask = |msg: &[u8]| -> Option<Vec<u8>> {
        sock.send_to(msg, server).ok()?;
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    };
    let first = register_with("1001", server.ip(), local, call, 1, None);
    let mut nonce = nonce_of(&ask(&first).expect("challenged")).expect("a nonce");
    let mut keepalives = 0;
    for i in 0..20 {
        let wrong = Some((nonce.as_str(), "0123456789abcdef0123456789abcdef"));
        let guess = register_with("1001", server.ip(), local, call, 2 + i, wrong);
        let Some(reply) = ask(&guess) else { break };
        let text = String::from_utf8_lossy(&reply).into_owned();
        assert!(text.starts_with("SIP/2.0 401"), "{text}");
        nonce = nonce_of(&reply).expect("a nonce");
        let ping = keepalive(server, local, 100 + i, "1 OPTIONS");
        if ask(&ping).is_some_and(|r| r.starts_with(b"SIP/2.0 200")) {
            keepalives += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    keepalives
}

/// A password guesser that pairs each wrong guess with an OPTIONS
/// keep-alive, against a registrar that challenges a wrong password again
/// and answers keep-alives with a 200 (as Kamailio's stock script does):
/// the keep-alive's 200 answers no challenge, so the guesser is banned as
/// brute force from the registrar's challenges alone.
#[test]
fn a_guesser_pairing_each_guess_with_a_keepalive_is_banned() {
    use sip_xdp_tests::registrar::Registrar;
    let sbc = Sbc::mariadb("gu");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(cli, lab, "[detect.flood]\nlimit = 10000\n");
    let link = &lab.links[1];
    let server = SocketAddr::new(link.server_v4, 5060);
    let _registrar = Registrar::start(&lab.server, server);
    let sock = lab.clients[1].enter(|| UdpSocket::bind((link.client_v4, 5070)).unwrap());
    let keepalives = guess_with_keepalives(&sock, server, 1);
    assert!(
        // Until the ban, every guess had its keep-alive answered.
        keepalives >= 5,
        "only {keepalives} keep-alives were answered"
    );
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, link.client_v4)
            == Some("bruteforce")),
        "{}",
        daemon.log_text()
    );
    daemon.wait_log(
        "banned src_ip=203.0.113.2 reason=brute_force_wire",
        Duration::from_secs(2),
    );
    assert_eq!(cli.stats()["reply_2xx"].as_u64(), Some(keepalives));
}

/// Against a real Kamailio registrar doing digest authentication, which
/// answers OPTIONS keep-alives as its stock configuration does (echoing
/// the CSeq, whatever method it names): a SIPp phone that registers is
/// verified; an OPTIONS carrying `CSeq: 1 REGISTER` gets its 200 and earns
/// nothing; a password guesser pairing each wrong guess with a keep-alive
/// is banned as brute force.
#[test]
fn against_kamailio_only_a_digest_registration_verifies() {
    use sip_xdp_common::maps::Trust;
    use sip_xdp_tests::{
        kamailio::{Kamailio, PASSWORD},
        sipp,
    };
    let sbc = Sbc::mariadb("ka");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(cli, lab, "[detect.flood]\nlimit = 10000\n");
    let (attack, phone) = (&lab.links[0], &lab.links[1]);
    let kamailio = Kamailio::start(&lab.server, &[attack.server_v4, phone.server_v4]);
    let maps = || Maps::open(&Pins::new(&cli.pins)).unwrap();

    // The phone: SIPp registering with digest authentication.
    let reg = sipp::register_digest(
        &lab.clients[1],
        phone.client_v4,
        phone.server_v4,
        "1001",
        PASSWORD,
    );
    assert_eq!(reg.successful, 1, "{}\n{}", reg.output, kamailio.log());
    assert!(
        eventually(Duration::from_secs(2), || maps().trust_of(phone.client_v4)
            == Some(Trust::Registered)),
        "the phone's digest registration did not verify it"
    );

    // The attacker's socket, and a request in its own transaction.
    let server = SocketAddr::new(attack.server_v4, 5060);
    let sock = lab.clients[0].enter(|| UdpSocket::bind((attack.client_v4, 5070)).unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    let mut ask = |msg: &[u8]| -> Option<String> {
        sock.send_to(msg, server).ok()?;
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    // The CSeq trick: Kamailio echoes the REGISTER CSeq in its 200.
    let trick = keepalive(server, local, 1, "1 REGISTER");
    let reply = ask(&trick).expect("kamailio answers keep-alives");
    assert!(
        reply.starts_with("SIP/2.0 200") && reply.contains("CSeq: 1 REGISTER"),
        "{reply}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        maps().trust_of(attack.client_v4),
        None,
        "the CSeq trick earned trust"
    );

    // The guesser: each wrong password is challenged again; each paired
    // keep-alive gets a 200.
    let keepalives = guess_with_keepalives(&sock, server, 2);
    assert!(
        // Until the ban, every guess had its keep-alive answered.
        keepalives >= 5,
        "only {keepalives} keep-alives were answered"
    );
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, attack.client_v4)
            == Some("bruteforce")),
        "{}",
        daemon.log_text()
    );
    assert_eq!(maps().trust_of(attack.client_v4), None);
}

/// sipvicious, as attackers run it, against a real Kamailio behind
/// sip-xdp: svmap finds no device, svwar no extension, svcrack no
/// password, and not one of their packets reaches Kamailio's script.
#[test]
fn sipvicious_finds_nothing_behind_sip_xdp() {
    use sip_xdp_tests::kamailio::Kamailio;
    let sbc = Sbc::mariadb("sv");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(cli, lab, "");
    let (first, second) = (&lab.links[0], &lab.links[1]);
    let kamailio = Kamailio::start(&lab.server, &[first.server_v4, second.server_v4]);
    // Each tool bounded in time; each gets its answer or its timeout.
    let run = |client: usize, args: &[String]| {
        let out = lab.clients[client]
            .command("timeout")
            .arg("60")
            .args(args)
            .output()
            .expect("sipvicious (installed by `cargo xtask test`)");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let svmap = run(0, &["svmap".into(), first.server_v4.to_string()]);
    assert!(
        !svmap.contains("SIP Device") && svmap.contains("found nothing"),
        "svmap found the SBC:\n{svmap}"
    );
    let svwar = run(
        1,
        &[
            "svwar".into(),
            "-e100-120".into(),
            "-m".into(),
            "REGISTER".into(),
            second.server_v4.to_string(),
        ],
    );
    assert!(
        !svwar.contains("| Extension"),
        "svwar found extensions:\n{svwar}"
    );
    let svcrack = run(
        1,
        &[
            "svcrack".into(),
            "-u100".into(),
            "-r1-20".into(),
            second.server_v4.to_string(),
        ],
    );
    assert!(
        !svcrack.contains("| Extension"),
        "svcrack found a password:\n{svcrack}"
    );
    for link in [first, second] {
        assert_eq!(
            kamailio.requests_from(link.client_v4),
            0,
            "{}",
            kamailio.log()
        );
        assert!(
            eventually(Duration::from_secs(3), || banned(cli, link.client_v4)
                == Some("scanner")),
            "{}",
            daemon.log_text()
        );
    }
    assert!(cli.stats()["drop_scanner"].as_u64().unwrap_or(0) >= 2);
}

#[test]
fn failed_registrations_rows_lead_to_a_ban() {
    let sbc = Sbc::mariadb("bf");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(cli, lab, "");
    let rt = rt();
    let store = rt.block_on(db.connect());
    let attacker = lab.links[1].client_v4;
    // As OpenSIPS writes them: one row per failed REGISTER; plus a row with
    // a broken address, which is logged and skipped.
    let now = sip_xdp::db::store::now();
    let admin = |sql: &str| {
        sip_xdp_tests::db::admin(&format!(
            "USE `{}`; {sql}",
            db.url()
                .split('?')
                .next()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
        ))
    };
    admin("INSERT INTO failed_registrations (username, domain, source_ip, source_port, user_agent, response_code, response_reason, attempt_time, expires_header) VALUES ('1001', 'example.com', 'not-an-ip', 5060, 'x', 403, 'Forbidden', UTC_TIMESTAMP(3), 3600)");
    // Text written to aim fail2ban's jail on sip-xdp's log at someone
    // else: a ban line's words in the field, and a forged line after a
    // newline.
    for forged in [
        "x banned src_ip=198.51.100.66 reason=",
        "x\n  WARN sip_xdp::ban: banned src_ip=198.51.100.67",
    ] {
        admin(&format!("INSERT INTO failed_registrations (username, domain, source_ip, source_port, user_agent, response_code, response_reason, attempt_time, expires_header) VALUES ('1001', 'example.com', '{forged}', 5060, 'x', 403, 'Forbidden', UTC_TIMESTAMP(3), 3600)"));
    }
    for i in 0..9 {
        let at = now - chrono::Duration::seconds(60 - i);
        rt.block_on(store.insert_failure(
            "failed_registrations",
            &attacker.to_string(),
            &format!("{}", 1001 + i),
            "PolycomVVX-VVX_400-UA/5.9",
            403,
            at,
        ))
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        banned(cli, attacker),
        None,
        "nine failures are under maxretry"
    );
    rt.block_on(store.insert_failure(
        "door_knock_attempts",
        &attacker.to_string(),
        "admin",
        "PolycomVVX-VVX_400-UA/5.9",
        404,
        now,
    ))
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, attacker)
            == Some("bruteforce")),
        "{}",
        daemon.log_text()
    );
    daemon.wait_log(
        "banned src_ip=203.0.113.2 reason=brute_force",
        Duration::from_secs(2),
    );
    daemon.wait_log("source_ip is not an IP address", Duration::from_secs(1));
    daemon.wait_log("198.51.100.67", Duration::from_secs(1));
    let log = daemon.log_text();
    assert!(
        !log.lines().any(|l| l.trim_start().starts_with("WARN sip_xdp::ban")
            && l.contains("198.51.100.67")),
        "a newline from the database started a line of its own: {log}"
    );
    // fail2ban with the shipped filter sees the one real ban, and nothing
    // the database's text says.
    let matched = fail2ban_matched(&daemon.log);
    assert_eq!(matched.len(), 1, "{matched:#?}");
    assert!(matched[0].contains("src_ip=203.0.113.2 "), "{matched:#?}");
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "brute_force_detected"))
            .is_empty()
    }));
    let ev = rt.block_on(events(&store, "brute_force_detected"));
    assert_eq!(ev[0].1["failures"], 10);
    assert_eq!(ev[0].1["ban_s"], 3600);
    assert_eq!(ev[0].1["user_agent"], "PolycomVVX-VVX_400-UA/5.9");
    let rows = rt.block_on(store.blocks_of(&attacker.to_string())).unwrap();
    assert_eq!(rows[0].source, "brute_force");
    let m = scrape(&lab.server);
    assert_eq!(
        metric(&m, "sipxdp_bans_total{kind=\"brute_force\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "sipxdp_db_up"), 1.0);
}

/// A phone that registered (the SBC sent it a 2xx to REGISTER) survives
/// everything a forger can send in its name: a scanner User-Agent, INVITEs
/// to unknown extensions (the SBC's 404s go to the phone), and a burst over
/// the kernel limit. Each is recorded as "not banned: verified"; the kernel
/// limit still holds the burst. An unverified scanner is banned as before.
#[test]
fn a_verified_client_is_never_banned_on_forgeable_evidence() {
    use sip_xdp_common::maps::Trust;
    use sip_xdp_tests::registrar::Registrar;
    let sbc = Sbc::mariadb("tr");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(
        cli,
        lab,
        "[detect.rate_limit]\npackets = 50\nwindow = \"10s\"\nban = \"60s\"\n\
         [detect.scanner]\nnot_found = 10\n",
    );
    let phone = &lab.links[1];
    let server = SocketAddr::new(phone.server_v4, 5060);
    let registrar = Registrar::start(&lab.server, server);
    let maps = || Maps::open(&Pins::new(&cli.pins)).unwrap();
    assert_eq!(maps().trust_of(phone.client_v4), None);
    let sock = lab.clients[1].enter(|| UdpSocket::bind((phone.client_v4, 5070)).unwrap());
    assert!(
        sip_xdp_tests::registrar::register(&sock, server, "1001", 1).is_some(),
        "the phone did not register"
    );
    assert!(
        eventually(Duration::from_secs(2), || maps().trust_of(phone.client_v4)
            == Some(Trust::Registered)),
        "the 200 to the authenticated REGISTER did not verify the phone"
    );
    let before = cli.stats()["drop_rate_limited"].as_u64().unwrap_or(0);

    // Forged in the phone's name (sent from its address, as a spoofer's
    // packets arrive): a scanner, an enumeration, a burst.
    send_each(&lab.clients[1], server, 3, Duration::from_millis(20), |i| {
        request("OPTIONS", "100", server.ip(), "friendly-scanner", i)
    });
    send_each(
        &lab.clients[1],
        server,
        40,
        Duration::from_millis(10),
        |i| request("INVITE", &format!("{}", 2000 + i), server.ip(), "x", i),
    );
    send_each(&lab.clients[1], server, 200, Duration::ZERO, |i| {
        request("OPTIONS", "100", server.ip(), "x", 100 + i)
    });
    daemon.wait_log(
        "detected, not banned src_ip=203.0.113.2 reason=scanner_user_agent",
        Duration::from_secs(3),
    );
    // Two more units: every detector has had its say.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(banned(cli, phone.client_v4), None, "{}", daemon.log_text());
    assert_eq!(
        maps().trust_of(phone.client_v4),
        Some(Trust::Registered),
        "trust is kept"
    );
    let after = cli.stats()["drop_rate_limited"].as_u64().unwrap_or(0);
    assert!(
        after - before >= 100,
        "the kernel limit must still hold a verified source: {} dropped",
        after - before
    );
    assert!(registrar.received() > 0);

    // The unverified scanner on the other link is banned at once.
    let other = &lab.links[0];
    let target = SocketAddr::new(other.server_v4, 5060);
    send_each(&lab.clients[0], target, 3, Duration::from_millis(20), |i| {
        request("OPTIONS", "100", target.ip(), "friendly-scanner", i)
    });
    assert!(
        eventually(Duration::from_secs(3), || banned(cli, other.client_v4)
            == Some("scanner")),
        "{}",
        daemon.log_text()
    );

    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "scanner_detected")).is_empty()
    }));
    let ev = rt.block_on(events(&store, "scanner_detected"));
    let spared: Vec<_> = ev
        .iter()
        .filter(|(ip, _)| ip.as_deref() == Some("203.0.113.2"))
        .collect();
    assert!(!spared.is_empty(), "{ev:?}");
    for (_, d) in &spared {
        assert_eq!(d["action"], "not banned: verified", "{d}");
        assert_eq!(d["verified"], "registered", "{d}");
    }
    assert!(rt
        .block_on(store.blocks_of("203.0.113.2"))
        .unwrap()
        .is_empty());
    // Rows are written by the controller's next database round.
    assert!(eventually(Duration::from_secs(3), || rt
        .block_on(store.blocks_of("198.51.100.2"))
        .unwrap()
        .len()
        == 1));
    let out = cli.ok(&["list", "verified"]);
    assert!(
        out.contains("203.0.113.2") && out.contains("registered"),
        "{out}"
    );
    // A jail on sip-xdp's log bans whom sip-xdp banned, never the phone it
    // spared on forged evidence.
    let matched = fail2ban_matched(&daemon.log);
    assert!(!matched.is_empty(), "the scanner's ban line: {matched:#?}");
    assert!(
        matched.iter().all(|l| l.contains("src_ip=198.51.100.2 ")),
        "{matched:#?}"
    );
}

/// A spoofed `friendly-scanner` storm, one packet from each of 400 random
/// IPv6 sources: bans grow by no more than the cap allows, the refusals are
/// reported once per second (log, event, metric), and the registered phone,
/// forged among them, is not banned.
#[test]
fn the_ban_cap_holds_under_a_spoofed_scanner_storm() {
    use std::sync::atomic::AtomicBool;

    use sip_xdp_tests::{
        flood::{frames, random_sources, Generator, Target},
        lab::mac,
        registrar::Registrar,
    };
    const CAP: usize = 5;
    let sbc = Sbc::mariadb("cap");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(
        cli,
        lab,
        &format!("max_bans_per_sec = {CAP}\n[detect.samples]\nper_sec = 1000\n"),
    );
    let link = &lab.links[1];
    let server = SocketAddr::new(link.server_v6, 5060);
    let _registrar = Registrar::start(&lab.server, server);
    let sock = lab.clients[1].enter(|| UdpSocket::bind((link.client_v6, 5070)).unwrap());
    assert!(
        sip_xdp_tests::registrar::register(&sock, server, "1001", 1).is_some(),
        "the phone did not register"
    );
    let maps = || Maps::open(&Pins::new(&cli.pins)).unwrap();
    assert!(eventually(Duration::from_secs(2), || maps()
        .trust_of(link.client_v6)
        .is_some()));
    // Detector bans are exact bans or, for IPv6 counted per /64, prefix
    // rules: both count.
    let kernel_rules = || maps().bans_raw().len() + maps().blocks_raw().len();
    let bans_before = kernel_rules();

    // Random sources across the lab's /48, the phone's own address among
    // them; bounded by count and time.
    let mut sources = random_sources(&[0x20, 0x01, 0x0d, 0xb8, 0, 2], 400, 0x2545_f491_4f6c_dd1d);
    let IpAddr::V6(phone) = link.client_v6 else {
        unreachable!()
    };
    sources[200] = phone;
    let target = Target {
        src_mac: mac(&lab.clients[1], "e0"),
        dst_mac: mac(&lab.server, &link.server_if),
        dst: match link.server_v6 {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => unreachable!(),
        },
        dport: 5060,
    };
    let storm = frames(&target, &sources);
    let started = Instant::now();
    let sent = Generator::new(&lab.clients[1], "e0", 1).send(
        &storm,
        storm.len() as u64,
        Duration::from_secs(5),
        &AtomicBool::new(false),
    );
    assert_eq!(sent.packets, 400);
    daemon.wait_log("ban cap reached", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    let seconds = started.elapsed().as_secs() as usize + 1;
    let new_bans = kernel_rules() - bans_before;
    println!("spoofed scanner storm: {new_bans} bans in {seconds} s with a cap of {CAP}/s");
    assert!(new_bans >= 1, "the cap must not stop every ban");
    assert!(
        new_bans <= CAP * seconds,
        "{new_bans} bans in {seconds} s over a cap of {CAP}/s"
    );
    assert_eq!(banned(cli, link.client_v6), None, "the phone was banned");
    let covering: Vec<_> = maps()
        .blocks_raw()
        .into_iter()
        .filter(|(net, _)| net.contains(&link.client_v6))
        .collect();
    assert!(
        covering.is_empty(),
        "the phone's prefix was banned: {covering:?}"
    );

    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "ban_cap_reached")).is_empty()
    }));
    let capped = rt.block_on(events(&store, "ban_cap_reached"));
    let refused: u64 = capped
        .iter()
        .map(|(_, d)| d["refused"].as_u64().unwrap())
        .sum();
    assert!(refused > 0 && capped.len() <= seconds, "{capped:?}");
    assert_eq!(capped[0].1["max_bans_per_sec"], CAP);
    let rows = rt
        .block_on(store.active_blocks(sip_xdp::db::store::now()))
        .unwrap();
    assert!(
        rows.len() <= CAP * seconds,
        "{} blocked_ips rows",
        rows.len()
    );
    let m = scrape(&lab.server);
    assert_eq!(
        metric(&m, "sipxdp_bans_capped_total"),
        refused as f64,
        "{m}"
    );
}

/// One IPv6 host rotating through its /64, a new source address for every
/// packet, about 1000 packets a second: counted, limited and banned as one
/// prefix, with one `blocked_ips` row holding the prefix. A neighbour in
/// another /64 of the same link keeps getting through.
#[test]
fn an_ipv6_rotator_is_banned_as_its_64() {
    use std::sync::atomic::AtomicBool;

    use sip_xdp_tests::{
        flood::{frames_as, random_sources, Generator, Target},
        lab::mac,
    };
    let sbc = Sbc::mariadb("rot");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(cli, lab, "");
    let link = &lab.links[1];
    let IpAddr::V6(server_v6) = link.server_v6 else {
        unreachable!()
    };
    let hits = listener(&lab.server, link.server_v6);
    let sources = random_sources(
        &[0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0x77],
        3000,
        0x9e37_79b9_7f4a_7c15,
    );
    let target = Target {
        src_mac: mac(&lab.clients[1], "e0"),
        dst_mac: mac(&lab.server, &link.server_if),
        dst: server_v6,
        dport: 5060,
    };
    let storm = frames_as(&target, &sources, "Yealink SIP-T46S");
    let gen = Generator::new(&lab.clients[1], "e0", 1);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let mut banned_after = None;
    // 100 packets every 100 ms for 3 s: bounded by count and time.
    for (i, chunk) in storm.chunks(100).enumerate() {
        gen.send(chunk, chunk.len() as u64, Duration::from_secs(1), &stop);
        if banned_after.is_none() && cli.ok(&["list", "blocked"]).contains("2001:db8:2:77::/64") {
            banned_after = Some(started.elapsed());
        }
        let next = started + Duration::from_millis(100 * (i as u64 + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let through = drain(&hits, Duration::from_millis(300));
    println!(
        "/64 rotator: banned after {banned_after:?}; {through} of 3000 packets reached the socket"
    );
    assert!(banned_after.is_some(), "{}", daemon.log_text());
    assert!(through <= 300, "{through} of 3000 reached the socket");
    daemon.wait_log("banned src_ip=2001:db8:2:77::/64", Duration::from_secs(1));
    // One prefix rule, no per-address bans.
    let kernel = cli.ok(&["list", "blocked", "--kernel"]);
    assert!(kernel.contains("2001:db8:2:77::/64"), "{kernel}");
    assert!(kernel_bans(cli).is_empty(), "{:?}", kernel_bans(cli));
    let rt = rt();
    let store = rt.block_on(db.connect());
    let rows = rt
        .block_on(store.active_blocks(sip_xdp::db::store::now()))
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].ip_address, "2001:db8:2:77::/64");
    // The neighbour on the same link, in 2001:db8:2::/64, still passes.
    let before = drain(&hits, Duration::from_millis(50));
    assert_eq!(before, 0);
    send_each(
        &lab.clients[1],
        SocketAddr::new(link.server_v6, 5060),
        5,
        Duration::from_millis(20),
        |i| request("OPTIONS", "100", link.server_v6, "Yealink SIP-T46S", i),
    );
    assert_eq!(drain(&hits, Duration::from_millis(300)), 5);
    let top = cli.ok(&["top"]);
    assert!(top.contains("2001:db8:2:77::/64"), "{top}");
}

/// A spoofed storm over link 2: OPTIONS from a new source in 2001:db8::/32
/// for every packet, bounded by 2,000,000 packets and 4 s, and the flag
/// that stops it sooner.
fn spoofed_storm(
    lab: &Lab,
) -> (
    std::thread::JoinHandle<sip_xdp_tests::flood::Sent>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use sip_xdp_tests::{
        flood::{frames_as, Generator, Target},
        lab::mac,
    };
    let link = &lab.links[1];
    let IpAddr::V6(dst) = link.server_v6 else {
        unreachable!()
    };
    let target = Target {
        src_mac: mac(&lab.clients[1], "e0"),
        dst_mac: mac(&lab.server, &link.server_if),
        dst,
        dport: 5060,
    };
    let storm = frames_as(
        &target,
        &["2001:db8:2::77".parse::<std::net::Ipv6Addr>().unwrap()],
        "Grandstream GXP2170",
    );
    let gen = Generator::new(&lab.clients[1], "e0", 1);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let flood = std::thread::spawn(move || {
        gen.send_unique(&storm, 2_000_000, Duration::from_secs(4), &stop2)
    });
    (flood, stop)
}

/// A random-source storm past the load mark: the kernel sheds strangers
/// past their bucket's share, a registered phone keeps every REGISTER
/// answered at once, a new phone from another prefix is answered at its
/// first send, and the controller records one `overload_started` and one
/// `overload_ended`. The storm is drawn from one IPv6 /32, so one bucket;
/// storms over many prefixes, against a real registrar, are measured by
/// `cargo xtask bench`.
#[test]
fn shedding_keeps_registered_phones_served_in_a_random_source_storm() {
    use sip_xdp_tests::{
        flood::pin_to_cpu,
        registrar::{register, Registrar},
    };
    let sbc = Sbc::mariadb("shd");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(cli, lab, "[detect.shedding]\nbudget = 2000\n");
    // The storm comes over link 2; the phones use link 1, so that a full
    // wire is not what drops them.
    let phones = &lab.links[0];
    let v6 = SocketAddr::new(phones.server_v6, 5060);
    let v4 = SocketAddr::new(phones.server_v4, 5060);
    let _r6 = Registrar::start(&lab.server, v6);
    let _r4 = Registrar::start(&lab.server, v4);
    // Everything this test sends goes through CPU 0, where the storm is
    // handled: the budget is per CPU.
    pin_to_cpu(0);
    let phone = lab.clients[0].enter(|| UdpSocket::bind("[2001:db8:1::2]:5070").unwrap());
    assert!(register(&phone, v6, "1001", 1).is_some());
    let maps = || Maps::open(&Pins::new(&cli.pins)).unwrap();
    assert!(eventually(Duration::from_secs(2), || maps()
        .trust_of(phones.client_v6)
        .is_some()));

    let passed_before = cli.stats()["pass_sip"].as_u64().unwrap_or(0);
    let flood_started = Instant::now();
    let (flood, stop) = spoofed_storm(lab);
    std::thread::sleep(Duration::from_millis(500));

    // The registered phone: every REGISTER answered on its first send.
    for i in 1..=5 {
        let (took, sends) = register(&phone, v6, "1001", 1 + i).expect("phone answered");
        assert_eq!(
            sends, 1,
            "the registered phone needed {sends} sends ({took:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new phone from a prefix the storm does not use: its bucket is
    // open, so it is answered at its first send.
    let newcomer = lab.clients[0].enter(|| UdpSocket::bind("198.51.100.2:5070").unwrap());
    let answered = register(&newcomer, v4, "2002", 1);
    let shed_during = cli.stats()["drop_shed"].as_u64().unwrap_or(0);
    let sent = flood.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let storm_secs = flood_started.elapsed().as_secs_f64();
    let passed = cli.stats()["pass_sip"].as_u64().unwrap_or(0) - passed_before;
    println!("{passed} SIP packets passed in {storm_secs:.1} s of storm");
    // The load mark (2000/s for the node) and the strangers' share (at
    // most 1000/s), plus the phones.
    assert!(
        passed as f64 <= 4000.0 * (storm_secs + 1.0),
        "{passed} passed in {storm_secs:.1} s"
    );
    println!(
        "storm: {} packets at {:.0} pps; new phone answered after {answered:?}; {shed_during} shed by then",
        sent.packets,
        sent.pps()
    );
    let (took, sends) = answered.expect("the new phone was never answered");
    assert_eq!(sends, 1, "new phone answered after {took:?}");
    assert!(shed_during > 1000, "{}", cli.stats());

    daemon.wait_log("overload: shedding", Duration::from_secs(2));
    daemon.wait_log("overload over", Duration::from_secs(5));
    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "overload_ended")).is_empty()
    }));
    let started = rt.block_on(events(&store, "overload_started"));
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(started[0].1["shed_pps"].as_f64().unwrap() > 0.0);
    assert_eq!(started[0].1["budget_pps"], 2000);
    let ended = rt.block_on(events(&store, "overload_ended"));
    assert!(ended[0].1["shed"].as_u64().unwrap() > 0);
    let m = scrape(&lab.server);
    assert_eq!(metric(&m, "sipxdp_overload "), 0.0, "{m}");
    assert!(
        metric(&m, "sipxdp_packets_total{verdict=\"drop\",reason=\"shed\"}") > 0.0,
        "{m}"
    );
}

/// The memory of good clients: a phone that proved its address is written
/// to `remembered_clients`; a node that never saw it (its kernel state
/// purged, another node name) loads it from the database, and in a
/// spoofed storm drawn from the phone's own /32 (whose bucket the storm
/// spends) the phone is answered at its first send, every time.
#[test]
fn a_remembered_phone_is_admitted_in_a_storm_by_a_node_that_never_saw_it() {
    use sip_xdp_tests::{
        flood::pin_to_cpu,
        registrar::{register, Registrar},
    };
    let sbc = Sbc::mariadb("mem");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let mut first = controller(cli, lab, "[detect.shedding]\nbudget = 2000\n");
    let phones = &lab.links[0];
    let v6 = SocketAddr::new(phones.server_v6, 5060);
    let _r6 = Registrar::start(&lab.server, v6);
    pin_to_cpu(0);
    let phone = lab.clients[0].enter(|| UdpSocket::bind("[2001:db8:1::2]:5070").unwrap());
    assert!(register(&phone, v6, "1001", 1).is_some());
    let rt = rt();
    let store = rt.block_on(db.connect());
    let since = sip_xdp::db::store::now() - chrono::Duration::days(1);
    assert!(
        eventually(Duration::from_secs(15), || {
            rt.block_on(store.remembered_since(since, 1000))
                .unwrap()
                .iter()
                .any(|p| p.ip == phones.client_v6 && p.how == "registered")
        }),
        "the phone's proof never reached remembered_clients"
    );
    first.stop();
    for iface in sbc.ifaces() {
        cli.ok(&["detach", "--purge", "--iface", iface]);
    }
    let second = cli.start_controller(
        &[&lab.links[0].server_if, &lab.links[1].server_if],
        "sbc-2",
        "500ms",
    );
    second.wait_log("controller running", Duration::from_secs(20));
    let maps = || Maps::open(&Pins::new(&cli.pins)).unwrap();
    // The program is loaded and its maps pinned in steps: read what is
    // there yet.
    let remembered = || {
        Maps::open(&Pins::new(&cli.pins))
            .and_then(|m| m.remembered())
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(15), || remembered()
            .iter()
            .any(|(ip, _)| *ip == phones.client_v6)),
        "the second node never loaded the remembered phone"
    );
    assert_eq!(maps().trust_of(phones.client_v6), None, "not verified here");

    // A new source in 2001:db8::/32 for every packet: the phone's bucket.
    let (flood, stop) = spoofed_storm(lab);
    std::thread::sleep(Duration::from_millis(500));
    for i in 2..=4 {
        let (took, sends) = register(&phone, v6, "1001", i).expect("phone answered");
        assert_eq!(
            sends, 1,
            "the remembered phone needed {sends} sends ({took:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = cli.stats();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().unwrap();
    println!(
        "storm: {} packets at {:.0} pps; {stats}",
        sent.packets,
        sent.pps()
    );
    assert!(stats["drop_shed"].as_u64().unwrap_or(0) > 1000, "{stats}");
    assert!(
        stats["overload_proven"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
}

/// Monitor mode is a dry run: a flood is recorded as `would_ban` (event and
/// log line, with the detection's details), and nothing reaches the
/// kernel, `blocked_ips` or the other nodes.
#[test]
fn monitor_mode_records_would_ban_and_bans_nothing() {
    let sbc = Sbc::mariadb("mon");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let daemon = controller(cli, lab, "");
    cli.ok(&["monitor", "on"]);
    let attack = &lab.links[1];
    let hits = listener(&lab.server, attack.server_v4);
    let target = SocketAddr::new(attack.server_v4, 5060);
    // Read while sending: the socket buffer holds fewer than 200.
    let counter = std::thread::spawn(move || drain(&hits, Duration::from_millis(500)));
    send_each(
        &lab.clients[1],
        target,
        200,
        Duration::from_millis(2),
        |i| request("OPTIONS", "100", target.ip(), "Yealink SIP-T46S", i),
    );
    let got = counter.join().unwrap();
    assert_eq!(got, 200, "monitor mode drops nothing: {}", cli.stats());
    daemon.wait_log(
        "would ban (monitor mode) src_ip=203.0.113.2 reason=flood",
        Duration::from_secs(3),
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(banned(cli, attack.client_v4), None);
    assert!(
        !daemon.log_text().contains("banned src_ip="),
        "{}",
        daemon.log_text()
    );
    let rt = rt();
    let store = rt.block_on(db.connect());
    assert!(rt
        .block_on(store.blocks_of("203.0.113.2"))
        .unwrap()
        .is_empty());
    assert!(eventually(Duration::from_secs(5), || {
        !rt.block_on(events(&store, "would_ban")).is_empty()
    }));
    let ev = rt.block_on(events(&store, "would_ban"));
    assert_eq!(ev.len(), 1, "once per ban length: {ev:?}");
    assert_eq!(ev[0].0.as_deref(), Some("203.0.113.2"));
    assert_eq!(ev[0].1["reason"], "flood");
    assert_eq!(ev[0].1["action"], "would ban (monitor mode)");
    assert!(ev[0].1["ban_s"].as_u64().unwrap() > 0);
    // Switching monitor mode off enforces nothing that was only reported.
    cli.ok(&["monitor", "off"]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(banned(cli, attack.client_v4), None);
}

/// After `sip-xdp unblock`, a returning attacker is banned again at once,
/// not reported "already banned" until the lifted term would have ended.
#[test]
fn an_unblocked_attacker_is_banned_again_when_it_returns() {
    let sbc = Sbc::mariadb("ret");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(cli, lab, "");
    let attack = &lab.links[1];
    let target = SocketAddr::new(attack.server_v4, 5060);
    let scan = |n: usize| {
        send_each(&lab.clients[1], target, n, Duration::from_millis(20), |i| {
            request("OPTIONS", "100", target.ip(), "friendly-scanner", i)
        })
    };
    scan(3);
    assert!(eventually(Duration::from_secs(3), || banned(
        cli,
        attack.client_v4
    )
    .is_some()));
    cli.ok(&["unblock", "203.0.113.2"]);
    assert_eq!(banned(cli, attack.client_v4), None);
    // One sync for the controller to see the row lifted.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        banned(cli, attack.client_v4),
        None,
        "the unblock must stick"
    );
    // It comes back: past its first packets, so only the one-in-16 trickle
    // of samples sees it.
    scan(40);
    assert!(
        eventually(Duration::from_secs(5), || banned(cli, attack.client_v4)
            .is_some()),
        "{}",
        daemon.log_text()
    );
    let bans = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("banned src_ip=203.0.113.2 reason=scanner_user_agent"))
        .count();
    assert_eq!(bans, 2, "{}", daemon.log_text());
}

/// A source the kernel already knows (it sent ordinary requests earlier)
/// that comes back as a scanner after a silence is sampled again and
/// banned at its first packets, like a new one.
#[test]
fn a_known_source_turning_scanner_is_seen() {
    let sbc = Sbc::mariadb("tsc");
    let (lab, cli) = (&sbc.lab, &sbc.cli);
    let daemon = controller(cli, lab, "[detect.samples]\nburst_idle = \"1s\"\n");
    // Sampling counts per CPU: send everything from one, as one flow does.
    sip_xdp_tests::flood::pin_to_cpu(0);
    let attack = &lab.links[1];
    let target = SocketAddr::new(attack.server_v4, 5060);
    // Ordinary traffic first: past its first sampled packets.
    send_each(
        &lab.clients[1],
        target,
        10,
        Duration::from_millis(20),
        |i| request("OPTIONS", "100", target.ip(), "Yealink SIP-T46S", i),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(banned(cli, attack.client_v4), None);
    send_each(&lab.clients[1], target, 3, Duration::from_millis(20), |i| {
        request("OPTIONS", "100", target.ip(), "friendly-scanner", 100 + i)
    });
    assert!(
        eventually(Duration::from_secs(2), || banned(cli, attack.client_v4)
            == Some("scanner")),
        "{}",
        daemon.log_text()
    );
}
