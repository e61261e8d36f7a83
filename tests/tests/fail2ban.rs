//! The real fail2ban (Debian's 1.0) with the shipped action and filter: a
//! private fail2ban-server reads an OpenSIPS-style authentication-failure
//! log, bans through `sip-xdp block` (row with source fail2ban, kernel
//! entry, event) and unbans through `sip-xdp unblock`. Needs root.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sip_xdp_tests::{
    cli::{bin, eventually, Cli},
    lab::Lab,
};

const DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/fail2ban");

/// A private fail2ban-server, stopped on drop.
struct Fail2ban {
    dir: PathBuf,
}

impl Fail2ban {
    fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new("fail2ban-client")
            .arg("-s")
            .arg(self.dir.join("f2b.sock"))
            .args(args)
            .output()
            .expect("fail2ban-client (installed by `cargo xtask test`)")
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(cli: &Cli, log: &Path) -> Fail2ban {
    let dir = std::env::temp_dir().join(format!("sip-xdp-f2b-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["action.d", "filter.d"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for f in ["action.d/sip-xdp.conf", "filter.d/opensips-auth.conf"] {
        std::fs::copy(Path::new(DIST).join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("fail2ban.conf"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {}\ndbfile = :memory:\n",
            dir.join("f2b.log").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("jail.conf"),
        format!(
            "[DEFAULT]\nbackend = polling\nbanaction = sip-xdp\n\n\
             [opensips-auth]\nenabled = true\nfilter = opensips-auth\nlogpath = {}\n\
             maxretry = 3\nfindtime = 600\nbantime = 3600\naction = sip-xdp[name=opensips-auth]\n",
            log.display()
        ),
    )
    .unwrap();
    let f2b = Fail2ban { dir: dir.clone() };
    // Actions inherit the server's environment: the binary under test on
    // PATH, and this node's configuration, pins and database.
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("fail2ban-server")
        .arg("-c")
        .arg(&dir)
        .arg("-s")
        .arg(dir.join("f2b.sock"))
        .arg("-p")
        .arg(dir.join("f2b.pid"))
        .args(["-b", "-x"])
        .env("PATH", path)
        .envs(
            cli.command()
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .output()
        .expect("fail2ban-server");
    assert!(out.status.success(), "fail2ban-server: {out:?}");
    assert!(
        eventually(Duration::from_secs(20), || f2b
            .client(&["ping"])
            .status
            .success()),
        "fail2ban-server did not answer: {}",
        std::fs::read_to_string(dir.join("f2b.log")).unwrap_or_default()
    );
    f2b
}

#[test]
fn a_fail2ban_jail_bans_and_unbans_through_sip_xdp() {
    let lab = Lab::two_clients("f2b");
    let cli = Cli::new(&lab.server);
    cli.ok(&["attach", "--iface", "s1", "--mode", "native"]);
    let log = std::env::temp_dir().join(format!("sip-xdp-f2b-{}-opensips.log", std::process::id()));
    std::fs::write(&log, "").unwrap();
    let f2b = start(&cli, &log);
    let attacker = lab.links[0].client_v4.to_string();

    // Three failed REGISTERs, as OpenSIPS's script logs them through syslog.
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for i in 0..3 {
        let now = chrono::Local::now().format("%b %e %H:%M:%S");
        writeln!(
            f,
            "{now} sbc1 /usr/sbin/opensips[4242]: AUTH_FAILED user=10{i}@example.org src={attacker}:5060 ua=friendly-scanner"
        )
        .unwrap();
    }
    drop(f);
    let banned = |cli: &Cli| {
        cli.json(&["list", "blocked", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["ip_address"] == attacker.as_str()
                    && r["source"] == "fail2ban"
                    && r["enforced"] == true
            })
    };
    assert!(
        eventually(Duration::from_secs(20), || banned(&cli)),
        "no fail2ban block: {}\n{}",
        std::fs::read_to_string(f2b.dir.join("f2b.log")).unwrap_or_default(),
        cli.ok(&["list", "blocked", "--json"])
    );
    let row = cli.json(&["list", "blocked", "--json"]);
    let row = row
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ip_address"] == attacker.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["reason"], "fail2ban opensips-auth");
    assert!(!row["expires_at"].is_null(), "the jail's bantime: {row}");
    let kernel = cli.ok(&["list", "blocked", "--kernel"]);
    assert!(
        kernel.contains(&attacker) && kernel.contains("feed"),
        "{kernel}"
    );
    let events = cli.ok(&["events", "--type", "ip_blocked", "--json"]);
    assert!(
        events.contains(&attacker) && events.contains("fail2ban"),
        "{events}"
    );
    let status = f2b.client(&["status", "opensips-auth"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains(&attacker));

    // Unban through fail2ban: row lifted, kernel entry gone.
    let out = f2b.client(&["set", "opensips-auth", "unbanip", &attacker]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(Duration::from_secs(10), || !cli
            .ok(&["list", "blocked", "--kernel"])
            .contains(&attacker)),
        "the kernel entry stayed"
    );
    assert!(!banned(&cli));
    let _ = std::fs::remove_file(&log);
}
