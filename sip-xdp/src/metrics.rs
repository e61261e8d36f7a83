//! Prometheus text endpoint (`--metrics ADDR`, off by default). Kernel
//! counters are folded in as deltas every sampling pass, so a scrape only
//! encodes what is already there and never touches the maps.
//!
//! Names (all prefixed `sipxdp_`):
//! - `packets_total{verdict,reason}`: every packet by the one reason
//!   counter the XDP program moved (verdict pass/drop/would_drop);
//! - `sip_packets_total{class}`: packets that reached the classifier;
//! - `kernel_events_total{event}`: samples taken or lost, replies counted;
//! - `detections_total{kind}` and `bans_total{kind}` (bans actually made);
//! - `active_bans{source}`: exact bans in the kernel by reason;
//! - `samples_total{result}`: ring-buffer samples parsed / malformed / lost;
//! - `tracked_sources`, `sampling_pass_seconds`, `sync_lag_seconds`,
//!   `sync_duration_seconds`, `db_up`, `db_clock_offset_seconds`, `events_buffered`, `events_dropped_total`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use sip_xdp_common::{stats::Verdict, Counter as K};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

type Labels = Vec<(String, String)>;

fn l(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// One feed's figures as the metrics show them.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeedFigures {
    /// Entries in its last good list.
    pub entries: usize,
    /// When it was last refreshed successfully (Unix time).
    pub refreshed_at: Option<i64>,
    /// Failed refreshes since the start.
    pub failures: u64,
}

#[derive(Clone, Default)]
pub struct Metrics {
    packets: Family<Labels, Counter>,
    sip: Family<Labels, Counter>,
    kernel_events: Family<Labels, Counter>,
    pub detections: Family<Labels, Counter>,
    pub bans: Family<Labels, Counter>,
    bans_capped: Counter,
    overload: Gauge,
    verified: Gauge,
    active_bans: Family<Labels, Gauge>,
    samples: Family<Labels, Counter>,
    tracked_sources: Gauge,
    hot_sources: Gauge,
    pass_seconds: Gauge<f64, AtomicU64>,
    sync_lag: Gauge<f64, AtomicU64>,
    sync_duration: Gauge<f64, AtomicU64>,
    db_up: Gauge,
    db_clock: Gauge<f64, AtomicU64>,
    alerts: Family<Labels, Counter>,
    last_alerts: [u64; 3],
    feed_entries: Family<Labels, Gauge>,
    feed_refreshed: Family<Labels, Gauge>,
    feed_failures: Family<Labels, Counter>,
    last_feed_failures: HashMap<String, u64>,
    events_buffered: Gauge,
    events_dropped: Counter,
    last_kernel: HashMap<u32, u64>,
    last_samples: [u64; 3],
    last_events_dropped: u64,
}

impl Metrics {
    /// The metrics and the registry that encodes them.
    pub fn new() -> (Self, Registry) {
        let m = Self::default();
        let mut r = Registry::with_prefix("sipxdp");
        r.register(
            "packets",
            "Packets by XDP verdict and reason",
            m.packets.clone(),
        );
        r.register(
            "sip_packets",
            "Packets on SIP ports by SIP class",
            m.sip.clone(),
        );
        r.register(
            "kernel_events",
            "Samples taken or lost and SBC replies counted by the kernel",
            m.kernel_events.clone(),
        );
        r.register("detections", "Detections by kind", m.detections.clone());
        r.register("bans", "Bans made by detectors, by kind", m.bans.clone());
        r.register(
            "verified_sources",
            "Sources that proved their address by a round trip (registered phones, peers)",
            m.verified.clone(),
        );
        r.register(
            "overload",
            "1 while the XDP program sheds unverified new sources",
            m.overload.clone(),
        );
        r.register(
            "bans_capped",
            "Detections not banned because the per-second ban cap was reached",
            m.bans_capped.clone(),
        );
        r.register(
            "active_bans",
            "Exact bans in the kernel, by reason",
            m.active_bans.clone(),
        );
        r.register(
            "samples",
            "Ring-buffer samples by parse result",
            m.samples.clone(),
        );
        m.register_health(&mut r);
        (m, r)
    }

    /// The controller's own health: passes, syncs, the database, events.
    fn register_health(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "tracked_sources",
            "Sources in the kernel's per-source table at the last full pass",
            m.tracked_sources.clone(),
        );
        r.register(
            "hot_sources",
            "Sources the last sampling pass read (every tracked one on a full pass)",
            m.hot_sources.clone(),
        );
        r.register(
            "sampling_pass_seconds",
            "Duration of the last sampling pass",
            m.pass_seconds.clone(),
        );
        r.register(
            "sync_lag_seconds",
            "Seconds since the last successful database sync",
            m.sync_lag.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Duration of the last database sync",
            m.sync_duration.clone(),
        );
        r.register("db_up", "1 if the database is reachable", m.db_up.clone());
        r.register(
            "feed_entries",
            "Entries in each feed's last good list",
            m.feed_entries.clone(),
        );
        r.register(
            "feed_last_refresh_timestamp_seconds",
            "When each feed was last refreshed successfully (Unix time)",
            m.feed_refreshed.clone(),
        );
        r.register(
            "feed_failures",
            "Failed refreshes per feed",
            m.feed_failures.clone(),
        );
        r.register(
            "alerts",
            "Alert messages by outcome: sent, failed (after retries), dropped (events the sender was too far behind to take)",
            m.alerts.clone(),
        );
        r.register(
            "db_clock_offset_seconds",
            "The database's clock in its own time zone minus the controller's UTC clock",
            m.db_clock.clone(),
        );
        r.register(
            "events_buffered",
            "security_events waiting for the database",
            m.events_buffered.clone(),
        );
        r.register(
            "events_dropped",
            "security_events lost to a full buffer",
            m.events_dropped.clone(),
        );
    }

    /// Folds in the kernel's global counters (cumulative since load).
    pub fn kernel(&mut self, stats: &[(K, u64)]) {
        for &(c, v) in stats {
            let last = self.last_kernel.insert(c as u32, v).unwrap_or(0);
            // A reloaded program starts from zero again.
            let d = if v >= last { v - last } else { v };
            if d == 0 {
                continue;
            }
            let name = c.name();
            match c.verdict() {
                Verdict::Pass | Verdict::Drop | Verdict::WouldDrop => {
                    let (verdict, reason) = match c.verdict() {
                        Verdict::Pass => ("pass", name.trim_start_matches("pass_")),
                        Verdict::Drop => ("drop", name.trim_start_matches("drop_")),
                        _ => ("would_drop", name.trim_start_matches("would_drop_")),
                    };
                    self.packets
                        .get_or_create(&vec![
                            ("verdict".into(), verdict.into()),
                            ("reason".into(), reason.into()),
                        ])
                        .inc_by(d);
                }
                Verdict::None if name.starts_with("sip_") => {
                    self.sip
                        .get_or_create(&l("class", name.trim_start_matches("sip_")))
                        .inc_by(d);
                }
                Verdict::None => {
                    self.kernel_events
                        .get_or_create(&l("event", name))
                        .inc_by(d);
                }
            }
        }
    }

    pub fn active_bans(&self, by_reason: &[(&'static str, u64)]) {
        for (reason, n) in by_reason {
            self.active_bans
                .get_or_create(&l("source", reason))
                .set(*n as i64);
        }
    }

    pub fn verified(&self, n: usize) {
        self.verified.set(n as i64);
    }

    pub fn overload(&self, on: bool) {
        self.overload.set(i64::from(on));
    }

    pub fn ban_capped(&self) {
        self.bans_capped.inc();
    }

    pub fn detection(&self, kind: &str, banned: bool) {
        self.detections.get_or_create(&l("kind", kind)).inc();
        if banned {
            self.bans.get_or_create(&l("kind", kind)).inc();
        }
    }

    /// Cumulative sample reader counts: parsed, malformed, lost (ring full,
    /// budget or a full queue).
    pub fn samples(&mut self, now: [u64; 3]) {
        for (i, name) in ["parsed", "malformed", "lost"].iter().enumerate() {
            let d = now[i].saturating_sub(self.last_samples[i]);
            if d > 0 {
                self.samples.get_or_create(&l("result", name)).inc_by(d);
            }
        }
        self.last_samples = now;
    }

    pub fn pass(&self, tracked: Option<usize>, read: usize, seconds: f64) {
        if let Some(n) = tracked {
            self.tracked_sources.set(n as i64);
        }
        self.hot_sources.set(read as i64);
        self.pass_seconds.set(seconds);
    }

    /// Each feed's state.
    pub fn feeds<'a>(&mut self, feeds: impl IntoIterator<Item = (&'a String, FeedFigures)>) {
        for (name, s) in feeds {
            let label = l("feed", name);
            self.feed_entries
                .get_or_create(&label)
                .set(s.entries as i64);
            if let Some(t) = s.refreshed_at {
                self.feed_refreshed.get_or_create(&label).set(t);
            }
            let last = self
                .last_feed_failures
                .insert(name.clone(), s.failures)
                .unwrap_or(0);
            let d = s.failures.saturating_sub(last);
            // Created at 0 too, so the series exists before the first failure.
            self.feed_failures.get_or_create(&label).inc_by(d);
        }
    }

    /// Folds in the alert sender's cumulative counts.
    pub fn alerts(&mut self, now: [u64; 3]) {
        for (i, outcome) in ["sent", "failed", "dropped"].iter().enumerate() {
            let d = now[i].saturating_sub(self.last_alerts[i]);
            if d > 0 {
                self.alerts.get_or_create(&l("outcome", outcome)).inc_by(d);
            }
        }
        self.last_alerts = now;
    }

    pub fn db_clock(&self, offset_s: f64) {
        self.db_clock.set(offset_s);
    }

    pub fn database(
        &mut self,
        up: bool,
        lag_s: Option<f64>,
        sync_s: Option<f64>,
        buffered: usize,
        dropped: u64,
    ) {
        self.db_up.set(i64::from(up));
        if let Some(lag) = lag_s {
            self.sync_lag.set(lag);
        }
        if let Some(s) = sync_s {
            self.sync_duration.set(s);
        }
        self.events_buffered.set(buffered as i64);
        let d = dropped.saturating_sub(self.last_events_dropped);
        self.last_events_dropped = dropped;
        if d > 0 {
            self.events_dropped.inc_by(d);
        }
    }
}

/// Connections served at once. Past it the server accepts nothing, so
/// more clients wait in the listen backlog instead of holding the
/// controller's file descriptors, which banning needs.
pub const MAX_CONNECTIONS: usize = 64;

/// What one connection may take, reading its request and writing the
/// answer together.
const CONNECTION_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` (and `/`) until the task is dropped. One request
/// per connection; anything else gets a 404. At most `MAX_CONNECTIONS` at
/// once, each bounded in size and time, so stuck or hostile clients cost
/// a few small tasks and never the descriptors the controller bans with;
/// a failing accept (descriptors exhausted elsewhere) backs off instead of
/// spinning.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = std::time::Duration::from_millis(50);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => {
                backoff = std::time::Duration::from_millis(50);
                conn
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "metrics endpoint: accepting a connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONNECTION_TIME, answer(&mut conn, &registry)).await;
        });
    }
}

/// Reads one request from `conn` (its head, at most 4 KiB) and answers it.
async fn answer(conn: &mut tokio::net::TcpStream, registry: &Registry) {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        match conn.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(_) => return,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let resp = if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
        let mut body = String::new();
        if encode(&mut body, registry).is_err() {
            return;
        }
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
    };
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Binds `addr` and starts serving; the error names the address.
pub async fn start(
    addr: SocketAddr,
    registry: Registry,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(crate::Error::io(format!(
            "binding the metrics endpoint {addr}"
        )))?;
    tracing::info!(%addr, "metrics endpoint listening");
    Ok(tokio::spawn(serve(listener, Arc::new(registry))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle connections by the hundred hold at most `MAX_CONNECTIONS` of
    /// the controller's descriptors; a scrape behind them is answered once
    /// they time out.
    #[tokio::test]
    async fn idle_connections_cannot_take_the_controllers_descriptors() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let (_m, r) = Metrics::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(r)));
        let before = fds();
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let held = fds() - before - idle.len();
        assert!(
            held <= MAX_CONNECTIONS + 4,
            "the server holds {held} descriptors for 100 idle clients"
        );
        let started = std::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut resp = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            c.read_to_string(&mut resp),
        )
        .await
        .expect("the scrape was never answered")
        .unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        server.abort();
    }

    #[tokio::test]
    async fn scrape_shows_kernel_counters_as_deltas_and_detections() {
        let (mut m, r) = Metrics::new();
        m.kernel(&[
            (K::Banned, 10),
            (K::Sip, 5),
            (K::ClassInvite, 5),
            (K::Sampled, 2),
        ]);
        m.kernel(&[
            (K::Banned, 25),
            (K::Sip, 5),
            (K::ClassInvite, 5),
            (K::Sampled, 2),
        ]);
        m.detection("flood", true);
        m.detection("scanner_user_agent", false);
        m.active_bans(&[("flood", 3)]);
        m.database(false, Some(12.5), None, 7, 0);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(r)));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        for want in [
            r#"sipxdp_packets_total{verdict="drop",reason="banned"} 25"#,
            r#"sipxdp_packets_total{verdict="pass",reason="sip"} 5"#,
            r#"sipxdp_sip_packets_total{class="invite"} 5"#,
            r#"sipxdp_kernel_events_total{event="sampled"} 2"#,
            r#"sipxdp_detections_total{kind="flood"} 1"#,
            r#"sipxdp_bans_total{kind="flood"} 1"#,
            r#"sipxdp_detections_total{kind="scanner_user_agent"} 1"#,
            r#"sipxdp_active_bans{source="flood"} 3"#,
            "sipxdp_db_up 0",
            "sipxdp_sync_lag_seconds 12.5",
            "sipxdp_events_buffered 7",
        ] {
            assert!(out.contains(want), "missing {want} in\n{out}");
        }
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /nope HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 404"));
    }

    /// Every metric the Grafana dashboard (dist/grafana/sip-xdp.json)
    /// queries is one this endpoint serves, with a label the panel groups
    /// or filters by; and every metric served is on the dashboard.
    #[test]
    fn the_dashboard_queries_what_the_endpoint_serves() {
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../dist/grafana/sip-xdp.json")).unwrap();
        let (mut m, r) = Metrics::new();
        m.kernel(&[
            (K::Banned, 1),
            (K::Sip, 1),
            (K::ClassInvite, 1),
            (K::Sampled, 1),
        ]);
        m.detection("flood", true);
        m.active_bans(&[("flood", 1)]);
        m.samples([1, 1, 1]);
        m.alerts([1, 1, 1]);
        let name = "drop".to_string();
        let figures = FeedFigures {
            entries: 3,
            refreshed_at: Some(chrono::Utc::now().timestamp()),
            failures: 1,
        };
        m.feeds([(&name, figures)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let served: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut queried = std::collections::BTreeSet::new();
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("sipxdp_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let base = name.strip_suffix("_total").unwrap_or(&name).to_string();
                    assert!(
                        served.contains(&base.as_str()),
                        "{:?} queries {name}, not served:\n{text}",
                        p["title"]
                    );
                    // A label the panel uses must be one the metric has.
                    for label in [
                        "verdict", "reason", "class", "source", "kind", "result", "event",
                        "outcome",
                    ] {
                        if expr.contains(&format!("({label})"))
                            || expr.contains(&format!("{{{label}="))
                        {
                            assert!(
                                text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                                    && l.contains(&format!("{label}=\""))),
                                "{:?}: {name} has no label {label}:\n{text}",
                                p["title"]
                            );
                        }
                    }
                    queried.insert(base);
                }
            }
        }
        for s in &served {
            assert!(queried.contains(*s), "{s} is served but on no panel");
        }
    }
}
