//! Alerts: the events worth a human's attention, sent to webhooks (JSON
//! POST with a `text` field, as Slack- and Mattermost-style receivers read
//! it) and/or a command that reads the JSON on stdin (mail, SMS gateways).
//!
//! An attack makes thousands of events; an operator wants one message. The
//! events at or above `min_severity` are gathered for `window` and sent as
//! one message with counts. Sending runs on a task of its own and gets the
//! events through a bounded queue the controller never waits on: a slow or
//! dead receiver costs retries there, never a ban.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{io::AsyncWriteExt as _, sync::mpsc};

use crate::db::store::Event;

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::parse::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// The `[alerts]` section. Off when it names no webhook and no command.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// URLs that get each message as a JSON POST.
    pub webhooks: Vec<String>,
    /// A program (run without a shell) that gets each message as JSON on stdin.
    pub command: Vec<String>,
    /// info | warning | critical: events below it are not sent.
    pub min_severity: String,
    /// Events are gathered this long into one message.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Further attempts after a failed send, waiting 1 s, 2 s, 4 s, ...
    pub retries: u32,
    /// Per attempt.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            command: Vec::new(),
            min_severity: "warning".into(),
            window: Duration::from_secs(60),
            retries: 3,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Settings {
    pub fn enabled(&self) -> bool {
        !self.webhooks.is_empty() || !self.command.is_empty()
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if rank(&self.min_severity).is_none() {
            return Err((
                "alerts.min_severity",
                format!("{:?} is not info, warning or critical", self.min_severity),
            ));
        }
        for u in &self.webhooks {
            if reqwest::Url::parse(u).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                return Err(("alerts.webhooks", format!("{u:?} is not an http(s) URL")));
            }
        }
        if self.window.is_zero() {
            return Err(("alerts.window", "must be longer than 0s".into()));
        }
        Ok(())
    }
}

fn rank(severity: &str) -> Option<u8> {
    match severity {
        "info" => Some(0),
        "warning" => Some(1),
        "critical" => Some(2),
        _ => None,
    }
}

/// What the metrics show of the alerts.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// Events not queued because the sender was behind.
    pub dropped: AtomicU64,
}

/// The controller's end: queues events, never waits.
pub struct Alerts {
    tx: mpsc::Sender<Event>,
    min: u8,
    pub stats: Arc<AlertStats>,
}

impl Alerts {
    /// Starts the sender task; `None` when alerts are off.
    pub fn start(settings: &Settings, node: &str) -> Option<Self> {
        if !settings.enabled() {
            return None;
        }
        let (tx, rx) = mpsc::channel(10_000);
        let stats = Arc::new(AlertStats::default());
        tokio::spawn(sender(
            settings.clone(),
            node.to_string(),
            rx,
            stats.clone(),
        ));
        Some(Self {
            tx,
            min: rank(&settings.min_severity).unwrap_or(1),
            stats,
        })
    }

    pub fn offer(&self, e: &Event) {
        if rank(&e.severity).unwrap_or(2) < self.min {
            return;
        }
        if self.tx.try_send(e.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Events one window keeps for its counts and sources.
const MAX_KEPT: usize = 10_000;

async fn sender(s: Settings, node: String, mut rx: mpsc::Receiver<Event>, stats: Arc<AlertStats>) {
    let client = match reqwest::Client::builder().timeout(s.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alerts off: no HTTP client");
            return;
        }
    };
    // The first event opens a window; what arrives until it closes is one
    // message.
    while let Some(first) = rx.recv().await {
        // A window holds at most MAX_KEPT events; the rest are only
        // counted, so a long storm of events costs no memory.
        let mut batch = vec![first];
        let mut more = 0usize;
        let close = tokio::time::Instant::now() + s.window;
        while let Ok(Some(e)) = tokio::time::timeout_at(close, rx.recv()).await {
            if batch.len() < MAX_KEPT {
                batch.push(e);
            } else {
                more += 1;
            }
        }
        let mut msg = message(&node, s.window, &batch);
        if more > 0 {
            msg["events"] = json!(batch.len() + more);
            msg["not_itemised"] = json!(more);
        }
        for url in &s.webhooks {
            let ok = with_retries(s.retries, || post(&client, url, &msg)).await;
            count(&stats, ok, "webhook", url);
        }
        if !s.command.is_empty() {
            let ok = with_retries(s.retries, || run_command(&s.command, &msg, s.timeout)).await;
            count(&stats, ok, "command", &s.command[0]);
        }
    }
}

fn count(stats: &AlertStats, ok: Result<(), String>, kind: &str, to: &str) {
    match ok {
        Ok(()) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            // The URL may carry a token: only its host is logged.
            let to = reqwest::Url::parse(to)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| to.to_string());
            tracing::warn!(kind, to = %to, error = %e, "alert not delivered");
        }
    }
}

async fn with_retries<F, Fut>(retries: u32, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut wait = Duration::from_secs(1);
    let mut last = Err(String::new());
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        last = f().await;
        if last.is_ok() {
            break;
        }
    }
    last
}

async fn post(client: &reqwest::Client, url: &str, msg: &Value) -> Result<(), String> {
    let r = client
        .post(url)
        .json(msg)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", r.status()))
    }
}

async fn run_command(cmd: &[String], msg: &Value, timeout: Duration) -> Result<(), String> {
    let mut child = tokio::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cmd[0]))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let body = msg.to_string();
    let run = async {
        stdin
            .write_all(body.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        drop(stdin);
        child.wait().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(format!("{} exited with {st}", cmd[0])),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("{} did not finish within {timeout:?}", cmd[0])),
    }
}

/// One message for a window's events: counts by type and by reason, the
/// sources most seen, the first events in full, and a `text` line.
pub fn message(node: &str, window: Duration, events: &[Event]) -> Value {
    let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_source: BTreeMap<&str, u64> = BTreeMap::new();
    let mut worst = 0;
    for e in events {
        *by_type.entry(&e.event_type).or_default() += 1;
        if let Some(ip) = &e.source_ip {
            *by_source.entry(ip).or_default() += 1;
        }
        worst = worst.max(rank(&e.severity).unwrap_or(2));
    }
    let mut top: Vec<(&str, u64)> = by_source.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(10);
    let severity = ["info", "warning", "critical"][usize::from(worst)];
    let counts: Vec<String> = by_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let sources: Vec<&str> = top.iter().map(|(ip, _)| *ip).collect();
    let text = format!(
        "sip-xdp on {node} [{severity}]: {} event(s) in {}: {}{}",
        events.len(),
        humantime::format_duration(window),
        counts.join(", "),
        if sources.is_empty() {
            String::new()
        } else {
            format!("; sources: {}", sources.join(", "))
        }
    );
    json!({
        "text": text,
        "node": node,
        "severity": severity,
        "window_s": window.as_secs_f64(),
        "events": events.len(),
        "counts": by_type,
        "top_sources": top.iter().map(|(ip, n)| json!({"src_ip": ip, "events": n})).collect::<Vec<_>>(),
        "first": events.iter().take(20).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: &str, ip: &str, sev: &str) -> Event {
        Event {
            event_type: t.into(),
            source_ip: Some(ip.into()),
            severity: sev.into(),
            details: json!({}),
            event_time: crate::db::store::now(),
            node: None,
        }
    }

    #[test]
    fn a_window_of_events_is_one_message_with_counts() {
        let mut events = Vec::new();
        for i in 0..1000 {
            events.push(ev(
                "flood_detected",
                &format!("198.51.100.{}", i % 3),
                "warning",
            ));
            events.push(ev(
                "ip_blocked",
                &format!("198.51.100.{}", i % 3),
                "warning",
            ));
        }
        events.push(ev("scanner_detected", "203.0.113.9", "critical"));
        let m = message("sbc-1", Duration::from_secs(60), &events);
        assert_eq!(m["events"], 2001);
        assert_eq!(m["severity"], "critical");
        assert_eq!(m["counts"]["ip_blocked"], 1000);
        assert_eq!(m["first"].as_array().unwrap().len(), 20);
        let text = m["text"].as_str().unwrap();
        assert!(text.starts_with("sip-xdp on sbc-1 [critical]: 2001 event(s) in 1m: 1000 flood_detected, 1000 ip_blocked, 1 scanner_detected; sources: 198.51.100.0"), "{text}");
    }

    #[test]
    fn bad_settings_are_named() {
        let s = Settings {
            min_severity: "loud".into(),
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "alerts.min_severity");
        let s = Settings {
            webhooks: vec!["ftp://x".into()],
            ..Default::default()
        };
        assert_eq!(s.validate().unwrap_err().0, "alerts.webhooks");
        assert!(!Settings::default().enabled());
    }
}
