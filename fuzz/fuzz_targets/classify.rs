//! The first-line classifier and the header scan the kernel runs, on any
//! bytes: never a panic, a request class only with its method token,
//! SigComp exactly when the first byte says so, a
//! scan that stops where the kernel's does (a message cut at the scan's
//! length reads the same), eight bytes skipped at once leaving the scan
//! where eight steps would, and the deny lists' table agreeing with a
//! plain substring search.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use sip_xdp_common::{
    classify::classify_payload,
    exchange::{
        scan, scan_from, HeaderScan, EXCHANGE_SCAN, NONCE, READ_ADDRESSES, READ_AGENTS,
        READ_METHODS, TRANSACTION,
    },
    rules::{compile, RuleLists, RuleTable},
    SipClass, CLASSIFY_LEN,
};

const AGENTS: [&str; 4] = ["friendly-scanner", "sipvicious", "sip", "vicious-x"];

fn table() -> &'static RuleTable {
    static T: OnceLock<RuleTable> = OnceLock::new();
    T.get_or_init(|| {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        compile(&RuleLists {
            agents: v(&AGENTS),
            users: v(&["100", "sipvicious"]),
            domains: v(&["evil.example"]),
            methods: v(&["PUBLISH", "SUBSCRIBE"]),
        })
        .expect("the lists compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let class = classify_payload(data);
    // SigComp is known by its first byte (RFC 3320 §7), and only by it.
    assert_eq!(class == SipClass::SigComp, data.first().is_some_and(|&b| b >= 0xf8));
    if matches!(
        class,
        SipClass::Register | SipClass::Invite | SipClass::Options | SipClass::OtherRequest
    ) {
        let head = &data[..data.len().min(CLASSIFY_LEN)];
        // After the CR/LF a server skips.
        let lead = head.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        let head = &head[lead..];
        let sp = head.iter().position(|&b| b == b' ').expect("a request has its space");
        assert!(head[..sp].iter().all(u8::is_ascii_uppercase));
    }
    let whole = scan(data, 0);
    let _ = (whole.transaction(), whole.nonce(), whole.cseq_method(), whole.start());
    assert_eq!(whole, scan(&data[..data.len().min(EXCHANGE_SCAN)], 0));
    // A scan that stops at what it wants agrees on what it found.
    let early = scan(data, TRANSACTION | NONCE);
    assert_eq!(early.transaction(), whole.transaction());
    assert_eq!(early.nonce(), whole.nonce());
    // The kernel's way (words skipped whole) and byte by byte agree.
    let lists = READ_AGENTS | READ_ADDRESSES | READ_METHODS;
    let exchange = data.first().is_some_and(|b| b & 1 == 0);
    let words = scan_from(HeaderScan::ingress(false, lists, exchange), data, table());
    let mut bytes = HeaderScan::ingress(false, lists, exchange);
    for &b in data.iter().take(EXCHANGE_SCAN) {
        if bytes.step(b, table()) {
            break;
        }
    }
    assert_eq!(words, bytes);
    let _ = words.denied();
    let lower = data.to_ascii_lowercase();
    let plain = AGENTS
        .iter()
        .any(|a| lower.windows(a.len()).any(|w| w == a.as_bytes()));
    assert_eq!(table().agent_matches(data), plain);
});
