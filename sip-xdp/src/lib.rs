//! sip-xdp userspace: loads the XDP program, keeps its maps pinned, and
//! operates them for the CLI and the controller.
//!
//! # Where things live
//! The folders are layers; each imports only the ones below it:
//! - [`kernel`]: everything that talks to bpf(2) (loader, pins, map handles,
//!   batch reads, the sample ring, the clock). Knows nothing above it.
//! - [`db`]: the store, row validation, the reconciler (rows → kernel
//!   entries), the event buffer, the outbox of operators' changes and the
//!   feed rows. Uses `kernel`.
//! - [`feed`]: threat feeds (blocklists, APIBAN, CrowdSec, the country
//!   policy), each a task that fetches and checks its entries. Uses
//!   `kernel` (the safety rails).
//! - [`detect`]: the detectors (pure state machines), the SIP sample parser
//!   and `act`, which turns a detection into a kernel ban, a `blocked_ips`
//!   row, an event and a log line. Uses `kernel` and `db`.
//! - [`cli`]: argument definitions and one function per command. Uses all.
//! - At the root: the daemon's loop ([`controller`]) and its database
//!   rounds, run off the loop ([`round`]), the file configuration
//!   ([`config`]), errors, metrics, and the text forms of addresses and
//!   durations ([`parse`]), giving freed memory back ([`heap`]), and the
//!   log's one-record-one-line writer ([`logline`]).
//!
//! # Adding things
//! - A detector: a state machine in `detect/` returning `Detection`s with a
//!   new `sip_xdp_common::Reason`; its settings section in
//!   `detect/settings.rs`; feed it from `Controller::detect_pass`.
//! - A CLI command: a variant in `cli/args.rs`, one function in the `cli/`
//!   module for its kind (`edit`, `show`, `filter`, `status`), one arm in
//!   `cli::run`.
//! - A feed: an `Origin` in `feed/mod.rs` with its fetch in a module of
//!   its own; its rows are written by `db::feeds`.
//! - A database table: a migration in `migrations/{sqlite,mysql}/`, its row
//!   type and queries in `db/store.rs`, validation in `db/rows.rs`.
//! - A kernel map: its name, key and value in `sip_xdp_common::maps`, the
//!   static in `sip-xdp-ebpf/src/maps.rs`, typed access in
//!   `kernel/handles.rs`.

pub mod alerts;
pub mod cli;
pub mod config;
pub mod controller;
pub mod db;
pub mod detect;
pub mod error;
pub mod feed;
pub mod guard;
pub mod heap;
pub mod kernel;
pub mod logline;
pub mod metrics;
pub mod parse;
pub mod round;
pub mod sync;

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
/// Name of the program the egress one tail-calls to read the headers of
/// the SBC's challenges, 2xx and requests.
pub const TRUST_PROGRAM_NAME: &str = "sip_xdp_trust";
/// Name of the program the XDP one tail-calls for SIP from an address in
/// an exchange with the SBC.
pub const EXCHANGE_PROGRAM_NAME: &str = "sip_xdp_exchange";

/// SIP port enabled when the maps are first created.
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// SIP over TCP and over TLS: bans are enforced there too.
pub const DEFAULT_TCP_PORTS: [u16; 2] = [5060, 5061];
