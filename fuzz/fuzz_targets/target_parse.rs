//! Addresses, prefixes and durations as operators type them: a value or a
//! clear error, never a panic; a parsed prefix spells back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp::parse::{parse_duration, parse_net, spelling, MAX_DURATION};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(net) = parse_net(text) {
        assert_eq!(parse_net(&spelling(&net)).unwrap(), net);
    }
    if let Ok(d) = parse_duration(text) {
        assert!(!d.is_zero() && d <= MAX_DURATION);
    }
});
