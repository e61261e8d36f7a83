//! Databases for tests: a SQLite file, or a private database on the MariaDB
//! server that `cargo xtask test` installs and starts. Each is removed on drop.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use sip_xdp::db::Store;

/// The server's unix socket: a controller inside a network namespace reaches
/// the host's MariaDB through it (127.0.0.1 there is the namespace's own).
pub const MYSQL_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// Test account created by `cargo xtask test` (may create `sipxdp_*` databases).
pub const MYSQL_USER: &str = "sipxdp";
pub const MYSQL_PASSWORD: &str = "sipxdp-test";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub enum TestDb {
    Sqlite { dir: PathBuf, url: String },
    Mariadb { name: String, url: String },
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sip-xdp-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/sip-xdp.db", dir.display());
        Self::Sqlite { dir, url }
    }

    /// A fresh database on the local MariaDB. Panics with what to do when the
    /// server is not there: these tests are never skipped.
    pub fn mariadb() -> Self {
        let name = format!(
            "sipxdp_t{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        admin(&format!("CREATE DATABASE `{name}`"));
        let url =
            format!("mysql://{MYSQL_USER}:{MYSQL_PASSWORD}@localhost/{name}?socket={MYSQL_SOCKET}");
        Self::Mariadb { name, url }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Mariadb { url, .. } => url,
        }
    }

    /// The MariaDB database's name (None for SQLite).
    pub fn mariadb_name(&self) -> Option<&str> {
        match self {
            TestDb::Mariadb { name, .. } => Some(name),
            TestDb::Sqlite { .. } => None,
        }
    }

    pub async fn connect(&self) -> Store {
        sip_xdp::db::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Mariadb { name, .. } => {
                let _ = Command::new("mariadb")
                    .args(["-e", &format!("DROP DATABASE IF EXISTS `{name}`")])
                    .output();
            }
        }
    }
}

/// Runs SQL as the server's root (unix-socket authentication).
pub fn admin(sql: &str) {
    let out = Command::new("mariadb")
        .args(["-e", sql])
        .output()
        .expect("running the mariadb client: run the tests with `cargo xtask test`");
    assert!(
        out.status.success(),
        "mariadb -e {sql:?} failed (is the server running? `cargo xtask test` starts it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs SQL as the server's root and returns its output, tab-separated,
/// without column names: what another program sees in its own session.
pub fn admin_query(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-N", "-B", "-e", sql])
        .output()
        .expect("running the mariadb client: run the tests with `cargo xtask test`");
    assert!(
        out.status.success(),
        "mariadb -e {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The MariaDB server's global `time_zone` set to a zone other than UTC
/// (as on a server kept in local time) until dropped; new sessions take it.
pub struct ServerTimeZone;

impl ServerTimeZone {
    pub fn set(zone: &str) -> Self {
        admin(&format!("SET GLOBAL time_zone = '{zone}'"));
        Self
    }
}

impl Drop for ServerTimeZone {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-e", "SET GLOBAL time_zone = 'SYSTEM'"])
            .output();
    }
}
