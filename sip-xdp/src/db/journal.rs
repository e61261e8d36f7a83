//! Writes waiting for the database, in one journal: events (decisions on
//! their way to `security_events`), the rows of bans the kernel already
//! enforces, and feed refreshes. A database round takes a snapshot, writes
//! it (`write`) and confirms it; whatever was recorded meanwhile stays for
//! the next round. Until their rows exist the bans and feed entries are
//! rules for the sync (`pending_rules`), so an outage never loosens the
//! kernel. An outage loses nothing until the events reach their cap; past
//! it the oldest events go first, counted and logged. Ban rows and feed
//! refreshes wait however long the outage lasts; only one the database
//! refuses for what it holds is given up (a refused ban stays enforced
//! until it ends).
//!
//! The operators' changes made while the database was away wait in a file
//! instead (`outbox`): they must survive the process.

use std::collections::{BTreeMap, VecDeque};

use chrono::NaiveDateTime;
use ipnet::IpNet;
use serde_json::Value;
use sip_xdp_common::Reason;

use super::{
    feeds::FeedRows,
    rows::{reason_of, BlockRule, RuleOrBad},
    store::{now, Event, Proven, Store, StoreError},
};
use crate::parse::spelling;

/// What names an address's country (the `[geo]` database's lookup).
pub type CountryOf = Box<dyn Fn(std::net::IpAddr) -> Option<String> + Send + Sync>;

/// Events written per statement.
const BATCH: usize = 500;

/// Something that sees every event as it is recorded.
pub type Tap = Box<dyn Fn(&Event) + Send + Sync>;

/// A detector ban whose `blocked_ips` row is not written yet. The sync
/// treats it as a row, so the kernel keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingBlock {
    /// An address, or the prefix of a source counted by prefix.
    pub net: IpNet,
    /// Written to `blocked_ips.source`.
    pub reason: Reason,
    /// Written to `blocked_ips.reason`: the figures, for a human.
    pub note: String,
    pub blocked_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// Writes a pending ban's row; returns its id.
pub async fn write_block(store: &Store, p: &PendingBlock, node: &str) -> Result<i64, StoreError> {
    store
        .insert_block(
            &spelling(&p.net),
            &p.note,
            p.reason.name(),
            p.blocked_at,
            Some(p.expires_at),
            Some(node),
        )
        .await
}

pub struct Journal {
    /// Events with their sequence numbers, oldest first.
    events: VecDeque<(u64, Event)>,
    /// Bans whose rows are not written yet, with their sequence numbers.
    bans: Vec<(u64, PendingBlock)>,
    /// Bans whose rows the database refused for good: enforced until they
    /// end, never offered to the database again.
    unwritten: Vec<PendingBlock>,
    /// Each feed's refresh not written yet.
    feeds: BTreeMap<String, FeedRows>,
    /// Proofs of address for the memory of good clients, the latest per
    /// address, with their sequence numbers.
    proven: BTreeMap<std::net::IpAddr, (u64, Proven)>,
    next: u64,
    cap: usize,
    dropped: u64,
    node: Option<String>,
    /// Sees every event as it is recorded (alerts).
    tap: Option<Tap>,
    /// Names the country of an event's source (`[geo]`).
    geo: Option<CountryOf>,
}

/// What a round writes: a copy of the journal.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub bans: Vec<PendingBlock>,
    pub feeds: Vec<FeedRows>,
    pub proven: Vec<Proven>,
}

/// Which entries a `Batch` copied, to confirm once it is written.
#[derive(Debug, Default, Clone)]
pub struct Mark {
    seq: u64,
    /// The batch's bans, in its order.
    bans: Vec<u64>,
    /// Each feed's refresh by when it was fetched.
    feeds: Vec<(String, NaiveDateTime)>,
}

impl Batch {
    /// Feed entries in the batch.
    pub fn feed_entries(&self) -> usize {
        self.feeds.iter().map(|f| f.nets.len()).sum()
    }
}

impl Journal {
    pub fn new(cap: usize, node: Option<String>) -> Self {
        Self {
            events: VecDeque::new(),
            bans: Vec::new(),
            unwritten: Vec::new(),
            feeds: BTreeMap::new(),
            proven: BTreeMap::new(),
            next: 0,
            cap: cap.max(1),
            dropped: 0,
            node,
            tap: None,
            geo: None,
        }
    }

    /// Shows every event recorded from now on to `tap` as well.
    pub fn set_tap(&mut self, tap: Option<Tap>) {
        self.tap = tap;
    }

    /// The lookup that names events' sources' countries, or none.
    pub fn set_geo(&mut self, geo: Option<CountryOf>) {
        self.geo = geo;
    }

    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    /// Records a decision now, from this node.
    pub fn record(
        &mut self,
        event_type: &str,
        source_ip: Option<String>,
        severity: &str,
        mut details: Value,
    ) {
        let country = self
            .geo
            .as_ref()
            .zip(source_ip.as_deref())
            .and_then(|(g, ip)| {
                // A source may be a prefix (a /64 ban): its address names it.
                let ip = ip.split('/').next()?.parse().ok()?;
                g(ip)
            });
        if let (Some(c), Some(d)) = (country, details.as_object_mut()) {
            d.insert("country".into(), Value::String(c));
        }
        self.push(Event {
            event_type: event_type.into(),
            source_ip,
            severity: severity.into(),
            details,
            event_time: now(),
            node: self.node.clone(),
        });
    }

    pub fn push(&mut self, e: Event) {
        if let Some(tap) = &self.tap {
            tap(&e);
        }
        if self.events.len() >= self.cap {
            self.events.pop_front();
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    capacity = self.cap,
                    "event buffer full while the database is unreachable: dropping the oldest events"
                );
            }
        }
        let seq = self.seq();
        self.events.push_back((seq, e));
    }

    /// A ban the kernel enforces from now on; its row is written by the
    /// next round.
    pub fn ban(&mut self, p: PendingBlock) {
        let seq = self.seq();
        self.bans.push((seq, p));
    }

    /// A feed's refresh to write. A complete list replaces a refresh not
    /// written yet; an incremental one (APIBAN) adds to it, since what came
    /// before is still news. True when it brings rows to write.
    pub fn feed(&mut self, mut rows: FeedRows) -> bool {
        if !rows.complete {
            if let Some(prev) = self.feeds.remove(&rows.feed) {
                rows.nets.extend(prev.nets);
            }
        }
        let news = rows.complete || !rows.nets.is_empty();
        self.feeds.insert(rows.feed.clone(), rows);
        news
    }

    /// Forgets the refreshes of feeds no longer configured.
    pub fn keep_feeds(&mut self, configured: impl Fn(&str) -> bool) {
        self.feeds.retain(|name, _| configured(name));
    }

    /// A copy of everything waiting, and the mark to confirm it with: a
    /// round works on the copy, so whatever is recorded, dropped or
    /// refreshed meanwhile is never lost or written twice.
    pub fn snapshot(&self) -> (Batch, Mark) {
        let batch = Batch {
            events: self.events.iter().map(|(_, e)| e.clone()).collect(),
            bans: self.bans.iter().map(|(_, p)| p.clone()).collect(),
            feeds: self.feeds.values().cloned().collect(),
            proven: self.proven.values().map(|(_, p)| p.clone()).collect(),
        };
        let mark = Mark {
            seq: self.next,
            bans: self.bans.iter().map(|(s, _)| *s).collect(),
            feeds: self
                .feeds
                .values()
                .map(|f| (f.feed.clone(), f.at))
                .collect(),
        };
        (batch, mark)
    }

    /// The batch `mark` copied was written, but for the bans at the
    /// indexes in `refused`: the database refused their rows for good.
    /// Those stay in the kernel until they end, as if written, and are not
    /// offered to the database again. A feed refreshed since stays.
    pub fn confirm(&mut self, mark: &Mark, refused: &[usize]) {
        while self.events.front().is_some_and(|(seq, _)| *seq < mark.seq) {
            self.events.pop_front();
        }
        let refused: Vec<u64> = refused
            .iter()
            .filter_map(|i| mark.bans.get(*i))
            .copied()
            .collect();
        let (done, kept): (Vec<_>, Vec<_>) =
            self.bans.drain(..).partition(|(seq, _)| *seq < mark.seq);
        self.bans = kept;
        self.unwritten.extend(
            done.into_iter()
                .filter(|(seq, _)| refused.contains(seq))
                .map(|(_, p)| p),
        );
        let now = now();
        self.unwritten.retain(|p| p.expires_at > now);
        for (feed, at) in &mark.feeds {
            if self.feeds.get(feed).is_some_and(|f| f.at == *at) {
                self.feeds.remove(feed);
            }
        }
    }

    /// The batch `mark` copied had its proofs of address written (they
    /// are written apart from the rest, and may fail alone).
    pub fn confirm_proofs(&mut self, mark: &Mark) {
        self.proven.retain(|_, (seq, _)| *seq >= mark.seq);
    }

    /// Records that an address proved itself, for `remembered_clients`.
    /// Only the latest proof per address waits: a phone re-registering
    /// through an outage is one row, not one per registration.
    pub fn prove(&mut self, p: Proven) {
        let seq = self.seq();
        match self.proven.get_mut(&p.ip) {
            Some((s, old)) if old.at <= p.at => {
                *s = seq;
                *old = p;
            }
            Some(_) => {}
            None => {
                self.proven.insert(p.ip, (seq, p));
            }
        }
    }

    /// Proofs waiting for the database.
    pub fn proofs_pending(&self) -> usize {
        self.proven.len()
    }

    /// Drops the rows of bans no longer in the kernel: lifted by hand
    /// (`sip-xdp unblock`) before their row was written, they must not
    /// come back with it. Returns them.
    pub fn drop_lifted(&mut self, in_kernel: impl Fn(&IpNet) -> bool) -> Vec<PendingBlock> {
        self.unwritten.retain(|p| in_kernel(&p.net));
        let (keep, gone): (Vec<_>, Vec<_>) =
            self.bans.drain(..).partition(|(_, p)| in_kernel(&p.net));
        self.bans = keep;
        let gone: Vec<PendingBlock> = gone.into_iter().map(|(_, p)| p).collect();
        for p in &gone {
            tracing::info!(src_ip = %spelling(&p.net), reason = p.reason.name(), "ban lifted before its row was written: row dropped");
        }
        gone
    }

    /// Every ban and feed entry whose row is not written, as a rule for
    /// the sync: the kernel keeps them until their rows exist.
    pub fn pending_rules(&self) -> impl Iterator<Item = RuleOrBad> + '_ {
        let bans = self
            .bans
            .iter()
            .map(|(_, p)| p)
            .chain(&self.unwritten)
            .map(|p| {
                Ok(BlockRule {
                    id: 0,
                    net: p.net,
                    expires_at: Some(p.expires_at),
                    reason: reason_of(p.reason.name()),
                })
            });
        bans.chain(self.feed_rules())
    }

    /// The feed entries whose rows are not written, as rules.
    pub fn feed_rules(&self) -> impl Iterator<Item = RuleOrBad> + '_ {
        self.feeds.values().flat_map(|f| {
            let reason = reason_of(&f.source);
            f.nets.iter().map(move |(net, end)| {
                Ok(BlockRule {
                    id: 0,
                    net: *net,
                    expires_at: *end,
                    reason,
                })
            })
        })
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Ban rows waiting.
    pub fn bans_waiting(&self) -> usize {
        self.bans.len()
    }

    /// Events lost to a full journal since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes the waiting ban rows (as `node`) and events, oldest first,
    /// for a last chance at exit. On failure what was not written stays.
    /// Returns how many events were written.
    pub async fn flush(&mut self, store: &Store, node: &str) -> Result<usize, StoreError> {
        while let Some((_, p)) = self.bans.first() {
            write_block(store, p, node).await?;
            self.bans.remove(0);
        }
        let proven: Vec<Proven> = self.proven.values().map(|(_, p)| p.clone()).collect();
        write_proven(store, &proven, node).await?;
        self.proven.clear();
        let mut written = 0;
        while !self.events.is_empty() {
            let n = self.events.len().min(BATCH);
            let batch: Vec<Event> = self.events.iter().take(n).map(|(_, e)| e.clone()).collect();
            store.insert_events(&batch).await?;
            self.events.drain(..n);
            written += n;
        }
        Ok(written)
    }
}

/// Writes a batch's feed refreshes, each by difference. A write refused for
/// what it holds is given up (`tolerated`); any other failure is the
/// round's.
pub async fn write_feeds(store: &Store, feeds: &[FeedRows], node: &str) -> Result<(), StoreError> {
    for f in feeds {
        let Some(w) = tolerated(super::feeds::write(store, f, node).await, "feed rows")? else {
            continue;
        };
        if w.added + w.lifted + w.extended > 0 {
            tracing::info!(feed = %f.feed, added = w.added, lifted = w.lifted, extended = w.extended, "feed rows written");
        }
    }
    Ok(())
}

/// Writes a batch's ban rows; returns the indexes of those the database
/// refused for what they hold.
pub async fn write_bans(
    store: &Store,
    bans: &[PendingBlock],
    node: &str,
) -> Result<Vec<usize>, StoreError> {
    let mut refused = Vec::new();
    for (i, p) in bans.iter().enumerate() {
        if tolerated(write_block(store, p, node).await, "a ban's row")?.is_none() {
            refused.push(i);
        }
    }
    Ok(refused)
}

/// Writes events in statements of `BATCH`; one the database refuses costs
/// itself, not its statement.
pub async fn write_events(store: &Store, events: &[Event]) -> Result<(), StoreError> {
    for chunk in events.chunks(BATCH) {
        if let Err(e) = store.insert_events(chunk).await {
            if !e.is_data_error() {
                return Err(e);
            }
            for ev in chunk {
                tolerated(
                    store.insert_events(std::slice::from_ref(ev)).await,
                    "an event",
                )?;
            }
        }
    }
    Ok(())
}

/// Writes a batch's proofs of address to `remembered_clients`. Idempotent
/// (the latest proof per address wins), so a round run again is harmless.
pub async fn write_proven(store: &Store, proven: &[Proven], node: &str) -> Result<(), StoreError> {
    for chunk in proven.chunks(BATCH) {
        tolerated(
            store.remember_clients(chunk, node).await,
            "proofs of address",
        )?;
    }
    Ok(())
}

/// A write that failed because of what it wrote is logged and given up:
/// it would fail again every round, and must not keep the round from
/// reading the lists. Any other failure is the round's.
pub fn tolerated<T>(r: Result<T, StoreError>, what: &str) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_data_error() => {
            tracing::error!(error = %e, what, "the database refused a write; it is given up");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn full_buffer_drops_oldest_and_counts() {
        let mut b = Journal::new(3, Some("n1".into()));
        for i in 0..5 {
            b.record(
                "ip_blocked",
                Some(format!("203.0.113.{i}")),
                "warning",
                json!({}),
            );
        }
        assert_eq!((b.len(), b.dropped()), (3, 2));
        let ips: Vec<_> = b
            .events
            .iter()
            .map(|(_, e)| e.source_ip.clone().unwrap())
            .collect();
        assert_eq!(ips, ["203.0.113.2", "203.0.113.3", "203.0.113.4"]);
        assert_eq!(b.events[0].1.node.as_deref(), Some("n1"));
    }

    #[test]
    fn a_snapshot_confirmed_later_loses_and_repeats_nothing() {
        let mut b = Journal::new(3, None);
        b.record("a", None, "info", json!({}));
        b.record("b", None, "info", json!({}));
        let (copy, mark) = b.snapshot();
        assert_eq!(copy.events.len(), 2);
        // While the copy is being written: one more, and one dropped.
        b.record("c", None, "info", json!({}));
        b.record("d", None, "info", json!({}));
        b.confirm(&mark, &[]);
        let left: Vec<_> = b
            .events
            .iter()
            .map(|(_, e)| e.event_type.as_str())
            .collect();
        assert_eq!(left, ["c", "d"]);
        assert_eq!(b.dropped(), 1);
    }

    fn ban(ip: &str, ends_in: chrono::Duration) -> PendingBlock {
        let now = now();
        PendingBlock {
            net: ip.parse().unwrap(),
            reason: Reason::Flood,
            note: "flood".into(),
            blocked_at: now,
            expires_at: now + ends_in,
        }
    }

    fn feed(name: &str, nets: &[&str], complete: bool, at_s: i64) -> FeedRows {
        FeedRows {
            feed: name.into(),
            source: name.into(),
            nets: nets.iter().map(|n| (n.parse().unwrap(), None)).collect(),
            complete,
            at: now() + chrono::Duration::seconds(at_s),
        }
    }

    fn rules(j: &Journal) -> Vec<String> {
        j.pending_rules()
            .map(|r| r.unwrap().net.to_string())
            .collect()
    }

    /// A ban whose row the database refused stays a rule for the sync
    /// until it ends, and is not offered to the database again.
    #[test]
    fn a_ban_the_database_refused_stays_enforced_until_it_ends() {
        let mut j = Journal::new(10, None);
        j.ban(ban("198.51.100.7/32", chrono::Duration::minutes(10)));
        j.ban(ban("198.51.100.8/32", chrono::Duration::minutes(10)));
        j.ban(ban("198.51.100.9/32", chrono::Duration::milliseconds(-1)));
        let (batch, mark) = j.snapshot();
        assert_eq!(batch.bans.len(), 3);
        j.confirm(&mark, &[0, 2]);
        assert!(j.snapshot().0.bans.is_empty(), "offered again");
        assert_eq!(rules(&j), ["198.51.100.7/32"]);
        assert_eq!(j.drop_lifted(|_| false), []);
        assert!(rules(&j).is_empty(), "lifted by hand: gone");
    }

    #[test]
    fn what_is_recorded_while_a_round_writes_waits_for_the_next() {
        let mut j = Journal::new(10, None);
        j.ban(ban("198.51.100.7/32", chrono::Duration::minutes(10)));
        j.feed(feed("drop", &["203.0.113.0/24"], true, 0));
        j.feed(feed("apiban", &["203.0.113.9/32"], false, 0));
        let (_, mark) = j.snapshot();
        j.ban(ban("198.51.100.8/32", chrono::Duration::minutes(10)));
        j.record("ip_blocked", None, "info", json!({}));
        // A newer complete refresh of one feed, more of the incremental one.
        j.feed(feed("drop", &["203.0.113.0/25"], true, 5));
        j.feed(feed("apiban", &["203.0.113.10/32"], false, 5));
        // The refused index names the batch's first ban, not the new one.
        j.confirm(&mark, &[]);
        let (batch, _) = j.snapshot();
        assert_eq!(batch.bans.len(), 1);
        assert_eq!(batch.bans[0].net.to_string(), "198.51.100.8/32");
        assert_eq!(batch.events.len(), 1);
        let mut feeds: Vec<(String, Vec<String>)> = batch
            .feeds
            .iter()
            .map(|f| {
                (
                    f.feed.clone(),
                    f.nets.iter().map(|(n, _)| n.to_string()).collect(),
                )
            })
            .collect();
        feeds.sort();
        assert_eq!(
            feeds,
            [
                (
                    "apiban".to_string(),
                    vec!["203.0.113.10/32".to_string(), "203.0.113.9/32".to_string()]
                ),
                ("drop".to_string(), vec!["203.0.113.0/25".to_string()]),
            ]
        );
    }

    #[test]
    fn a_ban_lifted_by_hand_before_its_row_is_dropped_and_returned() {
        let mut j = Journal::new(10, None);
        j.ban(ban("198.51.100.7/32", chrono::Duration::minutes(10)));
        j.ban(ban("198.51.100.8/32", chrono::Duration::minutes(10)));
        let kept: IpNet = "198.51.100.8/32".parse().unwrap();
        let gone = j.drop_lifted(|n| *n == kept);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].net.to_string(), "198.51.100.7/32");
        assert_eq!(rules(&j), ["198.51.100.8/32"]);
        assert_eq!(j.bans_waiting(), 1);
    }

    #[test]
    fn an_empty_incremental_refresh_is_no_news_a_complete_one_is() {
        let mut j = Journal::new(10, None);
        assert!(!j.feed(feed("apiban", &[], false, 0)));
        assert!(j.feed(feed("drop", &[], true, 0)));
        j.keep_feeds(|name| name == "apiban");
        assert_eq!(j.snapshot().0.feeds.len(), 1);
    }

    #[test]
    fn the_latest_proof_per_address_waits_until_written() {
        let mut j = Journal::new(10, None);
        let at = now();
        let proof = |ip: &str, how: &str, secs: i64| Proven {
            ip: ip.parse().unwrap(),
            how: how.into(),
            at: at + chrono::Duration::seconds(secs),
        };
        j.prove(proof("203.0.113.60", "registered", 0));
        j.prove(proof("203.0.113.60", "invited", 10));
        j.prove(proof("203.0.113.60", "peer", 5));
        j.prove(proof("198.51.100.2", "peer", 0));
        let (batch, mark) = j.snapshot();
        assert_eq!(batch.proven.len(), 2);
        assert_eq!(batch.proven[1].how, "invited");
        // Proven again while the round writes: the newer proof waits.
        j.prove(proof("198.51.100.2", "peer", 20));
        // A round whose proofs failed alone keeps them.
        j.confirm(&mark, &[]);
        assert_eq!(j.snapshot().0.proven.len(), 2);
        j.confirm_proofs(&mark);
        let (batch, _) = j.snapshot();
        assert_eq!(batch.proven, vec![proof("198.51.100.2", "peer", 20)]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn flush_writes_all_and_keeps_them_on_failure() {
        let dir = std::env::temp_dir().join(format!("sip-xdp-ev-{}", std::process::id()));
        let url = format!("sqlite://{}/e.db", dir.display());
        let store = crate::db::connect(&url).await.unwrap();
        let mut b = Journal::new(10_000, None);
        for _ in 0..1203 {
            b.record("flood_detected", None, "warning", json!({"packets": 1}));
        }
        assert_eq!(b.flush(&store, "n1").await.unwrap(), 1203);
        assert!(b.is_empty());
        let since = now() - chrono::Duration::minutes(5);
        assert_eq!(store.events(since, None, 5000).await.unwrap().len(), 1203);
        // A closed pool fails: nothing is lost.
        b.record("ip_blocked", None, "warning", json!({}));
        if let crate::db::store::Pool::Sqlite(p) = store.pool() {
            p.close().await;
        }
        assert!(b.flush(&store, "n1").await.is_err());
        assert_eq!(b.len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
