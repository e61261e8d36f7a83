//! Country policy on a real GeoLite2-format database (ip-location-db's, in
//! the npm registry; `cargo xtask test` fetches it and passes its path in
//! SIP_XDP_GEO_DB). Needs root.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use sip_xdp::feed::geo::Db;
use sip_xdp_tests::{
    cli::{eventually, Cli},
    lab::Lab,
};

fn database() -> PathBuf {
    PathBuf::from(std::env::var("SIP_XDP_GEO_DB").expect(
        "SIP_XDP_GEO_DB: run the tests with `cargo xtask test`, which fetches the country database",
    ))
}

fn set(c: &[&str]) -> BTreeSet<String> {
    c.iter().map(|s| s.to_string()).collect()
}

const PRIVATE: &[&str] = &[
    "10.1.2.3",
    "192.168.1.1",
    "172.16.0.1",
    "100.64.0.1",
    "127.0.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "2001:db8::1",
    "fe80::1",
    "fd00::1",
];

/// Events about a source name its country (the controller's event buffer
/// with the configured database); a source without one is left as it is.
#[test]
fn events_name_the_country_of_their_source() {
    let mut events = sip_xdp::db::journal::Journal::new(10, None);
    let db = Db::open(&database()).unwrap();
    events.set_geo(Some(Box::new(move |ip| db.country(ip))));
    let details = || serde_json::json!({"reason": "flood"});
    events.record("ip_blocked", Some("8.8.8.8".into()), "warning", details());
    events.record(
        "flood_detected",
        Some("8.8.4.0/24".into()),
        "warning",
        details(),
    );
    events.record(
        "ip_blocked",
        Some("198.51.100.7".into()),
        "warning",
        details(),
    );
    events.record("db_reachable", None, "info", details());
    let got = events.snapshot().0.events;
    let countries: Vec<_> = got
        .iter()
        .map(|e| e.details.get("country").cloned())
        .collect();
    assert_eq!(
        countries,
        [
            Some(serde_json::json!("US")),
            Some(serde_json::json!("US")),
            None,
            None
        ]
    );
    assert!(got.iter().all(|e| e.details["reason"] == "flood"));
}

#[test]
fn country_prefixes_are_real_and_never_private() {
    let db = Db::open(&database()).unwrap();
    assert_eq!(
        db.country("8.8.8.8".parse().unwrap()).as_deref(),
        Some("US")
    );
    // Iceland: its prefixes, each one Iceland's, none private.
    let t = std::time::Instant::now();
    let is = db.policy(&set(&["IS"]), false).unwrap();
    eprintln!("IS: {} prefixes in {:?}", is.len(), t.elapsed());
    assert!(is.len() > 50 && is.len() < 10_000, "{}", is.len());
    for n in &is {
        assert_eq!(db.country(n.network()).as_deref(), Some("IS"), "{n}");
    }
    // allow_only: every public prefix outside Germany, nothing private.
    let t = std::time::Instant::now();
    let not_de = db.policy(&set(&["DE"]), true).unwrap();
    eprintln!(
        "allow_only DE: {} prefixes in {:?}",
        not_de.len(),
        t.elapsed()
    );
    let covered = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        not_de.iter().any(|n: &IpNet| n.contains(&ip))
    };
    assert!(covered("8.8.8.8"), "a US address is outside Germany");
    let de = db.policy(&set(&["DE"]), false).unwrap();
    for n in de.iter().step_by(97) {
        assert!(!covered(&n.network().to_string()), "{n} is German");
    }
    for ip in PRIVATE {
        assert!(
            !covered(ip),
            "{ip} has no country and must never be blocked"
        );
        assert!(!is
            .iter()
            .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap())));
    }
}

#[test]
fn a_blocked_country_lands_in_the_kernel_block_list() {
    let lab = Lab::two_clients("geo");
    let cli = Cli::new(&lab.server);
    let expected = Db::open(&database())
        .unwrap()
        .policy(&set(&["IS"]), false)
        .unwrap();
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n[geo]\ndatabase = \"{}\"\nblock = [\"IS\"]\n",
        database().display()
    ));
    let mut daemon = cli.start_controller(&["s1"], "sbc-geo", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    let kernel = || -> Vec<String> {
        cli.json(&["list", "blocked", "--kernel", "--json"])
            .as_array()
            .unwrap()
            .iter()
            // Single addresses are exact bans, prefixes block-list rules.
            .map(|r| r["net"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || kernel().len() == expected.len()),
        "{} of {} prefixes in the kernel\n{}",
        kernel().len(),
        expected.len(),
        daemon.log_text()
    );
    let k = kernel();
    for n in expected.iter().step_by(13) {
        let host = n.prefix_len() == n.max_prefix_len();
        let shown = if host {
            format!("{}/{}", n.addr(), n.max_prefix_len())
        } else {
            n.to_string()
        };
        assert!(k.contains(&shown), "{n} not in the kernel");
    }
    let rows = cli.json(&["list", "blocked", "--json"]);
    let geo_rows = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "geo")
        .count();
    assert_eq!(geo_rows, expected.len());
    assert!(daemon.stop().success());
}
