//! One key type for IPv4 and IPv6: a 16-byte IPv6 address, with IPv4 stored
//! IPv4-mapped (`::ffff:a.b.c.d`). One map then serves both families, and an
//! IPv4 CIDR `a.b.c.d/n` is the IPv6 prefix `::ffff:a.b.c.d/(96 + n)`.

/// Address as stored in every sip-xdp map key (network byte order).
pub type IpKey = [u8; 16];

/// Prefix length that the IPv4-mapped range itself occupies.
pub const V4_MAPPED_PREFIX: u32 = 96;

/// The IPv4-mapped IPv6 form of an IPv4 address given in network order.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> IpKey {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// True when the key holds an IPv4 address.
#[inline(always)]
pub fn is_v4_mapped(k: &IpKey) -> bool {
    k[..10].iter().all(|b| *b == 0) && k[10] == 0xff && k[11] == 0xff
}

/// The key of the prefix `k` falls in: the first `v4_len` bits of an IPv4
/// address or `v6_len` bits of an IPv6 one kept, the rest cleared. What
/// sources are counted, limited and banned by: an IPv6 host owns a whole
/// /64, and rotating through it must not make it a new source per packet.
/// A length of 0 or past the family's width means the whole address.
#[inline(always)]
pub fn prefix_key(k: &IpKey, v4_len: u32, v6_len: u32) -> IpKey {
    Words::of(k).prefix(v4_len, v6_len).key()
}

/// A key as two numbers, its first and last eight bytes read big-endian:
/// what the program's per-packet arithmetic works on. A key is an array
/// of bytes, which the BPF target reads and writes one byte at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Words {
    pub hi: u64,
    pub lo: u64,
}

impl Words {
    #[inline(always)]
    pub fn of(k: &IpKey) -> Self {
        Words {
            hi: u64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]),
            lo: u64::from_be_bytes([k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15]]),
        }
    }

    /// From the key's halves as loaded from memory (native order).
    #[inline(always)]
    pub const fn of_native(hi: u64, lo: u64) -> Self {
        Words {
            hi: u64::from_be(hi),
            lo: u64::from_be(lo),
        }
    }

    #[inline(always)]
    pub fn key(self) -> IpKey {
        let (h, l) = (self.hi.to_be_bytes(), self.lo.to_be_bytes());
        [
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5],
            l[6], l[7],
        ]
    }

    /// True when the key holds an IPv4 address (`::ffff:a.b.c.d`).
    #[inline(always)]
    pub const fn is_v4_mapped(self) -> bool {
        self.hi == 0 && self.lo >> 32 == 0xffff
    }

    /// The prefix the key falls in (`prefix_key`).
    #[inline(always)]
    pub const fn prefix(self, v4_len: u32, v6_len: u32) -> Self {
        let len = if self.is_v4_mapped() {
            if v4_len == 0 || v4_len >= 32 {
                return self;
            }
            V4_MAPPED_PREFIX + v4_len
        } else {
            if v6_len == 0 || v6_len >= 128 {
                return self;
            }
            v6_len
        };
        if len >= 64 {
            // len < 128 here: the shift is 0..=63.
            Words {
                hi: self.hi,
                lo: self.lo & !(u64::MAX >> (len - 64)),
            }
        } else {
            Words {
                hi: self.hi & !(u64::MAX >> len),
                lo: 0,
            }
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
mod host {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;

    /// Map key of an address.
    pub fn key_of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => v4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// Address of a map key; IPv4-mapped keys come back as IPv4.
    pub fn ip_of(k: &IpKey) -> IpAddr {
        let v6 = Ipv6Addr::from(*k);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }

    /// Trie prefix length of a CIDR of the given family.
    pub fn trie_prefix_len(ip: IpAddr, len: u8) -> u32 {
        match ip {
            IpAddr::V4(_) => V4_MAPPED_PREFIX + u32::from(len),
            IpAddr::V6(_) => u32::from(len),
        }
    }
}

#[cfg(not(target_arch = "bpf"))]
pub use host::*;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn v4_round_trips_through_mapped_key() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let k = key_of(ip);
        assert!(is_v4_mapped(&k));
        assert_eq!(&k[12..], &[203, 0, 113, 7]);
        assert_eq!(ip_of(&k), ip);
        assert_eq!(trie_prefix_len(ip, 24), 120);
    }

    #[test]
    fn prefixes_clear_the_host_bits() {
        let p =
            |ip: &str, v4: u32, v6: u32| ip_of(&prefix_key(&key_of(ip.parse().unwrap()), v4, v6));
        assert_eq!(
            p("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 32, 64).to_string(),
            "2001:db8:1:2::"
        );
        assert_eq!(
            p("2001:db8:1:2ff::9", 32, 56).to_string(),
            "2001:db8:1:200::"
        );
        assert_eq!(
            p("2001:db8:1:2:8000::9", 32, 65).to_string(),
            "2001:db8:1:2:8000::"
        );
        assert_eq!(p("2001:db8:ffff::1", 32, 33).to_string(), "2001:db8:8000::");
        assert_eq!(p("2001:db8::7", 32, 128).to_string(), "2001:db8::7");
        assert_eq!(p("2001:db8::7", 32, 0).to_string(), "2001:db8::7");
        // IPv4 stays IPv4, and its own length applies.
        assert_eq!(p("203.0.113.77", 32, 64).to_string(), "203.0.113.77");
        assert_eq!(p("203.0.113.77", 24, 64).to_string(), "203.0.113.0");
        assert_eq!(p("203.0.113.77", 0, 64).to_string(), "203.0.113.77");
        assert_eq!(p("198.51.100.255", 31, 64).to_string(), "198.51.100.254");
    }

    #[test]
    fn v6_keys_are_verbatim() {
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let k = key_of(ip);
        assert!(!is_v4_mapped(&k));
        assert_eq!(ip_of(&k), ip);
        assert_eq!(trie_prefix_len(ip, 48), 48);
    }
}
