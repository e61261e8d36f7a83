//! From database rows to the rules the kernel enforces. Pure functions: the
//! sync loop feeds them rows and applies what comes out.

use chrono::NaiveDateTime;
use ipnet::IpNet;
use sip_xdp_common::{BanReason, Reason};

/// A block the kernel should enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRule {
    pub id: i64,
    pub net: IpNet,
    pub expires_at: Option<NaiveDateTime>,
    pub reason: BanReason,
}

/// A `blocked_ips` row as the sync keeps it: its rule, or why it cannot
/// be used. Decoded as it streams in: 100k rows held as text would be the
/// controller's largest allocation.
pub type RuleOrBad = Result<BlockRule, BadRow>;

/// Why a row cannot be used; logged once per row id and skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {id} ({table}): {why}")]
pub struct BadRow {
    pub id: i64,
    pub table: &'static str,
    pub why: String,
}

/// The class the kernel keeps for a `source` column value: one of our
/// `Reason` names (what sip-xdp writes), or a name other tools use.
pub fn reason_of(source: &str) -> BanReason {
    Reason::from_source(source).ban_reason()
}

/// The columns of a `blocked_ips` row that make its rule: what the sync
/// reads (the reason's text and the rest stay in the database).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleColumns {
    pub id: i64,
    pub ip_address: String,
    pub source: String,
    pub blocked_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
}

pub fn rule_of(row: &RuleColumns) -> Result<BlockRule, BadRow> {
    let bad = |why: String| BadRow {
        id: row.id,
        table: "blocked_ips",
        why,
    };
    let net = crate::parse::parse_net(&row.ip_address).map_err(|e| bad(e.to_string()))?;
    if let Some(exp) = row.expires_at {
        if exp <= row.blocked_at {
            return Err(bad(format!(
                "expires_at {exp} is not after blocked_at {}",
                row.blocked_at
            )));
        }
    }
    Ok(BlockRule {
        id: row.id,
        net,
        expires_at: row.expires_at,
        reason: reason_of(&row.source),
    })
}

/// A `whitelisted_ips` row's address or prefix.
pub fn allow_net(id: i64, ip_address: &str) -> Result<IpNet, BadRow> {
    crate::parse::parse_net(ip_address).map_err(|e| BadRow {
        id,
        table: "whitelisted_ips",
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn row(ip: &str, expires: Option<&str>) -> RuleColumns {
        RuleColumns {
            id: 7,
            ip_address: ip.into(),
            source: "flood".into(),
            blocked_at: t("2026-11-25 10:00:00"),
            expires_at: expires.map(t),
        }
    }

    #[test]
    fn good_rows_become_rules() {
        let r = rule_of(&row("203.0.113.7", None)).unwrap();
        assert_eq!(r.net.to_string(), "203.0.113.7/32");
        assert_eq!(r.reason, BanReason::Flood);
        let r = rule_of(&row(" 2001:db8::/32 ", Some("2026-11-25 11:00:00"))).unwrap();
        assert_eq!(r.net.to_string(), "2001:db8::/32");
        assert_eq!(r.expires_at, Some(t("2026-11-25 11:00:00")));
    }

    #[test]
    fn bad_rows_say_why() {
        let e = rule_of(&row("203.0.113.300", None)).unwrap_err();
        assert_eq!((e.id, e.table), (7, "blocked_ips"));
        assert!(e.to_string().contains("not an IPv4 or IPv6 address"), "{e}");
        let e = rule_of(&row("198.51.100.0/33", None)).unwrap_err();
        assert!(e.to_string().contains("prefix length"), "{e}");
        let e = rule_of(&row("203.0.113.7", Some("2026-11-25 09:00:00"))).unwrap_err();
        assert!(e.to_string().contains("is not after blocked_at"), "{e}");
        let e = rule_of(&row("", None)).unwrap_err();
        assert!(e.to_string().starts_with("row 7 (blocked_ips)"), "{e}");
    }

    #[test]
    fn sources_map_to_reasons() {
        assert_eq!(reason_of("manual"), BanReason::Manual);
        assert_eq!(reason_of("Scanner"), BanReason::Scanner);
        assert_eq!(reason_of("bruteforce"), BanReason::BruteForce);
        assert_eq!(reason_of("apiban"), BanReason::Feed);
        assert_eq!(reason_of("something-else"), BanReason::Manual);
    }
}
