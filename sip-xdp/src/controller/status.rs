//! What the controller shows: metrics, the status file `sip-xdp status`
//! reads, and systemd's one-line status.

use super::*;

pub(super) fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

impl Controller {
    pub(super) fn update_metrics(&mut self) {
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
            self.journal.len(),
            self.journal.dropped(),
        );
        m.feeds(self.feeds.states.iter().map(|(name, s)| {
            let figures = crate::metrics::FeedFigures {
                entries: s.entries,
                refreshed_at: s.last_ok.map(|t| t.timestamp()),
                failures: s.failures,
            };
            (name, figures)
        }));
        if let Some(a) = &self.alerts {
            use std::sync::atomic::Ordering::Relaxed;
            m.alerts([
                a.sent.load(Relaxed),
                a.failed.load(Relaxed),
                a.dropped.load(Relaxed),
            ]);
        }
    }

    /// One line for `systemctl status`.
    pub(super) fn service_status(&self) -> String {
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
            self.journal.len()
        )
    }

    pub(super) fn write_status(&self) {
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
            "events_buffered": self.journal.len(),
            "events_dropped": self.journal.dropped(),
            "bans_pending_db": self.journal.bans_waiting(),
            "shedding": self.overload.shedding(),
            "verified_sources": self.maps.verified_now().len(),
            "tracked_sources": self.sampler.tracked(),
            "sampling_pass_sources": self.last_pass.map(|(r, _)| r.sources),
            "sampling_pass_full": self.last_pass.map(|(r, _)| r.full),
            "sampling_pass_ms": self.last_pass.map(|(_, d)| d.as_secs_f64() * 1000.0),
            "samples_parsed": self.sample_stats.parsed.load(Ordering::Relaxed),
            "samples_malformed": self.sample_stats.malformed.load(Ordering::Relaxed),
            "feeds": self.feeds.states,
            "list_notices": self.notices.latest().collect::<Vec<_>>(),
            "written_at": Utc::now().to_rfc3339(),
            "maps": fill,
        });
        if let Err(e) = write_atomic(&self.cfg.status_file, &v.to_string()) {
            tracing::debug!(error = %e, path = %self.cfg.status_file.display(), "could not write the status file");
        }
    }
}
