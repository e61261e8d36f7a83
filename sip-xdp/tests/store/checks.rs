//! What the store does, checked on one engine per call: each check takes
//! a fresh, migrated store. Run on SQLite as host tests
//! (`sip-xdp/tests/store_sqlite.rs`) and on a real MariaDB by the
//! privileged suite (`tests/tests/store.rs`).

use chrono::{Duration, NaiveDateTime};
use serde_json::json;
use sip_xdp::{
    db::store::{now, Event, Pool, Store},
    parse::parse_net,
};

pub async fn minimal_insert_is_a_permanent_block_on_our_clock(store: &Store) {
    // Migrations are idempotent.
    sip_xdp::db::migrate::migrate(store).await.unwrap();
    // A minimal INSERT is a complete, permanent block. Its column default
    // stamps it in the database's zone (UTC-5: the callers set it so); the
    // store reads it back on the controller's UTC clock.
    store
        .execute_literal(
            "INSERT INTO blocked_ips (ip_address, reason) VALUES ('203.0.113.7', 'manual')",
        )
        .await
        .unwrap();
    let t0 = now();
    let active = store.active_blocks(t0).await.unwrap();
    assert_eq!(active.len(), 1);
    let r = &active[0];
    assert_eq!(
        (r.ip_address.as_str(), r.source.as_str()),
        ("203.0.113.7", "manual")
    );
    assert_eq!((r.expires_at, r.unblocked_at), (None, None));
    assert!(
        (r.blocked_at - t0).num_seconds().abs() < 60,
        "blocked_at default {} is not now {t0} on our clock",
        r.blocked_at
    );
}

pub async fn expired_rows_are_listed_until_lifted_once(store: &Store) {
    let t0 = now();
    // Expired: not active, listed as expired until marked lifted, once.
    let past = t0 - Duration::hours(2);
    let old = store
        .insert_block(
            "198.51.100.9",
            "flood",
            "flood",
            past,
            Some(past + Duration::minutes(2)),
            Some("n1"),
        )
        .await
        .unwrap();
    let live = store
        .insert_block(
            "198.51.100.10",
            "flood",
            "flood",
            t0,
            Some(t0 + Duration::hours(1)),
            Some("n1"),
        )
        .await
        .unwrap();
    let ids = |rows: Vec<sip_xdp::db::store::BlockRow>| {
        rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let active = ids(store.active_blocks(t0).await.unwrap());
    assert!(
        active.contains(&live) && !active.contains(&old),
        "{active:?}"
    );
    assert_eq!(ids(store.expired_unlifted(t0).await.unwrap()), vec![old]);
    assert!(store.mark_lifted(old, t0).await.unwrap());
    assert!(
        !store.mark_lifted(old, t0).await.unwrap(),
        "lifted only once"
    );
    assert!(store.expired_unlifted(t0).await.unwrap().is_empty());
    // The sync's rules (SQLite: times read by SQLite itself) say what the
    // rows say, to the millisecond, whatever the last digit.
    for ms in [1, 999] {
        let b = t0 + Duration::milliseconds(ms);
        store
            .insert_block(
                "198.51.100.11",
                "",
                "flood",
                b,
                Some(b + Duration::minutes(ms)),
                None,
            )
            .await
            .unwrap();
    }
    rules_match_rows(store, t0).await;
    // The live one expires in an hour.
    let later = t0 + Duration::hours(2);
    assert!(!ids(store.active_blocks(later).await.unwrap()).contains(&live));
}

pub async fn a_hand_written_expiry_with_a_t_compares_as_a_time(store: &Store) {
    let t0 = now();
    // Hand-written expiry with a 'T' separator compares as a time.
    store
        .execute_literal("INSERT INTO blocked_ips (ip_address, expires_at) VALUES ('203.0.113.8', '2099-01-01T00:00:00')")
        .await
        .unwrap();
    assert!(store
        .active_blocks(t0)
        .await
        .unwrap()
        .iter()
        .any(|r| r.ip_address == "203.0.113.8"));
}

pub async fn lifts_agree_with_the_sip_servers_own_query(store: &Store) {
    let t0 = now();
    store
        .execute_literal(
            "INSERT INTO blocked_ips (ip_address, reason) VALUES ('203.0.113.7', 'manual')",
        )
        .await
        .unwrap();
    // Lifting by address.
    assert_eq!(store.lift("203.0.113.7", t0).await.unwrap(), 1);
    assert!(!store
        .active_blocks(t0)
        .await
        .unwrap()
        .iter()
        .any(|r| r.ip_address == "203.0.113.7"));

    // The SIP server's own query, as an OpenSIPS or Kamailio script runs
    // it (no `unblocked_at` in it), agrees: a lift by address, by id (a
    // feed's removal) or at expiry leaves no row it reads as blocked.
    let timed = store
        .insert_block(
            "198.51.100.79",
            "",
            "feed",
            t0,
            Some(t0 + Duration::hours(1)),
            None,
        )
        .await
        .unwrap();
    store.lift_ids(&[timed], t0).await.unwrap();
    let classic = |ip: &'static str| -> &'static str {
        match (store.kind(), ip) {
            ("mysql", "203.0.113.7") => "SELECT COUNT(*) FROM blocked_ips WHERE ip_address = '203.0.113.7' AND (expires_at IS NULL OR expires_at > NOW())",
            ("mysql", _) => "SELECT COUNT(*) FROM blocked_ips WHERE ip_address = '198.51.100.79' AND (expires_at IS NULL OR expires_at > NOW())",
            (_, "203.0.113.7") => "SELECT COUNT(*) FROM blocked_ips WHERE ip_address = '203.0.113.7' AND (expires_at IS NULL OR expires_at > datetime('now'))",
            _ => "SELECT COUNT(*) FROM blocked_ips WHERE ip_address = '198.51.100.79' AND (expires_at IS NULL OR expires_at > datetime('now'))",
        }
    };
    // Those queries compare whole seconds: the lift shows from the next.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for ip in ["203.0.113.7", "198.51.100.79"] {
        assert_eq!(store.count_literal(classic(ip)).await.unwrap(), 0, "{ip}");
    }
}

pub async fn cidrs_round_trip_and_a_bad_row_names_its_id(store: &Store) {
    let t0 = now();
    // CIDRs round-trip for both families.
    for cidr in ["198.51.100.0/24", "2001:db8:1::/48", "2001:db8::7"] {
        store
            .insert_block(cidr, "", "manual", t0, None, None)
            .await
            .unwrap();
        let row = store.blocks_of(cidr).await.unwrap().pop().unwrap();
        let rule = row.rule().unwrap();
        assert_eq!(rule.net, parse_net(cidr).unwrap());
    }
    // A bad row comes back as it is and is rejected with its id.
    let bad = store
        .insert_block("203.0.113.300", "", "manual", t0, None, None)
        .await
        .unwrap();
    let row = store
        .blocks_of("203.0.113.300")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(row.rule().unwrap_err().id, bad);
}

pub async fn allow_list_rows_are_written_read_and_deleted(store: &Store) {
    // Allow-list.
    store.insert_allow("203.0.113.0/28", "trunk").await.unwrap();
    store.insert_allow("2001:db8:5::/64", "").await.unwrap();
    let allows = store.allows().await.unwrap();
    assert_eq!(allows.len(), 2);
    assert_eq!(allows[0].comment, "trunk");
    assert_eq!(store.delete_allow("203.0.113.0/28").await.unwrap(), 1);
    assert_eq!(store.allows().await.unwrap().len(), 1);
}

pub async fn events_are_filtered_by_time_and_type(store: &Store) {
    let t0 = now();
    // Events: written in one go, filtered by time and type.
    let ev = |t: &str, at: NaiveDateTime| Event {
        event_type: t.into(),
        source_ip: Some("203.0.113.7".into()),
        severity: "warning".into(),
        details: json!({"packets": 42, "window_s": 2}),
        event_time: at,
        node: Some("n1".into()),
    };
    store
        .insert_events(&[
            ev("ip_blocked", t0 - Duration::hours(3)),
            ev("ip_blocked", t0),
            ev("ip_unblocked", t0),
        ])
        .await
        .unwrap();
    let recent = store
        .events(t0 - Duration::minutes(1), None, 100)
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    let blocked = store
        .events(t0 - Duration::days(1), Some("ip_blocked"), 100)
        .await
        .unwrap();
    assert_eq!(blocked.len(), 2);
    let details: serde_json::Value =
        serde_json::from_str(blocked[0].details.as_deref().unwrap()).unwrap();
    assert_eq!(details["packets"], 42);
    assert_eq!(
        store
            .events(t0 - Duration::days(1), None, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    store.ping().await.unwrap();
}

pub async fn a_row_that_does_not_decode_costs_itself(store: &Store) {
    // A row that does not decode costs itself, not the query.
    let bad_date = if store.kind() == "sqlite" {
        "INSERT INTO blocked_ips (ip_address, reason, blocked_at) VALUES ('203.0.113.99', 'bad', 'yesterday')"
    } else {
        "INSERT INTO blocked_ips (ip_address, reason, blocked_at) VALUES ('203.0.113.99', 'bad', '0000-00-00 00:00:00')"
    };
    store.execute_literal(bad_date).await.unwrap();
    store
        .execute_literal(
            "INSERT INTO blocked_ips (ip_address, reason) VALUES ('203.0.113.98', 'after')",
        )
        .await
        .unwrap();
    let (rows, bad) = store.active_blocks_checked(now()).await.unwrap();
    assert!(
        rows.iter().any(|r| r.ip_address == "203.0.113.98"),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|r| r.ip_address == "203.0.113.99"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].table, "blocked_ips");
    assert!(bad[0].id > 0);
    assert!(bad[0].why.contains("blocked_at"), "{}", bad[0].why);
    let (rules, bad) = store.active_rules_checked(now()).await.unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].why.contains("blocked_at"), "{}", bad[0].why);
    assert!(rules
        .iter()
        .flatten()
        .any(|r| r.net == parse_net("203.0.113.98").unwrap()));
}

/// Every active row has its rule, with the same address and expiry.
async fn rules_match_rows(store: &Store, at: NaiveDateTime) {
    let rows = store.active_blocks(at).await.unwrap();
    let (rules, bad) = store.active_rules_checked(at).await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(rules.len(), rows.len());
    for (row, rule) in rows.iter().zip(&rules) {
        let rule = rule.as_ref().unwrap();
        assert_eq!(
            (rule.id, rule.net, rule.expires_at),
            (row.id, parse_net(&row.ip_address).unwrap(), row.expires_at),
            "{row:?}"
        );
    }
}

/// `report` and the three views operators query, on rows of their own.
pub async fn report_and_views(store: &Store) {
    let t0 = now();
    let ev = |t: &str| Event {
        event_type: t.into(),
        source_ip: Some("198.51.100.77".into()),
        severity: "warning".into(),
        details: json!({}),
        event_time: t0,
        node: None,
    };
    store
        .insert_events(&[
            ev("report_a"),
            ev("report_a"),
            ev("report_a"),
            ev("report_b"),
        ])
        .await
        .unwrap();
    for (ip, user) in [
        ("198.51.100.70", "rpt100"),
        ("198.51.100.71", "rpt100"),
        ("198.51.100.71", "rpt100"),
        ("198.51.100.72", "rpt200"),
    ] {
        store
            .insert_failure("failed_registrations", ip, user, "ua", 401, t0)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        store
            .insert_block("198.51.100.78", "r", "scanner_user_agent", t0, None, None)
            .await
            .unwrap();
    }
    let r = store.report(t0 - Duration::minutes(30), 50).await.unwrap();
    assert!(
        r.bans_by_reason.contains(&("scanner_user_agent".into(), 2)),
        "{r:?}"
    );
    assert!(
        r.top_banned
            .iter()
            .any(|(ip, n, _)| ip == "198.51.100.78" && *n == 2),
        "{r:?}"
    );
    let per_type = |t: &str| -> i64 {
        r.events_per_hour
            .iter()
            .filter(|(_, k, _)| k == t)
            .map(|(_, _, n)| n)
            .sum()
    };
    assert_eq!(
        (per_type("report_a"), per_type("report_b")),
        (3, 1),
        "{r:?}"
    );
    // Hours are on our clock, whatever the database's zone.
    let hour = r
        .events_per_hour
        .iter()
        .find(|(_, k, _)| k == "report_a")
        .unwrap()
        .0;
    assert!(
        (t0 - hour).num_minutes() >= 0 && (t0 - hour).num_minutes() < 60,
        "{hour} for {t0}"
    );
    let users: Vec<_> = r
        .failures_by_user
        .iter()
        .filter(|f| f.0.starts_with("rpt"))
        .cloned()
        .collect();
    assert_eq!(
        users,
        vec![
            ("rpt100".into(), "".into(), 3, 2),
            ("rpt200".into(), "".into(), 1, 1)
        ]
    );

    // The views, as an operator's SQL reads them.
    type Pair = (i64, i64);
    let (hourly, top, failures): (Vec<(i64,)>, Pair, Pair) = match store.pool() {
        Pool::Sqlite(p) => (
            sqlx::query_as("SELECT events FROM security_stats_hourly WHERE event_type = 'report_a'").fetch_all(p).await.unwrap(),
            sqlx::query_as("SELECT bans, CAST(active AS INTEGER) FROM top_attacking_ips WHERE ip_address = '198.51.100.78'").fetch_one(p).await.unwrap(),
            sqlx::query_as("SELECT attempts, sources FROM registration_failure_stats WHERE username = 'rpt100'").fetch_one(p).await.unwrap(),
        ),
        Pool::Mysql(p) => (
            sqlx::query_as("SELECT events FROM security_stats_hourly WHERE event_type = 'report_a'").fetch_all(p).await.unwrap(),
            sqlx::query_as("SELECT bans, CAST(active AS SIGNED) FROM top_attacking_ips WHERE ip_address = '198.51.100.78'").fetch_one(p).await.unwrap(),
            sqlx::query_as("SELECT attempts, sources FROM registration_failure_stats WHERE username = 'rpt100'").fetch_one(p).await.unwrap(),
        ),
    };
    assert_eq!(hourly.iter().map(|r| r.0).sum::<i64>(), 3);
    assert_eq!(top, (2, 2));
    assert_eq!(failures, (3, 2));
}

/// The lists' fingerprint moves with every change a full read would see
/// (a new row, a lift, a later expiry, an expiry passing, an allow entry)
/// and stays put otherwise.
pub async fn the_lists_fingerprint_moves_with_every_change(store: &Store) {
    let t = now();
    let fp = || async { store.lists_fingerprint(now()).await.unwrap() };
    let mut last = fp().await;
    assert_eq!(last, fp().await, "nothing changed");
    let moved = |what: &str, now_: Vec<i64>, last: &mut Vec<i64>| {
        assert_ne!(*last, now_, "{what} did not move the fingerprint");
        *last = now_;
    };
    store
        .insert_blocks(
            &["198.51.100.91".into(), "198.51.100.92".into()],
            "fp",
            "manual",
            t,
            Some(t + Duration::hours(1)),
            "n1",
        )
        .await
        .unwrap();
    moved("two new rows", fp().await, &mut last);
    let ids: Vec<i64> = store
        .active_blocks_of_source("manual", now())
        .await
        .unwrap()
        .iter()
        .filter(|r| r.ip_address == "198.51.100.91")
        .map(|r| r.id)
        .collect();
    store
        .extend_ids(&ids, t + Duration::hours(2))
        .await
        .unwrap();
    moved("a later expiry", fp().await, &mut last);
    store.lift_ids(&ids, now()).await.unwrap();
    moved("a lift", fp().await, &mut last);
    store.insert_allow("198.51.100.0/28", "fp").await.unwrap();
    moved("an allow entry", fp().await, &mut last);
    assert_eq!(last, fp().await, "nothing changed");
    // A row that expires leaves the active set.
    let soon = vec!["198.51.100.93".to_string()];
    store
        .insert_blocks(
            &soon,
            "fp",
            "manual",
            now(),
            Some(now() + Duration::milliseconds(1500)),
            "n1",
        )
        .await
        .unwrap();
    moved("a new row", fp().await, &mut last);
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    moved("an expiry passing", fp().await, &mut last);
}

/// Retention deletes events and lifted blocks past their age, in batches,
/// and the oldest events beyond the cap; never an active block, however
/// old, nor a block expired but not yet recorded as lifted.
pub async fn retention_deletes_only_what_has_ended(store: &Store) {
    use sip_xdp::db::retention::{prune_all, prune_batch, Settings, BATCH};
    let t = now();
    let day = Duration::days(1);
    let event = |at: NaiveDateTime| Event {
        event_type: "retention_probe".into(),
        source_ip: Some("198.51.100.1".into()),
        severity: "info".into(),
        details: json!({}),
        event_time: at,
        node: None,
    };
    let old: Vec<Event> = (0..BATCH + 500).map(|_| event(t - day * 100)).collect();
    store.insert_events(&old).await.unwrap();
    store
        .insert_events(&[event(t - day), event(t)])
        .await
        .unwrap();
    let block = |ip: &'static str, at: NaiveDateTime, exp: Option<NaiveDateTime>| async move {
        store
            .insert_block(ip, "r", "manual", at, exp, None)
            .await
            .unwrap()
    };
    block("100.64.9.1", t - day * 400, None).await; // active for ever
    let lifted_long_ago = block("100.64.9.2", t - day * 60, None).await;
    let lifted_lately = block("100.64.9.3", t - day * 3, None).await;
    block("100.64.9.4", t - day * 60, Some(t - day * 50)).await; // expired, unrecorded
    store
        .mark_lifted(lifted_long_ago, t - day * 40)
        .await
        .unwrap();
    store.mark_lifted(lifted_lately, t - day).await.unwrap();
    let probes = "SELECT COUNT(*) FROM security_events WHERE event_type = 'retention_probe'";
    let s = Settings::default();
    let first = prune_batch(store, &s, t).await.unwrap();
    assert_eq!(
        (first.events, first.lifted_blocks, first.more),
        (BATCH as u64, 1, true)
    );
    let rest = prune_all(store, &s, t).await.unwrap();
    assert_eq!((rest.events, rest.lifted_blocks), (500, 0));
    assert_eq!(store.count_literal(probes).await.unwrap(), 2);
    let left: Vec<String> = store
        .count_literal("SELECT COUNT(*) FROM blocked_ips WHERE ip_address IN ('100.64.9.1', '100.64.9.3', '100.64.9.4')")
        .await
        .map(|n| vec![n.to_string()])
        .unwrap();
    assert_eq!(left, ["3"]);
    assert!(store.blocks_of("100.64.9.2").await.unwrap().is_empty());
    // The cap: the newest `max_events` stay.
    let capped = Settings {
        events: None,
        lifted_blocks: None,
        max_events: 1,
        max_lifted_blocks: 0,
    };
    let before = store
        .count_literal("SELECT COUNT(*) FROM security_events")
        .await
        .unwrap();
    let p = prune_all(store, &capped, t).await.unwrap();
    assert_eq!(p.events as i64, before - 1);
    let kept = store
        .events(t - Duration::minutes(1), None, 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].event_time, t, "the newest is the one kept");
    // The lifted blocks' cap counts lifted rows only: the newest lifted
    // stays, and the active and unrecorded ones are untouched.
    let later = block("100.64.9.5", t - day, None).await;
    store.mark_lifted(later, t).await.unwrap();
    let capped = Settings {
        events: None,
        lifted_blocks: None,
        max_events: 0,
        max_lifted_blocks: 1,
    };
    let p = prune_all(store, &capped, t).await.unwrap();
    assert!(p.lifted_blocks >= 1);
    let lifted = "SELECT COUNT(*) FROM blocked_ips WHERE unblocked_at IS NOT NULL";
    assert_eq!(store.count_literal(lifted).await.unwrap(), 1);
    assert!(store.blocks_of("100.64.9.3").await.unwrap().is_empty());
    assert_eq!(store.blocks_of("100.64.9.5").await.unwrap().len(), 1);
    assert_eq!(store.blocks_of("100.64.9.1").await.unwrap().len(), 1);
    assert_eq!(store.blocks_of("100.64.9.4").await.unwrap().len(), 1);
}

/// One test per check, on a fresh store made by `$fresh`.
pub async fn remembered_clients_keep_the_latest_proof_and_age_out(store: &Store) {
    use sip_xdp::db::store::Proven;
    let t0 = now();
    let proof = |ip: &str, how: &str, hours: i64| Proven {
        ip: ip.parse().unwrap(),
        how: how.into(),
        at: t0 - Duration::hours(hours),
    };
    store
        .remember_clients(
            &[
                proof("203.0.113.60", "registered", 30),
                proof("2001:db8:5::9", "peer", 200),
            ],
            "n1",
        )
        .await
        .unwrap();
    // Another node's later proof wins; an older one written after it (a
    // round run again, a node whose queue drained late) changes nothing.
    store
        .remember_clients(&[proof("203.0.113.60", "invited", 2)], "n2")
        .await
        .unwrap();
    store
        .remember_clients(&[proof("203.0.113.60", "peer", 10)], "n3")
        .await
        .unwrap();
    let mut seen = store
        .remembered_since(t0 - Duration::days(7), 1000)
        .await
        .unwrap();
    seen.sort_by_key(|p| p.ip);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].how, "invited");
    assert!(
        (seen[0].at - (t0 - Duration::hours(2))).num_seconds().abs() <= 1,
        "{seen:?}: the time on our clock"
    );
    assert_eq!(
        store
            .remembered_since(t0 - Duration::days(30), 1000)
            .await
            .unwrap()
            .len(),
        2
    );
    // Proofs older than the memory go.
    assert_eq!(
        store
            .forget_clients_before(t0 - Duration::days(7), t0 + Duration::days(1), 1000)
            .await
            .unwrap(),
        1
    );
    let left = store
        .remembered_since(t0 - Duration::days(30), 1000)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].ip.to_string(), "203.0.113.60");
    // A row someone wrote by hand that is no address costs itself, not
    // the read; the newest come first, to the limit.
    store
        .execute_literal(
            "INSERT INTO remembered_clients (ip_address, how, first_proven_at, last_proven_at) \
             VALUES ('not-an-address', 'peer', '2026-01-01 00:00:00', '2099-01-01 00:00:00')",
        )
        .await
        .unwrap();
    store
        .remember_clients(&[proof("198.51.100.4", "peer", 1)], "n1")
        .await
        .unwrap();
    let read = store
        .remembered_since(t0 - Duration::days(30), 1000)
        .await
        .unwrap();
    assert_eq!(read.len(), 2, "{read:?}");
    let newest = store
        .remembered_since(t0 - Duration::days(30), 2)
        .await
        .unwrap();
    assert_eq!(newest.len(), 1, "the bad row took its place: {newest:?}");
    assert_eq!(newest[0].ip.to_string(), "198.51.100.4");
    // A row dated in the future is aged out at once.
    store
        .forget_clients_before(t0 - Duration::days(30), t0 + Duration::days(1), 1000)
        .await
        .unwrap();
    let newest = store
        .remembered_since(t0 - Duration::days(30), 2)
        .await
        .unwrap();
    assert_eq!(newest.len(), 2, "{newest:?}");
}

#[macro_export]
macro_rules! store_tests {
    ($fresh:expr) => {
        store_tests!($fresh; minimal_insert_is_a_permanent_block_on_our_clock, expired_rows_are_listed_until_lifted_once, a_hand_written_expiry_with_a_t_compares_as_a_time, lifts_agree_with_the_sip_servers_own_query, cidrs_round_trip_and_a_bad_row_names_its_id, allow_list_rows_are_written_read_and_deleted, events_are_filtered_by_time_and_type, a_row_that_does_not_decode_costs_itself, report_and_views, the_lists_fingerprint_moves_with_every_change, retention_deletes_only_what_has_ended, remembered_clients_keep_the_latest_proof_and_age_out);
    };
    ($fresh:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "current_thread")]
            async fn $check() {
                let (store, _keep) = $fresh.await;
                checks::$check(&store).await;
            }
        )*
    };
}
