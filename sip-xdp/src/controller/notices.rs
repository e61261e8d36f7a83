//! What the lists hold that the operator must hear of: entries refused
//! (too wide, covering this host, not decodable) and block entries that
//! cover a verified source or a trusted peer. Each is logged where it is
//! found, recorded once as an event, and the latest are kept for `status`.

use std::collections::VecDeque;

use chrono::Utc;
use serde::Serialize;
use serde_json::json;

use crate::{
    db::Journal,
    sync::{Cover, Skip},
};

/// How many notices `status` shows.
const KEPT: usize = 20;

/// At most this many covering entries of one sync become events.
pub const EACH_SYNC: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub at: String,
    /// `entry_refused`, `entry_blocks_verified` or `entry_covers_trusted`.
    pub event: &'static str,
    /// The list: a table (`whitelisted_ips`, `address`, `blocked_ips`) or a
    /// feed (`feed:NAME`, `geo`, ...).
    pub list: String,
    pub entry: String,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct Notices {
    latest: VecDeque<Notice>,
}

impl Notices {
    pub fn latest(&self) -> impl Iterator<Item = &Notice> {
        self.latest.iter()
    }

    fn keep(&mut self, n: Notice) {
        if self.latest.len() == KEPT {
            self.latest.pop_front();
        }
        self.latest.push_back(n);
    }

    /// A row a sync skipped.
    pub fn skipped(&mut self, journal: &mut Journal, s: &Skip) {
        journal.record(
            "entry_refused",
            None,
            "warning",
            json!({"list": s.table, "id": s.id, "why": s.why}),
        );
        self.keep(Notice {
            at: Utc::now().to_rfc3339(),
            event: "entry_refused",
            list: s.table.into(),
            entry: format!("id {}", s.id),
            what: s.why.clone(),
        });
    }

    /// Feed entries refused as too wide; the rest of the list was taken.
    pub fn feed_refused(
        &mut self,
        journal: &mut Journal,
        list: &str,
        refused: &[(String, String)],
    ) {
        for (entry, why) in refused {
            tracing::warn!(feed = %list, entry = %entry, reason = %why, "feed entry refused: the rest of the list is applied");
            journal.record(
                "entry_refused",
                None,
                "warning",
                json!({"list": list, "entry": entry, "why": why}),
            );
            self.keep(Notice {
                at: Utc::now().to_rfc3339(),
                event: "entry_refused",
                list: list.into(),
                entry: entry.clone(),
                what: why.clone(),
            });
        }
    }

    /// A block entry found covering a verified source or a trusted peer.
    pub fn covered(&mut self, journal: &mut Journal, c: &Cover) {
        let (event, what, source_ip) = match c.verified {
            Some(how) => (
                "entry_blocks_verified",
                format!(
                    "blocks {}, a source verified ({}): allow it to keep it",
                    c.covers,
                    how.as_str()
                ),
                Some(c.covers.addr().to_string()),
            ),
            None => (
                "entry_covers_trusted",
                format!(
                    "covers the trusted peer {}: the allow-list keeps it passing",
                    c.covers
                ),
                None,
            ),
        };
        journal.record(
            event,
            source_ip,
            "warning",
            json!({"entry": c.entry.to_string(), "id": c.id, "covers": c.covers.to_string()}),
        );
        self.keep(Notice {
            at: Utc::now().to_rfc3339(),
            event,
            list: "blocked_ips".into(),
            entry: format!("{} (id {})", c.entry, c.id),
            what,
        });
    }
}
