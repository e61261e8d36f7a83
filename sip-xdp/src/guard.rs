//! Safety rails: addresses sip-xdp refuses to block whatever it is told.

use std::net::IpAddr;

use ipnet::IpNet;

/// Ranges whose blocking would cut the host off from itself.
const PROTECTED: [&str; 5] = [
    "127.0.0.0/8",
    "::1/128",
    "::ffff:127.0.0.0/104",
    "0.0.0.0/32",
    "::/128",
];

/// Link-local ranges: a ban is never narrowed into them.
const LINK_LOCAL: [&str; 2] = ["fe80::/10", "169.254.0.0/16"];

/// The widest prefix a list sip-xdp reads but does not write (a threat
/// feed, a country policy's `block`, the allow-list, the trusted peers'
/// `address` table) may hold: a `0.0.0.0/1` typed into a feed, or an
/// allow-list row with mask 0, would otherwise block or allow half the
/// Internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widest {
    pub v4: u8,
    pub v6: u8,
}

impl Default for Widest {
    /// A /8 is the widest IPv4 block any one holder has; a /16 is wider
    /// than any IPv6 allocation to one network.
    fn default() -> Self {
        Self { v4: 8, v6: 16 }
    }
}

impl Widest {
    /// Why `net` is too wide, if it is. The kernel keys IPv4 as
    /// IPv4-mapped IPv6 (`::ffff:0:0/96`): an IPv6 entry shorter than /96
    /// that holds that range (`::/16`, an `address` row of
    /// `::ffff:198.51.100.7` with mask 32) is all of IPv4, and is judged so.
    pub fn refusal(&self, net: &IpNet) -> Option<String> {
        let mapped: IpNet = "::ffff:0:0/96".parse().expect("valid constant");
        if matches!(net, IpNet::V6(_)) && net.prefix_len() < 96 && net.contains(&mapped) {
            return Some(format!(
                "{net} holds every IPv4 address ({mapped}), wider than /{} (rails.min_prefix_v4)",
                self.v4
            ));
        }
        let (min, field) = match net {
            IpNet::V4(_) => (self.v4, "min_prefix_v4"),
            IpNet::V6(_) => (self.v6, "min_prefix_v6"),
        };
        (net.prefix_len() < min).then(|| format!("{net} is wider than /{min} (rails.{field})"))
    }
}

#[derive(Clone, Debug)]
pub struct Guard {
    own: Vec<IpAddr>,
    widest: Widest,
}

impl Guard {
    /// Reads this network namespace's own addresses.
    pub fn for_this_host() -> Self {
        let own = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|s| {
                        if let Some(v4) = s.as_sockaddr_in() {
                            Some(IpAddr::V4(v4.ip()))
                        } else {
                            s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            own,
            widest: Widest::default(),
        }
    }

    pub fn with_addresses(own: Vec<IpAddr>) -> Self {
        Self {
            own,
            widest: Widest::default(),
        }
    }

    /// The same rails with `widest` as the widest list entry taken.
    pub fn with_widest(mut self, widest: Widest) -> Self {
        self.widest = widest;
        self
    }

    /// Why a list entry sip-xdp does not write itself (a feed's, the
    /// allow-list's) is refused as too wide, if it is.
    pub fn too_wide(&self, net: &IpNet) -> Option<String> {
        self.widest.refusal(net)
    }

    /// `net` as prefixes of the widest length taken (itself when it is no
    /// wider).
    pub fn split(&self, net: &IpNet) -> Vec<IpNet> {
        let min = match net {
            IpNet::V4(_) => self.widest.v4,
            IpNet::V6(_) => self.widest.v6,
        };
        net.subnets(min.max(net.prefix_len()))
            .map(|s| s.collect())
            .unwrap_or_else(|_| vec![*net])
    }

    /// `seen` alone, where `net` (what a detector would ban) holds one of
    /// this host's addresses: a neighbour in the host's own prefix (a
    /// hosting provider's shared /64) is banned without the host. Only the
    /// address itself: a wider part of the host's prefix would let one
    /// forged packet ban the host's neighbours (its upstream, its media
    /// servers) by the half. `None` when `net` needs no narrowing, when
    /// `seen` lies outside it, is the host's own, is link-local (the
    /// router's, on most links), or a protected range refuses `net`.
    pub fn narrowed(&self, net: &IpNet, seen: IpAddr) -> Option<IpNet> {
        let host = IpNet::from(seen);
        if !net.contains(&seen) || self.refusal(&host).is_some() {
            return None;
        }
        if PROTECTED
            .iter()
            .chain(&LINK_LOCAL)
            .any(|p| overlaps(net, &p.parse().expect("valid constant")))
        {
            return None;
        }
        self.own.iter().any(|a| net.contains(a)).then_some(host)
    }

    /// Why `net` must not be blocked, if it must not.
    pub fn refusal(&self, net: &IpNet) -> Option<String> {
        for p in PROTECTED {
            let p: IpNet = p.parse().expect("valid constant");
            if overlaps(net, &p) {
                return Some(format!("it covers {p} (loopback or unspecified)"));
            }
        }
        self.own
            .iter()
            .find(|a| net.contains(*a))
            .map(|a| format!("it covers {a}, an address of this host"))
    }
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        crate::parse::parse_net(s).unwrap()
    }

    #[test]
    fn refuses_loopback_unspecified_and_own() {
        let g = Guard::with_addresses(vec!["198.51.100.1".parse().unwrap()]);
        assert!(g.refusal(&net("127.0.0.1")).is_some());
        assert!(g.refusal(&net("::1")).is_some());
        assert!(g.refusal(&net("0.0.0.0/0")).is_some());
        assert!(g.refusal(&net("::/0")).is_some());
        assert!(g.refusal(&net("::ffff:127.0.0.1")).is_some());
        assert!(g
            .refusal(&net("198.51.100.1"))
            .unwrap()
            .contains("this host"));
        assert!(g.refusal(&net("198.51.100.0/24")).is_some());
        assert!(g.refusal(&net("198.51.100.2")).is_none());
        assert!(g.refusal(&net("203.0.113.0/24")).is_none());
        assert!(g.refusal(&net("2001:db8::/32")).is_none());
    }

    #[test]
    fn list_entries_wider_than_the_rails_are_refused() {
        let g = Guard::with_addresses(vec![]);
        for wide in [
            "128.0.0.0/1",
            "0.0.0.0/0",
            "10.0.0.0/7",
            "2000::/3",
            "2001::/15",
            // They hold `::ffff:0:0/96`: all of IPv4.
            "::/16",
            "::/32",
            "::ffff:0:0/95",
        ] {
            let why = g.too_wide(&net(wide)).unwrap_or_default();
            assert!(why.contains("wider than /"), "{wide}: {why:?}");
        }
        for ok in ["10.0.0.0/8", "203.0.113.7", "2001:db8::/16", "2001:db8::1"] {
            assert_eq!(g.too_wide(&net(ok)), None, "{ok}");
        }
        let strict = g.with_widest(Widest { v4: 16, v6: 32 });
        assert!(strict
            .too_wide(&net("10.0.0.0/12"))
            .unwrap()
            .contains("rails.min_prefix_v4"));
        assert!(strict
            .too_wide(&net("2001:db8::/31"))
            .unwrap()
            .contains("rails.min_prefix_v6"));
        assert_eq!(strict.too_wide(&net("10.1.0.0/16")), None);
    }

    #[test]
    fn a_neighbour_in_the_hosts_own_prefix_is_narrowed_to_its_address_alone() {
        let g = Guard::with_addresses(vec![
            "2001:db8:5::1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        ]);
        let seen = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            g.narrowed(&net("2001:db8:5::/64"), seen("2001:db8:5::2")),
            Some(net("2001:db8:5::2/128"))
        );
        // Never a wider part of the host's prefix, which one forged packet
        // could aim at the host's neighbours.
        assert_eq!(
            g.narrowed(&net("2001:db8:5::/64"), seen("2001:db8:5:0:8000::9")),
            Some(net("2001:db8:5:0:8000::9/128"))
        );
        assert_eq!(
            g.narrowed(&net("198.51.100.0/24"), seen("198.51.100.0")),
            Some(net("198.51.100.0/32"))
        );
        // Link-local: the router's, on most links.
        let ll = Guard::with_addresses(vec!["fe80::5".parse().unwrap()]);
        assert_eq!(ll.narrowed(&net("fe80::/64"), seen("fe80::1")), None);
        // The host itself, a prefix without the host, a source outside.
        assert_eq!(
            g.narrowed(&net("2001:db8:5::/64"), seen("2001:db8:5::1")),
            None
        );
        assert_eq!(
            g.narrowed(&net("2001:db8:6::/64"), seen("2001:db8:6::2")),
            None
        );
        assert_eq!(
            g.narrowed(&net("2001:db8:5::/64"), seen("2001:db8:7::2")),
            None
        );
        // Loopback is never narrowed into.
        let lo = Guard::with_addresses(vec!["127.0.0.1".parse().unwrap()]);
        assert_eq!(lo.narrowed(&net("127.0.0.0/8"), seen("127.0.0.2")), None);
        for n in [
            "2001:db8:5::2/128",
            "2001:db8:5:0:8000::9/128",
            "198.51.100.0/32",
        ] {
            assert!(g.refusal(&net(n)).is_none(), "{n}");
        }
    }
}
