//! The SIP server's failure tables (`failed_registrations`,
//! `door_knock_attempts`): what brute-force detection reads.

use super::*;

/// One row of `failed_registrations` or `door_knock_attempts`: the columns
/// brute-force detection reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FailureRow {
    pub id: i64,
    pub source_ip: String,
    pub attempt_time: NaiveDateTime,
    pub username: Option<String>,
    pub user_agent: Option<String>,
    pub response_code: Option<i32>,
}

/// One read of a failure table: the rows that decoded, and how far the read
/// went (bad rows included), so that the cursor moves past them once.
#[derive(Debug, Default)]
pub struct FailureBatch {
    pub rows: Vec<FailureRow>,
    pub last_id: Option<i64>,
    pub fetched: usize,
}

/// The tables brute-force detection reads.
pub const FAILURE_TABLES: [&str; 2] = ["failed_registrations", "door_knock_attempts"];

impl Store {
    /// Failure rows after `after_id` with an attempt time from `since` on,
    /// oldest id first. `table` is one of `FAILURE_TABLES`.
    pub async fn failures(
        &self,
        table: &'static str,
        after_id: i64,
        since: NaiveDateTime,
        limit: i64,
    ) -> Result<FailureBatch> {
        assert!(
            FAILURE_TABLES.contains(&table),
            "not a failure table: {table}"
        );
        let sql = format!(
            "SELECT id, source_ip, attempt_time, username, user_agent, response_code \
             FROM {table} WHERE id > ? AND {} ORDER BY id LIMIT ?",
            self.not_before("attempt_time")
        );
        let ((rows, last_id, fetched), bad) = with_pool!(self, p => {
            let rows = sqlx::query(safe(&sql))
                .bind(after_id)
                .bind(self.theirs(since))
                .bind(limit)
                .fetch_all(p)
                .await?;
            let fetched = rows.len();
            let last_id = rows.iter().map(|r| row_id!(r)).max();
            let (good, bad) = decode_each(
                rows,
                table,
                |r| {
                    FailureRow::from_row(r).map(|mut f| {
                        f.attempt_time = self.ours(f.attempt_time);
                        f
                    })
                },
                |r| row_id!(r),
            );
            ((good, last_id, fetched), bad)
        });
        for b in bad {
            tracing::warn!(table = b.table, id = b.id, reason = ?b.why, "skipping failure row");
        }
        Ok(FailureBatch {
            rows,
            last_id,
            fetched,
        })
    }

    /// Rows of `table` as a plain INSERT from another program would write
    /// them; for tests and `sip-xdp` demos.
    pub async fn insert_failure(
        &self,
        table: &'static str,
        source_ip: &str,
        username: &str,
        user_agent: &str,
        response_code: i32,
        at: NaiveDateTime,
    ) -> Result<i64> {
        assert!(
            FAILURE_TABLES.contains(&table),
            "not a failure table: {table}"
        );
        let sql = format!(
            "INSERT INTO {table} (source_ip, username, user_agent, response_code, attempt_time) \
             VALUES (?, ?, ?, ?, ?)"
        );
        let id = with_pool!(self, p => sqlx::query(safe(&sql))
            .bind(source_ip)
            .bind(username)
            .bind(user_agent)
            .bind(response_code)
            .bind(self.theirs(at))
            .execute(p)
            .await
            .map(|r| r.inserted_id()))?;
        Ok(id)
    }
}
