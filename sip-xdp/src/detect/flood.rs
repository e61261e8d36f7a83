//! Flood detection with pike semantics: every sampling unit, each source's
//! packets since the previous pass are compared with the per-unit limit,
//! overall and per SIP class. Counters come from the kernel's per-CPU LRU,
//! summed over CPUs by the caller: every tracked source on a full pass,
//! only the sources the kernel filed as hot otherwise (`kernel::hot`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::json;
use sip_xdp_common::{
    addr::ip_of,
    classify::{SipClass, SIP_CLASSES},
    IpKey,
};

use super::{settings, Detection, Reason};
use crate::kernel::Totals;

fn min_limit(cfg: &settings::Flood) -> u64 {
    cfg.class_limits
        .by_class()
        .into_iter()
        .flatten()
        .fold(cfg.limit, u64::min)
}

/// When a pass happens, on the controller's clock and on the kernel's
/// (the coarse clock `first_seen_ns` is stamped with): a source whose
/// first packet is stamped later arrived after the reading.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub kernel_ns: u64,
}

/// A source's totals at the pass that last read it.
#[derive(Clone, Copy)]
struct Prev {
    totals: Totals,
    at: Instant,
    generation: u32,
}

/// Passes after which a source not read again is forgotten (a minute at
/// the default unit): a hot source is read at every pass it is hot.
const FORGET_AFTER: u32 = 30;

/// Sources remembered at most: forged sources sending past the hot mark
/// fill a full hot map (65,536) every unit, and `FORGET_AFTER` alone would
/// let them pile up to two million entries. Past this, only the sources
/// read at the last two passes stay; one forgotten is a baseline when read
/// again, never a verdict.
const REMEMBER_AT_MOST: usize = 1 << 18;

pub struct Flood {
    cfg: settings::Flood,
    class_limits: [Option<u64>; SIP_CLASSES],
    /// The lowest of the overall and the class limits.
    min_limit: u64,
    unit: Duration,
    /// Totals of the sources read at earlier passes. Updated in place: a
    /// pass over a million sources must not build (and fault in) a new
    /// table every unit.
    prev: HashMap<IpKey, Prev, foldhash::fast::RandomState>,
    generation: u32,
    /// The previous pass, if any, and the one in progress.
    last: Option<Now>,
    pending: Option<Now>,
    /// As on one CPU until the controller says how many there are.
    cpus: u32,
}

impl Flood {
    pub fn new(cfg: settings::Flood, unit: Duration) -> Self {
        Self {
            class_limits: cfg.class_limits.by_class(),
            min_limit: min_limit(&cfg),
            cfg,
            unit,
            // foldhash: a third of SipHash's cost on 16-byte keys; the keys
            // are attacker-chosen, and foldhash is still seeded per process.
            prev: HashMap::default(),
            generation: 0,
            last: None,
            pending: None,
            cpus: 1,
        }
    }

    pub fn set(&mut self, cfg: settings::Flood, unit: Duration) {
        self.class_limits = cfg.class_limits.by_class();
        self.min_limit = min_limit(&cfg);
        self.cfg = cfg;
        self.unit = unit;
    }

    /// The CPUs the program may run on (possible CPUs: the hot mark must
    /// hold on all of them).
    pub fn set_cpus(&mut self, cpus: u32) {
        self.cpus = cpus.max(1);
    }

    /// The packets one source may send on one CPU in one unit before the
    /// kernel files it as hot: the lowest limit shared among the CPUs, so
    /// a source never filed sent at most `cpus × (hot_at - 1)` packets,
    /// within every limit (a flood is more than the limit). 0 when
    /// detection is off: nothing to file.
    pub fn hot_at(&self) -> u32 {
        if self.cfg.enabled {
            self.mark()
        } else {
            0
        }
    }

    fn mark(&self) -> u32 {
        (self.min_limit / u64::from(self.cpus) + 1).min(u64::from(u32::MAX)) as u32
    }

    /// Sources remembered from earlier passes.
    pub fn tracked(&self) -> usize {
        self.prev.len()
    }

    /// One full sampling pass (every tracked source), as `begin`,
    /// `observe` and `end` do it.
    pub fn pass(
        &mut self,
        now: Now,
        sources: impl IntoIterator<Item = (IpKey, Totals)>,
    ) -> Vec<Detection> {
        self.begin(now);
        let out = sources
            .into_iter()
            .filter_map(|(key, t)| self.observe(key, t, false))
            .collect();
        self.end();
        out
    }

    pub fn begin(&mut self, now: Now) {
        self.generation = self.generation.wrapping_add(1);
        self.pending = Some(now);
    }

    /// Judges one source read at this pass; `filed` when the kernel filed
    /// it as hot. Its packets since it was last read count when its
    /// counters are the ones read then (same first packet), all its packets
    /// when the kernel first saw it after the previous pass; otherwise its
    /// totals span units no pass measured and only become its baseline:
    /// a known source is never judged on its history as if it were new.
    pub fn observe(&mut self, key: IpKey, t: Totals, filed: bool) -> Option<Detection> {
        let now = self.pending?;
        let generation = self.generation;
        let last = self.last;
        let keep = filed || t.recent >= u64::from(self.mark());
        let measured = match self.prev.get_mut(&key) {
            Some(p) if p.totals.first_seen_ns == t.first_seen_ns => {
                let before = (p.totals, now.at.saturating_duration_since(p.at));
                *p = Prev {
                    totals: t,
                    at: now.at,
                    generation,
                };
                Some(before)
            }
            stale => {
                let fresh = last.filter(|l| t.first_seen_ns > l.kernel_ns);
                let before =
                    fresh.map(|l| (Totals::default(), now.at.saturating_duration_since(l.at)));
                let p = Prev {
                    totals: t,
                    at: now.at,
                    generation,
                };
                match stale {
                    Some(old) => *old = p,
                    // A source under the hot mark cannot be over a limit
                    // by itself: not remembered, or a storm of new sources
                    // would fill the table with the whole source map.
                    None if keep => {
                        self.prev.insert(key, p);
                    }
                    None => {}
                }
                before
            }
        };
        let (before, elapsed) = measured?;
        if !self.cfg.enabled {
            return None;
        }
        // A late pass must not read as a denser one.
        let scale = if elapsed > self.unit {
            self.unit.as_secs_f64() / elapsed.as_secs_f64()
        } else {
            1.0
        };
        self.judge(key, &before, &t, scale, elapsed)
    }

    /// Forgets sources not read for `FORGET_AFTER` passes (the kernel
    /// evicted them, or they went quiet); a source read again later starts
    /// from a baseline.
    pub fn end(&mut self) {
        if let Some(now) = self.pending.take() {
            self.last = Some(now);
        }
        let g = self.generation;
        if g.is_multiple_of(8) || self.prev.len() > 65_536 {
            self.prev
                .retain(|_, p| g.wrapping_sub(p.generation) < FORGET_AFTER);
        }
        if self.prev.len() > REMEMBER_AT_MOST {
            self.prev.retain(|_, p| g.wrapping_sub(p.generation) < 2);
        }
    }

    fn judge(
        &self,
        key: IpKey,
        before: &Totals,
        now: &Totals,
        scale: f64,
        elapsed: Duration,
    ) -> Option<Detection> {
        let density = |a: u64, b: u64| (a.saturating_sub(b) as f64 * scale).round() as u64;
        let packets = density(now.packets, before.packets);
        let mut classes = [0u64; SIP_CLASSES];
        for (i, c) in classes.iter_mut().enumerate() {
            *c = density(now.class[i], before.class[i]);
        }
        // A class over its own limit names the attack; else the total.
        let over_class = (0..SIP_CLASSES)
            .filter_map(|i| {
                let limit = self.class_limits[i]?;
                (classes[i] > limit).then_some((i, classes[i], limit))
            })
            .max_by_key(|&(_, n, limit)| n / limit.max(1));
        let (kind, count, limit, class) = match over_class {
            Some((i, n, limit)) => {
                let class = SipClass::ALL[i];
                let kind = if class == SipClass::Malformed {
                    Reason::MalformedFlood
                } else {
                    Reason::Flood
                };
                (kind, n, limit, Some(class))
            }
            None if packets > self.cfg.limit => (Reason::Flood, packets, self.cfg.limit, None),
            None => return None,
        };
        let by_class: serde_json::Map<_, _> = SipClass::ALL
            .iter()
            .filter(|c| classes[**c as usize] > 0)
            .map(|c| (c.name().to_string(), json!(classes[*c as usize])))
            .collect();
        Some(Detection {
            ip: ip_of(&key),
            seen: None,
            reason: kind,
            base_ban: self.cfg.ban,
            count,
            limit,
            window: self.unit,
            details: json!({
                "packets": packets,
                "limit": limit,
                "class": class.map(|c| c.name()),
                "window_s": self.unit.as_secs_f64(),
                "measured_over_s": elapsed.as_secs_f64(),
                "by_class": by_class,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_xdp_common::addr::key_of;

    fn key(s: &str) -> IpKey {
        key_of(s.parse().unwrap())
    }

    /// Passes at whole seconds from a start, on both clocks.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now())
        }
        fn at(&self, s: u64) -> Now {
            Now {
                at: self.0 + Duration::from_secs(s),
                kernel_ns: s * 1_000_000_000 + 1_000,
            }
        }
    }

    /// A source the kernel has counted since before the first pass, all
    /// its packets of one class, as many in the unit as in all.
    fn totals(packets: u64, class: SipClass) -> Totals {
        let mut t = Totals {
            packets,
            first_seen_ns: 1,
            recent: packets,
            ..Default::default()
        };
        t.class[class as usize] = packets;
        t
    }

    /// Like `totals`, for a source first seen just after second `s`.
    fn new_after(s: u64, packets: u64, class: SipClass) -> Totals {
        Totals {
            first_seen_ns: s * 1_000_000_000 + 2_000,
            ..totals(packets, class)
        }
    }

    fn flood(limit: u64, classes: settings::ClassLimits) -> Flood {
        Flood::new(
            settings::Flood {
                enabled: true,
                limit,
                class_limits: classes,
                ban: Duration::from_secs(120),
            },
            Duration::from_secs(2),
        )
    }

    #[test]
    fn a_storm_of_one_packet_sources_leaves_no_table_behind() {
        let c = Clock::new();
        let mut f = flood(30, settings::ClassLimits::default());
        f.pass(c.at(0), []);
        let storm = (0..100_000u32).map(|i| {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i));
            (key_of(ip.into()), new_after(0, 1, SipClass::Options))
        });
        assert!(f.pass(c.at(2), storm).is_empty());
        assert_eq!(f.tracked(), 0);
    }

    #[test]
    fn a_known_source_is_never_judged_on_its_history() {
        let c = Clock::new();
        let mut f = flood(30, settings::ClassLimits::default());
        f.pass(c.at(0), []);
        // Seen once, under the mark: not remembered.
        let k = key("203.0.113.5");
        f.pass(c.at(2), [(k, new_after(0, 1, SipClass::Options))]);
        assert_eq!(f.tracked(), 0);
        // 40 packets since it was first seen, two units ago: some of them
        // before the previous pass, how many no pass measured. A baseline,
        // never a ban on packets that may be old.
        let back = new_after(0, 40, SipClass::Options);
        assert!(f.pass(c.at(4), [(k, back)]).is_empty());
        assert_eq!(f.tracked(), 1);
        // From there on its packets per unit count.
        let more = new_after(0, 80, SipClass::Options);
        let d = f.pass(c.at(6), [(k, more)]);
        assert_eq!((d.len(), d[0].count), (1, 40));
        // Evicted by the kernel and counted anew since the last pass: all
        // its packets are recent, whatever was remembered.
        let anew = new_after(6, 31, SipClass::Options);
        let d = f.pass(c.at(8), [(k, anew)]);
        assert_eq!((d.len(), d[0].count), (1, 31));
        // Evicted and counted anew before the last pass, unread since:
        // a baseline again.
        let later = new_after(7, 500, SipClass::Options);
        assert!(f.pass(c.at(12), [(k, later)]).is_empty());
    }

    #[test]
    fn the_hot_mark_keeps_every_unfiled_source_within_the_lowest_limit() {
        for (limit, register, cpus) in [
            (30, None, 2),
            (30, Some(5), 2),
            (1, None, 4),
            (100, Some(7), 64),
        ] {
            let mut f = flood(
                limit,
                settings::ClassLimits {
                    register,
                    ..Default::default()
                },
            );
            f.set_cpus(cpus);
            let mark = u64::from(f.hot_at());
            let lowest = register.unwrap_or(limit).min(limit);
            // Never filed: every CPU stayed under the mark.
            assert!(
                u64::from(cpus) * (mark - 1) <= lowest,
                "{limit} {register:?} {cpus}"
            );
            assert!(mark >= 1);
        }
        let mut off = flood(30, Default::default());
        off.set(
            settings::Flood {
                enabled: false,
                ..settings::Flood::default()
            },
            Duration::from_secs(2),
        );
        assert_eq!(off.hot_at(), 0);
    }

    #[test]
    fn first_pass_is_a_baseline_then_density_per_unit_counts() {
        let mut f = flood(30, Default::default());
        let c = Clock::new();
        let a = key("203.0.113.7");
        // Old counters of a restarted controller: never a flood.
        assert!(f
            .pass(c.at(0), [(a, totals(10_000, SipClass::Invite))])
            .is_empty());
        // 30 more in one unit: at the limit, not over.
        assert!(f
            .pass(c.at(2), [(a, totals(10_030, SipClass::Invite))])
            .is_empty());
        // 31 more: over.
        let d = f.pass(c.at(4), [(a, totals(10_061, SipClass::Invite))]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].reason, Reason::Flood);
        assert_eq!(d[0].count, 31);
        assert_eq!(d[0].limit, 30);
        assert_eq!(d[0].ip.to_string(), "203.0.113.7");
        assert_eq!(d[0].base_ban, Duration::from_secs(120));
        assert_eq!(d[0].details["by_class"]["invite"], 31);
    }

    #[test]
    fn a_new_source_counts_from_its_first_packet() {
        let mut f = flood(30, Default::default());
        let c = Clock::new();
        f.pass(c.at(0), []);
        let d = f.pass(
            c.at(2),
            [
                (key("203.0.113.1"), new_after(0, 500, SipClass::Options)),
                (key("203.0.113.2"), new_after(0, 5, SipClass::Options)),
                (key("2001:db8::66"), new_after(0, 31, SipClass::Register)),
            ],
        );
        let mut ips: Vec<_> = d.iter().map(|d| d.ip.to_string()).collect();
        ips.sort();
        assert_eq!(ips, vec!["2001:db8::66", "203.0.113.1"]);
    }

    #[test]
    fn per_class_limits_name_the_class() {
        let mut f = flood(
            1000,
            settings::ClassLimits {
                register: Some(20),
                options: Some(10),
                malformed: Some(5),
                ..Default::default()
            },
        );
        let c = Clock::new();
        f.pass(c.at(0), []);
        let d = f.pass(
            c.at(2),
            [
                (key("203.0.113.1"), new_after(0, 21, SipClass::Register)),
                (key("203.0.113.2"), new_after(0, 20, SipClass::Register)),
                (key("203.0.113.3"), new_after(0, 11, SipClass::Options)),
                (key("203.0.113.4"), new_after(0, 200, SipClass::Invite)),
                (key("203.0.113.5"), new_after(0, 6, SipClass::Malformed)),
            ],
        );
        let mut got: Vec<_> = d
            .iter()
            .map(|d| (d.ip.to_string(), d.reason, d.details["class"].clone()))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("203.0.113.1".into(), Reason::Flood, json!("register")),
                ("203.0.113.3".into(), Reason::Flood, json!("options")),
                (
                    "203.0.113.5".into(),
                    Reason::MalformedFlood,
                    json!("malformed")
                ),
            ]
        );
    }

    #[test]
    fn a_late_pass_is_scaled_to_the_unit() {
        let mut f = flood(30, Default::default());
        let c = Clock::new();
        let a = key("203.0.113.7");
        f.pass(c.at(0), [(a, totals(100, SipClass::Invite))]);
        // 50 packets over 4 s = 25 per 2-s unit: under.
        assert!(f
            .pass(c.at(4), [(a, totals(150, SipClass::Invite))])
            .is_empty());
        // 70 over 4 s = 35 per unit: over.
        let d = f.pass(c.at(8), [(a, totals(220, SipClass::Invite))]);
        assert_eq!(d[0].count, 35);
    }

    #[test]
    fn a_source_filed_once_is_measured_from_its_last_reading() {
        // Passes that read only filed sources: a source read units ago is
        // judged on its packets since, spread over the time since.
        let mut f = flood(30, Default::default());
        let c = Clock::new();
        let a = key("203.0.113.9");
        f.begin(c.at(0));
        assert!(f.observe(a, totals(100, SipClass::Options), true).is_none());
        f.end();
        for s in [2, 4, 6, 8] {
            f.begin(c.at(s));
            f.end();
        }
        // 100 more over 10 s: 20 per unit, under; 200 more: 40, over.
        f.begin(c.at(10));
        assert!(f.observe(a, totals(200, SipClass::Options), true).is_none());
        f.end();
        f.begin(c.at(20));
        let d = f.observe(a, totals(400, SipClass::Options), true).unwrap();
        f.end();
        assert_eq!(d.count, 40);
    }

    #[test]
    fn forged_hot_sources_cannot_grow_the_table_past_its_bound() {
        // A full hot map of new forged sources every unit.
        let mut f = flood(30, Default::default());
        let c = Clock::new();
        f.pass(c.at(0), []);
        for unit in 1..=6u32 {
            f.begin(c.at(2 * u64::from(unit)));
            for i in 0..65_536u32 {
                let ip = std::net::Ipv6Addr::from(
                    (0x2001_0db8u128 << 96) | (u128::from(unit) << 32) | u128::from(i),
                );
                f.observe(key_of(ip.into()), totals(20, SipClass::Options), true);
            }
            f.end();
            assert!(
                f.tracked() <= REMEMBER_AT_MOST,
                "unit {unit}: {}",
                f.tracked()
            );
        }
        assert!(f.tracked() >= 65_536);
    }

    #[test]
    fn unread_sources_are_forgotten_and_disabled_detects_nothing() {
        let mut f = flood(30, Default::default());
        let c = Clock::new();
        let a = key("203.0.113.7");
        f.pass(c.at(0), [(a, totals(100, SipClass::Invite))]);
        assert_eq!(f.tracked(), 1);
        for s in 1..=FORGET_AFTER as u64 + 8 {
            f.pass(c.at(2 * s), []);
        }
        assert_eq!(f.tracked(), 0);
        f.set(
            settings::Flood {
                enabled: false,
                ..settings::Flood::default()
            },
            Duration::from_secs(2),
        );
        let late = c.at(2 * FORGET_AFTER as u64 + 20);
        f.pass(late, [(a, totals(10_000, SipClass::Invite))]);
        assert!(f
            .pass(
                Now {
                    at: late.at + Duration::from_secs(2),
                    kernel_ns: late.kernel_ns + 2_000_000_000
                },
                [(a, totals(20_000, SipClass::Invite))]
            )
            .is_empty());
        assert_eq!(f.tracked(), 1);
    }
}
