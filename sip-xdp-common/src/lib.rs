//! Types shared by the sip-xdp XDP program and its controller, plus the pure
//! logic both sides run (the SIP first-line classifier, address keys).
//!
//! The crate is `no_std` only when built for BPF, so everything in it gets
//! ordinary unit tests on the host.
#![cfg_attr(target_arch = "bpf", no_std)]

pub mod addr;
pub mod admission;
pub mod banindex;
pub mod classify;
pub mod config;
pub mod exchange;
pub mod frame;
pub mod hints;
pub mod maps;
pub mod memory;
pub mod reason;
pub mod rules;
pub mod stats;

pub use addr::IpKey;
pub use classify::{classify, SipClass, CLASSIFY_LEN};
pub use config::{
    KernelConfig, CONFIG_BAN_ALL, CONFIG_DROP_MALFORMED, CONFIG_MATCH, CONFIG_MONITOR,
};
pub use maps::{BanValue, BlockValue, SourceStats};
pub use reason::{BanReason, Reason};
pub use stats::Counter;
