//! The plan: what the kernel should hold (`desired`, from the rows) against
//! what it holds (`Current`), as a difference: what is missing is added,
//! changed expiries updated, and what the database no longer wants
//! removed. Never a wipe and refill, so filtering has no gap.
//!
//! A kernel entry the database does not know is removed only when the next
//! cycle still does not know it: `block` and `allow` write the database and
//! then the map, and a sync that read the database just before such a write
//! must not undo it. Entries covered by the allow-list go at once.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::NaiveDateTime;
use ipnet::IpNet;
use sip_xdp_common::maps::{BanReason, Trust};

use crate::{
    db::{
        rows::{BadRow, RuleOrBad},
        store::{AllowRow, Undecoded},
    },
    guard::{overlaps, Guard},
    parse::is_host,
};

/// A block as the kernel should hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// Kernel expiry (CLOCK_MONOTONIC ns); 0 = permanent.
    pub expires_ns: u64,
    pub reason: BanReason,
    /// The database row it comes from (the longest-lasting one, if several).
    pub id: i64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub allows: BTreeSet<IpNet>,
    pub blocks: BTreeMap<IpNet, Want>,
    /// Host entries the allow-list passes, with their rows' ids.
    pub passed: BTreeMap<IpNet, i64>,
}

/// What the kernel holds: block nets with (expiry, reason), allow nets. The
/// reason is `None` where the kernel keeps none (block-list CIDRs), and is
/// then not compared: a reason alone never rewrites (and resets) a rule.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub allows: BTreeSet<IpNet>,
    pub blocks: BTreeMap<IpNet, (u64, Option<BanReason>)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub allow_add: Vec<IpNet>,
    pub put: Vec<(IpNet, Want)>,
    pub remove: Vec<IpNet>,
    pub allow_remove: Vec<IpNet>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.allow_add.is_empty()
            && self.put.is_empty()
            && self.remove.is_empty()
            && self.allow_remove.is_empty()
    }
}

/// The rows that allow: the operator's allow-list, and the trusted peers
/// read from the SIP server's `address` table.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowLists<'a> {
    pub allows: &'a [AllowRow],
    pub trusted: &'a [AllowRow],
}

/// A block entry that covers a source this host knows to be good: one
/// verified by a real exchange (the entry blocks it), or a trusted peer
/// (the allow-list keeps it passing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    pub entry: IpNet,
    /// The `blocked_ips` row it comes from.
    pub id: i64,
    pub covers: IpNet,
    /// `None` for a trusted peer.
    pub verified: Option<Trust>,
}

/// A row that is skipped, with why. Reported once per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub table: &'static str,
    pub id: i64,
    pub why: String,
    /// Refused (too wide, covering this host, not decodable), rather than
    /// passed over because the allow-list holds its address.
    pub refused: bool,
}

/// The pairs `covers` remembers having named.
const MAX_COVERS_KEPT: usize = 100_000;

/// Expiries closer than this are the same (wall/monotonic conversion jitter).
const EXPIRY_SLACK_NS: u64 = 1_000_000_000;

#[derive(Debug, Default)]
pub struct Planner {
    grace_blocks: HashSet<IpNet>,
    grace_allows: HashSet<IpNet>,
    reported: HashSet<(&'static str, i64)>,
    covers_reported: HashSet<(IpNet, IpNet)>,
}

impl Planner {
    /// The kernel state the rows ask for. Rows that cannot be used come back
    /// in the second list, each only the first time it is seen.
    pub fn desired(
        &mut self,
        blocks: &[RuleOrBad],
        lists: AllowLists<'_>,
        guard: &Guard,
        wall_now: NaiveDateTime,
        mono_now_ns: u64,
    ) -> (Desired, Vec<Skip>) {
        let mut d = Desired::default();
        let mut skips = Vec::new();
        for (table, rows) in [
            ("whitelisted_ips", lists.allows),
            ("address", lists.trusted),
        ] {
            for row in rows {
                match row.net() {
                    Ok(net) => match guard.too_wide(&net) {
                        Some(why) => skips.push(Skip {
                            table,
                            id: row.id,
                            why: format!("refused: {why}"),
                            refused: true,
                        }),
                        None => {
                            d.allows.insert(net);
                        }
                    },
                    Err(bad) => skips.push(Skip {
                        table,
                        ..skip_of(bad)
                    }),
                }
            }
        }
        for row in blocks {
            let rule = match row {
                Ok(r) => r,
                Err(bad) => {
                    skips.push(skip_of(bad.clone()));
                    continue;
                }
            };
            let skip = |why: String| Skip {
                table: "blocked_ips",
                id: rule.id,
                why,
                refused: true,
            };
            if let Some(why) = guard.refusal(&rule.net) {
                skips.push(skip(format!("refused: {why}")));
                continue;
            }
            if is_host(&rule.net) && d.allows.iter().any(|a| a.contains(&rule.net.addr())) {
                skips.push(Skip {
                    refused: false,
                    ..skip("not enforced: the address is on the allow-list".into())
                });
                d.passed.insert(rule.net, rule.id);
                continue;
            }
            let expires_ns = match rule.expires_at {
                None => 0,
                Some(t) => {
                    let left = (t - wall_now).num_nanoseconds().unwrap_or(i64::MAX);
                    if left <= 0 {
                        continue;
                    }
                    mono_now_ns.saturating_add(left as u64)
                }
            };
            let want = Want {
                expires_ns,
                reason: rule.reason,
                id: rule.id,
            };
            d.blocks
                .entry(rule.net)
                .and_modify(|w| {
                    if outlasts(&want, w) {
                        *w = want;
                    }
                })
                .or_insert(want);
        }
        skips.retain(|s| self.reported.insert((s.table, s.id)));
        (d, skips)
    }

    /// The block entries of `d` that cover a verified source or a trusted
    /// peer, each pair only the first time it is seen. A verified source
    /// the allow-list holds is passed by it, and is not named.
    pub fn covers(
        &mut self,
        d: &Desired,
        verified: &[(std::net::IpAddr, Trust)],
        trusted: &[IpNet],
    ) -> Vec<Cover> {
        let lens = |v4: bool| -> BTreeSet<u8> {
            d.blocks
                .keys()
                .chain(d.passed.keys())
                .filter(|n| n.addr().is_ipv4() == v4)
                .map(IpNet::prefix_len)
                .collect()
        };
        let allow_lens: BTreeSet<u8> = d.allows.iter().map(IpNet::prefix_len).collect();
        let allowed = |ip: &std::net::IpAddr| {
            allow_lens
                .iter()
                .any(|l| IpNet::new(*ip, *l).is_ok_and(|n| d.allows.contains(&n.trunc())))
        };
        let (lens_v4, lens_v6) = (lens(true), lens(false));
        // The entries holding `at`, from the widest.
        let holding = |at: std::net::IpAddr, up_to: u8| -> Vec<(IpNet, i64)> {
            let lens = if at.is_ipv4() { &lens_v4 } else { &lens_v6 };
            lens.iter()
                .take_while(|l| **l <= up_to)
                .filter_map(|l| IpNet::new(at, *l).ok().map(|n| n.trunc()))
                .filter_map(|n| {
                    let id = d.blocks.get(&n).map(|w| w.id);
                    id.or_else(|| d.passed.get(&n).copied()).map(|id| (n, id))
                })
                .collect()
        };
        let mut out = Vec::new();
        for (ip, how) in verified {
            let host = IpNet::from(*ip);
            if allowed(ip) {
                continue;
            }
            for (entry, id) in holding(*ip, host.prefix_len()) {
                out.push(Cover {
                    entry,
                    id,
                    covers: host,
                    verified: Some(*how),
                });
            }
        }
        for peer in trusted {
            let mut hits = holding(peer.network(), peer.prefix_len());
            // Narrower entries inside the peer's range.
            let (lo, hi) = (
                IpNet::new(peer.network(), 0).unwrap_or(*peer),
                IpNet::new(peer.broadcast(), peer.max_prefix_len()).unwrap_or(*peer),
            );
            let inside = |n: &IpNet| peer.contains(n) && n != peer;
            hits.extend(
                d.blocks
                    .range(lo..=hi)
                    .filter(|(n, _)| inside(n))
                    .map(|(n, w)| (*n, w.id)),
            );
            hits.extend(
                d.passed
                    .range(lo..=hi)
                    .filter(|(n, _)| inside(n))
                    .map(|(n, id)| (*n, *id)),
            );
            for (entry, id) in hits {
                out.push(Cover {
                    entry,
                    id,
                    covers: *peer,
                    verified: None,
                });
            }
        }
        // A list that rotates its entries over a peer's range must not
        // grow this without end: past the bound it starts again, and what
        // is still covered is named once more.
        if self.covers_reported.len() > MAX_COVERS_KEPT {
            self.covers_reported.clear();
        }
        out.retain(|c| self.covers_reported.insert((c.entry, c.covers)));
        out
    }

    /// Removals held back for their cycle of grace: the next sync must
    /// see the lists again to carry them out.
    pub fn waiting(&self) -> bool {
        !self.grace_blocks.is_empty() || !self.grace_allows.is_empty()
    }

    /// Rows that did not decode, each only the first time it is seen.
    pub fn first_reports(&mut self, bad: impl IntoIterator<Item = Undecoded>) -> Vec<Skip> {
        bad.into_iter()
            .filter(|b| self.reported.insert((b.table, b.id)))
            .map(|b| Skip {
                table: b.table,
                id: b.id,
                why: b.why,
                refused: true,
            })
            .collect()
    }

    /// What to change in the kernel to reach `desired` from `current`.
    pub fn plan(&mut self, desired: &Desired, current: &Current) -> Plan {
        let mut p = Plan {
            allow_add: desired
                .allows
                .difference(&current.allows)
                .copied()
                .collect(),
            ..Plan::default()
        };
        for (net, want) in &desired.blocks {
            let stale = match current.blocks.get(net) {
                None => true,
                Some((exp, reason)) => {
                    reason.is_some_and(|r| r != want.reason)
                        || exp.abs_diff(want.expires_ns) > EXPIRY_SLACK_NS
                }
            };
            if stale {
                p.put.push((*net, *want));
            }
        }
        let mut grace = HashSet::new();
        for net in current
            .blocks
            .keys()
            .filter(|n| !desired.blocks.contains_key(n))
        {
            let allowed = is_host(net) && desired.allows.iter().any(|a| overlaps(a, net));
            if allowed || self.grace_blocks.contains(net) {
                p.remove.push(*net);
            } else {
                grace.insert(*net);
            }
        }
        self.grace_blocks = grace;
        let mut grace = HashSet::new();
        for net in current.allows.difference(&desired.allows) {
            if self.grace_allows.contains(net) {
                p.allow_remove.push(*net);
            } else {
                grace.insert(*net);
            }
        }
        self.grace_allows = grace;
        p
    }
}

/// Permanent beats timed; a later expiry beats an earlier one.
fn outlasts(a: &Want, b: &Want) -> bool {
    match (a.expires_ns, b.expires_ns) {
        (0, 0) => false,
        (0, _) => true,
        (_, 0) => false,
        (x, y) => x > y,
    }
}

fn skip_of(bad: BadRow) -> Skip {
    Skip {
        table: bad.table,
        id: bad.id,
        why: bad.why,
        refused: true,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::{db::store::BlockRow, parse::parse_net};

    fn t0() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-11-25 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
    }
    const MONO: u64 = 1_000_000_000_000;

    fn rules(rows: &[BlockRow]) -> Vec<RuleOrBad> {
        rows.iter().map(BlockRow::rule).collect()
    }

    fn block(id: i64, ip: &str, expires_min: Option<i64>) -> BlockRow {
        BlockRow {
            id,
            ip_address: ip.into(),
            reason: String::new(),
            source: "manual".into(),
            blocked_at: t0() - Duration::minutes(1),
            expires_at: expires_min.map(|m| t0() + Duration::minutes(m)),
            unblocked_at: None,
            node: None,
        }
    }
    fn allow(id: i64, ip: &str) -> AllowRow {
        AllowRow {
            id,
            ip_address: ip.into(),
            comment: String::new(),
            created_at: t0(),
        }
    }
    fn net(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }
    fn lists(allows: &[AllowRow]) -> AllowLists<'_> {
        AllowLists {
            allows,
            trusted: &[],
        }
    }
    fn guard() -> Guard {
        Guard::with_addresses(vec!["198.51.100.1".parse().unwrap()])
    }

    #[test]
    fn rows_become_kernel_entries_with_monotonic_expiry() {
        let mut r = Planner::default();
        let rows = [
            block(1, "203.0.113.7", None),
            block(2, "198.51.100.0/25", Some(10)),
        ];
        let (d, skips) = r.desired(
            &rules(&rows),
            AllowLists::default(),
            &Guard::with_addresses(vec![]),
            t0(),
            MONO,
        );
        assert!(skips.is_empty());
        assert_eq!(d.blocks[&net("203.0.113.7")].expires_ns, 0);
        assert_eq!(
            d.blocks[&net("198.51.100.0/25")].expires_ns,
            MONO + 600_000_000_000
        );
    }

    #[test]
    fn bad_and_refused_rows_are_reported_once_and_skipped() {
        let mut r = Planner::default();
        let rows = [
            block(1, "203.0.113.300", None),
            block(2, "127.0.0.1", None),
            block(3, "198.51.100.1", None),
            block(4, "203.0.113.20", None),
            block(5, "203.0.113.9", None),
        ];
        let allows = [allow(9, "203.0.113.16/28"), allow(10, "bogus")];
        let (d, skips) = r.desired(&rules(&rows), lists(&allows), &guard(), t0(), MONO);
        let ids: Vec<_> = skips.iter().map(|s| (s.table, s.id)).collect();
        assert_eq!(
            ids,
            vec![
                ("whitelisted_ips", 10),
                ("blocked_ips", 1),
                ("blocked_ips", 2),
                ("blocked_ips", 3),
                ("blocked_ips", 4)
            ]
        );
        assert!(
            skips[3].why.contains("address of this host"),
            "{:?}",
            skips[3]
        );
        assert!(skips[4].why.contains("allow-list"), "{:?}", skips[4]);
        assert_eq!(
            d.blocks.keys().copied().collect::<Vec<_>>(),
            vec![net("203.0.113.9")]
        );
        let (_, again) = r.desired(&rules(&rows), lists(&allows), &guard(), t0(), MONO);
        assert!(again.is_empty(), "each bad row is reported once");
    }

    #[test]
    fn allow_and_trusted_rows_wider_than_the_rails_are_refused_and_the_rest_taken() {
        let mut r = Planner::default();
        let allows = [allow(1, "0.0.0.0/0"), allow(2, "198.51.100.0/24")];
        let trusted = [allow(7, "2000::/3"), allow(8, "2001:db8:9::/48")];
        let (d, skips) = r.desired(
            &[],
            AllowLists {
                allows: &allows,
                trusted: &trusted,
            },
            &guard(),
            t0(),
            MONO,
        );
        let ids: Vec<_> = skips.iter().map(|s| (s.table, s.id)).collect();
        assert_eq!(ids, vec![("whitelisted_ips", 1), ("address", 7)]);
        assert!(skips[0].why.contains("wider than /8"), "{:?}", skips[0]);
        assert!(skips[1].why.contains("wider than /16"), "{:?}", skips[1]);
        assert_eq!(
            d.allows.iter().copied().collect::<Vec<_>>(),
            vec![net("198.51.100.0/24"), net("2001:db8:9::/48")]
        );
    }

    #[test]
    fn entries_covering_a_verified_source_or_a_trusted_peer_are_named_once() {
        let mut r = Planner::default();
        let rows = [
            block(1, "203.0.113.0/24", None),
            block(2, "100.64.0.0/10", None),
            block(3, "2001:db8:7::/48", None),
            block(4, "198.18.0.5", None),
            block(5, "100.64.1.9", None),
        ];
        let allows = [allow(9, "100.64.1.0/24")];
        let (d, _) = r.desired(&rules(&rows), lists(&allows), &guard(), t0(), MONO);
        let verified = [
            ("203.0.113.9".parse().unwrap(), Trust::Registered),
            ("100.64.1.7".parse().unwrap(), Trust::Registered),
            ("198.51.100.77".parse().unwrap(), Trust::Peer),
        ];
        let trusted = [
            net("2001:db8::/32"),
            net("198.18.0.0/24"),
            net("100.64.1.9"),
        ];
        let c = r.covers(&d, &verified, &trusted);
        let seen: Vec<_> = c.iter().map(|c| (c.id, c.covers, c.verified)).collect();
        assert_eq!(
            seen,
            vec![
                (1, net("203.0.113.9"), Some(Trust::Registered)),
                (3, net("2001:db8::/32"), None),
                (4, net("198.18.0.0/24"), None),
                (2, net("100.64.1.9"), None),
                // Passed by the allow-list, and still named.
                (5, net("100.64.1.9"), None),
            ],
            "the allow-listed 100.64.1.7 is passed by its allow entry"
        );
        assert!(r.covers(&d, &verified, &trusted).is_empty());
    }

    #[test]
    fn duplicates_keep_the_longest_lasting() {
        let mut r = Planner::default();
        let rows = [
            block(1, "203.0.113.7", Some(5)),
            block(2, "203.0.113.7", Some(50)),
            block(3, "203.0.113.8", Some(5)),
            block(4, "203.0.113.8", None),
        ];
        let (d, _) = r.desired(&rules(&rows), AllowLists::default(), &guard(), t0(), MONO);
        assert_eq!(d.blocks[&net("203.0.113.7")].id, 2);
        assert_eq!(d.blocks[&net("203.0.113.8")].id, 4);
    }

    #[test]
    fn plan_adds_updates_and_removes_after_one_cycle_of_grace() {
        let mut r = Planner::default();
        let want = |exp| Want {
            expires_ns: exp,
            reason: BanReason::Manual,
            id: 1,
        };
        let mut desired = Desired::default();
        desired.blocks.insert(net("203.0.113.1"), want(0));
        desired.blocks.insert(net("203.0.113.2"), want(MONO));
        desired.blocks.insert(net("203.0.113.3"), want(MONO));
        desired.allows.insert(net("198.51.100.0/24"));
        let mut current = Current::default();
        current.blocks.insert(
            net("203.0.113.2"),
            (MONO + 500_000_000, Some(BanReason::Manual)),
        );
        current.blocks.insert(
            net("203.0.113.3"),
            (MONO + 60_000_000_000, Some(BanReason::Manual)),
        );
        current
            .blocks
            .insert(net("203.0.113.99"), (0, Some(BanReason::Manual)));
        current.allows.insert(net("2001:db8::/32"));

        let p = r.plan(&desired, &current);
        assert_eq!(p.allow_add, vec![net("198.51.100.0/24")]);
        // .2 is within the slack; .3's expiry changed; .1 is new.
        assert_eq!(
            p.put.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![net("203.0.113.1"), net("203.0.113.3")]
        );
        assert!(
            p.remove.is_empty() && p.allow_remove.is_empty(),
            "grace cycle: {p:?}"
        );

        let p = r.plan(&desired, &current);
        assert_eq!(p.remove, vec![net("203.0.113.99")]);
        assert_eq!(p.allow_remove, vec![net("2001:db8::/32")]);

        // A net that came back into the database in between is not removed.
        let mut r = Planner::default();
        r.plan(&desired, &current);
        desired.blocks.insert(net("203.0.113.99"), want(0));
        let p = r.plan(&desired, &current);
        assert!(p.remove.is_empty(), "{p:?}");
    }

    #[test]
    fn a_reason_the_kernel_does_not_keep_is_not_compared() {
        let mut r = Planner::default();
        let mut desired = Desired::default();
        let want = |reason| Want {
            expires_ns: 0,
            reason,
            id: 1,
        };
        desired
            .blocks
            .insert(net("198.51.100.0/24"), want(BanReason::Scanner));
        desired
            .blocks
            .insert(net("203.0.113.7"), want(BanReason::Scanner));
        let mut current = Current::default();
        current.blocks.insert(net("198.51.100.0/24"), (0, None));
        current
            .blocks
            .insert(net("203.0.113.7"), (0, Some(BanReason::Manual)));
        let p = r.plan(&desired, &current);
        assert_eq!(
            p.put.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![net("203.0.113.7")]
        );
    }

    #[test]
    fn bans_covered_by_the_allow_list_go_at_once() {
        let mut r = Planner::default();
        let mut desired = Desired::default();
        desired.allows.insert(net("203.0.113.0/28"));
        let mut current = Current::default();
        current
            .blocks
            .insert(net("203.0.113.5"), (0, Some(BanReason::Flood)));
        current
            .blocks
            .insert(net("203.0.113.0/24"), (0, Some(BanReason::Manual)));
        let p = r.plan(&desired, &current);
        assert_eq!(
            p.remove,
            vec![net("203.0.113.5")],
            "CIDR blocks wait for the grace cycle"
        );
    }
}
