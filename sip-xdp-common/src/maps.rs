//! Map names and value layouts. Every value is `#[repr(C)]` with explicit
//! padding so the kernel and userspace agree byte for byte.

pub const MAP_BANS: &str = "BANS";
pub const MAP_ALLOW: &str = "ALLOW";
pub const MAP_BLOCK: &str = "BLOCK";
pub const MAP_SOURCES: &str = "SOURCES";
pub const MAP_SIP_PORTS: &str = "SIP_PORTS";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_STATS: &str = "STATS";

/// Every map the program owns, in pin order.
pub const ALL_MAPS: [&str; 7] = [
    MAP_BANS,
    MAP_ALLOW,
    MAP_BLOCK,
    MAP_SOURCES,
    MAP_SIP_PORTS,
    MAP_CONFIG,
    MAP_STATS,
];

/// Entries in the `SIP_PORTS` bitmap: 1024 × 64 bits covers every port.
pub const SIP_PORT_WORDS: u32 = 1024;

/// Default capacities; the loader may override them.
pub const DEFAULT_MAX_BANS: u32 = 131_072;
pub const DEFAULT_MAX_ALLOW: u32 = 16_384;
pub const DEFAULT_MAX_BLOCK: u32 = 65_536;
pub const DEFAULT_MAX_SOURCES: u32 = 262_144;

/// Why an exact ban exists. Stored so `list` and the kernel's counters can
/// say why a source is dropped.
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

/// Value of an exact-match ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// `CLOCK_MONOTONIC` nanoseconds (the clock `bpf_ktime_get_coarse_ns`
    /// reads) after which the kernel stops enforcing the ban; 0 = never.
    pub expires_ns: u64,
    /// Packets dropped by this ban, added atomically by the kernel.
    pub hits: u64,
    /// A `BanReason`.
    pub reason: u32,
    pub _pad: u32,
}

impl BanValue {
    /// Whether the ban is still in force at monotonic time `now_ns`.
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns
    }
}

/// Value of a block-list CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockValue {
    /// Same clock and meaning as `BanValue::expires_ns`; 0 = never.
    pub expires_ns: u64,
    /// Packets dropped by this rule, added atomically by the kernel.
    pub hits: u64,
}

impl BlockValue {
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns
    }
}

/// Per-source, per-CPU accounting. Kept at 64 bytes: the LRU stores one of
/// these per possible CPU for every tracked source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub packets: u64,
    pub bytes: u64,
    /// Monotonic ns of the first and latest packet seen on this CPU.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Packets per `SipClass`, indexed by `SipClass as usize`. u32 per CPU
    /// is enough between two controller reads; readers use wrapping deltas.
    pub class: [u32; crate::classify::SIP_CLASSES],
    /// Packets from this source that were dropped (or would have been).
    pub dropped: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for BanValue {}
    unsafe impl aya::Pod for BlockValue {}
    unsafe impl aya::Pod for SourceStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<BanValue>(), 24);
        assert_eq!(core::mem::size_of::<BlockValue>(), 16);
        assert_eq!(core::mem::size_of::<SourceStats>(), 64);
    }

    #[test]
    fn ban_expiry() {
        let permanent = BanValue::default();
        assert!(permanent.active_at(u64::MAX));
        let timed = BanValue {
            expires_ns: 100,
            ..Default::default()
        };
        assert!(timed.active_at(99));
        assert!(!timed.active_at(100));
    }

    #[test]
    fn reasons_round_trip() {
        for v in 1..=7 {
            assert_eq!(BanReason::from_u32(v).unwrap() as u32, v);
        }
        assert!(BanReason::from_u32(0).is_none());
    }
}
