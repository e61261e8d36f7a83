//! The controller's side of the threat feeds: starts their tasks, keeps
//! each one's state, and holds the refreshes the next database round
//! writes (`db::feeds`). A refresh a round did not write (the database is
//! away) waits for the next one; a newer refresh of a complete list
//! replaces it, an incremental one (APIBAN) adds to it.

use std::{collections::BTreeMap, path::PathBuf};

use chrono::Utc;
use tokio::sync::mpsc;

use crate::{
    db::{
        feeds::FeedRows,
        rows::{reason_of, BlockRule, RuleOrBad},
        store,
    },
    feed::{self, Feed, Outcome, Report, State},
    guard::Guard,
};

#[derive(Default)]
pub struct Desk {
    feeds: BTreeMap<String, Feed>,
    pub states: BTreeMap<String, State>,
    pending: BTreeMap<String, FeedRows>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Desk {
    /// (Re)starts the tasks of `feeds`; their reports come on the receiver.
    pub fn start(
        &mut self,
        feeds: Vec<Feed>,
        state_dir: PathBuf,
        guard: Guard,
    ) -> Option<mpsc::Receiver<Report>> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.feeds = feeds.iter().map(|f| (f.name.clone(), f.clone())).collect();
        self.states.retain(|n, _| self.feeds.contains_key(n));
        self.pending.retain(|n, _| self.feeds.contains_key(n));
        if feeds.is_empty() {
            return None;
        }
        for f in &feeds {
            tracing::info!(feed = %f.name, source = %f.source(), refresh_s = f.refresh.as_secs(), "feed on");
        }
        let (tx, rx) = mpsc::channel(64);
        self.tasks = feed::spawn(&feeds, state_dir, guard, tx);
        Some(rx)
    }

    /// Takes a refresh in; true when it brought entries for the next
    /// round to write.
    pub fn on_report(&mut self, r: Report) -> bool {
        let Some(feed) = self.feeds.get(&r.feed) else {
            return false;
        };
        let state = self.states.entry(r.feed.clone()).or_default();
        match r.outcome {
            Outcome::List { nets, refused, bad } => {
                tracing::info!(feed = %r.feed, entries = nets.len(), refused, bad, "feed refreshed");
                state.entries = nets.len();
                state.last_ok = Some(Utc::now());
                state.last_error = None;
                let at = store::now();
                let ends = |d: Option<std::time::Duration>| {
                    d.or(feed.expire)
                        .and_then(|d| chrono::Duration::from_std(d).ok())
                        .map(|d| at + d)
                };
                let mut nets: Vec<_> = nets.into_iter().map(|(n, left)| (n, ends(left))).collect();
                let complete = feed.is_complete();
                if !complete {
                    // Not written yet: what came before is still news.
                    if let Some(prev) = self.pending.remove(&r.feed) {
                        nets.extend(prev.nets);
                    }
                }
                let rows = FeedRows {
                    feed: r.feed.clone(),
                    source: feed.source(),
                    nets,
                    complete,
                    at,
                };
                let news = complete || !rows.nets.is_empty();
                self.pending.insert(r.feed, rows);
                news
            }
            Outcome::Unchanged => {
                tracing::info!(feed = %r.feed, unchanged = true, "feed refreshed");
                state.last_ok = Some(Utc::now());
                state.last_error = None;
                false
            }
            Outcome::Failed(e) => {
                state.failures += 1;
                tracing::warn!(feed = %r.feed, error = %e, "feed refresh failed: its last good list stays");
                state.last_error = Some(e);
                false
            }
        }
    }

    /// The refreshes not written yet, as rows: the kernel enforces them
    /// from the refresh on, and the sync keeps them until their rows exist.
    pub fn pending_rules(&self) -> impl Iterator<Item = RuleOrBad> + '_ {
        self.pending.values().flat_map(|f| {
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

    /// What the next round writes.
    pub fn snapshot(&self) -> Vec<FeedRows> {
        self.pending.values().cloned().collect()
    }

    /// Forgets what a round wrote, unless a newer refresh came meanwhile.
    pub fn confirm(&mut self, written: &[FeedRows]) {
        for w in written {
            if self.pending.get(&w.feed).is_some_and(|p| p.at == w.at) {
                self.pending.remove(&w.feed);
            }
        }
    }
}
