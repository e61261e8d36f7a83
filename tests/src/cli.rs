//! The real `sip-xdp` binary, run inside a namespace with `nsenter --net`
//! against a private pin directory and a test database.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{db::TestDb, lab::Netns, prog::private_pins};

/// The sip-xdp binary under test: $SIP_XDP_BIN (set by `cargo xtask test`)
/// or the newest build in this workspace.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SIP_XDP_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    ["target/release/sip-xdp", "target/debug/sip-xdp"]
        .iter()
        .map(|p| root.join(p))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("build sip-xdp first (cargo xtask test does) or set SIP_XDP_BIN")
}

/// One sip-xdp node: a namespace, its pins, its database URL and a scratch
/// directory (config file, status file, logs). Detached and unpinned on drop.
pub struct Cli {
    /// The namespace it runs in (`/run/netns/NAME`).
    pub netns: PathBuf,
    pub pins: PathBuf,
    pub db_url: String,
    pub dir: PathBuf,
    _db: Option<TestDb>,
}

impl Cli {
    /// A node with a SQLite database of its own.
    pub fn new(ns: &Netns) -> Self {
        let db = TestDb::sqlite();
        let url = db.url().to_string();
        let mut c = Self::with_db(ns, &url);
        c._db = Some(db);
        c
    }

    /// A node on a database shared with others.
    pub fn with_db(ns: &Netns, db_url: &str) -> Self {
        let pins = private_pins("cli").root().to_path_buf();
        let dir = std::env::temp_dir().join(pins.file_name().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("sip-xdp.toml"),
            format!(
                "status_file = \"{}\"\noutbox = \"{}\"\n",
                dir.join("status.json").display(),
                dir.join("outbox.jsonl").display()
            ),
        )
        .unwrap();
        Self {
            netns: ns.path(),
            pins,
            db_url: db_url.to_string(),
            dir,
            _db: None,
        }
    }

    pub fn command(&self) -> Command {
        let mut c = crate::lab::command_in(&self.netns, bin().to_str().unwrap());
        c.env("SIP_XDP_PIN_DIR", &self.pins)
            .env("SIP_XDP_DB", &self.db_url)
            .env("SIP_XDP_CONFIG", self.dir.join("sip-xdp.toml"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("running sip-xdp")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sip-xdp {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Fails with a non-zero exit and exactly one line on stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "sip-xdp {} should fail",
            args.join(" ")
        );
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "one clear line, got: {err}");
        err
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("sip-xdp {}: {e}: {out}", args.join(" ")))
    }

    pub fn stats(&self) -> serde_json::Value {
        self.json(&["stats", "--json"])
    }

    /// Starts `sip-xdp run` on `ifaces` with a short sync interval.
    pub fn start_controller(&self, ifaces: &[&str], node: &str, interval: &str) -> Daemon {
        self.start_controller_env(ifaces, node, interval, &[])
    }

    /// The same, with extra environment (systemd's `NOTIFY_SOCKET`, ...).
    pub fn start_controller_env(
        &self,
        ifaces: &[&str],
        node: &str,
        interval: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = self.dir.join(format!("{node}.log"));
        let mut cmd = self.command();
        cmd.envs(env.iter().copied());
        cmd.args(["run", "--node", node, "--sync-interval", interval, "-v"]);
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting sip-xdp run");
        Daemon { child, log }
    }

    /// Adds TOML (a `[detect]` section, `metrics = ...`) to this node's
    /// configuration file.
    pub fn add_config(&self, toml: &str) {
        let path = self.dir.join("sip-xdp.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(toml);
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    /// Names this node in its configuration file, as an operator would, so
    /// CLI commands record it too.
    pub fn set_node(&self, node: &str) {
        std::fs::write(
            self.dir.join("sip-xdp.toml"),
            format!(
                "status_file = \"{}\"\noutbox = \"{}\"\nnode = \"{node}\"\n",
                self.dir.join("status.json").display(),
                self.dir.join("outbox.jsonl").display()
            ),
        )
        .unwrap();
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        for (iface, _, _) in sip_xdp::kernel::Pins::new(&self.pins).links() {
            let _ = self.run(&["detach", "--iface", &iface]);
        }
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `sip-xdp run`, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log if not.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no {needle:?} in the controller log within {within:?}:\n{}",
            self.log_text()
        );
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < end,
                "controller ignored SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` until it returns true or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
