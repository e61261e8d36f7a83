//! Argument definitions: every command, its options and its help text.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    kernel::{
        loader::AttachMode,
        pins::{DEFAULT_PIN_DIR, PIN_DIR_ENV},
    },
    parse::parse_duration,
};

#[derive(Parser, Debug)]
#[command(
    name = "sip-xdp",
    version,
    about = "Kernel-level (XDP) SIP flood filter"
)]
pub struct Cli {
    /// bpffs directory holding the program, maps and links.
    #[arg(long, global = true, env = PIN_DIR_ENV, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    /// Configuration file shared by `run` and every other command.
    #[arg(long, short = 'c', global = true, env = "SIP_XDP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Database URL, overriding the configuration file
    /// (sqlite:///path/file.db or mysql://user:password@host/db).
    #[arg(long, global = true, env = "SIP_XDP_DB")]
    pub db: Option<String>,

    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Colours in the log: only when stderr is a terminal (auto), always,
    /// or never. Logs read by fail2ban, journald or a shipper have none.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Log lines as text (`banned src_ip=... reason=...`) or as one JSON
    /// object per line with the same fields.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The controller: attach, then keep the kernel in step with the database.
    Run {
        /// Interfaces to protect (adds to `interfaces` in the config file).
        #[arg(long, short)]
        iface: Vec<String>,
        /// Node name recorded with every event and block (default: hostname).
        #[arg(long, value_parser = parse_node)]
        node: Option<String>,
        /// How often to sync with the database (default 2s).
        #[arg(long, value_parser = parse_sync_interval)]
        sync_interval: Option<Duration>,
        #[arg(long, value_enum)]
        mode: Option<AttachMode>,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9477).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Detach from the interfaces on exit (default: stay attached, so
        /// the SBC stays protected while the controller is down).
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Load the filter (once) and attach it to an interface.
    Attach {
        #[arg(long, short, required = true)]
        iface: Vec<String>,
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        mode: AttachMode,
    },
    /// Detach the filter from an interface; the last detach unloads it.
    Detach {
        #[arg(long, short, required_unless_present = "all")]
        iface: Vec<String>,
        /// Every interface sip-xdp is attached to.
        #[arg(long, conflicts_with = "iface")]
        all: bool,
        /// Also delete the pinned maps (bans, allow-list, counters).
        #[arg(long)]
        purge: bool,
    },
    /// Drop SIP from an address or CIDR (ADDR[/LEN]): UDP to the SIP ports
    /// and TCP to the SIP TCP/TLS ports (`sip-xdp ports`), and its
    /// fragments; other traffic passes unless `sip-xdp scope all`.
    Block {
        target: String,
        /// Lift the block after this long (30s, 10m, 1h, 7d); default: never.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Why, as recorded in blocked_ips.reason.
        #[arg(long, default_value = "manual")]
        reason: String,
        /// Who asks, as recorded in blocked_ips.source: manual, or a feed
        /// (fail2ban, crowdsec, apiban, geo, feed:NAME).
        #[arg(long, default_value = "manual", value_parser = crate::parse::parse_source)]
        source: String,
    },
    /// Remove the ban or block rule for exactly ADDR[/LEN].
    Unblock { target: String },
    /// Never drop ADDR[/LEN]; lifts the bans it covers.
    Allow {
        target: String,
        /// Recorded in whitelisted_ips.comment.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Remove the allow-list entry for exactly ADDR[/LEN].
    Disallow { target: String },
    /// Show blocks or allow-list entries: the database rows with whether
    /// the kernel enforces them, or with --kernel what the kernel holds;
    /// or the verified sources the kernel learned.
    List {
        #[arg(value_enum, default_value_t = ListWhat::Blocked)]
        what: ListWhat,
        #[arg(long)]
        json: bool,
        /// List the kernel's maps instead of the database.
        #[arg(long)]
        kernel: bool,
    },
    /// Recorded decisions (security_events), newest first.
    Events {
        /// How far back (30s, 10m, 1h, 7d).
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        since: Duration,
        /// Only this event type (ip_blocked, ip_unblocked, ...).
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Check everything a working filter needs (kernel, privileges,
    /// interfaces, database, clock, controller); one line each, with the
    /// fix; exits non-zero when something must be fixed.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// The configuration file: every key with its default, or a check.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// What happened over a period: bans by reason, the most banned
    /// sources, events per hour, registration failures by user, and the
    /// busiest sources in the kernel now.
    Report {
        /// How far back (1h, 24h, 7d).
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        since: Duration,
        /// Rows per list.
        #[arg(short = 'n', long, default_value_t = 10)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Global counters per verdict and reason.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Busiest tracked sources (packets summed over CPUs).
    Top {
        #[arg(short = 'n', long, default_value_t = 20)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// Monitor-only mode: count what would be dropped, drop nothing.
    Monitor {
        #[arg(value_enum)]
        state: OnOff,
    },
    /// What to do with non-SIP payloads on SIP ports.
    Malformed {
        #[arg(value_enum)]
        action: MalformedAction,
    },
    /// Show the SIP ports, or replace them with the given list.
    Ports {
        /// UDP ports where SIP is counted, limited and filtered.
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        ports: Vec<u16>,
        /// TCP ports (SIP over TCP and TLS) where bans and blocks are
        /// enforced, comma-separated; `--tcp none` for none.
        #[arg(long, value_name = "PORTS")]
        tcp: Option<String>,
    },
    /// What a ban or block drops: `sip` (the SIP ports over UDP and TCP,
    /// the default) or `all` (every packet from the source). Shows it
    /// without an argument.
    Scope {
        #[arg(value_enum)]
        scope: Option<crate::config::BanScope>,
    },
    /// Shell completions for bash, zsh or fish, on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page sip-xdp(8) in roff, on stdout (for packaging).
    #[command(hide = true)]
    Man,
    /// Attachments, program, modes and map fill levels.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the full commented configuration: every key, its default and
    /// what it means (the packaged /etc/sip-xdp/sip-xdp.toml).
    Example,
    /// Read the configuration file and say what is wrong with it, if anything.
    Check,
}

#[derive(Subcommand, Debug)]
pub enum DbAction {
    /// Create or upgrade the tables (also done by every command on connect).
    Migrate,
    /// Delete events and lifted blocks past `[retention]` now, in batches
    /// (the controller does it too, a batch at a time).
    Prune,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListWhat {
    Blocked,
    Allowed,
    /// Sources that proved their address by a round trip (kernel only): a
    /// REGISTER that answered the SBC's digest challenge and got a 2xx, or
    /// an answer to a request the SBC itself sent.
    Verified,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MalformedAction {
    /// Count and drop.
    Drop,
    /// Count and pass (default).
    Pass,
}

/// `--sync-interval`, held to what the configuration file allows.
fn parse_sync_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < crate::config::MIN_SYNC_INTERVAL {
        return Err(format!(
            "shorter than {}: every round reads the database",
            humantime::format_duration(crate::config::MIN_SYNC_INTERVAL)
        ));
    }
    Ok(d)
}

/// `--node`, held to what `blocked_ips.node` holds.
fn parse_node(s: &str) -> Result<String, String> {
    crate::db::schema::fits("node", s).map_err(|e| e.to_string())?;
    if s.is_empty() {
        return Err("needs a name".into());
    }
    Ok(s.to_string())
}
