//! Threat feeds through the real controller: a blocklist file and a
//! Spamhaus-DROP URL (a server this test runs, with ETags, a 500 and an
//! emptied list) become rows, bans and lifts by difference; APIBAN's pages
//! (a server speaking its documented format: pages, "no new bans", a bad
//! key, a 5xx, a hang) become expiring rows, and the last ID survives a
//! restart. Needs root.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use sip_xdp_tests::{
    cli::{eventually, Cli},
    crowdsec::Lapi,
    frames::OPTIONS,
    http::{Response, Server},
    lab::{send_sip, Lab, SipListener},
};

const N: usize = 20;

fn delivered(lab: &Lab, l: &SipListener, i: usize) -> usize {
    send_sip(
        &lab.clients[i],
        SocketAddr::new(lab.links[i].server_v4, 5060),
        OPTIONS,
        N,
    );
    let got = l.drain(Duration::from_millis(300), Duration::from_secs(5));
    got.get(&lab.links[i].client_v4).copied().unwrap_or(0)
}

/// Active rows of `source`, as (address, expires_at).
fn rows(cli: &Cli, source: &str) -> Vec<(String, serde_json::Value)> {
    cli.json(&["list", "blocked", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == source)
        .map(|r| {
            (
                r["ip_address"].as_str().unwrap().to_string(),
                r["expires_at"].clone(),
            )
        })
        .collect()
}

fn has(cli: &Cli, source: &str, ip: &str) -> bool {
    rows(cli, source).iter().any(|(a, _)| a == ip)
}

#[test]
fn blocklists_become_rows_and_bans_by_difference() {
    let lab = Lab::two_clients("fd");
    let cli = Cli::new(&lab.server);
    let (c0, c1) = (
        lab.links[0].client_v4.to_string(),
        lab.links[1].client_v4.to_string(),
    );
    // A list longer than its max_entries is refused as a whole.
    let big = cli.dir.join("big.txt");
    std::fs::write(&big, "198.51.100.201\n198.51.100.202\n198.51.100.203\n").unwrap();
    let list = cli.dir.join("blocklist.txt");
    std::fs::write(
        &list,
        format!("# local list\n{c0}\n198.51.100.128/25 ; a range\nnot-an-address\n127.0.0.1\n"),
    )
    .unwrap();
    // 0: the list with ETag v1 (304 when asked with it); 1: HTTP 500; 2:
    // empty list; 3: a sign-in page served with 200 (a captive portal).
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let drop_body = format!("; Spamhaus DROP List\n{c1}/32 ; SBL000001\n");
    let portal =
        "<html>\n<head><title>Sign in</title></head>\n<body>Please sign in</body>\n</html>\n";
    let site = Server::start(
        &lab.server,
        Duration::from_secs(120),
        Box::new(move |req| match m.load(Ordering::SeqCst) {
            0 if req.header("if-none-match") == Some("\"v1\"") => Response::new(304, ""),
            0 => Response::new(200, drop_body.clone()).header("ETag", "\"v1\""),
            1 => Response::new(500, "oops"),
            3 => Response::new(200, portal).header("ETag", "\"portal\""),
            _ => Response::new(200, "; empty now\n").header("ETag", "\"v2\""),
        }),
    );
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n\
         [feeds.local]\nfile = \"{}\"\nrefresh = \"1s\"\n\
         [feeds.drop]\nurl = \"{}\"\nformat = \"spamhaus-drop\"\nrefresh = \"1s\"\n\
         [feeds.big]\nfile = \"{}\"\nmax_entries = 2\nrefresh = \"1s\"\n",
        list.display(),
        site.url("/drop.txt"),
        big.display()
    ));
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-fd", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    let listener = SipListener::start(&lab.server, 5060);

    assert!(
        eventually(Duration::from_secs(15), || has(&cli, "feed:local", &c0)
            && has(&cli, "feed:drop", &c1)),
        "feeds not written:\n{}",
        daemon.log_text()
    );
    let local = rows(&cli, "feed:local");
    assert_eq!(local.len(), 2, "{local:?}");
    assert!(local.iter().any(|(a, _)| a == "198.51.100.128/25"));
    assert!(
        !local.iter().any(|(a, _)| a.starts_with("127.")),
        "loopback must never be blocked"
    );
    assert!(
        local.iter().all(|(_, e)| e.is_null()),
        "lists do not expire: {local:?}"
    );
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 0
    ) == 0));
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 1
    ) == 0));
    let events = cli.json(&["events", "--type", "feed_updated", "--json"]);
    let local_added = events.as_array().unwrap().iter().any(|e| {
        let d: serde_json::Value = serde_json::from_str(e["details"].as_str().unwrap()).unwrap();
        d["feed"] == "local" && d["added"] == 2 && d["source"] == "feed:local"
    });
    assert!(local_added, "{events}");
    // Refreshes of an unchanged URL ask with the ETag and get a 304.
    assert!(eventually(Duration::from_secs(5), || site
        .requests()
        .iter()
        .any(
            |(r, s)| *s == 304 && r.header("if-none-match") == Some("\"v1\"")
        )));

    // Refreshes with nothing new write nothing: no row, no event, no
    // kernel change (the file is re-read every second meanwhile).
    let count = |what: &str| daemon.log_text().matches(what).count();
    let state = || {
        (
            cli.json(&["events", "--type", "feed_updated", "--json"])
                .as_array()
                .unwrap()
                .len(),
            count("block installed"),
            count("feed rows written"),
            rows(&cli, "feed:local").len() + rows(&cli, "feed:drop").len(),
        )
    };
    let (before, reads) = (state(), count("feed refreshed feed=local"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        before,
        state(),
        "(events, kernel installs, row writes, rows)"
    );
    assert!(
        count("feed refreshed feed=local") >= reads + 2,
        "the file was not re-read"
    );
    // Read, and known for the same text: no comparison of its entries with
    // the kernel and the database at every refresh.
    assert!(
        count("feed refreshed feed=local unchanged=true") >= 2,
        "the same file was taken as a new list"
    );

    let st = cli.ok(&["status"]);
    assert!(
        st.contains("feed big: FAILING (3 entries, more than max_entries = 2"),
        "{st}"
    );
    assert!(rows(&cli, "feed:big").is_empty());
    assert!(daemon
        .log_text()
        .contains("feed refresh failed: its last good list stays"));

    // The file drops client 0: its row is lifted, it gets through again.
    std::fs::write(&list, "198.51.100.128/25\n").unwrap();
    assert!(eventually(Duration::from_secs(10), || !has(
        &cli,
        "feed:local",
        &c0
    )));
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 0
    ) == N));

    // The site fails: the last good list stays, and status says so.
    mode.store(1, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || cli
            .ok(&["status"])
            .contains("feed drop: FAILING (HTTP 500")),
        "{}",
        cli.ok(&["status"])
    );
    assert!(has(&cli, "feed:drop", &c1));
    assert_eq!(delivered(&lab, &listener, 1), 0);
    let doctor = String::from_utf8_lossy(&cli.run(&["doctor"]).stdout).to_string();
    assert!(
        doctor.contains("WARN feed drop: failing: HTTP 500"),
        "{doctor}"
    );

    // A page that is not a list is refused, not taken as an empty list.
    let failing = |why: &str| {
        eventually(Duration::from_secs(10), || {
            cli.ok(&["status"])
                .lines()
                .any(|l| l.contains("feed drop: FAILING") && l.contains(why))
        })
    };
    mode.store(3, Ordering::SeqCst);
    assert!(
        failing("malformed answer: 4 of 4 lines are not addresses"),
        "{}",
        cli.ok(&["status"])
    );
    assert!(has(&cli, "feed:drop", &c1));
    assert_eq!(delivered(&lab, &listener, 1), 0);

    // The list is emptied: the row goes.
    mode.store(2, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || !has(
        &cli,
        "feed:drop",
        &c1
    )));
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 1
    ) == N));

    // Listed again, then the site goes down: the last good list stays.
    mode.store(0, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || has(
        &cli,
        "feed:drop",
        &c1
    )));
    site.stop();
    assert!(failing("Connection refused"), "{}", cli.ok(&["status"]));
    assert!(has(&cli, "feed:drop", &c1));
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 1
    ) == 0));

    // The local file disappears: its last good list stays too.
    std::fs::remove_file(&list).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || cli
            .ok(&["status"])
            .contains("feed local: FAILING (reading")),
        "{}",
        cli.ok(&["status"])
    );
    assert!(has(&cli, "feed:local", "198.51.100.128/25"));
    assert!(daemon
        .log_text()
        .contains("feed refresh failed: its last good list stays"));
    assert!(daemon.stop().success());
}

#[test]
fn apiban_pages_become_expiring_rows_and_the_last_id_is_kept() {
    let lab = Lab::two_clients("ab");
    let cli = Cli::new(&lab.server);
    let c0 = lab.links[0].client_v4.to_string();
    let c1v6 = lab.links[1].client_v6.to_string();
    // 0: APIBAN's documented answers; 1: every request unauthorized (a bad
    // key); 2: 503; 3: a hang longer than the timeout; 4: a malformed
    // answer.
    let mode = Arc::new(AtomicU8::new(0));
    let m = mode.clone();
    let (a, b) = (c0.clone(), c1v6.clone());
    let api = Server::start(
        &lab.server,
        Duration::from_secs(120),
        Box::new(
            move |req| match (m.load(Ordering::SeqCst), req.path.as_str()) {
                (0, "/api/KEY/banned/100") => {
                    Response::new(200, format!("{{\"ipaddress\":[\"{a}\"],\"ID\":\"200\"}}"))
                }
                (0, "/api/KEY/banned/200") => Response::new(
                    200,
                    format!("{{\"ipaddress\":[\"{b}\",\"bogus\"],\"ID\":\"300\"}}"),
                ),
                (0, _) => Response::new(400, "{\"ipaddress\":[\"no new bans\"],\"ID\":\"none\"}"),
                (1, _) => Response::new(
                    403,
                    "{\"ipaddress\":[\"unauthorized\"],\"ID\":\"unauthorized\"}",
                ),
                (2, _) => Response::new(503, "busy"),
                (4, _) => Response::new(200, "<html>maintenance</html>"),
                _ => {
                    let mut r = Response::new(200, "{}");
                    r.delay = Duration::from_secs(4);
                    r
                }
            },
        ),
    );
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\nstate_dir = \"{}\"\n\
         [feeds.apiban]\nkey = \"KEY\"\nurl = \"{}\"\nrefresh = \"3s\"\nexpire = \"1h\"\ntimeout = \"2s\"\n",
        cli.dir.join("state").display(),
        api.url("/api")
    ));
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-ab", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    assert!(
        eventually(Duration::from_secs(15), || has(&cli, "apiban", &c0)
            && has(&cli, "apiban", &c1v6)),
        "APIBAN rows not written:\n{}",
        daemon.log_text()
    );
    let now = chrono::Utc::now().naive_utc();
    for (ip, exp) in rows(&cli, "apiban") {
        let exp =
            chrono::NaiveDateTime::parse_from_str(exp.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f")
                .unwrap();
        let left = (exp - now).num_seconds();
        assert!((3500..=3600).contains(&left), "{ip} expires in {left} s");
    }
    let id_file = cli.dir.join("state").join("apiban.id");
    assert_eq!(std::fs::read_to_string(&id_file).unwrap(), "300");
    // Each page is written as it comes; the walk goes on a second later,
    // one request per second, until "no new bans".
    assert!(eventually(Duration::from_secs(5), || api.requests().len() >= 3));
    let reqs = api.requests();
    let paths: Vec<&str> = reqs.iter().map(|(r, _)| r.path.as_str()).collect();
    assert_eq!(
        &paths[..3],
        [
            "/api/KEY/banned/100",
            "/api/KEY/banned/200",
            "/api/KEY/banned/300"
        ]
    );
    // The next refreshes start where the last one ended.
    assert!(eventually(Duration::from_secs(8), || api.requests().len() >= 4));
    assert!(api.requests()[3..]
        .iter()
        .all(|(r, _)| r.path == "/api/KEY/banned/300"));

    // A restart resumes from the stored ID.
    assert!(daemon.stop().success());
    let before = api.requests().len();
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-ab", "500ms");
    assert!(eventually(Duration::from_secs(10), || api.requests().len() > before));
    assert_eq!(api.requests()[before].0.path, "/api/KEY/banned/300");

    // A bad key, a 5xx, a hang: each is a failing feed, the rows stay.
    for (m, why) in [
        (1, "unauthorized"),
        (2, "HTTP 503"),
        (3, "timed out"),
        (4, "malformed answer"),
    ] {
        mode.store(m, Ordering::SeqCst);
        assert!(
            eventually(Duration::from_secs(15), || {
                let st = cli.ok(&["status"]);
                st.contains("feed apiban: FAILING") && st.contains(why)
            }),
            "{why}: {}",
            cli.ok(&["status"])
        );
        assert!(has(&cli, "apiban", &c0));
    }
    assert!(daemon.stop().success());
}

#[test]
fn crowdsec_decisions_become_rows_and_deleted_ones_are_lifted() {
    let lab = Lab::two_clients("cs");
    let cli = Cli::new(&lab.server);
    let c0 = lab.links[0].client_v4.to_string();
    let mut lapi = Lapi::start(&lab.server);
    let key = lapi.key();
    lapi.add(&["--ip", &c0, "--duration", "1h", "--reason", "sip-xdp test"]);
    lapi.add(&["--range", "198.51.100.64/26", "--duration", "2h"]);
    // Not a ban, and a range over the server's own address: neither is written.
    lapi.add(&[
        "--ip",
        "198.51.100.33",
        "--type",
        "captcha",
        "--duration",
        "1h",
    ]);
    lapi.add(&["--range", "203.0.113.0/30", "--duration", "1h"]);
    cli.add_config(&format!(
        "detect = {{ enabled = false }}\n[feeds.crowdsec]\nkey = \"{key}\"\nurl = \"http://127.0.0.1:8080\"\nrefresh = \"1s\"\n"
    ));
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-cs", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    let listener = SipListener::start(&lab.server, 5060);
    assert!(
        eventually(Duration::from_secs(15), || has(&cli, "crowdsec", &c0)
            && has(&cli, "crowdsec", "198.51.100.64/26")),
        "no CrowdSec rows: {:?}\n{}",
        rows(&cli, "crowdsec"),
        daemon.log_text()
    );
    let now = chrono::Utc::now().naive_utc();
    for (ip, exp) in rows(&cli, "crowdsec") {
        assert!(
            ip != "198.51.100.33" && ip != "203.0.113.0/30",
            "{ip} written"
        );
        if ip == c0 || ip == "198.51.100.64/26" {
            let exp = chrono::NaiveDateTime::parse_from_str(
                exp.as_str().unwrap(),
                "%Y-%m-%dT%H:%M:%S%.f",
            )
            .unwrap();
            let want = if ip == c0 { 3600 } else { 7200 };
            let left = (exp - now).num_seconds();
            assert!(
                (want - 120..=want).contains(&left),
                "{ip} expires in {left} s, not {want}"
            );
        }
    }
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 0
    ) == 0));

    // A deleted decision is lifted, and the client passes again.
    lapi.cscli(&["decisions", "delete", "--ip", &c0]);
    assert!(eventually(Duration::from_secs(10), || !has(
        &cli, "crowdsec", &c0
    )));
    assert!(eventually(Duration::from_secs(5), || delivered(
        &lab, &listener, 0
    ) == N));
    assert!(has(&cli, "crowdsec", "198.51.100.64/26"));

    // The bouncer's key is revoked, then the Local API goes away: each is
    // a failing feed, and the range stays blocked through both.
    lapi.cscli(&["bouncers", "delete", &lapi.bouncer]);
    let failing = |why: &str| {
        eventually(Duration::from_secs(10), || {
            cli.ok(&["status"])
                .lines()
                .any(|l| l.contains("feed crowdsec: FAILING") && l.contains(why))
        })
    };
    assert!(
        failing("the Local API refused the key"),
        "{}",
        cli.ok(&["status"])
    );
    assert!(has(&cli, "crowdsec", "198.51.100.64/26"));
    lapi.stop();
    assert!(failing("Connection refused"), "{}", cli.ok(&["status"]));
    assert!(has(&cli, "crowdsec", "198.51.100.64/26"));
    let kernel = cli.ok(&["list", "blocked", "--kernel", "--json"]);
    assert!(kernel.contains("198.51.100.64/26"), "{kernel}");
    assert!(daemon.stop().success());
}
