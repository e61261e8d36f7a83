//! An operator's change (block, unblock, allow, disallow) as the database
//! records it, and the outbox where it waits when the database cannot be
//! reached.
//!
//! The CLI applies a change to the kernel at once and to the database when
//! it can. When it cannot, the change goes to the outbox file, and the
//! controller's next round writes it before reading the lists: without
//! that, the round would put back the ban an operator lifted during an
//! outage (the database still says it is active). Replaying a change is
//! harmless: a lift or a delete happens once, a block or an allow entry
//! already there is not added again.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
};

use chrono::NaiveDateTime;
use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sip_xdp_common::Reason;

use super::store::{Event, Store, StoreError};
use crate::parse::{is_host, parse_net, spelling};

pub const DEFAULT_OUTBOX: &str = "/var/lib/sip-xdp/outbox.jsonl";

fn manual() -> String {
    Reason::Manual.name().to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Block {
        reason: String,
        expires_at: Option<NaiveDateTime>,
        /// `blocked_ips.source`: `manual`, or the feed that asked.
        #[serde(default = "manual")]
        source: String,
    },
    Unblock,
    Allow {
        comment: String,
    },
    Disallow,
}

/// One change, when and where the operator made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    #[serde(flatten)]
    pub op: Op,
    /// The address or prefix, canonical (`parse::spelling`).
    pub target: String,
    pub at: NaiveDateTime,
    pub node: String,
}

/// What a change did in the database.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows added, lifted or deleted.
    pub rows: u64,
    /// Exact bans an allow entry lifted.
    pub lifted: Vec<String>,
}

impl Change {
    pub fn new(op: Op, net: &IpNet, at: NaiveDateTime, node: &str) -> Self {
        Self {
            op,
            target: spelling(net),
            at,
            node: node.to_string(),
        }
    }

    fn net(&self) -> Result<IpNet, StoreError> {
        parse_net(&self.target).map_err(|e| StoreError::Sql(sqlx::Error::Protocol(e.to_string())))
    }

    fn event(
        &self,
        t: &str,
        ip: &str,
        severity: &str,
        mut details: serde_json::Value,
        replay: bool,
    ) -> Event {
        if replay {
            details["queued_at"] = json!(self.at);
        }
        Event {
            event_type: t.into(),
            source_ip: Some(ip.to_string()),
            severity: severity.into(),
            details,
            event_time: self.at,
            node: Some(self.node.clone()),
        }
    }

    /// Writes the change and its events. `replay`: it comes from the
    /// outbox, and may already have been written by an interrupted round.
    pub async fn apply(&self, store: &Store, replay: bool) -> Result<Applied, StoreError> {
        let net = self.net()?;
        let mut events = Vec::new();
        let out = match &self.op {
            Op::Block {
                reason,
                expires_at,
                source,
            } => {
                self.block(store, (reason, source), *expires_at, replay, &mut events)
                    .await?
            }
            Op::Unblock => self.unblock(store, &net, replay, &mut events).await?,
            Op::Allow { comment } => {
                self.allow(store, &net, comment, replay, &mut events)
                    .await?
            }
            Op::Disallow => {
                let mut out = Applied::default();
                for row in store.allows().await? {
                    if parse_net(&row.ip_address).is_ok_and(|a| a == net)
                        && store.delete_allow_id(row.id).await?
                    {
                        out.rows += 1;
                    }
                }
                out
            }
        };
        store.insert_events(&events).await?;
        Ok(out)
    }

    async fn block(
        &self,
        store: &Store,
        (reason, source): (&str, &str),
        expires_at: Option<NaiveDateTime>,
        replay: bool,
        events: &mut Vec<Event>,
    ) -> Result<Applied, StoreError> {
        let exists = replay
            && store.blocks_of(&self.target).await?.iter().any(|r| {
                // Times pass through the clock conversion both ways.
                r.unblocked_at.is_none() && (r.blocked_at - self.at).num_milliseconds().abs() < 2000
            });
        if exists {
            return Ok(Applied::default());
        }
        let id = store
            .insert_block(
                &self.target,
                reason,
                source,
                self.at,
                expires_at,
                Some(&self.node),
            )
            .await?;
        events.push(self.event(
            "ip_blocked",
            &self.target,
            "warning",
            json!({"id": id, "source": source, "reason": reason, "expires_at": expires_at}),
            replay,
        ));
        Ok(Applied {
            rows: 1,
            lifted: Vec::new(),
        })
    }

    async fn unblock(
        &self,
        store: &Store,
        net: &IpNet,
        replay: bool,
        events: &mut Vec<Event>,
    ) -> Result<Applied, StoreError> {
        let mut out = Applied::default();
        for row in store
            .active_blocks(self.at.max(super::store::now()))
            .await?
        {
            if parse_net(&row.ip_address).is_ok_and(|n| n == *net)
                && store.mark_lifted(row.id, self.at).await?
            {
                out.rows += 1;
            }
        }
        if out.rows > 0 {
            events.push(self.event(
                "ip_unblocked",
                &self.target,
                "info",
                json!({"reason": "manual", "rows": out.rows}),
                replay,
            ));
        }
        Ok(out)
    }

    async fn allow(
        &self,
        store: &Store,
        net: &IpNet,
        comment: &str,
        replay: bool,
        events: &mut Vec<Event>,
    ) -> Result<Applied, StoreError> {
        let mut out = Applied::default();
        let exists = replay
            && store
                .allows()
                .await?
                .iter()
                .any(|a| parse_net(&a.ip_address).is_ok_and(|n| n == *net));
        if !exists {
            store.insert_allow(&self.target, comment).await?;
            out.rows = 1;
        }
        // Bans the entry covers are lifted in the database too, so they do
        // not come back if the entry is removed later.
        for row in store
            .active_blocks(self.at.max(super::store::now()))
            .await?
        {
            let Ok(b) = parse_net(&row.ip_address) else {
                continue;
            };
            if is_host(&b) && net.contains(&b.addr()) && store.mark_lifted(row.id, self.at).await? {
                events.push(self.event(
                    "ip_unblocked",
                    &spelling(&b),
                    "info",
                    json!({"reason": "allow-listed", "allow": self.target, "id": row.id}),
                    replay,
                ));
                out.lifted.push(spelling(&b));
            }
        }
        Ok(out)
    }
}

/// The outbox file: one JSON change per line. Writers and the reader hold
/// an exclusive lock on it, so a line is never half-read or lost between
/// the reader's read and its truncation.
#[derive(Debug, Clone)]
pub struct Outbox {
    path: PathBuf,
}

impl Outbox {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn locked(&self) -> io::Result<Flock<File>> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&self.path)?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    /// Queues a change, durably.
    pub fn push(&self, c: &Change) -> io::Result<()> {
        let mut f = self.locked()?;
        let mut line = serde_json::to_string(c).map_err(io::Error::other)?;
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }

    /// The queued changes, oldest first, without removing them. A line that
    /// does not decode is logged and skipped.
    pub fn peek(&self) -> io::Result<Vec<Change>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let f = self.locked()?;
        Ok(read_changes(&f, &self.path))
    }

    /// Runs `apply` on the queued changes and empties the outbox if it
    /// succeeds, all under the lock: a change queued meanwhile waits for
    /// the next round. Nothing queued: no lock, no file.
    pub async fn drain<F, Fut>(&self, apply: F) -> Result<usize, StoreError>
    where
        F: FnOnce(Vec<Change>) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        if !self.path.exists() {
            return Ok(0);
        }
        let lock = |e: io::Error| StoreError::Dir {
            path: self.path.display().to_string(),
            source: e,
        };
        let f = self.locked().map_err(lock)?;
        let changes = read_changes(&f, &self.path);
        let n = changes.len();
        if n > 0 {
            apply(changes).await?;
        }
        f.set_len(0).map_err(lock)?;
        Ok(n)
    }
}

fn read_changes(f: &File, path: &Path) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, line) in io::BufReader::new(f).lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(c) => out.push(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "skipping outbox line")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: Op, target: &str) -> Change {
        Change::new(
            op,
            &parse_net(target).unwrap(),
            super::super::store::now(),
            "n1",
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queued_changes_are_written_once_in_order() {
        let dir = std::env::temp_dir().join(format!("sip-xdp-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::connect(&format!("sqlite://{}/o.db", dir.display()))
            .await
            .unwrap();
        let ob = Outbox::new(dir.join("outbox.jsonl"));
        let block = change(
            Op::Block {
                reason: "r".into(),
                expires_at: None,
                source: "manual".into(),
            },
            "198.51.100.7",
        );
        block.apply(&store, false).await.unwrap();
        // The database goes away: the operator unblocks, then allows.
        ob.push(&change(Op::Unblock, "198.51.100.7")).unwrap();
        ob.push(&change(
            Op::Allow {
                comment: "peer".into(),
            },
            "203.0.113.0/24",
        ))
        .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(ob.path())
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        assert_eq!(ob.peek().unwrap().len(), 2);
        // A round that fails keeps them.
        let r = ob.drain(|_| async { Err(StoreError::BadUrl) }).await;
        assert!(r.is_err());
        assert_eq!(ob.peek().unwrap().len(), 2);
        // Applied twice (an interrupted round, then the next): written once.
        for c in ob.peek().unwrap() {
            c.apply(&store, true).await.unwrap();
        }
        let n = ob
            .drain(|cs| {
                let store = store.clone();
                async move {
                    for c in cs {
                        c.apply(&store, true).await?;
                    }
                    Ok(())
                }
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert!(ob.peek().unwrap().is_empty());
        let now = super::super::store::now();
        assert!(store.active_blocks(now).await.unwrap().is_empty());
        assert_eq!(store.allows().await.unwrap().len(), 1);
        let lifted = store.blocks_of("198.51.100.7").await.unwrap();
        assert_eq!(lifted.len(), 1);
        assert_eq!(lifted[0].unblocked_at, Some(ob_time(&store).await));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The lift time recorded is the operator's, not the replay's.
    async fn ob_time(store: &Store) -> NaiveDateTime {
        let ev = store
            .events(
                super::super::store::now() - chrono::Duration::minutes(5),
                Some("ip_unblocked"),
                10,
            )
            .await
            .unwrap();
        assert_eq!(ev.len(), 1, "one event for one lift");
        ev[0].event_time
    }
}
