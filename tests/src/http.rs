//! A small HTTP/1.1 server for tests that stand in for a remote service
//! this machine cannot reach (APIBAN, a blocklist site, a webhook
//! receiver). It listens inside a lab namespace, answers from a closure,
//! records every request, and stops by itself after a bounded time.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::lab::Netns;

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a server that hangs).
    pub delay: Duration,
}

impl Response {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<(Request, u16)>>>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    accepting: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Server {
    /// Serves on 127.0.0.1 inside `ns` for `within`.
    pub fn start(ns: &Netns, within: Duration, handler: Box<Handler>) -> Self {
        let listener = ns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(Request, u16)>>> = Arc::default();
        let log = seen.clone();
        let handler: Arc<Handler> = Arc::from(handler);
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = stopped.clone();
        let accepting = std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let end = Instant::now() + within;
            while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (log, handler) = (log.clone(), handler.clone());
                std::thread::spawn(move || serve(c, &*handler, &log));
            }
        });
        Self {
            addr,
            seen,
            stopped,
            accepting: Mutex::new(Some(accepting)),
        }
    }

    /// Closes the listening socket: from then on connections are refused,
    /// as with a site that is down.
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.accepting.lock().unwrap().take() {
            t.join().expect("the accept loop");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<(Request, u16)> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut c: TcpStream, handler: &Handler, log: &Mutex<Vec<(Request, u16)>>) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let Some(req) = read_request(&mut c) else {
        return;
    };
    let resp = handler(&req);
    log.lock().unwrap().push((req, resp.status));
    std::thread::sleep(resp.delay);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(resp.body.as_bytes());
}

fn read_request(c: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let mut lines = text[..end].lines();
        let mut first = lines.next()?.split_whitespace();
        let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            return Some(Request {
                method,
                path,
                headers,
                body,
            });
        }
    }
}

/// `GET /metrics` from inside `ns`: the Prometheus text (with the headers).
pub fn scrape(ns: &Netns, addr: &str) -> String {
    ns.enter(|| {
        let mut c = TcpStream::connect(addr).expect("metrics endpoint");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    })
}
