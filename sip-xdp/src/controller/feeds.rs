//! The controller's side of the threat feeds: starts their tasks, keeps
//! each one's state, and turns a refresh into the rows the journal holds
//! until a database round writes them (`db::feeds`).

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

use ipnet::IpNet;

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
    /// Entries refused as too wide and already reported, by feed: a list
    /// refreshed every ten seconds reports each once.
    reported: BTreeMap<String, HashSet<IpNet>>,
}

/// A feed's entries refused as too wide and not reported before: its rows'
/// `source`, and each entry with why.
pub type Refused = (String, Vec<(String, String)>);

/// At most this many refused entries of one refresh are reported one by
/// one; the count says the rest.
const REPORT_EACH: usize = 10;

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

    /// Takes a refresh in: the rows to write when it brought a list, and
    /// the entries it refused as too wide that were not reported before.
    pub fn on_report(&mut self, r: Report) -> (Option<FeedRows>, Option<Refused>) {
        let Some(feed) = self.feeds.get(&r.feed) else {
            return (None, None);
        };
        let state = self.states.entry(r.feed.clone()).or_default();
        match r.outcome {
            Outcome::List {
                nets,
                refused,
                too_wide,
                bad,
            } => {
                tracing::info!(feed = %r.feed, entries = nets.len(), refused, too_wide = too_wide.len(), bad, "feed refreshed");
                state.too_wide = too_wide.len();
                // Forgets what the list no longer holds (an entry listed
                // again is reported again), in one pass.
                let now: HashSet<IpNet> = too_wide.iter().map(|(n, _)| *n).collect();
                let seen = self.reported.entry(r.feed.clone()).or_default();
                seen.retain(|n| now.contains(n));
                let new: Vec<_> = too_wide
                    .into_iter()
                    .filter(|(n, _)| seen.insert(*n))
                    .collect();
                if new.len() > REPORT_EACH {
                    tracing::warn!(feed = %r.feed, refused = new.len(), reported = REPORT_EACH, "feed entries refused as too wide: the first are reported one by one");
                }
                let refused = (!new.is_empty()).then(|| {
                    let each = new
                        .into_iter()
                        .take(REPORT_EACH)
                        .map(|(n, why)| (n.to_string(), why))
                        .collect();
                    (feed.source(), each)
                });
                state.entries = nets.len();
                state.last_ok = Some(Utc::now());
                state.last_error = None;
                let at = store::now();
                let ends = |d: Option<std::time::Duration>| {
                    d.or(feed.expire)
                        .and_then(|d| chrono::Duration::from_std(d).ok())
                        .map(|d| at + d)
                };
                let rows = FeedRows {
                    feed: r.feed,
                    source: feed.source(),
                    nets: nets.into_iter().map(|(n, left)| (n, ends(left))).collect(),
                    complete: feed.is_complete(),
                    at,
                };
                (Some(rows), refused)
            }
            Outcome::Unchanged => {
                tracing::info!(feed = %r.feed, unchanged = true, "feed refreshed");
                state.last_ok = Some(Utc::now());
                state.last_error = None;
                (None, None)
            }
            Outcome::Failed(e) => {
                state.failures += 1;
                tracing::warn!(feed = %r.feed, error = %e, "feed refresh failed: its last good list stays");
                state.last_error = Some(e);
                (None, None)
            }
        }
    }
}
