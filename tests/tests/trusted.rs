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

/// Entries wider than the rails: an `address` row and an allow-list row
/// with mask 0 would allow every source and lift every ban; a feed line of
/// 32.0.0.0/3 would block an eighth of the Internet. Each is refused and
/// reported (log, `status`, an event) once, and the rest of its list is
/// applied; a feed entry over a trusted peer is named.
#[test]
fn entries_wider_than_the_rails_are_refused_and_the_rest_applied() {
    let lab = Lab::two_clients("rw");
    let db = TestDb::mariadb();
    let name = db.mariadb_name().unwrap().to_string();
    load_sql(&name, "standard-create.sql");
    load_sql(&name, "permissions-create.sql");
    let (c0, c1) = (
        lab.links[0].client_v4.to_string(),
        lab.links[1].client_v4.to_string(),
    );
    admin(&format!(
        "INSERT INTO `{name}`.address (grp, ip_addr, mask) VALUES (1, '{c0}', 32), (1, '0.0.0.0', 0)"
    ));
    let cli = Cli::with_db(&lab.server, db.url());
    let list = cli.dir.join("wide.txt");
    std::fs::write(&list, format!("{c0}\n32.0.0.0/3\n3000::/4\n")).unwrap();
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n[trusted]\naddress_table = \"kamailio\"\n\
         [feeds.wide]\nfile = \"{}\"\nrefresh = \"1s\"\n",
        list.display()
    ));
    let refused = cli.fails(&["allow", "0.0.0.0/0"]);
    assert!(refused.contains("0.0.0.0/0 is wider than /8"), "{refused}");
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    cli.ok(&["block", &c1, "--for", "1h"]);
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-rw", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    // Another tool (a web panel) writes an allow-everything row.
    admin(&format!(
        "INSERT INTO `{name}`.whitelisted_ips (ip_address, comment) VALUES ('0.0.0.0/0', 'typo')"
    ));
    let events = |kind: &str| -> Vec<serde_json::Value> {
        cli.json(&["events", "--type", kind, "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str(e["details"].as_str().unwrap()).unwrap())
            .collect()
    };
    let lists = |kind: &str| -> Vec<String> {
        let mut l: Vec<String> = events(kind)
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d["list"].as_str().unwrap_or(""),
                    d["entry"].as_str().unwrap_or("")
                )
            })
            .collect();
        l.sort();
        l
    };
    let want = [
        "address ",
        "feed:wide 3000::/4",
        "feed:wide 32.0.0.0/3",
        "whitelisted_ips ",
    ];
    assert!(
        eventually(Duration::from_secs(15), || lists("entry_refused") == want),
        "{:?}\n{}",
        lists("entry_refused"),
        daemon.log_text()
    );
    // The rest of each list is applied: the peer is trusted, the feed's
    // other entry written, and the ban on client 1 still holds.
    assert!(allowed_in_kernel(&cli).contains(&format!("{c0}/32")));
    assert!(!allowed_in_kernel(&cli).iter().any(|a| a.ends_with("/0")));
    let feed_rows: Vec<String> = cli
        .json(&["list", "blocked", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "feed:wide")
        .map(|r| r["ip_address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(feed_rows, std::slice::from_ref(&c0));
    let listener = SipListener::start(&lab.server, 5060);
    let delivered = |i: usize| {
        send_sip(
            &lab.clients[i],
            SocketAddr::new(lab.links[i].server_v4, 5060),
            OPTIONS,
            10,
        );
        let got = listener.drain(Duration::from_millis(300), Duration::from_secs(5));
        got.get(&lab.links[i].client_v4).copied().unwrap_or(0)
    };
    assert_eq!(delivered(1), 0, "a refused allow row lifted a ban");
    // The feed lists the trusted peer: named, and the peer still passes.
    assert!(eventually(Duration::from_secs(10), || events(
        "entry_covers_trusted"
    )
    .iter()
    .any(|d| d["covers"] == format!("{c0}/32"))));
    assert_eq!(delivered(0), 10, "the trusted peer was dropped");
    let st = cli.ok(&["status"]);
    assert!(st.contains("32.0.0.0/3 is wider than /8"), "{st}");
    assert!(st.contains("covers the trusted peer"), "{st}");
    // Reported once, not at every refresh and sync.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lists("entry_refused"), want);
    assert_eq!(events("entry_covers_trusted").len(), 1);
    assert!(daemon.stop().success());
}
