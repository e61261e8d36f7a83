//! Detectors: pure state machines fed with counters, samples and database
//! rows, returning what to ban and why. They never touch the kernel, the
//! database or the clock themselves, so every threshold and window has a
//! unit test with synthetic input; the controller acts on what they say.

pub mod brute;
pub mod escalate;
pub mod flood;
pub mod scanner;
pub mod settings;
pub mod wire;

use std::{net::IpAddr, time::Duration};

use serde_json::Value;
use sip_xdp_common::maps::BanReason;

pub use settings::Settings;

/// What was detected. Several kinds share a `security_events` type; the
/// kind is the `reason` in logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Request density over the per-unit limit (pike semantics).
    Flood,
    /// Non-SIP payloads on a SIP port over their limit.
    MalformedFlood,
    /// The kernel's own per-source limit was crossed.
    RateLimit,
    /// A known scanner or attack tool's User-Agent.
    ScannerUserAgent,
    /// Many distinct user parts probed (To / Request-URI).
    Enumeration,
    /// Many distinct targets probed with OPTIONS.
    OptionsSweep,
    /// `failed_registrations` / `door_knock_attempts` rows.
    BruteForce,
    /// Unanswered 401/407 challenges and 403s sent by the SBC.
    WireBruteForce,
    /// 404s sent by the SBC.
    WireEnumeration,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Flood,
        Kind::MalformedFlood,
        Kind::RateLimit,
        Kind::ScannerUserAgent,
        Kind::Enumeration,
        Kind::OptionsSweep,
        Kind::BruteForce,
        Kind::WireBruteForce,
        Kind::WireEnumeration,
    ];

    /// The `security_events.event_type` recorded.
    pub const fn event_type(self) -> &'static str {
        match self {
            Kind::Flood => "flood_detected",
            Kind::MalformedFlood => "malformed_flood",
            Kind::RateLimit => "rate_limit_exceeded",
            Kind::ScannerUserAgent
            | Kind::Enumeration
            | Kind::OptionsSweep
            | Kind::WireEnumeration => "scanner_detected",
            Kind::BruteForce | Kind::WireBruteForce => "brute_force_detected",
        }
    }

    /// Stable name: the `reason=` of the log line, the `kind` label of
    /// `sipxdp_detections_total`, and `blocked_ips.source`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Flood => "flood",
            Kind::MalformedFlood => "malformed_flood",
            Kind::RateLimit => "rate_limit",
            Kind::ScannerUserAgent => "scanner_user_agent",
            Kind::Enumeration => "extension_enumeration",
            Kind::OptionsSweep => "options_sweep",
            Kind::BruteForce => "brute_force",
            Kind::WireBruteForce => "brute_force_wire",
            Kind::WireEnumeration => "enumeration_wire",
        }
    }

    pub const fn ban_reason(self) -> BanReason {
        match self {
            Kind::Flood => BanReason::Flood,
            Kind::MalformedFlood => BanReason::Malformed,
            Kind::RateLimit => BanReason::RateLimit,
            Kind::ScannerUserAgent
            | Kind::Enumeration
            | Kind::OptionsSweep
            | Kind::WireEnumeration => BanReason::Scanner,
            Kind::BruteForce | Kind::WireBruteForce => BanReason::BruteForce,
        }
    }
}

/// A detector's verdict on one source.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub ip: IpAddr,
    pub kind: Kind,
    /// Ban length before repeat-offender escalation.
    pub base_ban: Duration,
    /// The figure that crossed the threshold (packets, failures, users).
    pub count: u64,
    pub limit: u64,
    pub window: Duration,
    /// Kind-specific facts for `security_events.details`.
    pub details: Value,
}
