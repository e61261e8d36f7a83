//! The kernel checks expiry against `bpf_ktime_get_coarse_ns`, which reads
//! CLOCK_MONOTONIC; expiries written to the maps use the same clock.

use std::time::Duration;

pub fn monotonic_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks read here exist on
    // every kernel with BPF.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The clock the program stamps packets with (`bpf_ktime_get_coarse_ns`):
/// up to a tick behind `monotonic_ns`. A packet stamped after a reading of
/// this clock arrived after the reading.
pub fn coarse_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC_COARSE)
}

/// Kernel expiry value for a ban lasting `d` from now (0 means permanent).
pub fn expiry_after(d: Option<Duration>) -> u64 {
    match d {
        None => 0,
        Some(d) => monotonic_ns()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .max(1),
    }
}

/// Time left on a kernel expiry value; `None` for permanent entries.
pub fn remaining(expires_ns: u64) -> Option<Duration> {
    (expires_ns != 0).then(|| Duration::from_nanos(expires_ns.saturating_sub(monotonic_ns())))
}
