//! SIP samples: a ring-buffer record decoded and its payload parsed with
//! rsip into what the scanner detector needs. A payload rsip cannot parse is
//! counted as malformed and skipped: the reader never stops on bad input.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use rsip::{
    headers::{ToTypedHeader, UntypedHeader},
    prelude::HeadersExt,
    SipMessage,
};
use sip_xdp_common::{
    addr::ip_of,
    classify::{classify_payload, SipClass},
    maps::SampleKind,
};
use tokio::sync::mpsc;

use crate::{kernel::ring, Result};

/// What the controller extracts from a sampled SIP request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SipInfo {
    /// Request method; `None` for a response.
    pub method: Option<String>,
    pub user_agent: Option<String>,
    pub request_uri: Option<String>,
    pub ruri_user: Option<String>,
    pub to_user: Option<String>,
}

/// One decoded sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub kind: SampleKind,
    /// Kernel monotonic time of the packet.
    pub ts_ns: u64,
    /// Parsed request or response; `Err` with why when it is not SIP.
    pub sip: std::result::Result<SipInfo, String>,
}

/// Reader counters, shared with metrics.
#[derive(Debug, Default)]
pub struct SampleStats {
    pub received: AtomicU64,
    pub parsed: AtomicU64,
    pub malformed: AtomicU64,
    /// Records too short for a header (never expected; counted, skipped).
    pub invalid: AtomicU64,
    /// Decoded samples dropped because the controller was behind.
    pub queue_full: AtomicU64,
}

/// Decodes one ring-buffer record; `None` if it is too short to be one.
pub fn decode(record: &[u8]) -> Option<Sampled> {
    let (h, payload) = ring::split(record)?;
    let kind = SampleKind::from_u8(h.kind)?;
    // SigComp is parsed like the rest: a SIP server reads what follows its
    // first byte as a request if it can, and so does the scanner detector.
    let sip = match classify_payload(payload) {
        SipClass::Malformed => Err("not SIP (kernel classifier)".to_string()),
        _ => parse_sip(payload, payload.len() < usize::from(h.payload_len)),
    };
    Some(Sampled {
        src: ip_of(&h.src),
        src_port: h.src_port,
        dst_port: h.dst_port,
        kind,
        ts_ns: h.ts_ns,
        sip,
    })
}

pub use ring::encode;

/// Parses a SIP message with rsip. A payload cut at the sample size is
/// trimmed to its last complete header line first, so that a long INVITE
/// still yields its request line, User-Agent and To.
pub fn parse_sip(payload: &[u8], truncated: bool) -> std::result::Result<SipInfo, String> {
    let owned;
    let bytes = if truncated || !contains(payload, b"\r\n\r\n") {
        let end = rfind(payload, b"\r\n").ok_or("no complete line")?;
        let mut v = payload[..end + 2].to_vec();
        v.extend_from_slice(b"\r\n");
        owned = v;
        &owned[..]
    } else {
        payload
    };
    let msg = match SipMessage::try_from(bytes) {
        Ok(m) => m,
        // rsip refuses some well-formed messages (IPv6 references in URIs,
        // the normal form for IPv6 phones, among them): take what the
        // detectors need from the lines themselves.
        Err(e) => return lenient(bytes).ok_or_else(|| short(&e.to_string())),
    };
    let user_agent = msg.user_agent_header().map(|h| field(h.value()));
    let to_user = msg
        .to_header()
        .ok()
        .and_then(|h| h.typed().ok())
        .and_then(|t| t.uri.user().map(user));
    Ok(match &msg {
        SipMessage::Request(r) => SipInfo {
            method: Some(field(&r.method().to_string())),
            user_agent,
            request_uri: Some(field(&r.uri().to_string())),
            ruri_user: r.uri().user().map(user),
            to_user,
        },
        SipMessage::Response(_) => SipInfo {
            user_agent,
            to_user,
            ..Default::default()
        },
    })
}

/// Longest attacker-chosen string kept from a sample; user parts are
/// shorter still (they are extensions, and the scanner keeps sets of them).
const MAX_FIELD: usize = 256;
const MAX_USER: usize = 64;

fn field(s: &str) -> String {
    s.trim().chars().take(MAX_FIELD).collect()
}

fn user(s: &str) -> String {
    s.trim().chars().take(MAX_USER).collect()
}

/// Method, Request-URI, its user, User-Agent and To user, read line by line
/// from a message rsip would not parse. A start line that is not
/// `METHOD URI SIP/2.0` or `SIP/2.0 CODE ...` is still refused.
fn lenient(bytes: &[u8]) -> Option<SipInfo> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let mut info = SipInfo::default();
    if !start.starts_with("SIP/2.0 ") {
        let mut parts = start.split(' ');
        let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
        let token = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
        if !token || version != "SIP/2.0" || parts.next().is_some() {
            return None;
        }
        info.method = Some(method.to_string());
        info.ruri_user = uri_user(uri);
        info.request_uri = Some(field(uri));
    }
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("User-Agent") {
            info.user_agent = Some(field(value));
        } else if name.eq_ignore_ascii_case("To") || name.eq_ignore_ascii_case("t") {
            info.to_user = uri_user(value);
        }
    }
    Some(info)
}

/// The user part of the first sip:/sips: URI in `s`, if it has one.
fn uri_user(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let at = lower
        .find("sip:")
        .map(|i| i + 4)
        .or_else(|| lower.find("sips:").map(|i| i + 5))?;
    let rest = &s[at..];
    let end = rest.find(['@', ';', '>', '?', ' ']).unwrap_or(rest.len());
    (rest[end..].starts_with('@') && end > 0).then(|| user(&rest[..end]))
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

fn rfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).rposition(|w| w == n)
}

/// Reads the ring until the receiver goes away. Parsing happens on the
/// reader task, off the controller's loop; a full queue drops the sample
/// (counted) rather than stall the ring, which the kernel would then fill
/// and lose.
pub fn spawn_reader(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Sampled>,
    stats: Arc<SampleStats>,
) -> Result<tokio::task::JoinHandle<()>> {
    ring::spawn_reader(ring, move |record| {
        stats.received.fetch_add(1, Ordering::Relaxed);
        let Some(s) = decode(record) else {
            stats.invalid.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        if s.sip.is_ok() {
            stats.parsed.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
        }
        match tx.try_send(s) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.queue_full.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_xdp_common::maps::SampleHeader;

    const INVITE: &[u8] = b"INVITE sip:1001@198.51.100.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bK-1\r\n\
From: <sip:100@203.0.113.9>;tag=1\r\n\
To: <sip:1001@198.51.100.1>\r\n\
Call-ID: abc@203.0.113.9\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
User-Agent: friendly-scanner\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_method_agent_and_users() {
        let i = parse_sip(INVITE, false).unwrap();
        assert_eq!(i.method.as_deref(), Some("INVITE"));
        assert_eq!(i.user_agent.as_deref(), Some("friendly-scanner"));
        assert_eq!(i.ruri_user.as_deref(), Some("1001"));
        assert_eq!(i.to_user.as_deref(), Some("1001"));
        assert_eq!(i.request_uri.as_deref(), Some("sip:1001@198.51.100.1"));
    }

    #[test]
    fn a_truncated_sample_keeps_its_complete_headers() {
        let cut = &INVITE[..INVITE.len() - 10];
        let i = parse_sip(cut, true).unwrap();
        assert_eq!(i.method.as_deref(), Some("INVITE"));
        assert_eq!(i.user_agent.as_deref(), Some("friendly-scanner"));
    }

    #[test]
    fn ipv6_references_are_read() {
        // An IPv6 phone's OPTIONS and REGISTER, and a scanner over IPv6.
        let options = b"OPTIONS sip:100@[2001:db8:1::1] SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8:1::2]:5060;branch=z9hG4bK-v6a;rport\r\n\
Max-Forwards: 70\r\n\
From: \"sipvicious\" <sip:100@[2001:db8:1::2]>;tag=6637\r\n\
To: \"sipvicious\" <sip:100@[2001:db8:1::1]>\r\n\
Call-ID: 5e2c@[2001:db8:1::2]\r\n\
CSeq: 1 OPTIONS\r\n\
Contact: <sip:100@[2001:db8:1::2]:5060>\r\n\
User-Agent: friendly-scanner\r\n\
Content-Length: 0\r\n\r\n";
        let i = parse_sip(options, false).unwrap();
        assert_eq!(i.method.as_deref(), Some("OPTIONS"));
        assert_eq!(i.user_agent.as_deref(), Some("friendly-scanner"));
        assert_eq!(i.ruri_user.as_deref(), Some("100"));
        assert_eq!(i.to_user.as_deref(), Some("100"));
        assert_eq!(i.request_uri.as_deref(), Some("sip:100@[2001:db8:1::1]"));
        let register = b"REGISTER sip:[2001:db8:1::1]:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8:1::2]:5062;branch=z9hG4bK-v6b;rport\r\n\
From: <sip:1001@[2001:db8:1::1]>;tag=a1\r\n\
t: <sip:1001@[2001:db8:1::1]>\r\n\
Call-ID: 7a@[2001:db8:1::2]\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:1001@[2001:db8:1::2]:5062>;expires=3600\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Content-Length: 0\r\n\r\n";
        let i = parse_sip(register, false).unwrap();
        assert_eq!(i.method.as_deref(), Some("REGISTER"));
        assert_eq!(i.ruri_user, None, "a registrar URI has no user");
        assert_eq!(i.to_user.as_deref(), Some("1001"));
        assert_eq!(i.user_agent.as_deref(), Some("Yealink SIP-T46S 66.86.0.15"));
        // Attacker-chosen strings are cut.
        let long = String::from_utf8_lossy(options)
            .replace("friendly-scanner", &"x".repeat(5000))
            .into_bytes();
        let i = parse_sip(&long, false).unwrap();
        assert_eq!(i.user_agent.map(|u| u.len()), Some(MAX_FIELD));
        let long_user = String::from_utf8_lossy(INVITE)
            .replace("sip:1001@", &format!("sip:{}@", "7".repeat(900)))
            .replace("friendly-scanner", &"y".repeat(900))
            .into_bytes();
        let i = parse_sip(&long_user, false).unwrap();
        assert_eq!(i.ruri_user.map(|u| u.len()), Some(MAX_USER));
        assert_eq!(i.to_user.map(|u| u.len()), Some(MAX_USER));
        assert_eq!(i.user_agent.map(|u| u.len()), Some(MAX_FIELD));
        assert!(i.request_uri.unwrap().len() <= MAX_FIELD);
        // Still not SIP: a bad start line.
        assert!(parse_sip(b"OPTIONS sip:100@[2001:db8::1] HTTP/1.1\r\n\r\n", false).is_err());
        assert!(parse_sip(b"options sip:100@[2001:db8::1] SIP/2.0\r\n\r\n", false).is_err());
    }

    #[test]
    fn responses_have_no_method() {
        let r = b"SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-2\r\n\
From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        let i = parse_sip(r, false).unwrap();
        assert_eq!(i.method, None);
        assert_eq!(i.to_user.as_deref(), Some("b"));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for junk in [
            &b""[..],
            b"\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"INVITE\r\n\r\n",
            &[0xff; 300],
        ] {
            assert!(parse_sip(junk, false).is_err(), "{junk:?}");
            assert!(parse_sip(junk, true).is_err(), "{junk:?}");
        }
        // Every prefix: nothing before the request line is complete; after
        // it, the method is right and a header value is never a cut one.
        let first_line = INVITE.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let ua_line = INVITE
            .windows(16)
            .position(|w| w == b"friendly-scanner")
            .unwrap()
            + 18;
        for n in 0..INVITE.len() {
            match parse_sip(&INVITE[..n], true) {
                Ok(i) => {
                    assert!(n >= first_line, "parsed a cut request line at {n}");
                    assert_eq!(i.method.as_deref(), Some("INVITE"), "prefix {n}");
                    if n >= ua_line {
                        assert_eq!(i.user_agent.as_deref(), Some("friendly-scanner"));
                    } else {
                        assert_eq!(i.user_agent, None, "prefix {n}");
                    }
                }
                Err(_) => assert!(n < ua_line, "prefix {n} lost a complete message"),
            }
        }
        // Random bytes are not SIP.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push((x & 0xff) as u8);
            }
            assert!(parse_sip(&buf, x & 1 == 0).is_err(), "{buf:?}");
        }
    }

    #[test]
    fn decodes_a_record() {
        let mut h = SampleHeader {
            ts_ns: 42,
            src: sip_xdp_common::addr::key_of("203.0.113.9".parse().unwrap()),
            src_port: 5070,
            dst_port: 5060,
            payload_len: INVITE.len() as u16,
            cap_len: INVITE.len() as u16,
            kind: SampleKind::First as u8,
            _pad: [0; 7],
        };
        let rec = encode(&h, INVITE);
        let s = decode(&rec).unwrap();
        assert_eq!(s.src.to_string(), "203.0.113.9");
        assert_eq!((s.src_port, s.dst_port, s.ts_ns), (5070, 5060, 42));
        assert_eq!(s.kind, SampleKind::First);
        assert_eq!(
            s.sip.unwrap().user_agent.as_deref(),
            Some("friendly-scanner")
        );
        // Not SIP by the kernel's classifier: not handed to rsip.
        let rec2 = encode(&h, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(decode(&rec2).unwrap().sip.is_err());
        assert!(decode(&rec[..10]).is_none());
        h.kind = 99;
        assert!(decode(&encode(&h, b"")).is_none());
    }
}
