//! Admission in overload: who reaches the SIP server when more SIP
//! arrives from sources off the allow-list than the load mark.
//!
//! In overload a packet passes when its address is proven (verified now:
//! a round trip with the SBC), or remembered (proven within the memory
//! the controller keeps in the database), or when the strangers' share
//! lasts. The share is divided among buckets of source prefixes, hashed
//! with a key drawn at each start, so a storm drawn from a few prefixes
//! spends only its own buckets and a new phone from elsewhere still finds
//! its bucket open; and buckets that offered more than their cap lately (a
//! storm's, from its second window on) share only half of the strangers'
//! share, so the other half stays for quiet prefixes. Nothing here is written per source: a shed packet
//! costs two hint bits (`crate::hints`) and one bucket word, never an
//! insertion an attacker could use to evict what makes known clients
//! recognisable.

use crate::addr::{IpKey, Words};

/// Buckets per CPU: a power of two.
pub const BUCKETS: u32 = 4096;

/// A bucket's word: the window it counts in (bits 32-63), the strangers
/// it offered in that window (16-31, saturating), those admitted (8-15),
/// and its heat (0-7): set when it offered more than its cap in a window,
/// and cooling by one per window after. A bucket with heat is *busy*: a
/// storm's are from their second window on, and stay so while the storm
/// comes back within `HEAT` windows, however it takes turns.
pub type BucketWord = u64;

/// Windows a bucket stays busy after it last offered more than its cap.
pub const HEAT: u64 = 8;

/// The window a time falls in: about a second (2^30 ns).
#[inline(always)]
pub const fn window_of(now_ns: u64) -> u32 {
    (now_ns >> 30) as u32
}

/// One more stranger offered by a bucket holding `word` at `now_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The word with the offer counted, for a stranger shed...
    pub counted: BucketWord,
    /// ...and for one admitted.
    pub admitted: BucketWord,
    /// The bucket's cap for the window is not spent yet.
    pub open: bool,
    /// The bucket offered more than its cap within the last `HEAT`
    /// windows.
    pub busy: bool,
}

/// Counts one more stranger offered by the bucket holding `word` at
/// `now_ns`, with a cap of `cap` per window: what the word becomes if the
/// stranger is shed (`counted`) or admitted (`admitted`), and whether the
/// bucket may still admit one.
#[inline(always)]
pub const fn offer(word: BucketWord, now_ns: u64, cap: u32) -> Offer {
    let window = window_of(now_ns);
    let old_window = (word >> 32) as u32;
    let (offered, taken, heat) = if old_window == window {
        ((word >> 16) & 0xffff, (word >> 8) & 0xff, word & 0xff)
    } else {
        let gone = window.wrapping_sub(old_window) as u64;
        let heat = if gone == 1 && (word >> 16) & 0xffff > cap as u64 {
            HEAT
        } else {
            (word & 0xff).saturating_sub(gone)
        };
        (0, 0, heat)
    };
    let offered = if offered < 0xffff {
        offered + 1
    } else {
        offered
    };
    let cap = if cap > 0xff { 0xff } else { cap as u64 };
    let head = ((window as u64) << 32) | (offered << 16) | heat;
    Offer {
        counted: head | (taken << 8),
        admitted: head | ((taken + 1) << 8),
        open: taken < cap,
        busy: heat > 0,
    }
}

/// The bucket of `src`: its prefix (`v4_len`, `v6_len` bits) hashed with
/// `seed`. The seed keeps an attacker from choosing sources that share a
/// phone's bucket on purpose.
#[inline(always)]
pub fn bucket_of(src: &IpKey, v4_len: u32, v6_len: u32, seed: u64) -> u32 {
    bucket_of_words(Words::of(src), v4_len, v6_len, seed)
}

/// `bucket_of` for a key as numbers (`Words`).
#[inline(always)]
pub const fn bucket_of_words(src: Words, v4_len: u32, v6_len: u32, seed: u64) -> u32 {
    let k = src.prefix(v4_len, v6_len);
    // Two rounds of a multiply-xorshift mix (the finalizer of
    // SplitMix64): every input bit reaches the top bits kept.
    let h = mix(mix(k.hi ^ seed) ^ k.lo);
    (h >> (64 - BUCKETS.trailing_zeros())) as u32
}

/// The finalizer of SplitMix64: every input bit reaches the top bits
/// kept. Also hashes the proof hint's addresses (`crate::hints`).
#[inline(always)]
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::addr::key_of;

    fn key(s: &str) -> IpKey {
        key_of(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn a_bucket_admits_its_cap_per_window_and_a_storms_is_busy_after() {
        let t = 5u64 << 30;
        let mut w = 0;
        for _ in 0..2 {
            let o = offer(w, t + 10, 2);
            assert!(o.open && !o.busy);
            w = o.admitted;
        }
        // Spent: more offers are counted, not admitted.
        for _ in 0..3 {
            let o = offer(w, t + 20, 2);
            assert!(!o.open);
            w = o.counted;
        }
        // The next window: open again, and busy (5 offered, cap 2).
        let o = offer(w, t + (1 << 30), 2);
        assert!(o.open && o.busy);
        // A phone's two packets leave its bucket quiet.
        let mut p = offer(0, t, 2).admitted;
        p = offer(p, t + 1, 2).admitted;
        assert!(!offer(p, t + (1 << 30), 2).busy);
        // A storm taking turns stays busy while it comes back within HEAT
        // windows: two windows away, it is still busy, and cools after.
        let hot = offer(w, t + (1 << 30), 2).counted;
        assert!(offer(hot, t + (3 << 30), 2).busy);
        assert!(offer(hot, t + ((HEAT) << 30), 2).busy);
        assert!(!offer(hot, t + ((HEAT + 1) << 30), 2).busy);
        assert!(!offer(0, t, 0).open, "a cap of 0 admits nobody");
    }

    #[test]
    fn a_prefix_is_one_bucket_and_prefixes_spread() {
        let seed = 0x1234_5678_9abc_def0;
        let b = |s: &str| bucket_of(&key(s), 16, 32, seed);
        assert_eq!(b("100.64.1.2"), b("100.64.250.9"));
        assert_eq!(b("2001:db8:1::1"), b("2001:db8:ffff::2"));
        assert!((0..256u32)
            .map(|i| bucket_of(&key(&format!("100.{i}.0.1")), 16, 32, seed))
            .all(|x| x < BUCKETS));
        // The 256 /16s of a /8 fall into many buckets, as balls into bins.
        let mut seen: Vec<u32> = (0..256u32)
            .map(|i| bucket_of(&key(&format!("100.{i}.0.1")), 16, 32, seed))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 240, "{}", seen.len());
    }

    #[test]
    fn the_seed_moves_the_buckets() {
        let moved = (0..64u32)
            .filter(|i| {
                let k = key(&format!("198.{i}.100.1"));
                bucket_of(&k, 16, 32, 1) != bucket_of(&k, 16, 32, 2)
            })
            .count();
        assert!(moved > 60, "{moved}");
    }
}
