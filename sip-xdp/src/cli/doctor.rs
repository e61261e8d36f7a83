//! `doctor`: every precondition of a working filter, checked in one go, one
//! line each with the fix when it fails. Runs without a valid configuration
//! (that is one of the checks) and without a database (another one).

use std::{path::Path, time::Duration};

use serde::Serialize;
use serde_json::Value;

use super::Cli;
use crate::{
    config::{redact, Config},
    db::StoreError,
    kernel::{features, loader, upgrade, Pins},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(
        &mut self,
        check: impl Into<String>,
        level: Level,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Check {
            check: check.into(),
            level,
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(check, Level::Ok, detail, None);
    }
    fn warn(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(check, Level::Warn, detail, Some(fix.into()));
    }
    fn fail(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(check, Level::Fail, detail, Some(fix.into()));
    }
}

/// Drivers with native (driver-mode) XDP in mainline Linux.
const NATIVE_XDP_DRIVERS: &[&str] = &[
    "mlx5_core",
    "mlx4_en",
    "mlx4_core",
    "i40e",
    "ice",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "virtio_net",
    "veth",
    "ena",
    "nfp",
    "qede",
    "sfc",
    "tun",
    "hv_netvsc",
    "gve",
    "stmmac",
    "fec",
    "dpaa2-eth",
    "mvneta",
    "mvpp2",
    "cpsw",
    "nicvf",
    "otx2_pf",
    "atlantic",
    "bond",
    "netsec",
    "fsl_enetc",
    "txgbe",
    "ngbe",
    "idpf",
    "octeontx2-nicpf",
    "xen-netfront",
    "netkit",
];

pub fn run(cli: &Cli, as_json: bool) -> anyhow::Result<()> {
    let mut r = Report::default();
    host(&mut r);
    let pins = Pins::new(cli.pin_dir.clone());
    let cfg = configuration(&mut r, cli);
    program(&mut r, &pins);
    let ifaces = interfaces_of(cfg.as_ref(), &pins);
    for iface in &ifaces {
        interface(&mut r, &pins, iface);
    }
    if let Some(cfg) = &cfg {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(database(&mut r, cfg));
        controller(&mut r, cfg);
    }
    print(&r, as_json);
    let failed = r.0.iter().filter(|c| c.level == Level::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn print(r: &Report, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(&r.0).unwrap_or_default());
        return;
    }
    for c in &r.0 {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        match &c.fix {
            Some(fix) => println!("{tag} {}: {} -- fix: {fix}", c.check, c.detail),
            None => println!("{tag} {}: {}", c.check, c.detail),
        }
    }
}

fn host(r: &mut Report) {
    if nix::unistd::geteuid().is_root() {
        r.ok("privileges", "root");
    } else {
        r.fail("privileges", "not root: loading programs and reading maps need CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN", "run it with sudo");
    }
    for f in features::probe() {
        match f.missing {
            None => r.ok(f.name, f.have),
            Some(fix) => r.fail(f.name, "missing", fix),
        }
    }
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        r.ok("BTF", "/sys/kernel/btf/vmlinux");
    } else {
        r.warn(
            "BTF",
            "the kernel exposes no BTF: sip-xdp works, bpftool cannot describe its maps",
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        );
    }
    let bpffs = nix::sys::statfs::statfs("/sys/fs/bpf")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
    if bpffs {
        r.ok("bpffs", "mounted at /sys/fs/bpf");
    } else {
        r.warn(
            "bpffs",
            "not mounted at /sys/fs/bpf: sip-xdp mounts it when it loads",
            "mount -t bpf bpf /sys/fs/bpf (or add it to /etc/fstab)",
        );
    }
}

fn configuration(r: &mut Report, cli: &Cli) -> Option<Config> {
    match Config::load(cli.config.as_deref()) {
        Ok(mut cfg) => {
            if let Some(db) = &cli.db {
                cfg.db = db.clone();
            }
            match &cfg.path {
                Some(p) => r.ok("configuration", format!("{} is valid", p.display())),
                None => r.ok("configuration", "no file: every key has its default"),
            }
            Some(cfg)
        }
        Err(e) => {
            r.fail(
                "configuration",
                e.to_string(),
                "`sip-xdp config example` lists every key with its default",
            );
            None
        }
    }
}

fn program(r: &mut Report, pins: &Pins) {
    match loader::program_info(pins) {
        None => r.warn(
            "program",
            format!("not loaded (no pins under {})", pins.root().display()),
            "`sip-xdp run` (or `attach --iface IFACE`) loads it",
        ),
        Some(p) if upgrade::pinned_stamp(pins) == Some(upgrade::object_stamp()) => {
            r.ok("program", format!("loaded (id {}) by this build", p.id()))
        }
        Some(p) => r.warn(
            "program",
            format!("loaded (id {}) by another build", p.id()),
            "the next `sip-xdp run` or `attach` replaces it in place, without a gap",
        ),
    }
}

fn interfaces_of(cfg: Option<&Config>, pins: &Pins) -> Vec<String> {
    let mut out: Vec<String> = cfg.map(|c| c.interfaces.clone()).unwrap_or_default();
    for (iface, _, _) in pins.links() {
        if !out.contains(&iface) {
            out.push(iface);
        }
    }
    out
}

/// `ip -d -j link show dev IF`: netlink, so it answers for this network
/// namespace (sysfs may show another's).
fn link_json(iface: &str) -> Option<Value> {
    let out = std::process::Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0).cloned()
}

fn driver_of(iface: &str, link: &Value) -> Option<String> {
    let sys = Path::new("/sys/class/net")
        .join(iface)
        .join("device/driver");
    if let Ok(target) = std::fs::read_link(sys) {
        return target.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    link["linkinfo"]["info_kind"].as_str().map(str::to_string)
}

fn interface(r: &mut Report, pins: &Pins, iface: &str) {
    let name = format!("interface {iface}");
    let Some(link) = link_json(iface) else {
        r.fail(
            name,
            "no such interface in this network namespace",
            "fix `interfaces` in the configuration (see `ip link`)",
        );
        return;
    };
    match driver_of(iface, &link) {
        Some(d) if NATIVE_XDP_DRIVERS.contains(&d.as_str()) => {
            r.ok(format!("{name} driver"), format!("{d}: native XDP"))
        }
        Some(d) => r.warn(format!("{name} driver"), format!("{d}: not known to support native XDP; generic (skb) mode filters after the kernel built an skb"), "a NIC whose driver has native XDP for full speed"),
        None => r.warn(format!("{name} driver"), "unknown driver", "check `ethtool -i` for native XDP support"),
    }
    let ours = loader::program_info(pins).map(|p| p.id());
    let attached = link["xdp"]["prog"]["id"]
        .as_u64()
        .or_else(|| link["xdp"]["attached"][0]["prog"]["id"].as_u64());
    match (attached, pins.link_of(iface)) {
        (Some(id), Some((mode, _))) if Some(id as u32) == ours => r.ok(
            format!("{name} XDP"),
            format!("sip-xdp attached in {mode} mode"),
        ),
        (Some(id), _) => r.fail(
            format!("{name} XDP"),
            format!("another XDP program (id {id}) is attached"),
            format!("remove it (`ip link set dev {iface} xdp off`) or protect another interface"),
        ),
        (None, _) => r.warn(
            format!("{name} XDP"),
            "nothing attached",
            format!("`sip-xdp run` or `sip-xdp attach --iface {iface}`"),
        ),
    }
}

async fn database(r: &mut Report, cfg: &Config) {
    let url = redact(&cfg.db);
    let store = match tokio::time::timeout(Duration::from_secs(10), crate::db::connect(&cfg.db))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e @ StoreError::Schema(_))) => {
            r.ok("database", format!("{url} reachable"));
            r.fail(
                "database schema",
                e.to_string(),
                "run the statements named (sip-xdp never changes or drops a column of yours), then `sip-xdp db migrate`",
            );
            return;
        }
        Ok(Err(e)) => {
            r.fail("database", format!("{url}: {e}"), "check `db` in the configuration, that the server runs, and the account's password and grants (GRANT ALL ON db.* TO user)");
            return;
        }
        Err(_) => {
            r.fail(
                "database",
                format!("{url}: no answer within 10 s"),
                "check the server, the network and any firewall between them",
            );
            return;
        }
    };
    r.ok("database", format!("{url} reachable ({})", store.kind()));
    match crate::db::schema::inspect(&store).await {
        Ok(f) => {
            for n in f.notes {
                r.warn(
                    "database schema",
                    n,
                    "widen the column if such text can come",
                );
            }
        }
        Err(e) => r.fail("database schema", e.to_string(), "`sip-xdp db migrate`"),
    }
    match store.schema_versions().await {
        Ok((applied, known)) if applied >= known => {
            r.ok("database schema", format!("migration {applied}, current"))
        }
        Ok((applied, known)) => r.fail(
            "database schema",
            format!("migration {applied}, this build needs {known}"),
            "`sip-xdp db migrate` with an account allowed to ALTER",
        ),
        Err(e) => r.fail("database schema", e.to_string(), "`sip-xdp db migrate`"),
    }
    match store.check_grants().await {
        Ok(()) => r.ok(
            "database grants",
            "read and write on every table (tried, rolled back)",
        ),
        Err(e) => r.fail(
            "database grants",
            e.to_string(),
            "GRANT SELECT, INSERT, UPDATE, DELETE on the database to the account",
        ),
    }
    clock(r, store.skew());
}

/// The database's clock against ours: a time zone is a whole number of
/// quarter hours; what is left over is clock error.
fn clock(r: &mut Report, skew: chrono::Duration) {
    let ms = skew.num_milliseconds();
    let quarter = 15 * 60 * 1000;
    let zone = (ms as f64 / quarter as f64).round() as i64 * quarter;
    let error = ms - zone;
    let detail = format!(
        "database zone UTC{:+.2}h, clocks {:+.1} s apart",
        zone as f64 / 3_600_000.0,
        error as f64 / 1000.0
    );
    if error.abs() > 5_000 {
        r.warn("database clock", detail, "run NTP (chrony, systemd-timesyncd) on both hosts; sip-xdp converts, other tools reading the rows may not");
    } else {
        r.ok("database clock", detail);
    }
}

fn controller(r: &mut Report, cfg: &Config) {
    let status: Option<Value> = std::fs::read_to_string(&cfg.status_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(st) = status else {
        r.warn(
            "controller",
            format!("not running (no {})", cfg.status_file.display()),
            "systemctl start sip-xdp (or `sip-xdp run`)",
        );
        return;
    };
    let age = st["written_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now() - t.to_utc()).num_milliseconds() as f64 / 1000.0);
    let stale = 3.0 * cfg.sync_interval.as_secs_f64() + 5.0;
    match age {
        Some(a) if a <= stale => {}
        _ => {
            r.fail(
                "controller",
                format!(
                    "its status is {} s old: stopped or stalled",
                    age.map_or("?".into(), |a| format!("{a:.0}"))
                ),
                "systemctl restart sip-xdp; see journalctl -u sip-xdp",
            );
            return;
        }
    }
    for (name, f) in st["feeds"].as_object().into_iter().flatten() {
        match f["last_error"].as_str() {
            None => r.ok(format!("feed {name}"), format!("{} entries", f["entries"])),
            Some(e) => r.warn(
                format!("feed {name}"),
                format!(
                    "failing: {e}; its last good list of {} entries stays",
                    f["entries"]
                ),
                "check the feed's url, file or key in [feeds]",
            ),
        }
    }
    if st["db_reachable"] == true {
        r.ok("controller", "running and syncing with the database");
    } else {
        r.fail(
            "controller",
            format!(
                "running, but the database is unreachable: {}",
                st["db_error"].as_str().unwrap_or("?")
            ),
            "the kernel keeps enforcing the last lists; bring the database back",
        );
    }
}
