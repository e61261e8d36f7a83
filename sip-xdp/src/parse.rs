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
        Ok(canonical(net.trunc()))
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address".to_string()))?;
        Ok(canonical(IpNet::from(ip)))
    }
}

/// One form per address: an IPv4-mapped IPv6 address or prefix
/// (`::ffff:198.51.100.10`, as dual-stack sockets report IPv4 peers) is
/// the IPv4 one, so a row, a ban and the allow-list always compare equal.
pub fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// True when the net is a single address (/32 or /128).
pub fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The longest duration accepted anywhere (ten years): past it a ban is
/// a permanent block (give no duration), and the clocks' arithmetic
/// overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// `30s`, `10m`, `1h`, `7d`, `1h30m`, up to ten years.
pub fn parse_duration(input: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(input.trim())
        .map_err(|e| format!("{e} (use e.g. 30s, 10m, 1h, 7d)"))?;
    if d.is_zero() {
        return Err("a ban of zero length would never apply (use e.g. 30s, 10m, 1h)".into());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{:?} is longer than ten years (3650d): for a permanent block give no duration",
            input.trim()
        ));
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

/// A `blocked_ips.source` a caller of `block` may give: `manual`, or a
/// feed's name.
pub fn parse_source(s: &str) -> Result<String, String> {
    let ok_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 24
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    match s {
        "manual" | "fail2ban" | "crowdsec" | "apiban" | "geo" => Ok(s.to_string()),
        _ if s.strip_prefix("feed:").is_some_and(ok_name) => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?} is not a source: manual, fail2ban, crowdsec, apiban, geo or feed:NAME (a-z, 0-9, - and _)"
        )),
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
    fn ipv4_mapped_forms_are_ipv4() {
        assert_eq!(
            parse_net("::ffff:198.51.100.10").unwrap().to_string(),
            "198.51.100.10/32"
        );
        assert_eq!(
            parse_net("::FFFF:198.51.100.7/120").unwrap().to_string(),
            "198.51.100.0/24"
        );
        // The whole mapped range is all of IPv4; wider, or not mapped:
        // left as they are.
        assert_eq!(parse_net("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(parse_net("::ffff:0:0/80").unwrap().to_string(), "::/80");
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn durations_past_ten_years_are_refused() {
        let e = parse_duration("999999999d").unwrap_err();
        assert!(e.contains("longer than ten years"), "{e}");
        assert!(parse_duration("3650d").is_ok());
        assert!(parse_duration("3651d").is_err());
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
