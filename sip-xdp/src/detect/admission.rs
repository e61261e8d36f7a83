//! What the kernel admits in overload (`sip_xdp_common::admission`), set
//! from the settings and from what the counters say once per unit: the
//! CPUs that run the program share the load mark and the strangers'
//! share, and the strangers' share shrinks while the SIP server falls
//! behind (its sockets' receive buffers overflow, two units running) and
//! grows back while it keeps up.

use sip_xdp_common::KernelConfig;

use super::settings::Shedding;

/// The smallest part of the strangers' share kept while the SIP server
/// falls behind: new phones must still reach it.
const FLOOR: f64 = 1.0 / 64.0;
/// What the share grows by per unit in which the server kept up.
const STEP: f64 = 1.0 / 8.0;
/// Units a CPU counts as running the program after it last did.
const CPU_MEMORY: u32 = 8;

#[derive(Debug)]
pub struct Admission {
    settings: Shedding,
    seed: u64,
    /// Per CPU: its packet total as last read, and the units since it
    /// last moved.
    cpus: Vec<(u64, u32)>,
    /// CPUs online: the count until the counters show which run the
    /// program.
    online: u32,
    /// The part of the strangers' share in force, in (0, 1].
    share: f64,
    /// The receive-buffer drop count as last read, and whether it rose
    /// in the unit before.
    drops: Option<u64>,
    rose: bool,
}

/// What `observe` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Changed {
    pub cpus: bool,
    /// The part of the share now in force, when it moved.
    pub share: Option<f64>,
}

impl Admission {
    /// For a machine of `online` CPUs, every one counted as running the
    /// program until the counters show which do.
    pub fn new(settings: Shedding, seed: u64, online: u32) -> Self {
        Self {
            settings,
            seed,
            cpus: Vec::new(),
            online: online.max(1),
            share: 1.0,
            drops: None,
            rose: false,
        }
    }

    pub fn set(&mut self, settings: Shedding) {
        self.settings = settings;
    }

    /// CPUs that ran the program lately; the CPUs online until one has.
    pub fn cpus(&self) -> u32 {
        let active = self.cpus.iter().filter(|c| c.1 < CPU_MEMORY).count() as u32;
        if active == 0 {
            self.online
        } else {
            active
        }
    }

    pub fn share(&self) -> f64 {
        self.share
    }

    /// The kernel's admission fields, for detection `on` or off.
    pub fn fill(&self, k: &mut KernelConfig, on: bool) {
        let s = &self.settings;
        let cpus = self.cpus();
        k.shed_per_cpu = if on && s.budget > 0 {
            (s.budget / cpus).max(1)
        } else {
            0
        };
        let strangers = (f64::from(s.strangers) * self.share) as u32;
        k.strangers_per_cpu = if s.strangers > 0 {
            (strangers / cpus).max(1)
        } else {
            0
        };
        k.bucket_cap = s.per_bucket;
        k.bucket_prefix_v4 = u16::from(s.bucket_v4);
        k.bucket_prefix_v6 = u16::from(s.bucket_v6);
        k.bucket_seed = self.seed;
    }

    /// Feeds one unit's readings: every CPU's packet total (`per_cpu`,
    /// cumulative), and the receive-buffer drop count (cumulative; `None`
    /// when it could not be read).
    pub fn observe(&mut self, per_cpu: &[u64], drops: Option<u64>) -> Changed {
        let before = self.cpus();
        if self.cpus.len() != per_cpu.len() {
            // The first reading: movement shows from the next one on.
            self.cpus = per_cpu.iter().map(|&n| (n, CPU_MEMORY)).collect();
        } else {
            for (c, &n) in self.cpus.iter_mut().zip(per_cpu) {
                c.1 = if n != c.0 { 0 } else { c.1.saturating_add(1) };
                c.0 = n;
            }
        }
        let mut changed = Changed {
            cpus: self.cpus() != before,
            share: None,
        };
        let last = std::mem::replace(&mut self.drops, drops);
        if let (Some(last), Some(now)) = (last, drops) {
            // Two units running: one burst that filled a buffer once is
            // not a server falling behind.
            let rose = now > last;
            let share = if rose && self.rose {
                (self.share / 2.0).max(FLOOR)
            } else if rose {
                self.share
            } else {
                (self.share + STEP).min(1.0)
            };
            self.rose = rose;
            if share != self.share {
                self.share = share;
                changed.share = Some(share);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Admission {
        Admission::new(
            Shedding {
                budget: 4000,
                strangers: 1000,
                ..Shedding::default()
            },
            7,
            16,
        )
    }

    fn config(a: &Admission) -> KernelConfig {
        let mut k = KernelConfig::default();
        a.fill(&mut k, true);
        k
    }

    #[test]
    fn the_mark_is_split_over_the_cpus_that_run_the_program() {
        let mut a = admission();
        // Before any CPU shows idle, all sixteen share the mark.
        assert_eq!(config(&a).shed_per_cpu, 250);
        // One receive queue: one CPU moves, the rest stay idle.
        for unit in 1..=CPU_MEMORY as u64 {
            let mut totals = [0u64; 16];
            totals[3] = unit * 1000;
            a.observe(&totals, None);
        }
        assert_eq!(a.cpus(), 1);
        let k = config(&a);
        assert_eq!((k.shed_per_cpu, k.strangers_per_cpu), (4000, 1000));
        assert_eq!((k.bucket_cap, k.bucket_seed), (2, 7));
        assert_eq!((k.bucket_prefix_v4, k.bucket_prefix_v6), (16, 32));
        let mut off = KernelConfig::default();
        a.fill(&mut off, false);
        assert_eq!(off.shed_per_cpu, 0, "detection off sheds nothing");
    }

    #[test]
    fn the_strangers_share_halves_while_the_server_drops_and_grows_back() {
        let mut a = admission();
        let cpus = [0u64; 16];
        assert_eq!(a.observe(&cpus, Some(10)).share, None);
        assert_eq!(a.observe(&cpus, Some(10)).share, None, "full already");
        assert_eq!(
            a.observe(&cpus, Some(500)).share,
            None,
            "one unit is a burst"
        );
        assert_eq!(a.observe(&cpus, Some(900)).share, Some(0.5));
        assert_eq!(a.observe(&cpus, Some(950)).share, Some(0.25));
        assert_eq!(config(&a).strangers_per_cpu, 15);
        let mut drops = 950;
        for _ in 0..10 {
            drops += 100;
            a.observe(&cpus, Some(drops));
        }
        assert_eq!(a.share(), FLOOR);
        assert_eq!(config(&a).strangers_per_cpu, 1, "never nothing");
        for _ in 0..7 {
            a.observe(&cpus, Some(drops));
        }
        assert!(a.share() < 1.0);
        assert_eq!(a.observe(&cpus, Some(drops)).share, Some(1.0));
        assert_eq!(config(&a).strangers_per_cpu, 62);
        // An unreadable count changes nothing.
        assert_eq!(a.observe(&cpus, None).share, None);
    }
}
