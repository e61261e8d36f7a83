//! Run-time configuration the XDP program reads from the one-entry `CONFIG`
//! array, so behaviour changes without reloading the program.

/// Count what would be dropped, drop nothing (roll-out mode).
pub const CONFIG_MONITOR: u32 = 1 << 0;
/// Drop packets on SIP ports whose payload is not SIP.
pub const CONFIG_DROP_MALFORMED: u32 = 1 << 1;

/// Drop everything from a banned or blocked source, not only its SIP.
pub const CONFIG_BAN_ALL: u32 = 1 << 2;
/// Judge every request from a source not on the allow-list by the deny
/// lists that are on (`crate::rules`, the `RULES` map): the bits are the
/// header scan's `READ_*`.
pub const CONFIG_MATCH: u32 =
    crate::exchange::READ_AGENTS | crate::exchange::READ_ADDRESSES | crate::exchange::READ_METHODS;

/// Longest payload a sample carries.
pub const SAMPLE_MAX_PAYLOAD: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Packets per source per `rate_window_ns` on SIP ports above which the
    /// kernel drops (allow-listed sources excepted); 0 = no kernel limit.
    pub rate_limit: u32,
    pub rate_window_ns: u64,
    /// The first packets of each new source (per CPU) that are sampled.
    pub sample_first: u32,
    /// After those, one packet in `sample_every` (a power of two; 0 = none).
    pub sample_every: u32,
    /// Ceiling on samples per CPU per second, whatever the sources do: a
    /// spoofed flood of new sources must not turn into a copy per packet.
    pub sample_per_sec: u32,
    /// Prefix lengths sources are counted, limited and sampled by (0 = the
    /// whole address): IPv6 customers own a /64.
    pub prefix_v4: u16,
    pub prefix_v6: u16,
    /// How long a source stays verified once it proved its address (a
    /// challenged REGISTER answered with a 2xx, or an answer to the SBC's
    /// own request); 0 = learn nothing.
    pub trust_ttl_ns: u64,
    /// The load mark: SIP packets per second per CPU from sources not on
    /// the allow-list past which this CPU is in overload, and admits only
    /// proven sources and the strangers' share (`crate::admission`);
    /// 0 = never.
    pub shed_per_cpu: u32,
    /// In overload, strangers (neither verified nor remembered) admitted
    /// per second per CPU, all buckets together.
    pub strangers_per_cpu: u32,
    /// A source silent for longer than this starts a new burst, whose first
    /// packet is sampled like a new source's (a returning scanner, a source
    /// after its ban, traffic after a restart); 0 = never.
    pub burst_idle_ms: u32,
    /// A source's packets on one CPU in one sampling unit at which it is
    /// filed in the unit's hot map for the controller's pass; 0 = file
    /// nothing (the pass reads every source). The controller sets it to
    /// its lowest flood limit divided by the CPU count, so a source never
    /// filed cannot be over any limit.
    pub hot_at: u32,
    /// In overload, strangers admitted per second per CPU from one bucket
    /// of source prefixes.
    pub bucket_cap: u32,
    /// The prefix lengths strangers are bucketed by.
    pub bucket_prefix_v4: u16,
    pub bucket_prefix_v6: u16,
    /// The buckets' hash key, drawn by the controller at start.
    pub bucket_seed: u64,
}

impl KernelConfig {
    pub const fn monitor(&self) -> bool {
        self.flags & CONFIG_MONITOR != 0
    }
    /// The accounting key of `src`: its prefix.
    #[inline(always)]
    pub fn source_key(&self, src: &crate::IpKey) -> crate::IpKey {
        crate::addr::prefix_key(src, u32::from(self.prefix_v4), u32::from(self.prefix_v6))
    }

    pub const fn ban_all(&self) -> bool {
        self.flags & CONFIG_BAN_ALL != 0
    }

    /// The deny lists that are on, as the header scan's `READ_*` bits.
    pub const fn lists(&self) -> u32 {
        self.flags & CONFIG_MATCH
    }

    pub const fn drop_malformed(&self) -> bool {
        self.flags & CONFIG_DROP_MALFORMED != 0
    }

    /// Whether a packet after `idle_ns` of silence from its source starts a
    /// new burst.
    #[inline(always)]
    pub const fn starts_burst(&self, idle_ns: u64) -> bool {
        self.burst_idle_ms != 0 && idle_ns > self.burst_idle_ms as u64 * 1_000_000
    }

    /// Whether the `packets`-th packet of a source (per CPU, counted from 1)
    /// is one to sample.
    #[inline(always)]
    pub const fn wants_sample(&self, packets: u64) -> bool {
        packets <= self.sample_first as u64
            || (self.sample_every != 0 && packets & (self.sample_every as u64 - 1) == 0)
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_takes_the_first_packets_then_a_trickle() {
        let c = KernelConfig {
            sample_first: 3,
            sample_every: 8,
            ..Default::default()
        };
        let taken: Vec<u64> = (1..=40).filter(|&n| c.wants_sample(n)).collect();
        assert_eq!(taken, vec![1, 2, 3, 8, 16, 24, 32, 40]);
        let off = KernelConfig::default();
        assert!(!(1..1000).any(|n| off.wants_sample(n)));
    }

    #[test]
    fn a_burst_starts_after_the_idle_time_only_when_set() {
        let c = KernelConfig {
            burst_idle_ms: 100,
            ..Default::default()
        };
        assert!(!c.starts_burst(100_000_000));
        assert!(c.starts_burst(100_000_001));
        assert!(!KernelConfig::default().starts_burst(u64::MAX));
    }

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<KernelConfig>(), 72);
    }
}
