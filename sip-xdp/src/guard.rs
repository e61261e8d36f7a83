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

#[derive(Clone, Debug)]
pub struct Guard {
    own: Vec<IpAddr>,
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
        Self { own }
    }

    pub fn with_addresses(own: Vec<IpAddr>) -> Self {
        Self { own }
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
}
