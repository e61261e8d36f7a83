//! Alerts from the real controller: two clients flood within one window;
//! the webhook (an HTTP receiver this test runs inside the server's
//! namespace, answering 500 the first time) gets exactly one message with
//! the counts, after one retry, and the command gets the same JSON on
//! stdin. The metrics count what was sent. Needs root.

use std::{net::SocketAddr, time::Duration};

use sip_xdp_tests::{
    cli::{eventually, Cli},
    frames::OPTIONS,
    http::{Response, Server},
    lab::{send_sip, Lab},
};

const METRICS: &str = "127.0.0.1:19479";

fn scrape(lab: &Lab) -> String {
    sip_xdp_tests::http::scrape(&lab.server, METRICS)
}

#[test]
fn an_attack_is_one_alert_per_window_delivered_despite_a_failure() {
    let lab = Lab::two_clients("al");
    let cli = Cli::new(&lab.server);
    // The webhook: answers 500 to the first POST, 200 after.
    let first = std::sync::atomic::AtomicBool::new(true);
    let hook = Server::start(
        &lab.server,
        Duration::from_secs(60),
        Box::new(move |_| {
            let status = if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                500
            } else {
                200
            };
            Response::new(status, "")
        }),
    );
    let port = hook.addr.port();
    let out_file = std::env::temp_dir().join(format!("sip-xdp-alert-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out_file);
    // An (empty) feed, so that every metric the dashboard shows exists.
    let feed_file = cli.dir.join("feed.txt");
    std::fs::write(&feed_file, "# nothing\n").unwrap();
    cli.add_config(&format!(
        "metrics = \"{METRICS}\"\n[detect]\ninterval = \"500ms\"\n[detect.flood]\nlimit = 20\n\
         [alerts]\nwebhooks = [\"http://127.0.0.1:{port}/hook?token=secret\"]\n\
         command = [\"/bin/sh\", \"-c\", \"cat >> {}; echo >> {}\"]\n\
         window = \"3s\"\nretries = 2\n\
         [feeds.local]\nfile = \"{}\"\nrefresh = \"1s\"\n",
        out_file.display(),
        out_file.display(),
        feed_file.display()
    ));
    let mut daemon = cli.start_controller(&["s1", "s2"], "sbc-al", "500ms");
    daemon.wait_log("alerts on", Duration::from_secs(20));
    daemon.wait_log("database connected", Duration::from_secs(20));

    // Both clients flood (100 packets in about 20 ms each, limit 20 a unit).
    for i in 0..2 {
        send_sip(
            &lab.clients[i],
            SocketAddr::new(lab.links[i].server_v4, 5060),
            OPTIONS,
            100,
        );
    }
    assert!(
        eventually(Duration::from_secs(15), || hook
            .requests()
            .iter()
            .any(|(_, s)| *s == 200)),
        "no alert delivered: {:?}\n{}",
        hook.requests(),
        daemon.log_text()
    );
    // Nothing else arrives for the rest of the window and the next one.
    std::thread::sleep(Duration::from_secs(4));
    let got: Vec<(u16, String)> = hook
        .requests()
        .into_iter()
        .map(|(r, s)| (s, r.body))
        .collect();
    assert_eq!(
        got.len(),
        2,
        "one message, sent twice (500, then 200): {got:?}"
    );
    assert_eq!(got[0].1, got[1].1, "the retry carries the same message");
    let msg: serde_json::Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!(msg["node"], "sbc-al");
    assert_eq!(msg["counts"]["flood_detected"], 2, "{msg}");
    // Their ip_blocked events are info: below the default minimum.
    assert_eq!(msg["counts"].as_object().unwrap().len(), 1, "{msg}");
    let text = msg["text"].as_str().unwrap();
    for i in 0..2 {
        assert!(text.contains(&lab.links[i].client_v4.to_string()), "{text}");
    }
    assert!(
        text.starts_with(
            "sip-xdp on sbc-al [warning]: 2 event(s) in 3s: 2 flood_detected; sources: "
        ),
        "{text}"
    );

    let lines = std::fs::read_to_string(&out_file).unwrap_or_default();
    let lines: Vec<&str> = lines.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let by_command: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(by_command, msg);

    assert!(
        eventually(Duration::from_secs(5), || {
            let m = scrape(&lab);
            m.contains("sipxdp_alerts_total{outcome=\"sent\"} 2")
        }),
        "{}",
        scrape(&lab)
    );
    // The live endpoint serves every metric the Grafana dashboard queries.
    let live = scrape(&lab);
    let dash: serde_json::Value =
        serde_json::from_str(include_str!("../../dist/grafana/sip-xdp.json")).unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("sipxdp_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = name.strip_suffix("_total").unwrap_or(&name);
                assert!(
                    live.contains(&format!("# TYPE {base} ")),
                    "{:?} queries {name}, which /metrics does not serve",
                    p["title"]
                );
            }
        }
    }
    let log = daemon.log_text();
    assert!(
        !log.contains("token=secret"),
        "the webhook's token was logged"
    );
    let _ = std::fs::remove_file(&out_file);
    assert!(daemon.stop().success());
}
