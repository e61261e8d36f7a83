//! A tiny SIP responder for the labs: answers REGISTER with 200 OK (as a
//! registrar does once digest authentication succeeded), INVITE with 404
//! (unknown extension) and anything else with 200 OK, echoing the headers a
//! UAC matches a response by. It lets a test make the SBC's egress say what
//! a real registrar would, without a registrar's credentials database.

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
                if let Some(reply) = answer(&buf[..n]) {
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

/// The response to one request; `None` for a response or garbage.
pub fn answer(request: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(request).ok()?;
    let method = text.split(' ').next()?;
    if method.is_empty() || method.starts_with("SIP/") {
        return None;
    }
    let status = match method {
        "INVITE" => "404 Not Found",
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
    if method == "REGISTER" {
        out.push_str("Expires: 3600\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// A REGISTER for `user` at `server`, as a desk phone sends it.
pub fn register_request(
    user: &str,
    server: std::net::IpAddr,
    from: SocketAddr,
    seq: usize,
) -> Vec<u8> {
    let host = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(a) => format!("[{a}]"),
        std::net::IpAddr::V4(a) => a.to_string(),
    };
    let (me, srv) = (host(from.ip()), host(server));
    format!(
        "REGISTER sip:{srv} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me}:{port};branch=z9hG4bK-reg{seq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{srv}>;tag=r{seq}\r\n\
         To: <sip:{user}@{srv}>\r\n\
         Call-ID: reg-{user}-{seq}@{me}\r\n\
         CSeq: {seq} REGISTER\r\n\
         Contact: <sip:{user}@{me}:{port}>;expires=3600\r\n\
         User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n",
        port = from.port(),
    )
    .into_bytes()
}

/// Registers from `sock` with RFC 3261 retransmissions (500 ms, doubling,
/// four sends, 7.5 s at most): the time to the 200 and how many sends it
/// took; `None` if none was answered.
pub fn register(
    sock: &UdpSocket,
    server: SocketAddr,
    user: &str,
    seq: usize,
) -> Option<(Duration, usize)> {
    let msg = register_request(user, server.ip(), sock.local_addr().ok()?, seq);
    let start = std::time::Instant::now();
    let mut wait = Duration::from_millis(500);
    let mut buf = [0u8; 2048];
    for sends in 1..=4 {
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
            }
        }
        wait *= 2;
    }
    None
}
