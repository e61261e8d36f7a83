//! The sizes of the program's maps: the defaults, their shrinking on
//! machines with many CPUs, and what each costs the kernel. Chosen at
//! first load; a pin keeps what it was created with.

/// Program capacities chosen at first load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    pub bans: u32,
    pub allow: u32,
    pub block: u32,
    pub sources: u32,
    pub rate: u32,
    pub replies: u32,
    /// The source table's LRU lists.
    pub source_lists: LruLists,
}

/// How an LRU map keeps its recency lists. The program reads and writes
/// the map the same way in both: only insertion and eviction differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LruLists {
    /// One list shared by every CPU, refilled per CPU in batches under a
    /// lock: any CPU can use every entry.
    #[default]
    Common,
    /// `BPF_F_NO_COMMON_LRU`: a list per CPU, no shared lock, but each CPU
    /// inserts into and evicts from its own share of the entries only.
    PerCpu,
}

/// `BPF_F_NO_COMMON_LRU` from the kernel's uapi.
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

impl Default for Capacities {
    fn default() -> Self {
        use sip_xdp_common::maps::*;
        Self {
            bans: DEFAULT_MAX_BANS,
            allow: DEFAULT_MAX_ALLOW,
            block: DEFAULT_MAX_BLOCK,
            sources: DEFAULT_MAX_SOURCES,
            rate: DEFAULT_MAX_RATE,
            replies: DEFAULT_MAX_REPLIES,
            source_lists: LruLists::Common,
        }
    }
}

/// Value slots (entries × possible CPUs) one per-CPU map may take at its
/// default size: the default source table would cost over 1 GiB on a
/// 64-CPU machine.
pub const PER_CPU_SLOTS: u64 = 1 << 22;

impl Capacities {
    /// The default sizes for a machine with `cpus` possible CPUs: the
    /// per-CPU map (SOURCES) shrinks, by powers of two, to keep within
    /// `PER_CPU_SLOTS`. A size set in the configuration is used as it is.
    pub fn for_cpus(cpus: u32) -> Self {
        let fit = |default: u32| {
            let most = PER_CPU_SLOTS / u64::from(cpus.max(1));
            let most = if most == 0 { 1 } else { 1u64 << most.ilog2() };
            default
                .min(u32::try_from(most).unwrap_or(u32::MAX))
                .max(1024)
        };
        let d = Self::default();
        Self {
            sources: fit(d.sources),
            ..d
        }
    }

    /// The maps whose size the operator chooses (`max_*`), with their sizes
    /// here: what the loader creates, and what a pin may keep otherwise.
    pub fn sized_maps(&self) -> [(&'static str, u32); 6] {
        use sip_xdp_common::maps::*;
        [
            (MAP_BANS, self.bans),
            (MAP_ALLOW, self.allow),
            (MAP_BLOCK, self.block),
            (MAP_SOURCES, self.sources),
            (MAP_RATE, self.rate),
            (MAP_REPLIES, self.replies),
        ]
    }

    /// `for_cpus` on this machine.
    pub fn for_this_machine() -> Self {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
        Self::for_cpus(cpus)
    }

    /// The kernel memory of each hash map at these sizes on a machine with
    /// `cpus` possible CPUs, in bytes, as the kernel charges it (the tries
    /// grow with their entries and the arrays are a few KiB).
    pub fn hash_map_bytes(&self, cpus: u32) -> Vec<(&'static str, u64)> {
        use sip_xdp_common::{
            addr::IpKey,
            maps::*,
            memory::{hash_map_bytes, HashKind::*},
        };
        use std::mem::size_of;
        let key = size_of::<IpKey>();
        vec![
            (
                MAP_BANS,
                hash_map_bytes(Hash, self.bans, key, size_of::<BanValue>(), cpus),
            ),
            (
                MAP_SOURCES,
                hash_map_bytes(
                    LruPerCpuHash,
                    self.sources,
                    key,
                    size_of::<SourceStats>(),
                    cpus,
                ),
            ),
            (
                MAP_RATE,
                hash_map_bytes(LruHash, self.rate, key, size_of::<RateState>(), cpus),
            ),
            (
                MAP_REPLIES,
                hash_map_bytes(LruHash, self.replies, key, size_of::<ReplyStats>(), cpus),
            ),
            (
                MAP_VERIFIED,
                hash_map_bytes(
                    LruHash,
                    DEFAULT_MAX_VERIFIED,
                    key,
                    size_of::<Verified>(),
                    cpus,
                ),
            ),
            (
                MAP_HOT0,
                hash_map_bytes(Hash, MAX_HOT, key, size_of::<u32>(), cpus),
            ),
            (
                MAP_HOT1,
                hash_map_bytes(Hash, MAX_HOT, key, size_of::<u32>(), cpus),
            ),
        ]
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::*;

    #[test]
    fn the_source_table_shrinks_on_big_machines_to_stay_within_its_slots() {
        let sources = |cpus| Capacities::for_cpus(cpus).sources;
        assert_eq!(sources(2), 262_144);
        assert_eq!(sources(16), 262_144);
        assert_eq!(sources(32), 131_072);
        assert_eq!(sources(64), 65_536);
        assert_eq!(sources(96), 32_768);
        for cpus in [1, 2, 16, 64, 96, 256, 1024] {
            let c = Capacities::for_cpus(cpus);
            let slots = u64::from(c.sources) * u64::from(cpus);
            assert!(slots <= PER_CPU_SLOTS || c.sources == 1024, "{cpus} CPUs");
            assert_eq!(c.bans, Capacities::default().bans);
            // Shared by all CPUs: its memory does not grow with them.
            assert_eq!(c.replies, Capacities::default().replies);
        }
    }
}
