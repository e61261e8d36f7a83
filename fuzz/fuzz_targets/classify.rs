//! The first-line classifier and the CSeq scan the kernel runs, on any
//! bytes: never a panic, and a request class only with its method token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp_common::{
    classify::classify_payload,
    cseq::{cseq_method, CSEQ_BUF, CSEQ_SCAN},
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
    let mut buf = [0u8; CSEQ_BUF];
    let n = data.len().min(CSEQ_SCAN);
    buf[..n].copy_from_slice(&data[..n]);
    let _ = cseq_method(&buf, n);
});
