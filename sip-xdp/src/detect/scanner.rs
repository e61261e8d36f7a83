//! Scanners, from the samples the XDP program sends: a known tool's
//! User-Agent bans at its first sampled packet; one source probing many
//! distinct user parts (Request-URI or To) within a window is extension
//! enumeration, or an OPTIONS sweep when the probes are OPTIONS.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use serde_json::json;

use super::{settings, sip::SipInfo, Detection, Reason};

/// URIs kept per source as evidence for the event.
const EVIDENCE: usize = 5;
/// Sources with an open probe window, and sources seen once; past these,
/// stale ones are pruned and new ones wait, so a spoofed flood cannot grow
/// the tables without bound. A source seen once keeps only its user parts
/// (cut at 64 bytes by the parser); a full probe (users, URIs, User-Agent)
/// starts with its second request, which a spoofed source rarely sends.
const MAX_TRACKED: usize = 20_000;
const MAX_ONCE: usize = 50_000;

/// A source's first sampled request, before it earns a probe.
#[derive(Debug)]
struct Once {
    start: Instant,
    users: Vec<String>,
    options: bool,
}

#[derive(Debug)]
struct Probe {
    start: Instant,
    users: BTreeSet<String>,
    requests: u64,
    options: u64,
    uris: Vec<String>,
    user_agent: Option<String>,
}

impl Probe {
    /// Counts one request and the user parts it names (up to `distinct`).
    fn record(&mut self, method: &str, info: &SipInfo, distinct: usize) {
        self.requests += 1;
        if method.eq_ignore_ascii_case("OPTIONS") {
            self.options += 1;
        }
        if self.user_agent.is_none() {
            self.user_agent = info.user_agent.clone();
        }
        let mut new_user = false;
        for u in [&info.ruri_user, &info.to_user].into_iter().flatten() {
            if self.users.len() < distinct && self.users.insert(u.clone()) {
                new_user = true;
            }
        }
        if new_user && self.uris.len() < EVIDENCE {
            if let Some(uri) = &info.request_uri {
                self.uris.push(uri.clone());
            }
        }
    }

    fn new(start: Instant) -> Self {
        Self {
            start,
            users: BTreeSet::new(),
            requests: 0,
            options: 0,
            uris: Vec::new(),
            user_agent: None,
        }
    }
}

pub struct Scanner {
    cfg: settings::Scanner,
    agents: Vec<String>,
    probes: HashMap<IpAddr, Probe>,
    once: HashMap<IpAddr, Once>,
}

impl Scanner {
    pub fn new(cfg: settings::Scanner) -> Self {
        Self {
            agents: cfg.agents(),
            cfg,
            probes: HashMap::new(),
            once: HashMap::new(),
        }
    }

    pub fn set(&mut self, cfg: settings::Scanner) {
        self.agents = cfg.agents();
        self.cfg = cfg;
    }

    /// The configured pattern `ua` matches, if any.
    pub fn agent_match(&self, ua: &str) -> Option<&str> {
        let ua = ua.to_lowercase();
        self.agents
            .iter()
            .find(|p| ua.contains(p.as_str()))
            .map(|s| s.as_str())
    }

    /// A known tool's User-Agent: a detection at the first sample.
    fn by_user_agent(&mut self, src: IpAddr, method: &str, info: &SipInfo) -> Option<Detection> {
        let pattern = self.agent_match(info.user_agent.as_deref()?)?.to_string();
        self.probes.remove(&src);
        Some(Detection {
            ip: src,
            seen: None,
            reason: Reason::ScannerUserAgent,
            base_ban: self.cfg.ban,
            count: 1,
            limit: 1,
            window: Duration::ZERO,
            details: json!({
                "user_agent": info.user_agent,
                "pattern": pattern,
                "method": method,
                "uris": info.request_uri.iter().collect::<Vec<_>>(),
            }),
        })
    }

    pub fn on_sample(&mut self, now: Instant, src: IpAddr, info: &SipInfo) -> Option<Detection> {
        if !self.cfg.enabled {
            return None;
        }
        let method = info.method.as_deref()?;
        if let Some(d) = self.by_user_agent(src, method, info) {
            return Some(d);
        }
        let window = self.cfg.window;
        let distinct = self.cfg.distinct_users;
        if !self.probes.contains_key(&src) {
            let first = match self.once.remove(&src) {
                Some(o) if now.saturating_duration_since(o.start) <= window => o,
                _ => return self.first_sighting(now, src, method, info),
            };
            if self.probes.len() >= MAX_TRACKED {
                self.prune(now);
                if self.probes.len() >= MAX_TRACKED {
                    return None;
                }
            }
            let mut p = Probe::new(first.start);
            p.requests = 1;
            p.options = u64::from(first.options);
            p.users.extend(first.users);
            self.probes.insert(src, p);
        }
        let p = self.probes.get_mut(&src)?;
        if now.saturating_duration_since(p.start) > window {
            *p = Probe::new(now);
        }
        p.record(method, info, distinct);
        if p.users.len() < self.cfg.distinct_users {
            return None;
        }
        let p = self.probes.remove(&src)?;
        // Mostly OPTIONS: a sweep (svmap-style); otherwise enumeration
        // (svwar-style REGISTER/INVITE probing).
        let kind = if p.options * 2 > p.requests {
            Reason::OptionsSweep
        } else {
            Reason::Enumeration
        };
        Some(Detection {
            ip: src,
            seen: None,
            reason: kind,
            base_ban: self.cfg.ban,
            count: p.users.len() as u64,
            limit: self.cfg.distinct_users as u64,
            window,
            details: json!({
                "distinct_users": p.users.len(),
                "users": p.users.iter().take(EVIDENCE * 2).collect::<Vec<_>>(),
                "requests_sampled": p.requests,
                "options": p.options,
                "method": method,
                "user_agent": p.user_agent,
                "uris": p.uris,
                "window_s": window.as_secs_f64(),
            }),
        })
    }

    /// Remembers a source's first request: only its user parts.
    fn first_sighting(
        &mut self,
        now: Instant,
        src: IpAddr,
        method: &str,
        info: &SipInfo,
    ) -> Option<Detection> {
        if self.once.len() >= MAX_ONCE {
            let window = self.cfg.window;
            self.once
                .retain(|_, o| now.saturating_duration_since(o.start) <= window);
            if self.once.len() >= MAX_ONCE {
                return None;
            }
        }
        let mut users: Vec<String> = [&info.ruri_user, &info.to_user]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        users.dedup();
        users.truncate(self.cfg.distinct_users);
        let options = method.eq_ignore_ascii_case("OPTIONS");
        if users.len() >= self.cfg.distinct_users {
            // distinct_users is at least 2 and one request names at most
            // two users: never reached, kept for a looser validation.
            return None;
        }
        self.once.insert(
            src,
            Once {
                start: now,
                users,
                options,
            },
        );
        None
    }

    /// Drops probe windows that have run out.
    pub fn prune(&mut self, now: Instant) {
        let window = self.cfg.window;
        self.probes
            .retain(|_, p| now.saturating_duration_since(p.start) <= window);
        self.once
            .retain(|_, o| now.saturating_duration_since(o.start) <= window);
    }

    /// Sources with a probe or a first sighting on record.
    pub fn tracked(&self) -> usize {
        self.probes.len() + self.once.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, user: &str, ua: Option<&str>) -> SipInfo {
        SipInfo {
            method: Some(method.into()),
            user_agent: ua.map(Into::into),
            request_uri: Some(format!("sip:{user}@198.51.100.1")),
            ruri_user: Some(user.into()),
            to_user: Some(user.into()),
        }
    }

    fn scanner(distinct: usize, window_s: u64) -> Scanner {
        Scanner::new(settings::Scanner {
            distinct_users: distinct,
            window: Duration::from_secs(window_s),
            ..Default::default()
        })
    }

    #[test]
    fn known_agents_are_banned_at_the_first_request() {
        let mut s = scanner(10, 60);
        let ip: IpAddr = "203.0.113.66".parse().unwrap();
        let t = Instant::now();
        for ua in [
            "friendly-scanner",
            "sipvicious 0.3.4",
            "Sipcli/v1.8",
            "VaxSIPUserAgent/3.1",
            "FRIENDLY-SCANNER",
        ] {
            let d = s
                .on_sample(t, ip, &req("OPTIONS", "100", Some(ua)))
                .unwrap();
            assert_eq!(d.reason, Reason::ScannerUserAgent, "{ua}");
            assert_eq!(d.details["user_agent"], ua);
            assert_eq!(d.details["method"], "OPTIONS");
            assert_eq!(d.details["uris"][0], "sip:100@198.51.100.1");
        }
        for ua in ["Asterisk PBX 20.1", "Linphone/5.2", "Zoiper rv2.10", "SIPp"] {
            assert!(
                s.on_sample(t, ip, &req("REGISTER", "1", Some(ua)))
                    .is_none(),
                "{ua}"
            );
        }
    }

    #[test]
    fn responses_and_unknown_agents_pass() {
        let mut s = scanner(10, 60);
        let ip: IpAddr = "203.0.113.66".parse().unwrap();
        let resp = SipInfo {
            user_agent: Some("friendly-scanner".into()),
            ..Default::default()
        };
        assert!(s.on_sample(Instant::now(), ip, &resp).is_none());
    }

    #[test]
    fn many_distinct_users_within_the_window_is_enumeration() {
        let mut s = scanner(5, 60);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t = Instant::now();
        // The same user again and again is not enumeration.
        for _ in 0..50 {
            assert!(s.on_sample(t, ip, &req("REGISTER", "100", None)).is_none());
        }
        for (i, u) in ["101", "102", "103"].iter().enumerate() {
            let at = t + Duration::from_secs(i as u64);
            assert!(s.on_sample(at, ip, &req("INVITE", u, None)).is_none());
        }
        let d = s
            .on_sample(t + Duration::from_secs(10), ip, &req("INVITE", "104", None))
            .unwrap();
        assert_eq!(d.reason, Reason::Enumeration);
        assert_eq!(d.count, 5);
        assert_eq!(
            d.details["users"],
            json!(["100", "101", "102", "103", "104"])
        );
        assert!(d.details["uris"].as_array().unwrap().len() <= EVIDENCE);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn one_shot_sources_take_no_probe_and_a_bounded_table() {
        let mut s = scanner(10, 60);
        let t = Instant::now();
        for i in 0..(MAX_ONCE as u128 + 10_000) {
            let ip = std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) | i);
            assert!(s
                .on_sample(t, ip.into(), &req("OPTIONS", "100", None))
                .is_none());
        }
        assert!(s.probes.is_empty());
        assert_eq!(s.once.len(), MAX_ONCE);
        // After the window they make room again.
        let later = t + Duration::from_secs(61);
        s.on_sample(
            later,
            "203.0.113.1".parse().unwrap(),
            &req("OPTIONS", "1", None),
        );
        assert_eq!(s.tracked(), 1);
    }

    #[test]
    fn slow_probing_outside_the_window_is_not_enumeration() {
        let mut s = scanner(3, 10);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let t = Instant::now();
        for i in 0..20u64 {
            let at = t + Duration::from_secs(i * 6);
            assert!(s
                .on_sample(at, ip, &req("INVITE", &format!("{i}"), None))
                .is_none());
        }
        s.prune(t + Duration::from_secs(500));
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn options_probes_are_a_sweep() {
        let mut s = scanner(4, 60);
        let ip: IpAddr = "2001:db8::bad".parse().unwrap();
        let t = Instant::now();
        let mut got = None;
        for u in ["a", "b", "c", "d"] {
            got = s.on_sample(t, ip, &req("OPTIONS", u, Some("pplx")));
        }
        let d = got.unwrap();
        assert_eq!(d.reason, Reason::OptionsSweep);
        assert_eq!(d.details["user_agent"], "pplx");
    }

    #[test]
    fn disabled_detects_nothing() {
        let mut s = Scanner::new(settings::Scanner {
            enabled: false,
            ..Default::default()
        });
        let ip: IpAddr = "203.0.113.66".parse().unwrap();
        assert!(s
            .on_sample(
                Instant::now(),
                ip,
                &req("OPTIONS", "1", Some("friendly-scanner"))
            )
            .is_none());
    }
}
