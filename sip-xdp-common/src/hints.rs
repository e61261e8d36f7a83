//! Hints: bitmaps the XDP program reads before a costly lookup, so that a
//! source no entry can match skips it. A clear bit is a sure "no"; a set
//! bit only means "look". Both are one array word per packet, where the
//! lookups they spare are a walk of the allow-list trie and two hash
//! lookups (`VERIFIED`, `REMEMBERED`): what a spoofed storm's packets
//! would otherwise pay each, in overload, before being shed.
//!
//! - **The allow hint** (`ALLOW_HINT`): a bit per IPv4 /16 (exact) and a
//!   bit per hashed IPv6 /32, set for every allow-list entry that covers
//!   any address there. Only userspace writes it, under the writers' lock,
//!   from the whole trie (`allow_hint`); an IPv6 entry shorter than /32
//!   sets the flag that sends every IPv6 source to the trie.
//! - **The proof hint** (`PROOF_HINT`): a bit per hashed address, set by
//!   the kernel as it verifies an address and by the controller as it
//!   remembers one, and rebuilt by the controller to clear what lapsed.
//!
//! Each map's last word holds its flags. The program ignores a hint whose
//! `BUILT` flag is clear (a map just created, by a first load or an
//! upgrade) and does every lookup, as it would without hints.

use crate::{
    addr::{IpKey, Words},
    admission::mix,
};

/// Bits of the allow hint for IPv4: one per /16.
pub const ALLOW_V4_BITS: u32 = 1 << 16;
/// Bits of the allow hint for IPv6: one per hashed /32.
pub const ALLOW_V6_BITS: u32 = 1 << 16;
/// The allow hint's flag word, after both halves.
pub const ALLOW_HINT_FLAGS: u32 = (ALLOW_V4_BITS + ALLOW_V6_BITS) / 64;
/// Words in the allow hint, its flags included.
pub const ALLOW_HINT_WORDS: u32 = ALLOW_HINT_FLAGS + 1;

/// Bits of the proof hint: with the memory full (262,144 addresses) and
/// every verified address besides, about one in seven stranger's bits is
/// set, and that stranger pays the lookups.
pub const PROOF_BITS: u32 = 1 << 21;
/// The proof hint's flag word, after its bits.
pub const PROOF_HINT_FLAGS: u32 = PROOF_BITS / 64;
/// Words in the proof hint, its flags included.
pub const PROOF_HINT_WORDS: u32 = PROOF_HINT_FLAGS + 1;

/// Flag: the hint was built whole and is kept in step; without it the
/// program does every lookup.
pub const BUILT: u64 = 1;
/// Allow-hint flag: an IPv6 entry is shorter than /32, so every IPv6
/// source asks the trie.
pub const V6_ALWAYS: u64 = 2;

/// One bit of a hint: the word it lives in and its mask there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub word: u32,
    pub mask: u64,
}

impl Slot {
    #[inline(always)]
    const fn of_bit(bit: u32) -> Self {
        Slot {
            word: bit / 64,
            mask: 1 << (bit % 64),
        }
    }
}

/// Where in the allow hint `src` looks: its /16 for IPv4, its hashed /32
/// for IPv6. The second value is true for IPv6 (which `V6_ALWAYS` covers).
#[inline(always)]
pub fn allow_slot(src: &IpKey) -> (Slot, bool) {
    allow_slot_of(Words::of(src))
}

/// `allow_slot` for a key as numbers (`Words`).
#[inline(always)]
pub const fn allow_slot_of(src: Words) -> (Slot, bool) {
    if src.is_v4_mapped() {
        (Slot::of_bit((src.lo >> 16) as u32 & 0xffff), false)
    } else {
        (
            Slot::of_bit(ALLOW_V4_BITS + v6_bit((src.hi >> 32) as u32)),
            true,
        )
    }
}

/// The hashed /32 of an IPv6 address. Unkeyed: an attacker who lands his
/// sources on an allowed /32's bit buys only the trie walk every source
/// paid before hints.
#[inline(always)]
const fn v6_bit(first: u32) -> u32 {
    first.wrapping_mul(0x9e37_79b1) >> 16
}

/// Where in the proof hint `src` looks. Unkeyed, for the same reason as
/// `allow_slot`: a chosen collision costs the lookups, never admission.
#[inline(always)]
pub fn proof_slot(src: &IpKey) -> Slot {
    proof_slot_of(Words::of(src))
}

/// `proof_slot` for a key as numbers (`Words`).
#[inline(always)]
pub const fn proof_slot_of(src: Words) -> Slot {
    let h = mix(src.hi ^ mix(src.lo));
    Slot::of_bit((h >> (64 - PROOF_BITS.trailing_zeros())) as u32)
}

/// What a hint says of a source, given its flag word and the word its
/// slot points at: whether the lookup it guards must run.
#[inline(always)]
pub const fn must_look(flags: u64, word: u64, slot: Slot, v6: bool) -> bool {
    flags & BUILT == 0 || (v6 && flags & V6_ALWAYS != 0) || word & slot.mask != 0
}

#[cfg(not(target_arch = "bpf"))]
mod host {
    use super::*;
    use crate::addr::V4_MAPPED_PREFIX;

    /// The allow hint for a trie holding `entries` (key, prefix length in
    /// the trie's 128 bits), flags included and `BUILT` set.
    pub fn allow_hint(entries: impl IntoIterator<Item = (IpKey, u32)>) -> Vec<u64> {
        let mut words = vec![0u64; ALLOW_HINT_WORDS as usize];
        let mut flags = BUILT;
        for (key, len) in entries {
            let len = len.min(128);
            for bit in v4_bits(&key, len) {
                let s = Slot::of_bit(bit);
                words[s.word as usize] |= s.mask;
            }
            if covers_v6(&key, len) {
                if len < 32 {
                    flags |= V6_ALWAYS;
                } else {
                    let first = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
                    let s = Slot::of_bit(ALLOW_V4_BITS + v6_bit(first));
                    words[s.word as usize] |= s.mask;
                }
            }
        }
        words[ALLOW_HINT_FLAGS as usize] = flags;
        words
    }

    /// The /16 bits of the IPv4 addresses an entry covers: none unless its
    /// first bits are the IPv4-mapped prefix's.
    fn v4_bits(key: &IpKey, len: u32) -> std::ops::Range<u32> {
        let mapped = crate::addr::v4_mapped([0; 4]);
        if !same_prefix(key, &mapped, len.min(V4_MAPPED_PREFIX)) {
            return 0..0;
        }
        let v4_len = len.saturating_sub(V4_MAPPED_PREFIX);
        let net16 = u32::from(key[12]) << 8 | u32::from(key[13]);
        if v4_len >= 16 {
            net16..net16 + 1
        } else {
            let span = 1u32 << (16 - v4_len);
            let first = net16 & !(span - 1);
            first..first + span
        }
    }

    /// Whether an entry covers an address outside the IPv4-mapped range.
    fn covers_v6(key: &IpKey, len: u32) -> bool {
        len < V4_MAPPED_PREFIX || !crate::addr::is_v4_mapped(key)
    }

    /// Whether the first `len` bits of `a` and `b` agree.
    fn same_prefix(a: &IpKey, b: &IpKey, len: u32) -> bool {
        let (a, b) = (u128::from_be_bytes(*a), u128::from_be_bytes(*b));
        len == 0 || (a ^ b) >> (128 - len) == 0
    }

    /// The proof hint for `addresses`, flags included and `BUILT` set.
    pub fn proof_hint<'a>(addresses: impl IntoIterator<Item = &'a IpKey>) -> Vec<u64> {
        let mut words = vec![0u64; PROOF_HINT_WORDS as usize];
        for a in addresses {
            let s = proof_slot(a);
            words[s.word as usize] |= s.mask;
        }
        words[PROOF_HINT_FLAGS as usize] = BUILT;
        words
    }

    /// What the program decides for `src` against a whole allow hint.
    pub fn allow_must_look(words: &[u64], src: &IpKey) -> bool {
        let (s, v6) = allow_slot(src);
        must_look(
            words[ALLOW_HINT_FLAGS as usize],
            words[s.word as usize],
            s,
            v6,
        )
    }

    /// What the program decides for `src` against a whole proof hint.
    pub fn proof_must_look(words: &[u64], src: &IpKey) -> bool {
        let s = proof_slot(src);
        must_look(
            words[PROOF_HINT_FLAGS as usize],
            words[s.word as usize],
            s,
            false,
        )
    }
}

#[cfg(not(target_arch = "bpf"))]
pub use host::{allow_hint, allow_must_look, proof_hint, proof_must_look};

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::addr::{key_of, trie_prefix_len};

    fn entry(net: &str) -> (IpKey, u32) {
        let (a, l) = net.split_once('/').unwrap();
        let a: IpAddr = a.parse().unwrap();
        let l: u8 = l.parse().unwrap();
        (key_of(a), trie_prefix_len(a, l))
    }

    fn key(s: &str) -> IpKey {
        key_of(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn an_allow_entry_makes_every_address_it_covers_look() {
        let words = allow_hint([
            entry("203.0.113.0/24"),
            entry("100.64.0.0/10"),
            entry("2001:db8:5::/48"),
        ]);
        for a in [
            "203.0.113.7",
            "100.64.0.1",
            "100.127.255.254",
            "2001:db8:5::1",
        ] {
            assert!(allow_must_look(&words, &key(a)), "{a}");
        }
        // Another /16, and outside the /10.
        assert!(!allow_must_look(&words, &key("203.1.113.7")));
        assert!(!allow_must_look(&words, &key("100.128.0.1")));
        assert!(!allow_must_look(&words, &key("198.51.100.1")));
    }

    #[test]
    fn a_wide_ipv6_entry_sends_every_ipv6_source_to_the_trie() {
        let narrow = allow_hint([entry("2001:db8::/32")]);
        assert!(!allow_must_look(&narrow, &key("2001:db9::1")));
        let wide = allow_hint([entry("2000::/3")]);
        assert!(allow_must_look(&wide, &key("2001:db9::1")));
        assert!(allow_must_look(&wide, &key("3fff::1")));
        // IPv4 is apart: the IPv6 entry covers none of it.
        assert!(!allow_must_look(&wide, &key("198.51.100.1")));
    }

    #[test]
    fn an_entry_over_the_mapped_range_covers_ipv4_too() {
        let words = allow_hint([entry("::/0")]);
        assert!(allow_must_look(&words, &key("198.51.100.1")));
        assert!(allow_must_look(&words, &key("2001:db8::1")));
        let words = allow_hint([entry("0.0.0.0/0")]);
        assert!(allow_must_look(&words, &key("198.51.100.1")));
        assert!(!allow_must_look(&words, &key("2001:db8::1")));
    }

    #[test]
    fn a_hint_not_built_makes_everyone_look() {
        let mut words = allow_hint([]);
        assert!(!allow_must_look(&words, &key("198.51.100.1")));
        words[ALLOW_HINT_FLAGS as usize] = 0;
        assert!(allow_must_look(&words, &key("198.51.100.1")));
        assert!(allow_must_look(&words, &key("2001:db8::1")));
        let mut proofs = proof_hint(&[]);
        assert!(!proof_must_look(&proofs, &key("198.51.100.1")));
        proofs[PROOF_HINT_FLAGS as usize] = 0;
        assert!(proof_must_look(&proofs, &key("198.51.100.1")));
    }

    #[test]
    fn a_proven_address_looks_and_most_others_do_not() {
        let proven: Vec<IpKey> = (0..1000u32)
            .map(|i| crate::addr::v4_mapped((0x6440_0000 + i).to_be_bytes()))
            .collect();
        let words = proof_hint(&proven);
        assert!(proven.iter().all(|a| proof_must_look(&words, a)));
        let strangers = (0..100_000u32)
            .map(|i| crate::addr::v4_mapped((0x0a00_0000 + i).to_be_bytes()))
            .filter(|a| proof_must_look(&words, a))
            .count();
        // 1000 bits of 2^21 set: about 48 of 100,000 strangers look.
        assert!(strangers < 200, "{strangers} strangers look");
    }
}
