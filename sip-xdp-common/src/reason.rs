//! Why an address is banned: one name from the detector that found it to
//! the `blocked_ips.source` column, the `reason=` of the log line and the
//! metrics label; the kernel keeps only its coarse class.

/// Why a ban exists. `name()` is the spelling everywhere outside the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// An operator's `sip-xdp block` or a hand-written row.
    Manual,
    /// A threat feed or another tool.
    Feed,
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

impl Reason {
    /// What the detectors find (every reason but `Manual` and `Feed`).
    pub const DETECTED: [Reason; 9] = [
        Reason::Flood,
        Reason::MalformedFlood,
        Reason::RateLimit,
        Reason::ScannerUserAgent,
        Reason::Enumeration,
        Reason::OptionsSweep,
        Reason::BruteForce,
        Reason::WireBruteForce,
        Reason::WireEnumeration,
    ];

    /// Stable name: `blocked_ips.source`, the `reason=` of the log line and
    /// the `kind` label of `sipxdp_detections_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Feed => "feed",
            Reason::Flood => "flood",
            Reason::MalformedFlood => "malformed_flood",
            Reason::RateLimit => "rate_limit",
            Reason::ScannerUserAgent => "scanner_user_agent",
            Reason::Enumeration => "extension_enumeration",
            Reason::OptionsSweep => "options_sweep",
            Reason::BruteForce => "brute_force",
            Reason::WireBruteForce => "brute_force_wire",
            Reason::WireEnumeration => "enumeration_wire",
        }
    }

    /// The `security_events.event_type` of a detection; several reasons
    /// share one.
    pub const fn event_type(self) -> &'static str {
        match self {
            Reason::Manual | Reason::Feed => "ip_blocked",
            Reason::Flood => "flood_detected",
            Reason::MalformedFlood => "malformed_flood",
            Reason::RateLimit => "rate_limit_exceeded",
            Reason::ScannerUserAgent
            | Reason::Enumeration
            | Reason::OptionsSweep
            | Reason::WireEnumeration => "scanner_detected",
            Reason::BruteForce | Reason::WireBruteForce => "brute_force_detected",
        }
    }

    /// The class the kernel keeps.
    pub const fn ban_reason(self) -> BanReason {
        match self {
            Reason::Manual => BanReason::Manual,
            Reason::Feed => BanReason::Feed,
            Reason::Flood => BanReason::Flood,
            Reason::MalformedFlood => BanReason::Malformed,
            Reason::RateLimit => BanReason::RateLimit,
            Reason::ScannerUserAgent
            | Reason::Enumeration
            | Reason::OptionsSweep
            | Reason::WireEnumeration => BanReason::Scanner,
            Reason::BruteForce | Reason::WireBruteForce => BanReason::BruteForce,
        }
    }

    /// The reason a `blocked_ips.source` value names: one of ours, or a
    /// name other tools write; anything else is an operator's (`Manual`).
    #[cfg(not(target_arch = "bpf"))]
    pub fn from_source(source: &str) -> Reason {
        let s = source.trim().to_ascii_lowercase();
        if let Some(r) = Self::DETECTED.iter().find(|r| r.name() == s) {
            return *r;
        }
        match s.as_str() {
            "flood" | "pike" => Reason::Flood,
            "scanner" => Reason::ScannerUserAgent,
            "bruteforce" | "brute_force" | "brute-force" => Reason::BruteForce,
            "feed" | "apiban" | "fail2ban" | "crowdsec" | "geo" => Reason::Feed,
            _ if s.starts_with("feed:") => Reason::Feed,
            "ratelimit" | "rate_limit" => Reason::RateLimit,
            "malformed" => Reason::MalformedFlood,
            _ => Reason::Manual,
        }
    }
}

/// The class of a `Reason` that the kernel keeps in `BanValue::reason`, so
/// `list --kernel` can say why a source is dropped without the database.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    Manual = 1,
    Flood = 2,
    Scanner = 3,
    BruteForce = 4,
    Feed = 5,
    RateLimit = 6,
    Malformed = 7,
}

impl BanReason {
    pub const ALL: [BanReason; 7] = [
        Self::Manual,
        Self::Flood,
        Self::Scanner,
        Self::BruteForce,
        Self::Feed,
        Self::RateLimit,
        Self::Malformed,
    ];

    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Manual,
            2 => Self::Flood,
            3 => Self::Scanner,
            4 => Self::BruteForce,
            5 => Self::Feed,
            6 => Self::RateLimit,
            7 => Self::Malformed,
            _ => return None,
        })
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Flood => "flood",
            Self::Scanner => "scanner",
            Self::BruteForce => "bruteforce",
            Self::Feed => "feed",
            Self::RateLimit => "ratelimit",
            Self::Malformed => "malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_tools_map_to_classes() {
        for r in Reason::DETECTED {
            assert_eq!(Reason::from_source(r.name()), r);
        }
        assert_eq!(Reason::from_source(" Pike "), Reason::Flood);
        assert_eq!(Reason::from_source("apiban").ban_reason(), BanReason::Feed);
        assert_eq!(
            Reason::from_source("scanner").ban_reason(),
            BanReason::Scanner
        );
        assert_eq!(Reason::from_source("seen on sbc-a"), Reason::Manual);
        for b in BanReason::ALL {
            assert_eq!(BanReason::from_u32(b as u32), Some(b));
        }
    }
}
