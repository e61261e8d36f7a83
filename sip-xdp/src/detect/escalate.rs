//! Repeat offenders, like fail2ban's `bantime.increment`: the n-th offence
//! within `forget` of the previous one is banned for
//! `base × multiplier^(n-1)`, at most `max`. Shared by every detector.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::settings;

#[derive(Debug)]
pub struct Escalation {
    cfg: settings::Escalation,
    offences: HashMap<IpAddr, (u32, Instant)>,
}

impl Escalation {
    pub fn new(cfg: settings::Escalation) -> Self {
        Self {
            cfg,
            offences: HashMap::new(),
        }
    }

    pub fn set(&mut self, cfg: settings::Escalation) {
        self.cfg = cfg;
    }

    /// Records an offence by `ip` at `now`; returns the ban to apply and
    /// which offence this is (1 = first).
    pub fn ban_for(&mut self, ip: IpAddr, base: Duration, now: Instant) -> (Duration, u32) {
        let e = self.offences.entry(ip).or_insert((0, now));
        if e.0 > 0 && now.saturating_duration_since(e.1) > self.cfg.forget {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
        let n = e.0;
        let factor = self.cfg.multiplier.powi(n as i32 - 1);
        let secs = (base.as_secs_f64() * factor).min(self.cfg.max.as_secs_f64());
        (Duration::from_secs_f64(secs), n)
    }

    /// Forgets offenders quiet for longer than `forget`.
    pub fn prune(&mut self, now: Instant) {
        let forget = self.cfg.forget;
        self.offences
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= forget);
    }

    pub fn len(&self) -> usize {
        self.offences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offences.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(mult: f64, max: u64, forget: u64) -> Escalation {
        Escalation::new(settings::Escalation {
            multiplier: mult,
            max: Duration::from_secs(max),
            forget: Duration::from_secs(forget),
        })
    }

    #[test]
    fn repeat_offenders_get_longer_bans_up_to_the_ceiling() {
        let mut e = esc(2.0, 1000, 3600);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t = Instant::now();
        let base = Duration::from_secs(120);
        let got: Vec<_> = (0..5)
            .map(|i| e.ban_for(ip, base, t + Duration::from_secs(i * 10)))
            .collect();
        assert_eq!(
            got,
            vec![
                (Duration::from_secs(120), 1),
                (Duration::from_secs(240), 2),
                (Duration::from_secs(480), 3),
                (Duration::from_secs(960), 4),
                (Duration::from_secs(1000), 5),
            ]
        );
        // Another address starts at the base.
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert_eq!(e.ban_for(other, base, t).0, base);
    }

    #[test]
    fn offences_are_forgotten_after_the_quiet_period() {
        let mut e = esc(3.0, 100_000, 60);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let t = Instant::now();
        let base = Duration::from_secs(10);
        assert_eq!(e.ban_for(ip, base, t).1, 1);
        assert_eq!(
            e.ban_for(ip, base, t + Duration::from_secs(30)),
            (Duration::from_secs(30), 2)
        );
        // 61 s after the last offence: a first offence again.
        assert_eq!(e.ban_for(ip, base, t + Duration::from_secs(91)), (base, 1));
        e.prune(t + Duration::from_secs(200));
        assert!(e.is_empty());
    }

    #[test]
    fn multiplier_one_never_escalates() {
        let mut e = esc(1.0, 100_000, 3600);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(
                e.ban_for(ip, Duration::from_secs(60), t).0,
                Duration::from_secs(60)
            );
        }
    }
}
