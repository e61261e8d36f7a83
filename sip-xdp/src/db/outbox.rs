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
    io::{self, Read as _, Write},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use chrono::NaiveDateTime;
use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sip_xdp_common::Reason;

use super::{
    schema::fits,
    store::{Event, Store, StoreError},
};
use crate::{
    guard::Widest,
    parse::{is_host, parse_net, spelling},
};

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
        parse_net(&self.target).map_err(|e| StoreError::Data(e.to_string()))
    }

    /// The change with its target spelled as the CLI spells it: a line
    /// written by hand (`010.0.0.0/00`, `::ffff:0.0.0.0/96`, padding) is
    /// written to the tables as the net it was checked as.
    fn canonical(mut self) -> Self {
        if let Ok(net) = self.net() {
            self.target = spelling(&net);
        }
        self
    }

    /// Why an allow entry is wider than the rails, if it is: an entry
    /// queued by an older build, or under other rails, is held to the
    /// reader's.
    pub fn too_wide(&self, widest: &Widest) -> Option<String> {
        match self.op {
            Op::Allow { .. } => self.net().ok().and_then(|n| widest.refusal(&n)),
            _ => None,
        }
    }

    /// Refuses text the tables cannot hold, before anything is written
    /// anywhere: the same answer whether the database is up or the change
    /// waits in the outbox.
    pub fn check(&self) -> Result<(), StoreError> {
        self.net()?;
        let mut fields = vec![("node", self.node.as_str())];
        match &self.op {
            Op::Block { reason, source, .. } => {
                fields.extend([("reason", reason.as_str()), ("source", source.as_str())])
            }
            Op::Allow { comment } => fields.push(("comment", comment.as_str())),
            Op::Unblock | Op::Disallow => {}
        }
        for (field, text) in fields {
            fits(field, text)?;
        }
        Ok(())
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

    /// A queued change written as the drain writes it: its events too.
    pub async fn apply_queued(self, store: &Store) -> Result<(), StoreError> {
        self.apply(store, true).await.map(drop)
    }

    /// Writes the change and its events. `replay`: it comes from the
    /// outbox, and may already have been written by an interrupted round.
    pub async fn apply(&self, store: &Store, replay: bool) -> Result<Applied, StoreError> {
        self.check()?;
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
        match store.insert_events(&events).await {
            // The change itself is written; only its record is refused
            // (text a column's charset cannot hold).
            Err(e) if e.is_data_error() => {
                tracing::warn!(error = %e, target_ip = %self.target, "the database refused the change's event; the change itself is written")
            }
            r => r?,
        }
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
            // A queued unblock lifts what was blocked when the operator
            // gave it, not a ban made since (by another node meanwhile).
            // Rows are read on this host's clock (the database's skew
            // measured and taken off); a node whose own clock is off
            // stamps its rows off by as much.
            let made_since = replay && row.blocked_at > self.at;
            if parse_net(&row.ip_address).is_ok_and(|n| n == *net)
                && !made_since
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
/// the reader's read and its rewrite. Beside it: `<outbox>.failed`, the
/// changes the database refused (with why), and `<outbox>.unreadable`,
/// lines that were not a change; neither is ever read back.
#[derive(Debug, Clone)]
pub struct Outbox {
    path: PathBuf,
    /// The widest allow entry a drain writes.
    widest: Widest,
}

/// What a drain did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Changes written to the database.
    pub written: usize,
    /// Changes refused for good (by the database, or an allow entry wider
    /// than the rails), each with why; moved to the `.failed` file.
    pub failed: Vec<(Change, String)>,
    /// Lines that were not a change, moved to the `.unreadable` file.
    pub unreadable: usize,
    /// Changes left for the next round (the database went away meanwhile).
    pub left: usize,
}

impl Drained {
    /// Logs each refused change, and returns its `change_refused` event
    /// for the caller to write: whichever drains the outbox (the
    /// controller's round, or the CLI before its own change) leaves the
    /// same record.
    pub fn refusals(&self, outbox: &Outbox, node: &str) -> Vec<Event> {
        self.failed
            .iter()
            .map(|(c, why)| {
                tracing::error!(target_ip = %c.target, node = ?c.node, error = %why, moved_to = %outbox.failed_path().display(), "a queued change was refused; it was moved aside and is not applied");
                Event {
                    event_type: "change_refused".into(),
                    source_ip: Some(c.target.clone()),
                    severity: "error".into(),
                    details: json!({"change": c, "error": why, "moved_to": outbox.failed_path()}),
                    event_time: super::store::now(),
                    node: Some(node.to_string()),
                }
            })
            .collect()
    }
}

/// One line of the file: a change, or the bytes that were not one.
enum Line {
    Change(Change),
    Unreadable(Vec<u8>, String),
}

impl Outbox {
    /// An outbox whose drain holds allow entries to the default rails.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            widest: Widest::default(),
        }
    }

    /// Holds allow entries to the configured rails instead.
    pub fn with_widest(mut self, widest: Widest) -> Self {
        self.widest = widest;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the changes the database refused go.
    pub fn failed_path(&self) -> PathBuf {
        beside(&self.path, "failed")
    }

    /// Where lines that were not a change go.
    pub fn unreadable_path(&self) -> PathBuf {
        beside(&self.path, "unreadable")
    }

    fn locked(&self) -> io::Result<Flock<File>> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&self.path)?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    /// Queues a change, durably, on a line of its own even if the last
    /// writer was cut off mid-line.
    pub fn push(&self, c: &Change) -> io::Result<()> {
        let mut f = self.locked()?;
        let mut line = serde_json::to_string(c).map_err(io::Error::other)?;
        line.push('\n');
        if !ends_a_line(&mut f)? {
            line.insert(0, '\n');
        }
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
        Ok(read_lines(&f)?
            .into_iter()
            .filter_map(|l| match l {
                Line::Change(c) => Some(c),
                Line::Unreadable(..) => None,
            })
            .collect())
    }

    /// Writes the queued changes one at a time with `apply`, oldest first,
    /// all under the lock (a change queued meanwhile waits for the next
    /// round). A change the database refuses for good, or an allow entry
    /// wider than the rails (its replay would lift every ban it covers),
    /// goes to the `.failed` file and the next one is tried; any other failure stops the drain,
    /// and that change and every later one stay queued, in order. Lines
    /// that are not changes go to the `.unreadable` file. Nothing queued:
    /// no lock, no file.
    pub async fn drain<F, Fut>(&self, mut apply: F) -> Result<Drained, StoreError>
    where
        F: FnMut(Change) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        if !self.path.exists() {
            return Ok(Drained::default());
        }
        let io_err = |path: &Path| {
            let path = path.display().to_string();
            move |source: io::Error| StoreError::Dir { path, source }
        };
        let mut f = self.locked().map_err(io_err(&self.path))?;
        let lines = read_lines(&f).map_err(io_err(&self.path))?;
        if lines.is_empty() {
            return Ok(Drained::default());
        }
        let mut out = Drained::default();
        let mut keep: Vec<Change> = Vec::new();
        let mut stopped: Option<StoreError> = None;
        for line in lines {
            let c = match line {
                Line::Unreadable(bytes, why) => {
                    self.set_aside(&self.unreadable_path(), &bytes)
                        .map_err(io_err(&self.unreadable_path()))?;
                    tracing::warn!(path = %self.path.display(), moved_to = %self.unreadable_path().display(), error = %why, "outbox line is not a change; moved aside");
                    out.unreadable += 1;
                    continue;
                }
                Line::Change(c) => c,
            };
            if stopped.is_some() {
                keep.push(c);
                continue;
            }
            let result = match c.too_wide(&self.widest) {
                Some(why) => Err(StoreError::Data(format!(
                    "an allow-list entry too wide to replay: {why}"
                ))),
                None => apply(c.clone()).await,
            };
            match result {
                Ok(()) => out.written += 1,
                Err(e) if e.is_data_error() => {
                    let record = json!({"change": &c, "error": e.to_string()}).to_string();
                    self.set_aside(&self.failed_path(), record.as_bytes())
                        .map_err(io_err(&self.failed_path()))?;
                    out.failed.push((c, e.to_string()));
                }
                Err(e) => {
                    stopped = Some(e);
                    keep.push(c);
                }
            }
        }
        out.left = keep.len();
        let mut text = String::new();
        for c in &keep {
            text.push_str(
                &serde_json::to_string(c).map_err(|e| io_err(&self.path)(io::Error::other(e)))?,
            );
            text.push('\n');
        }
        f.set_len(0).map_err(io_err(&self.path))?;
        f.write_all(text.as_bytes()).map_err(io_err(&self.path))?;
        f.sync_data().map_err(io_err(&self.path))?;
        match stopped {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Appends a record to a side file, durably, before the outbox forgets
    /// it.
    fn set_aside(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(path)?;
        let mut rec = Vec::with_capacity(bytes.len() + 2);
        if !ends_a_line(&mut f)? {
            rec.push(b'\n');
        }
        rec.extend_from_slice(bytes);
        rec.push(b'\n');
        f.write_all(&rec)?;
        f.sync_data()
    }
}

fn beside(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Whether the file is empty or its last byte ends a line.
fn ends_a_line(f: &mut File) -> io::Result<bool> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    f.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// Every line, as bytes: a line that is not UTF-8 or not a change is kept
/// as it was, so it can be set aside instead of lost.
fn read_lines(f: &File) -> io::Result<Vec<Line>> {
    let mut bytes = Vec::new();
    (&*f).read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    for raw in bytes.split(|b| *b == b'\n') {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(raw)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Change>(t).map_err(|e| e.to_string()))
        {
            Ok(c) => out.push(Line::Change(c.canonical())),
            Err(why) => out.push(Line::Unreadable(raw.to_vec(), why)),
        }
    }
    Ok(out)
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
        let store = crate::db::connect(&format!("sqlite://{}/o.db", dir.display()))
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
        let d = ob
            .drain(|c| {
                let store = store.clone();
                async move { c.apply(&store, true).await.map(drop) }
            })
            .await
            .unwrap();
        // The line that was not a change went aside at the first drain.
        assert_eq!((d.written, d.unreadable, d.left), (2, 0, 0));
        assert_eq!(std::fs::read(ob.unreadable_path()).unwrap(), b"not json\n");
        assert!(ob.peek().unwrap().is_empty());
        let now = super::super::store::now();
        assert!(store.active_blocks(now).await.unwrap().is_empty());
        assert_eq!(store.allows().await.unwrap().len(), 1);
        let lifted = store.blocks_of("198.51.100.7").await.unwrap();
        assert_eq!(lifted.len(), 1);
        assert_eq!(lifted[0].unblocked_at, Some(ob_time(&store).await));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A queued unblock replayed after an outage lifts the rows blocked
    /// at or before the operator's command, at its time, and leaves a ban
    /// another node made a second later.
    #[tokio::test(flavor = "current_thread")]
    async fn a_replayed_unblock_lifts_only_what_was_blocked_when_it_was_given() {
        let (dir, _ob) = scratch("replay");
        let store = crate::db::connect(&format!("sqlite://{}/o.db", dir.display()))
            .await
            .unwrap();
        let now = super::super::store::now();
        let secs = chrono::Duration::seconds;
        let before = store
            .insert_block(
                "198.51.100.7",
                "r",
                "manual",
                now - secs(10),
                None,
                Some("n1"),
            )
            .await
            .unwrap();
        let exact = store
            .insert_block(
                "198.51.100.7",
                "r",
                "flood",
                now - secs(5),
                None,
                Some("n2"),
            )
            .await
            .unwrap();
        let after = store
            .insert_block(
                "198.51.100.7",
                "r",
                "flood",
                now - secs(4),
                None,
                Some("n2"),
            )
            .await
            .unwrap();
        let mut unblock = change(Op::Unblock, "198.51.100.7");
        unblock.at = now - secs(5);
        let applied = unblock.apply(&store, true).await.unwrap();
        assert_eq!(applied.rows, 2);
        let rows = store.blocks_of("198.51.100.7").await.unwrap();
        let lifted_at = |id| rows.iter().find(|r| r.id == id).unwrap().unblocked_at;
        assert!(lifted_at(before).is_some());
        assert!(lifted_at(exact).is_some());
        assert_eq!(
            lifted_at(after),
            None,
            "a ban made after the unblock was lifted"
        );
        for r in rows.iter().filter(|r| r.unblocked_at.is_some()) {
            assert!(r.unblocked_at.unwrap() >= r.blocked_at, "{r:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An allow entry queued wider than the rails (by an older build, or
    /// under wider rails) is set aside, not replayed: its replay would
    /// lift every ban it covers. The change after it is written.
    #[tokio::test(flavor = "current_thread")]
    async fn a_queued_allow_wider_than_the_rails_lifts_nothing() {
        let (dir, ob) = scratch("wide-allow");
        // Rails narrower than the defaults: a /12 is too wide.
        let ob = ob.with_widest(Widest { v4: 16, v6: 16 });
        let store = crate::db::connect(&format!("sqlite://{}/o.db", dir.display()))
            .await
            .unwrap();
        block("198.51.100.7", "flood")
            .apply(&store, false)
            .await
            .unwrap();
        // Spelled as the CLI spells them, and as a hand-written line might.
        let wide = [
            "0.0.0.0/0",
            "::/16",
            " 010.0.0.0/00 ",
            "::ffff:0.0.0.0/96",
            "0:0:0:0:0:ffff::/90",
            "198.48.0.0/12",
        ];
        for target in wide {
            let mut c = change(
                Op::Allow {
                    comment: "typed in an outage".into(),
                },
                "203.0.113.0/24",
            );
            c.target = target.into();
            ob.push(&c).unwrap();
        }
        ob.push(&block("198.51.100.8", "manual")).unwrap();
        let d = ob
            .drain(|c| {
                let store = store.clone();
                async move { c.apply_queued(&store).await }
            })
            .await
            .unwrap();
        assert_eq!(d.written, 1, "{d:?}");
        let refused: Vec<_> = d.failed.iter().map(|(c, _)| c.target.as_str()).collect();
        assert_eq!(
            refused,
            [
                "0.0.0.0/0",
                "::/16",
                "0.0.0.0/0",
                "0.0.0.0/0",
                "::ffc0:0:0/90",
                "198.48.0.0/12"
            ]
        );
        assert!(d.failed[0].1.contains("wider than /16"), "{:?}", d.failed);
        assert!(
            d.failed[1].1.contains("every IPv4 address"),
            "{:?}",
            d.failed
        );
        assert!(store.allows().await.unwrap().is_empty());
        let active: Vec<_> = store
            .active_blocks(super::super::store::now())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.ip_address)
            .collect();
        assert_eq!(active, ["198.51.100.7", "198.51.100.8"]);
        let aside = std::fs::read_to_string(ob.failed_path()).unwrap();
        assert_eq!(aside.lines().count(), wide.len(), "{aside}");
        let events = d.refusals(&ob, "n1");
        assert_eq!(events.len(), wide.len());
        assert!(events.iter().all(|e| e.event_type == "change_refused"));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn scratch(name: &str) -> (PathBuf, Outbox) {
        let dir = std::env::temp_dir().join(format!("sip-xdp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ob = Outbox::new(dir.join("outbox.jsonl"));
        (dir, ob)
    }

    fn block(target: &str, reason: &str) -> Change {
        change(
            Op::Block {
                reason: reason.into(),
                expires_at: None,
                source: "manual".into(),
            },
            target,
        )
    }

    /// A line that is not a change (cut off, not UTF-8) costs itself: the
    /// changes after it are written, and its bytes are kept aside.
    #[tokio::test(flavor = "current_thread")]
    async fn a_corrupt_line_loses_nothing_after_it() {
        let (dir, ob) = scratch("corrupt");
        ob.push(&block("198.51.100.1", "a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(ob.path()).unwrap();
        f.write_all(b"{\"op\":\"unbl\xff\xfe\n").unwrap();
        // A writer cut off mid-line: the next record still starts a line.
        f.write_all(b"{\"op\":\"block\"").unwrap();
        ob.push(&change(Op::Unblock, "198.51.100.1")).unwrap();
        ob.push(&block("198.51.100.2", "b")).unwrap();
        let mut seen = Vec::new();
        let d = ob
            .drain(|c| {
                seen.push(c.target.clone());
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!(seen, ["198.51.100.1", "198.51.100.1", "198.51.100.2"]);
        assert_eq!((d.written, d.unreadable), (3, 2));
        let aside = std::fs::read(ob.unreadable_path()).unwrap();
        assert!(aside.starts_with(b"{\"op\":\"unbl\xff\xfe\n"), "{aside:?}");
        assert!(ob.peek().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A change the database refuses for what it holds is moved to the
    /// `.failed` file and the next is written; a change that meets an
    /// outage stays, with every later one, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn refused_changes_move_aside_and_an_outage_keeps_the_rest() {
        let (dir, ob) = scratch("refused");
        for t in [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.4",
        ] {
            ob.push(&block(t, t)).unwrap();
        }
        let d = ob
            .drain(|c| async move {
                match c.target.as_str() {
                    "198.51.100.2" => Err(StoreError::Data("too long".into())),
                    "198.51.100.3" => Err(StoreError::Sql(sqlx::Error::PoolTimedOut)),
                    _ => Ok(()),
                }
            })
            .await;
        assert!(d.is_err());
        let left: Vec<String> = ob.peek().unwrap().into_iter().map(|c| c.target).collect();
        assert_eq!(left, ["198.51.100.3", "198.51.100.4"]);
        let failed = std::fs::read_to_string(ob.failed_path()).unwrap();
        assert_eq!(failed.lines().count(), 1);
        assert!(
            failed.contains("198.51.100.2") && failed.contains("too long"),
            "{failed}"
        );
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
