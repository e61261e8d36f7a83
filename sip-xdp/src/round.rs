//! One database round of the controller, run as a task of its own so that
//! nothing on the detection path waits on the database: write the
//! operators' queued changes and the journal's copy (feed rows, ban rows,
//! events), expire old blocks, read the lists and the new failure rows. It
//! works on copies; the controller applies what comes back (kernel,
//! journal, detectors) on its loop, and a round that does not come back in
//! time is abandoned with nothing lost.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use crate::{
    db::{
        journal::{self, tolerated, Batch},
        outbox::Outbox,
        rows::RuleOrBad,
        store::{AllowRow, BlockRow, Event, FailureBatch, Proven, Undecoded, FAILURE_TABLES},
        Store, StoreError,
    },
    detect::act::{FailureRequest, FAILURE_BATCH},
};

/// What a round starts from.
pub struct RoundInput {
    /// The connection, if there is one; otherwise the round connects.
    pub store: Option<Store>,
    pub url: String,
    pub node: String,
    pub wall: NaiveDateTime,
    /// The journal's copy: ban rows, feed refreshes, events.
    pub batch: Batch,
    pub failures: Option<FailureRequest>,
    /// Operators' changes made while the database was away.
    pub outbox: Outbox,
    /// Where trusted peers are read from, if anywhere.
    pub trusted: Option<crate::config::Trusted>,
    /// The lists' fingerprint when they were last read in full; `None`
    /// reads them whatever it is now.
    pub known: Option<Vec<i64>>,
    /// What to read of the memory of good clients, if it is on.
    pub memory: Option<MemoryRead>,
}

/// What a round reads and ages out of `remembered_clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRead {
    pub since: NaiveDateTime,
    pub forget_before: NaiveDateTime,
    /// The most rows read: the kernel's room, newest first.
    pub limit: i64,
}

/// What a round did and read.
pub struct RoundOutput {
    pub store: Store,
    pub connected: bool,
    /// Rows past their expiry that this node marked lifted.
    pub lifted: Vec<BlockRow>,
    /// The active blocks and the allow-list, or `None` when their
    /// fingerprint says they are as last read.
    pub lists: Option<(Vec<RuleOrBad>, Vec<AllowRow>)>,
    pub fingerprint: Vec<i64>,
    pub undecoded: Vec<Undecoded>,
    pub failures: Vec<(usize, FailureBatch)>,
    /// The trusted peers read, or why not (the last good ones then stay).
    pub trusted: Option<Result<Vec<AllowRow>, String>>,
    /// The batch's bans (by index) whose rows the database refused.
    pub refused_pending: Vec<usize>,
    /// The memory of good clients read (`RoundInput::memory`).
    pub remembered: Vec<Proven>,
    /// Whether the batch's proofs of address were written.
    pub proofs_written: bool,
    pub took: Duration,
}

/// A failed round: the error, and the connection if it had one (it may
/// serve again once the database answers).
pub struct RoundError {
    pub store: Option<Store>,
    pub error: StoreError,
}

pub async fn run(mut input: RoundInput) -> Result<RoundOutput, RoundError> {
    let started = Instant::now();
    let (store, connected) = match input.store.take() {
        Some(s) => (s, false),
        None => match crate::db::connect(&input.url).await {
            Ok(s) => (s, true),
            Err(error) => return Err(RoundError { store: None, error }),
        },
    };
    match work(&store, &mut input).await {
        Ok(Work {
            refused,
            lifted,
            lists,
            fingerprint,
            undecoded,
            failures,
            remembered,
            proofs_written,
        }) => Ok(RoundOutput {
            refused_pending: refused,
            remembered,
            proofs_written,
            trusted: trusted(&store, input.trusted.as_ref()).await,
            store,
            connected,
            lifted,
            lists,
            fingerprint,
            undecoded,
            failures,
            took: started.elapsed(),
        }),
        Err(error) => Err(RoundError {
            store: Some(store),
            error,
        }),
    }
}

/// The trusted peers, if configured. A failure (the table is missing, the
/// account may not read it) is the answer, not the round's: the database
/// is reachable and the last good peers stay trusted.
async fn trusted(
    store: &Store,
    t: Option<&crate::config::Trusted>,
) -> Option<Result<Vec<AllowRow>, String>> {
    let t = t?;
    Some(
        match store
            .address_rows(t.address_table, &t.table, &t.groups)
            .await
        {
            Ok((rows, bad)) => {
                for b in bad {
                    tracing::warn!(table = %t.table, id = b.id, reason = ?b.why, "skipping address row");
                }
                Ok(rows)
            }
            Err(e) => Err(e.to_string()),
        },
    )
}

struct Work {
    refused: Vec<usize>,
    lifted: Vec<BlockRow>,
    lists: Option<(Vec<RuleOrBad>, Vec<AllowRow>)>,
    fingerprint: Vec<i64>,
    undecoded: Vec<Undecoded>,
    failures: Vec<(usize, FailureBatch)>,
    remembered: Vec<Proven>,
    proofs_written: bool,
}

/// The memory of good clients' part of a round: this node's proofs
/// written, old rows aged out, the rows since the cursor read. A failure
/// here (the table renamed, a grant taken away) is logged and costs the
/// memory only, never the round: the lists still reach the kernel. Returns
/// whether the proofs were written, and what was read.
async fn memory(store: &Store, input: &RoundInput, node: &str) -> (bool, Vec<Proven>) {
    let written = match journal::write_proven(store, &input.batch.proven, node).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "writing proofs of address to remembered_clients failed; they wait for the next round");
            false
        }
    };
    let Some(m) = input.memory else {
        return (written, Vec::new());
    };
    let tomorrow = crate::db::store::now() + chrono::Duration::days(1);
    if let Err(e) = store
        .forget_clients_before(m.forget_before, tomorrow, crate::db::retention::BATCH)
        .await
    {
        tracing::warn!(error = %e, "ageing out remembered_clients failed");
    }
    match store.remembered_since(m.since, m.limit).await {
        Ok(rows) => (written, rows),
        Err(e) => {
            tracing::warn!(error = %e, "reading remembered_clients failed; the kernel keeps what it remembers");
            (written, Vec::new())
        }
    }
}

/// The operators' changes queued during an outage, written before the
/// lists are read: otherwise this round would undo in the kernel what an
/// operator did meanwhile.
async fn write_queued(store: &Store, outbox: &Outbox, node: &str) -> Result<(), StoreError> {
    let drained = outbox.drain(|c| c.apply_queued(store)).await?;
    if drained.written > 0 {
        tracing::info!(changes = drained.written, path = %outbox.path().display(), "wrote the changes queued while the database was unreachable");
    }
    let refused = drained.refusals(outbox, node);
    if !refused.is_empty() {
        tolerated(
            store.insert_events(&refused).await,
            "the refused changes' events",
        )?;
    }
    Ok(())
}

async fn work(store: &Store, input: &mut RoundInput) -> Result<Work, StoreError> {
    // Every time below is converted by the skew measured here.
    store.sync_clock().await?;
    let (wall, node) = (input.wall, input.node.as_str());
    write_queued(store, &input.outbox, node).await?;
    // Feed rows (written by difference: a round given up on and run again
    // writes nothing twice) before anything else.
    journal::write_feeds(store, &input.batch.feeds, node).await?;
    let failures = input.failures.take();
    let mut lifted = Vec::new();
    let mut unblocked = Vec::new();
    for row in store.expired_unlifted(wall).await? {
        // Only the node whose update lands records it: one event per
        // expiry however many controllers share the database. Written in
        // this round, with the lift.
        if store.mark_lifted(row.id, wall).await? {
            unblocked.push(Event {
                event_type: "ip_unblocked".into(),
                source_ip: Some(row.ip_address.clone()),
                severity: "info".into(),
                details: serde_json::json!({"reason": "expired", "id": row.id, "source": row.source, "expires_at": row.expires_at}),
                event_time: crate::db::store::now(),
                node: Some(node.to_string()),
            });
            lifted.push(row);
        }
    }
    // Ban rows before the lists are read (the read must hold them), and as
    // late as that allows: a round that fails before here wrote none of
    // them, so the next one does not write them twice.
    let refused = journal::write_bans(store, &input.batch.bans, node).await?;
    // A 100k-row table read in full costs the database, the network and
    // our memory every round; a fingerprint that has not moved says the
    // read would bring nothing new.
    let fingerprint = store.lists_fingerprint(wall).await?;
    let mut undecoded = Vec::new();
    let lists = if input.known.as_ref() == Some(&fingerprint) {
        None
    } else {
        let (blocks, bad_blocks) = store.active_rules_checked(wall).await?;
        let (allows, bad_allows) = store.allows_checked().await?;
        undecoded.extend(bad_blocks);
        undecoded.extend(bad_allows);
        Some((blocks, allows))
    };
    // The events last: a round that fails earlier wrote none of them.
    journal::write_events(store, &input.batch.events).await?;
    journal::write_events(store, &unblocked).await?;
    let (proofs_written, remembered) = memory(store, input, node).await;
    let mut batches = Vec::new();
    if let Some(req) = failures {
        for (i, table) in FAILURE_TABLES.iter().enumerate() {
            let mut after = req.cursors[i].unwrap_or(0);
            loop {
                // The SIP server's own table, in whatever shape it made it:
                // one that cannot be read costs brute-force detection, not
                // the sync.
                let batch = match store.failures(table, after, req.since, FAILURE_BATCH).await {
                    Ok(b) => b,
                    Err(e) if matches!(e, StoreError::Sql(sqlx::Error::Database(_))) => {
                        tracing::debug!(table, error = %e, "cannot read the failure table");
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let full = batch.fetched as i64 >= FAILURE_BATCH;
                after = batch.last_id.unwrap_or(after).max(after);
                batches.push((i, batch));
                if !full {
                    break;
                }
            }
        }
    }
    Ok(Work {
        refused,
        lifted,
        lists,
        fingerprint,
        undecoded,
        failures: batches,
        remembered,
        proofs_written,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sip_xdp_common::Reason;

    use super::*;
    use crate::db::{journal::PendingBlock, Journal};

    /// A round that fails after it wrote the ban rows (here the allow-list
    /// cannot be read) wrote none of the events: the next round, which
    /// writes the same copy of the journal again, writes each event once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_round_that_fails_before_the_end_has_written_no_event() {
        let dir = std::env::temp_dir().join(format!("sip-xdp-round-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/r.db", dir.display());
        let store = crate::db::connect(&url).await.unwrap();
        let mut journal = Journal::new(10, Some("n1".into()));
        journal.record("flood_detected", None, "warning", json!({}));
        let now = crate::db::store::now();
        journal.ban(PendingBlock {
            net: "203.0.113.9/32".parse().unwrap(),
            reason: Reason::Flood,
            note: "flood".into(),
            blocked_at: now,
            expires_at: now + chrono::Duration::minutes(10),
        });
        let input = |store: Store, batch| RoundInput {
            store: Some(store),
            url: url.clone(),
            node: "n1".into(),
            wall: crate::db::store::now(),
            batch,
            failures: None,
            outbox: Outbox::new(dir.join("outbox.jsonl")),
            trusted: None,
            known: None,
            memory: None,
        };
        store
            .execute_literal("ALTER TABLE whitelisted_ips RENAME TO gone")
            .await
            .unwrap();
        let failed = run(input(store.clone(), journal.snapshot().0)).await;
        assert!(failed.is_err());
        let events = "SELECT COUNT(*) FROM security_events";
        assert_eq!(store.count_literal(events).await.unwrap(), 0);
        store
            .execute_literal("ALTER TABLE gone RENAME TO whitelisted_ips")
            .await
            .unwrap();
        let out = run(input(store.clone(), journal.snapshot().0)).await;
        assert!(out.is_ok());
        assert_eq!(store.count_literal(events).await.unwrap(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
