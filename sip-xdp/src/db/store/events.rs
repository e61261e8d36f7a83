//! `security_events`: writing decisions, reading them back, the report
//! over a period, and deleting old ones.

use super::*;

/// A decision to record in `security_events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub event_type: String,
    pub source_ip: Option<String>,
    pub severity: String,
    /// JSON object with the figures behind the decision.
    pub details: serde_json::Value,
    pub event_time: NaiveDateTime,
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub event_type: String,
    pub source_ip: Option<String>,
    pub severity: String,
    pub details: Option<String>,
    pub event_time: NaiveDateTime,
    pub node: Option<String>,
}

/// What `sip-xdp report` shows of a period, times on our clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// (reason as in `blocked_ips.source`, bans), most first.
    pub bans_by_reason: Vec<(String, i64)>,
    /// (address, bans, last ban), most first.
    pub top_banned: Vec<(String, i64, NaiveDateTime)>,
    /// (hour, event type, events), oldest hour first.
    pub events_per_hour: Vec<(NaiveDateTime, String, i64)>,
    /// (user, domain, attempts, distinct sources), most first.
    pub failures_by_user: Vec<(String, String, i64, i64)>,
}

impl Store {
    /// The period from `since` on, in four groupings, `n` rows each at most.
    pub async fn report(&self, since: NaiveDateTime, n: i64) -> Result<Report> {
        let since_db = self.theirs(since);
        let (hour, hour_fmt) = match self.pool {
            Pool::Sqlite(_) => (
                "strftime('%Y-%m-%d %H:00:00', event_time)",
                "julianday(event_time) >= julianday(?)",
            ),
            Pool::Mysql(_) => (
                "DATE_FORMAT(event_time, '%Y-%m-%d %H:00:00')",
                "event_time >= ?",
            ),
        };
        let bans_sql = format!(
            "SELECT source, COUNT(*) FROM blocked_ips WHERE {} GROUP BY source ORDER BY 2 DESC, 1 LIMIT ?",
            self.not_before("blocked_at")
        );
        let top_sql = format!(
            "SELECT ip_address, COUNT(*), MAX(blocked_at) FROM blocked_ips WHERE {} \
             GROUP BY ip_address ORDER BY 2 DESC, 3 DESC LIMIT ?",
            self.not_before("blocked_at")
        );
        let hour_sql = format!(
            "SELECT {hour}, event_type, COUNT(*) FROM security_events WHERE {hour_fmt} \
             GROUP BY 1, 2 ORDER BY 1, 3 DESC"
        );
        let fail_sql = format!(
            "SELECT username, domain, COUNT(*), COUNT(DISTINCT source_ip) FROM failed_registrations \
             WHERE {} GROUP BY username, domain ORDER BY 3 DESC, 1 LIMIT ?",
            self.not_before("attempt_time")
        );
        let (bans, top, hours, fails) = with_pool!(self, p => {
            let bans: Vec<(String, i64)> = sqlx::query_as(safe(&bans_sql)).bind(since_db).bind(n).fetch_all(p).await?;
            let top: Vec<(String, i64, NaiveDateTime)> = sqlx::query_as(safe(&top_sql)).bind(since_db).bind(n).fetch_all(p).await?;
            let hours: Vec<(String, String, i64)> = sqlx::query_as(safe(&hour_sql)).bind(since_db).fetch_all(p).await?;
            let fails: Vec<(String, String, i64, i64)> = sqlx::query_as(safe(&fail_sql)).bind(since_db).bind(n).fetch_all(p).await?;
            (bans, top, hours, fails)
        });
        Ok(Report {
            bans_by_reason: bans,
            top_banned: top
                .into_iter()
                .map(|(ip, n, t)| (ip, n, self.ours(t)))
                .collect(),
            events_per_hour: hours
                .into_iter()
                .filter_map(|(h, t, n)| {
                    NaiveDateTime::parse_from_str(&h, "%Y-%m-%d %H:%M:%S")
                        .ok()
                        .map(|h| (on_the_minute(self.ours(h)), t, n))
                })
                .collect(),
            failures_by_user: fails,
        })
    }

    /// Deletes up to `limit` events older than `before`.
    pub async fn delete_events_before(&self, before: NaiveDateTime, limit: i64) -> Result<u64> {
        // Compared as stored (no julianday) so the time index serves: the
        // text times both engines write sort as times.
        self.delete_batch(
            "security_events",
            "event_time < ?",
            self.theirs(before),
            limit,
        )
        .await
    }

    /// Deletes up to `limit` of the oldest events beyond the newest `keep`.
    pub async fn delete_events_beyond(&self, keep: u64, limit: i64) -> Result<u64> {
        self.delete_beyond("security_events", "1 = 1", keep, limit)
            .await
    }

    /// Writes events in one transaction: all or nothing, so a caller that
    /// buffers them can keep them on failure and retry.
    pub async fn insert_events(&self, events: &[Event]) -> Result<()> {
        let sql = "INSERT INTO security_events (event_type, source_ip, severity, details, event_time, node) \
                   VALUES (?, ?, ?, ?, ?, ?)";
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for e in events {
                sqlx::query(sql)
                    .bind(&e.event_type)
                    .bind(&e.source_ip)
                    .bind(&e.severity)
                    .bind(e.details.to_string())
                    .bind(self.theirs(e.event_time))
                    .bind(&e.node)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Events since `since`, newest first, optionally of one type.
    pub async fn events(
        &self,
        since: NaiveDateTime,
        event_type: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let filter = if event_type.is_some() {
            " AND event_type = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, event_type, source_ip, severity, details, event_time, node \
             FROM security_events WHERE {}{filter} ORDER BY event_time DESC, id DESC LIMIT ?",
            match self.pool {
                Pool::Sqlite(_) => "julianday(event_time) >= julianday(?)",
                Pool::Mysql(_) => "event_time >= ?",
            }
        );
        let rows: Vec<EventRow> = with_pool!(self, p => {
            let mut q = sqlx::query_as(safe(&sql)).bind(self.theirs(since));
            if let Some(t) = event_type {
                q = q.bind(t);
            }
            q.bind(limit).fetch_all(p).await
        })?;
        Ok(rows
            .into_iter()
            .map(|mut e| {
                e.event_time = self.ours(e.event_time);
                e
            })
            .collect())
    }
}
