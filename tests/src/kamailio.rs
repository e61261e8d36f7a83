//! A real Kamailio registrar for the labs (Debian's `kamailio`, installed
//! by `cargo xtask test`), configured as operators run it: OPTIONS
//! keep-alives answered statelessly before anything else, as the stock
//! configuration's `route[REQINIT]` does (the reply echoes the request's
//! Via, From, To, Call-ID and CSeq, whatever method the CSeq names), then
//! `sanity_check`, REGISTER challenged with digest authentication (one
//! account: any user, password `secret`; a wrong password is challenged
//! again) and saved in memory, anything else answered 404. Every request
//! that reaches the script is logged (`requests_from`).

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use crate::lab::Netns;

/// The lab accounts' password.
pub const PASSWORD: &str = "secret";

/// Kamailio in `ns` on port 5060 of each of `ips`, stopped on drop.
pub struct Kamailio {
    child: Child,
    dir: PathBuf,
}

impl Kamailio {
    pub fn start(ns: &Netns, ips: &[IpAddr]) -> Self {
        Self::start_with(ns, ips, true)
    }

    /// Kamailio without the line per request: as an operator runs it, for
    /// measuring what a request costs it (`requests_from` then counts
    /// nothing).
    pub fn start_quiet(ns: &Netns, ips: &[IpAddr]) -> Self {
        Self::start_with(ns, ips, false)
    }

    /// The main process, whose children are the workers.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_with(ns: &Netns, ips: &[IpAddr], log_requests: bool) -> Self {
        let ip = ips[0];
        let dir = std::env::temp_dir().join(format!("kamailio-{}-{}", std::process::id(), ns.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let host = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let listen = host(&ip);
        let cfg = dir.join("kamailio.cfg");
        let listens: Vec<String> = ips
            .iter()
            .map(|i| format!("listen=udp:{}:5060", host(i)))
            .collect();
        let mut text = config(&listens.join("\n"));
        if !log_requests {
            text = text.replace("    xlog(\"L_INFO\", \"request $rm from $si\\n\");\n", "");
            assert!(!text.contains("request $rm"), "the request log line stayed");
        }
        std::fs::write(&cfg, text).unwrap();
        let child = ns
            .command("kamailio")
            .args(["-f", cfg.to_str().unwrap()])
            .args(["-P", dir.join("kamailio.pid").to_str().unwrap()])
            .args(["-Y", dir.to_str().unwrap(), "-E", "-DD"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap())
            .spawn()
            .expect("starting kamailio (installed by `cargo xtask test`)");
        let k = Self { child, dir };
        // Listening once its workers are up: a keep-alive is answered.
        let sock = ns.enter(|| std::net::UdpSocket::bind((ip, 0)).unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let ping = format!(
            "OPTIONS sip:{listen} SIP/2.0\r\nVia: SIP/2.0/UDP {listen}:{};branch=z9hG4bK-up\r\n\
             From: <sip:up@{listen}>;tag=1\r\nTo: <sip:{listen}>\r\nCall-ID: up@{listen}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            sock.local_addr().unwrap().port()
        );
        let mut buf = [0u8; 2048];
        for _ in 0..50 {
            let _ = sock.send_to(ping.as_bytes(), (ip, 5060));
            if sock.recv_from(&mut buf).is_ok() {
                return k;
            }
        }
        panic!("kamailio did not answer:\n{}", k.log());
    }

    /// What Kamailio logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    /// Requests from `src` that reached Kamailio's script.
    pub fn requests_from(&self, src: IpAddr) -> usize {
        let tail = format!(" from {src}");
        self.log()
            .lines()
            .filter(|l| l.contains("request ") && l.trim_end().ends_with(&tail))
            .count()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM: the main process stops its workers.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(listens: &str) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=2
auto_aliases=no
{listens}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

request_route {{
    # What reached the SIP socket, for the tests to count.
    xlog("L_INFO", "request $rm from $si\n");
    # As the stock route[REQINIT]: keep-alives first, answered statelessly.
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "Keepalive");
        exit;
    }}
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check()) {{
        exit;
    }}
    if (is_method("REGISTER")) {{
        if (!pv_auth_check("$fd", "{PASSWORD}", "0", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    sl_send_reply("404", "Not Found");
}}
"#
    )
}
