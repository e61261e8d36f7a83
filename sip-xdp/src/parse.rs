//! The text forms of what operators and databases name: an address or a
//! CIDR (parsed, and spelled back), and durations. Shared by the
//! configuration, database rows, the kernel's rails and the command line.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;

use crate::{Error, Result};

/// Parses `ADDR` or `ADDR/LEN`. Host bits below the prefix are cleared
/// (`198.51.100.7/24` means `198.51.100.0/24`) so a rule has one spelling.
pub fn parse_net(input: &str) -> Result<IpNet> {
    let s = input.trim();
    let bad = |why: String| Error::BadAddress {
        input: input.to_string(),
        why,
    };
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_: ipnet::AddrParseError| {
            let (addr, len) = s.split_once('/').unwrap_or((s, ""));
            match addr.parse::<IpAddr>() {
                Err(_) => bad(format!("{addr:?} is not an IPv4 or IPv6 address")),
                Ok(ip) => bad(format!(
                    "prefix length {len:?} is not valid for {} (0-{})",
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                    if ip.is_ipv4() { 32 } else { 128 }
                )),
            }
        })?;
        Ok(net.trunc())
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address".to_string()))?;
        Ok(IpNet::from(ip))
    }
}

/// True when the net is a single address (/32 or /128).
pub fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// `30s`, `10m`, `1h`, `7d`, `1h30m`.
pub fn parse_duration(input: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(input.trim())
        .map_err(|e| format!("{e} (use e.g. 30s, 10m, 1h, 7d)"))?;
    if d.is_zero() {
        return Err("a ban of zero length would never apply (use e.g. 30s, 10m, 1h)".into());
    }
    Ok(d)
}

/// Spelling written to `ip_address`: a bare address for one host (as
/// operators write it by hand), `net/len` for a prefix.
pub fn spelling(net: &IpNet) -> String {
    if is_host(net) {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_cidrs() {
        assert_eq!(
            parse_net("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_net("198.51.100.7/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_net("2001:db8:1::/48").unwrap().to_string(),
            "2001:db8:1::/48"
        );
        assert!(is_host(&parse_net("2001:db8::1").unwrap()));
        assert!(!is_host(&parse_net("2001:db8::/64").unwrap()));
    }

    #[test]
    fn bad_addresses_explain_themselves() {
        let e = parse_net("203.0.113.300").unwrap_err().to_string();
        assert!(e.contains("not an IPv4 or IPv6 address"), "{e}");
        let e = parse_net("203.0.113.0/33").unwrap_err().to_string();
        assert!(
            e.contains("prefix length \"33\" is not valid for IPv4 (0-32)"),
            "{e}"
        );
        let e = parse_net("2001:db8::/129").unwrap_err().to_string();
        assert!(e.contains("IPv6 (0-128)"), "{e}");
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
    }
}
