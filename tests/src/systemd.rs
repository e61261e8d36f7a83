//! A real systemd, booted by `systemd-nspawn` in a lab's network namespace
//! over a throwaway overlay of the host's own root: the package's
//! maintainer scripts, `deb-systemd-invoke` and the unit run under the
//! service manager an SBC runs, while the host's /etc, /usr and dpkg
//! database stay untouched (every write lands in a tmpfs that goes with
//! the container). The host's bpffs is shared, so the test reads the pins
//! the containerized controller makes.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::lab::{sh, Netns};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Booted to `basic.target`: the host's own enabled services (a database,
/// a SIP server) stay down; what the test installs is started by hand.
pub struct Systemd {
    top: PathBuf,
    /// The container's `/`, as the host sees it.
    pub root: PathBuf,
    nspawn: Option<Child>,
    init: i32,
}

impl Systemd {
    /// Boots in `netns`, with each of `binds` (host directories) read-only
    /// at the same path inside, and waits until the boot is done.
    pub fn boot(netns: &Netns, binds: &[&Path]) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("sip-xdp-sd-{}-{n}", std::process::id());
        let top = std::env::temp_dir().join(&name);
        let root = top.join("root");
        let layers = top.join("layers");
        std::fs::create_dir_all(&layers).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        sh("mount", &["-t", "tmpfs", "tmpfs", layers.to_str().unwrap()]);
        let (upper, work) = (layers.join("upper"), layers.join("work"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let opts = format!(
            "lowerdir=/,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        sh(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts,
                root.to_str().unwrap(),
            ],
        );
        // From here on a failure unmounts what is mounted.
        let mut sd = Self {
            top,
            root,
            nspawn: None,
            init: 0,
        };
        // A build container's policy-rc.d (`exit 101`) makes
        // deb-systemd-invoke refuse every action; an SBC has none.
        let _ = std::fs::remove_file(sd.root.join("usr/sbin/policy-rc.d"));
        // The host's id would make the container's journal the host's.
        let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        std::fs::write(
            sd.root.join("etc/machine-id"),
            format!("{}\n", id.trim().replace('-', "")),
        )
        .unwrap();
        let console = std::fs::File::create(sd.top.join("console.log")).unwrap();
        let mut nspawn = Command::new("systemd-nspawn");
        nspawn
            .arg("--directory")
            .arg(&sd.root)
            .args(["--machine", &name])
            // No service manager on the host to register with or to give
            // the container a scope of its own.
            .args(["--keep-unit", "--register=no", "--link-journal=no"])
            .arg(format!(
                "--network-namespace-path={}",
                netns.path().display()
            ))
            // What the unit grants the controller, which nspawn's default
            // set lacks.
            .args(["--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN"])
            .args(["--system-call-filter=bpf perf_event_open"])
            .arg("--bind=/sys/fs/bpf");
        for b in binds {
            nspawn.arg(format!("--bind-ro={}", b.display()));
        }
        sd.nspawn = Some(
            nspawn
                .args(["--boot", "--", "--unit=basic.target"])
                .stdin(Stdio::null())
                .stdout(console.try_clone().unwrap())
                .stderr(console)
                .spawn()
                .expect("systemd-nspawn (Debian's systemd-container)"),
        );
        sd.init = find_init(sd.nspawn.as_mut().unwrap(), &sd.top.join("console.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = sd.run(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state == "running" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd is {state:?} after 60 s:\n{}\n{}",
                sd.console(),
                String::from_utf8_lossy(&sd.run(&["systemctl", "--failed"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        sd
    }

    /// What nspawn and the container's console printed.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.top.join("console.log")).unwrap_or_default()
    }

    /// `args` run inside the container (every namespace of its init), with
    /// a clean environment, as an operator's root shell there.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["--target", &self.init.to_string(), "--all", "--"])
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .output()
            .expect("nsenter")
    }

    /// As `run`; panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "in the container, {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `text` to `path` (absolute, inside the container).
    pub fn write(&self, path: &str, text: &str) {
        let path = self.root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A unit's main process as systemd knows it (0: none).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.ok(&["systemctl", "show", "--property=MainPID", "--value", unit])
            .trim()
            .parse()
            .unwrap()
    }

    /// A unit's messages in the container's journal.
    pub fn journal(&self, unit: &str) -> String {
        self.ok(&["journalctl", "--unit", unit, "--output=cat", "--no-pager"])
    }
}

/// The container's init: nspawn's child that is PID 1 in its own PID
/// namespace.
fn find_init(nspawn: &mut Child, console: &Path) -> i32 {
    let parent = nspawn.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            };
            let ns_pid = field("NSpid:").unwrap_or_default();
            if field("PPid:").as_deref() == Some(&parent) && ns_pid.ends_with(" 1") {
                return ns_pid.split(' ').next().unwrap().parse().unwrap();
            }
        }
        if let Ok(Some(status)) = nspawn.try_wait() {
            panic!(
                "systemd-nspawn exited ({status}) before booting:\n{}",
                std::fs::read_to_string(console).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "systemd-nspawn started no init in 30 s:\n{}",
            std::fs::read_to_string(console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // Killing a PID namespace's init kills everything in it.
        if self.init > 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut nspawn) = self.nspawn.take() {
            let _ = nspawn.wait();
        }
        let mut mounted = false;
        for dir in [&self.root, &self.top.join("layers")] {
            let done = Command::new("umount").arg(dir).output();
            mounted |= !done.is_ok_and(|o| o.status.success());
        }
        // Never walk into an overlay of the host's root still mounted.
        if !mounted {
            let _ = std::fs::remove_dir_all(&self.top);
        }
    }
}
