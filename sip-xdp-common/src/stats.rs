//! Global per-CPU counters. Every packet increments exactly one *reason*
//! counter (one increment per packet keeps the hot path short); verdict
//! totals (passed, dropped, would-drop) are sums that userspace derives.
//! Packets that reach the classifier also increment one SIP class counter.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    // Passed.
    NonIp = 0,
    NonUdp,
    OtherPort,
    /// IPv4/IPv6 non-first fragment from a source with no ban or block:
    /// no port to judge by (its first fragment was judged).
    Fragment,
    /// Frame ended inside a header: passed, and dropped by the stack.
    Truncated,
    Allowed,
    Sip,
    // Dropped.
    Banned,
    Blocked,
    Malformed,
    /// Over the kernel's per-source rate limit.
    RateLimited,
    // Monitor mode: matched a drop rule, passed anyway.
    MonitorBanned,
    MonitorBlocked,
    MonitorMalformed,
    MonitorRateLimited,
    /// A ban or block entry was found but had expired (not a verdict).
    BanExpired,
    /// Packets copied to the sample ring buffer, and samples lost because
    /// the ring was full or the per-CPU budget was spent (not verdicts).
    Sampled,
    SampleRingFull,
    SampleBudget,
    /// Final responses the SBC sent, seen by the egress program.
    ReplySuccess,
    Reply401,
    Reply403,
    Reply404,
    Reply407,
    // SIP classes of packets that reached classification (not verdicts).
    ClassRegister,
    ClassInvite,
    ClassOptions,
    ClassOtherRequest,
    ClassResponse,
    ClassKeepalive,
    ClassMalformed,
    /// Overload: a packet to a SIP port from a source neither verified nor
    /// remembered, past the strangers' share or its bucket's (dropped;
    /// passed in monitor mode).
    Shed,
    MonitorShed,
    /// A source reached the hot mark while the unit's hot map was full:
    /// the controller's next pass reads every source (not a verdict).
    HotFull,
    /// What could make the SBC send or relay a 2xx it never gave: a
    /// request from an address in an exchange whose CSeq names REGISTER or
    /// INVITE under another method (or, for other methods, cannot be
    /// found), or a response naming REGISTER that answers no REGISTER the
    /// SBC sent its sender (dropped; passed in monitor mode).
    BadCSeq,
    MonitorBadCSeq,
    /// A request from a source not on the allow-list whose User-Agent
    /// holds a scanner's name (dropped; passed in monitor mode).
    Scanner,
    MonitorScanner,
    /// A request whose method is on the deny list.
    Method,
    MonitorMethod,
    /// A request whose From, To or Contact user or domain is on the deny
    /// lists.
    DeniedHeader,
    MonitorDeniedHeader,
    /// A frame Linux would drop or no IP stack sends, or that the program
    /// cannot read to its payload: more VLAN tags or IPv6 extension
    /// headers than it walks, IP or UDP lengths past what holds them, a
    /// first fragment too short to classify (dropped; passed in monitor
    /// mode).
    Invalid,
    MonitorInvalid,
    /// SigComp messages (a SIP class, not a verdict).
    ClassSigComp,
    /// In overload, packets admitted because their source proved its
    /// address (lately or within the memory of good clients), or as a
    /// stranger within the shares (not verdicts: each is also counted as
    /// what it goes on to be).
    AdmitProven,
    AdmitStranger,
}

pub const COUNTERS: u32 = Counter::AdmitStranger as u32 + 1;

/// What a counter says about the packets it counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    WouldDrop,
    /// Counted in addition to a verdict counter.
    None,
}

impl Counter {
    pub const ALL: [Counter; COUNTERS as usize] = [
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
        Counter::RateLimited,
        Counter::MonitorBanned,
        Counter::MonitorBlocked,
        Counter::MonitorMalformed,
        Counter::MonitorRateLimited,
        Counter::BanExpired,
        Counter::Sampled,
        Counter::SampleRingFull,
        Counter::SampleBudget,
        Counter::ReplySuccess,
        Counter::Reply401,
        Counter::Reply403,
        Counter::Reply404,
        Counter::Reply407,
        Counter::ClassRegister,
        Counter::ClassInvite,
        Counter::ClassOptions,
        Counter::ClassOtherRequest,
        Counter::ClassResponse,
        Counter::ClassKeepalive,
        Counter::ClassMalformed,
        Counter::Shed,
        Counter::MonitorShed,
        Counter::HotFull,
        Counter::BadCSeq,
        Counter::MonitorBadCSeq,
        Counter::Scanner,
        Counter::MonitorScanner,
        Counter::Method,
        Counter::MonitorMethod,
        Counter::DeniedHeader,
        Counter::MonitorDeniedHeader,
        Counter::Invalid,
        Counter::MonitorInvalid,
        Counter::ClassSigComp,
        Counter::AdmitProven,
        Counter::AdmitStranger,
    ];

    /// The counter a drop reason uses in monitor mode.
    #[inline(always)]
    pub const fn monitored(self) -> Counter {
        match self {
            Counter::Banned => Counter::MonitorBanned,
            Counter::Blocked => Counter::MonitorBlocked,
            Counter::Malformed => Counter::MonitorMalformed,
            Counter::RateLimited => Counter::MonitorRateLimited,
            Counter::Shed => Counter::MonitorShed,
            Counter::BadCSeq => Counter::MonitorBadCSeq,
            Counter::Scanner => Counter::MonitorScanner,
            Counter::Method => Counter::MonitorMethod,
            Counter::DeniedHeader => Counter::MonitorDeniedHeader,
            Counter::Invalid => Counter::MonitorInvalid,
            other => other,
        }
    }

    pub const fn verdict(self) -> Verdict {
        match self {
            Counter::NonIp
            | Counter::NonUdp
            | Counter::OtherPort
            | Counter::Fragment
            | Counter::Truncated
            | Counter::Allowed
            | Counter::Sip => Verdict::Pass,
            Counter::Banned
            | Counter::Blocked
            | Counter::Malformed
            | Counter::RateLimited
            | Counter::Shed
            | Counter::BadCSeq
            | Counter::Scanner
            | Counter::Method
            | Counter::DeniedHeader
            | Counter::Invalid => Verdict::Drop,
            Counter::MonitorBanned
            | Counter::MonitorBlocked
            | Counter::MonitorMalformed
            | Counter::MonitorRateLimited
            | Counter::MonitorShed
            | Counter::MonitorBadCSeq
            | Counter::MonitorScanner
            | Counter::MonitorMethod
            | Counter::MonitorDeniedHeader
            | Counter::MonitorInvalid => Verdict::WouldDrop,
            _ => Verdict::None,
        }
    }

    /// Stable name used by `stats --json` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::NonIp => "pass_non_ip",
            Counter::NonUdp => "pass_non_udp",
            Counter::OtherPort => "pass_other_port",
            Counter::Fragment => "pass_fragment",
            Counter::Truncated => "pass_truncated",
            Counter::Allowed => "pass_allowed",
            Counter::Sip => "pass_sip",
            Counter::Banned => "drop_banned",
            Counter::Blocked => "drop_blocked",
            Counter::Malformed => "drop_malformed",
            Counter::RateLimited => "drop_rate_limited",
            Counter::MonitorBanned => "would_drop_banned",
            Counter::MonitorBlocked => "would_drop_blocked",
            Counter::MonitorMalformed => "would_drop_malformed",
            Counter::MonitorRateLimited => "would_drop_rate_limited",
            Counter::BanExpired => "ban_expired",
            Counter::Sampled => "sampled",
            Counter::SampleRingFull => "sample_ring_full",
            Counter::SampleBudget => "sample_over_budget",
            Counter::ReplySuccess => "reply_2xx",
            Counter::Reply401 => "reply_401",
            Counter::Reply403 => "reply_403",
            Counter::Reply404 => "reply_404",
            Counter::Reply407 => "reply_407",
            Counter::ClassRegister => "sip_register",
            Counter::ClassInvite => "sip_invite",
            Counter::ClassOptions => "sip_options",
            Counter::ClassOtherRequest => "sip_other_request",
            Counter::ClassResponse => "sip_response",
            Counter::ClassKeepalive => "sip_keepalive",
            Counter::ClassMalformed => "sip_malformed",
            Counter::Shed => "drop_shed",
            Counter::MonitorShed => "would_drop_shed",
            Counter::HotFull => "hot_map_full",
            Counter::BadCSeq => "drop_bad_cseq",
            Counter::MonitorBadCSeq => "would_drop_bad_cseq",
            Counter::Scanner => "drop_scanner",
            Counter::MonitorScanner => "would_drop_scanner",
            Counter::Method => "drop_method",
            Counter::MonitorMethod => "would_drop_method",
            Counter::DeniedHeader => "drop_denied_header",
            Counter::MonitorDeniedHeader => "would_drop_denied_header",
            Counter::Invalid => "drop_invalid",
            Counter::MonitorInvalid => "would_drop_invalid",
            Counter::ClassSigComp => "sip_sigcomp",
            Counter::AdmitProven => "overload_proven",
            Counter::AdmitStranger => "overload_stranger",
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

    #[test]
    fn monitored_variants_are_would_drop() {
        for c in [
            Counter::Banned,
            Counter::Blocked,
            Counter::Malformed,
            Counter::RateLimited,
            Counter::Shed,
            Counter::BadCSeq,
            Counter::Scanner,
            Counter::Method,
            Counter::DeniedHeader,
            Counter::Invalid,
        ] {
            assert_eq!(c.verdict(), Verdict::Drop);
            assert_eq!(c.monitored().verdict(), Verdict::WouldDrop);
        }
        assert_eq!(Counter::Sip.monitored(), Counter::Sip);
    }
}
