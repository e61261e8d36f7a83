//! A feed's refresh written as `blocked_ips` rows, by difference: a
//! complete list adds what is new and lifts what it no longer lists; an
//! incremental one (APIBAN) adds what is new and pushes back the expiry of
//! what it lists again. One `feed_updated` event per change.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use ipnet::IpNet;
use serde_json::json;

use super::store::{Event, Store, StoreError};
use crate::parse::{parse_net, spelling};

/// A refresh to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRows {
    pub feed: String,
    /// `blocked_ips.source`.
    pub source: String,
    /// Each entry with its end (on our clock), `None` for never.
    pub nets: Vec<(IpNet, Option<NaiveDateTime>)>,
    /// The list is whole: rows it no longer holds are lifted.
    pub complete: bool,
    /// When it was fetched (on our clock).
    pub at: NaiveDateTime,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub added: usize,
    pub lifted: usize,
    pub extended: usize,
}

pub async fn write(store: &Store, r: &FeedRows, node: &str) -> Result<Written, StoreError> {
    let mut current: BTreeMap<IpNet, Vec<(i64, Option<NaiveDateTime>)>> = BTreeMap::new();
    for row in store.active_blocks_of_source(&r.source, r.at).await? {
        if let Ok(n) = parse_net(&row.ip_address) {
            current.entry(n).or_default().push((row.id, row.expires_at));
        }
    }
    // One end per entry: the latest a refresh gave it (None = never).
    let mut wanted: BTreeMap<IpNet, Option<NaiveDateTime>> = BTreeMap::new();
    for (n, end) in &r.nets {
        let e = wanted.entry(*n).or_insert(*end);
        *e = later(*e, *end);
    }
    // New entries, grouped by end so that each group is one batch.
    let mut add: BTreeMap<Option<NaiveDateTime>, Vec<String>> = BTreeMap::new();
    // Listed again with a later end: the row's expiry moves to it.
    let mut extend: BTreeMap<NaiveDateTime, Vec<i64>> = BTreeMap::new();
    for (n, end) in &wanted {
        match current.get(n) {
            None => add.entry(*end).or_default().push(spelling(n)),
            Some(rows) => {
                if let Some(end) = end {
                    for (id, _) in rows.iter().filter(|(_, e)| e.is_some_and(|e| e < *end)) {
                        extend.entry(*end).or_default().push(*id);
                    }
                }
            }
        }
    }
    let lift: Vec<i64> = if r.complete {
        current
            .iter()
            .filter(|(n, _)| !wanted.contains_key(n))
            .flat_map(|(_, ids)| ids.iter().map(|(id, _)| *id))
            .collect()
    } else {
        Vec::new()
    };
    let reason = format!("feed {}", r.feed);
    for (end, ips) in &add {
        store
            .insert_blocks(ips, &reason, &r.source, r.at, *end, node)
            .await?;
    }
    store.lift_ids(&lift, r.at).await?;
    for (end, ids) in &extend {
        store.extend_ids(ids, *end).await?;
    }
    let w = Written {
        added: add.values().map(Vec::len).sum(),
        lifted: lift.len(),
        extended: extend.values().map(Vec::len).sum(),
    };
    if w.added + w.lifted > 0 {
        store
            .insert_events(&[Event {
                event_type: "feed_updated".into(),
                source_ip: None,
                severity: "info".into(),
                details: json!({"feed": r.feed, "source": r.source, "added": w.added, "lifted": w.lifted, "extended": w.extended, "entries": wanted.len()}),
                event_time: r.at,
                node: Some(node.to_string()),
            }])
            .await?;
    }
    Ok(w)
}

/// The later of two ends, where `None` is never.
fn later(a: Option<NaiveDateTime>, b: Option<NaiveDateTime>) -> Option<NaiveDateTime> {
    match (a, b) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(a.max(b)),
    }
}
