//! `cargo xtask bench`: nanoseconds per packet through BPF_PROG_TEST_RUN for
//! each verdict path of the real sip-xdp program, beside a trivial XDP_DROP
//! program measured in the same run on the same frames.
//!
//! Loaded state: 100k exact bans, 10k block-list /24s, 1k allow-list /24s.
//! "varied" runs give every packet its own frame (one BPF_PROG_TEST_RUN call
//! each, repeat 1) with the source address walking a large set, so hash and
//! trie lookups miss the cache as a real flood makes them; "hot" repeats one
//! frame a million times in the kernel.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _},
    time::Instant,
};

use aya::{
    maps::MapData,
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use ipnet::IpNet;
use sip_xdp::{guard::Guard, loader::Capacities};
use sip_xdp_common::maps::{BanReason, MAP_BANS, MAP_BLOCK, MAP_SOURCES};
use sip_xdp_tests::{
    frames::{Frame, OPTIONS},
    prog::{TestProg, XDP_DROP, XDP_PASS},
};

const BANS: u32 = 100_000;
const BLOCKS: u32 = 10_000;
const ALLOWS: u32 = 1_000;
/// Offset of the IPv4 source address in an untagged frame.
const SRC_OFF: usize = 14 + 12;

fn v4(base: [u8; 4], add: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + add)
}

// Address plan (map keys and test frames only; nothing is sent anywhere):
// bans in 198.18.0.0/15 (the benchmarking range), block-list /24s from
// 100.64.0.0, allow-list /24s from 100.120.0.0, unknown sources from
// 100.104.0.0 (2^20 of them, disjoint from both lists).
fn ban_src(i: u32) -> Ipv4Addr {
    v4([198, 18, 0, 0], i % BANS)
}
fn block_src(i: u32) -> Ipv4Addr {
    v4([100, 64, 0, 0], (i % BLOCKS) * 256 + 1 + (i / BLOCKS) % 254)
}
fn allow_src(i: u32) -> Ipv4Addr {
    v4(
        [100, 120, 0, 0],
        (i % ALLOWS) * 256 + 1 + (i / ALLOWS) % 254,
    )
}
fn unknown_src(i: u32) -> Ipv4Addr {
    v4([100, 104, 0, 0], i % (1 << 20))
}
/// Sources already tracked (warmed up before timing): the steady state of
/// a busy SBC rather than a spoofed flood.
fn known_src(i: u32) -> Ipv4Addr {
    v4([100, 104, 0, 0], i % 100_000)
}

struct Path {
    name: &'static str,
    expect: u32,
    dport: u16,
    src: fn(u32) -> Ipv4Addr,
    distinct: &'static str,
}

fn hot(prog: &Xdp, frame: &[u8], repeat: u32) -> (u32, f64) {
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.duration.as_nanos() as f64)
}

/// Mean kernel-measured ns per packet over `runs` frames, each with its own
/// source. Panics if any packet got another verdict than `expect`.
fn varied(
    prog: &Xdp,
    template: &[u8],
    src: fn(u32) -> Ipv4Addr,
    runs: u32,
    expect: Option<u32>,
) -> f64 {
    let mut frame = template.to_vec();
    let mut total = 0u128;
    for i in 0..runs {
        frame[SRC_OFF..SRC_OFF + 4].copy_from_slice(&src(i).octets());
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat: 1,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        if let Some(e) = expect {
            assert_eq!(r.return_value, e, "packet {i} from {}", src(i));
        }
        total += r.duration.as_nanos();
    }
    total as f64 / f64::from(runs)
}

fn memlock_kib(pins: &sip_xdp::pins::Pins, map: &str) -> u64 {
    let data = MapData::from_pin(pins.map(map)).expect("map pin");
    let fd = data.fd().as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

fn main() {
    let runs: u32 = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .map_or(1_000_000, |v| v.parse().expect("--runs N"));
    let hot_repeat = 1_000_000;

    let caps = Capacities {
        bans: 131_072,
        allow: 16_384,
        block: 65_536,
        sources: 262_144,
    };
    let p = TestProg::load_with("bench", caps);
    let guard = Guard::with_addresses(vec![]);
    let t = Instant::now();
    {
        let mut maps = p.maps();
        // Allow-list first: adding an allow entry looks for bans to lift.
        for i in 0..ALLOWS {
            let net = IpNet::new(IpAddr::V4(v4([100, 120, 0, 0], i * 256)), 24).unwrap();
            maps.allow(net).expect("allow");
        }
        for i in 0..BANS {
            let net = IpNet::from(IpAddr::V4(ban_src(i)));
            maps.block(&guard, net, None, BanReason::Flood)
                .expect("ban");
        }
        for i in 0..BLOCKS {
            let net = IpNet::new(IpAddr::V4(v4([100, 64, 0, 0], i * 256)), 24).unwrap();
            maps.block(&guard, net, None, BanReason::Manual)
                .expect("block");
        }
    }
    eprintln!(
        "loaded {BANS} bans, {BLOCKS} block /24s, {ALLOWS} allow /24s in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let mut baseline_obj = Ebpf::load(sip_xdp::BASELINE_OBJECT).expect("baseline object");
    let baseline: &mut Xdp = baseline_obj
        .program_mut(sip_xdp::BASELINE_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    baseline.load().expect("loading the baseline program");

    let template = Frame::sip("100.104.0.1", OPTIONS).build();
    let other_port = Frame::sip("100.104.0.1", OPTIONS).udp_port(53).build();

    let paths = [
        Path {
            name: "non-SIP port, pass",
            expect: XDP_PASS,
            dport: 53,
            src: unknown_src,
            distinct: "1,048,576",
        },
        Path {
            name: "banned source, drop",
            expect: XDP_DROP,
            dport: 5060,
            src: ban_src,
            distinct: "100,000",
        },
        Path {
            name: "block-list /24, drop",
            expect: XDP_DROP,
            dport: 5060,
            src: block_src,
            distinct: "2,540,000",
        },
        Path {
            name: "allow-listed, pass",
            expect: XDP_PASS,
            dport: 5060,
            src: allow_src,
            distinct: "254,000",
        },
        Path {
            name: "full SIP pass, known sources",
            expect: XDP_PASS,
            dport: 5060,
            src: known_src,
            distinct: "100,000",
        },
        Path {
            name: "full SIP pass path",
            expect: XDP_PASS,
            dport: 5060,
            src: unknown_src,
            distinct: "1,048,576",
        },
    ];

    let (_, base_hot) = hot(baseline, &template, hot_repeat);
    let base_var = varied(baseline, &template, unknown_src, runs, Some(XDP_DROP));
    eprintln!("baseline: hot {base_hot:.1} ns, varied {base_var:.1} ns");

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("## XDP per-packet cost (BPF_PROG_TEST_RUN)\n");
    println!(
        "kernel {}, {} CPUs, {runs} varied packets per path, hot = one frame x {hot_repeat}; \
         frame: IPv4/UDP SIP OPTIONS, {} bytes\n",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        template.len()
    );
    println!("| path | distinct sources | varied ns/pkt | × baseline | hot ns/pkt | × baseline |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| trivial XDP_DROP (baseline) | 1,048,576 | {base_var:.1} | 1.00 | {base_hot:.1} | 1.00 |"
    );
    let mut ratios = Vec::new();
    for path in &paths {
        let frame = if path.dport == 53 {
            &other_port
        } else {
            &template
        };
        let mut hot_frame = frame.clone();
        hot_frame[SRC_OFF..SRC_OFF + 4].copy_from_slice(&(path.src)(7).octets());
        let (rv, h) = hot(&p.prog, &hot_frame, hot_repeat);
        assert_eq!(rv, path.expect, "{}", path.name);
        if path.name.contains("known") {
            varied(&p.prog, frame, path.src, 100_000, Some(path.expect));
        }
        let v = varied(&p.prog, frame, path.src, runs, Some(path.expect));
        println!(
            "| {} | {} | {v:.1} | {:.2} | {h:.1} | {:.2} |",
            path.name,
            path.distinct,
            v / base_var,
            h / base_hot
        );
        ratios.push((path.name, v / base_var, h / base_hot));
    }
    let fill = p.maps().fill();
    println!(
        "\nMaps after the run: {}. Kernel memory: BANS {} KiB, BLOCK {} KiB, SOURCES {} KiB (per-CPU LRU, {} CPUs).",
        fill.iter().map(|(n, e, m)| format!("{n} {e}/{m}")).collect::<Vec<_>>().join(", "),
        memlock_kib(&p.pins, MAP_BANS),
        memlock_kib(&p.pins, MAP_BLOCK),
        memlock_kib(&p.pins, MAP_SOURCES),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("\nTargets (issue 2): banned drop ≤ 3× baseline, full SIP pass ≤ 8× baseline.");
    for (name, limit) in [("banned source, drop", 3.0), ("full SIP pass path", 8.0)] {
        let (_, v, h) = ratios.iter().find(|(n, _, _)| *n == name).unwrap();
        println!(
            "- {name}: varied {v:.2}×, hot {h:.2}× (target ≤ {limit}×): {}",
            if *v <= limit && *h <= limit {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
