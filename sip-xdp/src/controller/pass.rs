//! The controller's detection side: one sampling pass over the kernel's
//! counters, samples from the ring, and acting on what the detectors find.

use super::*;

impl Controller {
    /// Indexes bans written to BANS behind the index (see
    /// `Maps::heal_ban_index`): without it the program would not see them
    /// until the next start.
    pub(super) fn heal_ban_index(&mut self) {
        match self.maps.heal_ban_index() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                bans = n,
                "bans the ban index did not show were indexed (a command killed between its two writes, or a binary of another build)"
            ),
            Err(e) => tracing::warn!(error = %e, "checking the ban index against BANS failed"),
        }
    }

    /// `sip-xdp attach` of another build, run beside this controller,
    /// replaces the program and the maps whose layout it changed: the
    /// handles kept since the start would read retired maps. When the
    /// pinned stamp moves, the maps are opened again.
    fn follow_replaced_maps(&mut self) {
        let Some(stamp) = crate::kernel::upgrade::pinned_stamp(&self.pins) else {
            return;
        };
        if stamp == self.stamp {
            return;
        }
        match Maps::open(&self.pins) {
            Ok(m) => {
                self.maps = m;
                self.stamp = stamp;
                tracing::error!(
                    "another build replaced the pinned program: maps opened again; restart the controller on that build"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "another build replaced the pinned program, and its maps could not be opened")
            }
        }
    }

    /// The kernel's copies the program trusts, checked against what they
    /// copy: the ban index against BANS; the allow hint against the trie
    /// (stale bits cleared); the proof hint against the verified (bits a
    /// race lost set again), and, hourly, rebuilt from the verified and
    /// the remembered (clearing what lapsed).
    pub(super) fn heal(&mut self) {
        self.follow_replaced_maps();
        self.heal_ban_index();
        match self.maps.check_allow_hint() {
            Ok(c) if c.missing > 0 => tracing::warn!(
                words = c.missing,
                "allow-list entries lacked their bits in the allow hint and were given them (an entry written by a binary of another build)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checking the allow hint failed"),
        }
        let now = Instant::now();
        let rebuild = self
            .memory
            .hinted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= memory::REBUILD_PROOF_HINT);
        let done = if rebuild {
            self.maps.build_proof_hint()
        } else {
            self.maps.check_proof_hint()
        };
        match done {
            Ok(words) => {
                if rebuild {
                    self.memory.hinted_at = Some(now);
                }
                tracing::debug!(words, rebuild, "proof hint checked");
            }
            Err(e) => tracing::warn!(error = %e, "checking the proof hint failed"),
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
            let r = self.sampler.pass(&mut self.maps, |k, t, filed| {
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
        self.defender.prune_and_report(now, &mut self.journal);
        self.follow_overload(now);
        self.follow_admission();
        self.record_proofs(now);
        self.update_metrics();
    }

    /// New proofs of address among the verified sources, to the journal
    /// for the memory of good clients, once per sync interval: written by
    /// the round that follows.
    fn record_proofs(&mut self, now: Instant) {
        let every = self.cfg.sync_interval.max(memory::HARVEST_AT_MOST);
        if self.remember().is_none()
            || self
                .memory
                .harvested_at
                .is_some_and(|at| now.saturating_duration_since(at) < every)
        {
            return;
        }
        let verified = self.maps.verified_until();
        for p in self.memory.harvest(verified, now, store::now()) {
            self.journal.prove(p);
        }
    }

    /// The admission the kernel applies in overload, following the CPUs
    /// that run the program and the SIP server's health: written when it
    /// moves.
    fn follow_admission(&mut self) {
        let per_cpu = match self.maps.packets_per_cpu() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "reading counters per CPU");
                return;
            }
        };
        let drops = crate::sockets::rcvbuf_errors();
        let changed = self.defender.admission.observe(&per_cpu, drops);
        if !changed.cpus && changed.share.is_none() {
            return;
        }
        let a = &self.defender.admission;
        match changed.share {
            Some(share) if share < 1.0 => tracing::warn!(
                share,
                cpus = a.cpus(),
                "the SIP server is falling behind (its sockets' receive buffers overflow): the strangers' share in overload shrinks"
            ),
            Some(share) => tracing::info!(share, cpus = a.cpus(), "strangers' share in overload back in full"),
            None => tracing::info!(cpus = a.cpus(), "the load mark is split over the CPUs that run the program"),
        }
        let written = self
            .maps
            .config()
            .and_then(|k| self.maps.set_config(self.defender.kernel_config(k)));
        if let Err(e) = written {
            tracing::error!(error = %e, "writing the admission settings");
        }
    }

    pub(super) fn sample(&mut self, s: Sampled) {
        let found = self.defender.on_sample(Instant::now(), &s);
        self.act_all(found);
    }

    pub(super) fn act_all(&mut self, found: Vec<Detection>) {
        if found.is_empty() {
            return;
        }
        let allowed = self.maps.list_allowed();
        let mut env = Env {
            maps: &mut self.maps,
            journal: &mut self.journal,
            guard: &self.guard,
            allowed: &allowed,
            metrics: self.metrics.as_ref(),
        };
        for d in found {
            self.defender.act(d, &mut env);
        }
    }

    /// One event and one log line when the kernel starts or stops shedding.
    pub(super) fn follow_overload(&mut self, now: Instant) {
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
                self.journal.record(
                    "overload_started",
                    None,
                    "critical",
                    json!({"shed_pps": shed_pps.round(), "passed_pps": passed_pps.round(), "budget_pps": budget}),
                );
            }
            Some(Switch::Ended { seconds, shed }) => {
                tracing::warn!(seconds, shed, "overload over: shedding stopped");
                self.journal.record(
                    "overload_ended",
                    None,
                    "info",
                    json!({"seconds": seconds, "shed": shed}),
                );
            }
            None => {}
        }
    }
}
