//! The store on a real MariaDB server: every check of
//! `sip-xdp/tests/store/checks.rs` (run on SQLite as host tests), and the
//! database's own clock. Needs the MariaDB that `cargo xtask test` starts.

#[path = "../../sip-xdp/tests/store/checks.rs"]
mod checks;

use chrono::Duration;
use serde_json::json;
use sip_xdp::db::store::{now, Event};
use sip_xdp_tests::db::{admin, admin_query, ServerTimeZone, TestDb};

/// A fresh MariaDB database whose server runs five hours behind UTC.
async fn fresh() -> (sip_xdp::db::Store, (TestDb, ServerTimeZone)) {
    let zone = ServerTimeZone::set("-05:00");
    let db = TestDb::mariadb();
    let store = db.connect().await;
    assert_eq!(store.kind(), "mysql");
    (store, (db, zone))
}

store_tests!(fresh());

/// Rows another program writes in its own session, in the server's default
/// zone (UTC-5 here), with the server's `NOW()`: an operator's one-hour
/// block, OpenSIPS's failed REGISTER. Each is judged by the clock that wrote
/// it, and the events sip-xdp writes sit next to them on that clock.
#[tokio::test(flavor = "current_thread")]
async fn mariadb_rows_are_judged_by_the_database_clock() {
    let _zone = ServerTimeZone::set("-05:00");
    let db = TestDb::mariadb();
    let name = db.mariadb_name().unwrap().to_string();
    let store = db.connect().await;
    admin(&format!(
        "INSERT INTO `{name}`.blocked_ips (ip_address, reason, expires_at) \
         VALUES ('198.51.100.10', 'one hour', NOW() + INTERVAL 1 HOUR)"
    ));
    admin(&format!(
        "INSERT INTO `{name}`.failed_registrations (source_ip, username, response_code, attempt_time) \
         VALUES ('198.51.100.11', '100', 401, NOW())"
    ));
    let t0 = now();
    let active = store.active_blocks(t0).await.unwrap();
    assert_eq!(
        active.len(),
        1,
        "a one-hour block written at UTC-5 is active"
    );
    let left = active[0].expires_at.unwrap() - t0;
    assert!(
        (left - Duration::hours(1)).num_seconds().abs() < 60,
        "expires in {left} instead of one hour"
    );
    assert!(store
        .active_blocks(t0 + Duration::minutes(61))
        .await
        .unwrap()
        .is_empty());
    let recent = store
        .failures("failed_registrations", 0, t0 - Duration::minutes(1), 100)
        .await
        .unwrap();
    assert_eq!(
        recent.rows.len(),
        1,
        "a failure written now is in the window"
    );
    assert!((recent.rows[0].attempt_time - t0).num_seconds().abs() < 60);

    // What sip-xdp writes reads as NOW() to every other client.
    store
        .insert_events(&[Event {
            event_type: "ip_blocked".into(),
            source_ip: Some("198.51.100.12".into()),
            severity: "warning".into(),
            details: json!({}),
            event_time: now(),
            node: None,
        }])
        .await
        .unwrap();
    let age = admin_query(&format!(
        "SELECT ABS(TIMESTAMPDIFF(SECOND, event_time, NOW())) FROM `{name}`.security_events"
    ));
    assert!(
        age.parse::<i64>().unwrap() < 60,
        "event is {age} s off NOW()"
    );
    assert!((store.skew() + Duration::hours(5)).num_seconds().abs() < 60);
}
