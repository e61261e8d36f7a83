//! CrowdSec's Local API for the tests and benchmarks: Debian's `crowdsec`
//! run offline (`-no-cs`) in a lab namespace, driven with `cscli`.

use std::time::Duration;

use crate::lab::Netns;

/// CrowdSec's Local API (Debian's crowdsec, `-no-cs`) in the server's
/// namespace, with a bouncer key of its own; stopped, its bouncer and
/// decisions removed, on drop.
pub struct Lapi<'a> {
    ns: &'a Netns,
    child: std::process::Child,
    pub bouncer: String,
    decisions: Vec<Vec<String>>,
}

impl<'a> Lapi<'a> {
    pub fn start(ns: &'a Netns) -> Self {
        let child = ns
            .command("crowdsec")
            .args(["-c", "/etc/crowdsec/config.yaml", "-no-cs"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("crowdsec (installed by `cargo xtask test`)");
        let up = crate::cli::eventually(Duration::from_secs(30), || {
            ns.enter(|| std::net::TcpStream::connect("127.0.0.1:8080").is_ok())
        });
        assert!(up, "CrowdSec's Local API did not come up on 127.0.0.1:8080");
        Self {
            ns,
            child,
            bouncer: format!("sip-xdp-test-{}", std::process::id()),
            decisions: Vec::new(),
        }
    }

    pub fn cscli(&self, args: &[&str]) -> String {
        let out = self.ns.command("cscli").args(args).output().unwrap();
        assert!(out.status.success(), "cscli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn key(&self) -> String {
        let _ = self
            .ns
            .command("cscli")
            .args(["bouncers", "delete", &self.bouncer])
            .output();
        self.cscli(&["bouncers", "add", &self.bouncer, "-o", "raw"])
    }

    /// `cscli decisions add ARGS`, deleted again on drop.
    pub fn add(&mut self, args: &[&str]) {
        let mut all = vec!["decisions", "add"];
        all.extend_from_slice(args);
        self.cscli(&all);
        self.decisions
            .push(args.iter().take(2).map(|s| s.to_string()).collect());
    }
}

impl Lapi<'_> {
    /// Stops the Local API (its state stays for `Drop` to clean).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Lapi<'_> {
    fn drop(&mut self) {
        for d in &self.decisions {
            let _ = self
                .ns
                .command("cscli")
                .args(["decisions", "delete", &d[0], &d[1]])
                .output();
        }
        let _ = self
            .ns
            .command("cscli")
            .args(["bouncers", "delete", &self.bouncer])
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
