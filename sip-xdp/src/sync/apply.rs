//! Carrying a plan out: the rows a round read (with the bans and feed
//! entries not yet written) become the kernel's lists, and what changed is
//! logged. Works on any `KernelLists`, so it is tested on the host.

use std::time::Duration;

use chrono::NaiveDateTime;
use ipnet::IpNet;

use super::plan::{AllowLists, Cover, Current, Plan, Planner, Skip};
use crate::{
    db::{
        rows::RuleOrBad,
        store::{AllowRow, Undecoded},
    },
    guard::Guard,
    kernel::KernelLists,
};

/// The planner and what it remembers between syncs (removals in their
/// cycle of grace, rows already reported).
#[derive(Debug, Default)]
pub struct Applier {
    planner: Planner,
}

/// What one sync changed in the kernel.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Block rows read (and pending bans).
    pub rows: usize,
    pub installed: usize,
    pub removed: usize,
    /// Rows skipped (each the first time), for the caller to report.
    pub skipped: Vec<Skip>,
    /// Block entries newly seen to cover a verified source or a trusted
    /// peer.
    pub covers: Vec<Cover>,
}

/// What a round read: the block rows (with the bans and feed entries not
/// yet written), the allow-list, the trusted peers, and the rows that did
/// not decode.
pub struct Rows<'a> {
    pub blocks: Vec<RuleOrBad>,
    pub allows: &'a [AllowRow],
    pub trusted: &'a [AllowRow],
    pub undecoded: Vec<Undecoded>,
}

/// The clocks a sync converts expiries with.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    pub wall: NaiveDateTime,
    pub mono_ns: u64,
}

impl Applier {
    /// Removals held back for their cycle of grace: the next sync must
    /// read the lists again to carry them out.
    pub fn waiting(&self) -> bool {
        self.planner.waiting()
    }

    /// Brings the kernel in line with the rows. `listed`
    /// is told every net the rows want blocked (before the kernel is
    /// touched), so the caller can forget what is no longer listed.
    pub fn apply(
        &mut self,
        kernel: &mut impl KernelLists,
        guard: &Guard,
        rows: Rows<'_>,
        clocks: Clocks,
        listed: impl FnOnce(&[IpNet]),
    ) -> Synced {
        let Rows {
            blocks,
            allows,
            trusted,
            undecoded,
        } = rows;
        let (desired, mut skips) = self.planner.desired(
            &blocks,
            AllowLists { allows, trusted },
            guard,
            clocks.wall,
            clocks.mono_ns,
        );
        // The rows are not needed past here: with 100k of them, holding
        // them beside the kernel's lists and the plan is the controller's
        // peak memory.
        let rows = blocks.len();
        drop(blocks);
        // Rows are decoded one at a time: a row that does not decode is
        // reported once and skipped, and the database stays "reachable".
        skips.extend(self.planner.first_reports(undecoded));
        for s in &skips {
            tracing::warn!(table = s.table, id = s.id, reason = ?s.why, "skipping database row");
        }
        let peers: Vec<IpNet> = trusted
            .iter()
            .filter_map(|r| r.net().ok())
            .filter(|n| desired.allows.contains(n))
            .collect();
        let covers = self.planner.covers(&desired, &kernel.trusted_now(), &peers);
        for c in covers.iter().take(LOG_EACH) {
            match c.verified {
                Some(how) => tracing::warn!(
                    entry = %c.entry, id = c.id, src_ip = %c.covers, verified = how.as_str(),
                    "a block entry covers a verified source: it is blocked (`sip-xdp allow` it to keep it)"
                ),
                None => tracing::warn!(
                    entry = %c.entry, id = c.id, peer = %c.covers,
                    "a block entry covers a trusted peer: the allow-list keeps the peer passing"
                ),
            }
        }
        listed(&desired.blocks.keys().copied().collect::<Vec<_>>());
        let current = Current {
            allows: kernel.allowed().into_iter().collect(),
            blocks: kernel.rules(),
        };
        let plan = self.planner.plan(&desired, &current);
        let (installed, removed) = write_plan(kernel, &plan, &current);
        Synced {
            rows,
            installed,
            removed,
            skipped: skips,
            covers,
        }
    }

    /// Puts new block entries (a feed refresh's) in the kernel before their
    /// rows are written: the safety rails and the kernel's allow-list still
    /// win, and nothing is removed here; the next sync does that by
    /// difference. Returns how many went in.
    pub fn install_ahead(
        &mut self,
        kernel: &mut impl KernelLists,
        guard: &Guard,
        rows: Vec<RuleOrBad>,
        clocks: Clocks,
    ) -> usize {
        let allows: Vec<AllowRow> = kernel
            .allowed()
            .iter()
            .map(|net| AllowRow {
                id: 0,
                ip_address: crate::parse::spelling(net),
                comment: String::new(),
                created_at: clocks.wall,
            })
            .collect();
        let lists = AllowLists {
            allows: &allows,
            trusted: &[],
        };
        let (desired, _) = self
            .planner
            .desired(&rows, lists, guard, clocks.wall, clocks.mono_ns);
        // With a 100k-entry list the rows, the desired set and the kernel's
        // view at once were the controller's peak: the rows go first, and
        // of the kernel only the keys are read.
        drop(rows);
        let held = kernel.held();
        let new: Vec<_> = desired
            .blocks
            .iter()
            .filter(|(net, _)| !held.contains(net))
            .map(|(net, w)| (*net, w.expires_ns, w.reason))
            .collect();
        if new.is_empty() {
            return 0;
        }
        match kernel.put_new(&new) {
            Ok(()) => tracing::info!(
                count = new.len(),
                "feed entries installed ahead of their rows"
            ),
            Err(e) => {
                tracing::error!(count = new.len(), error = %e, "feed entries installed ahead of their rows: failed")
            }
        }
        new.len()
    }
}

/// Carries a sync's plan out in the kernel; (entries installed or
/// changed, entries removed). One failed write is logged and the rest of
/// the plan still goes in.
fn write_plan(kernel: &mut impl KernelLists, plan: &Plan, current: &Current) -> (usize, usize) {
    for net in &plan.allow_add {
        log_kernel(kernel.put_allow(net), net, "allow entry installed");
    }
    // New exact bans go in batches (a feed can bring thousands); a
    // changed one keeps its hit count through `put`.
    let (new, changed): (Vec<_>, Vec<_>) = plan
        .put
        .iter()
        .partition(|(net, _)| !current.blocks.contains_key(net));
    let batch: Vec<_> = new
        .iter()
        .map(|(net, w)| (*net, w.expires_ns, w.reason))
        .collect();
    match kernel.put_new(&batch) {
        Ok(()) if batch.len() <= LOG_EACH => {
            for (net, _, _) in &batch {
                tracing::info!(src_ip = %net, "block installed");
            }
        }
        Ok(()) => tracing::info!(
            count = batch.len(),
            "blocks installed (block installed for each)"
        ),
        Err(e) => tracing::error!(count = batch.len(), error = %e, "block installed: failed"),
    }
    for (net, want) in &changed {
        let r = kernel.put(net, want.expires_ns, want.reason);
        log_kernel(r, net, "block installed");
    }
    if plan.remove.len() <= LOG_EACH {
        for net in &plan.remove {
            log_kernel(kernel.unblock(net).map(|_| ()), net, "block removed");
        }
    } else {
        match kernel.remove_many(&plan.remove) {
            Ok(n) => tracing::info!(count = n, "blocks removed (block removed for each)"),
            Err(e) => {
                tracing::error!(count = plan.remove.len(), error = %e, "block removed: failed")
            }
        }
    }
    for net in &plan.allow_remove {
        log_kernel(kernel.disallow(net).map(|_| ()), net, "allow entry removed");
    }
    (
        batch.len() + changed.len() + plan.allow_add.len(),
        plan.remove.len() + plan.allow_remove.len(),
    )
}

/// Up to this many changes of one kind are logged one line each; more are
/// one line with their count.
const LOG_EACH: usize = 20;

impl Synced {
    /// One line per sync that changed the kernel (debug otherwise), with
    /// the database's and the kernel's share of its time.
    pub fn log(&self, db: Duration, kernel: Duration) {
        let (db_ms, kernel_ms) = (db.as_millis() as u64, kernel.as_millis() as u64);
        if self.installed + self.removed > 0 {
            tracing::info!(
                rows = self.rows,
                installed = self.installed,
                removed = self.removed,
                db_ms,
                kernel_ms,
                "kernel synced"
            );
        } else {
            tracing::debug!(rows = self.rows, db_ms, kernel_ms, "kernel in step");
        }
    }
}

fn log_kernel(r: crate::Result<()>, net: &IpNet, what: &str) {
    match r {
        Ok(()) => tracing::info!(src_ip = %net, "{what}"),
        Err(e) => tracing::error!(src_ip = %net, error = %e, "{what}: failed"),
    }
}

#[cfg(test)]
mod tests {
    use sip_xdp_common::maps::BanReason;

    use super::*;
    use crate::{db::rows::BlockRule, kernel::lists::Fake, parse::parse_net};

    fn net(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    /// One fixed instant, so rows made in a test and the sync that reads them
    /// agree on "now" to the nanosecond.
    fn clocks() -> Clocks {
        Clocks {
            wall: chrono::DateTime::from_timestamp(1_800_000_000, 0)
                .unwrap()
                .naive_utc(),
            mono_ns: 1_000_000_000_000,
        }
    }

    /// A row blocking `ip` for `minutes` (none: permanent).
    fn row(id: i64, ip: &str, minutes: Option<i64>) -> RuleOrBad {
        Ok(BlockRule {
            id,
            net: net(ip),
            expires_at: minutes.map(|m| clocks().wall + chrono::Duration::minutes(m)),
            reason: BanReason::Manual,
        })
    }

    fn allow(ip: &str) -> AllowRow {
        AllowRow {
            id: 1,
            ip_address: ip.into(),
            comment: String::new(),
            created_at: clocks().wall,
        }
    }

    fn guard() -> Guard {
        Guard::with_addresses(vec!["198.51.100.1".parse().unwrap()])
    }

    fn sync(a: &mut Applier, k: &mut Fake, blocks: Vec<RuleOrBad>, allows: &[AllowRow]) -> Synced {
        let rows = Rows {
            blocks,
            allows,
            trusted: &[],
            undecoded: Vec::new(),
        };
        a.apply(k, &guard(), rows, clocks(), |_| {})
    }

    #[test]
    fn rows_become_kernel_entries_and_a_second_sync_writes_nothing() {
        let (mut a, mut k) = (Applier::default(), Fake::default());
        let rows = || {
            vec![
                row(1, "203.0.113.7", Some(60)),
                row(2, "203.0.113.0/28", None),
                row(3, "2001:db8:5::/48", Some(5)),
            ]
        };
        let s = sync(&mut a, &mut k, rows(), &[allow("198.51.100.0/24")]);
        assert_eq!((s.rows, s.installed, s.removed), (3, 4, 0));
        assert_eq!(k.rules.len(), 3);
        assert_eq!(k.rules[&net("203.0.113.0/28")].0, 0, "permanent");
        let left = k.rules[&net("203.0.113.7")].0 - clocks().mono_ns;
        assert_eq!(left / 1_000_000_000, 3600);
        assert!(k.allows.contains(&net("198.51.100.0/24")));
        let writes = k.writes.len();
        let s = sync(&mut a, &mut k, rows(), &[allow("198.51.100.0/24")]);
        assert_eq!((s.installed, s.removed), (0, 0));
        assert_eq!(k.writes.len(), writes, "{:?}", &k.writes[writes..]);
    }

    #[test]
    fn an_entry_no_row_wants_goes_after_one_cycle_of_grace() {
        let (mut a, mut k) = (Applier::default(), Fake::default());
        k.rules
            .insert(net("203.0.113.50"), (0, Some(BanReason::Manual)));
        k.allows.insert(net("100.64.0.0/16"));
        let s = sync(&mut a, &mut k, vec![row(1, "203.0.113.7", None)], &[]);
        assert_eq!(s.removed, 0);
        assert!(a.waiting());
        assert!(k.rules.contains_key(&net("203.0.113.50")));
        let s = sync(&mut a, &mut k, vec![row(1, "203.0.113.7", None)], &[]);
        assert_eq!(s.removed, 2);
        assert!(!a.waiting());
        assert_eq!(k.rules.keys().collect::<Vec<_>>(), [&net("203.0.113.7")]);
        assert!(k.allows.is_empty());
    }

    #[test]
    fn rows_the_rails_refuse_or_the_allow_list_covers_never_reach_the_kernel() {
        let (mut a, mut k) = (Applier::default(), Fake::default());
        let mut listed = Vec::new();
        a.apply(
            &mut k,
            &guard(),
            Rows {
                blocks: vec![
                    row(1, "127.0.0.1", None),
                    row(2, "198.51.100.0/24", None),
                    row(3, "203.0.113.9", None),
                    row(4, "203.0.113.10", None),
                ],
                allows: &[allow("203.0.113.8/31")],
                trusted: &[],
                undecoded: Vec::new(),
            },
            clocks(),
            |nets| listed = nets.to_vec(),
        );
        assert_eq!(k.rules.keys().collect::<Vec<_>>(), [&net("203.0.113.10")]);
        assert_eq!(listed, [net("203.0.113.10")]);
    }

    #[test]
    fn a_write_that_fails_leaves_the_rest_of_the_plan_written() {
        let (mut a, mut k) = (Applier::default(), Fake::default());
        k.refuse.insert(net("100.64.0.0/16"));
        let in_an_hour = clocks().mono_ns + 3_600_000_000_000;
        k.rules
            .insert(net("203.0.113.7"), (in_an_hour, Some(BanReason::Manual)));
        sync(
            &mut a,
            &mut k,
            vec![row(1, "203.0.113.7", None), row(2, "203.0.113.8", None)],
            &[allow("100.64.0.0/16")],
        );
        assert!(k.allows.is_empty());
        assert_eq!(
            k.rules[&net("203.0.113.7")].0,
            0,
            "changed expiry not written"
        );
        assert!(
            k.rules.contains_key(&net("203.0.113.8")),
            "new ban not written"
        );
    }

    #[test]
    fn entries_installed_ahead_add_what_is_new_and_remove_nothing() {
        let (mut a, mut k) = (Applier::default(), Fake::default());
        k.rules
            .insert(net("203.0.113.50"), (0, Some(BanReason::Manual)));
        k.allows.insert(net("203.0.113.8/31"));
        let n = a.install_ahead(
            &mut k,
            &guard(),
            vec![
                row(0, "203.0.113.50", Some(10)),
                row(0, "203.0.113.9", Some(10)),
                row(0, "203.0.113.60", Some(10)),
                row(0, "127.0.0.1", Some(10)),
            ],
            clocks(),
        );
        assert_eq!(n, 1);
        let nets: Vec<_> = k.rules.keys().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["203.0.113.50/32", "203.0.113.60/32"]);
        assert_eq!(
            k.rules[&net("203.0.113.50")].0,
            0,
            "a held entry is left as it is"
        );
    }
}
