//! sip-xdp userspace: loads the XDP program, keeps its maps pinned, and
//! operates them for the CLI and the controller.
//!
//! # Where things live
//! The folders are layers; each imports only the ones below it (its
//! `mod.rs` says which):
//! - [`kernel`]: everything that talks to bpf(2) (loader, pins, map handles,
//!   batch reads, the sample ring, the clock), and [`kernel::KernelLists`],
//!   the lists as the layers above write them. Knows nothing above it.
//! - [`db`]: the store (one file per table), adopting the operator's
//!   tables and migrating them, row validation, the journal of writes
//!   waiting for the database (events, ban rows, feed rows), the
//!   outbox of operators' changes, feed rows and retention. Never touches
//!   the kernel.
//! - [`sync`]: rows to kernel: the plan (what the rows ask for against what
//!   the kernel holds) and its application. Uses `db` and `kernel`.
//! - [`feed`]: threat feeds (blocklists, APIBAN, CrowdSec, the country
//!   policy), each a task that fetches and checks its entries.
//! - [`detect`]: the detectors (pure state machines), the SIP sample parser
//!   and `act`, which turns a detection into a kernel ban, a pending
//!   `blocked_ips` row, events and a log line.
//! - [`cli`]: argument definitions and one function per command. Uses all.
//! - [`controller`]: the daemon: its loop, its database rounds (each run off
//!   the loop by [`round`]), its detection pass, its status.
//! - At the root, at the bottom: the safety rails ([`guard`]), errors, the
//!   text forms of addresses and durations ([`parse`]), giving freed memory
//!   back ([`heap`]), the log's one-record-one-line writer ([`logline`])
//!   and what Linux says of the SIP server's sockets ([`sockets`]).
//!   Above `kernel`, `db`, `detect` and `feed`, used only by the controller
//!   and the CLI: the file configuration ([`config`]), one database round
//!   ([`round`]), alerts and metrics.
//!
//! # Words
//! - **ban**: an exact address in the kernel's BANS map (with, for IPv4,
//!   its slot in the ban index). **block rule**: a prefix in the BLOCK trie.
//!   **rule**: either, as the sync plans them. **row**: a `blocked_ips` row,
//!   the record both come from; **pending row**: a ban made in the kernel
//!   whose row waits for the next database round.
//! - The verbs per layer: the kernel *puts* and *removes* entries; the sync
//!   *plans* and *applies*; the defender *acts* (bans or spares); the
//!   store *inserts*, *lifts* (sets `unblocked_at`) and *deletes* (retention
//!   only); the CLI *blocks*, *unblocks*, *allows* and *disallows*.
//! - Never banned, each for its own reason: the **allow-list**
//!   (`whitelisted_ips` and the ALLOW trie: passes everything, the
//!   operator's word); **trusted peers** (the SIP server's `address` table,
//!   added to the allow-list); **verified** sources (the kernel's VERIFIED
//!   map: proved their address by a round trip, `Trust`; still rate
//!   limited, never banned on forgeable evidence); the **ignore** list
//!   (`detect.ignore`: detections on it are not acted on, the kernel still
//!   filters it); and the **guard** (loopback and this host's own
//!   addresses: refused whatever asks).
//! - In overload, admitted first: **proven** sources (verified now, or in
//!   the kernel's REMEMBERED map: the memory of good clients, loaded by the
//!   controller from `remembered_clients`); then **strangers**, within
//!   their share and their prefix bucket's.
//! - **source**: a packet's sender, except `blocked_ips.source` (what made
//!   the row: a `Reason` name or another tool's) and a feed's URL.
//!
//! # Adding things
//! Where a new detector, command, feed, table, map or test goes, step by
//! step: `docs/architecture.md`, "Where new things go".

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
pub mod sockets;
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
