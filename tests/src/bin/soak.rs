//! `cargo xtask soak --minutes N`: the real controller, on MariaDB, in a
//! namespace lab, through a loop of what an SBC meets in a bad week, for N
//! minutes. Each round:
//! - a sipvicious-style scanner from an address it has not used before,
//!   which must be banned and then get nothing through;
//! - a flood over the kernel's rate limit from the other client, banned;
//! - a spoofed random-source storm (bounded in count and time);
//! - a threat feed file rewritten with a thousand new entries;
//! - the operator's commands: block, unblock (the round's bans too),
//!   allow, disallow;
//! - every fifth round, a MariaDB restart.
//!
//! It prints the controller's resident memory, open descriptors and CPU
//! after the first minute and at the end, the bans checked and enforced,
//! and the events written and lost, as BENCHMARKS.md carries them, and
//! exits non-zero when a target is missed. Needs root, MariaDB and the
//! release binary (SIP_XDP_BIN); not part of CI.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    process::Command,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use sip_xdp_tests::{
    cli::{eventually, Cli},
    flood::{frames_as, Generator, Target},
    lab::{mac, Netns},
    sbc::Sbc,
};

/// What /proc says of the controller.
#[derive(Clone, Copy, Debug)]
struct Probe {
    rss_kib: u64,
    /// The heap and other anonymous pages: a leak shows here. The rest of
    /// the resident memory is the binary's own pages, which grow as code
    /// paths run for the first time and are bounded by its size.
    anon_kib: u64,
    fds: usize,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    at: Instant,
}

fn probe(pid: u32) -> Probe {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th,
    // stime the 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Probe {
        rss_kib: kib("VmRSS:"),
        anon_kib: kib("RssAnon:"),
        fds,
        cpu_ticks: tick(11) + tick(12),
        at: Instant::now(),
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

fn request(method: &str, to: IpAddr, ua: &str, seq: usize) -> Vec<u8> {
    format!(
        "{method} sip:{seq}@{to} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.2:5060;branch=z9hG4bK{seq}\r\n\
         From: <sip:soak@{to}>;tag={seq}\r\nTo: <sip:{seq}@{to}>\r\nCall-ID: soak-{seq}\r\n\
         CSeq: 1 {method}\r\nUser-Agent: {ua}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `n` requests from `from` (an address of `ns`) to `to`, `gap` apart.
fn send_from(ns: &Netns, from: IpAddr, to: SocketAddr, n: usize, gap: Duration, ua: &str) {
    let sock = ns.enter(|| UdpSocket::bind(SocketAddr::new(from, 0)).unwrap());
    for i in 0..n {
        let _ = sock.send_to(&request("OPTIONS", to.ip(), ua, i), to);
        std::thread::sleep(gap);
    }
}

/// Datagrams from `ip` that reached `sock` until it has been quiet for
/// 300 ms (at most 5 s).
fn arrived_from(sock: &UdpSocket, ip: IpAddr) -> usize {
    let mut buf = [0u8; 2048];
    let (mut n, mut last, start) = (0, Instant::now(), Instant::now());
    while last.elapsed() < Duration::from_millis(300) && start.elapsed() < Duration::from_secs(5) {
        match sock.recv_from(&mut buf) {
            Ok((_, a)) => {
                last = Instant::now();
                n += usize::from(a.ip() == ip);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    n
}

fn kernel_holds(cli: &Cli, ip: &str) -> bool {
    cli.json(&["list", "blocked", "--kernel", "--json"])
        .as_array()
        .is_some_and(|a| {
            a.iter().any(|b| {
                b["net"].as_str().or(b["ip"].as_str()).is_some_and(|n| {
                    n == ip || n.strip_suffix("/32").or(n.strip_suffix("/128")) == Some(ip)
                })
            })
        })
}

fn count_rows(db: &str, sql: &str) -> u64 {
    let out = Command::new("mariadb")
        .args(["-N", "-B", db, "-e", sql])
        .output()
        .expect("the mariadb client");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Whether `from` is banned in the kernel within 5 s, and then gets
/// nothing more through to `sock`. The requests after the ban carry an
/// ordinary User-Agent: the kernel drops a scanner's own by its match
/// alone, and the ban is what is checked.
fn banned_and_silent(
    cli: &Cli,
    ns: &Netns,
    from: IpAddr,
    to: SocketAddr,
    sock: &UdpSocket,
) -> Result<(), &'static str> {
    let ip = from.to_string();
    if !eventually(Duration::from_secs(5), || kernel_holds(cli, &ip)) {
        return Err("not banned");
    }
    let _ = arrived_from(sock, from);
    send_from(
        ns,
        from,
        to,
        5,
        Duration::from_millis(10),
        "Yealink SIP-T46S",
    );
    if arrived_from(sock, from) == 0 {
        Ok(())
    } else {
        Err("banned, and got through")
    }
}

#[derive(Default)]
struct Tally {
    rounds: usize,
    bans_checked: usize,
    bans_enforced: usize,
    storm_packets: u64,
    feed_entries: usize,
    db_restarts: usize,
    commands: usize,
    failures: Vec<String>,
}

fn main() {
    sip_xdp_tests::require_root();
    let args: Vec<String> = std::env::args().collect();
    let minutes: u64 = args
        .iter()
        .position(|a| a == "--minutes")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(30);
    // The lab, its database and the controller are gone by the time the
    // verdict exits: `exit` runs no destructor.
    if !soak(minutes) {
        eprintln!("soak: a target was not met");
        std::process::exit(1);
    }
}

/// Runs the soak and prints its report; whether every target was met.
fn soak(minutes: u64) -> bool {
    let sbc = Sbc::mariadb("sk");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let db_name = db.mariadb_name().expect("a MariaDB database").to_string();
    let feed = cli.dir.join("soak-feed.txt");
    let write_feed = |round: usize| {
        let text: String = (0..1000)
            .map(|i| format!("100.{}.{}.{}\n", 64 + (round % 60), i / 250, i % 250 + 1))
            .collect();
        std::fs::write(&feed, text).unwrap();
    };
    write_feed(0);
    cli.add_config(&format!(
        "[detect]\ninterval = \"500ms\"\n\
         [detect.rate_limit]\npackets = 100\nwindow = \"1s\"\nban = \"10m\"\n\
         [feeds.soak]\nfile = \"{}\"\nrefresh = \"5s\"\n",
        feed.display()
    ));
    let daemon = sbc.controller("soak", "1s");
    daemon.wait_log("database connected", Duration::from_secs(30));
    let pid = daemon.child.id();
    let (scan_link, flood_link) = (&lab.links[0], &lab.links[1]);
    let server = lab
        .server
        .enter(|| UdpSocket::bind(SocketAddr::new(scan_link.server_v4, 5060)).unwrap());
    server.set_nonblocking(true).unwrap();
    let flood_server = lab
        .server
        .enter(|| UdpSocket::bind(SocketAddr::new(flood_link.server_v4, 5060)).unwrap());
    flood_server.set_nonblocking(true).unwrap();
    let storm = {
        let IpAddr::V6(dst) = flood_link.server_v6 else {
            unreachable!()
        };
        let target = Target {
            src_mac: mac(&lab.clients[1], "e0"),
            dst_mac: mac(&lab.server, &flood_link.server_if),
            dst,
            dport: 5060,
        };
        frames_as(
            &target,
            &["2001:db8:2::77".parse().unwrap()],
            "Grandstream GXP2170",
        )
    };
    let gen = Generator::new(&lab.clients[1], "e0", 1);

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes * 60);
    // One reading a minute: a plateau and a leak look alike in two.
    let mut minutes_seen: Vec<Probe> = Vec::new();
    let mut t = Tally::default();
    let scan_to = SocketAddr::new(scan_link.server_v4, 5060);
    let flood_to = SocketAddr::new(flood_link.server_v4, 5060);
    while Instant::now() < end {
        t.rounds += 1;
        let round = t.rounds;
        // A scanner from an address of its own this round, then a flood
        // from the other client over the kernel's limit.
        let scanner: IpAddr = format!("198.51.100.{}", 10 + round % 200).parse().unwrap();
        let alias = format!("{scanner}/24");
        lab.clients[0].ip(&["addr", "add", &alias, "dev", "e0"]);
        let flooder = flood_link.client_v4;
        let attacks = [
            (
                &lab.clients[0],
                scanner,
                scan_to,
                &server,
                10,
                20,
                "friendly-scanner",
            ),
            (
                &lab.clients[1],
                flooder,
                flood_to,
                &flood_server,
                400,
                2,
                "Linphone/5.2",
            ),
        ];
        for (ns, from, to, sock, n, gap_ms, ua) in attacks {
            send_from(ns, from, to, n, Duration::from_millis(gap_ms), ua);
            t.bans_checked += 1;
            match banned_and_silent(cli, ns, from, to, sock) {
                Ok(()) => t.bans_enforced += 1,
                Err(why) => t
                    .failures
                    .push(format!("round {round}: {ua} from {from}: {why}")),
            }
        }
        let (s, f) = (scanner.to_string(), flooder.to_string());
        // A spoofed storm, bounded.
        let stop = AtomicBool::new(false);
        t.storm_packets += gen
            .send_unique(&storm, 300_000, Duration::from_secs(3), &stop)
            .packets;
        // A feed refresh with new entries.
        write_feed(round);
        t.feed_entries += 1000;
        // The operator's commands; the round's bans are lifted so that the
        // addresses come back.
        let extra = format!("203.0.113.{}", 100 + round % 100);
        for args in [
            vec!["block", extra.as_str(), "--for", "1h"],
            vec!["unblock", extra.as_str()],
            vec!["allow", "203.0.113.250"],
            vec!["disallow", "203.0.113.250"],
            vec!["unblock", s.as_str()],
            vec!["unblock", f.as_str()],
        ] {
            t.commands += 1;
            let out = cli.run(&args);
            if !out.status.success() {
                t.failures.push(format!(
                    "round {round}: sip-xdp {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        lab.clients[0].ip(&["addr", "del", &alias, "dev", "e0"]);
        if round % 5 == 0 {
            let ok = Command::new("/etc/init.d/mariadb")
                .arg("restart")
                .output()
                .is_ok_and(|o| o.status.success());
            t.db_restarts += 1;
            if !ok {
                t.failures
                    .push(format!("round {round}: MariaDB did not restart"));
            }
        }
        if started.elapsed() >= Duration::from_secs(60 * (minutes_seen.len() as u64 + 1)) {
            let p = probe(pid);
            minutes_seen.push(p);
            eprintln!(
                "soak: minute {}: round {round}, resident {:.1} MB (anonymous {:.1} MB), {} descriptors, {} of {} bans enforced",
                minutes_seen.len(),
                mb(p.rss_kib),
                mb(p.anon_kib),
                p.fds,
                t.bans_enforced,
                t.bans_checked
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // What the database still waits for is written once it is back.
    std::thread::sleep(Duration::from_secs(10));
    let last = probe(pid);
    let first = minutes_seen.first().copied().unwrap_or(last);
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cli.dir.join("status.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    let lost = status["events_dropped"].as_u64().unwrap_or(u64::MAX);
    let waiting = status["events_buffered"].as_u64().unwrap_or(u64::MAX);
    let events = count_rows(&db_name, "SELECT COUNT(*) FROM security_events");
    let bans_rows = count_rows(
        &db_name,
        "SELECT COUNT(*) FROM security_events WHERE event_type = 'ip_blocked'",
    );
    let hz = ticks_per_second();
    let cpu = |a: &Probe, b: &Probe| {
        let secs = b.at.duration_since(a.at).as_secs_f64().max(1.0);
        100.0 * (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / hz / secs
    };
    let start_probe = Probe {
        cpu_ticks: 0,
        at: started,
        ..first
    };
    let within = |a: u64, b: u64| (b as f64) <= (a as f64) * 1.10;
    let rss_ok = within(first.rss_kib, last.rss_kib);
    let fds_ok = within(first.fds as u64, last.fds as u64);
    let mins = started.elapsed().as_secs_f64() / 60.0;
    println!("## Soak\n");
    println!(
        "`cargo xtask soak --minutes {minutes}`: {:.1} minutes, {} rounds, the controller on MariaDB.\n",
        mins, t.rounds
    );
    println!("| | after the first minute | at the end | target |");
    println!("|---|---|---|---|");
    println!(
        "| resident memory | {:.1} MB | {:.1} MB | end within 10%: {} |",
        mb(first.rss_kib),
        mb(last.rss_kib),
        if rss_ok { "met" } else { "not met" }
    );
    println!(
        "| of which anonymous (the heap) | {:.1} MB | {:.1} MB | |",
        mb(first.anon_kib),
        mb(last.anon_kib),
    );
    println!(
        "| open descriptors | {} | {} | end within 10%: {} |",
        first.fds,
        last.fds,
        if fds_ok { "met" } else { "not met" }
    );
    println!(
        "| controller CPU (share of one core) | {:.1}% | {:.1}% over the run | |",
        cpu(&start_probe, &first),
        cpu(&start_probe, &last)
    );
    println!();
    println!(
        "- bans checked {}, enforced {} (banned in the kernel, then nothing more through){}",
        t.bans_checked,
        t.bans_enforced,
        if t.bans_checked == t.bans_enforced {
            ": met"
        } else {
            ": not met"
        }
    );
    println!(
        "- events written {events} ({bans_rows} `ip_blocked`), lost {lost}, still waiting {waiting}{}",
        if lost == 0 { ": met" } else { ": not met" }
    );
    println!(
        "- load: {} storm packets, {} feed entries written, {} commands, {} MariaDB restarts",
        t.storm_packets, t.feed_entries, t.commands, t.db_restarts
    );
    // Every fifth minute's reading, to tell a plateau from a climb.
    let every: Vec<String> = minutes_seen
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % 5 == 0 || *i == 0)
        .map(|(i, p)| format!("{}: {:.1}/{:.1}", i + 1, mb(p.rss_kib), mb(p.anon_kib)))
        .collect();
    println!("- resident/anonymous MB by minute: {}", every.join(", "));
    for f in t.failures.iter().take(20) {
        println!("- failure: {f}");
    }
    rss_ok && fds_ok && lost == 0 && t.bans_checked == t.bans_enforced && t.failures.is_empty()
}
