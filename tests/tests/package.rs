//! The Debian package `cargo xtask deb` builds (`cargo xtask test` passes its
//! path in SIP_XDP_DEB): installed with dpkg, the installed binary runs and
//! finds its configuration, the unit verifies in place, and it is removed
//! (conffile kept) then purged (nothing left); an upgrade over the running
//! service, under a real systemd in a container, restarts it and lets
//! nothing of a banned source through. Needs root.

use std::{path::Path, process::Command, time::Duration};

use sip_xdp_tests::{
    cli::{eventually, Cli},
    lab::{send_sip_for, xdp_prog_id, Lab, SipListener},
    systemd::Systemd,
};

const FILES: &[&str] = &[
    "/usr/sbin/sip-xdp",
    "/lib/systemd/system/sip-xdp.service",
    "/etc/sip-xdp/sip-xdp.toml",
    "/usr/share/man/man8/sip-xdp.8.gz",
    "/usr/share/bash-completion/completions/sip-xdp",
    "/usr/share/zsh/vendor-completions/_sip-xdp",
    "/usr/share/fish/vendor_completions.d/sip-xdp.fish",
    "/usr/share/sip-xdp/sip-xdp.toml.example",
    "/usr/share/sip-xdp/grafana-dashboard.json",
    "/etc/fail2ban/action.d/sip-xdp.conf",
    "/etc/fail2ban/filter.d/opensips-auth.conf",
    "/etc/fail2ban/filter.d/sip-xdp.conf",
];

fn dpkg(args: &[&str]) -> String {
    let out = Command::new("dpkg").args(args).output().expect("dpkg");
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package whatever happens to the test.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "sip-xdp"]).output();
    }
}

#[test]
fn the_package_installs_runs_and_goes_away_cleanly() {
    sip_xdp_tests::require_root();
    let deb = std::env::var("SIP_XDP_DEB")
        .expect("SIP_XDP_DEB: run the tests with `cargo xtask test`, which builds the package");
    let _installed = Installed;
    dpkg(&["-i", &deb]);
    for f in FILES {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "sip-xdp"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/sip-xdp/sip-xdp.toml"));

    // The installed binary, on the installed configuration.
    let version = Command::new("/usr/sbin/sip-xdp")
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("sip-xdp "));
    let check = Command::new("/usr/sbin/sip-xdp")
        .args(["config", "check"])
        .env_remove("SIP_XDP_CONFIG")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "/etc/sip-xdp/sip-xdp.toml: ok",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "/lib/systemd/system/sip-xdp.service"])
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let man = Command::new("sh")
        .args(["-c", "gzip -dc /usr/share/man/man8/sip-xdp.8.gz"])
        .output()
        .unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH sip-xdp 8") && man.contains("doctor"),
        "{man}"
    );

    // An operator's edit survives removal; purge takes everything.
    std::fs::write("/etc/sip-xdp/sip-xdp.toml", "node = \"edited\"\n").unwrap();
    dpkg(&["-r", "sip-xdp"]);
    assert!(!Path::new("/usr/sbin/sip-xdp").exists());
    assert_eq!(
        std::fs::read_to_string("/etc/sip-xdp/sip-xdp.toml").unwrap(),
        "node = \"edited\"\n"
    );
    dpkg(&["-P", "sip-xdp"]);
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} left after purge");
    }
    assert!(!Path::new("/etc/sip-xdp").exists() && !Path::new("/var/lib/sip-xdp").exists());
    let status = Command::new("dpkg")
        .args(["-s", "sip-xdp"])
        .output()
        .unwrap();
    assert!(!status.status.success(), "still known to dpkg after purge");
}

/// An upgrade takes over with no moment unfiltered, under the service
/// manager an SBC runs. In a systemd container on the lab's server
/// namespace, the package is installed, the service enabled and started as
/// the README says, and the package installed again over it as `dpkg -i` of
/// a new version does: its postinst restarts the running service
/// (`try-restart`), the new build's program replaces the one an older build
/// pinned, and a banned client sending all along gets nothing through.
#[test]
fn an_upgrade_under_a_banned_sources_traffic_lets_nothing_through() {
    use aya::maps::{Array, Map, MapData};
    sip_xdp_tests::require_root();
    let deb = std::env::var("SIP_XDP_DEB")
        .expect("SIP_XDP_DEB: run the tests with `cargo xtask test`, which builds the package");
    let lab = Lab::two_clients("pk");
    // Its pins, which the containerized controller uses and the test reads,
    // are detached and removed with it.
    let cli = Cli::new(&lab.server);
    let pins = cli.pins.to_str().unwrap();
    let sd = Systemd::boot(&lab.server, &[Path::new(&deb).parent().unwrap()]);
    sd.ok(&["dpkg", "-i", &deb]);
    let config = "/etc/sip-xdp/sip-xdp.toml";
    let shipped = std::fs::read_to_string(sd.root.join(&config[1..])).unwrap();
    sd.write(
        config,
        &format!("interfaces = [\"s1\", \"s2\"]\nnode = \"pkg\"\n{shipped}"),
    );
    sd.write(
        "/etc/systemd/system/sip-xdp.service.d/lab.conf",
        &format!("[Service]\nEnvironment=SIP_XDP_PIN_DIR={pins}\nEnvironment=RUST_LOG=info\n"),
    );
    sd.ok(&["systemctl", "daemon-reload"]);
    let banned = lab.links[0].client_v4.to_string();
    sd.ok(&[
        "env",
        &format!("SIP_XDP_PIN_DIR={pins}"),
        "sip-xdp",
        "block",
        &banned,
    ]);
    sd.ok(&["systemctl", "enable", "--now", "sip-xdp"]);
    let old = sd.main_pid("sip-xdp");
    assert_ne!(old, 0, "not running:\n{}", sd.journal("sip-xdp"));
    let before = xdp_prog_id(&lab.server, "s1").expect("attached");
    // As if an older build had pinned what runs.
    let meta = cli.pins.join("maps/META");
    let mut stamp: Array<MapData, u64> =
        Array::try_from(Map::Array(MapData::from_pin(&meta).unwrap())).unwrap();
    stamp.set(0, 1, 0).unwrap();
    let listener = SipListener::start(&lab.server, 5060);
    let to = std::net::SocketAddr::new(lab.links[0].server_v4, 5060);
    std::thread::scope(|s| {
        let sender = s.spawn(|| send_sip_for(&lab.clients[0], to, Duration::from_secs(6)));
        std::thread::sleep(Duration::from_millis(300));
        sd.ok(&["dpkg", "-i", &deb]);
        let new = sd.main_pid("sip-xdp");
        assert!(
            new != 0 && new != old,
            "the upgrade did not restart the running service (main PID {old}, then {new}):\n{}",
            sd.journal("sip-xdp")
        );
        assert!(
            eventually(Duration::from_secs(20), || sd
                .journal("sip-xdp")
                .contains("replaced the pinned programs")),
            "the new build did not take over:\n{}",
            sd.journal("sip-xdp")
        );
        let sent = sender.join().unwrap();
        assert!(sent > 100, "only {sent} sent");
    });
    let got = listener.drain(Duration::from_millis(300), Duration::from_secs(5));
    assert_eq!(
        got.get(&lab.links[0].client_v4).copied().unwrap_or(0),
        0,
        "a packet of the banned client got through during the upgrade"
    );
    let after = xdp_prog_id(&lab.server, "s1").expect("still attached");
    assert_ne!(before, after, "the new build did not replace the program");
}
