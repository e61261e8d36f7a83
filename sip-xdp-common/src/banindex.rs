//! The IPv4 ban index: a compact copy of BANS' IPv4 entries that the program
//! reads before BANS itself. Each bucket is one cache line of five slots
//! (address, expiry and hit count, 12 bytes each) and a spill mark. A
//! banned IPv4 source then costs one line of a 2 MiB array instead of a
//! hash bucket and an 88-byte hash element (two or three lines of a 13 MiB
//! area): under a flood from 100,000 banned sources, the difference between
//! the caches and memory.
//!
//! BANS stays the record, and the index answers for it: an IPv4 address
//! that is in no slot of its bucket is not banned, unless the bucket's
//! spill mark says some ban of this bucket lives in BANS alone (the bucket
//! was full, or the expiry is past what a slot holds). Every legitimate
//! IPv4 packet thus skips the BANS lookup, the costliest miss on the pass
//! path. A slot that matched but is expired or at its hit cap sends the
//! packet to BANS too. Writers add to BANS before the index, remove from
//! the index before BANS, and set a spill mark before they take a slot
//! away, so the index never hides a ban BANS holds.

/// Buckets (a power of two): 2 MiB, 163,840 slots. At 100,000 bans a
/// bucket averages three; the few whose bucket is full stay in BANS only,
/// and mark it.
pub const BUCKETS: u32 = 32_768;
const BUCKET_BITS: u32 = BUCKETS.trailing_zeros();
/// Slots per bucket: 5 × 12 bytes, in one 64-byte array value.
pub const SLOTS: usize = 5;

/// Expiry unit: 2^24 ns (16.8 ms) of `CLOCK_MONOTONIC`. An expiry is
/// rounded up to it, so the index may enforce a ban up to 17 ms past its
/// end. 32 bits of it reach 2.2 years of uptime; a ban ending later than
/// that stays in BANS only.
pub const UNIT_SHIFT: u32 = 24;

/// `until` of a permanent ban. 0 marks an empty slot.
const PERMANENT: u32 = u32::MAX;

/// A slot stops matching at this many hits, and its address's packets go to
/// BANS, whose counter is 64-bit: a 32-bit count then never wraps. Only a
/// source that sent two billion packets into its ban gets there, and one
/// source is a cache-hot lookup wherever it is counted.
pub const HITS_CAP: u32 = 1 << 31;

/// One ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// The IPv4 address, its four bytes read as a native `u32` (`addr_word`).
    pub addr: u32,
    /// Expiry in units of 2^UNIT_SHIFT ns; `PERMANENT`; 0 = empty slot.
    pub until: u32,
    /// Packets dropped through this slot, added atomically by the kernel.
    pub hits: u32,
}

/// A bucket as the map stores it: one 64-byte line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub slots: [Slot; SLOTS],
    /// Non-zero: at least one IPv4 ban of this bucket is in BANS only, so a
    /// miss here must ask BANS. Set by writers when a ban does not fit;
    /// cleared only by a rebuild, which knows every ban.
    pub spill: u32,
}

/// The bucket an IPv4 address goes in: multiplicative hashing, one
/// multiply in the kernel. Unseeded on purpose: an attacker who gets many
/// colliding addresses banned only sends the overflow to BANS, the path
/// every ban took before the index, and cannot evict anyone else's slot.
#[inline(always)]
pub const fn bucket_of(addr: u32) -> u32 {
    addr.wrapping_mul(0x9E37_79B1) >> (32 - BUCKET_BITS)
}

/// The four bytes of an IPv4 address as the index reads them.
#[inline(always)]
pub const fn addr_word(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

impl Slot {
    /// The slot for `addr` banned until `expires_ns` (0 = permanent);
    /// `None` when the expiry is past what a slot can hold.
    pub const fn new(addr: u32, expires_ns: u64) -> Option<Self> {
        match until_of(expires_ns) {
            Some(until) => Some(Self {
                addr,
                until,
                hits: 0,
            }),
            None => None,
        }
    }

    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.until == 0
    }

    /// A permanent slot is in force at any time: no clock needed.
    #[inline(always)]
    pub const fn is_permanent(&self) -> bool {
        self.until == PERMANENT
    }

    /// Whether the slot is in force at monotonic time `now_ns`.
    #[inline(always)]
    pub const fn active_at(&self, now_ns: u64) -> bool {
        self.until == PERMANENT || self.until as u64 > now_ns >> UNIT_SHIFT
    }
}

/// `expires_ns` (0 = permanent) in index units, rounded up; `None` past
/// the last unit a slot can hold.
pub const fn until_of(expires_ns: u64) -> Option<u32> {
    if expires_ns == 0 {
        return Some(PERMANENT);
    }
    let units = expires_ns.div_ceil(1 << UNIT_SHIFT);
    if units >= PERMANENT as u64 {
        None
    } else {
        // expires_ns > 0, so units >= 1: never the empty mark.
        Some(units as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_one_line() {
        assert_eq!(core::mem::size_of::<Bucket>(), 64);
        assert_eq!(1u32 << BUCKET_BITS, BUCKETS);
    }

    #[test]
    fn slots_ban_until_their_expiry_rounded_up() {
        let a = addr_word([198, 51, 100, 7]);
        let s = Slot::new(a, 10 << UNIT_SHIFT).unwrap();
        assert!(s.active_at(0));
        assert!(s.active_at((10 << UNIT_SHIFT) - 1));
        assert!(!s.active_at(10 << UNIT_SHIFT));
        let s = Slot::new(a, (3 << UNIT_SHIFT) + 1).unwrap();
        assert!(s.active_at((3 << UNIT_SHIFT) + 1));
        assert!(!s.active_at(4 << UNIT_SHIFT));
        let forever = Slot::new(a, 0).unwrap();
        assert!(forever.active_at(u64::MAX));
        assert!(!forever.is_empty());
        assert!(!Slot::new(a, 1).unwrap().is_empty());
        // 2.2 years of uptime and more: BANS only.
        assert!(Slot::new(a, u64::from(u32::MAX) << UNIT_SHIFT).is_none());
        assert!(Slot::new(a, (u64::from(u32::MAX) - 1) << UNIT_SHIFT).is_some());
    }

    #[test]
    fn an_empty_slot_is_not_a_ban_on_0_0_0_0() {
        let empty = Slot::default();
        assert!(empty.is_empty());
        assert_eq!(empty.addr, addr_word([0, 0, 0, 0]));
        assert!(!Slot::new(0, 0).unwrap().is_empty());
    }

    #[test]
    fn consecutive_addresses_spread_over_the_buckets() {
        let mut load = vec![0u32; BUCKETS as usize];
        for i in 0..100_000u32 {
            let a = u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i;
            load[bucket_of(addr_word(a.to_be_bytes())) as usize] += 1;
        }
        let over: u32 = load.iter().map(|&n| n.saturating_sub(SLOTS as u32)).sum();
        // Spread as random addresses would be (Poisson, mean 3.05: about
        // 4% over five), or better.
        assert!(over < 100_000 / 20, "{over} bans past full buckets");
    }
}
