//! The Debian package `cargo xtask deb` builds (`cargo xtask test` passes its
//! path in SIP_XDP_DEB): installed with dpkg, the installed binary runs and
//! finds its configuration, the unit verifies in place, and it is removed
//! (conffile kept) then purged (nothing left). Needs root.

use std::{path::Path, process::Command};

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
