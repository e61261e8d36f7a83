//! How long the record is kept. Every ban writes a `blocked_ips` row and
//! events, and nothing else ever deletes them: left alone, a long attack
//! fills the disk, and a full disk stops every round. The controller
//! deletes what is past its age in small batches on a task of its own
//! (neither the path that enforces nor the database round waits for it),
//! and `sip-xdp db prune` does the same at once. Active blocks are never deleted, whatever their age;
//! nor are the SIP server's own failure tables.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Deserialize;

use super::store::{Store, StoreError};

/// Rows deleted per statement: short enough that a SIP server's own
/// queries on the same tables never wait long behind one.
pub const BATCH: i64 = 1000;

/// `never`, or a duration (`90d`).
fn age<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim() == "never" {
        return Ok(None);
    }
    crate::parse::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The `[retention]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `security_events` older than this are deleted; `never` keeps them.
    #[serde(deserialize_with = "age")]
    pub events: Option<Duration>,
    /// `blocked_ips` rows lifted longer ago than this are deleted.
    #[serde(deserialize_with = "age")]
    pub lifted_blocks: Option<Duration>,
    /// At most this many events are kept, the oldest going first; 0 for no
    /// limit.
    pub max_events: u64,
    /// At most this many lifted blocks are kept, the oldest going first;
    /// 0 for no limit. Active blocks do not count.
    pub max_lifted_blocks: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            events: Some(Duration::from_secs(90 * 86_400)),
            lifted_blocks: Some(Duration::from_secs(30 * 86_400)),
            max_events: 5_000_000,
            max_lifted_blocks: 1_000_000,
        }
    }
}

/// What one pass deleted, and whether more is waiting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub lifted_blocks: u64,
    /// A batch came back full: there is more to delete.
    pub more: bool,
}

/// One batch per kind of row, as of `now`.
pub async fn prune_batch(
    store: &Store,
    s: &Settings,
    now: NaiveDateTime,
) -> Result<Pruned, StoreError> {
    let before = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let mut out = Pruned::default();
    if let Some(d) = s.events {
        out.events += store.delete_events_before(before(d), BATCH).await?;
    }
    if s.max_events > 0 {
        out.events += store.delete_events_beyond(s.max_events, BATCH).await?;
    }
    if let Some(d) = s.lifted_blocks {
        out.lifted_blocks += store.delete_lifted_before(before(d), BATCH).await?;
    }
    if s.max_lifted_blocks > 0 {
        out.lifted_blocks += store
            .delete_lifted_beyond(s.max_lifted_blocks, BATCH)
            .await?;
    }
    out.more = out.events >= BATCH as u64 || out.lifted_blocks >= BATCH as u64;
    Ok(out)
}

/// One batch, as the controller runs it on a task of its own: logged,
/// a failure left for the next time. Returns whether more is waiting.
pub async fn prune_in_background(store: Store, s: Settings) -> bool {
    match prune_batch(&store, &s, super::store::now()).await {
        Ok(p) => {
            if p.events + p.lifted_blocks > 0 {
                tracing::info!(
                    events = p.events,
                    lifted_blocks = p.lifted_blocks,
                    more = p.more,
                    "deleted rows past their retention"
                );
            }
            p.more
        }
        Err(e) => {
            tracing::warn!(error = %e, "deleting rows past their retention failed; trying again later");
            false
        }
    }
}

/// Batches until nothing is left to delete.
pub async fn prune_all(
    store: &Store,
    s: &Settings,
    now: NaiveDateTime,
) -> Result<Pruned, StoreError> {
    let mut total = Pruned::default();
    loop {
        let p = prune_batch(store, s, now).await?;
        total.events += p.events;
        total.lifted_blocks += p.lifted_blocks;
        if !p.more {
            return Ok(total);
        }
    }
}
