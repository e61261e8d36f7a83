//! The controller's database rounds: starting one off the loop, applying
//! what it read and wrote (the kernel through the sync, the journal, the
//! detectors), and what an outage does (back-off, events, status).

use super::*;
use crate::db::store::{AllowRow, Undecoded};

/// A database round under way: when it started, and what to confirm when
/// it succeeds.
pub(super) struct Round {
    id: u64,
    started: Instant,
    mark: Mark,
    /// What it reads of the memory of good clients.
    memory: Option<crate::round::MemoryRead>,
    /// Feed entries the round writes.
    feed_rows: usize,
    abort: tokio::task::AbortHandle,
}

/// A round's answer, with the number of the round that gives it.
pub(super) type RoundResult = (u64, Result<RoundOutput, RoundError>);

/// Numbers the rounds, so that the answer of a round given up on is never
/// taken for the answer of the one that followed it.
static ROUNDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The longest the controller trusts the lists' fingerprint before it
/// reads them in full again.
pub(super) const FULL_READ_EVERY: Duration = Duration::from_secs(30);

/// The wall clock and the kernel's, read together.
fn clocks() -> Clocks {
    Clocks {
        wall: store::now(),
        mono_ns: clock::monotonic_ns(),
    }
}

impl Controller {
    /// One sync interval's work: starts a database round unless one is
    /// under way (abandoning one that has not answered in time), and
    /// writes the status file. Never waits on the database.
    /// Starts a retention batch when one is due and none is under way; a
    /// batch that found more to delete brings the next one forward.
    pub(super) fn prune_old_rows(&mut self) {
        if let Some(task) = &self.prune {
            if !task.is_finished() {
                return;
            }
            let more = self
                .prune
                .take()
                .and_then(futures_util::FutureExt::now_or_never)
                .and_then(Result::ok);
            if more == Some(true) {
                self.prune_at = Instant::now();
            }
        }
        let Some(store) = self.store.clone() else {
            return;
        };
        if self.db_error.is_some() || Instant::now() < self.prune_at {
            return;
        }
        self.prune_at = Instant::now() + PRUNE_EVERY;
        let settings = self.cfg.retention.clone();
        self.prune = Some(tokio::spawn(crate::db::retention::prune_in_background(
            store, settings,
        )));
    }

    pub fn cycle(&mut self, report: &mpsc::Sender<RoundResult>) {
        self.prune_old_rows();
        match &self.round {
            Some(r) if r.started.elapsed() > self.round_timeout() => {
                r.abort.abort();
                self.round = None;
                // A connection that hangs is not trusted again.
                self.store = None;
                let msg = format!(
                    "the database did not answer within {} s",
                    self.round_timeout().as_secs()
                );
                self.db_failed(&msg);
            }
            Some(_) => {}
            None if Instant::now() >= self.db_retry_at => self.start_round(report),
            None => {}
        }
        self.write_status();
    }

    pub(super) fn round_timeout(&self) -> Duration {
        (self.cfg.sync_interval * 3).max(Duration::from_secs(10))
    }

    pub(super) fn start_round(&mut self, report: &mpsc::Sender<RoundResult>) {
        let maps = &self.maps;
        let lifted = self.journal.drop_lifted(|net| maps.holds(net));
        self.defender.forget_bans(&lifted);
        let (batch, mark) = self.journal.snapshot();
        let feed_rows = batch.feed_entries();
        let input = RoundInput {
            store: self.store.clone(),
            url: self.cfg.db.clone(),
            node: self.cfg.node.clone(),
            wall: store::now(),
            batch,
            failures: self.defender.failure_request(),
            outbox: crate::db::outbox::Outbox::new(&self.cfg.outbox).with_widest(self.cfg.widest),
            trusted: self.cfg.trusted.clone(),
            // Read in full now and then whatever the fingerprint says.
            known: self
                .lists_read
                .as_ref()
                .filter(|(_, at)| at.elapsed() < FULL_READ_EVERY)
                .map(|(fp, _)| fp.clone()),
            memory: self
                .remember()
                .map(|r| self.memory.read(r, store::now(), Instant::now())),
        };
        let memory = input.memory;
        let tx = report.clone();
        let id = ROUNDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let _ = tx.send((id, round::run(input).await)).await;
        });
        self.round = Some(Round {
            id,
            started: Instant::now(),
            mark,
            memory,
            feed_rows,
            abort: task.abort_handle(),
        });
    }

    /// Applies what a database round read and wrote.
    pub(super) fn finish_round(&mut self, (id, result): RoundResult) {
        // The answer of a round given up on is not trusted: its copy of the
        // journal is not the one the round under way will confirm.
        if self.round.as_ref().is_none_or(|r| r.id != id) {
            return;
        }
        let Some(round) = self.round.take() else {
            return;
        };
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                self.store = e.store;
                self.db_failed(&e.error.to_string());
                return;
            }
        };
        if out.connected {
            tracing::info!(
                db = %redact(&self.cfg.db),
                kind = out.store.kind(),
                clock_offset_s = out.store.skew().num_milliseconds() as f64 / 1000.0,
                "database connected"
            );
        }
        if let Some(m) = &self.metrics {
            m.db_clock(out.store.skew().num_milliseconds() as f64 / 1000.0);
        }
        self.store = Some(out.store);
        self.journal.confirm(&round.mark, &out.refused_pending);
        if out.proofs_written {
            self.journal.confirm_proofs(&round.mark);
        }
        self.db_error = None;
        self.reachable_again();
        // Their `ip_unblocked` events were written by the round itself.
        for row in out.lifted {
            tracing::info!(src_ip = %row.ip_address, reason = "expired", id = row.id, source = ?row.source, "unblocked");
        }
        let applying = Instant::now();
        let synced = self.sync_kernel(out.lists, out.fingerprint, out.undecoded, out.trusted);
        let kernel = applying.elapsed();
        let took = out.took + kernel;
        synced.log(out.took, kernel);
        for s in synced.skipped.iter().filter(|s| s.refused) {
            self.notices.skipped(&mut self.journal, s);
        }
        // One sync names at most a screenful as events; the log has the
        // count of the rest.
        for c in synced
            .covers
            .iter()
            .take(crate::controller::notices::EACH_SYNC)
        {
            self.notices.covered(&mut self.journal, c);
        }
        if synced.covers.len() > crate::controller::notices::EACH_SYNC {
            tracing::warn!(
                covering = synced.covers.len(),
                recorded = crate::controller::notices::EACH_SYNC,
                "block entries cover verified sources or trusted peers: the first are recorded as events"
            );
        }
        let feed_rows = round.feed_rows;
        if synced.installed + synced.removed >= crate::heap::BIG_JOB
            || feed_rows >= crate::heap::BIG_JOB
        {
            crate::heap::release_free_pages();
        }
        self.backoff = Duration::from_secs(1);
        self.last_sync = Some((Utc::now(), took));
        let found = self.defender.take_failures(out.failures);
        self.act_all(found);
        if let Some(read) = &round.memory {
            self.load_memory(read, &out.remembered);
        }
        self.notify.state(self.service_status());
    }

    /// How long proofs of address are remembered, when they are.
    pub(super) fn remember(&self) -> Option<Duration> {
        let r = self.defender.settings().shedding.remember;
        (!r.is_zero()).then_some(r)
    }

    /// What a round read of the memory of good clients, into the kernel.
    fn load_memory(&mut self, read: &crate::round::MemoryRead, rows: &[store::Proven]) {
        let Some(remember) = self.remember() else {
            return;
        };
        let c = clocks();
        let entries = self
            .memory
            .apply(read, rows, remember, (c.wall, c.mono_ns), Instant::now());
        let mut loaded = 0;
        for (ip, until) in entries {
            match self.maps.remember(ip, until) {
                Ok(()) => loaded += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "remembering clients in the kernel failed");
                    break;
                }
            }
        }
        if loaded >= 100 {
            tracing::info!(
                clients = loaded,
                "remembered clients loaded into the kernel"
            );
        }
    }

    /// Ends an outage: one log line, and one event written by the next
    /// round after everything buffered during it.
    fn reachable_again(&mut self) {
        if let Some(since) = self.db_down_since.take() {
            let secs = (Utc::now() - since).num_milliseconds() as f64 / 1000.0;
            tracing::info!(
                down_s = secs,
                buffered = self.journal.len(),
                "database reachable again"
            );
            // Written by the next round, after everything buffered during
            // the outage.
            self.journal.record(
                "db_reachable",
                None,
                "info",
                json!({"down_since": since.to_rfc3339(), "down_s": secs}),
            );
        }
    }

    /// The kernel brought in line with the lists a round read (with the
    /// trusted peers and what the journal has not written yet); nothing
    /// when the lists' fingerprint said they had not moved.
    fn sync_kernel(
        &mut self,
        lists: Option<(Vec<RuleOrBad>, Vec<AllowRow>)>,
        fingerprint: Vec<i64>,
        undecoded: Vec<Undecoded>,
        trusted: Option<Result<Vec<AllowRow>, String>>,
    ) -> Synced {
        let peers_before = self.trusted.clone();
        let peers = self.trusted_peers(trusted);
        match lists {
            Some((mut blocks, allows)) => {
                self.lists_read = Some((fingerprint, Instant::now()));
                blocks.extend(self.journal.pending_rules());
                let defender = &mut self.defender;
                let synced = self.applier.apply(
                    &mut self.maps,
                    &self.guard,
                    Rows {
                        blocks,
                        allows: &allows,
                        trusted: &peers,
                        undecoded,
                    },
                    clocks(),
                    |listed| defender.forget_unlisted(listed),
                );
                if self.applier.waiting() {
                    // Removals in their cycle of grace need the next look.
                    self.lists_read = None;
                }
                synced
            }
            None => {
                // The tables are as the last full read found them, and the
                // kernel as that sync left it (bans made since are in it
                // already). New trusted peers need the lists: next round.
                if peers != peers_before {
                    self.lists_read = None;
                }
                Synced::default()
            }
        }
    }

    pub(super) fn db_failed(&mut self, msg: &str) {
        let msg = msg.to_string();
        if self.db_down_since.is_none() {
            let since = Utc::now();
            self.db_down_since = Some(since);
            // Buffered: it reaches the database when the database is back.
            self.journal.record(
                "db_unreachable",
                None,
                "warning",
                json!({"error": msg, "since": since.to_rfc3339()}),
            );
        }
        if self.db_error.as_deref() != Some(msg.as_str()) {
            if msg.starts_with(store::SCHEMA_MISMATCH) {
                tracing::error!(
                    error = %msg,
                    retry_in_s = self.backoff.as_secs(),
                    "the database's tables lack what sip-xdp needs: the kernel keeps enforcing the last known lists"
                );
            } else {
                tracing::warn!(
                    error = %msg,
                    retry_in_s = self.backoff.as_secs(),
                    "database unreachable: the kernel keeps enforcing the last known lists"
                );
            }
        }
        self.db_error = Some(msg);
        self.db_retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.notify.state(self.service_status());
    }

    /// The database as `status` names it: reachable, unreachable, or
    /// reachable with tables that lack what sip-xdp needs.
    pub(super) fn db_state(&self) -> &'static str {
        match &self.db_error {
            None if self.store.is_some() => "reachable",
            Some(e) if e.starts_with(store::SCHEMA_MISMATCH) => "schema mismatch",
            _ => "unreachable",
        }
    }

    /// A feed's news goes to the kernel and the database now, not at the
    /// next tick.
    pub(super) fn on_feed_report(
        &mut self,
        r: crate::feed::Report,
        round_tx: &mpsc::Sender<RoundResult>,
    ) {
        let (rows, refused) = self.feeds.on_report(r);
        if let Some((list, refused)) = refused {
            self.notices
                .feed_refused(&mut self.journal, &list, &refused);
        }
        let news = rows.is_some_and(|rows| self.journal.feed(rows));
        if news {
            self.enforce_feeds_now();
            if self.round.is_none() && Instant::now() >= self.db_retry_at {
                self.start_round(round_tx);
            }
        }
    }

    /// Puts a feed refresh's new entries in the kernel before their rows
    /// are written (a 100k-entry list takes the database seconds).
    pub(super) fn enforce_feeds_now(&mut self) {
        let rows: Vec<RuleOrBad> = self.journal.feed_rules().collect();
        let n = self
            .applier
            .install_ahead(&mut self.maps, &self.guard, rows, clocks());
        if n >= crate::heap::BIG_JOB {
            crate::heap::release_free_pages();
        }
    }
}
