//! Admission in overload: who reaches the SIP server when more SIP
//! arrives from sources off the allow-list than the load mark.
//!
//! In overload a packet passes when its address is proven (verified now:
//! a round trip with the SBC), or remembered (proven within the memory
//! the controller keeps in the database), or when the strangers' share
//! lasts. The share is divided among buckets of source prefixes, hashed
//! with a key drawn at each start, so a storm drawn from a few prefixes
//! spends only its own buckets and a new phone from elsewhere still finds
//! its bucket open. Nothing here is written per source: a shed packet
//! costs the table lookups and one bucket word, never an insertion an
//! attacker could use to evict what makes known clients recognisable.

use crate::addr::{prefix_key, IpKey};

/// Buckets per CPU: a power of two.
pub const BUCKETS: u32 = 4096;

/// A bucket's word: the window it counts in (high half) and the
/// strangers admitted from it in that window (low half).
pub type BucketWord = u64;

/// The window a time falls in: about a second (2^30 ns).
#[inline(always)]
pub const fn window_of(now_ns: u64) -> u32 {
    (now_ns >> 30) as u32
}

/// Admits one more stranger into a bucket holding `word` at `now_ns`,
/// when fewer than `cap` came from it in this window: the new word, or
/// `None` when the bucket's share is spent.
#[inline(always)]
pub const fn take(word: BucketWord, now_ns: u64, cap: u32) -> Option<BucketWord> {
    let window = window_of(now_ns);
    let taken = if (word >> 32) as u32 == window {
        word as u32
    } else {
        0
    };
    if taken >= cap {
        None
    } else {
        Some(((window as u64) << 32) | (taken as u64 + 1))
    }
}

/// The bucket of `src`: its prefix (`v4_len`, `v6_len` bits) hashed with
/// `seed`. The seed keeps an attacker from choosing sources that share a
/// phone's bucket on purpose.
#[inline(always)]
pub fn bucket_of(src: &IpKey, v4_len: u32, v6_len: u32, seed: u64) -> u32 {
    let k = prefix_key(src, v4_len, v6_len);
    let hi = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
    let lo = u64::from_ne_bytes([k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15]]);
    // Two rounds of a multiply-xorshift mix (the finalizer of
    // SplitMix64): every input bit reaches the top bits kept.
    let mut h = hi ^ seed;
    h = mix(h);
    h = mix(h ^ lo);
    (h >> (64 - BUCKETS.trailing_zeros())) as u32
}

#[inline(always)]
const fn mix(mut z: u64) -> u64 {
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
    fn a_bucket_takes_its_cap_per_window_then_opens_again() {
        let t = 5u64 << 30;
        let mut w = 0;
        for _ in 0..3 {
            w = take(w, t + 10, 3).expect("under the cap");
        }
        assert_eq!(take(w, t + 20, 3), None);
        // The next window starts from nothing.
        let w = take(w, t + (1 << 30), 3).unwrap();
        assert_eq!(w & 0xffff_ffff, 1);
        assert_eq!(take(0, t, 0), None, "a cap of 0 admits nobody");
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
