//! Detectors: pure state machines fed with counters, samples and database
//! rows, returning what to ban and why. The detectors never touch the
//! kernel, the database or the clock themselves, so every threshold and
//! window has a unit test with synthetic input. `act` is the one place
//! that acts on what they say: it writes the kernel through `KernelLists`
//! (host-tested against a fake), queues events and ban rows in the journal for the
//! database round, and reads the clock. `sip` turns ring-buffer samples
//! into what the scanner reads.
//!
//! May import `kernel`, `db` (row and event types, the journal) and
//! the crate root; never `sync`, `feed`, `cli` or `controller`.

pub mod act;
pub mod admission;
pub mod brute;
pub mod cap;
pub mod escalate;
pub mod flood;
pub mod overload;
pub mod scanner;
pub mod settings;
pub mod sip;
pub mod wire;

use std::{net::IpAddr, time::Duration};

use serde_json::Value;
pub use sip_xdp_common::Reason;

pub use settings::Settings;

/// A detector's verdict on one source.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// What the detector counted by: the source's prefix.
    pub ip: IpAddr,
    /// The address a sample or a failure row showed, where the detector
    /// saw one (a ban that may not cover the host's own prefix narrows
    /// around it).
    pub seen: Option<IpAddr>,
    pub reason: Reason,
    /// Ban length before repeat-offender escalation.
    pub base_ban: Duration,
    /// The figure that crossed the threshold (packets, failures, users).
    pub count: u64,
    pub limit: u64,
    pub window: Duration,
    /// Kind-specific facts for `security_events.details`.
    pub details: Value,
}
