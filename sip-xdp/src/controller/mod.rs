//! `sip-xdp run`: the long-running controller on each SBC. Attaches (or
//! finds attached) the filter, then every sync interval expires old blocks,
//! reconciles the database with the kernel by difference, and writes its
//! buffered events. A database outage never clears anything in the kernel:
//! the last known lists stay enforced, events wait in memory, and reconnects
//! back off.
//!
//! May import every layer but `cli`; only `cli` imports it.

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
mod memory;
mod notices;
mod notify;
mod pass;
mod rounds;
mod status;

use notify::Notifier;

use crate::{
    alerts,
    config::{redact, Config, Overrides},
    db::{journal::Mark, rows::RuleOrBad, store, Journal, Store},
    detect::{
        act::{Defender, Env},
        flood::Now,
        overload::{Overload, Switch},
        sip::{self, SampleStats, Sampled},
        Detection,
    },
    guard::Guard,
    kernel::{clock, hot::Read, loader, one_controller::ControllerLock, ring, Maps, Pins, Sampler},
    metrics::Metrics,
    round::{self, RoundError, RoundInput, RoundOutput},
    sync::{Applier, Clocks, Rows, Synced},
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
    /// Writes waiting for the database: events, ban rows, feed rows.
    journal: Journal,
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
    /// The memory of good clients: proofs to record, rows to load.
    memory: memory::Memory,
    /// The database round under way, if any.
    round: Option<Round>,
    notify: Notifier,
    alerts: Option<std::sync::Arc<alerts::AlertStats>>,
    feeds: feeds::Desk,
    /// What the lists hold that the operator must hear of.
    notices: notices::Notices,
    /// The pinned program's stamp the maps were opened with.
    stamp: u64,
    /// The last good trusted peers, and why the last read failed.
    trusted: Vec<crate::db::store::AllowRow>,
    trusted_error: Option<String>,
    /// The feeds' configuration changed on reload: restart them.
    feeds_changed: bool,
}

/// How often the controller checks that every IPv4 ban in BANS is visible
/// through the index: a few batch reads (BANS and 2 MiB of index).
const HEAL_EVERY: Duration = Duration::from_secs(30);

/// How often retention looks for old rows when the last look found none
/// waiting.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

use rounds::{Round, RoundResult};

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
        let journal = Journal::new(cfg.event_buffer, Some(cfg.node.clone()));
        let widest = cfg.widest;
        let stamp = crate::kernel::upgrade::pinned_stamp(&pins).unwrap_or_default();
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
            journal,
            last_sync: None,
            lists_read: None,
            guard: Guard::for_this_host().with_widest(widest),
            defender,
            metrics: None,
            sample_stats: Arc::new(SampleStats::default()),
            overload: Overload::default(),
            memory: memory::Memory::default(),
            round: None,
            last_pass: None,
            sampler: Sampler::default(),
            notify: Notifier::from_env(),
            alerts: None,
            feeds: feeds::Desk::default(),
            trusted: Vec::new(),
            trusted_error: None,
            notices: notices::Notices::default(),
            stamp,
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
                _ = heal_tick.tick() => self.heal(),
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
            let (journal, node) = (&mut self.journal, self.cfg.node.as_str());
            let last =
                tokio::time::timeout(Duration::from_secs(5), journal.flush(&store, node)).await;
            match last {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lost = self.journal.len(), "could not write buffered events on exit")
                }
                Err(_) => {
                    tracing::warn!(
                        lost = self.journal.len(),
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
        self.feeds_changed = new.feeds != self.cfg.feeds
            || new.geo_db != self.cfg.geo_db
            || new.widest != self.cfg.widest;
        self.guard = self.guard.clone().with_widest(new.widest);
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
                .map(|db| Box::new(move |ip| db.country(ip)) as crate::db::journal::CountryOf)
        });
        self.journal.set_geo(geo);
        let rx = self.feeds.start(
            self.cfg.feeds.clone(),
            self.cfg.state_dir.clone(),
            self.guard.clone(),
        );
        let feeds = &self.feeds;
        self.journal.keep_feeds(|name| feeds.has(name));
        rx
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
                self.journal.set_tap(Some(Box::new(move |e| a.offer(e))));
            }
            None => {
                self.alerts = None;
                self.journal.set_tap(None);
            }
        }
    }
}

fn new_interval(every: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    i
}

/// The settings that differ between `old` and `new` and that only a start
/// applies: the attachments, the metrics listener, the journal's event
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

/// Ports, monitor mode and malformed handling from the configuration, where
/// it sets them; the rest of the kernel state is left as it is.
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

/// The next feed report, or never when no feed runs.
async fn next_report(
    rx: &mut Option<mpsc::Receiver<crate::feed::Report>>,
) -> Option<crate::feed::Report> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
