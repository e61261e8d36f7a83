//! CPU time as the kernel accounts it: the whole machine from /proc/stat,
//! one process from /proc/PID/stat.

use std::time::Duration;

/// /proc's clock ticks (USER_HZ) as a duration.
fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(n * (1_000_000_000 / hz))
}

/// Busy time summed over every CPU: user, nice, system, irq and softirq.
/// Idle, iowait and steal (time the hypervisor took) are not ours.
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").expect("reading /proc/stat");
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .expect("/proc/stat has a cpu line");
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = f[0] + f[1] + f[2] + f[5] + f[6];
    ticks(busy)
}

/// User plus system time of one process (all its threads), or None once it
/// is gone.
pub fn process(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(ticks(utime + stime))
}

/// `process` of `pid` plus its children's (a server that forks its
/// workers, as Kamailio does).
pub fn with_children(pid: u32) -> Option<Duration> {
    let mut total = process(pid)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent is the second field after the command name.
        let ppid = stat
            .rfind(')')
            .and_then(|at| stat[at + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += process(child).unwrap_or_default();
        }
    }
    Some(total)
}

/// CPU time spent by the machine between `start` and now.
pub struct Meter {
    busy: Duration,
}

impl Meter {
    pub fn start() -> Self {
        Self {
            busy: machine_busy(),
        }
    }

    pub fn busy(&self) -> Duration {
        machine_busy().saturating_sub(self.busy)
    }
}
