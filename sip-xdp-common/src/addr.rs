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
    fn v6_keys_are_verbatim() {
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let k = key_of(ip);
        assert!(!is_v4_mapped(&k));
        assert_eq!(ip_of(&k), ip);
        assert_eq!(trie_prefix_len(ip, 48), 48);
    }
}
