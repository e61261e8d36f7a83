//! The cap on new detector bans per second on this node. A storm of
//! detections is what a spoofer produces to fill the ban table and, through
//! the shared database, every node's: past the cap a detection is counted
//! and reported, not banned, and the kernel's rate limit keeps holding the
//! sources. One report per second that had refusals, never one per source.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct BanCap {
    per_sec: u32,
    start: Option<Instant>,
    used: u32,
    refused: u64,
}

impl BanCap {
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            start: None,
            used: 0,
            refused: 0,
        }
    }

    pub fn set(&mut self, per_sec: u32) {
        self.per_sec = per_sec;
    }

    /// Takes one ban from this second's allowance. A closed second that
    /// had refusals comes back as `Err(refused)` once, from the first call
    /// after it, so the caller reports it; the current call is judged too.
    pub fn take(&mut self, now: Instant) -> (bool, Option<u64>) {
        let report = self.roll(now);
        if self.used < self.per_sec {
            self.used += 1;
            (true, report)
        } else {
            self.refused += 1;
            (false, report)
        }
    }

    /// Closes the second if it is over; returns its refusals, if any.
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        match self.start {
            Some(s) if now.saturating_duration_since(s) < WINDOW => None,
            _ => {
                self.start = Some(now);
                self.used = 0;
                let r = std::mem::take(&mut self.refused);
                (r > 0).then_some(r)
            }
        }
    }

    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_cap_per_second_and_reports_refusals_once() {
        let t0 = Instant::now();
        let mut c = BanCap::new(3);
        let taken: Vec<bool> = (0..10)
            .map(|i| c.take(t0 + Duration::from_millis(i * 10)).0)
            .collect();
        assert_eq!(taken.iter().filter(|t| **t).count(), 3);
        assert_eq!(&taken[..3], &[true, true, true]);
        // Next second: the 7 refusals are reported once, and bans resume.
        let (ok, report) = c.take(t0 + Duration::from_millis(1100));
        assert!(ok);
        assert_eq!(report, Some(7));
        assert_eq!(c.take(t0 + Duration::from_millis(1200)), (true, None));
        // A quiet second reports nothing.
        assert_eq!(c.roll(t0 + Duration::from_secs(5)), None);
        // Zero: nothing is ever banned.
        let mut z = BanCap::new(0);
        assert_eq!(z.take(t0), (false, None));
        assert_eq!(z.roll(t0 + Duration::from_secs(2)), Some(1));
    }
}
