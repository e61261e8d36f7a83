//! When the XDP program is shedding. The kernel decides per packet and per
//! CPU; this follows its counters once per sampling unit and names the
//! switches, so that an operator sees one `overload_started` and one
//! `overload_ended` per episode, with rates, not a line per packet.

use std::time::Instant;

/// A change of mode, with what the counters said.
#[derive(Clone, Debug, PartialEq)]
pub enum Switch {
    Started {
        /// Packets shed (or that would be, in monitor mode) per second.
        shed_pps: f64,
        /// SIP packets passed per second meanwhile.
        passed_pps: f64,
    },
    Ended {
        seconds: f64,
        shed: u64,
    },
}

#[derive(Debug, Default)]
pub struct Overload {
    last: Option<(Instant, u64, u64)>,
    since: Option<(Instant, u64)>,
}

impl Overload {
    pub fn shedding(&self) -> bool {
        self.since.is_some()
    }

    /// Feeds the cumulative shed and passed-SIP counters. Shedding starts
    /// with the first unit that shed anything and ends with the first unit
    /// that shed nothing.
    pub fn observe(&mut self, now: Instant, shed: u64, passed: u64) -> Option<Switch> {
        let last = self.last.replace((now, shed, passed));
        let (at, shed0, passed0) = last?;
        let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
        let shed_now = shed.saturating_sub(shed0);
        match (self.since, shed_now > 0) {
            (None, true) => {
                self.since = Some((now, shed0));
                Some(Switch::Started {
                    shed_pps: shed_now as f64 / secs,
                    passed_pps: passed.saturating_sub(passed0) as f64 / secs,
                })
            }
            (Some((start, first)), false) => {
                self.since = None;
                Some(Switch::Ended {
                    seconds: now.saturating_duration_since(start).as_secs_f64(),
                    shed: shed.saturating_sub(first),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_start_and_one_end_per_episode() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut o = Overload::default();
        // The first reading is a baseline, even with counters already up.
        assert_eq!(o.observe(at(0), 500, 1000), None);
        assert_eq!(o.observe(at(500), 500, 1100), None);
        match o.observe(at(1000), 10_500, 1600) {
            Some(Switch::Started {
                shed_pps,
                passed_pps,
            }) => {
                assert_eq!(shed_pps, 20_000.0);
                assert_eq!(passed_pps, 1000.0);
            }
            other => panic!("{other:?}"),
        }
        assert!(o.shedding());
        assert_eq!(o.observe(at(1500), 20_500, 2000), None);
        assert_eq!(
            o.observe(at(2000), 20_500, 2100),
            Some(Switch::Ended {
                seconds: 1.0,
                shed: 20_000
            })
        );
        assert!(!o.shedding());
        assert_eq!(o.observe(at(2500), 20_500, 2200), None);
    }
}
