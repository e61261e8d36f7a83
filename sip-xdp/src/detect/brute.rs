//! Brute force from the SIP server's own records, like fail2ban: rows of
//! `failed_registrations` and `door_knock_attempts` (as OpenSIPS scripts
//! write them); `maxretry` failures from one address within `findtime` ban
//! it for `bantime`. Windows run on the rows' own attempt times, so a
//! restarted controller that re-reads the last `findtime` of rows reaches
//! the same verdicts.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use chrono::NaiveDateTime;
use serde_json::json;

use super::{settings, Detection, Reason};

/// One failed attempt, from either table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The source's prefix, which failures are counted by.
    pub ip: IpAddr,
    /// The address the row names.
    pub seen: IpAddr,
    pub at: NaiveDateTime,
    pub table: &'static str,
    pub username: Option<String>,
    pub user_agent: Option<String>,
    pub response_code: Option<i32>,
}

const EVIDENCE: usize = 5;

/// Sources with failures in the window; see `observe`.
const MAX_TRACKED: usize = 100_000;

pub struct BruteForce {
    cfg: settings::BruteForce,
    fails: HashMap<IpAddr, VecDeque<Failure>>,
}

impl BruteForce {
    pub fn new(cfg: settings::BruteForce) -> Self {
        Self {
            cfg,
            fails: HashMap::new(),
        }
    }

    pub fn set(&mut self, cfg: settings::BruteForce) {
        self.cfg = cfg;
    }

    pub fn observe(&mut self, f: Failure) -> Option<Detection> {
        if !self.cfg.enabled || !self.cfg.database {
            return None;
        }
        let findtime = chrono::Duration::from_std(self.cfg.findtime).ok()?;
        let ip = f.ip;
        // Forged REGISTERs make failure rows for any address: a source
        // that has not failed within `findtime` of the newest row is
        // forgotten, and past the cap new sources wait.
        if self.fails.len() >= MAX_TRACKED && !self.fails.contains_key(&ip) {
            let newest = f.at;
            self.fails
                .retain(|_, q| q.back().is_some_and(|x| x.at > newest - findtime));
            if self.fails.len() >= MAX_TRACKED {
                return None;
            }
        }
        let q = self.fails.entry(ip).or_default();
        let at = f.at;
        // Rows arrive by id, which is nearly but not exactly time order.
        q.push_back(f);
        q.retain(|x| x.at > at - findtime && x.at <= at + findtime);
        let in_window = q.iter().filter(|x| x.at > at - findtime).count() as u64;
        if in_window < self.cfg.maxretry {
            return None;
        }
        let q = self.fails.remove(&ip)?;
        let last = q.back()?;
        let mut users: Vec<&str> = q.iter().filter_map(|x| x.username.as_deref()).collect();
        users.sort_unstable();
        users.dedup();
        let mut tables: Vec<&str> = q.iter().map(|x| x.table).collect();
        tables.sort_unstable();
        tables.dedup();
        Some(Detection {
            ip: last.ip,
            // The address to narrow a ban to in the host's own prefix: only
            // when every failure came from it, or the one who sent the last
            // (forged) failure would take the ban for the rest.
            seen: q.iter().all(|x| x.seen == last.seen).then_some(last.seen),
            reason: Reason::BruteForce,
            base_ban: self.cfg.bantime,
            count: in_window,
            limit: self.cfg.maxretry,
            window: self.cfg.findtime,
            details: json!({
                "failures": in_window,
                "maxretry": self.cfg.maxretry,
                "findtime_s": self.cfg.findtime.as_secs(),
                "usernames": users.iter().take(EVIDENCE).collect::<Vec<_>>(),
                "distinct_usernames": users.len(),
                "user_agent": last.user_agent,
                "response_code": last.response_code,
                "first_attempt": q.front().map(|x| x.at.to_string()),
                "last_attempt": last.at.to_string(),
                "tables": tables,
            }),
        })
    }

    /// Drops windows whose newest failure is older than `findtime` before
    /// `now` (database time).
    pub fn prune(&mut self, now: NaiveDateTime) {
        let Ok(findtime) = chrono::Duration::from_std(self.cfg.findtime) else {
            return;
        };
        self.fails
            .retain(|_, q| q.back().is_some_and(|f| f.at > now - findtime));
    }

    pub fn tracked(&self) -> usize {
        self.fails.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(s: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_764_000_000 + s, 0)
            .unwrap()
            .naive_utc()
    }

    fn fail(ip: &str, at: i64, user: &str) -> Failure {
        Failure {
            ip: ip.parse().unwrap(),
            seen: ip.parse().unwrap(),
            at: t(at),
            table: "failed_registrations",
            username: Some(user.into()),
            user_agent: Some("PolycomVVX".into()),
            response_code: Some(403),
        }
    }

    fn bf(maxretry: u64, findtime: u64) -> BruteForce {
        BruteForce::new(settings::BruteForce {
            maxretry,
            findtime: Duration::from_secs(findtime),
            ..Default::default()
        })
    }

    #[test]
    fn maxretry_within_findtime_bans() {
        let mut b = bf(10, 300);
        for i in 0..9 {
            assert!(b.observe(fail("203.0.113.5", i * 10, "1001")).is_none());
        }
        let d = b.observe(fail("203.0.113.5", 95, "1002")).unwrap();
        assert_eq!(d.reason, Reason::BruteForce);
        assert_eq!(d.count, 10);
        assert_eq!(d.base_ban, Duration::from_secs(3600));
        assert_eq!(d.details["usernames"], json!(["1001", "1002"]));
        assert_eq!(d.details["user_agent"], "PolycomVVX");
        assert_eq!(b.tracked(), 0);
    }

    /// Failures are counted by prefix: the address a ban may narrow to is
    /// named only when every failure came from it, never the sender of
    /// the last one.
    #[test]
    fn the_address_named_is_the_only_one_that_failed() {
        let mut b = bf(3, 300);
        let at = |prefix: &str, seen: &str, s: i64| Failure {
            seen: seen.parse().unwrap(),
            ..fail(prefix, s, "1001")
        };
        assert!(b.observe(at("2001:db8:5::", "2001:db8:5::2", 0)).is_none());
        assert!(b.observe(at("2001:db8:5::", "2001:db8:5::2", 1)).is_none());
        let d = b.observe(at("2001:db8:5::", "2001:db8:5::2", 2)).unwrap();
        assert_eq!(d.seen, Some("2001:db8:5::2".parse().unwrap()));
        assert!(b.observe(at("2001:db8:5::", "2001:db8:5::2", 3)).is_none());
        assert!(b.observe(at("2001:db8:5::", "2001:db8:5::2", 4)).is_none());
        let d = b.observe(at("2001:db8:5::", "2001:db8:5::9", 5)).unwrap();
        assert_eq!(d.seen, None, "the last sender took the others' failures");
    }

    #[test]
    fn forged_sources_cannot_grow_the_table_past_its_cap() {
        let mut b = bf(10, 300);
        let addr =
            |i: usize| std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | i as u128).to_string();
        for i in 0..MAX_TRACKED {
            assert_eq!(b.observe(fail(&addr(i), 0, "1001")), None);
        }
        assert_eq!(b.fails.len(), MAX_TRACKED);
        // Full of live entries: a new source waits.
        b.observe(fail("203.0.113.9", 10, "1001"));
        assert_eq!(b.fails.len(), MAX_TRACKED);
        assert!(!b.fails.contains_key(&"203.0.113.9".parse().unwrap()));
        // Once they are older than findtime, they make room.
        b.observe(fail("203.0.113.9", 1000, "1001"));
        assert_eq!(b.fails.len(), 1);
    }

    #[test]
    fn failures_spread_wider_than_findtime_do_not_ban() {
        let mut b = bf(3, 60);
        for i in 0..20 {
            assert!(b.observe(fail("203.0.113.5", i * 31, "1001")).is_none());
        }
        b.prune(t(20 * 31 + 61));
        assert_eq!(b.tracked(), 0);
    }

    #[test]
    fn addresses_are_counted_apart_and_tables_mix() {
        let mut b = bf(3, 60);
        assert!(b.observe(fail("203.0.113.5", 0, "a")).is_none());
        assert!(b.observe(fail("203.0.113.6", 1, "a")).is_none());
        assert!(b.observe(fail("2001:db8::5", 2, "a")).is_none());
        let mut knock = fail("203.0.113.5", 3, "b");
        knock.table = "door_knock_attempts";
        assert!(b.observe(knock).is_none());
        let d = b.observe(fail("203.0.113.5", 4, "c")).unwrap();
        assert_eq!(d.ip.to_string(), "203.0.113.5");
        assert_eq!(
            d.details["tables"],
            json!(["door_knock_attempts", "failed_registrations"])
        );
    }

    #[test]
    fn rows_slightly_out_of_order_still_count() {
        let mut b = bf(3, 60);
        assert!(b.observe(fail("203.0.113.5", 10, "a")).is_none());
        assert!(b.observe(fail("203.0.113.5", 8, "a")).is_none());
        assert!(b.observe(fail("203.0.113.5", 12, "a")).is_some());
    }

    #[test]
    fn disabled_detects_nothing() {
        let mut b = BruteForce::new(settings::BruteForce {
            database: false,
            maxretry: 1,
            ..Default::default()
        });
        assert!(b.observe(fail("203.0.113.5", 0, "a")).is_none());
    }
}
