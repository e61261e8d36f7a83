//! A real systemd, booted by `systemd-nspawn` in a lab's network namespace
//! over a throwaway overlay of the host's own root: the package's
//! maintainer scripts, `deb-systemd-invoke` and the unit run under the
//! service manager an SBC runs, while the host's /etc, /usr and dpkg
//! database stay untouched (every write lands in a tmpfs that goes with
//! the container). The container's /sys/fs/bpf is a private directory of
//! the host's bpffs, so the package's default pin directory is the test's
//! own, and the test reads the pins the containerized controller makes.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::lab::{sh, Netns};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Units the host may have enabled that have no business in the test:
/// timers (a persistent apt timer would take the dpkg lock) and network
/// managers (they would configure the lab's interfaces).
const MASKED: &[&str] = &[
    "timers.target",
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "NetworkManager.service",
    "NetworkManager-wait-online.service",
    "networking.service",
];

/// Booted to `basic.target`: the host's own enabled services (a database,
/// a SIP server) stay down; what the test installs is started by hand.
pub struct Systemd {
    top: PathBuf,
    /// The container's `/`, as the host sees it.
    pub root: PathBuf,
    /// The host directory that is the container's /sys/fs/bpf.
    pub bpffs: PathBuf,
    /// Cgroups made for the container, one per hierarchy nspawn uses.
    cgroups: Vec<PathBuf>,
    layers_mounted: bool,
    root_mounted: bool,
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
        // From here on a failure undoes what is done (Drop).
        let mut sd = Self {
            root: top.join("root"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/sip-xdp-test-{name}")),
            top,
            cgroups: Vec::new(),
            layers_mounted: false,
            root_mounted: false,
            nspawn: None,
            init: 0,
        };
        let layers = sd.top.join("layers");
        std::fs::create_dir_all(&layers).unwrap();
        std::fs::create_dir_all(&sd.root).unwrap();
        sh("mount", &["-t", "tmpfs", "tmpfs", layers.to_str().unwrap()]);
        sd.layers_mounted = true;
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
                sd.root.to_str().unwrap(),
            ],
        );
        sd.root_mounted = true;
        // A build container's policy-rc.d (`exit 101`) makes
        // deb-systemd-invoke refuse every action; an SBC has none.
        let _ = std::fs::remove_file(sd.root.join("usr/sbin/policy-rc.d"));
        // The host's id would make the container's journal the host's.
        let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        sd.write(
            "/etc/machine-id",
            &format!("{}\n", id.trim().replace('-', "")),
        );
        for unit in MASKED {
            let link = sd.root.join("etc/systemd/system").join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/null", link).unwrap();
        }
        std::fs::create_dir_all(&sd.bpffs).unwrap();
        // nspawn without a service manager on the host puts the container's
        // cgroups under the caller's: a cgroup of its own keeps two
        // containers apart and lets the test remove what they leave.
        let hierarchies: &[&str] = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            &["/sys/fs/cgroup"]
        } else {
            &["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
        };
        for h in hierarchies {
            if Path::new(h).join("cgroup.procs").exists() {
                let cg = Path::new(h).join(&name);
                std::fs::create_dir_all(&cg).unwrap();
                sd.cgroups.push(cg);
            }
        }
        let cgroups: Vec<String> = sd.cgroups.iter().map(|c| c.display().to_string()).collect();
        let console = std::fs::File::create(sd.top.join("console.log")).unwrap();
        let mut nspawn = Command::new("setpriv");
        nspawn
            // A test killed outright takes its container with it.
            .args(["--pdeathsig", "TERM", "--", "sh", "-c"])
            .arg(
                "for c in $CGROUPS; do echo $$ > \"$c/cgroup.procs\" || exit 1; done; \
                 exec systemd-nspawn \"$@\"",
            )
            .arg("sh")
            .env("CGROUPS", cgroups.join(" "))
            .arg("--directory")
            .arg(&sd.root)
            .args(["--machine", &name])
            // No service manager on the host to register with or to give
            // the container a scope of its own.
            .args(["--keep-unit", "--register=no", "--link-journal=no"])
            // Stopping nspawn kills everything in the container at once.
            .arg("--kill-signal=SIGKILL")
            .arg(format!(
                "--network-namespace-path={}",
                netns.path().display()
            ))
            // What the unit grants the controller, which nspawn's default
            // set lacks; no device nodes of the host's disks.
            .args(["--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN"])
            .args(["--drop-capability=CAP_MKNOD"])
            .args(["--system-call-filter=bpf perf_event_open"])
            .arg(format!("--bind={}:/sys/fs/bpf", sd.bpffs.display()));
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
                .expect("setpriv and systemd-nspawn (Debian's systemd-container)"),
        );
        sd.init = sd.find_init();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = sd.run(&["timeout", "10", "systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            // Degraded: a unit of the host's failed in a container, which
            // the test does not need.
            if state == "running" || state == "degraded" {
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

    /// The container's init: nspawn's child that is PID 1 in its own PID
    /// namespace.
    fn find_init(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                if self.is_init(pid) {
                    return pid;
                }
            }
            self.assert_running("before booting");
            assert!(
                Instant::now() < deadline,
                "systemd-nspawn started no init in 30 s:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `pid` is this container's init (see `child_init`).
    fn is_init(&self, pid: i32) -> bool {
        self.nspawn
            .as_ref()
            .is_some_and(|n| child_init(pid, n.id()))
    }

    fn assert_running(&mut self, when: &str) {
        let exited = self.nspawn.as_mut().unwrap().try_wait().ok().flatten();
        if let Some(status) = exited {
            panic!(
                "systemd-nspawn exited ({status}) {when}:\n{}",
                self.console()
            );
        }
    }

    /// What nspawn and the container's console printed.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.top.join("console.log")).unwrap_or_default()
    }

    /// `args` run inside the container (every namespace of its init), with
    /// a clean environment. They keep the test's privileges, as root's
    /// shell on the SBC would have them.
    pub fn run(&self, args: &[&str]) -> Output {
        assert!(
            self.is_init(self.init),
            "the container is gone:\n{}",
            self.console()
        );
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

    /// `path` (absolute, inside the container) as the host sees it.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Writes `text` to `path` (absolute, inside the container).
    pub fn write(&self, path: &str, text: &str) {
        let path = self.path(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A property of a unit, as `systemctl show` gives it.
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&[
            "systemctl",
            "show",
            &format!("--property={name}"),
            "--value",
            unit,
        ])
        .trim()
        .to_string()
    }

    /// A unit's main process as systemd knows it (0: none).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.property(unit, "MainPID").parse().unwrap()
    }

    /// What the journal holds from the container's process `pid`.
    pub fn journal_of(&self, pid: u32) -> String {
        self.ok(&[
            "journalctl",
            &format!("_PID={pid}"),
            "--output=cat",
            "--no-pager",
        ])
    }

    /// A unit's messages in the container's journal.
    pub fn journal(&self, unit: &str) -> String {
        self.ok(&["journalctl", "--unit", unit, "--output=cat", "--no-pager"])
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            // nspawn answers with its kill signal (SIGKILL) to the
            // container's init, which takes everything in the container.
            let _ = kill(Pid::from_raw(nspawn.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while nspawn.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = nspawn.kill();
                    let _ = nspawn.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.root_mounted {
            self.root_mounted = !umount(&self.root);
        }
        if self.layers_mounted && !self.root_mounted {
            self.layers_mounted = !umount(&self.top.join("layers"));
        }
        // Never walk into an overlay of the host's root still mounted.
        if !self.root_mounted && !self.layers_mounted {
            let _ = std::fs::remove_dir_all(&self.top);
        }
        // Unpinned, the links go with the last reference to them.
        let _ = std::fs::remove_dir_all(&self.bpffs);
        for cg in &self.cgroups {
            remove_cgroup(cg);
        }
    }
}

/// `pid` is the init of the container `nspawn` runs: its child (which the
/// test has not reaped, so its PID is not reused), PID 1 inside. A PID
/// that outlived the container names some other process.
fn child_init(pid: i32, nspawn: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    field("PPid:") == Some(nspawn.to_string())
        && field("NSpid:").is_some_and(|ns| ns.ends_with(" 1"))
}

fn umount(dir: &Path) -> bool {
    Command::new("umount")
        .arg(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes an empty cgroup tree, leaves first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
