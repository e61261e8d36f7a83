//! The first-line classifier and the header scan the kernel runs, on any
//! bytes: never a panic, a request class only with its method token, and
//! a scan that stops where the kernel's does (a message cut at the scan's
//! length reads the same).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp_common::{
    classify::classify_payload,
    exchange::{scan, EXCHANGE_SCAN, NONCE, TRANSACTION},
    SipClass, CLASSIFY_LEN,
};

fuzz_target!(|data: &[u8]| {
    let class = classify_payload(data);
    if matches!(
        class,
        SipClass::Register | SipClass::Invite | SipClass::Options | SipClass::OtherRequest
    ) {
        let head = &data[..data.len().min(CLASSIFY_LEN)];
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
});
