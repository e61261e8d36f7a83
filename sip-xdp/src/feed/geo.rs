//! Country policy from a MaxMind-format country database (GeoLite2-Country,
//! or ip-location-db's country files): the prefixes of the blocked
//! countries, or with `allow_only` every public prefix outside the allowed
//! ones, as a block-list. Private, reserved and special ranges are never
//! part of it: a LAN peer has no country.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use ipnet::IpNet;
use serde::Deserialize;

/// The two layouts country databases use.
#[derive(Debug, Deserialize)]
struct Record {
    /// ip-location-db: `{"country_code": "DE"}`.
    #[serde(default)]
    country_code: Option<String>,
    /// MaxMind GeoIP2/GeoLite2: `{"country": {"iso_code": "DE"}}`.
    #[serde(default)]
    country: Option<Iso>,
}

#[derive(Debug, Deserialize)]
struct Iso {
    #[serde(default)]
    iso_code: Option<String>,
}

impl Record {
    fn code(self) -> Option<String> {
        self.country_code
            .or(self.country.and_then(|c| c.iso_code))
            .map(|c| c.to_ascii_uppercase())
    }
}

/// Space that belongs to no country: private, shared, loopback, link-local,
/// documentation, multicast, reserved (RFC 6890), and IPv6 outside 2000::/3.
const NOT_PUBLIC_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
];
const PUBLIC_V6: &str = "2000::/3";
const NOT_PUBLIC_V6: &[&str] = &["2001:db8::/32", "2001::/23", "2002::/16"];

/// A country database, opened.
pub struct Db(maxminddb::Reader<Vec<u8>>);

impl Db {
    pub fn open(path: &Path) -> Result<Self, String> {
        maxminddb::Reader::open_readfile(path)
            .map(Db)
            .map_err(|e| format!("opening {}: {e}", path.display()))
    }

    /// The country of `ip`, if the database knows it.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let r = self.0.lookup(ip).ok()?;
        r.decode::<Record>().ok().flatten().and_then(Record::code)
    }

    /// Every network with a country in `codes`, aggregated.
    fn networks_of(&self, codes: &BTreeSet<String>) -> Result<Vec<IpNet>, String> {
        let mut out = Vec::new();
        let all = self
            .0
            .networks(Default::default())
            .map_err(|e| e.to_string())?;
        for item in all {
            let item = item.map_err(|e| e.to_string())?;
            let Some(code) = item
                .decode::<Record>()
                .ok()
                .flatten()
                .and_then(Record::code)
            else {
                continue;
            };
            if !codes.contains(&code) {
                continue;
            }
            let net = item.network().map_err(|e| e.to_string())?;
            if let Ok(n) = IpNet::new(net.network(), net.prefix()) {
                out.push(n);
            }
        }
        Ok(IpNet::aggregate(&out))
    }

    /// The block-list for a policy: the `block` countries' prefixes, or
    /// every public prefix outside the `allow_only` countries.
    pub fn policy(
        &self,
        countries: &BTreeSet<String>,
        allow_only: bool,
    ) -> Result<Vec<IpNet>, String> {
        let nets = self.networks_of(countries)?;
        if !allow_only {
            return Ok(subtract(&nets, &not_public()));
        }
        let universe: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), PUBLIC_V6.parse().unwrap()];
        let mut keep_out = nets;
        keep_out.extend(not_public());
        Ok(subtract(&universe, &IpNet::aggregate(&keep_out)))
    }
}

fn not_public() -> Vec<IpNet> {
    NOT_PUBLIC_V4
        .iter()
        .chain(NOT_PUBLIC_V6)
        .map(|s| s.parse().expect("valid constant"))
        .collect()
}

/// `from` minus `remove`, as the fewest prefixes. Works on address ranges
/// (a sorted sweep per family), then cuts each remaining range into the
/// largest aligned prefixes: linear in the number of prefixes.
pub fn subtract(from: &[IpNet], remove: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for v4 in [true, false] {
        let ranges = |nets: &[IpNet]| -> Vec<(u128, u128)> {
            let mut r: Vec<(u128, u128)> = nets
                .iter()
                .filter(|n| n.addr().is_ipv4() == v4)
                .map(|n| (bits(n.network()), bits(n.broadcast())))
                .collect();
            r.sort_unstable();
            r
        };
        let minus = ranges(remove);
        for (lo, hi) in ranges(from) {
            let mut at = lo;
            for &(rlo, rhi) in minus.iter().filter(|(rlo, rhi)| *rhi >= lo && *rlo <= hi) {
                if rlo > at {
                    cidrs(at, rlo - 1, v4, &mut out);
                }
                at = at.max(rhi.saturating_add(1));
                if rhi >= hi {
                    at = hi.saturating_add(1);
                    break;
                }
            }
            if at <= hi && at >= lo {
                cidrs(at, hi, v4, &mut out);
            }
        }
    }
    IpNet::aggregate(&out)
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The largest aligned prefixes that exactly cover `lo..=hi`.
fn cidrs(mut lo: u128, hi: u128, v4: bool, out: &mut Vec<IpNet>) {
    let width: u32 = if v4 { 32 } else { 128 };
    loop {
        // The biggest block aligned at `lo` that stays within `hi`.
        let mut size = if lo == 0 {
            width
        } else {
            lo.trailing_zeros().min(width)
        };
        while size > 0 && (size == 128 || lo + ((1u128 << size) - 1) > hi) {
            if size == 128 && hi == u128::MAX && lo == 0 {
                break;
            }
            size -= 1;
        }
        let prefix = (width - size) as u8;
        let addr = if v4 {
            IpAddr::V4(std::net::Ipv4Addr::from(lo as u32))
        } else {
            IpAddr::V6(std::net::Ipv6Addr::from(lo))
        };
        if let Ok(n) = IpNet::new(addr, prefix) {
            out.push(n);
        }
        let end = if size == 128 {
            u128::MAX
        } else {
            lo + ((1u128 << size) - 1)
        };
        if end >= hi {
            return;
        }
        lo = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn subtraction_keeps_the_rest_whole() {
        let out = subtract(&nets(&["10.0.0.0/8"]), &nets(&["10.1.0.0/16"]));
        // 10.0/16, 10.2/15, 10.4/14, ..., 10.128/9: 8 prefixes.
        assert_eq!(out.len(), 8);
        assert!(out
            .iter()
            .all(|n| !n.contains(&"10.1.2.3".parse::<IpAddr>().unwrap())));
        assert!(out
            .iter()
            .any(|n| n.contains(&"10.200.0.1".parse::<IpAddr>().unwrap())));
        assert_eq!(
            subtract(&nets(&["10.0.0.0/8"]), &nets(&["0.0.0.0/0"])),
            vec![]
        );
        assert_eq!(
            subtract(&nets(&["10.0.0.0/8"]), &nets(&["11.0.0.0/8"])),
            nets(&["10.0.0.0/8"])
        );
    }
}
