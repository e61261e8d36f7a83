//! `blocked_ips`: the active rules, lifting and extending rows, writing
//! bans, and deleting lifted rows past retention.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BlockRow {
    pub id: i64,
    pub ip_address: String,
    pub reason: String,
    pub source: String,
    pub blocked_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub unblocked_at: Option<NaiveDateTime>,
    pub node: Option<String>,
}

const BLOCK_COLS: &str =
    "id, ip_address, reason, source, blocked_at, expires_at, unblocked_at, node";
const RULE_COLS: &str = "id, ip_address, source, blocked_at, expires_at";
/// `RULE_COLS` with SQLite's text times turned into milliseconds since the
/// epoch by SQLite itself. sqlx decodes a text time by trying up to a
/// dozen formats in turn (a good share of a read of 100,000 rows);
/// `julianday` reads the text once, as the `WHERE`
/// clause's comparisons already read it. A text it cannot read becomes
/// NULL: for `expires_at` such a row is not active (the comparison fails),
/// for `blocked_at` `sqlite_rule_columns` reports the row.
const SQLITE_RULE_COLS: &str = "id, ip_address, source, \
     CAST(ROUND((julianday(blocked_at) - 2440587.5) * 86400000.0) AS INTEGER) AS blocked_at, \
     CAST(ROUND((julianday(expires_at) - 2440587.5) * 86400000.0) AS INTEGER) AS expires_at";

/// A row of `SQLITE_RULE_COLS`.
fn sqlite_rule_columns(
    r: &sqlx::sqlite::SqliteRow,
) -> std::result::Result<RuleColumns, sqlx::Error> {
    let not_a_time = |col: &str| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: "not a time SQLite reads".into(),
    };
    let time = |col: &str| match r.try_get::<Option<i64>, _>(col)? {
        None => Ok(None),
        Some(ms) => chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| Some(t.naive_utc()))
            .ok_or_else(|| not_a_time(col)),
    };
    Ok(RuleColumns {
        id: r.try_get("id")?,
        ip_address: r.try_get("ip_address")?,
        source: r.try_get("source")?,
        blocked_at: time("blocked_at")?.ok_or_else(|| not_a_time("blocked_at"))?,
        expires_at: time("expires_at")?,
    })
}

impl BlockRow {
    /// The rule this row asks the kernel to enforce, or why it cannot.
    pub fn rule(&self) -> std::result::Result<crate::db::rows::BlockRule, crate::db::rows::BadRow> {
        rule_of(&RuleColumns {
            id: self.id,
            ip_address: self.ip_address.clone(),
            source: self.source.clone(),
            blocked_at: self.blocked_at,
            expires_at: self.expires_at,
        })
    }
}

impl Store {
    fn block_ours(&self, mut r: BlockRow) -> BlockRow {
        r.blocked_at = self.ours(r.blocked_at);
        r.expires_at = r.expires_at.map(|t| self.ours(t));
        r.unblocked_at = r.unblocked_at.map(|t| self.ours(t));
        r
    }

    /// Deletes up to `limit` of the oldest lifted blocks beyond the newest
    /// `keep` lifted ones.
    pub async fn delete_lifted_beyond(&self, keep: u64, limit: i64) -> Result<u64> {
        self.delete_beyond("blocked_ips", "unblocked_at IS NOT NULL", keep, limit)
            .await
    }

    /// Deletes up to `limit` blocks lifted before `before`; an active block
    /// is never deleted.
    pub async fn delete_lifted_before(&self, before: NaiveDateTime, limit: i64) -> Result<u64> {
        let cond = "unblocked_at IS NOT NULL AND unblocked_at < ?";
        self.delete_batch("blocked_ips", cond, self.theirs(before), limit)
            .await
    }

    /// Blocks in force at `at`: not lifted, not expired.
    pub async fn active_blocks(&self, at: NaiveDateTime) -> Result<Vec<BlockRow>> {
        let (rows, bad) = self.active_blocks_checked(at).await?;
        for b in bad {
            tracing::warn!(table = b.table, id = b.id, reason = ?b.why, "skipping database row");
        }
        Ok(rows)
    }

    fn active_blocks_sql(&self, cols: &str) -> String {
        format!(
            "SELECT {cols} FROM blocked_ips WHERE unblocked_at IS NULL \
             AND (expires_at IS NULL OR {}) ORDER BY id",
            self.later("expires_at")
        )
    }

    /// Active blocks, and the rows among them that did not decode.
    pub async fn active_blocks_checked(
        &self,
        at: NaiveDateTime,
    ) -> Result<(Vec<BlockRow>, Vec<Undecoded>)> {
        let sql = self.active_blocks_sql(BLOCK_COLS);
        Ok(with_pool!(self, p => {
            let rows = sqlx::query(safe(&sql)).bind(self.theirs(at)).fetch(p);
            decode_stream(rows, "blocked_ips", |r| BlockRow::from_row(r).map(|b| self.block_ours(b)), |r| row_id!(r)).await?
        }))
    }

    /// Active blocks as the sync keeps them: each row's rule (or why it
    /// cannot be used), made as the rows stream in.
    pub async fn active_rules_checked(
        &self,
        at: NaiveDateTime,
    ) -> Result<(Vec<RuleOrBad>, Vec<Undecoded>)> {
        let rule = |c: std::result::Result<RuleColumns, sqlx::Error>| {
            c.map(|mut c| {
                c.blocked_at = self.ours(c.blocked_at);
                c.expires_at = c.expires_at.map(|t| self.ours(t));
                rule_of(&c)
            })
        };
        Ok(match &self.pool {
            Pool::Sqlite(p) => {
                let sql = self.active_blocks_sql(SQLITE_RULE_COLS);
                let rows = sqlx::query(safe(&sql)).bind(self.theirs(at)).fetch(p);
                decode_stream(
                    rows,
                    "blocked_ips",
                    |r| rule(sqlite_rule_columns(r)),
                    |r| row_id!(r),
                )
                .await?
            }
            Pool::Mysql(p) => {
                let sql = self.active_blocks_sql(RULE_COLS);
                let rows = sqlx::query(safe(&sql)).bind(self.theirs(at)).fetch(p);
                decode_stream(
                    rows,
                    "blocked_ips",
                    |r| rule(RuleColumns::from_row(r)),
                    |r| row_id!(r),
                )
                .await?
            }
        })
    }

    /// A summary of the active blocks and the allow-list, from aggregates
    /// the database computes without sending a row: equal summaries mean
    /// a full read would return the same lists (membership through the
    /// count, sum and largest of the ids; expiries through their sum, in
    /// seconds). A row edited in place otherwise (its address) is not
    /// seen: the controller reads everything now and then anyway.
    pub async fn lists_fingerprint(&self, at: NaiveDateTime) -> Result<Vec<i64>> {
        let (expiry, int) = match self.pool {
            Pool::Sqlite(_) => (
                "COALESCE(SUM(CAST(strftime('%s', expires_at) AS INTEGER)), 0)",
                "INTEGER",
            ),
            Pool::Mysql(_) => (
                "COALESCE(SUM(FLOOR(UNIX_TIMESTAMP(expires_at))), 0)",
                "SIGNED",
            ),
        };
        let blocks = format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(id), 0) AS {int}), CAST(COALESCE(MAX(id), 0) AS {int}), \
             CAST({expiry} AS {int}) FROM blocked_ips WHERE unblocked_at IS NULL \
             AND (expires_at IS NULL OR {})",
            self.later("expires_at")
        );
        let allows = format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(id), 0) AS {int}), CAST(COALESCE(MAX(id), 0) AS {int}) \
             FROM whitelisted_ips"
        );
        type Blocks = (i64, i64, i64, i64);
        type Allows = (i64, i64, i64);
        let (b, a): (Blocks, Allows) = with_pool!(self, p => {
            let b = sqlx::query_as(safe(&blocks)).bind(self.theirs(at)).fetch_one(p).await?;
            let a = sqlx::query_as(safe(&allows)).fetch_one(p).await?;
            Ok::<_, sqlx::Error>((b, a))
        })?;
        Ok(vec![b.0, b.1, b.2, b.3, a.0, a.1, a.2])
    }

    /// Blocks past their expiry that nobody has marked lifted yet.
    pub async fn expired_unlifted(&self, at: NaiveDateTime) -> Result<Vec<BlockRow>> {
        let sql = format!(
            "SELECT {BLOCK_COLS} FROM blocked_ips WHERE unblocked_at IS NULL \
             AND expires_at IS NOT NULL AND NOT ({}) ORDER BY id",
            self.later("expires_at")
        );
        let rows: Vec<BlockRow> = with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(self.theirs(at)).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| self.block_ours(r)).collect())
    }

    /// What a lift sets, three binds of the lift time: `unblocked_at`, and
    /// an `expires_at` no later than the lift, so that a SIP server's own
    /// query (`expires_at IS NULL OR expires_at > NOW()`, with no
    /// `unblocked_at` in it) stops seeing the row as blocked too.
    /// The values `lift_set` binds for a lift at `at` (the database's
    /// clock): the lift time, and the whole second at or before it for
    /// `expires_at`. `NOW()` and `datetime('now')` are whole seconds, and
    /// `…:01.123 > …:01` would keep the row active to the classic query
    /// until the second ends.
    fn lift_binds(at: NaiveDateTime) -> [NaiveDateTime; 3] {
        let second = at.with_nanosecond(0).unwrap_or(at);
        [at, second, second]
    }

    fn lift_set(&self) -> String {
        format!(
            "unblocked_at = ?, expires_at = CASE WHEN expires_at IS NULL OR {} THEN ? ELSE expires_at END",
            self.later("expires_at")
        )
    }

    /// Marks one block lifted (only if still unlifted). True if it was.
    pub async fn mark_lifted(&self, id: i64, at: NaiveDateTime) -> Result<bool> {
        let sql = format!(
            "UPDATE blocked_ips SET {} WHERE id = ? AND unblocked_at IS NULL",
            self.lift_set()
        );
        let [at, a, b] = Self::lift_binds(self.theirs(at));
        let n = with_pool!(self, p => sqlx::query(safe(&sql)).bind(at).bind(a).bind(b).bind(id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n > 0)
    }

    /// Lifts every unlifted block of exactly `ip_address`. Returns how many.
    pub async fn lift(&self, ip_address: &str, at: NaiveDateTime) -> Result<u64> {
        let sql = format!(
            "UPDATE blocked_ips SET {} WHERE ip_address = ? AND unblocked_at IS NULL",
            self.lift_set()
        );
        let [at, a, b] = Self::lift_binds(self.theirs(at));
        Ok(
            with_pool!(self, p => sqlx::query(safe(&sql)).bind(at).bind(a).bind(b).bind(ip_address).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    pub async fn insert_block(
        &self,
        ip_address: &str,
        reason: &str,
        source: &str,
        blocked_at: NaiveDateTime,
        expires_at: Option<NaiveDateTime>,
        node: Option<&str>,
    ) -> Result<i64> {
        let sql =
            "INSERT INTO blocked_ips (ip_address, reason, source, blocked_at, expires_at, node) \
                   VALUES (?, ?, ?, ?, ?, ?)";
        let id = with_pool!(self, p => sqlx::query(sql)
            .bind(ip_address)
            .bind(reason)
            .bind(source)
            .bind(self.theirs(blocked_at))
            .bind(expires_at.map(|t| self.theirs(t)))
            .bind(node)
            .execute(p)
            .await
            .map(|r| r.inserted_id()))?;
        Ok(id)
    }

    /// Active blocks written by one source (a feed's rows).
    pub async fn active_blocks_of_source(
        &self,
        source: &str,
        at: NaiveDateTime,
    ) -> Result<Vec<BlockRow>> {
        let sql = format!(
            "SELECT {BLOCK_COLS} FROM blocked_ips WHERE source = ? AND unblocked_at IS NULL \
             AND (expires_at IS NULL OR {}) ORDER BY id",
            self.later("expires_at")
        );
        // One bad row (a hand-written date that does not decode) costs
        // itself, not the feed's write.
        let (rows, bad) = with_pool!(self, p => {
            let rows = sqlx::query(safe(&sql)).bind(source).bind(self.theirs(at)).fetch(p);
            decode_stream(rows, "blocked_ips", |r| BlockRow::from_row(r).map(|b| self.block_ours(b)), |r| row_id!(r)).await?
        });
        for b in bad {
            tracing::warn!(table = b.table, id = b.id, reason = ?b.why, "skipping database row");
        }
        Ok(rows)
    }

    /// Many blocks of one source at once: a multi-row INSERT per 500, all
    /// values bound.
    pub async fn insert_blocks(
        &self,
        ips: &[String],
        reason: &str,
        source: &str,
        at: NaiveDateTime,
        expires_at: Option<NaiveDateTime>,
        node: &str,
    ) -> Result<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let (at, exp) = (self.theirs(at), expires_at.map(|t| self.theirs(t)));
        // One transaction (one log flush, not one per autocommitted
        // statement, which dominated a 100k-row feed's write), in
        // statements of INSERT_ROWS rows (6 binds each, under both
        // databases' limits).
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in ips.chunks(INSERT_ROWS) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO blocked_ips (ip_address, reason, source, blocked_at, expires_at, node) ",
                );
                qb.push_values(chunk, |mut b, ip| {
                    b.push_bind(ip)
                        .push_bind(reason)
                        .push_bind(source)
                        .push_bind(at)
                        .push_bind(exp)
                        .push_bind(node);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Marks these rows lifted at `at` (those not lifted yet).
    pub async fn lift_ids(&self, ids: &[i64], at: NaiveDateTime) -> Result<()> {
        self.set_on_ids(None, self.theirs(at), ids).await
    }

    /// Moves these rows' expiry to `expires_at`.
    pub async fn extend_ids(&self, ids: &[i64], expires_at: NaiveDateTime) -> Result<()> {
        self.set_on_ids(Some("expires_at"), self.theirs(expires_at), ids)
            .await
    }

    /// `UPDATE blocked_ips SET col = t` (with no `col`, the lift of
    /// `lift_set` at `t`) on the unlifted rows of `ids`, in one transaction,
    /// INSERT_ROWS ids per statement. `col` is one of this module's
    /// constants.
    async fn set_on_ids(
        &self,
        col: Option<&'static str>,
        t: NaiveDateTime,
        ids: &[i64],
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in ids.chunks(INSERT_ROWS) {
                let mut qb = sqlx::QueryBuilder::new("UPDATE blocked_ips SET ");
                match col {
                    Some(col) => {
                        qb.push(col).push(" = ").push_bind(t);
                    }
                    None => {
                        let set = self.lift_set();
                        let mut parts = set.split('?');
                        qb.push(parts.next().unwrap_or_default());
                        for (part, v) in parts.zip(Self::lift_binds(t)) {
                            qb.push_bind(v).push(part);
                        }
                    }
                }
                qb.push(" WHERE unblocked_at IS NULL AND id IN (");
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(*id);
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    pub async fn blocks_of(&self, ip_address: &str) -> Result<Vec<BlockRow>> {
        let sql = format!("SELECT {BLOCK_COLS} FROM blocked_ips WHERE ip_address = ? ORDER BY id");
        let rows: Vec<BlockRow> =
            with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(ip_address).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| self.block_ours(r)).collect())
    }
}
