//! A feed's refresh written as `blocked_ips` rows, by difference: a
//! complete list adds what is new and lifts what it no longer lists; an
//! incremental one (APIBAN) adds what is new and pushes back the expiry of
//! what it lists again. One `feed_updated` event per change.

use std::collections::{BTreeMap, BTreeSet};

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
    pub nets: Vec<IpNet>,
    /// The list is whole: rows it no longer holds are lifted.
    pub complete: bool,
    pub expires_at: Option<NaiveDateTime>,
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
    let wanted: BTreeSet<IpNet> = r.nets.iter().copied().collect();
    let add: Vec<String> = wanted
        .iter()
        .filter(|n| !current.contains_key(n))
        .map(spelling)
        .collect();
    let lift: Vec<i64> = if r.complete {
        current
            .iter()
            .filter(|(n, _)| !wanted.contains(n))
            .flat_map(|(_, ids)| ids.iter().map(|(id, _)| *id))
            .collect()
    } else {
        Vec::new()
    };
    // Listed again: the expiry moves to this refresh's.
    let extend: Vec<i64> = match r.expires_at {
        Some(exp) => current
            .iter()
            .filter(|(n, _)| wanted.contains(n))
            .flat_map(|(_, ids)| ids.iter())
            .filter(|(_, e)| e.is_some_and(|e| e < exp))
            .map(|(id, _)| *id)
            .collect(),
        None => Vec::new(),
    };
    let reason = format!("feed {}", r.feed);
    store
        .insert_blocks(&add, &reason, &r.source, r.at, r.expires_at, node)
        .await?;
    store.lift_ids(&lift, r.at).await?;
    if let Some(exp) = r.expires_at {
        store.extend_ids(&extend, exp).await?;
    }
    let w = Written {
        added: add.len(),
        lifted: lift.len(),
        extended: extend.len(),
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
