//! Command-line interface: argument definitions and what each verb does.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use sip_xdp_common::{Config, CONFIG_DROP_MALFORMED, CONFIG_MONITOR};

use crate::{
    config::{redact, Config as ConfigFile, Overrides},
    controller::Controller,
    loader::{self, AttachMode},
    manage,
    maps::Maps,
    pins::{Pins, PIN_DIR_ENV},
    store,
    target::{parse_duration, parse_net},
};

#[derive(Parser, Debug)]
#[command(
    name = "sip-xdp",
    version,
    about = "Kernel-level (XDP) SIP flood filter"
)]
pub struct Cli {
    /// bpffs directory holding the program, maps and links.
    #[arg(long, global = true, env = PIN_DIR_ENV, default_value = crate::pins::DEFAULT_PIN_DIR)]
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
        #[arg(long)]
        node: Option<String>,
        /// How often to sync with the database (default 2s).
        #[arg(long, value_parser = parse_duration)]
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
        #[arg(long, short, required = true)]
        iface: Vec<String>,
        /// Also delete the pinned maps (bans, allow-list, counters).
        #[arg(long)]
        purge: bool,
    },
    /// Drop everything from an address or CIDR (ADDR[/LEN]).
    Block {
        target: String,
        /// Lift the block after this long (30s, 10m, 1h, 7d); default: never.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Why, as recorded in blocked_ips.reason.
        #[arg(long, default_value = "manual")]
        reason: String,
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
    /// the kernel enforces them, or with --kernel what the kernel holds.
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
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
        ports: Vec<u16>,
    },
    /// Attachments, program, modes and map fill levels.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbAction {
    /// Create or upgrade the tables (also done by every command on connect).
    Migrate,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListWhat {
    Blocked,
    Allowed,
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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let pins = Pins::new(cli.pin_dir);
    let mut cfg = ConfigFile::load(cli.config.as_deref())?;
    let db_override = cli.db;
    if let Some(db) = &db_override {
        cfg.db = db.clone();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run {
            iface,
            node,
            sync_interval,
            mode,
            metrics,
            detach_on_exit,
        } => {
            let overrides = Overrides {
                db: db_override,
                node,
                interfaces: iface,
                sync_interval,
                mode,
                metrics,
            };
            let mut c = Controller::start(cfg, overrides, pins)?;
            rt.block_on(c.run(detach_on_exit))?;
        }
        Command::Db {
            action: DbAction::Migrate,
        } => {
            let store = rt.block_on(manage::open_store(&cfg))?;
            println!(
                "database {} ({}) is up to date",
                redact(&cfg.db),
                store.kind()
            );
        }
        Command::Events {
            since,
            event_type,
            limit,
            json,
        } => {
            let store = rt.block_on(manage::open_store(&cfg))?;
            let from =
                store::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
            let rows = rt.block_on(store.events(from, event_type.as_deref(), limit))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    println!(
                        "{}  {:<20} {:<8} {:<40} {} {}",
                        r.event_time.format("%Y-%m-%d %H:%M:%S%.3f"),
                        r.event_type,
                        r.severity,
                        r.source_ip.unwrap_or_default(),
                        r.node.unwrap_or_default(),
                        r.details.unwrap_or_default()
                    );
                }
            }
        }
        Command::Attach { iface, mode } => {
            for i in &iface {
                let m = loader::attach(&pins, i, mode, cfg.capacities)?;
                println!("attached to {i} in {} mode", m.name());
            }
        }
        Command::Detach { iface, purge } => {
            for i in &iface {
                loader::detach(&pins, i, purge)?;
                println!("detached from {i}");
            }
        }
        Command::Block {
            target,
            duration,
            reason,
        } => {
            let net = parse_net(&target)?;
            let out = rt.block_on(manage::block(&cfg, &pins, net, duration, &reason))?;
            match duration {
                Some(d) => println!("blocked {net} for {}", humantime::format_duration(d)),
                None => println!("blocked {net}"),
            }
            if let Ok(m) = Maps::open(&pins) {
                let allowed = m.allow_overlapping(&net);
                if !allowed.is_empty() {
                    let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                    eprintln!(
                        "note: allow-list entries inside it still pass: {}",
                        list.join(", ")
                    );
                }
            }
            notes(&out);
        }
        Command::Unblock { target } => {
            let net = parse_net(&target)?;
            let (rows, in_kernel, out) = rt.block_on(manage::unblock(&cfg, &pins, net))?;
            if rows > 0 || in_kernel {
                println!("unblocked {net}");
            } else {
                println!("{net} was not blocked (see `sip-xdp list blocked`)");
            }
            notes(&out);
        }
        Command::Allow { target, comment } => {
            let net = parse_net(&target)?;
            let (lifted, out) = rt.block_on(manage::allow(&cfg, &pins, net, &comment))?;
            println!("allowed {net}");
            for ip in lifted {
                println!("lifted ban on {ip}");
            }
            notes(&out);
        }
        Command::Disallow { target } => {
            let net = parse_net(&target)?;
            let (removed, out) = rt.block_on(manage::disallow(&cfg, &pins, net))?;
            if removed {
                println!("removed {net} from the allow-list");
            } else {
                println!("{net} was not on the allow-list (see `sip-xdp list allowed`)");
            }
            notes(&out);
        }
        Command::List {
            what,
            json,
            kernel: true,
        } => list_kernel(&Maps::open(&pins)?, what, json)?,
        Command::List {
            what,
            json,
            kernel: false,
        } => match what {
            ListWhat::Blocked => {
                let rows = rt.block_on(manage::list_blocked(&cfg, &pins))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!(
                        "{:>6} {:<43} {:<10} {:<19} {:<19} {:>8} {:>10}  REASON",
                        "ID",
                        "IP_ADDRESS",
                        "SOURCE",
                        "BLOCKED_AT",
                        "EXPIRES_AT",
                        "ENFORCED",
                        "HITS"
                    );
                    for manage::ListedBlock {
                        row: r,
                        enforced,
                        hits,
                    } in rows
                    {
                        println!(
                            "{:>6} {:<43} {:<10} {:<19} {:<19} {:>8} {:>10}  {}",
                            r.id,
                            r.ip_address,
                            r.source,
                            r.blocked_at.format("%Y-%m-%d %H:%M:%S"),
                            r.expires_at.map_or("never".into(), |t| t
                                .format("%Y-%m-%d %H:%M:%S")
                                .to_string()),
                            if enforced { "yes" } else { "no" },
                            hits,
                            r.reason
                        );
                    }
                }
            }
            ListWhat::Allowed => {
                let rows = rt.block_on(manage::list_allowed(&cfg, &pins))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    for r in rows {
                        println!(
                            "{:>6} {:<43} {:>8}  {}",
                            r.id,
                            r.ip_address,
                            if r.enforced { "enforced" } else { "pending" },
                            r.comment
                        );
                    }
                }
            }
        },
        Command::Stats { json } => {
            let stats = Maps::open(&pins)?.report()?;
            if json {
                let obj: serde_json::Map<String, serde_json::Value> = stats
                    .iter()
                    .map(|(c, v)| (c.to_string(), json!(v)))
                    .collect();
                println!("{}", serde_json::Value::Object(obj));
            } else {
                for (c, v) in stats {
                    println!("{c:<22} {v}");
                }
            }
        }
        Command::Top { n, json } => {
            let rows = Maps::open(&pins)?.top(n);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<40} {:>10} {:>12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
                    "SOURCE",
                    "PACKETS",
                    "BYTES",
                    "DROPPED",
                    "REGISTER",
                    "INVITE",
                    "OPTIONS",
                    "OTHER",
                    "MALFORMED"
                );
                for r in rows {
                    let c = |k: &str| r.classes.get(k).copied().unwrap_or(0);
                    println!(
                        "{:<40} {:>10} {:>12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
                        r.src_ip.to_string(),
                        r.packets,
                        r.bytes,
                        r.dropped,
                        c("register"),
                        c("invite"),
                        c("options"),
                        c("other_request") + c("response") + c("keepalive"),
                        c("malformed")
                    );
                }
            }
        }
        Command::Monitor { state } => {
            let mut maps = Maps::open(&pins)?;
            let mut c = maps.config()?;
            set_flag(&mut c, CONFIG_MONITOR, matches!(state, OnOff::On));
            maps.set_config(c)?;
            match state {
                OnOff::On => println!(
                    "monitor mode on: matches are counted as would_drop, nothing is dropped"
                ),
                OnOff::Off => println!("monitor mode off: matches are dropped"),
            }
        }
        Command::Malformed { action } => {
            let mut maps = Maps::open(&pins)?;
            let mut c = maps.config()?;
            set_flag(
                &mut c,
                CONFIG_DROP_MALFORMED,
                matches!(action, MalformedAction::Drop),
            );
            maps.set_config(c)?;
            match action {
                MalformedAction::Drop => println!("non-SIP payloads on SIP ports are now dropped"),
                MalformedAction::Pass => {
                    println!("non-SIP payloads on SIP ports are counted and passed")
                }
            }
        }
        Command::Ports { ports } => {
            let mut maps = Maps::open(&pins)?;
            if !ports.is_empty() {
                maps.set_ports(&ports)?;
            }
            let now = maps.ports()?;
            if now.is_empty() {
                bail!("no SIP ports configured: nothing is filtered (set some with `sip-xdp ports 5060`)");
            }
            let list: Vec<String> = now.iter().map(ToString::to_string).collect();
            println!("SIP ports: {}", list.join(" "));
        }
        Command::Status { json } => status(&pins, &cfg, json)?,
    }
    Ok(())
}

fn set_flag(c: &mut Config, flag: u32, on: bool) {
    if on {
        c.flags |= flag;
    } else {
        c.flags &= !flag;
    }
}

fn list_kernel(maps: &Maps, what: ListWhat, json: bool) -> anyhow::Result<()> {
    match what {
        ListWhat::Blocked => {
            let rows = maps.list_blocked();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<43} {:<5} {:<11} {:>12} {:>12}",
                "NET", "KIND", "REASON", "EXPIRES", "HITS"
            );
            for r in rows {
                let exp = match (r.expired, r.expires_in_s) {
                    (true, _) => "expired".to_string(),
                    (false, None) => "never".to_string(),
                    (false, Some(s)) => format!("in {s}s"),
                };
                println!(
                    "{:<43} {:<5} {:<11} {:>12} {:>12}",
                    r.net.to_string(),
                    r.kind,
                    r.reason,
                    exp,
                    r.hits
                );
            }
        }
        ListWhat::Allowed => {
            let rows = maps.list_allowed();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    println!("{r}");
                }
            }
        }
    }
    Ok(())
}

fn notes(out: &manage::Outcome) {
    for n in out.notes() {
        eprintln!("{n}");
    }
}

fn status(pins: &Pins, cfg: &ConfigFile, as_json: bool) -> anyhow::Result<()> {
    // What the controller last wrote; stale if it stopped writing.
    let controller: Option<serde_json::Value> = std::fs::read_to_string(&cfg.status_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let sync_lag_s = controller
        .as_ref()
        .and_then(|c| c["last_sync_at"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now() - t.to_utc()).num_milliseconds() as f64 / 1000.0);
    let links: Vec<_> = pins
        .links()
        .into_iter()
        .map(|(iface, mode, _)| {
            let present = nix::net::if_::if_nametoindex(iface.as_str()).is_ok();
            json!({"iface": iface, "mode": mode, "present": present})
        })
        .collect();
    let prog = loader::program_info(pins);
    let maps = Maps::open(pins).ok();
    let (config, ports, fill) = match &maps {
        Some(m) => (
            Some(m.config().context("reading config")?),
            m.ports().context("reading ports")?,
            m.fill(),
        ),
        None => (None, Vec::new(), Vec::new()),
    };
    let v = json!({
        "pin_dir": pins.root(),
        "loaded": prog.is_some(),
        "program_id": prog.as_ref().map(|p| p.id()),
        "attachments": links,
        "monitor": config.map(|c| c.monitor()),
        "drop_malformed": config.map(|c| c.drop_malformed()),
        "sip_ports": ports,
        "maps": fill.iter().map(|(n, e, m)| json!({"map": n, "entries": e, "max": m})).collect::<Vec<_>>(),
        "controller": controller,
        "sync_lag_s": sync_lag_s,
    });
    if as_json {
        println!("{v}");
        return Ok(());
    }
    match &prog {
        Some(p) => println!("program: loaded (id {})", p.id()),
        None => println!("program: not loaded"),
    }
    for l in &links {
        println!(
            "attached: {} ({} mode){}",
            l["iface"].as_str().unwrap_or(""),
            l["mode"].as_str().unwrap_or(""),
            if l["present"].as_bool() == Some(true) {
                ""
            } else {
                " [interface gone]"
            }
        );
    }
    if let Some(c) = config {
        println!(
            "monitor mode: {}",
            if c.monitor() {
                "on (nothing is dropped)"
            } else {
                "off"
            }
        );
        println!(
            "malformed payloads: {}",
            if c.drop_malformed() {
                "dropped"
            } else {
                "passed"
            }
        );
        let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
        println!("SIP ports: {}", list.join(" "));
    }
    for (n, e, m) in fill {
        println!("map {n:<8} {e:>8} / {m}");
    }
    match &v["controller"] {
        serde_json::Value::Null => println!(
            "controller: no status file at {} (not running?)",
            cfg.status_file.display()
        ),
        c => {
            println!(
                "controller: pid {} node {} database {} ({})",
                c["pid"],
                c["node"].as_str().unwrap_or(""),
                c["db"].as_str().unwrap_or(""),
                if c["db_reachable"].as_bool() == Some(true) {
                    "reachable".to_string()
                } else {
                    format!(
                        "UNREACHABLE: {}",
                        c["db_error"].as_str().unwrap_or("not connected yet")
                    )
                }
            );
            let lag = c["last_sync_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or("never".to_string(), |t| {
                    format!(
                        "{:.1}s ago",
                        (chrono::Utc::now() - t.to_utc()).num_milliseconds() as f64 / 1000.0
                    )
                });
            println!("last sync: {lag}");
            println!(
                "last sync: {} (took {} ms), status written {}, events buffered {}, dropped {}",
                c["last_sync_at"].as_str().unwrap_or("never"),
                c["last_sync_ms"],
                c["written_at"].as_str().unwrap_or(""),
                c["events_buffered"],
                c["events_dropped"]
            );
        }
    }
    Ok(())
}
