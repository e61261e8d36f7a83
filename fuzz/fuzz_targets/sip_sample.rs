//! A ring-buffer record as the kernel could write it, any payload: decoded
//! and parsed without a panic, and every kept string within its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp::detect::sip::{decode, parse_sip};

fuzz_target!(|data: &[u8]| {
    if let Some(s) = decode(data) {
        if let Ok(i) = s.sip {
            for f in [&i.ruri_user, &i.to_user].into_iter().flatten() {
                assert!(f.chars().count() <= 64, "{f:?}");
            }
        }
    }
    for truncated in [false, true] {
        if let Ok(i) = parse_sip(data, truncated) {
            for f in [&i.user_agent, &i.request_uri].into_iter().flatten() {
                assert!(f.chars().count() <= 256);
            }
        }
    }
});
