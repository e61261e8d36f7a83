//! `sip-xdp run`: the long-running controller on each SBC. Attaches (or
//! finds attached) the filter, then every sync interval expires old blocks,
//! reconciles the database with the kernel by difference, and writes its
//! buffered events. A database outage never clears anything in the kernel:
//! the last known lists stay enforced, events wait in memory, and reconnects
//! back off.

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use serde_json::json;
use sip_xdp_common::{
    maps::BanReason, Counter, KernelConfig, CONFIG_BAN_ALL, CONFIG_DROP_MALFORMED, CONFIG_MONITOR,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

mod feeds;
mod notify;

use notify::Notifier;

use crate::{
    alerts,
    config::{redact, Config, Overrides},
    db::{rows::RuleOrBad, store, EventBuffer, Store},
    detect::{
        act::{write_block, Defender, Env},
        flood::Now,
        overload::{Overload, Switch},
        sip::{self, SampleStats, Sampled},
        Detection,
    },
    guard::Guard,
    kernel::{clock, hot::Read, loader, one_controller::ControllerLock, ring, Maps, Pins, Sampler},
    metrics::Metrics,
    round::{self, RoundError, RoundInput, RoundOutput},
    sync::{Applier, Clocks, Synced},
    Error,
};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Controller {
    _lock: ControllerLock,
    /// When retention next deletes old rows, and the batch under way.
    prune_at: Instant,
    prune: Option<tokio::task::JoinHandle<bool>>,
    cfg: Config,
    overrides: Overrides,
    pins: Pins,
    maps: Maps,
    store: Option<Store>,
    db_error: Option<String>,
    db_down_since: Option<chrono::DateTime<Utc>>,
    db_retry_at: Instant,
    backoff: Duration,
    applier: Applier,
    events: EventBuffer,
    last_sync: Option<(chrono::DateTime<Utc>, Duration)>,
    /// The lists' fingerprint at their last full read, and when.
    lists_read: Option<(Vec<i64>, Instant)>,
    guard: Guard,
    defender: Defender,
    metrics: Option<Metrics>,
    sample_stats: Arc<SampleStats>,
    /// What the last sampling pass read, and how long it took.
    last_pass: Option<(Read, Duration)>,
    sampler: Sampler,
    overload: Overload,
    /// The database round under way, if any.
    round: Option<Round>,
    notify: Notifier,
    alerts: Option<std::sync::Arc<alerts::AlertStats>>,
    feeds: feeds::Desk,
    /// The last good trusted peers, and why the last read failed.
    trusted: Vec<crate::db::store::AllowRow>,
    trusted_error: Option<String>,
    /// The feeds' configuration changed on reload: restart them.
    feeds_changed: bool,
}

/// A database round under way: when it started, and what to confirm when
/// it succeeds.
struct Round {
    started: Instant,
    events_mark: u64,
    pending_n: usize,
    feeds: Vec<crate::db::feeds::FeedRows>,
    abort: tokio::task::AbortHandle,
}

type RoundResult = Result<RoundOutput, RoundError>;

/// How often the controller checks that every IPv4 ban in BANS is visible
/// through the index: a few batch reads (BANS and 2 MiB of index).
const HEAL_EVERY: Duration = Duration::from_secs(30);

/// How often retention looks for old rows when the last look found none
/// waiting.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Controller {
    /// Attaches to the configured interfaces (an existing attachment, for
    /// example from before a restart, is kept as it is) and applies the
    /// configured settings to the kernel.
    pub fn start(mut cfg: Config, overrides: Overrides, pins: Pins) -> anyhow::Result<Self> {
        overrides.apply(&mut cfg);
        if cfg.interfaces.is_empty() && !pins.is_loaded() {
            anyhow::bail!(
                "no interface to protect: give --iface IFACE or `interfaces` in the config file"
            );
        }
        let lock = ControllerLock::take(&pins)?;
        if pins.prog().exists() {
            // Programs pinned by another build are replaced in place here,
            // also when every interface is already attached.
            loader::load_or_open(&pins, cfg.capacities).context("loading the program")?;
        }
        for iface in &cfg.interfaces {
            match loader::attach(&pins, iface, cfg.mode, cfg.capacities) {
                Ok(mode) => tracing::info!(iface, mode = mode.name(), "attached"),
                Err(Error::AlreadyAttached { iface, mode }) => {
                    tracing::info!(iface, mode, "already attached: keeping the running filter")
                }
                Err(e) => return Err(e).with_context(|| format!("attaching to {iface}")),
            }
        }
        for k in crate::kernel::upgrade::kept_choices(&pins, &cfg.capacities) {
            tracing::warn!(
                map = k.map,
                kept = %k.kept,
                configured = %k.configured,
                "the pinned map keeps what it was created with; `sip-xdp detach --purge --iface IFACE` \
                 on each interface, then start again, applies the configuration (bans and lists come back \
                 from the database)"
            );
        }
        let mut maps = Maps::open(&pins)?;
        // Made right at every start: a process killed between its two
        // writes can leave the index a change behind BANS.
        match maps.rebuild_ban_index() {
            Ok((indexed, full)) => {
                tracing::info!(indexed, left_to_bans = full, "ban index rebuilt from BANS")
            }
            Err(e) => {
                tracing::warn!(error = %e, "rebuilding the ban index failed; the 30 s check indexes what the program cannot see")
            }
        }
        let defender = Defender::new(cfg.detect.clone());
        apply_settings(&mut maps, &cfg, &defender)?;
        let events = EventBuffer::new(cfg.event_buffer, Some(cfg.node.clone()));
        Ok(Self {
            _lock: lock,
            prune_at: Instant::now(),
            prune: None,
            cfg,
            overrides,
            pins,
            maps,
            store: None,
            db_error: None,
            db_down_since: None,
            db_retry_at: Instant::now(),
            backoff: Duration::from_secs(1),
            applier: Applier::default(),
            events,
            last_sync: None,
            lists_read: None,
            guard: Guard::for_this_host(),
            defender,
            metrics: None,
            sample_stats: Arc::new(SampleStats::default()),
            overload: Overload::default(),
            round: None,
            last_pass: None,
            sampler: Sampler::default(),
            notify: Notifier::from_env(),
            alerts: None,
            feeds: feeds::Desk::default(),
            trusted: Vec::new(),
            trusted_error: None,
            feeds_changed: false,
        })
    }

    /// Runs until SIGTERM or SIGINT; SIGHUP reloads the configuration file.
    pub async fn run(&mut self, detach_on_exit: bool) -> anyhow::Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        tracing::info!(
            node = %self.cfg.node,
            db = %redact(&self.cfg.db),
            interval_ms = self.cfg.sync_interval.as_millis() as u64,
            "controller running"
        );
        let mut tick = new_interval(self.cfg.sync_interval);
        let mut detect_tick = new_interval(self.defender.interval());
        let mut heal_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + HEAL_EVERY, HEAL_EVERY);
        heal_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Database rounds run as tasks of their own and report here.
        let (round_tx, mut round_rx) = mpsc::channel::<RoundResult>(4);
        // Samples are parsed off this loop; the queue is bounded and a full
        // queue drops (and counts) samples rather than stall the ring.
        let (tx, mut rx) = mpsc::channel::<Sampled>(4096);
        let _reader = match ring::open_ring(&self.pins)
            .and_then(|ring| sip::spawn_reader(ring, tx, self.sample_stats.clone()))
        {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "no packet samples: scanner and rate-limit reports are off (program loaded by an older version?)");
                None
            }
        };
        self.start_alerts();
        let mut feed_rx = self.start_feeds();
        let _metrics_server = match self.cfg.metrics {
            Some(addr) => {
                let (m, registry) = Metrics::new();
                self.metrics = Some(m);
                Some(crate::metrics::start(addr, registry).await?)
            }
            None => None,
        };
        // The watchdog is fed from this loop only: if it stalls, systemd
        // restarts the controller.
        let mut watchdog = new_interval(
            self.notify
                .ping_every()
                .unwrap_or(Duration::from_secs(3600)),
        );
        loop {
            tokio::select! {
                _ = watchdog.tick() => self.notify.ping(),
                _ = tick.tick() => self.cycle(&round_tx),
                _ = detect_tick.tick() => self.detect_pass().await,
                _ = heal_tick.tick() => self.heal_ban_index(),
                Some(s) = rx.recv() => self.sample(s),
                Some(r) = round_rx.recv() => self.finish_round(r),
                Some(r) = next_report(&mut feed_rx) => self.on_feed_report(r, &round_tx),
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    self.notify.reloading();
                    let r = self.reload();
                    self.notify.reloaded();
                    match r {
                        Ok(()) => {
                            if std::mem::take(&mut self.feeds_changed) {
                                feed_rx = self.start_feeds();
                            }
                            tick = new_interval(self.cfg.sync_interval);
                            detect_tick = new_interval(self.defender.interval());
                        }
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the old configuration"),
                    }
                }
            }
        }
        self.shut_down(detach_on_exit).await;
        Ok(())
    }

    async fn shut_down(&mut self, detach_on_exit: bool) {
        tracing::info!("stopping");
        self.notify.stopping();
        self.flush_on_exit().await;
        if detach_on_exit {
            for iface in &self.cfg.interfaces {
                if let Err(e) = loader::detach(&self.pins, iface, false) {
                    tracing::warn!(iface, error = %e, "detach failed");
                }
            }
        } else {
            tracing::info!("leaving the filter attached: the SBC stays protected");
        }
        let _ = std::fs::remove_file(&self.cfg.status_file);
    }

    /// Writes what is still buffered (ban rows, events) before exiting, for
    /// at most 5 s: a hung database must not keep the controller alive.
    async fn flush_on_exit(&mut self) {
        if let Some(store) = self.store.clone() {
            let pending = self.defender.pending_snapshot();
            let node = self.cfg.node.clone();
            let events = &mut self.events;
            let last = tokio::time::timeout(Duration::from_secs(5), async {
                for p in &pending {
                    write_block(&store, p, &node).await?;
                }
                events.flush(&store).await
            })
            .await;
            match last {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lost = self.events.len(), "could not write buffered events on exit")
                }
                Err(_) => {
                    tracing::warn!(
                        lost = self.events.len(),
                        "the database did not answer on exit: buffered events lost"
                    )
                }
            }
        }
    }

    fn reload(&mut self) -> anyhow::Result<()> {
        let Some(path) = self.cfg.path.clone() else {
            tracing::info!("SIGHUP: no configuration file to reload");
            return Ok(());
        };
        let mut new = Config::load(Some(&path))?;
        // The command line and environment still win over the file.
        self.overrides.apply(&mut new);
        let restart = needs_restart(&self.cfg, &new);
        // The kernel first: if it refuses a setting, the old detection
        // settings and kernel settings are put back and nothing else moves.
        let old_detect = self.cfg.detect.clone();
        self.defender.reconfigure(new.detect.clone());
        if let Err(e) = apply_settings(&mut self.maps, &new, &self.defender) {
            self.defender.reconfigure(old_detect);
            if let Err(back) = apply_settings(&mut self.maps, &self.cfg, &self.defender) {
                tracing::error!(error = %back, "could not put the old kernel settings back");
            }
            return Err(e.into());
        }
        self.lists_read = None;
        let alerts_changed = new.alerts != self.cfg.alerts;
        self.feeds_changed = new.feeds != self.cfg.feeds || new.geo_db != self.cfg.geo_db;
        if new.db != self.cfg.db {
            self.store = None;
            self.db_retry_at = Instant::now();
        }
        // What only a start can apply keeps its running value, so the
        // status and the next reload compare against what really runs.
        new.interfaces = self.cfg.interfaces.clone();
        new.mode = self.cfg.mode;
        new.metrics = self.cfg.metrics;
        new.event_buffer = self.cfg.event_buffer;
        new.capacities = self.cfg.capacities;
        new.state_dir = self.cfg.state_dir.clone();
        if restart.is_empty() {
            tracing::info!(path = %path.display(), db = %redact(&new.db), "configuration reloaded");
        } else {
            tracing::warn!(
                path = %path.display(),
                db = %redact(&new.db),
                needs_restart = %restart.join(", "),
                "configuration reloaded except settings only a restart applies (`systemctl restart sip-xdp`)"
            );
        }
        self.cfg = new;
        if alerts_changed {
            self.start_alerts();
        }
        Ok(())
    }

    fn start_feeds(&mut self) -> Option<mpsc::Receiver<crate::feed::Report>> {
        // Events about a source name its country when `[geo]` is set.
        let geo = self.cfg.geo_db.as_deref().and_then(|p| {
            crate::feed::geo::Db::open(p)
                .map_err(|e| tracing::warn!(error = %e, "events will not name countries"))
                .ok()
        });
        self.events.set_geo(geo);
        self.feeds.start(
            self.cfg.feeds.clone(),
            self.cfg.state_dir.clone(),
            self.guard.clone(),
        )
    }

    /// The trusted peers a round read, or the last good ones if it could
    /// not read them.
    fn trusted_peers(
        &mut self,
        read: Option<Result<Vec<crate::db::store::AllowRow>, String>>,
    ) -> Vec<crate::db::store::AllowRow> {
        match read {
            None => self.trusted.clear(),
            Some(Ok(rows)) => {
                if rows.len() != self.trusted.len() {
                    tracing::info!(
                        peers = rows.len(),
                        "trusted peers read from the address table"
                    );
                }
                self.trusted = rows;
                self.trusted_error = None;
            }
            Some(Err(e)) => {
                if self.trusted_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, kept = self.trusted.len(), "cannot read the trusted peers' address table: keeping the last good ones");
                }
                self.trusted_error = Some(e);
            }
        }
        self.trusted.clone()
    }

    /// Alerts from the configuration: a new sender (the old one ends with
    /// its queue), fed from every recorded event.
    fn start_alerts(&mut self) {
        match alerts::Alerts::start(&self.cfg.alerts, &self.cfg.node) {
            Some(a) => {
                self.alerts = Some(a.stats.clone());
                tracing::info!(
                    webhooks = self.cfg.alerts.webhooks.len(),
                    command = !self.cfg.alerts.command.is_empty(),
                    min_severity = %self.cfg.alerts.min_severity,
                    window_s = self.cfg.alerts.window.as_secs(),
                    "alerts on"
                );
                self.events.set_tap(Some(Box::new(move |e| a.offer(e))));
            }
            None => {
                self.alerts = None;
                self.events.set_tap(None);
            }
        }
    }

    /// One sync interval's work: starts a database round unless one is
    /// under way (abandoning one that has not answered in time), and
    /// writes the status file. Never waits on the database.
    /// Starts a retention batch when one is due and none is under way; a
    /// batch that found more to delete brings the next one forward.
    fn prune_old_rows(&mut self) {
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

    fn round_timeout(&self) -> Duration {
        (self.cfg.sync_interval * 3).max(Duration::from_secs(10))
    }

    fn start_round(&mut self, report: &mpsc::Sender<RoundResult>) {
        let maps = &self.maps;
        self.defender.drop_lifted_pending(|net| maps.holds(net));
        let (events, events_mark) = self.events.snapshot();
        let pending = self.defender.pending_snapshot();
        let pending_n = pending.len();
        let input = RoundInput {
            store: self.store.clone(),
            url: self.cfg.db.clone(),
            node: self.cfg.node.clone(),
            wall: store::now(),
            pending,
            events,
            failures: self.defender.failure_request(),
            outbox: crate::db::outbox::Outbox::new(&self.cfg.outbox),
            feeds: self.feeds.snapshot(),
            trusted: self.cfg.trusted.clone(),
            // Read in full now and then whatever the fingerprint says.
            known: self
                .lists_read
                .as_ref()
                .filter(|(_, at)| at.elapsed() < FULL_READ_EVERY)
                .map(|(fp, _)| fp.clone()),
        };
        let feeds = input.feeds.clone();
        let tx = report.clone();
        let task = tokio::spawn(async move {
            let _ = tx.send(round::run(input).await).await;
        });
        self.round = Some(Round {
            started: Instant::now(),
            events_mark,
            pending_n,
            feeds,
            abort: task.abort_handle(),
        });
    }

    /// Applies what a database round read and wrote.
    fn finish_round(&mut self, result: RoundResult) {
        // The answer of a round given up on is not trusted.
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
        self.events.confirm(round.events_mark);
        self.feeds.confirm(&round.feeds);
        self.defender
            .confirm_pending(round.pending_n, &out.refused_pending);
        self.db_error = None;
        if let Some(since) = self.db_down_since.take() {
            let secs = (Utc::now() - since).num_milliseconds() as f64 / 1000.0;
            tracing::info!(
                down_s = secs,
                buffered = self.events.len(),
                "database reachable again"
            );
            // Written by the next round, after everything buffered during
            // the outage.
            self.events.record(
                "db_reachable",
                None,
                "info",
                json!({"down_since": since.to_rfc3339(), "down_s": secs}),
            );
        }
        // Their `ip_unblocked` events were written by the round itself.
        for row in out.lifted {
            tracing::info!(src_ip = %row.ip_address, reason = "expired", id = row.id, source = ?row.source, "unblocked");
        }
        let peers_before = self.trusted.clone();
        let peers = self.trusted_peers(out.trusted);
        let applying = Instant::now();
        let synced = match out.lists {
            Some((mut blocks, mut allows)) => {
                self.lists_read = Some((out.fingerprint, Instant::now()));
                allows.extend(peers);
                blocks.extend(self.defender.pending_rules());
                blocks.extend(self.feeds.pending_rules());
                let defender = &mut self.defender;
                let synced = self.applier.apply(
                    &mut self.maps,
                    &self.guard,
                    blocks,
                    &allows,
                    out.undecoded,
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
        };
        let kernel = applying.elapsed();
        let took = out.took + kernel;
        synced.log(out.took, kernel);
        let feed_rows: usize = round.feeds.iter().map(|f| f.nets.len()).sum();
        if synced.installed + synced.removed >= crate::heap::BIG_JOB
            || feed_rows >= crate::heap::BIG_JOB
        {
            crate::heap::release_free_pages();
        }
        self.backoff = Duration::from_secs(1);
        self.last_sync = Some((Utc::now(), took));
        let found = self.defender.take_failures(out.failures);
        self.act_all(found);
        self.notify.state(self.service_status());
    }

    /// Indexes bans written to BANS behind the index (see
    /// `Maps::heal_ban_index`): without it the program would not see them
    /// until the next start.
    fn heal_ban_index(&mut self) {
        match self.maps.heal_ban_index() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                bans = n,
                "bans the ban index did not show were indexed (a command killed between its two writes, or a binary of another build)"
            ),
            Err(e) => tracing::warn!(error = %e, "checking the ban index against BANS failed"),
        }
    }

    /// One sampling unit: per-source counters for floods, the SBC's replies
    /// for brute force and enumeration, then metrics.
    pub async fn detect_pass(&mut self) {
        let started = Instant::now();
        let now = Instant::now();
        let mut found = Vec::new();
        let mut read = None;
        if self.defender.settings().enabled {
            let flood = &mut self.defender.flood;
            flood.begin(Now {
                at: now,
                kernel_ns: clock::coarse_ns(),
            });
            let r = self.sampler.pass(&self.maps, |k, t, filed| {
                if let Some(d) = flood.observe(k, t, filed) {
                    found.push(d);
                }
            });
            match r {
                Ok(r) => {
                    read = Some(r);
                    flood.end();
                }
                Err(e) => tracing::error!(error = %e, "reading per-source counters"),
            }
            match self.maps.reply_totals() {
                Ok(replies) => found.extend(self.defender.wire.pass(now, replies)),
                Err(e) => tracing::error!(error = %e, "reading reply counters"),
            }
        }
        let took = started.elapsed();
        self.last_pass = read.map(|r| (r, took));
        self.act_all(found);
        self.defender.prune_and_report(now, &mut self.events);
        self.follow_overload(now);
        self.update_metrics();
    }

    fn sample(&mut self, s: Sampled) {
        let found = self.defender.on_sample(Instant::now(), &s);
        self.act_all(found);
    }

    fn act_all(&mut self, found: Vec<Detection>) {
        if found.is_empty() {
            return;
        }
        let allowed = self.maps.list_allowed();
        let mut env = Env {
            maps: &mut self.maps,
            events: &mut self.events,
            guard: &self.guard,
            allowed: &allowed,
            metrics: self.metrics.as_ref(),
        };
        for d in found {
            self.defender.act(d, &mut env);
        }
    }

    /// One event and one log line when the kernel starts or stops shedding.
    fn follow_overload(&mut self, now: Instant) {
        let Ok(stats) = self.maps.stats() else {
            return;
        };
        let get = |c: Counter| stats.iter().find(|(k, _)| *k == c).map_or(0, |(_, n)| *n);
        let shed = get(Counter::Shed) + get(Counter::MonitorShed);
        let switch = self.overload.observe(now, shed, get(Counter::Sip));
        if let Some(m) = &self.metrics {
            m.overload(self.overload.shedding());
        }
        match switch {
            Some(Switch::Started {
                shed_pps,
                passed_pps,
            }) => {
                let budget = self.defender.settings().shedding.budget;
                tracing::warn!(
                    shed_pps,
                    passed_pps,
                    budget,
                    "overload: shedding unverified new sources"
                );
                self.events.record(
                    "overload_started",
                    None,
                    "critical",
                    json!({"shed_pps": shed_pps.round(), "passed_pps": passed_pps.round(), "budget_pps": budget}),
                );
            }
            Some(Switch::Ended { seconds, shed }) => {
                tracing::warn!(seconds, shed, "overload over: shedding stopped");
                self.events.record(
                    "overload_ended",
                    None,
                    "info",
                    json!({"seconds": seconds, "shed": shed}),
                );
            }
            None => {}
        }
    }

    fn update_metrics(&mut self) {
        let Some(m) = self.metrics.as_mut() else {
            return;
        };
        if let Ok(stats) = self.maps.stats() {
            m.kernel(&stats);
        }
        let mut by_reason: std::collections::BTreeMap<&'static str, u64> =
            BanReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
        let mono = clock::monotonic_ns();
        for (_, v) in self.maps.bans_raw() {
            if let Some(r) = BanReason::from_u32(v.reason) {
                if v.active_at(mono) {
                    *by_reason.entry(r.as_str()).or_default() += 1;
                }
            }
        }
        m.active_bans(&by_reason.into_iter().collect::<Vec<_>>());
        m.verified(self.maps.verified_now().len());
        let st = &self.sample_stats;
        m.samples([
            st.parsed.load(Ordering::Relaxed),
            st.malformed.load(Ordering::Relaxed),
            st.queue_full.load(Ordering::Relaxed) + st.invalid.load(Ordering::Relaxed),
        ]);
        if let Some((read, took)) = self.last_pass {
            m.pass(self.sampler.tracked(), read.sources, took.as_secs_f64());
        }
        let up = self.store.is_some() && self.db_error.is_none();
        let lag = self
            .last_sync
            .map(|(t, _)| (Utc::now() - t).num_milliseconds() as f64 / 1000.0);
        m.database(
            up,
            lag,
            self.last_sync.map(|(_, d)| d.as_secs_f64()),
            self.events.len(),
            self.events.dropped(),
        );
        m.feeds(&self.feeds.states);
        if let Some(a) = &self.alerts {
            use std::sync::atomic::Ordering::Relaxed;
            m.alerts([
                a.sent.load(Relaxed),
                a.failed.load(Relaxed),
                a.dropped.load(Relaxed),
            ]);
        }
    }

    fn db_failed(&mut self, msg: &str) {
        let msg = msg.to_string();
        if self.db_down_since.is_none() {
            let since = Utc::now();
            self.db_down_since = Some(since);
            // Buffered: it reaches the database when the database is back.
            self.events.record(
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
    fn db_state(&self) -> &'static str {
        match &self.db_error {
            None if self.store.is_some() => "reachable",
            Some(e) if e.starts_with(store::SCHEMA_MISMATCH) => "schema mismatch",
            _ => "unreachable",
        }
    }

    /// One line for `systemctl status`.
    fn service_status(&self) -> String {
        let ifaces: Vec<String> = self
            .pins
            .links()
            .into_iter()
            .map(|(i, m, _)| format!("{i} ({m})"))
            .collect();
        format!(
            "filtering on {}; database {}; {} events buffered",
            if ifaces.is_empty() {
                "no interface".into()
            } else {
                ifaces.join(", ")
            },
            match self.db_state() {
                "reachable" => "reachable",
                "schema mismatch" => "SCHEMA MISMATCH, kernel keeps enforcing",
                _ => "UNREACHABLE, kernel keeps enforcing",
            },
            self.events.len()
        )
    }

    /// A feed's news goes to the kernel and the database now, not at the
    /// next tick.
    fn on_feed_report(&mut self, r: crate::feed::Report, round_tx: &mpsc::Sender<RoundResult>) {
        if self.feeds.on_report(r) {
            self.enforce_feeds_now();
            if self.round.is_none() && Instant::now() >= self.db_retry_at {
                self.start_round(round_tx);
            }
        }
    }

    /// Puts a feed refresh's new entries in the kernel before their rows
    /// are written (a 100k-entry list takes the database seconds).
    fn enforce_feeds_now(&mut self) {
        let rows: Vec<RuleOrBad> = self.feeds.pending_rules().collect();
        let n = self
            .applier
            .install_ahead(&mut self.maps, &self.guard, rows, clocks());
        if n >= crate::heap::BIG_JOB {
            crate::heap::release_free_pages();
        }
    }

    fn write_status(&self) {
        let fill: Vec<_> = self
            .maps
            .fill(self.sampler.tracked())
            .into_iter()
            .map(|(m, n, max)| json!({"map": m, "entries": n, "max": max}))
            .collect();
        let v = json!({
            "pid": std::process::id(),
            "node": self.cfg.node,
            "db": redact(&self.cfg.db),
            "db_reachable": self.store.is_some() && self.db_error.is_none(),
            "db_state": self.db_state(),
            "db_error": self.db_error,
            "last_sync_at": self.last_sync.map(|(t, _)| t.to_rfc3339()),
            "last_sync_ms": self.last_sync.map(|(_, d)| d.as_millis() as u64),
            "sync_interval_ms": self.cfg.sync_interval.as_millis() as u64,
            "events_buffered": self.events.len(),
            "events_dropped": self.events.dropped(),
            "bans_pending_db": self.defender.pending(),
            "shedding": self.overload.shedding(),
            "verified_sources": self.maps.verified_now().len(),
            "tracked_sources": self.sampler.tracked(),
            "sampling_pass_sources": self.last_pass.map(|(r, _)| r.sources),
            "sampling_pass_full": self.last_pass.map(|(r, _)| r.full),
            "sampling_pass_ms": self.last_pass.map(|(_, d)| d.as_secs_f64() * 1000.0),
            "samples_parsed": self.sample_stats.parsed.load(Ordering::Relaxed),
            "samples_malformed": self.sample_stats.malformed.load(Ordering::Relaxed),
            "feeds": self.feeds.states,
            "written_at": Utc::now().to_rfc3339(),
            "maps": fill,
        });
        if let Err(e) = write_atomic(&self.cfg.status_file, &v.to_string()) {
            tracing::debug!(error = %e, path = %self.cfg.status_file.display(), "could not write the status file");
        }
    }
}

/// The longest the controller trusts the lists' fingerprint before it
/// reads them in full again.
const FULL_READ_EVERY: Duration = Duration::from_secs(30);

/// The wall clock and the kernel's, read together.
fn clocks() -> Clocks {
    Clocks {
        wall: store::now(),
        mono_ns: clock::monotonic_ns(),
    }
}

fn new_interval(every: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    i
}

/// Ports, monitor mode and malformed handling from the configuration, where
/// it sets them; the rest of the kernel state is left as it is.
/// The settings that differ between `old` and `new` and that only a start
/// applies: the attachments, the metrics listener, the event buffer's
/// size, the map sizes and where the feeds keep their state.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut differs = |name, d: bool| {
        if d {
            out.push(name);
        }
    };
    differs("interfaces", old.interfaces != new.interfaces);
    differs("mode", old.mode != new.mode);
    differs("metrics", old.metrics != new.metrics);
    differs("event_buffer", old.event_buffer != new.event_buffer);
    differs("max_* and source_lru", old.capacities != new.capacities);
    differs("state_dir", old.state_dir != new.state_dir);
    out
}

fn apply_settings(maps: &mut Maps, cfg: &Config, defender: &Defender) -> crate::Result<()> {
    if let Some(ports) = &cfg.ports {
        maps.set_ports(ports)?;
    }
    if let Some(ports) = &cfg.tcp_ports {
        maps.set_tcp_ports(ports)?;
    }
    let mut k: KernelConfig = maps.config()?;
    if let Some(scope) = cfg.ban_scope {
        k.flags = match scope {
            crate::config::BanScope::All => k.flags | CONFIG_BAN_ALL,
            crate::config::BanScope::Sip => k.flags & !CONFIG_BAN_ALL,
        };
    }
    if let Some(on) = cfg.monitor {
        k.flags = if on {
            k.flags | CONFIG_MONITOR
        } else {
            k.flags & !CONFIG_MONITOR
        };
    }
    if let Some(on) = cfg.drop_malformed {
        k.flags = if on {
            k.flags | CONFIG_DROP_MALFORMED
        } else {
            k.flags & !CONFIG_DROP_MALFORMED
        };
    }
    maps.set_config(defender.kernel_config(k))?;
    let lists = defender.rule_lists();
    // Validated with the configuration: a failure here is a bug.
    let table = sip_xdp_common::rules::compile(&lists).map_err(|e| crate::Error::Io {
        context: "compiling detect.deny".into(),
        source: std::io::Error::other(e),
    })?;
    crate::kernel::rules::install(maps, &table, lists.reads())
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// The next feed report, or never when no feed runs.
async fn next_report(
    rx: &mut Option<mpsc::Receiver<crate::feed::Report>>,
) -> Option<crate::feed::Report> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
