//! The first-line classifier and the header scan the kernel runs, on any
//! bytes: never a panic, a request class only with its method token, and
//! a scan that stops where the kernel's does (a message cut at the scan's
//! length reads the same).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp_common::{
    classify::classify_payload,
    exchange::{scan, EXCHANGE_SCAN},
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
    let whole = scan(data);
    let _ = (whole.transaction(), whole.nonce(), whole.cseq_method());
    assert_eq!(whole, scan(&data[..data.len().min(EXCHANGE_SCAN)]));
});
