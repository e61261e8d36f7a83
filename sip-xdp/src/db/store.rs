//! The database: the source of truth for block and allow lists, and where
//! every decision is recorded. SQLite by default (nothing to install),
//! MySQL/MariaDB by URL (what OpenSIPS deployments already run; one database
//! shared by every SBC node). Same schema and behaviour on both; migrations
//! are embedded and applied on connect. Every value is a bound parameter.

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{NaiveDateTime, Timelike as _, Utc};
use serde::Serialize;

use super::rows::{rule_of, RuleColumns, RuleOrBad};
use sqlx::{
    mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions},
    FromRow as _, Row,
};

/// Default database: an embedded SQLite file.
pub const DEFAULT_DB_URL: &str = "sqlite:///var/lib/sip-xdp/sip-xdp.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL (use sqlite:///path/file.db or mysql://user:password@host/db)"
    )]
    BadUrl,
    // Not `#[source]`: the message holds the cause already, and the
    // one-line report of an error and its causes would print it twice.
    #[error("database: {0}")]
    Sql(sqlx::Error),
    #[error("applying database migrations: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("creating {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    /// A change the database will never take as it is (too long for its
    /// column, a character the column's charset cannot hold, an address
    /// that is not one): retrying cannot help.
    #[error("{0}")]
    Data(String),
    /// The operator's tables lack what sip-xdp needs and it cannot add it
    /// safely (see `schema`).
    #[error("{SCHEMA_MISMATCH}: {0}")]
    Schema(String),
}

/// How a schema error starts, for those who tell it from an outage.
pub const SCHEMA_MISMATCH: &str = "schema mismatch";

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Sql(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

impl StoreError {
    /// Whether the change itself is at fault, so that writing it again
    /// later cannot succeed. Everything else (no connection, a lock, a
    /// missing column, a missing grant) is the database's state, and a
    /// queued change is written once that is mended.
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Data(_) => true,
            StoreError::Sql(sqlx::Error::Database(db)) => {
                if let Some(m) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                    MYSQL_DATA_ERRORS.contains(&m.number())
                } else {
                    // SQLite's extended codes keep the primary one in the
                    // low byte: TOOBIG, CONSTRAINT, MISMATCH.
                    db.code()
                        .and_then(|c| c.parse::<i64>().ok())
                        .is_some_and(|c| matches!(c & 0xff, 18..=20))
                }
            }
            _ => false,
        }
    }
}

/// MySQL and MariaDB errors caused by the values written: data too long
/// (1406), truncated (1265), out of range (1264), an incorrect string for
/// the charset (1366), an incorrect time (1292), NULL where none may be
/// (1048), a duplicate key (1062), foreign keys (1451, 1452) and check
/// constraints (3819, MariaDB 4025).
const MYSQL_DATA_ERRORS: [u16; 11] = [
    1048, 1062, 1264, 1265, 1292, 1366, 1406, 1451, 1452, 3819, 4025,
];

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection pool to one of the two supported databases, and how far the
/// database's clock is from ours.
///
/// Rows are judged by the database's clock in its own default time zone:
/// that is what `NOW()`, `CURRENT_TIMESTAMP` defaults, OpenSIPS's
/// `failed_registrations` and an operator's `NOW() + INTERVAL 1 HOUR` write.
/// The store measures the difference (`skew`: zone offset plus clock error)
/// at connect and at every sync round, and converts every time it binds or
/// reads, so that the rest of the controller works in its own UTC and nodes
/// whose clocks disagree still agree on what is active.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    skew_ms: Arc<AtomicI64>,
}

#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Mysql(MySqlPool),
}

/// A value `delete_batch` binds.
enum BindValue {
    Time(NaiveDateTime),
    Id(i64),
}

impl From<NaiveDateTime> for BindValue {
    fn from(t: NaiveDateTime) -> Self {
        BindValue::Time(t)
    }
}

impl From<i64> for BindValue {
    fn from(id: i64) -> Self {
        BindValue::Id(id)
    }
}

/// Runs `$body` with `$pool` bound to whichever pool the store holds. The
/// SQL is the same text for both (`?` placeholders), only the types differ.
/// Rows per multi-row INSERT.
const INSERT_ROWS: usize = 2000;

macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Mysql($pool) => $body,
        }
    };
}

/// A row that did not decode (a text date that is not one, a zero date, a
/// column type the row struct does not read): skipped, with its table, id
/// and why, while every other row is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecoded {
    pub table: &'static str,
    pub id: i64,
    pub why: String,
}

/// Decodes rows one at a time: one bad row costs itself, not the query.
fn decode_each<R: Row, T>(
    rows: Vec<R>,
    table: &'static str,
    decode: impl Fn(&R) -> std::result::Result<T, sqlx::Error>,
    id: impl Fn(&R) -> i64,
) -> (Vec<T>, Vec<Undecoded>) {
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for r in &rows {
        match decode(r) {
            Ok(t) => good.push(t),
            Err(e) => bad.push(Undecoded {
                table,
                id: id(r),
                why: e.to_string(),
            }),
        }
    }
    (good, bad)
}

/// `decode_each` over a stream: rows are decoded as they arrive, so a
/// 100k-row table is never held twice (raw and decoded) in memory.
async fn decode_stream<R: Row, T>(
    mut rows: futures_util::stream::BoxStream<'_, std::result::Result<R, sqlx::Error>>,
    table: &'static str,
    decode: impl Fn(&R) -> std::result::Result<T, sqlx::Error>,
    id: impl Fn(&R) -> i64,
) -> std::result::Result<(Vec<T>, Vec<Undecoded>), sqlx::Error> {
    use futures_util::TryStreamExt as _;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while let Some(r) = rows.try_next().await? {
        match decode(&r) {
            Ok(t) => good.push(t),
            Err(e) => bad.push(Undecoded {
                table,
                id: id(&r),
                why: e.to_string(),
            }),
        }
    }
    Ok((good, bad))
}

/// A row's id for a report, whatever its integer type (OpenSIPS and
/// Kamailio tables use INT UNSIGNED); -1 when it has none.
macro_rules! row_id {
    ($r:expr) => {
        $r.try_get::<i64, _>("id")
            .or_else(|_| $r.try_get::<u64, _>("id").map(|v| v as i64))
            .or_else(|_| $r.try_get::<u32, _>("id").map(i64::from))
            .or_else(|_| $r.try_get::<i32, _>("id").map(i64::from))
            .unwrap_or(-1)
    };
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AllowRow {
    pub id: i64,
    pub ip_address: String,
    pub comment: String,
    pub created_at: NaiveDateTime,
}

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

/// Whose `permissions` `address` table the trusted peers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressTable {
    Opensips,
    Kamailio,
}

impl AddressTable {
    pub const fn name(self) -> &'static str {
        match self {
            AddressTable::Opensips => "opensips",
            AddressTable::Kamailio => "kamailio",
        }
    }
}

/// An integer column whatever its SQL type (TINYINT, SMALLINT UNSIGNED,
/// INT UNSIGNED, BIGINT).
fn int_of<R: Row>(r: &R, col: &str) -> std::result::Result<i64, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i16: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i8: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    u32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    u16: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    r.try_get::<i64, _>(col)
        .or_else(|_| r.try_get::<i32, _>(col).map(i64::from))
        .or_else(|_| r.try_get::<u32, _>(col).map(i64::from))
        .or_else(|_| r.try_get::<i16, _>(col).map(i64::from))
        .or_else(|_| r.try_get::<u16, _>(col).map(i64::from))
        .or_else(|_| r.try_get::<i8, _>(col).map(i64::from))
}

/// `t` to the nearest minute: an hour label converted by a measured skew
/// (zone plus a little clock error) stays a round hour.
fn on_the_minute(t: NaiveDateTime) -> NaiveDateTime {
    use chrono::DurationRound as _;
    t.duration_round(chrono::Duration::minutes(1)).unwrap_or(t)
}

/// Current UTC time at millisecond precision (what DATETIME(3) keeps).
pub fn now() -> NaiveDateTime {
    let t = Utc::now().naive_utc();
    t - chrono::Duration::nanoseconds(i64::from(t.and_utc().timestamp_subsec_nanos() % 1_000_000))
}

/// The id of the row an INSERT created, whatever the driver calls it.
trait InsertedId {
    fn inserted_id(&self) -> i64;
}

impl InsertedId for sqlx::sqlite::SqliteQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_rowid()
    }
}

impl InsertedId for sqlx::mysql::MySqlQueryResult {
    fn inserted_id(&self) -> i64 {
        self.last_insert_id() as i64
    }
}

/// SQL assembled in this module from constant fragments only (a column list,
/// a dialect's date comparison); every value goes through `bind`.
fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_string())
}

const BLOCK_COLS: &str =
    "id, ip_address, reason, source, blocked_at, expires_at, unblocked_at, node";
const RULE_COLS: &str = "id, ip_address, source, blocked_at, expires_at";
/// `RULE_COLS` with SQLite's text times turned into milliseconds since the
/// epoch by SQLite itself. sqlx decodes a text time by trying up to a
/// dozen formats in turn (about 2 µs a value here, a fifth of a read of
/// 100,000 rows); `julianday` reads the text once, as the `WHERE`
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

impl Store {
    /// Connects, creating a SQLite file and its directory if needed, and
    /// measures the database's clock; the tables are `migrate::connect`'s.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            if let Some(dir) = opts.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
            }
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts)
                    .await?,
            )
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            // No session time_zone (sqlx sends UTC by default): sessions
            // keep the server's default zone, the one every other writer's
            // NOW() uses; `skew` converts.
            let opts = MySqlConnectOptions::from_str(&url)?.timezone(None::<String>);
            Pool::Mysql(
                MySqlPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts)
                    .await?,
            )
        } else {
            return Err(StoreError::BadUrl);
        };
        let store = Store {
            pool,
            skew_ms: Arc::new(AtomicI64::new(0)),
        };
        store.sync_clock().await?;
        Ok(store)
    }

    /// Measures the database's clock against ours (zone offset and clock
    /// error together), to the millisecond, from the middle of the round
    /// trip. Called at connect and at the start of every sync round, so a
    /// daylight-saving change or a clock step is followed within one round.
    pub async fn sync_clock(&self) -> Result<chrono::Duration> {
        let before = Utc::now().naive_utc();
        let theirs: NaiveDateTime = match &self.pool {
            Pool::Mysql(p) => sqlx::query_scalar("SELECT NOW(3)").fetch_one(p).await?,
            Pool::Sqlite(p) => {
                let text: String =
                    sqlx::query_scalar("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
                        .fetch_one(p)
                        .await?;
                NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
            }
        };
        let after = Utc::now().naive_utc();
        let ours = before + (after - before) / 2;
        let skew = theirs - ours;
        self.skew_ms
            .store(skew.num_milliseconds(), Ordering::Relaxed);
        Ok(skew)
    }

    /// The database's clock minus ours, as last measured.
    pub fn skew(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// One of our times as the database writes it.
    fn theirs(&self, t: NaiveDateTime) -> NaiveDateTime {
        t + self.skew()
    }

    /// One of the database's times on our clock.
    fn ours(&self, t: NaiveDateTime) -> NaiveDateTime {
        t - self.skew()
    }

    fn block_ours(&self, mut r: BlockRow) -> BlockRow {
        r.blocked_at = self.ours(r.blocked_at);
        r.expires_at = r.expires_at.map(|t| self.ours(t));
        r.unblocked_at = r.unblocked_at.map(|t| self.ours(t));
        r
    }

    /// The pool, for tests that need to close it or run their own SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs one DDL or maintenance statement built from constants (never
    /// from input): `schema`'s additions, `migrate`'s bookkeeping.
    pub(super) async fn execute_ddl(&self, sql: &str) -> Result<()> {
        with_pool!(self, p => sqlx::query(safe(sql)).execute(p).await.map(drop))?;
        Ok(())
    }

    /// Migrations applied in the database, and the newest this build knows.
    pub async fn schema_versions(&self) -> Result<(i64, i64)> {
        let sql = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
        let applied: i64 = with_pool!(self, p => sqlx::query_scalar(sql).fetch_one(p).await)?;
        let known = match self.pool {
            Pool::Sqlite(_) => sqlx::migrate!("migrations/sqlite")
                .iter()
                .map(|m| m.version)
                .max(),
            Pool::Mysql(_) => sqlx::migrate!("migrations/mysql")
                .iter()
                .map(|m| m.version)
                .max(),
        };
        Ok((applied, known.unwrap_or(0)))
    }

    /// Whether this account may do everything the controller does (read
    /// and write each table), tried in a transaction that is rolled back.
    pub async fn check_grants(&self) -> Result<()> {
        let statements = [
            "SELECT COUNT(*) FROM blocked_ips WHERE id < 0",
            "UPDATE blocked_ips SET node = node WHERE id < 0",
            "INSERT INTO security_events (event_type, severity) VALUES ('doctor_probe', 'info')",
            "DELETE FROM whitelisted_ips WHERE id < 0",
            "SELECT COUNT(*) FROM failed_registrations WHERE id < 0",
            "SELECT COUNT(*) FROM door_knock_attempts WHERE id < 0",
        ];
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for sql in statements {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.rollback().await
        })?;
        Ok(())
    }

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

    pub fn kind(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Mysql(_) => "mysql",
        }
    }

    /// A cheap round trip, to tell whether the database is reachable.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Runs one constant statement, as an operator's script would (tests,
    /// and `db` maintenance). Returns the rows affected.
    pub async fn execute_literal(&self, sql: &'static str) -> Result<u64> {
        Ok(with_pool!(self, p => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()))?)
    }

    /// Deletes at most `limit` rows of `table` matching `cond` (built from
    /// this module's constants, with one `?`), oldest id first. MySQL deletes with a
    /// LIMIT of its own; SQLite, through a subquery.
    async fn delete_batch(
        &self,
        table: &'static str,
        cond: &str,
        value: impl Into<BindValue>,
        limit: i64,
    ) -> Result<u64> {
        let sql = match self.pool {
            Pool::Mysql(_) => format!("DELETE FROM {table} WHERE {cond} ORDER BY id LIMIT ?"),
            Pool::Sqlite(_) => format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {cond} ORDER BY id LIMIT ?)"
            ),
        };
        let n = match value.into() {
            BindValue::Time(t) => {
                with_pool!(self, p => sqlx::query(safe(&sql)).bind(t).bind(limit).execute(p).await.map(|r| r.rows_affected()))?
            }
            BindValue::Id(id) => {
                with_pool!(self, p => sqlx::query(safe(&sql)).bind(id).bind(limit).execute(p).await.map(|r| r.rows_affected()))?
            }
        };
        Ok(n)
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

    /// Deletes up to `limit` of the oldest lifted blocks beyond the newest
    /// `keep` lifted ones.
    pub async fn delete_lifted_beyond(&self, keep: u64, limit: i64) -> Result<u64> {
        self.delete_beyond("blocked_ips", "unblocked_at IS NOT NULL", keep, limit)
            .await
    }

    /// Deletes up to `limit` of the oldest rows of `table` matching `cond`
    /// (constants of this module) beyond the newest `keep` that match.
    async fn delete_beyond(
        &self,
        table: &'static str,
        cond: &'static str,
        keep: u64,
        limit: i64,
    ) -> Result<u64> {
        let sql = format!("SELECT id FROM {table} WHERE {cond} ORDER BY id DESC LIMIT 1 OFFSET ?");
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let cut: Option<i64> = with_pool!(self, p => sqlx::query_scalar(safe(&sql)).bind(keep - 1).fetch_optional(p).await)?;
        match cut {
            Some(cut) => {
                let older = format!("{cond} AND id < ?");
                self.delete_batch(table, &older, cut, limit).await
            }
            None => Ok(0),
        }
    }

    /// Deletes up to `limit` blocks lifted before `before`; an active block
    /// is never deleted.
    pub async fn delete_lifted_before(&self, before: NaiveDateTime, limit: i64) -> Result<u64> {
        let cond = "unblocked_at IS NOT NULL AND unblocked_at < ?";
        self.delete_batch("blocked_ips", cond, self.theirs(before), limit)
            .await
    }

    /// Runs one constant `SELECT COUNT(*)`, as an operator's script would
    /// (tests, and `db` maintenance).
    pub async fn count_literal(&self, sql: &'static str) -> Result<i64> {
        Ok(with_pool!(self, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await)?)
    }

    /// Time comparison that also copes with hand-written SQLite values such
    /// as '2026-11-25T10:00:00' (text comparison would not).
    fn later(&self, col: &str) -> String {
        match self.pool {
            Pool::Sqlite(_) => format!("julianday({col}) > julianday(?)"),
            Pool::Mysql(_) => format!("{col} > ?"),
        }
    }

    fn not_before(&self, col: &str) -> String {
        match self.pool {
            Pool::Sqlite(_) => format!("julianday({col}) >= julianday(?)"),
            Pool::Mysql(_) => format!("{col} >= ?"),
        }
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

    /// Trusted peers from the SIP server's `permissions` table (OpenSIPS:
    /// `ip`, `mask`, `grp`; Kamailio: `ip_addr`, `mask`, `grp`) as allow
    /// rows `ip/mask`, only `groups` if any are given. Rows decode one at a
    /// time; `table` is checked to be a plain identifier by the caller.
    pub async fn address_rows(
        &self,
        kind: AddressTable,
        table: &str,
        groups: &[i64],
    ) -> Result<(Vec<AllowRow>, Vec<Undecoded>)> {
        let ip = match kind {
            AddressTable::Opensips => "ip",
            AddressTable::Kamailio => "ip_addr",
        };
        let sql = format!("SELECT id, {ip} AS ip, mask, grp FROM {table} ORDER BY id");
        let now = now();
        let (rows, bad) = with_pool!(self, p => {
            let rows = sqlx::query(safe(&sql)).fetch_all(p).await?;
            decode_each(
                rows,
                "address",
                |r| {
                    let ip: String = r.try_get("ip")?;
                    let mask = int_of(r, "mask")?;
                    let grp = int_of(r, "grp")?;
                    Ok((row_id!(r), ip, mask, grp))
                },
                |r| row_id!(r),
            )
        });
        let rows = rows
            .into_iter()
            .filter(|(_, _, _, g)| groups.is_empty() || groups.contains(g))
            .map(|(id, ip, mask, grp)| AllowRow {
                id,
                ip_address: format!("{}/{mask}", ip.trim()),
                comment: format!("{} address grp {grp}", kind.name()),
                created_at: now,
            })
            .collect();
        Ok((rows, bad))
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
        // One transaction (one log flush, not one per statement: 100k rows
        // in 500-row autocommitted INSERTs took 3.8 s on MariaDB), in
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

    pub async fn blocks_of(&self, ip_address: &str) -> Result<Vec<BlockRow>> {
        let sql = format!("SELECT {BLOCK_COLS} FROM blocked_ips WHERE ip_address = ? ORDER BY id");
        let rows: Vec<BlockRow> =
            with_pool!(self, p => sqlx::query_as(safe(&sql)).bind(ip_address).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| self.block_ours(r)).collect())
    }

    pub async fn allows(&self) -> Result<Vec<AllowRow>> {
        let (rows, bad) = self.allows_checked().await?;
        for b in bad {
            tracing::warn!(table = b.table, id = b.id, reason = ?b.why, "skipping database row");
        }
        Ok(rows)
    }

    /// Allow-list rows, and the rows that did not decode.
    pub async fn allows_checked(&self) -> Result<(Vec<AllowRow>, Vec<Undecoded>)> {
        let sql = "SELECT id, ip_address, comment, created_at FROM whitelisted_ips ORDER BY id";
        Ok(with_pool!(self, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            decode_each(
                rows,
                "whitelisted_ips",
                |r| {
                    AllowRow::from_row(r).map(|mut a| {
                        a.created_at = self.ours(a.created_at);
                        a
                    })
                },
                |r| row_id!(r),
            )
        }))
    }

    pub async fn insert_allow(&self, ip_address: &str, comment: &str) -> Result<()> {
        let sql = "INSERT INTO whitelisted_ips (ip_address, comment, created_at) VALUES (?, ?, ?)";
        with_pool!(self, p => sqlx::query(sql).bind(ip_address).bind(comment).bind(self.theirs(now())).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn delete_allow_id(&self, id: i64) -> Result<bool> {
        let sql = "DELETE FROM whitelisted_ips WHERE id = ?";
        Ok(
            with_pool!(self, p => sqlx::query(sql).bind(id).execute(p).await.map(|r| r.rows_affected()))?
                > 0,
        )
    }

    /// Deletes allow entries of exactly `ip_address`. Returns how many.
    pub async fn delete_allow(&self, ip_address: &str) -> Result<u64> {
        let sql = "DELETE FROM whitelisted_ips WHERE ip_address = ?";
        Ok(
            with_pool!(self, p => sqlx::query(sql).bind(ip_address).execute(p).await.map(|r| r.rows_affected()))?,
        )
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
