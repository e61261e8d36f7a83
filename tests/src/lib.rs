//! Helpers for sip-xdp's privileged tests and benchmarks: crafted frames,
//! the real program under `BPF_PROG_TEST_RUN`, and namespace labs.
//!
//! Everything here needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN).

pub mod cli;
pub mod cpu;
pub mod crowdsec;
pub mod db;
pub mod filters;
pub mod flood;
pub mod frames;
pub mod http;
pub mod kamailio;
pub mod lab;
pub mod prog;
pub mod registrar;
pub mod sbc;
pub mod sipp;
pub mod systemd;

/// Fails loudly instead of skipping: these tests are run on purpose.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "sip-xdp's kernel tests need root: run them with `cargo xtask test` as root"
    );
}
