//! The `[detect]` section of the configuration file. Every key is optional;
//! the defaults follow OpenSIPS pike and fail2ban where those have one.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use sip_xdp_common::{classify::SIP_CLASSES, rules::RuleLists, SipClass};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::parse::parse_duration(&s).map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Master switch: off leaves sip-xdp a database-driven firewall.
    pub enabled: bool,
    /// The sampling unit: how often per-source counters are read.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Sources no detector ever bans (besides the allow-list, loopback and
    /// the host's own addresses, which are never banned anyway).
    pub ignore: Vec<IpNet>,
    /// How long a source stays verified once it proved its address (a
    /// REGISTER that answered the SBC's digest challenge and got a 2xx, or
    /// an answer to a request the SBC itself sent): longer than a
    /// registration interval, so a registered phone's re-REGISTERs keep it
    /// verified.
    #[serde(deserialize_with = "duration")]
    pub trust_ttl: Duration,
    /// New detector bans per second on this node; past it detections are
    /// counted and reported, not banned (a spoofed storm must not fill the
    /// ban table, nor every node's through the database).
    pub max_bans_per_sec: u32,
    /// Prefix lengths sources are counted, limited, detected and banned by:
    /// an IPv6 customer owns a /64, and rotating addresses inside it must
    /// not make a new source of every packet. 32 and 128 mean per address.
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    pub flood: Flood,
    pub shedding: Shedding,
    pub rate_limit: RateLimit,
    pub samples: Samples,
    pub scanner: Scanner,
    pub brute_force: BruteForce,
    pub escalation: Escalation,
    pub deny: Deny,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(2),
            ignore: Vec::new(),
            trust_ttl: Duration::from_secs(90 * 60),
            max_bans_per_sec: 20,
            prefix_v4: 32,
            prefix_v6: 64,
            flood: Flood::default(),
            shedding: Shedding::default(),
            rate_limit: RateLimit::default(),
            samples: Samples::default(),
            scanner: Scanner::default(),
            brute_force: BruteForce::default(),
            escalation: Escalation::default(),
            deny: Deny::default(),
        }
    }
}

/// What the XDP program drops from sources not on the allow-list by the
/// request's own text, as Kamailio's `secfilter` and the OpenSIPS security
/// tutorials do in the script (the scanner User-Agents are
/// `scanner.user_agents`). All ASCII case-insensitive.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Deny {
    /// From, To and Contact URI users that start with one of these.
    pub users: Vec<String>,
    /// From, To and Contact URI hosts that start with one of these.
    pub domains: Vec<String>,
    /// Request methods the SBC never serves (e.g. `PUBLISH`, `SUBSCRIBE`).
    pub methods: Vec<String>,
}

/// Pike: `reqs_density_per_unit` requests per `sampling_time_unit`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Flood {
    pub enabled: bool,
    /// Packets per source per sampling unit, all classes together.
    pub limit: u64,
    /// Tighter (or looser) limits per SIP class, per sampling unit.
    pub class_limits: ClassLimits,
    /// Pike's `remove_latency`.
    #[serde(deserialize_with = "duration")]
    pub ban: Duration,
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: 30,
            class_limits: ClassLimits::default(),
            ban: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClassLimits {
    pub register: Option<u64>,
    pub invite: Option<u64>,
    pub options: Option<u64>,
    pub other_request: Option<u64>,
    pub response: Option<u64>,
    pub keepalive: Option<u64>,
    pub sigcomp: Option<u64>,
    /// Non-SIP payloads; over it the event is `malformed_flood`.
    pub malformed: Option<u64>,
}

impl Default for ClassLimits {
    /// Only non-SIP payloads and SigComp have their own limit by default: a
    /// client that sends garbage to a SIP port is never legitimate, and a
    /// first byte is all it takes to be counted as SigComp.
    fn default() -> Self {
        Self {
            register: None,
            invite: None,
            options: None,
            other_request: None,
            response: None,
            keepalive: None,
            sigcomp: Some(10),
            malformed: Some(10),
        }
    }
}

impl ClassLimits {
    pub fn by_class(&self) -> [Option<u64>; SIP_CLASSES] {
        let mut out = [None; SIP_CLASSES];
        out[SipClass::Register as usize] = self.register;
        out[SipClass::Invite as usize] = self.invite;
        out[SipClass::Options as usize] = self.options;
        out[SipClass::OtherRequest as usize] = self.other_request;
        out[SipClass::Response as usize] = self.response;
        out[SipClass::Keepalive as usize] = self.keepalive;
        out[SipClass::SigComp as usize] = self.sigcomp;
        out[SipClass::Malformed as usize] = self.malformed;
        out
    }
}

/// The kernel's own per-source limit: enforced in XDP without the
/// controller, reported to it on the first crossing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Packets per source per window; 0 turns the kernel limit off.
    pub packets: u32,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Ban for a source the kernel reports over its limit; 0s = count and
    /// drop in the kernel only, no ban.
    #[serde(deserialize_with = "duration_or_zero")]
    pub ban: Duration,
}

fn duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().trim_end_matches('s') == "0" {
        return Ok(Duration::ZERO);
    }
    crate::parse::parse_duration(&s).map_err(serde::de::Error::custom)
}

/// Overload admission, done by the XDP program itself
/// (`sip_xdp_common::admission`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Shedding {
    /// The load mark: SIP packets per second, for the whole node, from
    /// sources not on the allow-list, past which only proven sources and
    /// the strangers' share pass (split over the CPUs the program runs
    /// on); 0 = never shed.
    pub budget: u32,
    /// In overload, strangers (neither verified nor remembered) admitted
    /// per second for the whole node, at most: what the SIP server pays
    /// for unproven requests while it is under attack.
    pub strangers: u32,
    /// In overload, strangers admitted per second from one bucket of
    /// source prefixes, per CPU: enough for a new phone's REGISTER and its
    /// answer to the challenge.
    pub per_bucket: u32,
    /// The prefix lengths strangers are bucketed by: a storm drawn from a
    /// few prefixes spends only their buckets.
    pub bucket_v4: u8,
    pub bucket_v6: u8,
    /// How long an address that proved itself (`trust_ttl`'s round trip)
    /// is remembered, in the database every node shares, and admitted
    /// first in overload ("0s" = remember nothing).
    #[serde(deserialize_with = "duration_or_zero")]
    pub remember: Duration,
    /// Accepted from older configurations and ignored: admission no
    /// longer waits for a source to be seen twice.
    pub grey: Option<String>,
}

impl Default for Shedding {
    fn default() -> Self {
        Self {
            budget: 4_000,
            strangers: 1_000,
            per_bucket: 2,
            bucket_v4: 16,
            bucket_v6: 32,
            remember: Duration::from_secs(7 * 86_400),
            grey: None,
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            packets: 250,
            window: Duration::from_secs(1),
            ban: Duration::from_secs(300),
        }
    }
}

/// What the XDP program copies to the controller.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Samples {
    /// The first packets of every new source (per CPU).
    pub first: u32,
    /// Then one packet in `every` (rounded up to a power of two; 0 = none).
    pub every: u32,
    /// Ceiling per CPU per second, whatever the traffic.
    pub per_sec: u32,
    /// A source silent this long starts a new burst, whose first packet is
    /// sampled as a new source's is: a scanner coming back, a source whose
    /// ban ended, traffic after a restart ("0s" = never).
    #[serde(deserialize_with = "duration_or_zero")]
    pub burst_idle: Duration,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            first: 4,
            every: 16,
            per_sec: 1_000,
            burst_idle: Duration::from_secs(60),
        }
    }
}

/// User-Agents of SIP scanners and attack tools, matched case-insensitively
/// as substrings. From the rules that Kamailio's and OpenSIPS's sample
/// configurations, fail2ban's asterisk filter and public VoIP blocklists
/// use.
pub const DEFAULT_SCANNER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "friendly-request",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "vaxipuseragent",
    "sip-scan",
    "sipscan",
    "iwar",
    "sivus",
    "smap",
    "pplsip",
    "sundayddr",
    "siparmyknife",
    "gulp",
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scanner {
    pub enabled: bool,
    /// Replaces the default list.
    pub user_agents: Vec<String>,
    /// Added to the list (default or given).
    pub extra_user_agents: Vec<String>,
    /// Distinct user parts (Request-URI or To) one source may probe within
    /// `window` before it counts as enumeration.
    pub distinct_users: usize,
    /// 404s the SBC may send one client within `window` (egress).
    pub not_found: u64,
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    #[serde(deserialize_with = "duration")]
    pub ban: Duration,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            enabled: true,
            user_agents: DEFAULT_SCANNER_AGENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            extra_user_agents: Vec::new(),
            distinct_users: 10,
            not_found: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(3600),
        }
    }
}

impl Scanner {
    pub fn agents(&self) -> Vec<String> {
        self.user_agents
            .iter()
            .chain(&self.extra_user_agents)
            .map(|s| s.to_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// fail2ban's `maxretry`, `findtime`, `bantime`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForce {
    pub enabled: bool,
    /// Read `failed_registrations` and `door_knock_attempts`.
    pub database: bool,
    /// Count the SBC's own 401/403/407 replies (egress program).
    pub wire: bool,
    pub maxretry: u64,
    #[serde(deserialize_with = "duration")]
    pub findtime: Duration,
    #[serde(deserialize_with = "duration")]
    pub bantime: Duration,
}

impl Default for BruteForce {
    fn default() -> Self {
        Self {
            enabled: true,
            database: true,
            wire: true,
            maxretry: 10,
            findtime: Duration::from_secs(300),
            bantime: Duration::from_secs(3600),
        }
    }
}

/// fail2ban's `bantime.increment`: each repeat offence within `forget`
/// multiplies the ban, up to `max`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Escalation {
    pub multiplier: f64,
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
    #[serde(deserialize_with = "duration")]
    pub forget: Duration,
}

impl Default for Escalation {
    fn default() -> Self {
        Self {
            multiplier: 2.0,
            max: Duration::from_secs(7 * 86_400),
            forget: Duration::from_secs(86_400),
        }
    }
}

impl Settings {
    /// Checks what serde cannot: returns the first bad field and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.flood.limit == 0 {
            return Err(("detect.flood.limit", "must be at least 1".into()));
        }
        if !(8..=32).contains(&self.prefix_v4) {
            return Err(("detect.prefix_v4", "must be between 8 and 32".into()));
        }
        if !(16..=128).contains(&self.prefix_v6) {
            return Err(("detect.prefix_v6", "must be between 16 and 128".into()));
        }
        if !(1.0..=100.0).contains(&self.escalation.multiplier) {
            return Err((
                "detect.escalation.multiplier",
                "must be between 1 and 100".into(),
            ));
        }
        if self.brute_force.maxretry == 0 {
            return Err(("detect.brute_force.maxretry", "must be at least 1".into()));
        }
        if self.scanner.distinct_users < 2 {
            return Err(("detect.scanner.distinct_users", "must be at least 2".into()));
        }
        if !(1..=32).contains(&self.shedding.bucket_v4) {
            return Err((
                "detect.shedding.bucket_v4",
                "must be between 1 and 32".into(),
            ));
        }
        if !(1..=128).contains(&self.shedding.bucket_v6) {
            return Err((
                "detect.shedding.bucket_v6",
                "must be between 1 and 128".into(),
            ));
        }
        if self.samples.every > 1 << 20 {
            return Err(("detect.samples.every", "must be at most 1048576".into()));
        }
        if let Err(e) = sip_xdp_common::rules::compile(&self.rule_lists()) {
            return Err(("detect.deny", e.to_string()));
        }
        Ok(())
    }

    /// What the XDP program matches requests against: nothing while
    /// detection is off, the scanner User-Agents while the scanner
    /// detector is on.
    pub fn rule_lists(&self) -> RuleLists {
        if !self.enabled {
            return RuleLists::default();
        }
        RuleLists {
            agents: if self.scanner.enabled {
                self.scanner.agents()
            } else {
                Vec::new()
            },
            users: self.deny.users.clone(),
            domains: self.deny.domains.clone(),
            methods: self.deny.methods.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_pike_and_fail2ban() {
        let s = Settings::default();
        assert_eq!(s.flood.limit, 30);
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.flood.ban, Duration::from_secs(120));
        assert_eq!(s.brute_force.maxretry, 10);
        assert_eq!(s.brute_force.findtime, Duration::from_secs(300));
        assert_eq!(s.brute_force.bantime, Duration::from_secs(3600));
        assert!(s.scanner.agents().contains(&"friendly-scanner".to_string()));
        assert!(s.validate().is_ok());
    }

    #[test]
    fn parses_a_partial_section() {
        let s: Settings = toml::from_str(
            r#"
            interval = "500ms"
            ignore = ["198.51.100.0/24"]
            [flood]
            limit = 100
            class_limits = { register = 20, malformed = 5 }
            [rate_limit]
            packets = 0
            ban = "0s"
            [scanner]
            extra_user_agents = ["EvilTool"]
            "#,
        )
        .unwrap();
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.flood.limit, 100);
        let by = s.flood.class_limits.by_class();
        assert_eq!(by[SipClass::Register as usize], Some(20));
        assert_eq!(by[SipClass::Malformed as usize], Some(5));
        assert_eq!(by[SipClass::Invite as usize], None);
        assert_eq!(s.rate_limit.packets, 0);
        assert_eq!(s.rate_limit.ban, Duration::ZERO);
        assert!(s.scanner.agents().contains(&"eviltool".to_string()));
        assert!(s.scanner.agents().contains(&"sipvicious".to_string()));
        assert_eq!(s.brute_force, BruteForce::default());
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        assert!(toml::from_str::<Settings>("[flood]\nlimt = 3").is_err());
        assert!(toml::from_str::<Settings>("interval = \"soon\"").is_err());
        let s: Settings = toml::from_str("[escalation]\nmultiplier = 0.5").unwrap();
        assert_eq!(s.validate().unwrap_err().0, "detect.escalation.multiplier");
    }
}
