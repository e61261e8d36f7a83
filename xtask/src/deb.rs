//! `cargo xtask deb`: target/debian/sip-xdp_<version>_<arch>.deb, built with
//! Debian's own `dpkg-deb` from the release binary (XDP object inside), the
//! systemd unit and reference configuration in dist/, and the manual page
//! and shell completions the binary generates from its clap definitions.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::run;

const DESCRIPTION: &str = "\
Description: kernel-level (XDP) SIP flood filter for VoIP operators
 sip-xdp protects an SBC (OpenSIPS, Kamailio) on UDP/TCP 5060: an XDP program
 drops flooding, scanning and brute-forcing sources in the NIC driver, before
 the kernel builds a packet for them, and a controller detects them, bans
 them with expiry and records what it did in MySQL/MariaDB or SQLite.
 .
 The service is installed but not enabled: set `interfaces` in
 /etc/sip-xdp/sip-xdp.toml, check with `sip-xdp doctor`, then
 `systemctl enable --now sip-xdp`.
";

/// An upgrade takes over: a running controller is restarted on the new
/// build (never started if it was not running), and the new build swaps
/// its programs into the pinned links, so the interfaces are never without
/// a filter. prerm leaves the controller running during an upgrade.
const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    if [ -n \"$2\" ]; then
        if command -v deb-systemd-invoke >/dev/null; then
            deb-systemd-invoke try-restart sip-xdp.service || true
        else
            systemctl try-restart sip-xdp.service || true
        fi
    fi
fi
";

/// The filter outlives the controller in the kernel: removing the package
/// takes it away too, so nothing is left filtering that no tool manages.
const PRERM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop sip-xdp.service || true
    fi
    /usr/sbin/sip-xdp detach --all || true
fi
";

const POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = purge ]; then
    rm -rf /var/lib/sip-xdp /run/sip-xdp
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
";

/// Builds the package from target/release/sip-xdp; returns its path.
pub fn build(root: &Path) -> Result<PathBuf> {
    let bin = root.join("target/release/sip-xdp");
    let version = stdout_of(Command::new(&bin).arg("--version"))?;
    let version = version
        .split_whitespace()
        .nth(1)
        .context("sip-xdp --version printed no version")?
        .to_string();
    let arch = stdout_of(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let out_dir = root.join("target/debian");
    let stage = out_dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    put(&stage, "usr/sbin/sip-xdp", &fs::read(&bin)?, 0o755)?;
    let unit = fs::read(root.join("dist/systemd/sip-xdp.service"))?;
    put(&stage, "lib/systemd/system/sip-xdp.service", &unit, 0o644)?;
    let config = fs::read(root.join("dist/sip-xdp.toml"))?;
    // It will hold the database password.
    put(&stage, "etc/sip-xdp/sip-xdp.toml", &config, 0o640)?;
    put(
        &stage,
        "usr/share/sip-xdp/sip-xdp.toml.example",
        &config,
        0o644,
    )?;
    for f in [
        "action.d/sip-xdp.conf",
        "filter.d/sip-xdp.conf",
        "filter.d/opensips-auth.conf",
    ] {
        let text = fs::read(root.join("dist/fail2ban").join(f))?;
        put(&stage, &format!("etc/fail2ban/{f}"), &text, 0o644)?;
    }
    let dashboard = fs::read(root.join("dist/grafana/sip-xdp.json"))?;
    put(
        &stage,
        "usr/share/sip-xdp/grafana-dashboard.json",
        &dashboard,
        0o644,
    )?;
    // The README links into docs/: the package keeps the same layout.
    put(
        &stage,
        "usr/share/doc/sip-xdp/README.md",
        &fs::read(root.join("README.md"))?,
        0o644,
    )?;
    for doc in fs::read_dir(root.join("docs"))? {
        let path = doc?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            put(
                &stage,
                &format!("usr/share/doc/sip-xdp/docs/{name}"),
                &fs::read(&path)?,
                0o644,
            )?;
        }
    }
    generated(&bin, &stage)?;
    fs::create_dir_all(stage.join("var/lib/sip-xdp"))?;
    fs::set_permissions(
        stage.join("var/lib/sip-xdp"),
        fs::Permissions::from_mode(0o750),
    )?;
    control(&stage, &version, &arch)?;
    let deb = out_dir.join(format!("sip-xdp_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    println!("built {}", deb.display());
    Ok(deb)
}

/// The manual page and completions, from the binary's own definitions.
fn generated(bin: &Path, stage: &Path) -> Result<()> {
    let man = stdout_of(Command::new(bin).arg("man"))?;
    let gz_path = stage.join("usr/share/man/man8/sip-xdp.8.gz");
    put(stage, "usr/share/man/man8/sip-xdp.8", man.as_bytes(), 0o644)?;
    run(Command::new("gzip")
        .args(["-9n", "-f"])
        .arg(stage.join("usr/share/man/man8/sip-xdp.8")))?;
    anyhow::ensure!(gz_path.exists(), "gzip left no {}", gz_path.display());
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/sip-xdp"),
        ("zsh", "usr/share/zsh/vendor-completions/_sip-xdp"),
        ("fish", "usr/share/fish/vendor_completions.d/sip-xdp.fish"),
    ] {
        let text = stdout_of(Command::new(bin).args(["completions", shell]))?;
        put(stage, path, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

fn control(stage: &Path, version: &str, arch: &str) -> Result<()> {
    let size_kib = stdout_of(Command::new("du").args(["-sk"]).arg(stage))?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let control = format!(
        "Package: sip-xdp\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: sip-xdp developers <sip-xdp@localhost>\nInstalled-Size: {size_kib}\n\
         Depends: libc6 (>= 2.34), libgcc-s1, iproute2\n\
         Recommends: default-mysql-client | mariadb-client\nSuggests: fail2ban\n\
         Section: net\nPriority: optional\n{DESCRIPTION}"
    );
    put(stage, "DEBIAN/control", control.as_bytes(), 0o644)?;
    let conffiles = "/etc/sip-xdp/sip-xdp.toml\n\
                     /etc/fail2ban/action.d/sip-xdp.conf\n\
                     /etc/fail2ban/filter.d/sip-xdp.conf\n\
                     /etc/fail2ban/filter.d/opensips-auth.conf\n";
    put(stage, "DEBIAN/conffiles", conffiles.as_bytes(), 0o644)?;
    put(stage, "DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put(stage, "DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put(stage, "DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    Ok(())
}

fn put(stage: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = stage.join(rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// What `cmd` prints, without echoing it (manual pages, completions).
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}
