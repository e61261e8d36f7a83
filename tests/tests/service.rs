//! The systemd service: the unit file passes `systemd-analyze verify`, and
//! the controller speaks the notify protocol to a `NOTIFY_SOCKET` this test
//! owns (these machines do not run systemd as PID 1): READY once attached
//! and synced, STATUS lines, WATCHDOG pings at the period asked for,
//! RELOADING then READY on SIGHUP, STOPPING on SIGTERM. Needs root.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use sip_xdp_tests::{cli::Cli, lab::Lab};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dist/systemd/sip-xdp.service"
);

#[test]
fn the_unit_file_verifies() {
    let text = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "ExecStart=/usr/sbin/sip-xdp ",
    ] {
        assert!(text.contains(line), "no {line:?} in the unit");
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let bin = sip_xdp_tests::cli::bin();
    let dir = std::env::temp_dir().join(format!("sip-xdp-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("sip-xdp.service");
    std::fs::write(
        &unit,
        text.replace("/usr/sbin/sip-xdp", &bin.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Collects notify messages until `until` holds for what was received, or
/// the time runs out.
fn collect(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    within: Duration,
    until: impl Fn(&[String]) -> bool,
) {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !until(got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
        }
    }
}

#[test]
fn the_controller_speaks_the_notify_protocol() {
    let lab = Lab::two_clients("n");
    let cli = Cli::new(&lab.server);
    let dir = std::env::temp_dir().join(format!("sip-xdp-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut daemon = cli.start_controller_env(
        &["s1"],
        "node-n",
        "500ms",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "900000"),
        ],
    );
    let mut got = Vec::new();
    let has = |g: &[String], s: &str| g.iter().any(|m| m.lines().any(|l| l == s));
    collect(&sock, &mut got, Duration::from_secs(20), |g| {
        has(g, "READY=1")
    });
    assert!(
        has(&got, "READY=1"),
        "no READY=1: {got:?}\n{}",
        daemon.log_text()
    );
    assert!(
        lab.server.xdp_attached("s1"),
        "READY before the filter was attached"
    );
    let ready = got.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=filtering on s1") && ready.contains("database reachable"),
        "{ready}"
    );

    // Three pings per 0.9 s watchdog period: at least 4 in 1.5 s.
    let start = got.len();
    collect(&sock, &mut got, Duration::from_millis(1500), |_| false);
    let pings = got[start..]
        .iter()
        .filter(|m| m.as_str() == "WATCHDOG=1")
        .count();
    assert!(pings >= 4, "{pings} pings in 1.5 s: {:?}", &got[start..]);

    let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let start = got.len();
    collect(&sock, &mut got, Duration::from_secs(5), |g| {
        g[start..].iter().any(|m| m.contains("READY=1"))
    });
    let after: Vec<&String> = got[start..]
        .iter()
        .filter(|m| m.as_str() != "WATCHDOG=1")
        .collect();
    assert!(
        after.len() >= 2 && after[0].contains("RELOADING=1") && after[1].contains("READY=1"),
        "{after:?}"
    );

    let status = daemon.stop();
    assert!(status.success());
    collect(&sock, &mut got, Duration::from_millis(300), |_| false);
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `doctor` on a working node says so, line by line; an interface another
/// XDP program holds and a database that refuses the password are failures
/// with their fix, and a non-zero exit.
#[test]
fn doctor_names_what_must_be_fixed() {
    let sbc = sip_xdp_tests::sbc::Sbc::mariadb("d");
    let (lab, db, cli) = (&sbc.lab, &sbc.db, &sbc.cli);
    let mut daemon = cli.start_controller(&["s1"], "node-d", "500ms");
    daemon.wait_log("database connected", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    let out = cli.ok(&["doctor"]);
    for line in [
        "ok   privileges: root",
        "ok   kernel version: ",
        "ok   program: loaded (id ",
        "ok   interface s1 driver: veth: native XDP",
        "ok   interface s1 XDP: sip-xdp attached in native mode",
        "ok   database: mysql://sipxdp:***@localhost/",
        "ok   database schema: migration ",
        "ok   database grants: ",
        "ok   database clock: ",
        "ok   controller: running and syncing with the database",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "no {line:?} in:\n{out}"
        );
    }
    assert!(
        !out.contains("sipxdp-test"),
        "the password was printed:\n{out}"
    );
    let json = cli.json(&["doctor", "--json"]);
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|c| c["level"] != "fail"),
        "{json}"
    );

    // Another program on s2, and a wrong password.
    let other = Cli::new(&lab.server);
    other.ok(&["attach", "--iface", "s2", "--mode", "native"]);
    cli.add_config("interfaces = [\"s1\", \"s2\"]");
    let bad_url = db.url().replace("sipxdp-test", "wrong-password");
    let out = cli.run(&["--db", &bad_url, "doctor"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let fail = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    let s2 = fail("FAIL interface s2 XDP: another XDP program").unwrap_or_else(|| panic!("{text}"));
    assert!(
        s2.contains("fix: remove it (`ip link set dev s2 xdp off`)"),
        "{s2}"
    );
    let dbl = fail("FAIL database: ").unwrap_or_else(|| panic!("{text}"));
    assert!(dbl.contains("fix: check `db`"), "{dbl}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("check(s) failed"));
    assert!(daemon.stop().success());
}
