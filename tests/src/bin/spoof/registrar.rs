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
    let controller = match f {
        Filter::SipXdp => Some(start_controller(lab, "")),
        Filter::NftLimit => {
            install_nft(lab);
            None
        }
        Filter::None => None,
    };
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
    let (sent, (reached0, t1)) = during_storm(gen, &storm, spoof, || {
        std::thread::sleep(Duration::from_secs(1));
        let reached0 = udp_reached(lab);
        let t1 = Instant::now();
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
            }
            std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
        }
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
    if f == Filter::NftLimit {
        remove_nft(lab);
    }
    drop(controller);
    drop(kamailio);
    row
}

/// Every storm against every filter, and the report; false when
/// interrupted.
pub fn storms(lab: &Lab, gen: &Generator, target: &Target) -> bool {
    let mut rows = Vec::new();
    let mut i = 0;
    for storm in [Storm::V4, Storm::V4Pool, Storm::V6] {
        for f in [Filter::None, Filter::NftLimit, Filter::SipXdp] {
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
         registers 5 s in. *Answered at 1st send*: the 200 came within {} ms. *Kamailio CPU*: its main process \
         and workers. *Reached*: datagrams the server's UDP layer took from 1 s after the start, both \
         families.\n",
        FIRST_SEND.as_millis()
    );
    println!(
        "| storm | filter | storm pps | reached (from 1 s) | Kamailio CPU | × unprotected | registered phone: answered at 1st send / answered / tried | new phone registered after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (storm, f, r) in rows {
        let newcomer = match r.newcomer {
            Some(d) if d != Duration::MAX => format!("{} ms", d.as_millis()),
            Some(_) => "never".into(),
            None => "not tried".into(),
        };
        let none = rows
            .iter()
            .find(|(s, f, _)| s == storm && *f == Filter::None)
            .map_or(Duration::ZERO, |(_, _, r)| r.kamailio_cpu);
        println!(
            "| {} | {} | {:.0} | {} of {} ({:.2}%) | {} ms | {:.1}% | {} / {} / {} | {} |",
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
            newcomer
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
        let rate_ratio = xdp.sent.pps() / nft.sent.pps().max(1.0);
        println!(
            "| generator ≥ 80% of its rate against nftables' limit | {} | {:.0}% ({:.0} of {:.0} pps) | {} |",
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
