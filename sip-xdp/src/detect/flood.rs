//! Flood detection with pike semantics: every sampling unit, each source's
//! packets since the previous pass are compared with the per-unit limit,
//! overall and per SIP class. Counters come from the kernel's per-CPU LRU,
//! summed over CPUs by the caller.

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

pub struct Flood {
    cfg: settings::Flood,
    class_limits: [Option<u64>; SIP_CLASSES],
    /// The lowest of the overall and the class limits.
    min_limit: u64,
    unit: Duration,
    /// Each source's totals at the previous pass, and the pass that saw it
    /// last. Updated in place: a pass over a million sources must not
    /// build (and fault in) a new table every unit.
    prev: HashMap<IpKey, (Totals, u32), foldhash::fast::RandomState>,
    generation: u32,
    seen: usize,
    last: Option<Instant>,
    elapsed: Option<Duration>,
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
            seen: 0,
            last: None,
            elapsed: None,
        }
    }

    pub fn set(&mut self, cfg: settings::Flood, unit: Duration) {
        self.class_limits = cfg.class_limits.by_class();
        self.min_limit = min_limit(&cfg);
        self.cfg = cfg;
        self.unit = unit;
    }

    /// Sources tracked from the previous pass.
    pub fn tracked(&self) -> usize {
        self.prev.len()
    }

    /// One sampling pass. The first pass only takes the baseline: the
    /// counters of a restarted controller hold everything since the sources
    /// were first seen. A source absent from the previous pass is new (or
    /// was evicted and came back): all its packets are recent.
    pub fn pass(
        &mut self,
        now: Instant,
        sources: impl IntoIterator<Item = (IpKey, Totals)>,
    ) -> Vec<Detection> {
        self.begin(now);
        let mut out = Vec::new();
        for (key, t) in sources {
            if let Some(d) = self.observe(key, t) {
                out.push(d);
            }
        }
        self.end();
        out
    }

    /// Streaming form of `pass`: `begin`, `observe` every source, `end`.
    pub fn begin(&mut self, now: Instant) {
        self.elapsed = self.last.map(|l| now.saturating_duration_since(l));
        self.last = Some(now);
        self.generation = self.generation.wrapping_add(1);
        self.seen = 0;
    }

    pub fn observe(&mut self, key: IpKey, t: Totals) -> Option<Detection> {
        self.seen += 1;
        let generation = self.generation;
        let before = match self.prev.get_mut(&key) {
            Some(e) => {
                let before = e.0;
                *e = (t, generation);
                before
            }
            None => {
                // A source seen once is not remembered: in a storm of new
                // sources every one of them is, and the table would hold
                // the whole source map. Should it come back, all its
                // packets count as recent, as for an evicted source: a
                // margin of one packet, and only where every limit is 2 or
                // more, so that it can never decide a verdict alone.
                if !(t.packets <= 1 && self.min_limit >= 2) {
                    self.prev.insert(key, (t, generation));
                }
                Totals::default()
            }
        };
        let elapsed = self.elapsed?;
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

    /// Forgets sources the kernel no longer tracks.
    pub fn end(&mut self) {
        if self.prev.len() > self.seen {
            let g = self.generation;
            self.prev.retain(|_, (_, seen)| *seen == g);
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

    fn totals(packets: u64, class: SipClass) -> Totals {
        let mut t = Totals {
            packets,
            ..Default::default()
        };
        t.class[class as usize] = packets;
        t
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
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut f = flood(30, settings::ClassLimits::default());
        f.pass(at(0), []);
        let storm = (0..100_000u32).map(|i| {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(i));
            (key_of(ip.into()), totals(1, SipClass::Options))
        });
        assert!(f.pass(at(2), storm).is_empty());
        assert_eq!(f.tracked(), 0);
        // A source seen once that comes back flooding is judged on all its
        // packets, as a new one is.
        let k = key("203.0.113.5");
        f.pass(at(4), [(k, totals(1, SipClass::Options))]);
        assert_eq!(f.tracked(), 0);
        let d = f.pass(at(6), [(k, totals(40, SipClass::Options))]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].count, 40);
        // A limit of 1 keeps every source: one packet could decide.
        let mut exact = flood(1, settings::ClassLimits::default());
        exact.pass(at(0), []);
        exact.pass(at(2), [(k, totals(1, SipClass::Options))]);
        assert_eq!(exact.tracked(), 1);
    }

    #[test]
    fn first_pass_is_a_baseline_then_density_per_unit_counts() {
        let mut f = flood(30, Default::default());
        let t0 = Instant::now();
        let a = key("203.0.113.7");
        // Old counters of a restarted controller: never a flood.
        assert!(f
            .pass(t0, [(a, totals(10_000, SipClass::Invite))])
            .is_empty());
        // 30 more in one unit: at the limit, not over.
        let t1 = t0 + Duration::from_secs(2);
        assert!(f
            .pass(t1, [(a, totals(10_030, SipClass::Invite))])
            .is_empty());
        // 31 more: over.
        let t2 = t1 + Duration::from_secs(2);
        let d = f.pass(t2, [(a, totals(10_061, SipClass::Invite))]);
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
        let t0 = Instant::now();
        f.pass(t0, []);
        let d = f.pass(
            t0 + Duration::from_secs(2),
            [
                (key("203.0.113.1"), totals(500, SipClass::Options)),
                (key("203.0.113.2"), totals(5, SipClass::Options)),
                (key("2001:db8::66"), totals(31, SipClass::Register)),
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
        let t0 = Instant::now();
        f.pass(t0, []);
        let t1 = t0 + Duration::from_secs(2);
        let d = f.pass(
            t1,
            [
                (key("203.0.113.1"), totals(21, SipClass::Register)),
                (key("203.0.113.2"), totals(20, SipClass::Register)),
                (key("203.0.113.3"), totals(11, SipClass::Options)),
                (key("203.0.113.4"), totals(200, SipClass::Invite)),
                (key("203.0.113.5"), totals(6, SipClass::Malformed)),
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
        let t0 = Instant::now();
        let a = key("203.0.113.7");
        f.pass(t0, [(a, totals(0, SipClass::Invite))]);
        // 50 packets over 4 s = 25 per 2-s unit: under.
        assert!(f
            .pass(
                t0 + Duration::from_secs(4),
                [(a, totals(50, SipClass::Invite))]
            )
            .is_empty());
        // 70 over 4 s = 35 per unit: over.
        let d = f.pass(
            t0 + Duration::from_secs(8),
            [(a, totals(120, SipClass::Invite))],
        );
        assert_eq!(d[0].count, 35);
    }

    #[test]
    fn evicted_sources_are_forgotten_and_disabled_detects_nothing() {
        let mut f = flood(30, Default::default());
        let t0 = Instant::now();
        let a = key("203.0.113.7");
        f.pass(t0, [(a, totals(10, SipClass::Invite))]);
        f.pass(t0 + Duration::from_secs(2), []);
        assert_eq!(f.tracked(), 0);
        f.set(
            settings::Flood {
                enabled: false,
                ..settings::Flood::default()
            },
            Duration::from_secs(2),
        );
        assert!(f
            .pass(
                t0 + Duration::from_secs(4),
                [(a, totals(10_000, SipClass::Invite))]
            )
            .is_empty());
        assert_eq!(f.tracked(), 1);
    }
}
