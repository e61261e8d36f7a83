//! The configuration file `run` and every CLI command read, so they find the
//! same database. TOML; every field is optional.
//!
//! ```toml
//! db = "mysql://sipxdp:secret@localhost/voip?socket=/run/mysqld/mysqld.sock"
//! node = "sbc-1"
//! interfaces = ["eth0"]
//! mode = "auto"            # auto | native | skb
//! sync_interval = "2s"
//! ports = [5060, 5080]
//! tcp_ports = [5060, 5061] # SIP over TCP/TLS: bans enforced, nothing counted
//! ban_scope = "sip"        # sip: bans drop SIP ports only | all: everything
//! monitor = false
//! drop_malformed = false
//! event_buffer = 10000
//! status_file = "/run/sip-xdp/status.json"
//! outbox = "/var/lib/sip-xdp/outbox.jsonl"  # CLI changes waiting for the database
//! max_bans = 131072        # map sizes, fixed when the program is first loaded
//! max_allow = 16384
//! max_block = 65536
//! max_sources = 262144
//! max_rate = 262144
//! max_replies = 65536
//! source_lru = "common"    # common | per-cpu: the source table's LRU lists
//! metrics = "127.0.0.1:9477"   # Prometheus endpoint; off when absent
//!
//! [detect]                 # see detect::settings for every key
//! interval = "2s"
//! ```

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    db::store::DEFAULT_DB_URL,
    kernel::loader::{AttachMode, Capacities, LruLists},
};

pub const DEFAULT_CONFIG: &str = "/etc/sip-xdp/sip-xdp.toml";
/// Every key with its default and meaning: `sip-xdp config example`, and
/// the file the package installs.
pub const EXAMPLE: &str = include_str!("../../dist/sip-xdp.toml");
pub const DEFAULT_STATUS_FILE: &str = "/run/sip-xdp/status.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Neither error is a `#[source]`: the message already holds it, and
    // the one-line report of an error and its causes would print it twice.
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {field}: {why}")]
    Invalid {
        path: String,
        field: &'static str,
        why: String,
    },
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Raw {
    db: Option<String>,
    node: Option<String>,
    interfaces: Option<Vec<String>>,
    mode: Option<String>,
    sync_interval: Option<String>,
    ports: Option<Vec<u16>>,
    tcp_ports: Option<Vec<u16>>,
    ban_scope: Option<String>,
    monitor: Option<bool>,
    drop_malformed: Option<bool>,
    event_buffer: Option<usize>,
    status_file: Option<PathBuf>,
    outbox: Option<PathBuf>,
    max_bans: Option<u32>,
    max_allow: Option<u32>,
    max_block: Option<u32>,
    max_sources: Option<u32>,
    max_rate: Option<u32>,
    max_replies: Option<u32>,
    source_lru: Option<String>,
    metrics: Option<String>,
    detect: Option<crate::detect::Settings>,
    alerts: Option<crate::alerts::Settings>,
    feeds: Option<crate::feed::FeedsSettings>,
    state_dir: Option<PathBuf>,
    trusted: Option<Trusted>,
    geo: Option<crate::feed::GeoSettings>,
    retention: Option<crate::db::retention::Settings>,
    rails: Option<Rails>,
}

/// `[rails]`: the widest entry a list sip-xdp reads may hold.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Rails {
    min_prefix_v4: Option<u8>,
    min_prefix_v6: Option<u8>,
}

impl Rails {
    fn checked(&self) -> Result<crate::guard::Widest, (&'static str, String)> {
        let d = crate::guard::Widest::default();
        let v4 = self.min_prefix_v4.unwrap_or(d.v4);
        let v6 = self.min_prefix_v6.unwrap_or(d.v6);
        if v4 > 32 {
            return Err((
                "rails.min_prefix_v4",
                format!("{v4} is not a prefix length of 0 to 32"),
            ));
        }
        if v6 > 128 {
            return Err((
                "rails.min_prefix_v6",
                format!("{v6} is not a prefix length of 0 to 128"),
            ));
        }
        Ok(crate::guard::Widest { v4, v6 })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub db: String,
    pub node: String,
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    pub sync_interval: Duration,
    pub ports: Option<Vec<u16>>,
    /// TCP ports bans are enforced on (SIP over TCP and TLS); `[]` = none.
    pub tcp_ports: Option<Vec<u16>>,
    pub ban_scope: Option<BanScope>,
    pub monitor: Option<bool>,
    pub drop_malformed: Option<bool>,
    pub event_buffer: usize,
    pub status_file: PathBuf,
    /// Where the CLI queues changes the database could not take.
    pub outbox: PathBuf,
    /// Map sizes, applied when the program is first loaded.
    pub capacities: Capacities,
    /// Prometheus endpoint, off by default.
    pub metrics: Option<std::net::SocketAddr>,
    pub detect: crate::detect::Settings,
    pub alerts: crate::alerts::Settings,
    /// Threat feeds (`[feeds.NAME]`), checked.
    pub feeds: Vec<crate::feed::Feed>,
    /// Where the controller keeps what must survive a restart (APIBAN's
    /// last ID).
    pub state_dir: PathBuf,
    /// Trusted peers from the SIP server's own `address` table.
    pub trusted: Option<Trusted>,
    /// The `[geo]` country database, for naming sources by country.
    pub geo_db: Option<PathBuf>,
    /// How long events and lifted blocks are kept.
    pub retention: crate::db::retention::Settings,
    /// The widest feed, country, allow-list and trusted-peer entry taken.
    pub widest: crate::guard::Widest,
    /// Where it was read from, for SIGHUP.
    pub path: Option<PathBuf>,
}

impl Config {
    /// Reads `path`; with no path, the default file if it exists, else
    /// defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, must_exist) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    error: source,
                })
            }
        };
        let mut cfg = Self::parse(text.as_deref().unwrap_or(""), &path.display().to_string())?;
        cfg.path = text.map(|_| path);
        Ok(cfg)
    }

    /// The configuration a file's text gives; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..at];
            ConfigError::Parse {
                path: origin.to_string(),
                line: before.matches('\n').count() + 1,
                column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
                message: e.message().trim().replace('\n', "; "),
            }
        })?;
        Self::from_raw(raw).map_err(|(field, why)| ConfigError::Invalid {
            path: origin.to_string(),
            field,
            why,
        })
    }

    /// Checks every field and fills in the defaults; an error names the
    /// field. Long on purpose: one field after another, as the file lists
    /// them.
    fn from_raw(mut raw: Raw) -> Result<Self, (&'static str, String)> {
        let mode = match raw.mode.as_deref().unwrap_or("auto") {
            "auto" => AttachMode::Auto,
            "native" => AttachMode::Native,
            "skb" => AttachMode::Skb,
            other => return Err(("mode", format!("{other:?} is not auto, native or skb"))),
        };
        let sync_interval = match &raw.sync_interval {
            None => Duration::from_secs(2),
            Some(s) => crate::parse::parse_duration(s).map_err(|e| ("sync_interval", e))?,
        };
        if sync_interval < MIN_SYNC_INTERVAL {
            return Err((
                "sync_interval",
                format!(
                    "{} is shorter than {}: every round reads the database",
                    humantime::format_duration(sync_interval),
                    humantime::format_duration(MIN_SYNC_INTERVAL)
                ),
            ));
        }
        if let Some(db) = &raw.db {
            check_db_url(db)?;
        }
        for (field, path) in [
            ("outbox", &raw.outbox),
            ("status_file", &raw.status_file),
            ("state_dir", &raw.state_dir),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err((field, "needs a path".into()));
            }
        }
        if let Some(node) = &raw.node {
            crate::db::schema::fits("node", node).map_err(|e| ("node", e.to_string()))?;
            if node.is_empty() || node.chars().any(char::is_control) {
                return Err((
                    "node",
                    "needs a name on one line (the host name is the default)".into(),
                ));
            }
        }
        let ban_scope = ports_and_scope(&raw)?;
        let metrics = match &raw.metrics {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| {
                (
                    "metrics",
                    format!("{a:?} is not an address:port, e.g. 127.0.0.1:9477"),
                )
            })?),
        };
        let detect = raw.detect.take().unwrap_or_default();
        detect.validate()?;
        let alerts = raw.alerts.take().unwrap_or_default();
        alerts.validate()?;
        let geo_db = raw.geo.as_ref().map(|g| g.database.clone());
        let feeds = feeds(raw.feeds.take().unwrap_or_default(), raw.geo.take())?;
        let trusted = raw.trusted.take().map(Trusted::checked).transpose()?;
        let widest = raw.rails.take().unwrap_or_default().checked()?;
        Ok(Self {
            widest,
            retention: raw.retention.take().unwrap_or_default(),
            capacities: capacities(&raw)?,
            metrics,
            detect,
            alerts,
            feeds,
            trusted,
            geo_db,
            state_dir: raw
                .state_dir
                .take()
                .unwrap_or_else(|| PathBuf::from("/var/lib/sip-xdp")),
            db: raw.db.unwrap_or_else(|| DEFAULT_DB_URL.into()),
            node: raw.node.unwrap_or_else(hostname),
            interfaces: raw.interfaces.unwrap_or_default(),
            mode,
            sync_interval,
            ports: raw.ports,
            tcp_ports: raw.tcp_ports,
            ban_scope,
            monitor: raw.monitor,
            drop_malformed: raw.drop_malformed,
            event_buffer: raw.event_buffer.unwrap_or(10_000),
            status_file: raw
                .status_file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATUS_FILE)),
            outbox: raw
                .outbox
                .unwrap_or_else(|| PathBuf::from(crate::db::outbox::DEFAULT_OUTBOX)),
            path: None,
        })
    }
}

/// The shortest sync interval `run` takes: every round reads the database.
pub const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Refuses a database URL of a kind sip-xdp does not speak, naming only
/// its scheme (the rest may hold a password).
pub fn check_db_url(db: &str) -> Result<(), (&'static str, String)> {
    let scheme = db.split_once(':').map_or("", |(s, _)| s);
    match scheme {
        "sqlite" | "mysql" | "mariadb" => Ok(()),
        _ => Err((
            "db",
            format!(
                "{:?} is not a database sip-xdp uses: give sqlite:///path/file.db or \
                 mysql://user:password@host/db",
                if scheme.is_empty() {
                    "(no scheme)".to_string()
                } else {
                    format!("{scheme}:")
                }
            ),
        )),
    }
}

fn ports_and_scope(raw: &Raw) -> Result<Option<BanScope>, (&'static str, String)> {
    if let Some(ports) = &raw.ports {
        if ports.is_empty() || ports.contains(&0) {
            return Err(("ports", "needs at least one port, none of them 0".into()));
        }
    }
    if raw.tcp_ports.as_ref().is_some_and(|p| p.contains(&0)) {
        return Err(("tcp_ports", "port 0 is not a port".into()));
    }
    match raw.ban_scope.as_deref() {
        None => Ok(None),
        Some("sip") => Ok(Some(BanScope::Sip)),
        Some("all") => Ok(Some(BanScope::All)),
        Some(other) => Err((
            "ban_scope",
            format!("{other:?} is not \"sip\" (SIP ports over UDP and TCP) or \"all\" (everything from the source)"),
        )),
    }
}

/// The `[feeds.NAME]` sections and the `[geo]` policy, checked, as feeds.
fn feeds(
    all: crate::feed::FeedsSettings,
    geo: Option<crate::feed::GeoSettings>,
) -> Result<Vec<crate::feed::Feed>, (&'static str, String)> {
    let mut feeds = crate::feed::from_settings(&all)?;
    if let Some(g) = geo {
        if feeds.iter().any(|f| f.name == "geo") {
            return Err((
                "feeds",
                "\"geo\" is the name of the [geo] policy: name the feed otherwise".into(),
            ));
        }
        feeds.push(g.feed()?);
    }
    Ok(feeds)
}

/// `[trusted]`: the SIP server's `permissions` `address` table, read at
/// every sync into the allow-list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trusted {
    /// `opensips` (columns `ip`, `mask`, `grp`) or `kamailio` (`ip_addr`,
    /// `mask`, `grp`).
    pub address_table: crate::db::store::AddressTable,
    /// Only these groups (`grp`); empty = all.
    #[serde(default)]
    pub groups: Vec<i64>,
    /// The table's name, if not `address`.
    #[serde(default = "address")]
    pub table: String,
}

fn address() -> String {
    "address".into()
}

impl Trusted {
    fn checked(self) -> Result<Self, (&'static str, String)> {
        let plain = !self.table.is_empty()
            && self.table.len() <= 64
            && self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err((
                "trusted.table",
                format!("{:?} is not a table name (letters, digits, _)", self.table),
            ));
        }
        Ok(self)
    }
}

/// What a ban or block drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BanScope {
    /// The configured SIP ports: UDP (`ports`) and TCP/TLS (`tcp_ports`).
    Sip,
    /// Every IP packet from the source, whatever the protocol and port.
    All,
}

fn capacities(raw: &Raw) -> Result<Capacities, (&'static str, String)> {
    let d = Capacities::for_this_machine();
    let cap = |v: Option<u32>, default: u32, field| match v {
        Some(0) => Err((field, "must be at least 1".to_string())),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    Ok(Capacities {
        bans: cap(raw.max_bans, d.bans, "max_bans")?,
        allow: cap(raw.max_allow, d.allow, "max_allow")?,
        block: cap(raw.max_block, d.block, "max_block")?,
        sources: cap(raw.max_sources, d.sources, "max_sources")?,
        rate: cap(raw.max_rate, d.rate, "max_rate")?,
        replies: cap(raw.max_replies, d.replies, "max_replies")?,
        source_lists: match raw.source_lru.as_deref() {
            None | Some("common") => LruLists::Common,
            Some("per-cpu") => LruLists::PerCpu,
            Some(other) => {
                return Err((
                    "source_lru",
                    format!(
                        "{other:?} is not \"common\" (one recency list for all CPUs) \
                         or \"per-cpu\" (BPF_F_NO_COMMON_LRU)"
                    ),
                ))
            }
        },
    })
}

/// Settings given on the command line or in the environment. They beat the
/// file, also when the file is reloaded.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub db: Option<String>,
    pub node: Option<String>,
    pub interfaces: Vec<String>,
    pub sync_interval: Option<Duration>,
    pub mode: Option<AttachMode>,
    pub metrics: Option<std::net::SocketAddr>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(db) = &self.db {
            cfg.db = db.clone();
        }
        if let Some(n) = &self.node {
            cfg.node = n.clone();
        }
        for i in &self.interfaces {
            if !cfg.interfaces.contains(i) {
                cfg.interfaces.push(i.clone());
            }
        }
        if let Some(i) = self.sync_interval {
            cfg.sync_interval = i;
        }
        if let Some(m) = self.mode {
            cfg.mode = m;
        }
        if let Some(a) = self.metrics {
            cfg.metrics = Some(a);
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "sip-xdp".into())
}

/// The URL with any password replaced, for logs and `status`.
pub fn redact(db_url: &str) -> String {
    match url::Url::parse(db_url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable database URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "sip-xdp-cfg-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn full_file() {
        let p = write(
            "db = \"mysql://u:pw@localhost/voip\"\nnode = \"sbc-1\"\ninterfaces = [\"eth0\", \"eth1\"]\n\
             mode = \"native\"\nsync_interval = \"500ms\"\nports = [5060, 5080]\nmonitor = true\n",
        );
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.node, "sbc-1");
        assert_eq!(c.interfaces, ["eth0", "eth1"]);
        assert_eq!(c.mode, AttachMode::Native);
        assert_eq!(c.sync_interval, Duration::from_millis(500));
        assert_eq!(c.ports, Some(vec![5060, 5080]));
        assert_eq!((c.tcp_ports.clone(), c.ban_scope), (None, None));
        assert_eq!(c.monitor, Some(true));
        assert_eq!(c.path.as_deref(), Some(p.as_path()));
    }

    /// The fields serde knows for the table at `path` ("" = the top), read
    /// from the error `deny_unknown_fields` gives for an unknown one: the
    /// structs' own field lists, so this cannot drift from the code.
    fn fields_of(path: &str) -> Vec<String> {
        let text = if path.is_empty() {
            "zz_probe = 1\n".to_string()
        } else {
            format!("[{path}]\nzz_probe = 1\n")
        };
        let e = Config::parse(&text, "probe").unwrap_err().to_string();
        let expected = e.split("expected").nth(1).unwrap_or_else(|| panic!("{e}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// Every key in code as (table, key), tables walked recursively.
    fn keys_in_code(path: &str, out: &mut Vec<(String, String)>) {
        for f in fields_of(path) {
            let sub = if path.is_empty() {
                f.clone()
            } else {
                format!("{path}.{f}")
            };
            let unknown = |text: String| {
                Config::parse(&text, "probe")
                    .is_err_and(|e| e.to_string().contains("unknown field `zz_probe`"))
            };
            if unknown(format!("[{sub}]\nzz_probe = 1\n")) {
                keys_in_code(&sub, out);
            } else if unknown(format!("[{sub}.zz_name]\nzz_probe = 1\n")) {
                // A table of named tables ([feeds.NAME]).
                keys_in_code(&format!("{sub}.NAME"), out);
            } else {
                out.push((path.to_string(), f));
            }
        }
    }

    /// Every (table, key) the example shows, set or commented out.
    fn keys_in_example() -> Vec<(String, String)> {
        let mut table = String::new();
        let mut out = Vec::new();
        for line in EXAMPLE.lines() {
            let l = line.trim().trim_start_matches('#').trim_start();
            if let Some(t) = l.strip_prefix('[') {
                table = t.split(']').next().unwrap().to_string();
                // Named tables stand for their kind: [feeds.drop] is [feeds.NAME].
                if let Some(("feeds", _)) = table.split_once('.') {
                    table = "feeds.NAME".into();
                }
                continue;
            }
            if let Some((k, _)) = l.split_once(" = ") {
                if k.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                {
                    out.push((table.clone(), k.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn the_example_lists_every_key_with_its_default() {
        let mut code = Vec::new();
        keys_in_code("", &mut code);
        assert!(code.len() > 50, "{code:?}");
        let shown = keys_in_example();
        for k in &code {
            assert!(shown.contains(k), "`sip-xdp config example` lacks {k:?}");
        }
        for k in &shown {
            assert!(
                code.contains(k),
                "the example shows {k:?}, which is not a key"
            );
        }
        // What it sets is the default, to the last field.
        let example = Config::parse(EXAMPLE, "example").unwrap();
        let defaults = Config::parse("", "none").unwrap();
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
        // What it shows commented out is valid too.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                // The other choice of a pair (geo's block / allow_only).
                Some(_) if l.contains("(instead of") => l,
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                Some(rest) if rest.starts_with('[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        Config::parse(&uncommented, "example, uncommented").unwrap();
    }

    #[test]
    fn tcp_ports_and_ban_scope() {
        let c = Config::parse("tcp_ports = []\nban_scope = \"all\"\n", "t").unwrap();
        assert_eq!(
            (c.tcp_ports, c.ban_scope),
            (Some(vec![]), Some(BanScope::All))
        );
        let e = Config::parse("ban_scope = \"everything\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("ban_scope"), "{e}");
        assert!(Config::parse("tcp_ports = [0]\n", "t").is_err());
    }

    #[test]
    fn source_lru_picks_the_lists_and_names_a_typo() {
        let c = Config::parse("source_lru = \"per-cpu\"\n", "t").unwrap();
        assert_eq!(c.capacities.source_lists, LruLists::PerCpu);
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.capacities.source_lists, LruLists::Common);
        let e = Config::parse("source_lru = \"percpu\"\n", "t").unwrap_err();
        assert!(e.to_string().contains("source_lru"), "{e}");
        assert!(e.to_string().contains("per-cpu"), "{e}");
    }

    #[test]
    fn what_run_refuses_check_refuses_once_on_one_line() {
        let report = |text: &str| {
            let e = Config::load(Some(&write(text))).unwrap_err();
            // As main prints it: the error and its causes.
            format!("{:#}", anyhow::Error::from(e))
        };
        for (text, want) in [
            (
                "db = \"postgres://u:secret@h/x\"\n",
                "db: \"postgres:\" is not a database",
            ),
            (
                "sync_interval = \"1ns\"\n",
                "sync_interval: 1ns is shorter than 100ms",
            ),
            ("outbox = \"\"\n", "outbox: needs a path"),
            ("status_file = \"\"\n", "status_file: needs a path"),
            (
                &format!("node = \"{}\"\n", "n".repeat(65)),
                "node: the node is 65 characters long",
            ),
            (
                "mode = 5\n",
                "line 1, column 8: invalid type: integer `5`, expected a string",
            ),
        ] {
            let e = report(text);
            assert!(e.contains(want), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            assert_eq!(e.matches(want).count(), 1, "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        let e = format!(
            "{:#}",
            anyhow::Error::from(Config::load(Some(Path::new("/nonexistent/x.toml"))).unwrap_err())
        );
        assert_eq!(e.matches("No such file").count(), 1, "{e}");
    }

    #[test]
    fn mistakes_name_the_field() {
        let e = Config::load(Some(&write("mode = \"turbo\"\n")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mode: \"turbo\" is not auto, native or skb"),
            "{e}"
        );
        let e = Config::load(Some(&write("sync_interval = \"often\"\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sync_interval"), "{e}");
        let e = Config::load(Some(&write("intervals = 3\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `intervals`"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/sip-xdp.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reading /nonexistent/sip-xdp.toml"), "{e}");
    }

    #[test]
    fn command_line_beats_the_file_on_every_load() {
        let p = write("db = \"sqlite:///tmp/x.db\"\nnode = \"file\"\ninterfaces = [\"eth0\"]\n");
        let o = Overrides {
            db: Some("mysql://u:p@h/d".into()),
            interfaces: vec!["eth1".into(), "eth0".into()],
            ..Default::default()
        };
        for _ in 0..2 {
            let mut c = Config::load(Some(&p)).unwrap();
            o.apply(&mut c);
            assert_eq!(c.db, "mysql://u:p@h/d");
            assert_eq!(c.node, "file");
            assert_eq!(c.interfaces, ["eth0", "eth1"]);
        }
    }

    #[test]
    fn detection_section_and_metrics() {
        let p = write(
            "metrics = \"127.0.0.1:9477\"\n[detect]\ninterval = \"1s\"\n[detect.flood]\nlimit = 50\n",
        );
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(c.detect.interval, Duration::from_secs(1));
        assert_eq!(c.detect.flood.limit, 50);
        let e = Config::load(Some(&write("metrics = \"localhost\"\n")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metrics: \"localhost\" is not an address:port"),
            "{e}"
        );
        let e = Config::load(Some(&write("[detect.flood]\nlimit = 0\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("detect.flood.limit: must be at least 1"), "{e}");
        let e = Config::load(Some(&write("[detect.scanner]\nwindw = \"1m\"\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `windw`"), "{e}");
        let c = Config::load(Some(&write(
            "[detect.deny]\nmethods = [\"PUBLISH\"]\nusers = [\"sipvicious\"]\n",
        )))
        .unwrap();
        let lists = c.detect.rule_lists();
        assert_eq!(lists.methods, ["PUBLISH"]);
        assert_eq!(lists.users, ["sipvicious"]);
        assert!(lists.agents.contains(&"friendly-scanner".to_string()));
        let e = Config::load(Some(&write("[detect.deny]\nmethods = [\"SUB SCRIBE\"]\n")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("detect.deny: methods entry \"SUB SCRIBE\""),
            "{e}"
        );
        let e = Config::load(Some(&write("[detect.deny]\ndomains = [\"\"]\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("an empty domains entry"), "{e}");
    }

    #[test]
    fn passwords_never_shown() {
        assert_eq!(
            redact("mysql://sipxdp:s3cret@db.example/voip"),
            "mysql://sipxdp:***@db.example/voip"
        );
        assert!(!redact("mysql://u:p%40ss@h/d?socket=/run/mysqld/mysqld.sock").contains("p%40ss"));
        assert_eq!(
            redact("sqlite:///var/lib/sip-xdp/sip-xdp.db"),
            "sqlite:///var/lib/sip-xdp/sip-xdp.db"
        );
    }
}
