//! The controller's side of the threat feeds: starts their tasks, keeps
//! each one's state, and turns a refresh into the rows the journal holds
//! until a database round writes them (`db::feeds`).

use std::{collections::BTreeMap, path::PathBuf};

use chrono::Utc;
use tokio::sync::mpsc;

use crate::{
    db::{feeds::FeedRows, store},
    feed::{self, Feed, Outcome, Report, State},
    guard::Guard,
};

#[derive(Default)]
pub struct Desk {
    feeds: BTreeMap<String, Feed>,
    pub states: BTreeMap<String, State>,
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

    /// Whether `name` is a configured feed.
    pub fn has(&self, name: &str) -> bool {
        self.feeds.contains_key(name)
    }

    /// Takes a refresh in: the rows to write when it brought a list.
    pub fn on_report(&mut self, r: Report) -> Option<FeedRows> {
        let feed = self.feeds.get(&r.feed)?;
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
                Some(FeedRows {
                    feed: r.feed,
                    source: feed.source(),
                    nets: nets.into_iter().map(|(n, left)| (n, ends(left))).collect(),
                    complete: feed.is_complete(),
                    at,
                })
            }
            Outcome::Unchanged => {
                tracing::info!(feed = %r.feed, unchanged = true, "feed refreshed");
                state.last_ok = Some(Utc::now());
                state.last_error = None;
                None
            }
            Outcome::Failed(e) => {
                state.failures += 1;
                tracing::warn!(feed = %r.feed, error = %e, "feed refresh failed: its last good list stays");
                state.last_error = Some(e);
                None
            }
        }
    }
}
