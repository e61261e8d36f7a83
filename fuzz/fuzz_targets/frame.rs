//! The frame parser the XDP program runs, on any bytes: whatever Linux
//! would deliver to a UDP socket (`frame::model`, written from its receive
//! path with no walking limit), the parser reads as UDP from the same
//! source to the same port with the same payload, or refuses as invalid
//! (the program drops it); never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp_common::frame::model;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = model::check(data) {
        panic!("{e}");
    }
});
