//! Global per-CPU counters, one slot per verdict and reason.

/// Index into the `STATS` per-CPU array. Every packet increments exactly one
/// verdict counter (`Passed`, `Dropped`, `WouldDrop`) and one reason counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    // Verdicts.
    Passed = 0,
    Dropped,
    /// Monitor mode: matched a drop rule, passed anyway.
    WouldDrop,
    // Reasons for passing.
    NonIp,
    NonUdp,
    OtherPort,
    /// IPv4/IPv6 non-first fragment from a source with no ban or block.
    Fragment,
    /// Frame ended inside a header: passed, the stack decides.
    Truncated,
    Allowed,
    Sip,
    // Reasons for dropping (counted in monitor mode too).
    Banned,
    Blocked,
    Malformed,
    /// A ban entry was found but had expired.
    BanExpired,
    // SIP classes of packets that reached classification.
    ClassRegister,
    ClassInvite,
    ClassOptions,
    ClassOtherRequest,
    ClassResponse,
    ClassKeepalive,
    ClassMalformed,
}

pub const COUNTERS: u32 = Counter::ClassMalformed as u32 + 1;

impl Counter {
    pub const ALL: [Counter; COUNTERS as usize] = [
        Counter::Passed,
        Counter::Dropped,
        Counter::WouldDrop,
        Counter::NonIp,
        Counter::NonUdp,
        Counter::OtherPort,
        Counter::Fragment,
        Counter::Truncated,
        Counter::Allowed,
        Counter::Sip,
        Counter::Banned,
        Counter::Blocked,
        Counter::Malformed,
        Counter::BanExpired,
        Counter::ClassRegister,
        Counter::ClassInvite,
        Counter::ClassOptions,
        Counter::ClassOtherRequest,
        Counter::ClassResponse,
        Counter::ClassKeepalive,
        Counter::ClassMalformed,
    ];

    /// Stable name used by `stats --json` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Passed => "passed",
            Counter::Dropped => "dropped",
            Counter::WouldDrop => "would_drop",
            Counter::NonIp => "pass_non_ip",
            Counter::NonUdp => "pass_non_udp",
            Counter::OtherPort => "pass_other_port",
            Counter::Fragment => "pass_fragment",
            Counter::Truncated => "pass_truncated",
            Counter::Allowed => "pass_allowed",
            Counter::Sip => "pass_sip",
            Counter::Banned => "match_banned",
            Counter::Blocked => "match_blocked",
            Counter::Malformed => "match_malformed",
            Counter::BanExpired => "ban_expired",
            Counter::ClassRegister => "sip_register",
            Counter::ClassInvite => "sip_invite",
            Counter::ClassOptions => "sip_options",
            Counter::ClassOtherRequest => "sip_other_request",
            Counter::ClassResponse => "sip_response",
            Counter::ClassKeepalive => "sip_keepalive",
            Counter::ClassMalformed => "sip_malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_with_unique_names() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }
}
