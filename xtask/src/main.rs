//! `cargo xtask`: installs what a fresh machine lacks, then builds, tests and
//! benchmarks sip-xdp. Everything it installs comes from rustup, crates.io or
//! Debian's archive.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

mod deb;
mod guest;
use clap::{Parser, Subcommand};

/// bpf-linker release known to build against the pinned nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the pinned nightly with rust-src, bpf-linker and the system
    /// packages the tests use (idempotent; installs only what is missing).
    Setup,
    /// Install the build tools (the pinned nightly, bpf-linker; no test
    /// packages), then build target/release/sip-xdp with the XDP object
    /// inside.
    Build,
    /// Set up, build, and run every test: host unit tests, then the
    /// privileged kernel and namespace tests (needs root).
    Test {
        /// Instead: run the kernel suites inside a guest booting Debian's
        /// own kernel of this line (6.1 or 6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// With --kernel: only the smoke set CI runs (every program
        /// through the verifier, attach, replace, bans end to end).
        #[arg(long, requires = "kernel")]
        smoke: bool,
    },
    /// Set up, build, and run the benchmarks (needs root).
    Bench {
        /// Also run the side-by-side comparison (sip-xdp, ip6tables, ipset,
        /// nftables, no filter) in a namespace lab, and write every figure
        /// of the run to BENCHMARKS.md.
        #[arg(long)]
        compare: bool,
        /// Extra arguments for the benchmark binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the controller for N minutes through scanners, floods,
    /// spoofed storms, feed refreshes, database restarts and operator
    /// commands, and report its memory, descriptors and CPU, the bans
    /// enforced and the events lost (needs root; not part of CI).
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// rustfmt check and clippy (host crates, then the eBPF crate for BPF).
    Lint,
    /// Install the build tools, build, and package:
    /// target/debian/sip-xdp_<version>_<arch>.deb
    /// (binary, systemd unit, /etc/sip-xdp/sip-xdp.toml as a conffile,
    /// sip-xdp(8), bash/zsh/fish completions).
    Deb,
    /// Run every cargo-fuzz target (fuzz/) for a bounded time each, with
    /// the pinned nightly; installs cargo-fuzz if missing. A crash leaves
    /// its input under fuzz/artifacts/ and fails the command.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        secs: u32,
    },
}

/// The cargo-fuzz targets in fuzz/Cargo.toml.
const FUZZ_TARGETS: &[&str] = &[
    "classify",
    "sip_sample",
    "config",
    "target_parse",
    "frame",
    "hints",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    env::set_current_dir(&root)?;
    match args.cmd {
        Cmd::Setup => setup(&root),
        Cmd::Build => {
            build_tools(&root)?;
            build()
        }
        Cmd::Test {
            kernel: Some(version),
            smoke,
        } => {
            require_root("the kernel tests")?;
            setup(&root)?;
            build()?;
            guest::test(&root, &version, smoke)
        }
        Cmd::Test { kernel: None, .. } => {
            require_root("the kernel tests")?;
            setup(&root)?;
            mariadb()?;
            build()?;
            test(&root)
        }
        Cmd::Soak { minutes } => {
            require_root("the soak run")?;
            setup(&root)?;
            mariadb()?;
            build()?;
            run(tests_bin(&root, "sip-xdp-soak").args(["--minutes", &minutes.to_string()]))
        }
        Cmd::Bench { compare, args } => {
            require_root("the benchmarks")?;
            setup(&root)?;
            mariadb()?;
            build()?;
            let geo = geo_db(&root)?;
            let bench = |bin: &str| {
                let mut c = tests_bin(&root, bin);
                c.env("SIP_XDP_GEO_DB", &geo);
                c
            };
            if !compare {
                run(bench("sip-xdp-bench").args(&args))?;
                run(&mut bench("sip-xdp-bench-detect"))?;
                run(&mut bench("sip-xdp-bench-spoof"))?;
                return run(&mut bench("sip-xdp-bench-feeds"));
            }
            let started = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
                .unwrap_or_default();
            let cmp = capture(&mut bench("sip-xdp-bench-compare"))?;
            let per_packet = capture(bench("sip-xdp-bench").args(&args))?;
            let detect = capture(&mut bench("sip-xdp-bench-detect"))?;
            let spoof = capture(&mut bench("sip-xdp-bench-spoof"))?;
            let feeds = capture(&mut bench("sip-xdp-bench-feeds"))?;
            let mut report = benchmarks_md(
                started.trim(),
                &cmp,
                &per_packet,
                &detect,
                &format!("{spoof}\n{feeds}"),
            );
            // The soak's section comes from `cargo xtask soak` and is kept.
            let before = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
            if let Some(at) = before.find("\n## Soak\n") {
                report.push_str(&before[at..]);
            }
            std::fs::write(root.join("BENCHMARKS.md"), report).context("writing BENCHMARKS.md")?;
            eprintln!("wrote {}", root.join("BENCHMARKS.md").display());
            Ok(())
        }
        Cmd::Deb => {
            build_tools(&root)?;
            build()?;
            deb::build(&root).map(|_| ())
        }
        Cmd::Lint => {
            build_tools(&root)?;
            lint(&root)
        }
        Cmd::Fuzz { secs } => {
            build_tools(&root)?;
            fuzz(&root, secs)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd`, echoing its stdout as it comes and returning it.
fn capture(cmd: &mut Command) -> Result<String> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("+ {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut text = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(text)
}

/// BENCHMARKS.md: the comparison first, then the per-packet, the detection
/// and the spoofing benchmarks (followed by the database and feed ones),
/// each a section of its own.
fn benchmarks_md(date: &str, compare: &str, per_packet: &str, detect: &str, spoof: &str) -> String {
    // The per-packet and detection benchmarks print top-level headings of
    // their own.
    let demote = |text: &str| {
        text.lines()
            // Their own title lines would repeat the section's.
            .filter(|l| !l.starts_with("# "))
            .map(|l| {
                if l.starts_with('#') {
                    format!("#{l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>()
    };
    format!(
        "# sip-xdp benchmarks\n\n\
         Written by `cargo xtask bench --compare`, run as root, on {date}. Every figure below was measured in that \
         run, on the machine described under \"The lab\"; rerun the same command to reproduce them (root; \
         nothing leaves the machine: all traffic stays in network namespaces the run creates and \
         removes).\n\n\
         {compare}\n\
         ## Per-packet cost in the kernel\n\n{}\n\
         ## Detection and control plane\n\n{}\n\
         {spoof}",
        demote(per_packet),
        demote(detect)
    )
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn require_root(what: &str) -> Result<()> {
    let uid = output(Command::new("id").arg("-u")).unwrap_or_default();
    if uid.trim() != "0" {
        bail!("{what} load XDP programs and create network namespaces: run as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}

fn ebpf_toolchain(root: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(root.join("ebpf-toolchain"))
        .context("reading ebpf-toolchain")?
        .trim()
        .to_string())
}

/// Everything the tests and benchmarks drive: the build tools and the
/// Debian packages of the components they run against.
fn setup(root: &Path) -> Result<()> {
    build_tools(root)?;
    packages()
}

/// What building needs, and nothing more: a build host or an SBC that
/// builds from source gets no test components installed.
fn build_tools(root: &Path) -> Result<()> {
    let tc = ebpf_toolchain(root)?;
    toolchain(&tc)?;
    bpf_linker(&tc)
}

/// The pinned nightly and its rust-src (for -Z build-std=core).
fn toolchain(tc: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        tc,
    ]))
    .is_some_and(|l| l.lines().any(|c| c.starts_with("rust-src")));
    if installed {
        return Ok(());
    }
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        tc,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

/// bpf-linker built against the nightly's own LLVM: no system LLVM needed,
/// and the linker always matches the compiler that feeds it.
fn bpf_linker(tc: &str) -> Result<()> {
    if output(Command::new("bpf-linker").arg("--version")).is_some() {
        return Ok(());
    }
    let vv = output(Command::new("rustup").args(["run", tc, "rustc", "-vV"]))
        .context("running the pinned nightly's rustc")?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV printed no LLVM version")?
        .to_string();
    let sysroot = PathBuf::from(
        output(Command::new("rustup").args(["run", tc, "rustc", "--print", "sysroot"]))
            .context("finding the nightly's sysroot")?
            .trim(),
    );
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
    // The toolchain directory outlives the install, so bpf-linker's rpath
    // to it stays valid.
    let link = lib.join("libLLVM.so");
    if !link.exists() {
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    run(cargo()
        .env("LLVM_PREFIX", &sysroot)
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ]))
}

/// Debian packages the tests drive: (command, package).
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("curl", "curl"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("sipp", "sip-tester"),
    // The packaged fail2ban filters are tested against the real log.
    ("fail2ban-regex", "fail2ban"),
    // The comparison benchmark's competitors.
    ("ip6tables", "iptables"),
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("xdp-filter", "xdp-tools"),
    // The integrations are tested against the real components: CrowdSec's
    // Local API, Kamailio as a registrar doing digest authentication, and
    // its `permissions` schema (a path: no command).
    ("cscli", "crowdsec"),
    ("kamailio", "kamailio"),
    // The scanners operators meet, against that Kamailio.
    ("svmap", "sipvicious"),
    // The package is upgraded under a real systemd, in a container.
    ("systemd-nspawn", "systemd-container"),
    // Builds the mutated frames of the parser's end-to-end invariant.
    ("scapy", "python3-scapy"),
    (
        "/usr/share/kamailio/mysql/permissions-create.sql",
        "kamailio-mysql-modules",
    ),
];

/// CrowdSec's post-install registers with its Central API, which an
/// offline machine cannot reach, and fails; a non-empty credentials file
/// tells it not to (see its README.Debian). The Local API runs without it.
const CROWDSEC_CAPI: &str = "/etc/crowdsec/online_api_credentials.yaml";

fn packages() -> Result<()> {
    install(PACKAGES)
}

/// Installs the Debian packages of `wanted` ((command or path, package))
/// whose command or path is missing.
fn install(wanted: &[(&str, &str)]) -> Result<()> {
    install_with(wanted, true)
}

/// As `install`, without the packages' recommendations (QEMU's pull in a
/// desktop's worth of video drivers that a guest on a serial line never
/// uses).
fn install_bare(wanted: &[(&str, &str)]) -> Result<()> {
    install_with(wanted, false)
}

fn install_with(wanted: &[(&str, &str)], recommends: bool) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| {
            if cmd.starts_with('/') {
                return !Path::new(cmd).exists();
            }
            output(Command::new("sh").args(["-c", &format!("command -v {cmd}")])).is_none()
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if output(Command::new("id").arg("-u"))
        .unwrap_or_default()
        .trim()
        != "0"
    {
        bail!(
            "missing packages {missing:?}: install them (apt-get install {})",
            missing.join(" ")
        );
    }
    if missing.contains(&"crowdsec") && !Path::new(CROWDSEC_CAPI).exists() {
        std::fs::create_dir_all("/etc/crowdsec")?;
        std::fs::write(
            CROWDSEC_CAPI,
            "# offline: no Central API registration (written by cargo xtask)\n",
        )?;
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args((!recommends).then_some("--no-install-recommends"))
        .args(&missing))
}

/// The tests' MariaDB: installed and started if needed, with a test account
/// that may create `sipxdp_*` databases. Reached through its unix socket.
fn mariadb() -> Result<()> {
    if output(Command::new("sh").args(["-c", "command -v mariadbd"])).is_none() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "mariadb-server", "mariadb-client"]))?;
    }
    let up = || output(Command::new("mariadb").args(["-e", "SELECT 1"])).is_some();
    if !up() {
        // Debian's package does not start it where policy-rc.d forbids it.
        if output(Command::new("/etc/init.d/mariadb").arg("start")).is_none() {
            run(Command::new("service").args(["mariadb", "start"]))?;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !up() {
            if std::time::Instant::now() > deadline {
                bail!("MariaDB did not come up within 60 s (see /var/log/mysql/)");
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    run(Command::new("mariadb").args([
        "-e",
        "CREATE USER IF NOT EXISTS 'sipxdp'@'localhost' IDENTIFIED BY 'sipxdp-test'; \
         GRANT ALL PRIVILEGES ON `sipxdp\\_%`.* TO 'sipxdp'@'localhost'; FLUSH PRIVILEGES;",
    ]))
}

/// A binary of the `sip-xdp-tests` crate (the benchmarks, the soak), run
/// in release against the release `sip-xdp`; its own arguments follow.
fn tests_bin(root: &Path, bin: &str) -> Command {
    let mut c = cargo();
    c.env("SIP_XDP_BIN", root.join("target/release/sip-xdp"))
        .args([
            "run",
            "--release",
            "-p",
            "sip-xdp-tests",
            "--bin",
            bin,
            "--",
        ]);
    c
}

fn build() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "sip-xdp"]))
}

fn test(root: &Path) -> Result<()> {
    // Host unit tests (no root needed for these).
    run(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "sip-xdp-ebpf",
        "--exclude",
        "sip-xdp-tests",
    ]))?;
    // The package test installs it.
    let deb = deb::build(root)?;
    let geo = geo_db(root)?;
    let suites = |threads: usize| {
        let mut c = cargo();
        c.env("SIP_XDP_DEB", &deb)
            .env("SIP_XDP_GEO_DB", &geo)
            .env("SIP_XDP_BIN", root.join("target/release/sip-xdp"))
            .args(["test", "-p", "sip-xdp-tests"]);
        (c, format!("--test-threads={threads}"))
    };
    // The program tests each load their own program into a pin directory
    // of their own and touch no interface: one at a time per core (the
    // kernel's verifier is most of their time).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (mut c, threads) = suites(cores);
    run(c.args(["--test", PARALLEL_SUITE, "--", &threads]))?;
    // The rest share interfaces, namespaces and the host's services: one
    // test at a time.
    let (mut c, threads) = suites(1);
    c.arg("--lib");
    for t in test_targets(root)? {
        if t != PARALLEL_SUITE {
            c.args(["--test", &t]);
        }
    }
    run(c.args(["--", &threads]))
}

/// The privileged suite whose tests may run side by side.
const PARALLEL_SUITE: &str = "prog_test_run";

/// The privileged suites: tests/tests/*.rs, by name.
fn test_targets(root: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("tests/tests"))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs")?.to_string())
        })
        .collect();
    names.sort();
    anyhow::ensure!(
        names.iter().any(|n| n == PARALLEL_SUITE),
        "no tests/tests/{PARALLEL_SUITE}.rs"
    );
    Ok(names)
}

/// A real GeoLite2-format country database for the country-policy tests:
/// ip-location-db's package in the npm registry (GeoLite2 data under
/// MaxMind's GeoLite2 licence, see its GEOLITE2_LICENSE), fetched once into
/// target/geo/.
fn geo_db(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/geo");
    let db = dir.join("geolite2-country.mmdb");
    if db.exists() {
        return Ok(db);
    }
    std::fs::create_dir_all(&dir)?;
    let meta = capture(Command::new("curl").args([
        "-fsS",
        "https://registry.npmjs.org/@ip-location-db/geolite2-country-mmdb/latest",
    ]))?;
    let tarball = meta
        .split("\"tarball\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .context("no tarball in the npm registry's answer")?
        .to_string();
    let tgz = dir.join("package.tgz");
    run(Command::new("curl")
        .args(["-fsS", "-o"])
        .arg(&tgz)
        .arg(&tarball))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&dir)
        .args([
            "--strip-components=1",
            "package/geolite2-country.mmdb",
            "package/GEOLITE2_LICENSE",
        ]))?;
    anyhow::ensure!(db.exists(), "the package held no geolite2-country.mmdb");
    Ok(db)
}

fn lint(root: &Path) -> Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "sip-xdp-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let tc = ebpf_toolchain(root)?;
    run(Command::new("rustup").args(["component", "add", "--toolchain", &tc, "clippy"]))?;
    run(Command::new("rustup")
        .args(["run", &tc, "cargo", "clippy", "-p", "sip-xdp-ebpf"])
        .args([
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))
}

fn fuzz(root: &Path, secs: u32) -> Result<()> {
    let tc = ebpf_toolchain(root)?;
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_none() {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    for target in FUZZ_TARGETS {
        run(Command::new("rustup")
            .args(["run", &tc, "cargo", "fuzz", "run", target])
            .current_dir(root)
            .args(["--", &format!("-max_total_time={secs}")]))?;
    }
    Ok(())
}
