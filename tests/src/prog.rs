//! The real sip-xdp program, loaded into a private pin directory and driven
//! with `BPF_PROG_TEST_RUN`.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use sip_xdp::kernel::{
    loader::{self, Capacities},
    Maps, Pins,
};
use sip_xdp_common::Counter;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A pin directory under bpffs unique to this process and call, removed on
/// drop (maps and program go with it).
pub fn private_pins(tag: &str) -> Pins {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    Pins::new(PathBuf::from(format!(
        "/sys/fs/bpf/sip-xdp-test-{tag}-{}-{n}",
        std::process::id()
    )))
}

pub struct TestProg {
    pub pins: Pins,
    pub prog: Xdp,
}

impl TestProg {
    /// Files `n` sources (10.0.0.0 onwards, never sent from) in the current
    /// unit's hot map, as the program does when their packets reach the
    /// mark: `MAX_HOT` fills it, and the program's next filing overflows.
    pub fn file_hot(&self, n: u32) {
        use aya::maps::{Array, Map, MapData};
        use sip_xdp_common::maps::{MAP_HOT0, MAP_HOT1, MAP_UNIT};
        let unit_map = MapData::from_pin(self.pins.map(MAP_UNIT)).expect("UNIT pin");
        let unit = Array::<MapData, u32>::try_from(Map::Array(unit_map))
            .expect("UNIT")
            .get(&0, 0)
            .expect("reading the unit");
        let name = if unit & 1 == 0 { MAP_HOT0 } else { MAP_HOT1 };
        let hot = MapData::from_pin(self.pins.map(name)).expect("hot map pin");
        let keys: Vec<sip_xdp_common::IpKey> = (0..n)
            .map(|i| sip_xdp_common::addr::key_of(std::net::Ipv4Addr::from(0x0a00_0000 + i).into()))
            .collect();
        sip_xdp::kernel::batch::update(&hot, &keys, &vec![unit; keys.len()])
            .expect("filing hot sources");
    }

    pub fn load(tag: &str) -> Self {
        Self::load_with(tag, Capacities::default())
    }

    pub fn load_with(tag: &str, caps: Capacities) -> Self {
        crate::require_root();
        let pins = private_pins(tag);
        let (prog, fresh) = loader::load_or_open(&pins, caps)
            .unwrap_or_else(|e| panic!("loading the sip-xdp program: {e}"));
        assert!(fresh, "a private pin directory must start empty");
        Self { pins, prog }
    }

    pub fn maps(&self) -> Maps {
        Maps::open(&self.pins).expect("opening pinned maps")
    }

    /// Runs one frame once and returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.run_n(frame, 1).0
    }

    /// Runs one frame `repeat` times: (action, kernel-measured time per run).
    pub fn run_n(&self, frame: &[u8], repeat: u32) -> (u32, Duration) {
        let r = self
            .prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e}", frame.len()));
        (r.return_value, r.duration)
    }

    /// Runs one frame through the TC egress program; returns its verdict.
    pub fn run_egress(&self, frame: &[u8]) -> i32 {
        self.run_egress_n(frame, 1)
    }

    /// Runs one frame `repeat` times through the TC egress program, on the
    /// calling thread's CPU; returns the verdict.
    pub fn run_egress_n(&self, frame: &[u8], repeat: u32) -> i32 {
        let prog = SchedClassifier::from_pin(self.pins.egress_prog()).expect("egress program pin");
        prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN (egress): {e}"))
        .return_value as i32
    }

    pub fn stat(&self, c: Counter) -> u64 {
        self.maps()
            .stats()
            .expect("reading counters")
            .into_iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// Every counter, for before/after comparisons.
    pub fn stats(&self) -> Vec<(Counter, u64)> {
        self.maps().stats().expect("reading counters")
    }
}

impl Drop for TestProg {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.pins.root());
    }
}

/// Counter deltas between two snapshots, only the ones that moved.
pub fn delta(before: &[(Counter, u64)], after: &[(Counter, u64)]) -> Vec<(Counter, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| (a.0, a.1 - b.1))
        .collect()
}
