//! The storm against a real registrar: Kamailio from Debian challenging
//! every REGISTER (digest authentication), under a spoofed REGISTER storm
//! with no filter, nftables' limit and `sip-xdp run`; the phones are SIPp
//! with digest authentication.

use std::net::Ipv4Addr;

use super::*;
use sip_xdp_tests::{
    flood::{register_frames, register_frames_v4, Spoof},
    kamailio::Kamailio,
    sipp::register_digest,
};

/// The storms of the section, as the attacker draws their sources.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Storm {
    /// A new IPv6 source in 2001:db8::/32 for every packet.
    V6,
    /// A random IPv4 source in 100.0.0.0/8 for every packet.
    V4,
    /// 65,536 IPv4 sources (100.64.0.0/16), each back every ~65,536
    /// packets of a thread.
    V4Pool,
}

impl Storm {
    fn label(self) -> &'static str {
        match self {
            Storm::V6 => "random IPv6 in 2001:db8::/32",
            Storm::V4 => "random IPv4 in 100.0.0.0/8",
            Storm::V4Pool => "pool of 65,536 IPv4 (100.64.0.0/16)",
        }
    }

    /// The address of row `i`'s phone from inside the storm's own
    /// sources: a bucket the storm keeps busy (in the pool, an address the
    /// attacker also forges).
    fn inside(self, i: usize) -> IpAddr {
        match self {
            Storm::V6 => format!("2001:db8:1::{:x}", 0x40 + i),
            Storm::V4 => format!("100.77.0.{}", 10 + i),
            Storm::V4Pool => format!("100.64.77.{}", 10 + i),
        }
        .parse()
        .unwrap()
    }

    fn spoof(self) -> Spoof {
        match self {
            Storm::V6 => Spoof::V6Random,
            Storm::V4 => Spoof::V4Random {
                base: [100, 0, 0, 0],
                len: 8,
            },
            Storm::V4Pool => Spoof::V4Pool {
                base: [100, 64, 0, 0],
                size: 65_536,
            },
        }
    }
}

/// UDP datagrams the server namespace's sockets took so far, both
/// families (`InDatagrams` + `RcvbufErrors`).
fn udp_reached(lab: &Lab) -> u64 {
    let text = lab
        .server
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default());
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return udp6_reached(lab);
    };
    let get = |k: &str| {
        names
            .split_whitespace()
            .position(|n| n == k)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get("InDatagrams") + get("RcvbufErrors") + udp6_reached(lab)
}

/// A registration answered within this was answered at its first send
/// (the first retransmission goes at 500 ms).
const FIRST_SEND: Duration = Duration::from_millis(450);

#[derive(Default)]
struct Row {
    sent: Sent,
    reached: u64,
    sent_after_1s: u64,
    kamailio_cpu: Duration,
    /// The registered phone: registrations answered at the first send,
    /// answered at all, tried.
    phone: (usize, usize, usize),
    /// The new phone: time to its 200, if it registered.
    newcomer: Option<Duration>,
    /// The phone last proven two hours ago, to another node: time to its
    /// 200, if it registered.
    returning: Option<Duration>,
    /// The new phone from inside the storm's sources: from its first
    /// REGISTER to its 200 (SIPp retrying until the storm ends), and
    /// whether that came while the storm lasted.
    inside: Option<(Duration, bool)>,
    controller_cpu: Option<Duration>,
    controller_rss_mb: Option<(f64, f64)>,
}

/// One registration with SIPp: the time it took, if it succeeded.
fn sipp_register(lab: &Lab, local: IpAddr, target: IpAddr, user: &str) -> Option<Duration> {
    let t = Instant::now();
    let r = register_digest(
        &lab.clients[0],
        local,
        target,
        user,
        sip_xdp_tests::kamailio::PASSWORD,
    );
    (r.successful == 1).then(|| t.elapsed())
}

fn row(lab: &Lab, gen: &Generator, target: &Target, storm_kind: Storm, f: Filter, i: usize) -> Row {
    let phones = &lab.links[0];
    let kamailio = Kamailio::start_quiet(
        &lab.server,
        &[
            lab.links[1].server_v6,
            lab.links[1].server_v4,
            phones.server_v6,
            phones.server_v4,
        ],
    );
    let newcomer_ip: IpAddr = format!("198.51.100.{}", 30 + i).parse().unwrap();
    lab.clients[0].ip(&["addr", "add", &format!("{newcomer_ip}/24"), "dev", "e0"]);
    let returning_ip: IpAddr = format!("198.51.100.{}", 60 + i).parse().unwrap();
    lab.clients[0].ip(&["addr", "add", &format!("{returning_ip}/24"), "dev", "e0"]);
    let inside_ip = storm_kind.inside(i);
    add_inside(lab, inside_ip);
    let controller = arm(lab, f);
    if let Some((cli, _)) = &controller {
        remember_elsewhere(cli, returning_ip);
    }
    // Registered before the storm (for sip-xdp: proven by its 200).
    let phone_ip = phones.client_v6;
    let _ = sipp_register(lab, phone_ip, phones.server_v6, "1001");
    std::thread::sleep(Duration::from_millis(300));
    let storm = match storm_kind {
        Storm::V6 => register_frames(target, &["2001:db8:2::77".parse::<Ipv6Addr>().unwrap()]),
        Storm::V4 | Storm::V4Pool => {
            let IpAddr::V4(dst) = lab.links[1].server_v4 else {
                unreachable!()
            };
            register_frames_v4(
                target.src_mac,
                target.dst_mac,
                Ipv4Addr::new(100, 64, 0, 1),
                dst,
            )
        }
    };
    let spoof = storm_kind.spoof();
    let mut row = Row::default();
    let k_cpu0 = cpu::with_children(kamailio.pid()).unwrap_or_default();
    let ctl_pid = controller.as_ref().map(|(_, d)| d.child.id());
    let ctl_cpu0 = ctl_pid.and_then(cpu::process);
    let started = Instant::now();
    let storm_end = Duration::from_secs(STORM_SECS);
    let (sent, (reached0, t1)) = during_storm(gen, &storm, spoof, || {
        std::thread::sleep(Duration::from_secs(1));
        let reached0 = udp_reached(lab);
        let t1 = Instant::now();
        // The phone inside the storm tries from 3 s in until it registers or
        // the storm is over, beside the others (SIPp's own retransmissions
        // within each try).
        let server = if inside_ip.is_ipv6() {
            phones.server_v6
        } else {
            phones.server_v4
        };
        std::thread::scope(|s| {
            let inside = s.spawn(|| {
                std::thread::sleep(Duration::from_secs(2));
                let first = Instant::now();
                while started.elapsed() < storm_end && !STOP.load(Ordering::Relaxed) {
                    if sipp_register(lab, inside_ip, server, "3003").is_some() {
                        return Some((first.elapsed(), started.elapsed() < storm_end));
                    }
                }
                None
            });
            while started.elapsed() < Duration::from_secs(STORM_SECS - 2)
                && !STOP.load(Ordering::Relaxed)
            {
                let tick = Instant::now();
                if let Some(took) = sipp_register(lab, phone_ip, phones.server_v6, "1001") {
                    row.phone.1 += 1;
                    row.phone.0 += usize::from(took <= FIRST_SEND);
                }
                row.phone.2 += 1;
                if started.elapsed() >= Duration::from_secs(5) && row.newcomer.is_none() {
                    row.newcomer = Some(
                        sipp_register(lab, newcomer_ip, phones.server_v4, "2002")
                            .unwrap_or(Duration::MAX),
                    );
                } else if started.elapsed() >= Duration::from_secs(7) && row.returning.is_none() {
                    row.returning = Some(
                        sipp_register(lab, returning_ip, phones.server_v4, "2003")
                            .unwrap_or(Duration::MAX),
                    );
                }
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
            row.inside = inside.join().unwrap();
        });
        (reached0, t1)
    });
    row.sent = sent;
    row.reached = udp_reached(lab) - reached0;
    let secs = t1
        .elapsed()
        .as_secs_f64()
        .min(row.sent.elapsed.as_secs_f64() - 1.0);
    row.sent_after_1s = (row.sent.pps() * secs) as u64;
    if let Some(pid) = ctl_pid {
        row.controller_rss_mb = rss_mb(pid);
    }
    row.kamailio_cpu = cpu::with_children(kamailio.pid())
        .unwrap_or_default()
        .saturating_sub(k_cpu0);
    if let (Some(pid), Some(c0)) = (ctl_pid, ctl_cpu0) {
        row.controller_cpu = cpu::process(pid).map(|c| c.saturating_sub(c0));
    }
    disarm(lab, f);
    drop(controller);
    drop(kamailio);
    remove_inside(lab, inside_ip);
    row
}

/// Gives the phone inside the storm its address: on the phones' link, and
/// for IPv4 (outside that link's subnet) a host route back in the server.
fn add_inside(lab: &Lab, ip: IpAddr) {
    let phones = &lab.links[0];
    if ip.is_ipv6() {
        lab.clients[0].ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ip}/64"),
            "dev",
            "e0",
            "nodad",
        ]);
    } else {
        lab.clients[0].ip(&["addr", "add", &format!("{ip}/32"), "dev", "e0"]);
        lab.server.ip(&[
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            &phones.server_if,
        ]);
    }
}

fn remove_inside(lab: &Lab, ip: IpAddr) {
    if ip.is_ipv4() {
        lab.server.ip(&["route", "del", &format!("{ip}/32")]);
    }
}

/// Writes `ip` to `remembered_clients` as another node's proof from two
/// hours ago (past the 90 minutes of its trust, within the memory's 7
/// days), and waits for the controller to load it into the kernel.
fn remember_elsewhere(cli: &Cli, ip: IpAddr) {
    use sip_xdp::db::store::{now, Proven};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = sip_xdp::db::connect(&cli.db_url)
            .await
            .expect("the bench database");
        let proof = Proven {
            ip,
            how: "registered".into(),
            at: now() - chrono::Duration::hours(2),
        };
        store
            .remember_clients(&[proof], "another-node")
            .await
            .expect("writing remembered_clients");
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let loaded = Maps::open(&Pins::new(&cli.pins))
            .and_then(|m| m.remembered())
            .is_ok_and(|r| r.iter().any(|(a, _)| *a == ip));
        if loaded {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the controller never loaded {ip} from remembered_clients");
}

/// Every storm against every filter, and the report; false when
/// interrupted.
pub fn storms(lab: &Lab, gen: &Generator, target: &Target) -> bool {
    let mut rows = Vec::new();
    let mut i = 0;
    for storm in [Storm::V4, Storm::V4Pool, Storm::V6] {
        for f in [
            Filter::None,
            Filter::NftLimit,
            Filter::XdpTools,
            Filter::SipXdp,
        ] {
            eprintln!("registrar storm: {}, {}", storm.label(), f.label());
            rows.push((storm, f, row(lab, gen, target, storm, f, i)));
            i += 1;
            if STOP.load(Ordering::Relaxed) {
                return false;
            }
        }
    }
    report(&rows);
    true
}

fn report(rows: &[(Storm, Filter, Row)]) {
    println!(
        "### A registrar under a spoofed REGISTER storm\n\nKamailio from Debian (2 workers) challenges every \
         REGISTER with digest authentication, without a log line per request. Each storm packet is a REGISTER \
         without credentials ({THREADS} sending threads, {STORM_SECS} s) from a source drawn as the row says. \
         The registered phone (2001:db8:1::2; in the IPv6 storm its prefix bucket is the storm's) registers with \
         SIPp and digest authentication once a second; a new phone (198.51.100.x, a prefix no storm uses) \
         registers 5 s in; a returning phone (198.51.100.x, proven two hours before to another node and \
         written to `remembered_clients`, never seen by this one) registers 7 s in; a new phone from inside \
         the storm's sources (100.77.0.x, 100.64.77.x in the pool, 2001:db8:1::x) tries from 3 s in until it \
         registers or the storm ends (SIPp: retransmissions at 0.5, 1, 2, 4 s…, each try given up after \
         20 s). The registered, new and returning phones take turns on one loop: where the registered phone's \
         registration runs to its timeout (the nftables rows), the others may be *not tried*. *xdp-filter, no \
         rules*: xdp-tools' filter on the same interfaces with no rules, which passes every packet up the stack \
         (on veth that costs the generator more than a drop). *Answered at 1st send*: the 200 came within {} ms. *Kamailio CPU*: its main process \
         and workers. *Reached*: datagrams the server's UDP layer took from 1 s after the start, both \
         families.\n",
        FIRST_SEND.as_millis()
    );
    println!(
        "| storm | filter | storm pps | reached (from 1 s) | Kamailio CPU | × unprotected | registered phone: answered at 1st send / answered / tried | new phone registered after | returning phone registered after | new phone inside the storm registered after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (storm, f, r) in rows {
        let once = |d: Option<Duration>| match d {
            Some(d) if d != Duration::MAX => format!("{} ms", d.as_millis()),
            Some(_) => "never".into(),
            None => "not tried".into(),
        };
        let inside = match r.inside {
            Some((d, true)) => format!("{} ms", d.as_millis()),
            Some((d, false)) => format!("{} ms, after the storm", d.as_millis()),
            None => "not while the storm lasted".into(),
        };
        let none = rows
            .iter()
            .find(|(s, f, _)| s == storm && *f == Filter::None)
            .map_or(Duration::ZERO, |(_, _, r)| r.kamailio_cpu);
        println!(
            "| {} | {} | {:.0} | {} of {} ({:.2}%) | {} ms | {:.1}% | {} / {} / {} | {} | {} | {} |",
            storm.label(),
            f.label(),
            r.sent.pps(),
            r.reached,
            r.sent_after_1s,
            pct(r.reached, r.sent_after_1s),
            r.kamailio_cpu.as_millis(),
            100.0 * r.kamailio_cpu.as_secs_f64() / none.as_secs_f64().max(1e-9),
            r.phone.0,
            r.phone.1,
            r.phone.2,
            once(r.newcomer),
            once(r.returning),
            inside
        );
    }
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    println!("\n| target (sip-xdp rows) | storm | figure | |\n|---|---|---|---|");
    for storm in [Storm::V4, Storm::V4Pool, Storm::V6] {
        let get = |want: Filter| {
            rows.iter()
                .find(|(s, f, _)| *s == storm && *f == want)
                .map(|(_, _, r)| r)
        };
        let (Some(none), Some(nft), Some(xdp)) = (
            get(Filter::None),
            get(Filter::NftLimit),
            get(Filter::SipXdp),
        ) else {
            continue;
        };
        let k_ratio = xdp.kamailio_cpu.as_secs_f64() / none.kamailio_cpu.as_secs_f64().max(1e-9);
        println!(
            "| Kamailio CPU ≤ 10% of unprotected | {} | {:.1}% ({} of {} ms) | {} |",
            storm.label(),
            100.0 * k_ratio,
            xdp.kamailio_cpu.as_millis(),
            none.kamailio_cpu.as_millis(),
            met(k_ratio <= 0.10)
        );
        println!(
            "| registered phone answered at its first send, every time | {} | {} of {} | {} |",
            storm.label(),
            xdp.phone.0,
            xdp.phone.2,
            met(xdp.phone.2 > 0 && xdp.phone.0 == xdp.phone.2)
        );
        let nc = xdp.newcomer.filter(|d| *d != Duration::MAX);
        println!(
            "| new phone from another prefix answered at its first send | {} | {} | {} |",
            storm.label(),
            nc.map_or("never".into(), |d| format!("{} ms", d.as_millis())),
            met(nc.is_some_and(|d| d <= FIRST_SEND))
        );
        let back = xdp.returning.filter(|d| *d != Duration::MAX);
        println!(
            "| phone proven 2 h ago elsewhere answered at its first send | {} | {} | {} |",
            storm.label(),
            back.map_or("never".into(), |d| format!("{} ms", d.as_millis())),
            met(back.is_some_and(|d| d <= FIRST_SEND))
        );
        let rate_ratio = xdp.sent.pps() / nft.sent.pps().max(1.0);
        let hook = get(Filter::XdpTools).map_or(String::new(), |h| {
            format!("; xdp-filter with no rules: {:.0} pps", h.sent.pps())
        });
        println!(
            "| generator ≥ 80% of its rate against nftables' limit | {} | {:.0}% ({:.0} of {:.0} pps{hook}) | {} |",
            storm.label(),
            100.0 * rate_ratio,
            xdp.sent.pps(),
            nft.sent.pps(),
            met(rate_ratio >= 0.8)
        );
        let secs = xdp.sent.elapsed.as_secs_f64();
        let ctl = xdp
            .controller_cpu
            .map_or(f64::NAN, |c| 100.0 * c.as_secs_f64() / secs);
        let (_, hwm) = xdp.controller_rss_mb.unwrap_or((f64::NAN, f64::NAN));
        println!(
            "| controller ≤ 10% of one core and ≤ 50 MB | {} | {ctl:.1}%, {hwm:.1} MB peak | {} |",
            storm.label(),
            met(ctl <= 10.0 && hwm <= 50.0)
        );
    }
    println!();
}
