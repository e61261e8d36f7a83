//! Brute force and enumeration from the wire: the egress program counts the
//! SBC's final responses per client. Every sampling pass the per-client
//! deltas go into a sliding window; within it,
//! - failures = 403s + the 401 challenges not answered by a 2xx to the
//!   REGISTER the XDP program saw arrive + the 407 challenges not answered
//!   by the end of such an INVITE (a phone that registers answers its
//!   challenge and gets a 200; a password guesser does not, and a 200 to
//!   its keep-alive or a call to a number that needs no password answers
//!   nothing of its 401s), and `maxretry` of them within `findtime` ban
//!   like the database path does;
//! - 404s over `scanner.not_found` within `scanner.window` are extension
//!   enumeration.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use serde_json::json;
use sip_xdp_common::{
    addr::ip_of,
    maps::{Reply, REPLY_KINDS},
    IpKey,
};

use super::{settings, Detection, Reason};
use crate::kernel::Replies;

pub struct Wire {
    brute: settings::BruteForce,
    scanner: settings::Scanner,
    prev: HashMap<IpKey, Replies>,
    windows: HashMap<IpKey, VecDeque<(Instant, Replies)>>,
    started: bool,
}

fn sum(w: &VecDeque<(Instant, Replies)>, since: Instant) -> Replies {
    let mut s = [0u64; REPLY_KINDS];
    for (at, d) in w {
        if *at >= since {
            for (a, b) in s.iter_mut().zip(d) {
                *a += b;
            }
        }
    }
    s
}

impl Wire {
    pub fn new(brute: settings::BruteForce, scanner: settings::Scanner) -> Self {
        Self {
            brute,
            scanner,
            prev: HashMap::new(),
            windows: HashMap::new(),
            started: false,
        }
    }

    pub fn set(&mut self, brute: settings::BruteForce, scanner: settings::Scanner) {
        self.brute = brute;
        self.scanner = scanner;
    }

    /// One pass over the kernel's reply counters. The first pass is a
    /// baseline, as for floods.
    pub fn pass(
        &mut self,
        now: Instant,
        replies: impl IntoIterator<Item = (IpKey, Replies)>,
    ) -> Vec<Detection> {
        let first = !self.started;
        self.started = true;
        let keep = self.brute.findtime.max(self.scanner.window);
        let mut next = HashMap::new();
        let mut out = Vec::new();
        for (key, r) in replies {
            let before = self.prev.get(&key).copied().unwrap_or_default();
            next.insert(key, r);
            if first {
                continue;
            }
            let mut delta = [0u64; REPLY_KINDS];
            for (i, d) in delta.iter_mut().enumerate() {
                *d = r[i].saturating_sub(before[i]);
            }
            if delta.iter().all(|d| *d == 0) {
                continue;
            }
            let w = self.windows.entry(key).or_default();
            w.push_back((now, delta));
            while w
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep)
            {
                w.pop_front();
            }
            if let Some(d) = self.judge(key, now) {
                self.windows.remove(&key);
                out.push(d);
            }
        }
        self.prev = next;
        self.windows.retain(|_, w| {
            w.back()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) <= keep)
        });
        out
    }

    fn judge(&self, key: IpKey, now: Instant) -> Option<Detection> {
        let w = self.windows.get(&key)?;
        let since = |d: Duration| now.checked_sub(d).unwrap_or(now);
        if self.brute.enabled && self.brute.wire {
            let s = sum(w, since(self.brute.findtime));
            // Each kind of challenge is answered only by its own kind of
            // request: a call ending well never answers a REGISTER's 401.
            let unanswered = s[Reply::Unauthorized401 as usize]
                .saturating_sub(s[Reply::Success as usize])
                + s[Reply::ProxyAuth407 as usize].saturating_sub(s[Reply::InviteAnswered as usize]);
            let failures = s[Reply::Forbidden403 as usize] + unanswered;
            if failures >= self.brute.maxretry {
                return Some(Detection {
                    ip: ip_of(&key),
                    seen: None,
                    reason: Reason::WireBruteForce,
                    base_ban: self.brute.bantime,
                    count: failures,
                    limit: self.brute.maxretry,
                    window: self.brute.findtime,
                    details: json!({
                        "failures": failures,
                        "replies": replies_json(&s),
                        "maxretry": self.brute.maxretry,
                        "findtime_s": self.brute.findtime.as_secs(),
                        "seen_by": "egress",
                    }),
                });
            }
        }
        if self.scanner.enabled {
            let s = sum(w, since(self.scanner.window));
            let not_found = s[Reply::NotFound404 as usize];
            if not_found >= self.scanner.not_found {
                return Some(Detection {
                    ip: ip_of(&key),
                    seen: None,
                    reason: Reason::WireEnumeration,
                    base_ban: self.scanner.ban,
                    count: not_found,
                    limit: self.scanner.not_found,
                    window: self.scanner.window,
                    details: json!({
                        "not_found": not_found,
                        "replies": replies_json(&s),
                        "window_s": self.scanner.window.as_secs(),
                        "seen_by": "egress",
                    }),
                });
            }
        }
        None
    }

    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

fn replies_json(s: &Replies) -> serde_json::Value {
    json!({
        "2xx": s[Reply::Success as usize],
        "401": s[Reply::Unauthorized401 as usize],
        "403": s[Reply::Forbidden403 as usize],
        "404": s[Reply::NotFound404 as usize],
        "407": s[Reply::ProxyAuth407 as usize],
        "invite_answered": s[Reply::InviteAnswered as usize],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_xdp_common::addr::key_of;

    fn key(s: &str) -> IpKey {
        key_of(s.parse().unwrap())
    }

    fn r(ok: u64, c401: u64, c403: u64, c404: u64, c407: u64) -> Replies {
        [ok, c401, c403, c404, c407, 0]
    }

    fn wire() -> Wire {
        Wire::new(
            settings::BruteForce {
                maxretry: 10,
                findtime: Duration::from_secs(60),
                ..Default::default()
            },
            settings::Scanner {
                not_found: 5,
                window: Duration::from_secs(30),
                ..Default::default()
            },
        )
    }

    #[test]
    fn answered_challenges_are_not_failures() {
        let mut w = wire();
        let a = key("203.0.113.10");
        let t = Instant::now();
        w.pass(t, [(a, r(0, 0, 0, 0, 0))]);
        // A NAT-ed office: 100 registrations, each 401 then 200.
        for i in 1..=10u64 {
            let at = t + Duration::from_secs(i);
            assert!(w.pass(at, [(a, r(i * 10, i * 10, 0, 0, 0))]).is_empty());
        }
    }

    #[test]
    fn unanswered_challenges_and_403s_are_brute_force() {
        let mut w = wire();
        let a = key("203.0.113.11");
        let t = Instant::now();
        w.pass(t, []);
        assert!(w
            .pass(t + Duration::from_secs(2), [(a, r(1, 5, 0, 0, 0))])
            .is_empty());
        let d = w.pass(t + Duration::from_secs(4), [(a, r(1, 8, 2, 0, 2))]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].reason, Reason::WireBruteForce);
        // 403s 2 + challenges (8+2) - successes 1 = 11.
        assert_eq!(d[0].count, 11);
        assert_eq!(d[0].details["replies"]["407"], 2);
        assert_eq!(w.tracked(), 0);
    }

    /// A guesser answering its REGISTER challenges with calls that end
    /// well (a public number the SBC answers without a password): the
    /// calls answer nothing but 407s.
    #[test]
    fn a_call_never_answers_a_registers_challenge() {
        let mut w = wire();
        let a = key("203.0.113.14");
        let t = Instant::now();
        w.pass(t, []);
        let guessing = [0, 10, 0, 0, 0, 10];
        let d = w.pass(t + Duration::from_secs(2), [(a, guessing)]);
        assert_eq!(d.len(), 1, "ten unanswered 401s");
        assert_eq!(d[0].count, 10);
        // A call centre: 407s each answered by its call's end.
        let b = key("203.0.113.15");
        w.pass(t + Duration::from_secs(3), [(b, [0, 0, 0, 0, 0, 0])]);
        let calls = [0, 0, 0, 0, 30, 30];
        assert!(w.pass(t + Duration::from_secs(4), [(b, calls)]).is_empty());
    }

    #[test]
    fn failures_older_than_findtime_fall_out() {
        let mut w = wire();
        let a = key("203.0.113.12");
        let t = Instant::now();
        w.pass(t, []);
        let mut total = 0;
        for i in 1..=20u64 {
            total += 1;
            // One failure every 10 s: at most 7 within 60 s.
            let got = w.pass(t + Duration::from_secs(i * 10), [(a, r(0, 0, total, 0, 0))]);
            assert!(got.is_empty(), "pass {i}");
        }
    }

    #[test]
    fn many_404s_are_enumeration() {
        let mut w = wire();
        let a = key("2001:db8::77");
        let t = Instant::now();
        w.pass(t, []);
        assert!(w
            .pass(t + Duration::from_secs(1), [(a, r(0, 0, 0, 4, 0))])
            .is_empty());
        let d = w.pass(t + Duration::from_secs(2), [(a, r(0, 0, 0, 5, 0))]);
        assert_eq!(d[0].reason, Reason::WireEnumeration);
        assert_eq!(d[0].count, 5);
        assert_eq!(d[0].ip.to_string(), "2001:db8::77");
    }

    #[test]
    fn first_pass_is_a_baseline() {
        let mut w = wire();
        let t = Instant::now();
        assert!(w
            .pass(t, [(key("203.0.113.13"), r(0, 0, 500, 500, 0))])
            .is_empty());
    }
}
