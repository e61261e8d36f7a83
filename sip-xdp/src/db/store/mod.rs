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

mod allows;
mod blocks;
mod events;
mod failures;
mod remembered;

pub use allows::{AddressTable, AllowRow};
pub use blocks::BlockRow;
pub use events::{Event, EventRow, Report};
pub use failures::{FailureBatch, FailureRow, FAILURE_TABLES};
pub use remembered::Proven;

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
            "UPDATE remembered_clients SET node = node WHERE ip_address = ''",
            "DELETE FROM remembered_clients WHERE ip_address = ''",
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
}
