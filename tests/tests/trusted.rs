//! Trusted peers from the SIP server's own `permissions` table, on MariaDB:
//! Kamailio's `address` table created from the schema files Debian's
//! kamailio-mysql-modules ships, OpenSIPS's from the DDL of its sources.
//! The configured group becomes allow-list entries at the next sync (a ban
//! on such a peer is lifted; other groups stay out); a row deleted is no
//! longer trusted. Needs root and MariaDB.

use std::{net::SocketAddr, process::Command, time::Duration};

use sip_xdp_tests::{
    cli::{eventually, Cli},
    db::{admin, TestDb},
    frames::OPTIONS,
    lab::{send_sip, Lab, SipListener},
};

const KAMAILIO_SQL: &str = "/usr/share/kamailio/mysql";

/// OpenSIPS 3.x `scripts/mysql/permissions-create.sql`'s `address` table.
const OPENSIPS_ADDRESS: &str = "CREATE TABLE address (
    id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    grp SMALLINT(5) UNSIGNED DEFAULT 0 NOT NULL,
    ip CHAR(50) NOT NULL,
    mask TINYINT DEFAULT 32 NOT NULL,
    port SMALLINT(5) UNSIGNED DEFAULT 0 NOT NULL,
    proto CHAR(4) DEFAULT 'any' NOT NULL,
    pattern CHAR(64) DEFAULT NULL,
    context_info CHAR(32) DEFAULT NULL
) ENGINE=InnoDB";

fn load_sql(db: &str, file: &str) {
    let out = Command::new("sh")
        .args(["-c", &format!("mariadb {db} < {KAMAILIO_SQL}/{file}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn allowed_in_kernel(cli: &Cli) -> Vec<String> {
    cli.json(&["list", "allowed", "--kernel", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v["net"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn run_with(kind: &str, create: impl Fn(&str), ip_col: &str) {
    let lab = Lab::two_clients(&kind[..2]);
    let db = TestDb::mariadb();
    let name = db.mariadb_name().unwrap().to_string();
    create(&name);
    let c0 = lab.links[0].client_v4.to_string();
    admin(&format!(
        "INSERT INTO `{name}`.address (grp, {ip_col}, mask) VALUES (1, '{c0}', 32), (2, '203.0.113.0', 24)"
    ));
    let cli = Cli::with_db(&lab.server, db.url());
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n[trusted]\naddress_table = \"{kind}\"\ngroups = [1]\n"
    ));
    // Banned before it is known as a peer: trust lifts the ban.
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    cli.ok(&["block", &c0, "--for", "1h"]);
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-tr", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    assert!(
        eventually(Duration::from_secs(10), || allowed_in_kernel(&cli)
            .contains(&format!("{c0}/32"))),
        "{kind}: {:?}\n{}",
        allowed_in_kernel(&cli),
        daemon.log_text()
    );
    assert!(
        !allowed_in_kernel(&cli)
            .iter()
            .any(|a| a.starts_with("203.0.113.0")),
        "group 2 is not trusted"
    );
    let listener = SipListener::start(&lab.server, 5060);
    let passed = eventually(Duration::from_secs(5), || {
        send_sip(
            &lab.clients[0],
            SocketAddr::new(lab.links[0].server_v4, 5060),
            OPTIONS,
            10,
        );
        let got = listener.drain(Duration::from_millis(300), Duration::from_secs(5));
        got.get(&lab.links[0].client_v4).copied().unwrap_or(0) == 10
    });
    assert!(
        passed,
        "{kind}: the trusted peer's packets are still dropped"
    );

    admin(&format!("DELETE FROM `{name}`.address WHERE grp = 1"));
    assert!(
        eventually(Duration::from_secs(10), || !allowed_in_kernel(&cli)
            .contains(&format!("{c0}/32"))),
        "{kind}: still trusted after its row was deleted"
    );
    assert!(daemon.stop().success());
}

#[test]
fn kamailio_address_table_peers_are_trusted() {
    run_with(
        "kamailio",
        |db| {
            load_sql(db, "standard-create.sql");
            load_sql(db, "permissions-create.sql");
        },
        "ip_addr",
    );
}

#[test]
fn opensips_address_table_peers_are_trusted() {
    run_with(
        "opensips",
        |db| admin(&format!("USE `{db}`; {OPENSIPS_ADDRESS}")),
        "ip",
    );
}
