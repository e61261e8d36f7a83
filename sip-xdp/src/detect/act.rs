//! Acting on detections: every ban is enforced in the kernel at once and
//! recorded three ways (a `blocked_ips` row with its detector as `source`,
//! `security_events` rows, one log line), and counted in the metrics.
//! Sources on the ignore list, the allow-list, loopback or this host's own
//! addresses are never banned; repeat offenders get longer bans.
//!
//! The log line is stable for fail2ban and log shippers, and only a ban
//! writes it (target `sip_xdp::ban`, whatever module bans):
//! `WARN sip_xdp::ban: banned src_ip=203.0.113.7 reason=flood count=412 limit=30 window_s=2 ban_s=120 offence=1`
//! (tracing's key=value form, after the timestamp). The shipped fail2ban
//! filter matches it from the level on, so no other line (`detected, not
//! banned`, a row the store skipped) can stand for it.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use chrono::NaiveDateTime;
use ipnet::IpNet;
use serde_json::json;

use sip_xdp_common::{
    maps::{SampleKind, Trust},
    KernelConfig,
};

use super::{
    admission::Admission,
    brute::{BruteForce, Failure},
    cap::BanCap,
    escalate::Escalation,
    flood::Flood,
    scanner::Scanner,
    sip::Sampled,
    wire::Wire,
    Detection, Reason, Settings,
};
use crate::{
    db::{
        journal::{Journal, PendingBlock},
        store::{self, FailureBatch, FAILURE_TABLES},
    },
    guard::{overlaps, Guard},
    kernel::{clock, KernelLists},
    metrics::Metrics,
    parse::spelling,
};
use sip_xdp_common::addr::{ip_of, key_of, prefix_key};

/// Failure rows read per table per query.
pub const FAILURE_BATCH: i64 = 5000;

/// What `failure_request` asks the database for.
#[derive(Clone, Copy, Debug)]
pub struct FailureRequest {
    pub since: NaiveDateTime,
    pub cursors: [Option<i64>; 2],
}

/// What acting needs from the controller.
pub struct Env<'a> {
    pub maps: &'a mut dyn KernelLists,
    pub journal: &'a mut Journal,
    pub guard: &'a Guard,
    /// The kernel's allow-list, read once per batch of detections.
    pub allowed: &'a [IpNet],
    pub metrics: Option<&'a Metrics>,
}

pub struct Defender {
    settings: Settings,
    pub flood: Flood,
    pub scanner: Scanner,
    pub brute: BruteForce,
    pub wire: Wire,
    escalation: Escalation,
    cap: BanCap,
    /// What the kernel admits in overload.
    pub admission: Admission,
    /// Verified sources as last read, for prefix bans.
    verified: Option<(Instant, Vec<(IpAddr, Trust)>)>,
    /// Detector bans in force, so one attack is banned (and recorded) once.
    banned_until: HashMap<IpAddr, Instant>,
    /// Monitor mode: detections reported as `would_ban`, once per ban
    /// length.
    would_until: HashMap<IpAddr, Instant>,
    /// Detections not acted on (ignored), remembered so a busy trunk on the
    /// ignore list is reported once per ban length, not every unit.
    quiet_until: HashMap<IpAddr, Instant>,
    cursors: [Option<i64>; 2],
}

impl Defender {
    pub fn new(settings: Settings) -> Self {
        Self {
            flood: {
                let mut f = Flood::new(settings.flood.clone(), settings.interval);
                f.set_cpus(aya::util::nr_cpus().map_or(1, |n| n as u32));
                f
            },
            scanner: Scanner::new(settings.scanner.clone()),
            brute: BruteForce::new(settings.brute_force.clone()),
            wire: Wire::new(settings.brute_force.clone(), settings.scanner.clone()),
            escalation: Escalation::new(settings.escalation.clone()),
            cap: BanCap::new(settings.max_bans_per_sec),
            admission: Admission::new(
                settings.shedding.clone(),
                bucket_seed(),
                aya::util::online_cpus().map_or(1, |c| c.len() as u32),
            ),
            verified: None,
            settings,
            banned_until: HashMap::new(),
            would_until: HashMap::new(),
            quiet_until: HashMap::new(),
            cursors: [None, None],
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New settings after SIGHUP; detector state is kept.
    pub fn reconfigure(&mut self, s: Settings) {
        self.flood.set(s.flood.clone(), s.interval);
        self.scanner.set(s.scanner.clone());
        self.brute.set(s.brute_force.clone());
        self.wire.set(s.brute_force.clone(), s.scanner.clone());
        self.escalation.set(s.escalation.clone());
        self.cap.set(s.max_bans_per_sec);
        self.admission.set(s.shedding.clone());
        if s.shedding.grey.is_some() {
            tracing::warn!(
                "detect.shedding.grey is no longer used: overload admits proven sources and a share of strangers per prefix bucket"
            );
        }
        self.settings = s;
    }

    /// What the XDP program matches requests against.
    pub fn rule_lists(&self) -> sip_xdp_common::rules::RuleLists {
        self.settings.rule_lists()
    }

    /// The kernel's share of the settings: rate limit and sampling.
    pub fn kernel_config(&self, mut k: KernelConfig) -> KernelConfig {
        let s = &self.settings;
        let on = s.enabled;
        k.rate_limit = if on { s.rate_limit.packets } else { 0 };
        k.rate_window_ns = s.rate_limit.window.as_nanos() as u64;
        k.sample_first = if on { s.samples.first } else { 0 };
        k.sample_every = if on && s.samples.every > 0 {
            s.samples.every.next_power_of_two()
        } else {
            0
        };
        k.sample_per_sec = s.samples.per_sec;
        k.burst_idle_ms = if on {
            s.samples.burst_idle.as_millis().min(u128::from(u32::MAX)) as u32
        } else {
            0
        };
        k.trust_ttl_ns = s.trust_ttl.as_nanos() as u64;
        self.admission.fill(&mut k, on);
        k.prefix_v4 = u16::from(s.prefix_v4);
        k.prefix_v6 = u16::from(s.prefix_v6);
        k.hot_at = if on { self.flood.hot_at() } else { 0 };
        k
    }

    /// What a sample says: a rate-limit crossing, a scanner.
    pub fn on_sample(&mut self, now: Instant, s: &Sampled) -> Vec<Detection> {
        let mut out = Vec::new();
        if !self.settings.enabled {
            return out;
        }
        let info = s.sip.as_ref().ok();
        // The kernel counts and limits by prefix: so do the detectors.
        let src = self.prefix_of(s.src);
        if s.kind == SampleKind::RateLimit && !self.settings.rate_limit.ban.is_zero() {
            let rl = &self.settings.rate_limit;
            out.push(Detection {
                ip: src,
                seen: Some(s.src),
                reason: Reason::RateLimit,
                base_ban: rl.ban,
                count: u64::from(rl.packets) + 1,
                limit: u64::from(rl.packets),
                window: rl.window,
                details: json!({
                    "limit": rl.packets,
                    "window_s": rl.window.as_secs_f64(),
                    "method": info.and_then(|i| i.method.clone()),
                    "user_agent": info.and_then(|i| i.user_agent.clone()),
                    "uri": info.and_then(|i| i.request_uri.clone()),
                    "seen_by": "kernel",
                }),
            });
        }
        if let Some(info) = info {
            if let Some(mut d) = self.scanner.on_sample(now, src, info) {
                d.seen = Some(s.src);
                if src != s.src {
                    d.details["seen_from"] = json!(s.src.to_string());
                }
                out.push(d);
            }
        }
        out
    }

    /// What to read from the failure tables, if database brute-force
    /// detection is on: rows since `findtime` ago, after each table's
    /// cursor. The first read after start goes back `findtime`, so a
    /// restart keeps counting where the rows are.
    pub fn failure_request(&self) -> Option<FailureRequest> {
        let bf = &self.settings.brute_force;
        if !self.settings.enabled || !bf.enabled || !bf.database {
            return None;
        }
        let findtime = chrono::Duration::from_std(bf.findtime).unwrap_or(chrono::Duration::MAX);
        Some(FailureRequest {
            since: store::now() - findtime,
            cursors: self.cursors,
        })
    }

    /// The bans the failure rows read for `failure_request` call for.
    pub fn take_failures(&mut self, batches: Vec<(usize, FailureBatch)>) -> Vec<Detection> {
        let mut out = Vec::new();
        for (i, batch) in batches {
            let table = FAILURE_TABLES[i];
            if let Some(last) = batch.last_id {
                self.cursors[i] = Some(last.max(self.cursors[i].unwrap_or(0)));
            }
            for row in batch.rows {
                // Dual-stack servers write IPv4 peers IPv4-mapped.
                let ip = match row
                    .source_ip
                    .trim()
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_canonical())
                {
                    Ok(ip) => ip,
                    Err(_) => {
                        tracing::warn!(table, id = row.id, source_ip = ?row.source_ip, "skipping failure row: source_ip is not an IP address");
                        continue;
                    }
                };
                let f = Failure {
                    ip: self.prefix_of(ip),
                    seen: ip,
                    at: row.attempt_time,
                    table,
                    username: row.username.filter(|u| !u.is_empty()),
                    user_agent: row.user_agent.filter(|u| !u.is_empty()),
                    response_code: row.response_code,
                };
                if let Some(d) = self.brute.observe(f) {
                    out.push(d);
                }
            }
        }
        for c in &mut self.cursors {
            // An empty table: start from whatever comes next.
            c.get_or_insert(0);
        }
        self.brute.prune(store::now());
        out
    }

    /// Bans `d.ip` unless it must never be banned, and records why.
    /// Returns whether it banned.
    pub fn act(&mut self, mut d: Detection, env: &mut Env<'_>) -> bool {
        let now = Instant::now();
        let mut net = self.ban_net(d.ip);
        // A neighbour in the host's own prefix: the prefix may not be
        // banned, the neighbour's address alone may. What is banned is
        // what the bookkeeping below is keyed by, so two neighbours are two
        // bans.
        if let Some(narrow) = d.seen.and_then(|seen| env.guard.narrowed(&net, seen)) {
            net = narrow;
            d.ip = narrow.addr();
        }
        let ip = d.ip;
        if self.banned_until.get(&ip).is_some_and(|t| *t > now) {
            tracing::debug!(src_ip = %ip, reason = d.reason.name(), "already banned by a detector");
            return false;
        }
        // Every detection rests on packets a forger can send in the name of
        // any address; a source that proved its address by a round trip is
        // never banned for them, nor is a prefix that holds one. The
        // kernel's rate limit still holds them.
        if let Some(how) = self.trust_within(&net, now, env.maps) {
            self.spare(&d, "verified", Some(how.as_str()), now, env);
            return false;
        }
        if let Some(why) = self.spared(&net, env) {
            self.spare(&d, &why, None, now, env);
            return false;
        }
        // Monitor mode is a dry run: what would be banned is recorded, and
        // nothing reaches the kernel, `blocked_ips` or the other nodes.
        if env.maps.monitor() {
            if self.would_until.get(&ip).is_none_or(|t| *t <= now) {
                self.would_until.insert(ip, now + d.base_ban);
                record_would_ban(d, net, env);
            }
            return false;
        }
        let (allowed, report) = self.cap.take(now);
        if let Some(refused) = report {
            self.report_cap(refused, env.journal);
        }
        if !allowed {
            if let Some(m) = env.metrics {
                m.detection(d.reason.name(), false);
                m.ban_capped();
            }
            tracing::debug!(src_ip = %ip, reason = d.reason.name(), "ban cap reached: not banned");
            return false;
        }
        let (ban, offence) = self.escalation.ban_for(ip, d.base_ban, now);
        let expires_ns = clock::monotonic_ns().saturating_add(ban.as_nanos() as u64);
        if let Err(e) = env.maps.put(&net, expires_ns, d.reason.ban_reason()) {
            tracing::error!(src_ip = %ip, reason = d.reason.name(), error = %e, "ban failed");
            return false;
        }
        self.banned_until.insert(ip, now + ban);
        // The row is written by the controller's next database round,
        // off the detection path: a slow or hung database never delays a
        // ban, nor the detections after it.
        let row = record_ban(d, net, ban, offence, env);
        env.journal.ban(row);
        true
    }

    /// A detection on a source that must not be banned: counted, and
    /// reported once per ban length so a busy trunk is not logged every unit.
    fn spare(
        &mut self,
        d: &Detection,
        why: &str,
        verified: Option<&str>,
        now: Instant,
        env: &mut Env<'_>,
    ) {
        if let Some(m) = env.metrics {
            m.detection(d.reason.name(), false);
        }
        if self.quiet_until.get(&d.ip).is_some_and(|t| *t > now) {
            return;
        }
        self.quiet_until.insert(d.ip, now + d.base_ban);
        tracing::info!(src_ip = %d.ip, reason = %d.reason.name(), count = d.count, limit = d.limit, spared = %why, "detected, not banned");
        let mut details = d.details.clone();
        details["action"] = json!(format!("not banned: {why}"));
        if let Some(how) = verified {
            details["verified"] = json!(how);
        }
        env.journal.record(
            d.reason.event_type(),
            Some(d.ip.to_string()),
            "info",
            details,
        );
    }

    /// Why `net` must not be banned, if it must not. An ignore entry inside
    /// a prefix spares it (the kernel would drop the entry with it); an
    /// allow-list entry inside it does not (the kernel lets it pass).
    fn spared(&self, net: &IpNet, env: &Env<'_>) -> Option<String> {
        if let Some(n) = self.settings.ignore.iter().find(|n| overlaps(n, net)) {
            return Some(format!("on the ignore list ({n})"));
        }
        if let Some(why) = env.guard.refusal(net) {
            return Some(why);
        }
        if let Some(n) = env.allowed.iter().find(|n| n.contains(net)) {
            return Some(format!("on the allow-list ({n})"));
        }
        None
    }

    /// How a source inside `net` earned trust, if one holds it. A host is
    /// looked up; a prefix is checked against the verified sources, read
    /// at most once a second (a storm of prefix detections must not walk
    /// the map for each).
    fn trust_within(&mut self, net: &IpNet, now: Instant, maps: &dyn KernelLists) -> Option<Trust> {
        if net.prefix_len() == net.max_prefix_len() {
            return maps.trust_of(net.addr());
        }
        let stale = self
            .verified
            .as_ref()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= Duration::from_secs(1));
        if stale {
            self.verified = Some((now, maps.trusted_now()));
        }
        let (_, list) = self.verified.as_ref()?;
        list.iter()
            .find(|(ip, _)| net.contains(ip))
            .map(|(_, t)| *t)
    }

    /// The network address of the prefix `ip` is counted by.
    pub fn prefix_of(&self, ip: IpAddr) -> IpAddr {
        let s = &self.settings;
        ip_of(&prefix_key(
            &key_of(ip),
            u32::from(s.prefix_v4),
            u32::from(s.prefix_v6),
        ))
    }

    /// What a detection on `ip` bans: its prefix.
    pub fn ban_net(&self, ip: IpAddr) -> IpNet {
        let len = match ip {
            IpAddr::V4(_) => self.settings.prefix_v4,
            IpAddr::V6(_) => self.settings.prefix_v6,
        };
        IpNet::new(ip, len).map_or(IpNet::from(ip), |n| n.trunc())
    }

    /// Lets a detector ban again the sources of bans lifted by hand
    /// before their rows were written. A ban covers the detected address's
    /// prefix: every address detected inside it is forgotten.
    pub fn forget_bans(&mut self, lifted: &[PendingBlock]) {
        if lifted.is_empty() {
            return;
        }
        self.banned_until
            .retain(|ip, _| !lifted.iter().any(|p| p.net.contains(ip)));
    }

    /// One warning and one event for a second in which the ban cap refused
    /// detections.
    fn report_cap(&self, refused: u64, events: &mut Journal) {
        let cap = self.cap.per_sec();
        tracing::warn!(
            refused,
            cap,
            "ban cap reached: detections in the last second not banned"
        );
        events.record(
            "ban_cap_reached",
            None,
            "warning",
            json!({"refused": refused, "max_bans_per_sec": cap}),
        );
    }

    /// Forgets expired bans and quiet periods, stale probe windows and old
    /// offenders; reports a second the ban cap refused detections in.
    pub fn prune_and_report(&mut self, now: Instant, events: &mut Journal) {
        if let Some(refused) = self.cap.roll(now) {
            self.report_cap(refused, events);
        }
        self.prune(now);
    }

    /// Forgets expired bans and quiet periods, stale probe windows and old
    /// offenders.
    pub fn prune(&mut self, now: Instant) {
        self.banned_until.retain(|_, t| *t > now);
        self.would_until.retain(|_, t| *t > now);
        self.quiet_until.retain(|_, t| *t > now);
        self.scanner.prune(now);
        self.escalation.prune(now);
    }

    /// Lets a detector ban `ip` again (it was unblocked by hand).
    pub fn forget_ban(&mut self, ip: &IpAddr) {
        self.banned_until.remove(ip);
    }

    /// Forgets the detector bans no active row holds any more (lifted by
    /// `sip-xdp unblock`, by hand in SQL, or by another node), so that the
    /// source is banned again when it comes back, not reported "already
    /// banned" until the old term would have ended. `active` holds the
    /// bans whose rows are not written yet too (the sync plans them as
    /// rows).
    pub fn forget_unlisted(&mut self, active: &[IpNet]) {
        self.banned_until
            .retain(|ip, _| active.iter().any(|n| n.contains(ip)));
    }

    pub fn interval(&self) -> Duration {
        self.settings.interval
    }
}

/// The log line, the metric and the two events of a ban just enforced;
/// returns its `blocked_ips` row.
fn record_ban(
    d: Detection,
    net: IpNet,
    ban: Duration,
    offence: u32,
    env: &mut Env<'_>,
) -> PendingBlock {
    let (ip, reason) = (spelling(&net), d.reason);
    let ban_s = ban.as_secs();
    tracing::warn!(
        target: "sip_xdp::ban",
        src_ip = %ip,
        reason = %reason.name(),
        count = d.count,
        limit = d.limit,
        window_s = d.window.as_secs_f64(),
        ban_s,
        offence,
        "banned"
    );
    if let Some(m) = env.metrics {
        m.detection(reason.name(), true);
    }
    let blocked_at = store::now();
    let expires_at =
        blocked_at + chrono::Duration::from_std(ban).unwrap_or(chrono::Duration::days(365));
    let note = format!(
        "{}: {} over limit {} in {}",
        reason.name(),
        d.count,
        d.limit,
        humantime::format_duration(d.window)
    );
    let mut details = d.details;
    details["action"] = json!("banned");
    details["ban_s"] = json!(ban_s);
    details["offence"] = json!(offence);
    details["expires_at"] = json!(expires_at.to_string());
    let severity = match reason {
        Reason::Flood | Reason::RateLimit | Reason::MalformedFlood => "warning",
        _ => "critical",
    };
    env.journal
        .record(reason.event_type(), Some(ip.to_string()), severity, details);
    env.journal.record(
        "ip_blocked",
        Some(ip.to_string()),
        "info",
        json!({"reason": note, "source": reason.name(), "ban_s": ban_s, "expires_at": expires_at.to_string(), "offence": offence}),
    );
    PendingBlock {
        net,
        reason,
        note,
        blocked_at,
        expires_at,
    }
}

/// Monitor mode's record of a ban it did not make: one `would_ban` event
/// with the detection's details, one log line.
fn record_would_ban(d: Detection, net: IpNet, env: &mut Env<'_>) {
    let spelled = spelling(&net);
    tracing::warn!(
        src_ip = %spelled,
        reason = %d.reason.name(),
        count = d.count,
        limit = d.limit,
        window_s = d.window.as_secs_f64(),
        ban_s = d.base_ban.as_secs(),
        "would ban (monitor mode)"
    );
    if let Some(m) = env.metrics {
        m.detection(d.reason.name(), false);
    }
    let mut details = d.details;
    details["action"] = json!("would ban (monitor mode)");
    details["reason"] = json!(d.reason.name());
    details["detected_as"] = json!(d.reason.event_type());
    details["ban_s"] = json!(d.base_ban.as_secs());
    env.journal
        .record("would_ban", Some(spelled), "warning", details);
}

/// The key strangers' buckets are hashed with, drawn at each start, so
/// that no one outside can choose sources sharing a phone's bucket.
fn bucket_seed() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(e) => {
            // Still a different key per start and host, if a guessable one.
            tracing::warn!(error = %e, "reading /dev/urandom failed; bucket key from the clock");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{guard::Guard, kernel::lists::Fake};
    use sip_xdp_common::maps::BanReason;

    fn detection(ip: &str) -> Detection {
        Detection {
            ip: ip.parse().unwrap(),
            seen: None,
            reason: Reason::Flood,
            base_ban: Duration::from_secs(600),
            count: 900,
            limit: 500,
            window: Duration::from_secs(2),
            details: json!({"packets": 900}),
        }
    }

    struct Bench {
        kernel: Fake,
        journal: Journal,
        guard: Guard,
        allowed: Vec<IpNet>,
    }

    impl Bench {
        fn new() -> Self {
            Self {
                kernel: Fake::default(),
                journal: Journal::new(100, None),
                guard: Guard::with_addresses(vec!["198.51.100.1".parse().unwrap()]),
                allowed: Vec::new(),
            }
        }

        fn act(&mut self, d: &mut Defender, det: Detection) -> bool {
            let mut env = Env {
                maps: &mut self.kernel,
                journal: &mut self.journal,
                guard: &self.guard,
                allowed: &self.allowed,
                metrics: None,
            };
            d.act(det, &mut env)
        }

        fn event_types(&self) -> Vec<String> {
            self.journal
                .snapshot()
                .0
                .events
                .into_iter()
                .map(|e| e.event_type)
                .collect()
        }
    }

    fn net(s: &str) -> IpNet {
        crate::parse::parse_net(s).unwrap()
    }

    #[test]
    fn a_detection_is_banned_in_the_kernel_once_with_its_row_and_events_queued() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        assert!(b.act(&mut d, detection("203.0.113.9")));
        let (expires_ns, reason) = b.kernel.rules[&net("203.0.113.9")];
        assert_eq!(reason, Some(BanReason::Flood));
        let left = expires_ns.saturating_sub(clock::monotonic_ns());
        assert!((595..=600).contains(&(left / 1_000_000_000)), "{left} ns");
        let rows = b.journal.snapshot().0.bans;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].net, net("203.0.113.9"));
        assert_eq!(
            rows[0].expires_at - rows[0].blocked_at,
            chrono::Duration::seconds(600)
        );
        assert_eq!(b.event_types(), ["flood_detected", "ip_blocked"]);
        // The same attack seen again is neither banned nor recorded twice.
        assert!(!b.act(&mut d, detection("203.0.113.9")));
        assert_eq!(b.kernel.writes.len(), 1);
        assert_eq!(b.journal.snapshot().0.bans.len(), 1);
    }

    #[test]
    fn a_v6_detection_bans_its_prefix() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        assert!(b.act(&mut d, detection("2001:db8:7:7::99")));
        assert_eq!(
            b.kernel.rules.keys().collect::<Vec<_>>(),
            [&net("2001:db8:7:7::/64")]
        );
    }

    #[test]
    fn verified_allow_listed_ignored_and_own_sources_are_spared_and_reported_once() {
        let settings = Settings {
            ignore: vec![net("203.0.113.64/26")],
            ..Settings::default()
        };
        let (mut b, mut d) = (Bench::new(), Defender::new(settings));
        b.kernel
            .trusted
            .push(("203.0.113.5".parse().unwrap(), Trust::Registered));
        b.allowed.push(net("203.0.113.16/28"));
        for ip in [
            "203.0.113.5",
            "203.0.113.20",
            "203.0.113.70",
            "198.51.100.1",
        ] {
            assert!(!b.act(&mut d, detection(ip)), "{ip} banned");
            assert!(!b.act(&mut d, detection(ip)), "{ip} banned");
        }
        assert!(b.kernel.writes.is_empty(), "{:?}", b.kernel.writes);
        assert!(b.journal.snapshot().0.bans.is_empty());
        let events = b.journal.snapshot().0.events;
        let actions: Vec<String> = events
            .iter()
            .map(|e| e.details["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(actions.len(), 4, "{actions:?}");
        assert!(actions[0].contains("verified"), "{actions:?}");
        assert!(actions[1].contains("allow-list"), "{actions:?}");
        assert!(actions[2].contains("ignore list"), "{actions:?}");
        assert_eq!(events[0].details["verified"], "registered");
    }

    #[test]
    fn a_neighbour_in_the_hosts_own_prefix_is_banned_without_the_host() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        b.guard = Guard::with_addresses(vec!["2001:db8:5::1".parse().unwrap()]);
        // A scanner's sample names its address: that address alone is
        // banned, not the host's /64.
        let mut scan = detection("2001:db8:5::");
        scan.reason = Reason::ScannerUserAgent;
        scan.seen = Some("2001:db8:5::2".parse().unwrap());
        assert!(b.act(&mut d, scan));
        assert_eq!(
            b.kernel.rules.keys().collect::<Vec<_>>(),
            [&net("2001:db8:5::2")]
        );
        assert_eq!(b.journal.snapshot().0.bans[0].net, net("2001:db8:5::2"));
        // A second neighbour is a second ban, not "already banned".
        let mut other = detection("2001:db8:5::");
        other.reason = Reason::ScannerUserAgent;
        other.seen = Some("2001:db8:5::7".parse().unwrap());
        assert!(b.act(&mut d, other));
        assert!(b.kernel.rules.contains_key(&net("2001:db8:5::7")));
        // A count by prefix names no address: the prefix is spared, and
        // the host is never banned.
        let (mut b2, mut d2) = (Bench::new(), Defender::new(Settings::default()));
        b2.guard = b.guard.clone();
        assert!(!b2.act(&mut d2, detection("2001:db8:5::")));
        let mut own = detection("2001:db8:5::");
        own.seen = Some("2001:db8:5::1".parse().unwrap());
        assert!(!b2.act(&mut d2, own));
        assert!(b2.kernel.rules.is_empty());
    }

    #[test]
    fn a_v6_prefix_holding_a_verified_source_is_spared() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        b.kernel
            .trusted
            .push(("2001:db8:7:7::5".parse().unwrap(), Trust::Invited));
        assert!(!b.act(&mut d, detection("2001:db8:7:7::99")));
        assert!(b.kernel.rules.is_empty());
    }

    #[test]
    fn monitor_mode_records_would_ban_and_writes_nothing() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        b.kernel.monitor = true;
        assert!(!b.act(&mut d, detection("203.0.113.9")));
        assert!(!b.act(&mut d, detection("203.0.113.9")));
        assert!(b.kernel.writes.is_empty());
        assert!(b.journal.snapshot().0.bans.is_empty());
        assert_eq!(b.event_types(), ["would_ban"]);
    }

    #[test]
    fn a_ban_the_kernel_refuses_is_not_recorded_and_is_tried_again() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        b.kernel.refuse.insert(net("203.0.113.9"));
        assert!(!b.act(&mut d, detection("203.0.113.9")));
        assert!(b.journal.snapshot().0.bans.is_empty());
        assert!(b.event_types().is_empty());
        b.kernel.refuse.clear();
        assert!(b.act(&mut d, detection("203.0.113.9")), "not tried again");
    }

    #[test]
    fn the_ban_cap_holds_bans_to_its_rate() {
        let settings = Settings {
            max_bans_per_sec: 3,
            ..Settings::default()
        };
        let (mut b, mut d) = (Bench::new(), Defender::new(settings));
        let banned = (1..=10)
            .filter(|i| b.act(&mut d, detection(&format!("203.0.113.{i}"))))
            .count();
        assert_eq!(banned, 3);
        assert_eq!(b.kernel.rules.len(), 3);
    }

    /// A prefix ban lifted by hand before its row was written: the source
    /// detected inside it is banned again when it comes back.
    #[test]
    fn a_prefix_ban_lifted_before_its_row_lets_its_source_be_banned_again() {
        let (mut b, mut d) = (Bench::new(), Defender::new(Settings::default()));
        assert!(b.act(&mut d, detection("2001:db8:7:7::99")));
        b.kernel.rules.clear();
        let lifted = b.journal.drop_lifted(|_| false);
        assert_eq!(lifted.len(), 1);
        d.forget_bans(&lifted);
        assert!(
            b.act(&mut d, detection("2001:db8:7:7::99")),
            "still 'already banned'"
        );
    }
}
