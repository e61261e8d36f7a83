//! Command-line interface: argument definitions and what each verb does.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use sip_xdp_common::{maps::BanReason, Config, CONFIG_DROP_MALFORMED, CONFIG_MONITOR};

use crate::{
    guard::Guard,
    loader::{self, AttachMode, Capacities},
    maps::Maps,
    pins::{Pins, PIN_DIR_ENV},
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

    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    },
    /// Remove the ban or block rule for exactly ADDR[/LEN].
    Unblock { target: String },
    /// Never drop ADDR[/LEN]; lifts the bans it covers.
    Allow { target: String },
    /// Remove the allow-list entry for exactly ADDR[/LEN].
    Disallow { target: String },
    /// Show block rules or allow-list entries.
    List {
        #[arg(value_enum, default_value_t = ListWhat::Blocked)]
        what: ListWhat,
        #[arg(long)]
        json: bool,
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
    match cli.command {
        Command::Attach { iface, mode } => {
            for i in &iface {
                let m = loader::attach(&pins, i, mode, Capacities::default())?;
                println!("attached to {i} in {} mode", m.name());
            }
        }
        Command::Detach { iface, purge } => {
            for i in &iface {
                loader::detach(&pins, i, purge)?;
                println!("detached from {i}");
            }
        }
        Command::Block { target, duration } => {
            let net = parse_net(&target)?;
            let mut maps = Maps::open(&pins)?;
            maps.block(&Guard::for_this_host(), net, duration, BanReason::Manual)?;
            let allowed = maps.allow_overlapping(&net);
            match duration {
                Some(d) => println!("blocked {net} for {}", humantime::format_duration(d)),
                None => println!("blocked {net}"),
            }
            if !allowed.is_empty() {
                let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
                eprintln!(
                    "note: allow-list entries inside it still pass: {}",
                    list.join(", ")
                );
            }
            tracing::info!(src_ip = %net, reason = "manual", "blocked");
        }
        Command::Unblock { target } => {
            let net = parse_net(&target)?;
            if Maps::open(&pins)?.unblock(&net)? {
                println!("unblocked {net}");
                tracing::info!(src_ip = %net, "unblocked");
            } else {
                println!("{net} was not blocked (see `sip-xdp list blocked`)");
            }
        }
        Command::Allow { target } => {
            let net = parse_net(&target)?;
            let lifted = Maps::open(&pins)?.allow(net)?;
            println!("allowed {net}");
            for ip in lifted {
                println!("lifted ban on {ip}");
                tracing::info!(src_ip = %ip, reason = "allow-listed", "unblocked");
            }
        }
        Command::Disallow { target } => {
            let net = parse_net(&target)?;
            if Maps::open(&pins)?.disallow(&net)? {
                println!("removed {net} from the allow-list");
            } else {
                println!("{net} was not on the allow-list (see `sip-xdp list allowed`)");
            }
        }
        Command::List { what, json } => {
            let maps = Maps::open(&pins)?;
            match what {
                ListWhat::Blocked => {
                    let rows = maps.list_blocked();
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
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
        }
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
        Command::Status { json } => status(&pins, json)?,
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

fn status(pins: &Pins, as_json: bool) -> anyhow::Result<()> {
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
    Ok(())
}
