//! What sip-xdp needs of each table it reads and writes, and how it takes
//! over tables an operator made before it came: their SIP server's scripts
//! often created `blocked_ips`, `whitelisted_ips` and
//! `failed_registrations` already, with fewer columns.
//!
//! At every connect, before the migrations run, each existing table is
//! compared with `TABLES`: a missing column that can be added with a safe
//! default is added (`ALTER TABLE ... ADD COLUMN`); nothing of the
//! operator's is dropped, renamed or rewritten. What cannot be mended that
//! way (a column of the wrong kind, a column of theirs that every insert
//! would have to fill) is refused before any migration runs, so no
//! migration is ever left half-applied; the error names each table, column
//! and the statement to run. Migrations create tables, indexes and views;
//! a column a later version needs is added here, from `TABLES`.

use sqlx::Row as _;

use super::store::{Pool, Store, StoreError};

/// Characters each text column sip-xdp writes holds (`VARCHAR(n)` counts
/// characters, not bytes).
pub const WIDTHS: [(&str, usize); 4] = [
    ("reason", 255),
    ("source", 32),
    ("node", 64),
    ("comment", 255),
];

/// The longest address text sip-xdp writes: an IPv6 prefix with its length.
const LONGEST_ADDRESS: u64 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128".len() as u64;

/// Refuses `text` for `field` when its column cannot hold it. Control
/// characters are kept (a reason is the operator's or a script's text);
/// every reader escapes them when it prints.
pub fn fits(field: &str, text: &str) -> Result<(), StoreError> {
    let width = WIDTHS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(255, |(_, w)| *w);
    let n = text.chars().count();
    if n > width {
        return Err(StoreError::Data(format!(
            "the {field} is {n} characters long; the column holds {width}"
        )));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Id,
    Int,
    Text,
    Time,
}

/// One column sip-xdp needs, as migrations create it on each engine.
struct Column {
    name: &'static str,
    kind: Kind,
    mysql: &'static str,
    sqlite: &'static str,
}

const fn col(name: &'static str, kind: Kind, mysql: &'static str, sqlite: &'static str) -> Column {
    Column {
        name,
        kind,
        mysql,
        sqlite,
    }
}

/// SQLite cannot add a column whose default is a function: a time that
/// only informs (when a row was made) gets the epoch for the rows already
/// there and for other writers; a time sip-xdp judges by is refused.
const NOW_MYSQL: &str = "DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)";
const NOW_SQLITE: &str = "";
const MADE_SQLITE: &str = "TEXT NOT NULL DEFAULT '1970-01-01 00:00:00.000'";

const ID: Column = col("id", Kind::Id, "", "");

struct Table {
    name: &'static str,
    columns: &'static [Column],
}

/// Every table sip-xdp uses, with the columns it reads or writes.
const TABLES: [Table; 5] = [
    Table {
        name: "blocked_ips",
        columns: &[
            ID,
            col("ip_address", Kind::Text, "", ""),
            col(
                "reason",
                Kind::Text,
                "VARCHAR(255) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col(
                "source",
                Kind::Text,
                "VARCHAR(32) NOT NULL DEFAULT 'manual'",
                "TEXT NOT NULL DEFAULT 'manual'",
            ),
            col("blocked_at", Kind::Time, NOW_MYSQL, MADE_SQLITE),
            col(
                "expires_at",
                Kind::Time,
                "DATETIME(3) NULL DEFAULT NULL",
                "TEXT NULL DEFAULT NULL",
            ),
            col(
                "unblocked_at",
                Kind::Time,
                "DATETIME(3) NULL DEFAULT NULL",
                "TEXT NULL DEFAULT NULL",
            ),
            col(
                "node",
                Kind::Text,
                "VARCHAR(64) NULL DEFAULT NULL",
                "TEXT NULL DEFAULT NULL",
            ),
        ],
    },
    Table {
        name: "whitelisted_ips",
        columns: &[
            ID,
            col("ip_address", Kind::Text, "", ""),
            col(
                "comment",
                Kind::Text,
                "VARCHAR(255) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col("created_at", Kind::Time, NOW_MYSQL, MADE_SQLITE),
        ],
    },
    Table {
        name: "security_events",
        columns: &[
            ID,
            col("event_type", Kind::Text, "", ""),
            col(
                "source_ip",
                Kind::Text,
                "VARCHAR(64) NULL DEFAULT NULL",
                "TEXT NULL DEFAULT NULL",
            ),
            col(
                "severity",
                Kind::Text,
                "VARCHAR(16) NOT NULL DEFAULT 'info'",
                "TEXT NOT NULL DEFAULT 'info'",
            ),
            col("details", Kind::Text, "TEXT NULL", "TEXT NULL"),
            col("event_time", Kind::Time, NOW_MYSQL, NOW_SQLITE),
            col(
                "node",
                Kind::Text,
                "VARCHAR(64) NULL DEFAULT NULL",
                "TEXT NULL DEFAULT NULL",
            ),
        ],
    },
    Table {
        name: "failed_registrations",
        columns: &[
            ID,
            col("source_ip", Kind::Text, "", ""),
            col(
                "username",
                Kind::Text,
                "VARCHAR(64) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col(
                "domain",
                Kind::Text,
                "VARCHAR(128) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col(
                "user_agent",
                Kind::Text,
                "VARCHAR(255) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col(
                "response_code",
                Kind::Int,
                "INT NULL DEFAULT NULL",
                "INTEGER NULL DEFAULT NULL",
            ),
            col("attempt_time", Kind::Time, NOW_MYSQL, NOW_SQLITE),
        ],
    },
    Table {
        name: "door_knock_attempts",
        columns: &[
            ID,
            col("source_ip", Kind::Text, "", ""),
            col(
                "username",
                Kind::Text,
                "VARCHAR(64) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col(
                "user_agent",
                Kind::Text,
                "VARCHAR(255) NOT NULL DEFAULT ''",
                "TEXT NOT NULL DEFAULT ''",
            ),
            col(
                "response_code",
                Kind::Int,
                "INT NULL DEFAULT NULL",
                "INTEGER NULL DEFAULT NULL",
            ),
            col("attempt_time", Kind::Time, NOW_MYSQL, NOW_SQLITE),
        ],
    },
];

/// The views the migrations create for the operator's dashboards.
pub const VIEWS: [&str; 3] = [
    "security_stats_hourly",
    "top_attacking_ips",
    "registration_failure_stats",
];

/// A column as the database describes it.
#[derive(Debug, Clone)]
struct Found {
    name: String,
    /// MySQL's `DATA_TYPE` or SQLite's declared type, lower case.
    data_type: String,
    width: Option<u64>,
    not_null: bool,
    has_default: bool,
    /// Filled by the database itself (auto-increment, generated).
    automatic: bool,
    /// An unsigned integer (MySQL).
    unsigned: bool,
}

/// What the comparison found: statements that mend the table safely, and
/// problems only the operator can mend.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// `ALTER TABLE ... ADD COLUMN ...`, one per missing column.
    pub additions: Vec<String>,
    /// Each problem, with the statement or step that mends it.
    pub problems: Vec<String>,
    /// Worth knowing, not in the way.
    pub notes: Vec<String>,
}

impl Findings {
    pub fn is_current(&self) -> bool {
        self.additions.is_empty() && self.problems.is_empty()
    }
}

/// Compares one existing table with what sip-xdp needs of it. Long on
/// purpose: each check is a few lines with its message for the operator,
/// in the order a reader of the table's definition meets them.
fn compare(table: &Table, found: &[Found], mysql: bool, out: &mut Findings) {
    let t = table.name;
    let writes = matches!(t, "blocked_ips" | "whitelisted_ips" | "security_events");
    if !writes {
        // The SIP server writes the failure tables, often with positional
        // INSERTs that a new column would break: never altered. What is
        // missing only keeps brute-force detection from reading them.
        for c in table.columns {
            match found.iter().find(|f| f.name.eq_ignore_ascii_case(c.name)) {
                None => out.notes.push(format!(
                    "{t}.{} is missing: brute-force detection does not read {t}",
                    c.name
                )),
                Some(f) => {
                    if let Some(why) = wrong_kind(c.kind, &f.data_type, mysql) {
                        out.notes.push(format!(
                            "{t}.{} is {} and sip-xdp {why}: brute-force detection does not read {t}",
                            c.name, f.data_type
                        ));
                    }
                }
            }
        }
        return;
    }
    for c in table.columns {
        let Some(f) = found.iter().find(|f| f.name.eq_ignore_ascii_case(c.name)) else {
            let def = if mysql { c.mysql } else { c.sqlite };
            if def.is_empty() {
                let add = match (c.kind, mysql) {
                    (Kind::Id, true) => "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY".to_string(),
                    (Kind::Time, false) => "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) (SQLite adds no column with such a default: \
                         make the table anew with it and copy the rows over)"
                        .to_string(),
                    (Kind::Id, false) => "INTEGER PRIMARY KEY AUTOINCREMENT (SQLite: make the table anew with it and copy the rows over)".into(),
                    (_, true) => "VARCHAR(64) NOT NULL, then fill it".into(),
                    (_, false) => "TEXT NOT NULL, then fill it".into(),
                };
                out.problems.push(format!(
                    "{t}.{} is missing and sip-xdp cannot add it for you: ALTER TABLE {t} ADD COLUMN {} {add}",
                    c.name, c.name
                ));
            } else {
                out.additions
                    .push(format!("ALTER TABLE {t} ADD COLUMN {} {def}", c.name));
            }
            continue;
        };
        if let Some(why) = wrong_kind(c.kind, &f.data_type, mysql) {
            let want = if mysql && !c.mysql.is_empty() {
                c.mysql
            } else {
                match c.kind {
                    Kind::Id | Kind::Int => "BIGINT",
                    Kind::Text => "VARCHAR(64)",
                    Kind::Time => "DATETIME(3)",
                }
            };
            out.problems.push(format!(
                "{t}.{} is {} and sip-xdp {why}: ALTER TABLE {t} MODIFY {} {want}",
                c.name, f.data_type, c.name
            ));
        }
        // Text sip-xdp writes must fit: a row refused for its length would
        // be a ban the database never records. An address is at most
        // LONGEST_ADDRESS characters; the other columns as `WIDTHS`.
        let need = match c.name {
            "ip_address" | "source_ip" => Some(LONGEST_ADDRESS),
            n => WIDTHS.iter().find(|(w, _)| *w == n).map(|(_, w)| *w as u64),
        };
        if let (Some(need), Some(have)) = (need, f.width) {
            if have < need {
                let msg = format!(
                    "{t}.{} holds {have} characters and sip-xdp writes up to {need}",
                    c.name
                );
                if writes {
                    out.problems.push(format!(
                        "{msg}: ALTER TABLE {t} MODIFY {} VARCHAR({need})",
                        c.name
                    ));
                } else {
                    out.notes.push(msg);
                }
            }
        }
        if writes && c.kind == Kind::Id {
            if f.unsigned {
                out.problems.push(format!(
                    "{t}.id is unsigned and sip-xdp reads ids as signed: ALTER TABLE {t} MODIFY id BIGINT NOT NULL AUTO_INCREMENT"
                ));
            }
            if !f.automatic {
                out.problems.push(format!(
                    "{t}.id is not filled by the database and sip-xdp's inserts leave it out: \
                     ALTER TABLE {t} MODIFY id BIGINT NOT NULL AUTO_INCREMENT"
                ));
            }
        }
    }
    // A column of theirs that every insert would have to fill: sip-xdp's
    // inserts do not know it, and would all fail.
    let writes = matches!(t, "blocked_ips" | "whitelisted_ips" | "security_events");
    for f in found {
        let ours = table
            .columns
            .iter()
            .any(|c| f.name.eq_ignore_ascii_case(c.name));
        if writes && !ours && f.not_null && !f.has_default && !f.automatic {
            let fix = if mysql {
                format!("ALTER TABLE {t} ALTER COLUMN {} SET DEFAULT ...", f.name)
            } else {
                format!(
                    "give {t}.{} a default (SQLite: make the table anew)",
                    f.name
                )
            };
            out.problems.push(format!(
                "{t}.{} must be filled by every insert and sip-xdp does not know it: {fix}",
                f.name
            ));
        }
    }
}

/// Why a column of `data_type` cannot serve as `kind`, if it cannot.
fn wrong_kind(kind: Kind, data_type: &str, mysql: bool) -> Option<&'static str> {
    let ty = data_type.to_ascii_lowercase();
    let int = ty.contains("int");
    let text = if mysql {
        ty.contains("char") || ty.contains("text")
    } else {
        !int && !ty.contains("real")
            && !ty.contains("floa")
            && !ty.contains("doub")
            && !ty.contains("blob")
    };
    let ok = match kind {
        Kind::Id | Kind::Int => int,
        Kind::Text => text,
        Kind::Time => {
            if mysql {
                ty == "datetime" || ty == "timestamp"
            } else {
                text
            }
        }
    };
    (!ok).then_some(match kind {
        Kind::Id | Kind::Int => "reads a whole number",
        Kind::Text => "writes text (addresses as 203.0.113.7 or 2001:db8::/64)",
        Kind::Time => "writes a date and time",
    })
}

/// The columns of `table` as the database describes them; empty when the
/// table does not exist. A view of that name is an error: sip-xdp writes
/// these tables. Long because the two engines describe columns in two
/// ways (information_schema, PRAGMA), each read here side by side.
async fn columns(store: &Store, table: &str) -> Result<Option<Vec<Found>>, StoreError> {
    match store.pool() {
        Pool::Mysql(p) => {
            // MySQL 8 gives information_schema's text as binary strings:
            // cast, so both servers answer in text.
            let kind: Option<String> = sqlx::query_scalar(
                "SELECT CAST(TABLE_TYPE AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_optional(p)
            .await?;
            match kind.as_deref() {
                None => return Ok(None),
                Some("VIEW") => {
                    return Err(StoreError::Schema(format!(
                        "{table} is a view; sip-xdp writes it and needs a table"
                    )))
                }
                Some(_) => {}
            }
            let rows = sqlx::query(
                "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), \
                        CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED), CAST(IS_NULLABLE AS CHAR), \
                        CAST(COLUMN_DEFAULT AS CHAR), CAST(EXTRA AS CHAR), CAST(COLUMN_TYPE AS CHAR) \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            )
            .bind(table)
            .fetch_all(p)
            .await?;
            let mut out = Vec::new();
            for r in rows {
                let extra: String = r.try_get::<Option<String>, _>(5)?.unwrap_or_default();
                let extra = extra.to_ascii_lowercase();
                let column_type: String = r.try_get::<Option<String>, _>(6)?.unwrap_or_default();
                out.push(Found {
                    name: r.try_get(0)?,
                    data_type: r.try_get::<String, _>(1)?.to_ascii_lowercase(),
                    width: r.try_get::<Option<i64>, _>(2)?.map(|w| w.max(0) as u64),
                    not_null: r.try_get::<String, _>(3)? == "NO",
                    has_default: r.try_get::<Option<String>, _>(4)?.is_some(),
                    automatic: extra.contains("auto_increment") || extra.contains("generated"),
                    unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
                });
            }
            Ok(Some(out))
        }
        Pool::Sqlite(p) => {
            let kind: Option<String> =
                sqlx::query_scalar("SELECT type FROM sqlite_master WHERE name = ?")
                    .bind(table)
                    .fetch_optional(p)
                    .await?;
            match kind.as_deref() {
                None => return Ok(None),
                Some("view") => {
                    return Err(StoreError::Schema(format!(
                        "{table} is a view; sip-xdp writes it and needs a table"
                    )))
                }
                Some(_) => {}
            }
            let rows = sqlx::query(
                "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?)",
            )
            .bind(table)
            .fetch_all(p)
            .await?;
            let mut out = Vec::new();
            for r in rows {
                let ty: String = r.try_get(1)?;
                let pk: i64 = r.try_get(4)?;
                out.push(Found {
                    name: r.try_get(0)?,
                    automatic: pk > 0 && ty.eq_ignore_ascii_case("integer"),
                    data_type: ty.to_ascii_lowercase(),
                    width: None,
                    not_null: r.try_get::<i64, _>(2)? != 0,
                    has_default: r.try_get::<Option<String>, _>(3)?.is_some(),
                    unsigned: false,
                });
            }
            Ok(Some(out))
        }
    }
}

/// Whether `blocked_ips` has a unique index on `ip_address` alone: a
/// source banned again would then be refused, its ban never recorded.
async fn unique_address(store: &Store) -> Result<bool, StoreError> {
    let n: i64 = match store.pool() {
        Pool::Mysql(p) => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT INDEX_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'blocked_ips' AND NON_UNIQUE = 0 \
                 GROUP BY INDEX_NAME \
                 HAVING COUNT(*) = 1 AND MAX(CAST(COLUMN_NAME AS CHAR)) = 'ip_address') AS u",
            )
            .fetch_one(p)
            .await?
        }
        Pool::Sqlite(p) => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_index_list('blocked_ips') AS l WHERE l.\"unique\" = 1 \
                 AND (SELECT COUNT(*) FROM pragma_index_info(l.name)) = 1 \
                 AND (SELECT name FROM pragma_index_info(l.name)) = 'ip_address'",
        )
        .fetch_one(p)
        .await?,
    };
    Ok(n > 0)
}

/// Compares every existing table with what sip-xdp needs.
pub async fn inspect(store: &Store) -> Result<Findings, StoreError> {
    let mysql = matches!(store.pool(), Pool::Mysql(_));
    let mut out = Findings::default();
    for t in &TABLES {
        if let Some(found) = columns(store, t.name).await? {
            compare(t, &found, mysql, &mut out);
            if t.name == "blocked_ips" && unique_address(store).await? {
                out.problems.push(
                    "blocked_ips has a unique index on ip_address alone, and an address banned again \
                     needs a second row: drop that index (ALTER TABLE blocked_ips DROP INDEX name) \
                     and keep a plain one (CREATE INDEX blocked_ips_ip ON blocked_ips (ip_address))"
                        .into(),
                );
            }
        }
    }
    Ok(out)
}

/// Mends what can be mended safely and refuses the rest; see the module's
/// notes. Returns the statements it ran.
pub async fn adopt(store: &Store) -> Result<Vec<String>, StoreError> {
    let found = inspect(store).await?;
    if !found.problems.is_empty() {
        return Err(StoreError::Schema(found.problems.join("; ")));
    }
    for sql in &found.additions {
        tracing::warn!(statement = %sql, "adding a column sip-xdp needs to an existing table");
        if let Err(e) = store.execute_ddl(sql).await {
            // Another node starting at the same moment may have added it.
            if inspect(store).await?.additions.contains(sql) {
                return Err(e);
            }
        }
    }
    for n in &found.notes {
        tracing::warn!(note = %n, "existing table");
    }
    Ok(found.additions)
}

/// Views the migrations must not make: names that exist already (the
/// operator's own, never replaced), and the failures view when the SIP
/// server's table lacks a column it reads (it would fail half-way).
pub async fn taken_views(store: &Store) -> Result<Vec<&'static str>, StoreError> {
    let mut out = Vec::new();
    if let Some(found) = columns(store, "failed_registrations").await? {
        let has = |c: &str| found.iter().any(|f| f.name.eq_ignore_ascii_case(c));
        if !["username", "domain", "source_ip", "attempt_time"]
            .iter()
            .all(|c| has(c))
        {
            out.push("registration_failure_stats");
        }
    }
    for v in VIEWS {
        let n: i64 = match store.pool() {
            Pool::Mysql(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                )
                .bind(v)
                .fetch_one(p)
                .await?
            }
            Pool::Sqlite(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = ?")
                    .bind(v)
                    .fetch_one(p)
                    .await?
            }
        };
        if n > 0 {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_against_its_column() {
        assert!(fits("reason", &"x".repeat(255)).is_ok());
        assert!(
            fits("reason", &"é".repeat(255)).is_ok(),
            "characters, not bytes"
        );
        let e = fits("reason", &"x".repeat(300)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the reason is 300 characters long; the column holds 255"
        );
        assert!(e.is_data_error());
        assert!(fits("node", &"n".repeat(65)).is_err());
    }

    fn found(name: &str, ty: &str, not_null: bool, has_default: bool) -> Found {
        Found {
            name: name.into(),
            data_type: ty.into(),
            width: ty.starts_with("varchar").then_some(45),
            not_null,
            has_default,
            automatic: name == "id",
            unsigned: false,
        }
    }

    /// The operator's table of the report: five columns, two of them
    /// narrower than sip-xdp's, three missing.
    #[test]
    fn an_operators_table_gets_its_missing_columns_and_keeps_its_own() {
        let table = [
            found("id", "int", true, false),
            found("ip_address", "varchar", true, false),
            found("reason", "varchar", false, true),
            found("blocked_at", "datetime", false, true),
            found("expires_at", "datetime", false, true),
        ];
        let mut f = Findings::default();
        compare(&TABLES[0], &table, true, &mut f);
        assert_eq!(
            f.additions,
            [
                "ALTER TABLE blocked_ips ADD COLUMN source VARCHAR(32) NOT NULL DEFAULT 'manual'",
                "ALTER TABLE blocked_ips ADD COLUMN unblocked_at DATETIME(3) NULL DEFAULT NULL",
                "ALTER TABLE blocked_ips ADD COLUMN node VARCHAR(64) NULL DEFAULT NULL",
            ]
        );
        // VARCHAR(45) holds every address sip-xdp writes; a reason of 45
        // characters does not hold every reason it writes.
        assert_eq!(f.problems.len(), 1, "{f:?}");
        assert!(
            f.problems[0].starts_with("blocked_ips.reason holds 45 characters and sip-xdp writes up to 255: ALTER TABLE blocked_ips MODIFY reason VARCHAR(255)"),
            "{f:?}"
        );
        let mut wide = table.to_vec();
        wide[2].width = Some(255);
        let mut f = Findings::default();
        compare(&TABLES[0], &wide, true, &mut f);
        assert!(f.problems.is_empty(), "{f:?}");
        // An unsigned id, read as signed, would skip every row.
        wide[0].unsigned = true;
        let mut f = Findings::default();
        compare(&TABLES[0], &wide, true, &mut f);
        assert!(
            f.problems[0].starts_with("blocked_ips.id is unsigned"),
            "{f:?}"
        );
        // The SIP server's failure table is never altered.
        let mut f = Findings::default();
        compare(
            &TABLES[3],
            &[
                found("id", "int", true, false),
                found("source_ip", "varchar", true, false),
            ],
            true,
            &mut f,
        );
        assert!(f.additions.is_empty() && f.problems.is_empty(), "{f:?}");
        assert!(
            f.notes
                .iter()
                .any(|n| n.contains("failed_registrations.attempt_time is missing")),
            "{f:?}"
        );
    }

    #[test]
    fn what_cannot_be_added_safely_is_named_with_its_statement() {
        // Addresses kept as INET_ATON numbers, and a column of theirs
        // every insert must fill.
        let table = [
            found("id", "int", true, false),
            found("ip_address", "int unsigned", true, false),
            found("added_by", "varchar", true, false),
        ];
        let mut f = Findings::default();
        compare(&TABLES[0], &table, true, &mut f);
        assert_eq!(f.problems.len(), 2, "{f:?}");
        assert!(f.problems[0]
            .starts_with("blocked_ips.ip_address is int unsigned and sip-xdp writes text"));
        assert!(f.problems[0].contains("ALTER TABLE blocked_ips MODIFY ip_address"));
        assert!(f.problems[1].contains("ALTER TABLE blocked_ips ALTER COLUMN added_by SET DEFAULT"));
        // SQLite adds no column whose default is the time.
        let mut f = Findings::default();
        compare(
            &TABLES[2],
            &[
                found("id", "integer", true, false),
                found("event_type", "text", true, false),
            ],
            false,
            &mut f,
        );
        assert!(
            f.problems
                .iter()
                .any(|p| p.starts_with("security_events.event_time is missing")),
            "{f:?}"
        );
    }
}
