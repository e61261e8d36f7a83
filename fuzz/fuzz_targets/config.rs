//! Any text as the configuration file: a configuration or an error that
//! names the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Config::parse(text, "fuzz.toml") {
            assert!(e.to_string().contains("fuzz.toml"), "{e}");
        }
    }
});
