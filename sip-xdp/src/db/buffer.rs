//! Decisions on their way to `security_events`. Buffered in memory so that a
//! database outage loses nothing until the buffer is full; past that the
//! oldest go first, counted and logged.

use std::collections::VecDeque;

use serde_json::Value;

use super::store::{now, Event, Store, StoreError};

/// What names an address's country (the `[geo]` database's lookup).
pub type CountryOf = Box<dyn Fn(std::net::IpAddr) -> Option<String> + Send + Sync>;

/// Events written per transaction when catching up.
const BATCH: usize = 500;

/// Something that sees every event as it is recorded.
pub type Tap = Box<dyn Fn(&Event) + Send + Sync>;

pub struct EventBuffer {
    /// Events with their sequence numbers, oldest first.
    queue: VecDeque<(u64, Event)>,
    next: u64,
    cap: usize,
    dropped: u64,
    node: Option<String>,
    /// Sees every event as it is recorded (alerts).
    tap: Option<Tap>,
    /// Names the country of an event's source (`[geo]`).
    geo: Option<CountryOf>,
}

impl EventBuffer {
    pub fn new(cap: usize, node: Option<String>) -> Self {
        Self {
            queue: VecDeque::new(),
            next: 0,
            cap: cap.max(1),
            dropped: 0,
            node,
            tap: None,
            geo: None,
        }
    }

    /// Shows every event recorded from now on to `tap` as well.
    pub fn set_tap(&mut self, tap: Option<Tap>) {
        self.tap = tap;
    }

    /// Records a decision now, from this node.
    /// The country database that names events' sources, or none.
    pub fn set_geo(&mut self, geo: Option<CountryOf>) {
        self.geo = geo;
    }

    pub fn record(
        &mut self,
        event_type: &str,
        source_ip: Option<String>,
        severity: &str,
        mut details: Value,
    ) {
        let country = self
            .geo
            .as_ref()
            .zip(source_ip.as_deref())
            .and_then(|(g, ip)| {
                // A source may be a prefix (a /64 ban): its address names it.
                let ip = ip.split('/').next()?.parse().ok()?;
                g(ip)
            });
        if let (Some(c), Some(d)) = (country, details.as_object_mut()) {
            d.insert("country".into(), Value::String(c));
        }
        self.push(Event {
            event_type: event_type.into(),
            source_ip,
            severity: severity.into(),
            details,
            event_time: now(),
            node: self.node.clone(),
        });
    }

    pub fn push(&mut self, e: Event) {
        if let Some(tap) = &self.tap {
            tap(&e);
        }
        if self.queue.len() >= self.cap {
            self.queue.pop_front();
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    capacity = self.cap,
                    "event buffer full while the database is unreachable: dropping the oldest events"
                );
            }
        }
        self.queue.push_back((self.next, e));
        self.next += 1;
    }

    /// Every buffered event, and the mark to `confirm` once they are
    /// written: a database round works on a copy, so an event recorded or
    /// dropped meanwhile is never lost or written twice.
    pub fn snapshot(&self) -> (Vec<Event>, u64) {
        (
            self.queue.iter().map(|(_, e)| e.clone()).collect(),
            self.next,
        )
    }

    /// Forgets the events recorded before `mark` (they were written).
    pub fn confirm(&mut self, mark: u64) {
        while self.queue.front().is_some_and(|(seq, _)| *seq < mark) {
            self.queue.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Events lost to a full buffer since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes everything buffered, oldest first, in batches. On failure the
    /// unwritten events stay buffered. Returns how many were written.
    pub async fn flush(&mut self, store: &Store) -> Result<usize, StoreError> {
        let mut written = 0;
        while !self.queue.is_empty() {
            let n = self.queue.len().min(BATCH);
            let batch: Vec<Event> = self.queue.iter().take(n).map(|(_, e)| e.clone()).collect();
            store.insert_events(&batch).await?;
            self.queue.drain(..n);
            written += n;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn full_buffer_drops_oldest_and_counts() {
        let mut b = EventBuffer::new(3, Some("n1".into()));
        for i in 0..5 {
            b.record(
                "ip_blocked",
                Some(format!("203.0.113.{i}")),
                "warning",
                json!({}),
            );
        }
        assert_eq!((b.len(), b.dropped()), (3, 2));
        let ips: Vec<_> = b
            .queue
            .iter()
            .map(|(_, e)| e.source_ip.clone().unwrap())
            .collect();
        assert_eq!(ips, ["203.0.113.2", "203.0.113.3", "203.0.113.4"]);
        assert_eq!(b.queue[0].1.node.as_deref(), Some("n1"));
    }

    #[test]
    fn a_snapshot_confirmed_later_loses_and_repeats_nothing() {
        let mut b = EventBuffer::new(3, None);
        b.record("a", None, "info", json!({}));
        b.record("b", None, "info", json!({}));
        let (copy, mark) = b.snapshot();
        assert_eq!(copy.len(), 2);
        // While the copy is being written: one more, and one dropped.
        b.record("c", None, "info", json!({}));
        b.record("d", None, "info", json!({}));
        b.confirm(mark);
        let left: Vec<_> = b.queue.iter().map(|(_, e)| e.event_type.as_str()).collect();
        assert_eq!(left, ["c", "d"]);
        assert_eq!(b.dropped(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn flush_writes_all_and_keeps_them_on_failure() {
        let dir = std::env::temp_dir().join(format!("sip-xdp-ev-{}", std::process::id()));
        let url = format!("sqlite://{}/e.db", dir.display());
        let store = crate::db::connect(&url).await.unwrap();
        let mut b = EventBuffer::new(10_000, None);
        for _ in 0..1203 {
            b.record("flood_detected", None, "warning", json!({"packets": 1}));
        }
        assert_eq!(b.flush(&store).await.unwrap(), 1203);
        assert!(b.is_empty());
        let since = now() - chrono::Duration::minutes(5);
        assert_eq!(store.events(since, None, 5000).await.unwrap().len(), 1203);
        // A closed pool fails: nothing is lost.
        b.record("ip_blocked", None, "warning", json!({}));
        if let crate::db::store::Pool::Sqlite(p) = store.pool() {
            p.close().await;
        }
        assert!(b.flush(&store).await.is_err());
        assert_eq!(b.len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
