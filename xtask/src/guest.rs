//! `cargo xtask test --kernel 6.1|6.12`: the privileged kernel suites run
//! inside a QEMU guest that boots Debian's own kernel over this host's root
//! filesystem (virtme-ng, read-only, with the guest's writes kept in
//! memory). The kernel package is downloaded from Debian's archive and
//! unpacked under target/kernels/, never installed on the host; its
//! modules are lent to the guest as /lib/modules.
//!
//! KVM is used where the host's KVM runs ordinary guests (kvm_intel or
//! kvm_amd); elsewhere (kvm_pvm, which boots only kernels built for it, or
//! no /dev/kvm) QEMU emulates the CPU, slower but the same kernel.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo, install, install_bare, output, run};

/// virtme-ng release known to boot Debian's kernels over the host's root.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// The suites run in the guest: (test target, filter). The smoke set is
/// what CI runs: every program through the guest's verifier, attach,
/// replace and detach, and bans end to end with the egress programs.
const SUITES: &[(&str, &str)] = &[("prog_test_run", ""), ("e2e", ""), ("detect_kernel", "")];
const SMOKE: &[(&str, &str)] = &[
    ("prog_test_run", "the_verifier"),
    ("e2e", "block_and_unblock_between_two_clients"),
    (
        "e2e",
        "a_new_version_replaces_the_pinned_program_without_a_gap",
    ),
];

/// The newest Debian package of the kernel line `version`: its name.
fn package(version: &str) -> Result<String> {
    let pattern = match version {
        "6.1" => r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        "6.12" => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
        other => bail!("--kernel {other}: the lines tested are 6.1 (Debian 12) and 6.12"),
    };
    let search = || {
        output(Command::new("apt-cache").args(["search", "--names-only", pattern]))
            .unwrap_or_default()
    };
    let mut found = search();
    if found.trim().is_empty() {
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        found = search();
    }
    found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| {
            name.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .map(str::to_string)
        .with_context(|| format!("no Debian package matches {pattern}"))
}

/// The kernel image and its modules directory, downloaded and unpacked
/// once into target/kernels/<package>/.
fn kernel(root: &Path, version: &str) -> Result<(PathBuf, PathBuf)> {
    let pkg = package(version)?;
    let dir = root.join("target/kernels").join(&pkg);
    let tree = dir.join("tree");
    if !tree.join("boot").exists() {
        std::fs::create_dir_all(&dir)?;
        run(Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(&dir))?;
        let deb = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    }
    let image = std::fs::read_dir(tree.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("the package holds no vmlinuz")?;
    Ok((image, tree.join("lib/modules")))
}

/// virtme-ng's `vng`, installed from PyPI if missing: into the `python3`
/// in use, or, where that refuses (Debian's own, PEP 668), into a virtual
/// environment under target/kernels/.
fn vng(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/kernels/venv");
    let in_venv = venv.join("bin/vng");
    if in_venv.exists() {
        return Ok(in_venv);
    }
    let scripts = || {
        output(Command::new("python3").args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ]))
        .map(|s| PathBuf::from(s.trim()).join("vng"))
    };
    if let Some(p) = scripts().filter(|p| p.exists()) {
        return Ok(p);
    }
    if run(Command::new("python3").args(["-m", "pip", "install", "-q", VIRTME_NG])).is_ok() {
        if let Some(p) = scripts().filter(|p| p.exists()) {
            return Ok(p);
        }
    }
    install(&[("/usr/lib/python3/dist-packages/pip", "python3-pip")])?;
    install(&[("/usr/share/doc/python3-venv", "python3-venv")])?;
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", VIRTME_NG]))?;
    anyhow::ensure!(
        in_venv.exists(),
        "pip installed virtme-ng, but no vng script"
    );
    Ok(in_venv)
}

/// Whether this host's KVM boots an ordinary kernel.
fn hardware_kvm() -> bool {
    Path::new("/dev/kvm").exists()
        && (Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists())
}

/// The test executables of `targets`, built if needed (the profile
/// `cargo xtask test` builds them in, so CI builds them once).
fn executables(targets: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut c = cargo();
    c.args(["test", "-p", "sip-xdp-tests", "--no-run"]);
    for t in targets {
        c.args(["--test", t]);
    }
    eprintln!("+ {c:?}");
    let out = c.output().context("building the test executables")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("building the test executables failed:\n{text}");
    }
    // "  Executable tests/e2e.rs (target/debug/deps/e2e-0123abcd)"
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Executable tests/"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(".rs (")?;
            Some((name.to_string(), PathBuf::from(rest.strip_suffix(')')?)))
        })
        .collect())
}

pub fn test(root: &Path, version: &str, smoke: bool) -> Result<()> {
    install_bare(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("depmod", "kmod"),
        ("busybox", "busybox-static"),
    ])?;
    let vng = vng(root)?;
    let (image, modules) = kernel(root, version)?;
    let suites = if smoke { SMOKE } else { SUITES };
    let mut targets: Vec<&str> = suites.iter().map(|(t, _)| *t).collect();
    targets.dedup();
    let bins = executables(&targets)?;
    let out = root.join("target/kernels/out");
    // A result left from an earlier run must never read as this one's.
    if out.exists() {
        std::fs::remove_dir_all(&out).context("clearing target/kernels/out")?;
    }
    std::fs::create_dir_all(&out)?;
    // One shell script: the guest mounts bpffs, says which kernel it runs,
    // and runs each suite one test at a time (kernel state is shared),
    // recording each exit status beside its output.
    let mut script = String::from("mount -t bpf bpf /sys/fs/bpf\nuname -r > \"$OUT/uname\"\n");
    for (i, (target, filter)) in suites.iter().enumerate() {
        let bin = &bins
            .iter()
            .find(|(n, _)| n == target)
            .with_context(|| format!("no executable for {target}"))?
            .1;
        script.push_str(&format!(
            "{} --test-threads=1 {filter} > \"$OUT/{i}.log\" 2>&1; echo $? > \"$OUT/{i}.rc\"\n",
            root.join(bin).display()
        ));
    }
    std::fs::write(out.join("guest.sh"), &script)?;
    let mut vm = Command::new(&vng);
    vm.arg("--run")
        .arg(&image)
        .args(["--cpus", "2", "--memory", "4G", "--disable-microvm"])
        .arg(format!("--rodir=/lib/modules={}", modules.display()))
        .arg(format!("--rwdir={}", out.display()))
        .arg(format!("--cwd={}", root.join("tests").display()))
        .arg("--exec")
        .arg(format!(
            "OUT={out} SIP_XDP_BIN={bin} sh {out}/guest.sh",
            out = out.display(),
            bin = root.join("target/release/sip-xdp").display()
        ));
    if !hardware_kvm() {
        eprintln!("this host's KVM boots only kernels built for it: the guest's CPU is emulated");
        vm.arg("--disable-kvm");
    }
    // QEMU opens its standard output again, truncating it: a file of its
    // own, or it would empty the log this command writes to.
    let console = out.join("console.log");
    vm.stdout(std::fs::File::create(&console)?)
        .stderr(std::fs::File::create(out.join("qemu.log"))?);
    eprintln!("+ {vm:?}");
    // The verdict is each suite's recorded status: vng's own exit status
    // also reflects how the guest powered off.
    let status = vm.status().context("running vng")?;
    let Ok(uname) = std::fs::read_to_string(out.join("uname")) else {
        bail!(
            "the guest never ran the suites ({status}); see {} and {}",
            console.display(),
            out.join("qemu.log").display()
        );
    };
    println!("guest kernel: {}", uname.trim());
    let mut failed = Vec::new();
    for (i, (target, filter)) in suites.iter().enumerate() {
        let log = std::fs::read_to_string(out.join(format!("{i}.log"))).unwrap_or_default();
        let rc = std::fs::read_to_string(out.join(format!("{i}.rc"))).unwrap_or_default();
        println!("--- {target} {filter} (kernel {})", uname.trim());
        print!("{log}");
        // A filter that matches nothing passes nothing: a renamed test
        // must not turn the set green.
        let ran = log
            .lines()
            .filter_map(|l| l.strip_prefix("test result: ok. "))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            .sum::<u32>();
        if rc.trim() != "0" || ran == 0 {
            failed.push(format!("{target} {filter}").trim().to_string());
        }
    }
    if !failed.is_empty() {
        bail!("on kernel {}: failed: {}", uname.trim(), failed.join(", "));
    }
    println!("kernel {}: every suite passed", uname.trim());
    Ok(())
}
