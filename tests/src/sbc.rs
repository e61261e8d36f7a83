//! The protected server with its database: a lab (the server's namespace
//! and its clients'), a fresh database, and the sip-xdp node in the
//! server's namespace, the three pieces nearly every controller test starts
//! from. Dropped in order: the node detaches, the database goes, then the
//! namespaces.

use crate::{cli::Cli, cli::Daemon, db::TestDb, lab::Lab};

pub struct Sbc {
    // Declared in the order they must be dropped.
    pub cli: Cli,
    pub db: TestDb,
    pub lab: Lab,
}

impl Sbc {
    /// Two clients and a fresh MariaDB database.
    pub fn mariadb(tag: &str) -> Self {
        Self::on(Lab::two_clients(tag), TestDb::mariadb())
    }

    /// Two clients and a fresh SQLite file.
    pub fn sqlite(tag: &str) -> Self {
        Self::on(Lab::two_clients(tag), TestDb::sqlite())
    }

    /// A node on `lab`'s server using `db`.
    pub fn on(lab: Lab, db: TestDb) -> Self {
        let cli = Cli::with_db(&lab.server, db.url());
        Self { cli, db, lab }
    }

    /// The server's end of every client link.
    pub fn ifaces(&self) -> Vec<&str> {
        self.lab
            .links
            .iter()
            .map(|l| l.server_if.as_str())
            .collect()
    }

    /// `sip-xdp run` on every client link, as node `node`.
    pub fn controller(&self, node: &str, interval: &str) -> Daemon {
        self.cli.start_controller(&self.ifaces(), node, interval)
    }
}
