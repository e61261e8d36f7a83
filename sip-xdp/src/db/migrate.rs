//! Bringing a database to what this build needs, at every connect: the
//! operator's existing tables adopted first (`schema`), then the embedded
//! migrations, never replacing a view of the operator's.

use super::{
    schema,
    store::{Pool, Store, StoreError},
};

/// Connects and prepares the tables: what every command and the
/// controller call.
pub async fn connect(url: &str) -> Result<Store, StoreError> {
    let store = Store::open(url).await?;
    schema::adopt(&store).await?;
    migrate(&store).await?;
    Ok(store)
}

/// Applies the embedded migrations. Several SBCs starting at once on a
/// new database race here: sqlx's MySQL lock (`GET_LOCK(name, -1)`) does
/// not hold on MariaDB, so a node can see another's migration half-way
/// (`Dirty`). That node waits for the other to finish instead of
/// failing; a migration that stays dirty is a real error after 10 s,
/// unless it only makes views, which is safe to run again.
pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    let mut waited = std::time::Duration::ZERO;
    loop {
        let migrator = migrator(store).await?;
        let r = match store.pool() {
            Pool::Sqlite(p) => migrator.run(p).await,
            Pool::Mysql(p) => migrator.run(p).await,
        };
        match r {
            Err(sqlx::migrate::MigrateError::Dirty(v))
                if waited < std::time::Duration::from_secs(10) =>
            {
                tracing::debug!(version = v, "another node is migrating; waiting");
                let step = std::time::Duration::from_millis(200);
                tokio::time::sleep(step).await;
                waited += step;
            }
            Err(sqlx::migrate::MigrateError::Dirty(v))
                if migrator
                    .iter()
                    .any(|m| m.version == v && only_views(m.sql.as_str())) =>
            {
                tracing::warn!(
                    version = v,
                    "a migration that only makes views was left half-way; running it again"
                );
                // The version is a number from the migrations table.
                let sql =
                    format!("DELETE FROM _sqlx_migrations WHERE version = {v} AND NOT success");
                store.execute_ddl(&sql).await?;
            }
            other => return Ok(other?),
        }
    }
}

/// The embedded migrations, less the views whose names the operator's
/// own views or tables already hold (MySQL's `CREATE OR REPLACE VIEW`
/// would replace them). The checksum stays the file's, so every node
/// records the same migration.
async fn migrator(store: &Store) -> Result<sqlx::migrate::Migrator, StoreError> {
    use sqlx::SqlSafeStr as _;
    let embedded = match store.pool() {
        Pool::Sqlite(_) => sqlx::migrate!("migrations/sqlite"),
        Pool::Mysql(_) => sqlx::migrate!("migrations/mysql"),
    };
    // No table yet (a new database): nothing applied.
    let sql = "SELECT version FROM _sqlx_migrations WHERE success";
    let applied: Vec<i64> = match store.pool() {
        Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await,
        Pool::Mysql(p) => sqlx::query_scalar(sql).fetch_all(p).await,
    }
    .unwrap_or_default();
    let mut taken = Vec::new();
    let mut migrations = Vec::new();
    for m in embedded.iter() {
        let mut m = m.clone();
        if !applied.contains(&m.version) && only_views(m.sql.as_str()) {
            if taken.is_empty() {
                taken = super::schema::taken_views(store).await?;
            }
            if !taken.is_empty() {
                let kept = without_views(m.sql.as_str(), &taken);
                for v in &taken {
                    tracing::warn!(view = v, "report view not made: the name is taken, or a table it reads lacks a column; sip-xdp's own commands do not need it");
                }
                m.sql = sqlx::AssertSqlSafe(kept).into_sql_str();
            }
        }
        migrations.push(m);
    }
    Ok(sqlx::migrate::Migrator::with_migrations(migrations))
}

/// Whether a migration only makes views (and so may run again).
fn only_views(sql: &str) -> bool {
    let statements = statements(sql);
    !statements.is_empty()
        && statements.iter().all(|st| {
            let st = st.to_ascii_uppercase();
            st.starts_with("CREATE OR REPLACE VIEW ") || st.starts_with("CREATE VIEW ")
        })
}

/// A migration's statements, comments and blank lines left out.
fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.split(';')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The migration without the statements that make the views `taken`.
fn without_views(sql: &str, taken: &[&str]) -> String {
    statements(sql)
        .into_iter()
        .filter(|st| {
            let upper = st.to_ascii_uppercase();
            !taken.iter().any(|v| {
                let v = v.to_ascii_uppercase();
                upper.starts_with(&format!("CREATE OR REPLACE VIEW {v} "))
                    || upper.starts_with(&format!("CREATE VIEW IF NOT EXISTS {v} "))
            })
        })
        .map(|st| format!("{st};\n"))
        .collect()
}
