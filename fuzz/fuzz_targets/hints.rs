//! The hints the XDP program reads before its costly lookups: a source
//! inside any allow-list entry, or any proven address, always makes the
//! program look; a clear bit is only ever a sure "no".
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_xdp_common::hints::{allow_hint, allow_must_look, proof_hint, proof_must_look};

fuzz_target!(|data: &[u8]| {
    // Entries of 17 bytes (a key and a prefix length), then 16 bytes of
    // host bits for the address tried inside each.
    let Some((entries, host)) = data.split_last_chunk::<16>() else {
        return;
    };
    let entries: Vec<([u8; 16], u32)> = entries
        .chunks_exact(17)
        .map(|c| {
            let len = u32::from(c[16]) % 129;
            let key: [u8; 16] = c[..16].try_into().unwrap();
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            ((u128::from_be_bytes(key) & mask).to_be_bytes(), len)
        })
        .collect();
    let words = allow_hint(entries.iter().copied());
    let host = u128::from_be_bytes(*host);
    for (key, len) in &entries {
        let mask = if *len == 0 { 0 } else { u128::MAX << (128 - len) };
        let inside = (u128::from_be_bytes(*key) | (host & !mask)).to_be_bytes();
        assert!(allow_must_look(&words, &inside), "{inside:?} in {key:?}/{len}");
    }
    let keys: Vec<[u8; 16]> = entries.iter().map(|(k, _)| *k).collect();
    let proofs = proof_hint(&keys);
    assert!(keys.iter().all(|k| proof_must_look(&proofs, k)));
});
