//! The Debian package `cargo xtask deb` builds (`cargo xtask test` passes its
//! path in SIP_XDP_DEB), under a real systemd in a container over a
//! throwaway copy of the host's root (the host's own dpkg database, /etc
//! and /usr are never touched): installed with dpkg, the installed binary
//! runs and finds its configuration, the unit verifies in place, and it is
//! removed (conffile kept) then purged (nothing left); an upgrade over the
//! running service restarts it and lets nothing of a banned source through.
//! Needs root.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sip_xdp_tests::{
    cli::eventually,
    frames::OPTIONS,
    lab::{send_sip, xdp_prog_id, Lab, Netns, SipListener},
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

fn deb() -> String {
    std::env::var("SIP_XDP_DEB")
        .expect("SIP_XDP_DEB: run the tests with `cargo xtask test`, which builds the package")
}

/// A container on `netns` that can read the package.
fn container(netns: &Netns, deb: &str) -> Systemd {
    Systemd::boot(netns, &[Path::new(deb).parent().unwrap()])
}

#[test]
fn the_package_installs_runs_and_goes_away_cleanly() {
    sip_xdp_tests::require_root();
    let deb = deb();
    let ns = Netns::new(&format!("sx{}pkg-i", std::process::id() % 100_000));
    let sd = container(&ns, &deb);
    sd.ok(&["dpkg", "-i", &deb]);
    for f in FILES {
        assert!(sd.path(f).exists(), "{f} not installed");
    }
    let conffiles = sd.ok(&["dpkg-query", "-W", "-f=${Conffiles}", "sip-xdp"]);
    assert!(
        conffiles.contains("/etc/sip-xdp/sip-xdp.toml"),
        "{conffiles}"
    );

    // The installed binary, on the installed configuration.
    let version = sd.ok(&["/usr/sbin/sip-xdp", "--version"]);
    assert!(version.starts_with("sip-xdp "), "{version}");
    let check = sd.run(&["/usr/sbin/sip-xdp", "config", "check"]);
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "/etc/sip-xdp/sip-xdp.toml: ok",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let verify = sd.run(&[
        "systemd-analyze",
        "verify",
        "--man=no",
        "/lib/systemd/system/sip-xdp.service",
    ]);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Installed, not enabled: the operator sets the interfaces first.
    assert_eq!(sd.property("sip-xdp", "UnitFileState"), "disabled");
    let man = sd.ok(&["gzip", "-dc", "/usr/share/man/man8/sip-xdp.8.gz"]);
    assert!(
        man.contains(".TH sip-xdp 8") && man.contains("doctor"),
        "{man}"
    );

    // An operator's edit survives removal; purge takes everything.
    sd.write("/etc/sip-xdp/sip-xdp.toml", "node = \"edited\"\n");
    sd.ok(&["dpkg", "-r", "sip-xdp"]);
    assert!(!sd.path("/usr/sbin/sip-xdp").exists());
    assert_eq!(
        std::fs::read_to_string(sd.path("/etc/sip-xdp/sip-xdp.toml")).unwrap(),
        "node = \"edited\"\n"
    );
    sd.ok(&["dpkg", "-P", "sip-xdp"]);
    for f in FILES {
        assert!(!sd.path(f).exists(), "{f} left after purge");
    }
    assert!(!sd.path("/etc/sip-xdp").exists() && !sd.path("/var/lib/sip-xdp").exists());
    assert!(
        !sd.run(&["dpkg", "-s", "sip-xdp"]).status.success(),
        "still known to dpkg after purge"
    );
}

/// Sends OPTIONS from `ns` to `to`, `burst` at a time every `every`, until
/// `stop` is set; bounded by 30 s and 40,000 packets. Returns how many it
/// sent and whether `stop` ended it.
fn send_until(
    ns: &Netns,
    to: SocketAddr,
    burst: usize,
    every: Duration,
    stop: &AtomicBool,
) -> (usize, bool) {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(30) && n < 40_000 {
        if stop.load(Ordering::Relaxed) {
            return (n, true);
        }
        send_sip(ns, to, OPTIONS, burst);
        n += burst;
        std::thread::sleep(every);
    }
    (n, false)
}

/// An upgrade takes over with no moment unfiltered, under the service
/// manager an SBC runs. In a systemd container on the lab's server
/// namespace, the package is installed, the service enabled and started as
/// the README says, and the package installed again over it as `dpkg -i` of
/// a new version does: its postinst restarts the running service
/// (`try-restart`), the new build's program replaces the one an older build
/// pinned, a banned client sending from before the upgrade until after the
/// new program is in gets nothing through, and an unbanned client sending
/// all along loses nothing.
#[test]
fn an_upgrade_under_a_banned_sources_traffic_lets_nothing_through() {
    use aya::maps::{Array, Map, MapData};
    sip_xdp_tests::require_root();
    let deb = deb();
    let lab = Lab::two_clients("pk");
    let sd = container(&lab.server, &deb);
    sd.ok(&["dpkg", "-i", &deb]);
    let config = "/etc/sip-xdp/sip-xdp.toml";
    let shipped = std::fs::read_to_string(sd.path(config)).unwrap();
    sd.write(
        config,
        &format!("interfaces = [\"s1\", \"s2\"]\nnode = \"pkg\"\n{shipped}"),
    );
    sd.write(
        "/etc/systemd/system/sip-xdp.service.d/lab.conf",
        "[Service]\nEnvironment=RUST_LOG=info\n",
    );
    sd.ok(&["systemctl", "daemon-reload"]);
    let banned = lab.links[0].client_v4;
    sd.ok(&["sip-xdp", "block", &banned.to_string()]);
    sd.ok(&["systemctl", "enable", "--now", "sip-xdp"]);
    let old = sd.main_pid("sip-xdp");
    assert_ne!(old, 0, "not running:\n{}", sd.journal("sip-xdp"));
    let before = xdp_prog_id(&lab.server, "s1").expect("attached");
    // The package's default pin directory, in the container's bpffs. As if
    // an older build had pinned what runs:
    let pins = sd.bpffs.join("sip-xdp");
    let mut stamp: Array<MapData, u64> = Array::try_from(Map::Array(
        MapData::from_pin(pins.join("maps/META")).unwrap(),
    ))
    .unwrap();
    stamp.set(0, 1, 0).unwrap();
    let listener = SipListener::start(&lab.server, 5060);
    let to = |i: usize| SocketAddr::new(lab.links[i].server_v4, 5060);
    let stop = AtomicBool::new(false);
    let ((sent, stopped), (control, control_stopped)) = std::thread::scope(|s| {
        let flood =
            s.spawn(|| send_until(&lab.clients[0], to(0), 10, Duration::from_millis(5), &stop));
        // Below the flood limit: nothing the controller bans.
        let steady =
            s.spawn(|| send_until(&lab.clients[1], to(1), 1, Duration::from_millis(200), &stop));
        std::thread::sleep(Duration::from_millis(300));
        sd.ok(&["dpkg", "-i", &deb]);
        let new = sd.main_pid("sip-xdp");
        let took_over = new != 0
            && new != old
            && eventually(Duration::from_secs(20), || {
                sd.journal_of(new)
                    .contains("replaced the pinned programs with this version's")
            });
        // Traffic goes on past the new program's start before it stops.
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let result = (flood.join().unwrap(), steady.join().unwrap());
        assert!(
            took_over,
            "the upgrade did not restart the running service into the new build \
             (main PID {old}, then {new}):\n{}",
            sd.journal("sip-xdp")
        );
        result
    });
    // systemd's own restart of a failed service would also start the new
    // binary: the restart must be the postinst's.
    assert_eq!(sd.property("sip-xdp", "NRestarts"), "0");
    assert!(stopped && control_stopped, "a sender hit its bound first");
    assert!(sent > 100, "only {sent} sent");
    let got = listener.drain(Duration::from_millis(300), Duration::from_secs(5));
    let from = |a: IpAddr| got.get(&a).copied().unwrap_or(0);
    assert_eq!(
        from(banned),
        0,
        "a packet of the banned client got through during the upgrade"
    );
    assert_eq!(
        from(lab.links[1].client_v4),
        control,
        "the unbanned client lost packets during the upgrade"
    );
    let after = xdp_prog_id(&lab.server, "s1").expect("still attached");
    assert_ne!(before, after, "the new build did not replace the program");
}
