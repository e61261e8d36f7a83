//! A tiny SIP responder for the labs, answering as Kamailio's stock
//! configuration does: a REGISTER without credentials gets a 401 with a
//! fresh digest nonce, one with credentials a 200 OK when its digest
//! response is `GOOD_RESPONSE` (any other is a wrong password, challenged
//! again with a 401),
//! INVITE a 404 (unknown extension) and anything else a stateless 200,
//! echoing the headers a UAC matches a response by (the CSeq included,
//! whatever method it names). It lets a test make the SBC's egress say
//! what a real registrar would, without a credentials database: the
//! digest itself is not checked.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::lab::Netns;

pub struct Registrar {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Registrar {
    /// Serves on `addr` inside `ns` until dropped.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let sock = ns.enter(|| UdpSocket::bind(addr).expect("binding the registrar"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                r.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = answer(&buf[..n], r.load(Ordering::Relaxed)) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Self {
            stop,
            received,
            thread: Some(thread),
        }
    }

    /// Requests that reached the server socket.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The response to one request, `seq` the registrar's count of requests
/// (its nonces differ by it); `None` for a response or garbage.
pub fn answer(request: &[u8], seq: u64) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(request).ok()?;
    let method = text.split(' ').next()?;
    if method.is_empty() || method.starts_with("SIP/") {
        return None;
    }
    let credentials = text
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"));
    let right = format!("response=\"{GOOD_RESPONSE}\"");
    let challenged = method == "REGISTER" && credentials.is_none_or(|c| !c.contains(&right));
    let status = match method {
        "INVITE" => "404 Not Found",
        "REGISTER" if challenged => "401 Unauthorized",
        _ => "200 OK",
    };
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in text.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim();
        if ["Via", "From", "To", "Call-ID", "CSeq"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if challenged {
        let nonce = format!("{:016x}", (seq + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        out.push_str(&format!(
            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"{nonce}\", qop=\"auth\"\r\n"
        ));
    } else if method == "REGISTER" {
        out.push_str("Expires: 3600\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// A REGISTER for `user` at `server`, as a desk phone sends it first.
pub fn register_request(
    user: &str,
    server: std::net::IpAddr,
    from: SocketAddr,
    seq: usize,
) -> Vec<u8> {
    register_with(user, server, from, seq, seq, None)
}

/// The digest response the responder above takes for the right password.
pub const GOOD_RESPONSE: &str = "6629fae49393a05397450978507c4ef1";

/// The digest `nonce` in a 401 or 407.
pub fn nonce_of(response: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(response).ok()?;
    let at = text.find(" nonce=\"")? + " nonce=\"".len();
    Some(text[at..].split('"').next()?.to_string())
}

/// A REGISTER of registration `seq` (its Call-ID) with CSeq `cseq`,
/// carrying credentials for `nonce` if given (`response` is what the
/// responder above judges by: anything but `GOOD_RESPONSE` is a wrong
/// password).
pub fn register_with(
    user: &str,
    server: std::net::IpAddr,
    from: SocketAddr,
    seq: usize,
    cseq: usize,
    auth: Option<(&str, &str)>,
) -> Vec<u8> {
    let host = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        std::net::IpAddr::V4(a) => a.to_string(),
    };
    let (me, srv) = (host(from.ip()), host(server));
    format!(
        "REGISTER sip:{srv} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me}:{port};branch=z9hG4bK-reg{seq}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{srv}>;tag=r{seq}\r\n\
         To: <sip:{user}@{srv}>\r\n\
         Call-ID: reg-{user}-{seq}@{me}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{me}:{port}>;expires=3600\r\n\
         User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
         Expires: 3600\r\n\
         {auth}Content-Length: 0\r\n\r\n",
        port = from.port(),
        auth = auth.map_or(String::new(), |(nonce, response)| format!(
            "Authorization: Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", \
             uri=\"sip:{srv}\", response=\"{response}\", cnonce=\"c0ffee\", nc=00000001, qop=auth\r\n"
        )),
    )
    .into_bytes()
}

/// Registers from `sock` with digest authentication (REGISTER, 401,
/// REGISTER with credentials for its nonce, 200) and RFC 3261
/// retransmissions (500 ms, doubling, four sends of each request, 7.5 s at
/// most each): the time to the 200 and how many sends it took, counting
/// the two requests as one (1: each was answered on its first send);
/// `None` if none was answered.
pub fn register(
    sock: &UdpSocket,
    server: SocketAddr,
    user: &str,
    seq: usize,
) -> Option<(Duration, usize)> {
    let local = sock.local_addr().ok()?;
    let mut msg = register_request(user, server.ip(), local, seq);
    let start = std::time::Instant::now();
    let mut wait = Duration::from_millis(500);
    let mut buf = [0u8; 2048];
    let (mut sends, mut round) = (0, 0);
    while round < 4 {
        round += 1;
        sends += 1;
        sock.send_to(&msg, server).ok()?;
        let until = std::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).ok()?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return Some((start.elapsed(), sends));
                }
                if buf[..n].starts_with(b"SIP/2.0 401") {
                    let nonce = nonce_of(&buf[..n])?;
                    let auth = Some((nonce.as_str(), GOOD_RESPONSE));
                    msg = register_with(user, server.ip(), local, seq, seq + 1, auth);
                    (round, wait) = (0, Duration::from_millis(250));
                    // The challenged send was answered: not a retransmission.
                    sends -= 1;
                    break;
                }
            }
        }
        wait *= 2;
    }
    None
}
