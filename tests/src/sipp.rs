//! SIPp as the protected server (UAS) and as the legitimate client (UAC).

use std::{
    net::IpAddr,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Output, Stdio},
};

use crate::lab::Netns;

/// A UAS that answers every INVITE with 404 Not Found, as a server with no
/// such extension does.
pub const UAS_404: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="404 for every INVITE">
  <recv request="INVITE" />
  <send>
    <![CDATA[

      SIP/2.0 404 Not Found
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// A UAS that answers every OPTIONS with 200 OK, as a server answering
/// keep-alives and probes does.
pub const UAS_OPTIONS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer OPTIONS">
  <recv request="OPTIONS" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Allow: INVITE, ACK, CANCEL, BYE, OPTIONS
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// A SIPp server in `ns` on `ip:5060`, killed on drop.
pub struct Uas {
    child: Child,
    dir: PathBuf,
}

impl Uas {
    /// The built-in `uas` scenario, or `scenario` XML.
    pub fn start(ns: &Netns, ip: IpAddr, scenario: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!("sipp-uas-{}-{}", std::process::id(), ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = ns.command("sipp");
        match scenario {
            Some(xml) => {
                let f = dir.join("uas.xml");
                std::fs::write(&f, xml).unwrap();
                cmd.args(["-sf", f.to_str().unwrap()]);
            }
            None => {
                cmd.args(["-sn", "uas"]);
            }
        }
        let child = cmd
            .args(["-i", &ip.to_string(), "-p", "5060", "-nostdin"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sipp (installed by `cargo xtask test`)");
        // SIPp binds its socket within a few ms of starting.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Self { child, dir }
    }

    /// SIPp's own pid (nsenter execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a finished UAC run reports.
#[derive(Debug)]
pub struct UacResult {
    pub exit_ok: bool,
    pub successful: u64,
    pub failed: u64,
    pub output: String,
}

/// Runs the built-in `uac` scenario (INVITE, ACK, BYE) from `ns` to
/// `target:5060`: `calls` calls at `rate` per second, bounded by a timeout.
pub fn uac(ns: &Netns, local: IpAddr, target: IpAddr, calls: u32, rate: u32) -> UacResult {
    let out: Output = ns
        .command("sipp")
        .args([
            "-sn",
            "uac",
            "-i",
            &local.to_string(),
            "-p",
            "5070",
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            &SocketAddr::new(target, 5060).to_string(),
        ])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running sipp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    UacResult {
        exit_ok: out.status.success(),
        successful: final_count(&text, "Successful call"),
        failed: final_count(&text, "Failed call"),
        output: text,
    }
}

/// A cumulative figure from SIPp's final screen, e.g. the 20 of
/// "Successful call |  ... | 20" (0 if the line is missing).
pub fn final_count(text: &str, label: &str) -> u64 {
    text.lines()
        .rev()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split('|').map(str::trim).rfind(|s| !s.is_empty()))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A phone's registration with digest authentication: REGISTER, the 401,
/// REGISTER with credentials for its nonce (SIPp computes them from `-au`
/// and `-ap`), the 200.
const REGISTER_DIGEST: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:[service]@[remote_ip]>;tag=[call_number]
To: <sip:[service]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 3600
User-Agent: SIPp phone
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
From: <sip:[service]@[remote_ip]>;tag=[call_number]
To: <sip:[service]@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
[authentication]
Max-Forwards: 70
Expires: 3600
User-Agent: SIPp phone
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"#;

/// Registers `user` with `password` from `ns` (`local`, port 5070) at
/// `target:5060`, once, bounded by a timeout.
pub fn register_digest(
    ns: &Netns,
    local: IpAddr,
    target: IpAddr,
    user: &str,
    password: &str,
) -> UacResult {
    // A directory per run: runs in one namespace may overlap.
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("sipp-reg-{}-{}-{run}", std::process::id(), ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("register.xml");
    std::fs::write(&f, REGISTER_DIGEST).unwrap();
    let out: Output = ns
        .command("sipp")
        .args([
            "-sf",
            f.to_str().unwrap(),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
        ])
        .args([
            "-i",
            &local.to_string(),
            "-p",
            "5070",
            "-m",
            "1",
            "-nostdin",
        ])
        .args([
            "-timeout",
            "20s",
            "-timeout_error",
            &SocketAddr::new(target, 5060).to_string(),
        ])
        .current_dir(&dir)
        .output()
        .expect("running sipp");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    UacResult {
        exit_ok: out.status.success(),
        successful: final_count(&text, "Successful call"),
        failed: final_count(&text, "Failed call"),
        output: text,
    }
}
