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
    let len = if is_v4_mapped(k) {
        if v4_len == 0 || v4_len >= 32 {
            return *k;
        }
        V4_MAPPED_PREFIX + v4_len
    } else {
        if v6_len == 0 || v6_len >= 128 {
            return *k;
        }
        v6_len
    };
    let hi = u64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
    let lo = u64::from_be_bytes([k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15]]);
    let (hi, lo) = if len >= 64 {
        // len < 128 here: the shift is 0..=63.
        (hi, lo & !(u64::MAX >> (len - 64)))
    } else {
        (hi & !(u64::MAX >> len), 0)
    };
    let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
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
