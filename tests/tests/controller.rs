//! The real `sip-xdp run` in a namespace lab on a real MariaDB: rows written
//! with SQL are enforced within a sync interval, expired rows are lifted,
//! kill -9 and restart leave no gap, a database outage changes nothing in
//! the kernel, and two nodes share one database. Needs root and MariaDB;
//! run with `cargo xtask test`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use chrono::Duration as ChronoDuration;
use sip_xdp::db::store::{now, Store};
use sip_xdp_tests::sbc::Sbc;
use sip_xdp_tests::{
    cli::{eventually, Cli},
    db::TestDb,
    frames::OPTIONS,
    lab::{send_sip, Lab, SipListener},
};

/// Sync interval of the controllers under test.
const INTERVAL: &str = "500ms";
/// "Within one sync interval", plus room for a loaded 2-core machine.
const ONE_SYNC: Duration = Duration::from_millis(1500);
const N: usize = 20;

fn to(lab: &Lab, i: usize) -> SocketAddr {
    SocketAddr::new(lab.links[i].server_v4, 5060)
}

/// Datagrams from client `i` that reached the listener, out of `N` sent.
fn delivered(lab: &Lab, l: &SipListener, i: usize) -> usize {
    send_sip(&lab.clients[i], to(lab, i), OPTIONS, N);
    let got = l.drain(Duration::from_millis(300), Duration::from_secs(5));
    got.get(&lab.links[i].client_v4).copied().unwrap_or(0)
}

fn enforced(cli: &Cli, ip: &str) -> bool {
    cli.json(&["list", "blocked", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["ip_address"] == ip && r["enforced"] == true)
}

/// Whether the node's kernel holds a ban for `ip`, database or not.
fn in_kernel(cli: &Cli, ip: &str) -> bool {
    let net = format!("{ip}/32");
    cli.json(&["list", "blocked", "--kernel", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["net"] == net.as_str() && r["expired"] == false)
}

/// These tests send bursts of 20 from one client, twice per 2-s unit, which
/// the default pike limit (30 per unit) rightly bans as a flood. Detection
/// has its own tests (detection.rs); here the lists alone must decide.
/// An inline table, so that keys appended later stay top-level.
fn no_detection(cli: &Cli) {
    cli.add_config("detect = { enabled = false }");
}

async fn store(db: &TestDb) -> Store {
    db.connect().await
}

#[tokio::test(flavor = "current_thread")]
async fn sql_rows_expiry_and_restart_without_gap() {
    let sbc = Sbc::mariadb("r");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    no_detection(cli);
    let mut daemon = cli.start_controller(&["s1", "s2"], "node-a", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let listener = SipListener::start(&lab.server, 5060);
    assert_eq!(
        (delivered(lab, &listener, 0), delivered(lab, &listener, 1)),
        (N, N)
    );

    // A row written by another tool, with the operators' minimal INSERT.
    let s = store(db).await;
    s.execute_literal(
        "INSERT INTO blocked_ips (ip_address, reason) VALUES ('198.51.100.2', 'manual')",
    )
    .await
    .unwrap();
    // A row the controller cannot use is logged once with its id and
    // skipped; it never stops the sync.
    s.execute_literal(
        "INSERT INTO blocked_ips (ip_address, reason) VALUES ('203.0.113.300', 'typo')",
    )
    .await
    .unwrap();
    let t = Instant::now();
    assert!(
        eventually(ONE_SYNC, || enforced(cli, "198.51.100.2")),
        "not enforced within one sync"
    );
    eprintln!("SQL row enforced after {:?}", t.elapsed());
    assert_eq!(delivered(lab, &listener, 0), 0);
    assert_eq!(delivered(lab, &listener, 1), N);
    daemon.wait_log("block installed", ONE_SYNC);
    std::thread::sleep(Duration::from_secs(1));
    let log = daemon.log_text();
    let bad: Vec<_> = log
        .lines()
        .filter(|l| l.contains("skipping database row"))
        .collect();
    assert_eq!(bad.len(), 1, "logged once: {log}");
    assert!(
        bad[0].contains("blocked_ips") && bad[0].contains("not an IPv4 or IPv6 address"),
        "{}",
        bad[0]
    );
    eprintln!("bad row log line: {}", bad[0]);
    assert!(
        daemon.log_text().contains("src_ip=198.51.100.2"),
        "{}",
        daemon.log_text()
    );

    // A block that expires: enforced, then lifted in the database (with an
    // event) and no longer enforced.
    let t0 = now();
    s.insert_block(
        "203.0.113.2",
        "test",
        "flood",
        t0,
        Some(t0 + ChronoDuration::seconds(2)),
        None,
    )
    .await
    .unwrap();
    assert!(eventually(ONE_SYNC, || enforced(cli, "203.0.113.2")));
    assert_eq!(delivered(lab, &listener, 1), 0);
    let lifted = async {
        for _ in 0..100 {
            let rows = s.blocks_of("203.0.113.2").await.unwrap();
            if rows[0].unblocked_at.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        lifted.await,
        "expired row never got unblocked_at:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        delivered(lab, &listener, 1),
        N,
        "expired block still enforced"
    );
    let ev = s
        .events(t0 - ChronoDuration::minutes(1), Some("ip_unblocked"), 10)
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].source_ip.as_deref(), Some("203.0.113.2"));
    assert_eq!(ev[0].node.as_deref(), Some("node-a"));
    assert!(ev[0].details.as_deref().unwrap().contains("expired"));

    // kill -9 and restart: client 1 (blocked) sends all the way through; not
    // one packet may reach the listener.
    let before = cli.stats()["drop_banned"].as_u64().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = std::thread::scope(|sc| {
        let stop2 = stop.clone();
        let client = &lab.clients[0];
        let dest = to(lab, 0);
        let h = sc.spawn(move || {
            let mut n = 0;
            // Bounded: at most 3000 packets, 10 s.
            let end = Instant::now() + Duration::from_secs(10);
            while !stop2.load(Ordering::Relaxed) && n < 3000 && Instant::now() < end {
                send_sip(client, dest, OPTIONS, 10);
                n += 10;
            }
            n
        });
        std::thread::sleep(Duration::from_millis(300));
        daemon.kill9();
        assert!(
            lab.server.xdp_attached("s1"),
            "the filter must outlive its controller"
        );
        std::thread::sleep(Duration::from_millis(700));
        daemon = cli.start_controller(&["s1", "s2"], "node-a", INTERVAL);
        daemon.wait_log("database connected", Duration::from_secs(20));
        // Two full sync cycles after the restart.
        std::thread::sleep(Duration::from_millis(1200));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let got = listener.drain(Duration::from_millis(300), Duration::from_secs(5));
    assert_eq!(
        got.get(&lab.links[0].client_v4).copied().unwrap_or(0),
        0,
        "a packet got through the restart"
    );
    let dropped = cli.stats()["drop_banned"].as_u64().unwrap() - before;
    eprintln!("restart window: {sent} sent by the banned client, {dropped} dropped, 0 delivered");
    assert_eq!(
        dropped, sent as u64,
        "every packet of the window dropped by the ban"
    );
    assert!(daemon
        .log_text()
        .contains("already attached: keeping the running filter"));

    // SIGHUP reloads the configuration file: monitor mode on, the ban
    // still matches but nothing is dropped; then off again.
    let cfg = cli.dir.join("sip-xdp.toml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    let hup = |text: String| {
        std::fs::write(&cfg, text).unwrap();
        let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    };
    hup(format!("{base}monitor = true\n"));
    assert!(eventually(Duration::from_secs(3), || cli
        .json(&["status", "--json"])["monitor"]
        == true));
    assert_eq!(
        delivered(lab, &listener, 0),
        N,
        "monitor mode drops nothing"
    );
    assert!(cli.stats()["would_drop_banned"].as_u64().unwrap() >= N as u64);
    hup(format!("{base}monitor = false\n"));
    assert!(eventually(Duration::from_secs(3), || cli
        .json(&["status", "--json"])["monitor"]
        == false));
    assert_eq!(delivered(lab, &listener, 0), 0);
    assert!(daemon.log_text().contains("configuration reloaded"));
    // A setting only a start applies is named, and the rest still applies.
    hup(format!("{base}monitor = true\nevent_buffer = 5\n"));
    daemon.wait_log("needs_restart=event_buffer", Duration::from_secs(3));
    assert!(eventually(Duration::from_secs(3), || cli
        .json(&["status", "--json"])["monitor"]
        == true));
    hup(format!("{base}monitor = false\n"));
    assert!(eventually(Duration::from_secs(3), || cli
        .json(&["status", "--json"])["monitor"]
        == false));

    // SIGTERM: clean exit, filter stays attached.
    assert!(daemon.stop().success());
    assert!(lab.server.xdp_attached("s1") && lab.server.xdp_attached("s2"));
    assert_eq!(delivered(lab, &listener, 0), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn database_outage_changes_nothing_in_the_kernel() {
    let sbc = Sbc::mariadb("o");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    no_detection(cli);
    let mut daemon = cli.start_controller(&["s1", "s2"], "node-o", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let listener = SipListener::start(&lab.server, 5060);
    cli.ok(&["block", "198.51.100.2", "--reason", "outage test"]);
    assert_eq!(delivered(lab, &listener, 0), 0);

    let outage_start = now();
    let server = MariadbStopped::stop();
    assert!(
        eventually(Duration::from_secs(20), || {
            let st = cli.json(&["status", "--json"]);
            st["controller"]["db_reachable"] == false
        }),
        "status never reported the outage"
    );
    let human = cli.ok(&["status"]);
    assert!(human.contains("UNREACHABLE"), "{human}");
    // Several sync intervals without a database: the ban holds.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        delivered(lab, &listener, 0),
        0,
        "ban lost during the outage"
    );
    assert_eq!(delivered(lab, &listener, 1), N);
    daemon.wait_log(
        "database unreachable: the kernel keeps enforcing",
        Duration::from_secs(5),
    );
    drop(server); // starts MariaDB again

    assert!(
        eventually(Duration::from_secs(60), || cli.json(&["status", "--json"])
            ["controller"]["db_reachable"]
            == true),
        "controller never reconnected:\n{}",
        daemon.log_text()
    );
    let s = db.connect().await;
    // The outage itself was recorded while the database was away, and
    // written once it was back.
    let mut types = Vec::new();
    for _ in 0..50 {
        types = s
            .events(outage_start - ChronoDuration::seconds(5), None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event_type, e.event_time))
            .collect();
        if types.iter().any(|(t, _)| t == "db_reachable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let down = types
        .iter()
        .find(|(t, _)| t == "db_unreachable")
        .expect("db_unreachable event");
    assert!(
        down.1 >= outage_start - ChronoDuration::seconds(1),
        "{types:?}"
    );
    assert!(types.iter().any(|(t, _)| t == "db_reachable"), "{types:?}");
    assert_eq!(delivered(lab, &listener, 0), 0, "ban lost after the outage");
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "current_thread")]
async fn two_nodes_share_one_database() {
    let lab_a = Lab::new("na", &[("198.51.100", "2001:db8:1")]);
    let lab_b = Lab::new("nb", &[("203.0.113", "2001:db8:2")]);
    let db = TestDb::mariadb();
    let node_a = Cli::with_db(&lab_a.server, db.url());
    let node_b = Cli::with_db(&lab_b.server, db.url());
    node_a.set_node("sbc-a");
    node_b.set_node("sbc-b");
    no_detection(&node_a);
    no_detection(&node_b);
    let da = node_a.start_controller(&["s1"], "sbc-a", INTERVAL);
    let db_ = node_b.start_controller(&["s1"], "sbc-b", INTERVAL);
    da.wait_log("database connected", Duration::from_secs(20));
    db_.wait_log("database connected", Duration::from_secs(20));
    let listener_b = SipListener::start(&lab_b.server, 5060);
    assert_eq!(delivered(&lab_b, &listener_b, 0), N);

    // Blocked through node A; enforced by node B at its next sync.
    node_a.ok(&[
        "block",
        "203.0.113.2",
        "--for",
        "10m",
        "--reason",
        "seen on sbc-a",
    ]);
    let t = Instant::now();
    assert!(
        eventually(ONE_SYNC, || enforced(&node_b, "203.0.113.2")),
        "node B never enforced it"
    );
    eprintln!(
        "block through node A enforced on node B after {:?}",
        t.elapsed()
    );
    assert_eq!(delivered(&lab_b, &listener_b, 0), 0);
    let rows = node_b.json(&["list", "blocked", "--json"]);
    assert_eq!(rows[0]["node"], "sbc-a");
    assert_eq!(rows[0]["reason"], "seen on sbc-a");

    // Unblocked through node B; lifted on node B at once, and node A's copy
    // (if any) follows at its next syncs.
    node_b.ok(&["unblock", "203.0.113.2"]);
    assert_eq!(delivered(&lab_b, &listener_b, 0), N);
    assert!(eventually(Duration::from_secs(3), || !in_kernel(
        &node_a,
        "203.0.113.2"
    )));
}

/// Stops the shared MariaDB for the length of a test, and always starts it
/// again (also when the test fails).
struct MariadbStopped;

impl MariadbStopped {
    fn stop() -> Self {
        let out = std::process::Command::new("/etc/init.d/mariadb")
            .arg("stop")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stopping MariaDB: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        MariadbStopped
    }
}

impl Drop for MariadbStopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("/etc/init.d/mariadb")
            .arg("start")
            .output();
        let _ = eventually(Duration::from_secs(60), || {
            std::process::Command::new("mariadb")
                .args(["-e", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }
}

/// A row written IPv4-mapped (`::ffff:a.b.c.d`, as dual-stack tools write
/// IPv4 peers) is one and the same address as the kernel's: enforced at
/// every cycle, never removed and re-added.
#[tokio::test(flavor = "current_thread")]
async fn ipv4_mapped_rows_stay_enforced() {
    let sbc = Sbc::mariadb("map");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    no_detection(cli);
    let daemon = cli.start_controller(&["s1", "s2"], "node-a", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let listener = SipListener::start(&lab.server, 5060);
    let s = store(db).await;
    s.execute_literal(
        "INSERT INTO blocked_ips (ip_address, reason) VALUES ('::ffff:198.51.100.2', 'mapped')",
    )
    .await
    .unwrap();
    assert!(eventually(ONE_SYNC, || in_kernel(cli, "198.51.100.2")));
    // Six rounds across a dozen sync cycles: never a packet through.
    for round in 0..6 {
        assert_eq!(delivered(lab, &listener, 0), 0, "round {round}");
        std::thread::sleep(Duration::from_millis(700));
    }
    assert_eq!(delivered(lab, &listener, 1), N);
    let removed = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("block removed"))
        .count();
    assert_eq!(removed, 0, "{}", daemon.log_text());
}

/// A row whose date does not decode (a MySQL zero date, as pre-existing
/// tables hold) is reported once with its table and id, and skipped; the
/// database stays reachable and a block written after it is enforced.
#[tokio::test(flavor = "current_thread")]
async fn a_bad_row_among_good_ones_stops_nothing() {
    let sbc = Sbc::mariadb("bad");
    let (db, cli) = (&sbc.db, &sbc.cli);
    no_detection(cli);
    let daemon = cli.start_controller(&["s1", "s2"], "node-a", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let s = store(db).await;
    s.execute_literal(
        "INSERT INTO blocked_ips (ip_address, reason, blocked_at) \
         VALUES ('203.0.113.99', 'zero date', '0000-00-00 00:00:00')",
    )
    .await
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    s.execute_literal(
        "INSERT INTO blocked_ips (ip_address, reason) VALUES ('198.51.100.2', 'after the bad one')",
    )
    .await
    .unwrap();
    assert!(
        eventually(ONE_SYNC, || in_kernel(cli, "198.51.100.2")),
        "{}",
        daemon.log_text()
    );
    std::thread::sleep(Duration::from_millis(1200));
    let log = daemon.log_text();
    let reports: Vec<_> = log
        .lines()
        .filter(|l| l.contains("skipping database row") && l.contains("blocked_ips"))
        .collect();
    assert_eq!(reports.len(), 1, "reported once: {log}");
    assert!(
        reports[0].contains("id=1") && reports[0].contains("blocked_at"),
        "{}",
        reports[0]
    );
    assert!(!log.contains("database unreachable"), "{log}");
    let status = cli.json(&["status", "--json"]);
    assert_eq!(status["controller"]["db_reachable"], true, "{status}");
}

/// MariaDB stopped with SIGSTOP (connections open, queries hang, no reset)
/// until the guard is dropped, also when the test fails.
struct HungDatabase(String);

impl HungDatabase {
    fn stop() -> Self {
        let out = std::process::Command::new("pidof")
            .arg("mariadbd")
            .output()
            .expect("pidof");
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!pid.is_empty(), "no mariadbd running");
        assert!(std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success());
        Self(pid)
    }
}

impl Drop for HungDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// Nothing waits on the database: with MariaDB hung, a flood is still
/// banned within two sampling units, and its row and events are written
/// once the database answers again.
#[test]
fn a_hung_database_delays_no_ban() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sbc = Sbc::mariadb("hung");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    cli.add_config("[detect]\ninterval = \"500ms\"\n");
    let daemon = cli.start_controller(&["s1", "s2"], "node-a", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let s = rt.block_on(store(db));
    let hung = HungDatabase::stop();
    // Let the controller's next round start and hang.
    std::thread::sleep(Duration::from_millis(800));
    let t = Instant::now();
    send_sip(&lab.clients[1], to(lab, 1), OPTIONS, 200);
    assert!(
        eventually(Duration::from_secs(2), || in_kernel(cli, "203.0.113.2")),
        "no ban with the database hung:\n{}",
        daemon.log_text()
    );
    eprintln!("banned {:?} after the flood, database hung", t.elapsed());
    drop(hung);
    assert!(
        eventually(Duration::from_secs(20), || rt
            .block_on(s.blocks_of("203.0.113.2"))
            .is_ok_and(|r| !r.is_empty())),
        "the row was not written after recovery:\n{}",
        daemon.log_text()
    );
    assert!(eventually(Duration::from_secs(5), || rt
        .block_on(s.events(now() - ChronoDuration::hours(1), Some("flood_detected"), 10))
        .is_ok_and(|e| !e.is_empty())));
}

/// What an operator does while the database is down holds when it is back:
/// an unblock is not undone by the controller's next sync, a disallow does
/// not come back, a block is not lifted for want of a row. The changes wait
/// in the outbox and are written before the lists are read again.
#[tokio::test(flavor = "current_thread")]
async fn changes_made_during_an_outage_stick() {
    let sbc = Sbc::mariadb("ob");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    no_detection(cli);
    let mut daemon = cli.start_controller(&["s1", "s2"], "node-ob", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let listener = SipListener::start(&lab.server, 5060);
    let (c1, c2) = (
        lab.links[0].client_v4.to_string(),
        lab.links[1].client_v4.to_string(),
    );
    cli.ok(&["block", &c1, "--for", "1h"]);
    cli.ok(&["allow", &c2]);
    assert_eq!(delivered(lab, &listener, 0), 0);

    let server = MariadbStopped::stop();
    for args in [
        vec!["unblock", c1.as_str()],
        vec!["disallow", c2.as_str()],
        vec!["block", c2.as_str(), "--for", "1h"],
    ] {
        let out = cli.run(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("queued in"), "{args:?}: {err}");
    }
    assert_eq!(delivered(lab, &listener, 0), N, "unblocked at once");
    assert_eq!(delivered(lab, &listener, 1), 0, "blocked at once");
    drop(server);

    daemon.wait_log(
        "wrote the changes queued while the database was unreachable",
        Duration::from_secs(60),
    );
    // Several syncs later, the kernel still agrees with the operator.
    std::thread::sleep(4 * ONE_SYNC);
    assert_eq!(delivered(lab, &listener, 0), N, "the unblock was undone");
    assert_eq!(delivered(lab, &listener, 1), 0, "the block was lost");
    assert!(!in_kernel(cli, &c1) && in_kernel(cli, &c2));
    assert!(enforced(cli, &c2) && !enforced(cli, &c1));
    let allowed = cli.json(&["list", "allowed", "--json"]);
    assert_eq!(allowed.as_array().unwrap().len(), 0, "{allowed}");
    let s = store(db).await;
    let lifted = s.blocks_of(&c1).await.unwrap();
    assert!(
        lifted.iter().all(|r| r.unblocked_at.is_some()),
        "{lifted:?}"
    );
    assert!(daemon.stop().success());
}

/// A second controller on the same pin directory refuses to start and
/// names the first; once the first is gone, a new one starts.
#[test]
fn one_controller_per_pin_directory() {
    let lab = Lab::two_clients("lk");
    let cli = Cli::new(&lab.server);
    no_detection(&cli);
    let mut first = cli.start_controller(&["s1"], "node-lk", INTERVAL);
    first.wait_log("database connected", Duration::from_secs(20));
    let mut refused = cli.start_controller(&["s1"], "node-lk2", INTERVAL);
    let status = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        refused.child.try_wait().unwrap()
    });
    let err = refused.log_text();
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second controller ran beside the first:\n{err}"
    );
    assert!(
        err.contains(&format!(
            "another sip-xdp controller (PID {}) already runs on {}",
            first.child.id(),
            cli.pins.display()
        )),
        "{err}"
    );
    // Purging the pins under a running controller would let a second one
    // start on a fresh directory beside it.
    let e = cli.fails(&["detach", "--iface", "s1", "--purge"]);
    assert!(e.contains("stop it first"), "{e}");
    assert!(lab.server.xdp_attached("s1"));
    assert!(first.stop().success());
    let mut second = cli.start_controller(&["s1"], "node-lk", INTERVAL);
    second.wait_log("database connected", Duration::from_secs(20));
    assert!(second.stop().success());
}

/// A change the database refuses for what it holds (too long for its
/// column, a character its charset lacks) is an error before the kernel is
/// touched, never "queued"; a queued change the database refuses, and a
/// line of the outbox that is not a change, are moved aside while every
/// other change is written; and none of it keeps the controller from
/// reading the lists: a row inserted by hand afterwards is enforced.
#[tokio::test(flavor = "current_thread")]
async fn data_errors_are_refused_and_never_stop_the_sync() {
    use sip_xdp::db::outbox::{Change, Op};
    let sbc = Sbc::mariadb("de");
    let (db, cli) = (&sbc.db, &sbc.cli);
    let name = db.mariadb_name().unwrap().to_string();
    no_detection(cli);
    let mut daemon = cli.start_controller(&["s1", "s2"], "node-de", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    let outbox = cli.dir.join("outbox.jsonl");

    let long = "x".repeat(300);
    let e = cli.fails(&["block", "198.51.100.2", "--reason", &long]);
    assert!(
        e.contains("the reason is 300 characters long; the column holds 255")
            && e.contains("nothing was changed"),
        "{e}"
    );
    // A database made in latin1, as older OpenSIPS set-ups are.
    sip_xdp_tests::db::admin(&format!(
        "ALTER TABLE `{name}`.blocked_ips MODIFY reason VARCHAR(255) CHARACTER SET latin1 NOT NULL DEFAULT ''"
    ));
    let e = cli.fails(&["block", "198.51.100.2", "--reason", "scanner \u{1f6ab}"]);
    assert!(e.contains("nothing was changed"), "{e}");
    assert!(!in_kernel(cli, "198.51.100.2"));
    assert!(
        std::fs::read_to_string(&outbox)
            .unwrap_or_default()
            .is_empty(),
        "a refused change was queued"
    );

    // An outbox as a crash and an older version could leave it: a line cut
    // off mid-write, bytes that are not text, a change the database will
    // never take, and a good change after them.
    let at = sip_xdp::db::store::now();
    let block = |ip: &str, reason: &str| {
        let op = Op::Block {
            reason: reason.into(),
            expires_at: None,
            source: "manual".into(),
        };
        serde_json::to_string(&Change::new(
            op,
            &format!("{ip}/32").parse().unwrap(),
            at,
            "node-de",
        ))
        .unwrap()
    };
    let mut text = b"{\"op\":\"unblock\",\"tar".to_vec();
    text.extend_from_slice(b"\n\xff\xfe\n");
    text.extend_from_slice(block("198.51.100.3", "scanner \u{1f6ab}").as_bytes());
    text.push(b'\n');
    text.extend_from_slice(block("198.51.100.4", "queued").as_bytes());
    text.push(b'\n');
    std::fs::write(&outbox, text).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || enforced(cli, "198.51.100.4")),
        "the good change after the bad ones was never written:\n{}",
        daemon.log_text()
    );
    assert!(!enforced(cli, "198.51.100.3"));
    let failed = std::fs::read_to_string(cli.dir.join("outbox.jsonl.failed")).unwrap();
    assert!(failed.contains("198.51.100.3"), "{failed}");
    let unreadable = std::fs::read(cli.dir.join("outbox.jsonl.unreadable")).unwrap();
    assert_eq!(
        unreadable
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    daemon.wait_log("a queued change was refused", Duration::from_secs(5));

    // The controller still reads the lists, and says the database is up.
    let s = store(db).await;
    s.insert_block("198.51.100.5", "by hand", "manual", now(), None, None)
        .await
        .unwrap();
    assert!(
        eventually(ONE_SYNC * 2, || enforced(cli, "198.51.100.5")),
        "a row inserted by hand was never enforced:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        cli.json(&["status", "--json"])["controller"]["db_reachable"],
        true
    );
    let refused = s
        .events(at - ChronoDuration::seconds(5), Some("change_refused"), 10)
        .await
        .unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(daemon.stop().success());
}

/// Runs SQL on a test database as another program would (its own
/// connection, no sip-xdp in between); returns the first column of the
/// last statement's rows.
async fn raw_sql(db: &TestDb, sql: &str) -> Vec<String> {
    use sqlx::Row as _;
    match db.mariadb_name() {
        Some(name) => sip_xdp_tests::db::admin_query(&format!("USE `{name}`; {sql}"))
            .lines()
            .map(str::to_string)
            .collect(),
        None => {
            let opts: sqlx::sqlite::SqliteConnectOptions = db
                .url()
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            let mut last = Vec::new();
            for st in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                last = sqlx::query(sqlx::AssertSqlSafe(st.to_string()))
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{st}: {e}"))
                    .iter()
                    .map(|r| {
                        r.try_get::<i64, _>(0)
                            .map(|v| v.to_string())
                            .or_else(|_| r.try_get::<String, _>(0))
                            .unwrap_or_default()
                    })
                    .collect();
            }
            pool.close().await;
            last
        }
    }
}

/// The tables an operator's SIP server scripts made before sip-xdp came:
/// fewer columns, narrower ones, another name for the comment, and a view
/// of their own under one of the names sip-xdp's migrations use.
const OPERATOR_TABLES_MYSQL: &str = "\
    CREATE TABLE blocked_ips (id INT AUTO_INCREMENT PRIMARY KEY, ip_address VARCHAR(45) NOT NULL, \
      reason VARCHAR(255), blocked_at DATETIME DEFAULT CURRENT_TIMESTAMP, expires_at DATETIME NULL); \
    CREATE TABLE whitelisted_ips (id INT AUTO_INCREMENT PRIMARY KEY, ip_address VARCHAR(45) NOT NULL, \
      description VARCHAR(255)); \
    CREATE VIEW top_attacking_ips AS SELECT ip_address, 'theirs' AS owner FROM blocked_ips; \
    INSERT INTO blocked_ips (ip_address, reason) VALUES ('198.51.100.2', 'from before')";
const OPERATOR_TABLES_SQLITE: &str = "\
    CREATE TABLE blocked_ips (id INTEGER PRIMARY KEY AUTOINCREMENT, ip_address TEXT NOT NULL, \
      reason TEXT, blocked_at TEXT DEFAULT CURRENT_TIMESTAMP, expires_at TEXT NULL); \
    CREATE TABLE whitelisted_ips (id INTEGER PRIMARY KEY AUTOINCREMENT, ip_address TEXT NOT NULL, \
      description TEXT); \
    CREATE VIEW top_attacking_ips AS SELECT ip_address, 'theirs' AS owner FROM blocked_ips; \
    INSERT INTO blocked_ips (ip_address, reason) VALUES ('198.51.100.2', 'from before')";

/// sip-xdp takes over the operator's tables: their rows are enforced, a
/// block inserted by plain SQL is enforced within a sync, `doctor` finds
/// the schema sound, their view stays theirs, no migration is left
/// half-way, and their SIP server's own query agrees with `list blocked`
/// after an unblock and an expiry.
async fn operator_tables_are_adopted(db: TestDb, tables: &str, now_sql: &str) {
    let tag = if db.mariadb_name().is_some() {
        "am"
    } else {
        "as"
    };
    let sbc = Sbc::on(Lab::two_clients(tag), db);
    let (db, cli) = (&sbc.db, &sbc.cli);
    raw_sql(db, tables).await;
    no_detection(cli);
    let out = cli.run(&["doctor", "--json"]);
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: Vec<_> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"].as_str().unwrap().starts_with("database"))
        .collect();
    assert!(
        !schema.is_empty() && schema.iter().all(|c| c["level"] == "ok"),
        "{schema:?}"
    );
    let mut daemon = cli.start_controller(&["s1", "s2"], "node-a", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    assert!(
        eventually(ONE_SYNC, || enforced(cli, "198.51.100.2")),
        "the operator's own row was never enforced:\n{}",
        daemon.log_text()
    );
    raw_sql(
        db,
        "INSERT INTO blocked_ips (ip_address, reason) VALUES ('198.51.100.3', 'by hand')",
    )
    .await;
    assert!(eventually(ONE_SYNC, || enforced(cli, "198.51.100.3")));
    let classic = |ip: &str| {
        format!(
            "SELECT COUNT(*) FROM blocked_ips WHERE ip_address = '{ip}' \
             AND (expires_at IS NULL OR expires_at > {now_sql})"
        )
    };
    assert_eq!(raw_sql(db, &classic("198.51.100.3")).await, ["1"]);
    cli.ok(&["unblock", "198.51.100.3"]);
    assert!(!enforced(cli, "198.51.100.3"));
    assert_eq!(raw_sql(db, &classic("198.51.100.3")).await, ["0"]);
    cli.ok(&["block", "198.51.100.4", "--for", "2s"]);
    assert_eq!(raw_sql(db, &classic("198.51.100.4")).await, ["1"]);
    assert!(eventually(Duration::from_secs(6), || !enforced(
        cli,
        "198.51.100.4"
    )));
    // Once the controller has recorded the expiry, the classic query
    // agrees at once.
    let lifted = "SELECT COUNT(*) FROM blocked_ips WHERE ip_address = '198.51.100.4' AND unblocked_at IS NOT NULL";
    for _ in 0..50 {
        if raw_sql(db, lifted).await == ["1"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raw_sql(db, lifted).await, ["1"], "{}", daemon.log_text());
    assert_eq!(raw_sql(db, &classic("198.51.100.4")).await, ["0"]);
    cli.ok(&["allow", "203.0.113.0/24", "--comment", "trunk"]);
    assert_eq!(
        raw_sql(
            db,
            "SELECT comment FROM whitelisted_ips WHERE ip_address = '203.0.113.0/24'"
        )
        .await,
        ["trunk"]
    );
    assert_eq!(
        raw_sql(
            db,
            "SELECT owner FROM top_attacking_ips WHERE ip_address = '198.51.100.2'"
        )
        .await,
        ["theirs"],
        "the operator's view was replaced"
    );
    assert_eq!(
        raw_sql(
            db,
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success"
        )
        .await,
        ["0"]
    );
    assert!(daemon.stop().success());
}

#[tokio::test(flavor = "current_thread")]
async fn operator_tables_are_adopted_on_mariadb() {
    operator_tables_are_adopted(TestDb::mariadb(), OPERATOR_TABLES_MYSQL, "NOW()").await;
}

#[tokio::test(flavor = "current_thread")]
async fn operator_tables_are_adopted_on_sqlite() {
    operator_tables_are_adopted(TestDb::sqlite(), OPERATOR_TABLES_SQLITE, "datetime('now')").await;
}

/// A table sip-xdp cannot take over safely (addresses kept as numbers) is
/// refused before any migration runs, naming the statement to run; the
/// controller says "schema mismatch", not "unreachable", and keeps going.
#[tokio::test(flavor = "current_thread")]
async fn a_table_that_cannot_be_adopted_is_named_not_half_migrated() {
    let sbc = Sbc::mariadb("sm");
    let (db, cli) = (&sbc.db, &sbc.cli);
    raw_sql(
        db,
        "CREATE TABLE blocked_ips (id INT AUTO_INCREMENT PRIMARY KEY, ip_address INT UNSIGNED NOT NULL, \
         reason VARCHAR(255), blocked_at DATETIME DEFAULT CURRENT_TIMESTAMP, expires_at DATETIME NULL)",
    )
    .await;
    no_detection(cli);
    let e = cli.fails(&["db", "migrate"]);
    assert!(
        e.contains("schema mismatch: blocked_ips.ip_address is int")
            && e.contains("ALTER TABLE blocked_ips MODIFY ip_address VARCHAR(64)"),
        "{e}"
    );
    let name = db.mariadb_name().unwrap();
    assert_eq!(
        sip_xdp_tests::db::admin_query(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}' AND TABLE_NAME = '_sqlx_migrations'"
        )),
        "0",
        "a migration ran before the schema was checked"
    );
    let mut daemon = cli.start_controller(&["s1"], "node-sm", INTERVAL);
    assert!(
        eventually(Duration::from_secs(20), || {
            cli.json(&["status", "--json"])["controller"]["db_state"] == "schema mismatch"
        }),
        "{}",
        daemon.log_text()
    );
    let human = cli.ok(&["status"]);
    assert!(
        human.contains("SCHEMA MISMATCH") && !human.contains("UNREACHABLE"),
        "{human}"
    );
    assert!(daemon.stop().success());
}

/// The controller deletes events past `[retention]` by itself, and
/// `sip-xdp db prune` does it at once.
#[tokio::test(flavor = "current_thread")]
async fn old_events_are_deleted_by_the_controller_and_by_db_prune() {
    use sip_xdp::db::store::Event;
    let sbc = Sbc::sqlite("rt");
    let (db, cli) = (&sbc.db, &sbc.cli);
    no_detection(cli);
    cli.add_config("[retention]\nevents = \"1h\"");
    let s = store(db).await;
    let old = |t| Event {
        event_type: "retention_probe".into(),
        source_ip: None,
        severity: "info".into(),
        details: serde_json::json!({}),
        event_time: t,
        node: None,
    };
    let probes = "SELECT COUNT(*) FROM security_events WHERE event_type = 'retention_probe'";
    s.insert_events(&[old(now() - ChronoDuration::hours(2)), old(now())])
        .await
        .unwrap();
    let mut daemon = cli.start_controller(&["s1"], "node-rt", INTERVAL);
    daemon.wait_log("database connected", Duration::from_secs(20));
    daemon.wait_log("deleted rows past their retention", Duration::from_secs(5));
    assert_eq!(s.count_literal(probes).await.unwrap(), 1);
    assert!(daemon.stop().success());

    s.insert_events(&[old(now() - ChronoDuration::hours(3))])
        .await
        .unwrap();
    let out = cli.ok(&["db", "prune"]);
    assert!(out.starts_with("deleted 1 events (older than 1h"), "{out}");
    assert_eq!(s.count_literal(probes).await.unwrap(), 1);
}
