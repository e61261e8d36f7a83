//! sip-xdp userspace: loads the XDP program, keeps its maps pinned, and
//! operates them for the CLI and the controller.

pub mod batch;
pub mod cli;
pub mod clock;
pub mod config;
pub mod controller;
pub mod defend;
pub mod detect;
pub mod error;
pub mod events;
pub mod guard;
pub mod lists;
pub mod loader;
pub mod manage;
pub mod maps;
pub mod metrics;
pub mod pins;
pub mod samples;
pub mod store;
pub mod sync;
pub mod target;

pub use error::{Error, Result};

/// The XDP object, built by build.rs with the pinned nightly.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-xdp"));

/// A program that only returns XDP_DROP: the floor that benchmarks compare
/// with, and a stand-in for another vendor's XDP program in tests.
#[doc(hidden)]
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-xdp-baseline"));
#[doc(hidden)]
pub const BASELINE_PROGRAM: &str = "baseline_drop";

/// Benchmark harness: varies the source address per repeat, then tail-calls
/// the program under test.
#[doc(hidden)]
pub static HARNESS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-xdp-harness"));

/// Name of the XDP function inside the object.
pub const PROGRAM_NAME: &str = "sip_xdp";
/// Name of the TC egress response counter inside the same object.
pub const EGRESS_PROGRAM_NAME: &str = "sip_xdp_egress";

/// SIP port enabled when the maps are first created.
pub const DEFAULT_SIP_PORT: u16 = 5060;
