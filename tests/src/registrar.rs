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
