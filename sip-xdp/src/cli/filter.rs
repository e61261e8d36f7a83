//! Commands that drive the attached program: attach, detach, monitor mode,
//! malformed payloads, SIP ports, ban scope.

use anyhow::bail;
use sip_xdp_common::{KernelConfig, CONFIG_BAN_ALL, CONFIG_DROP_MALFORMED, CONFIG_MONITOR};

use super::{Ctx, MalformedAction, OnOff};
use crate::config::BanScope;
use crate::kernel::{
    loader::{self, AttachMode},
    Maps,
};

pub fn attach(ctx: &Ctx, ifaces: &[String], mode: AttachMode) -> anyhow::Result<()> {
    for i in ifaces {
        let m = loader::attach(&ctx.pins, i, mode, ctx.cfg.capacities)?;
        println!("attached to {i} in {} mode", m.name());
    }
    Ok(())
}

pub fn detach(ctx: &Ctx, ifaces: &[String], all: bool, purge: bool) -> anyhow::Result<()> {
    let ifaces: Vec<String> = if all {
        ctx.pins.links().into_iter().map(|(i, _, _)| i).collect()
    } else {
        ifaces.to_vec()
    };
    if all && ifaces.is_empty() {
        println!("not attached anywhere");
    }
    // A purge removes the pin directory: a controller running on it would
    // keep its maps while a new one started on a fresh directory beside it.
    let _held = if purge && !ifaces.is_empty() {
        Some(
            crate::kernel::one_controller::ControllerLock::take(&ctx.pins).map_err(|e| match e {
                crate::Error::AnotherController { pid, .. } => anyhow::anyhow!(
                    "a controller{} runs on these pins: stop it first (`systemctl stop sip-xdp`), then purge",
                    pid.map(|p| format!(" (PID {p})")).unwrap_or_default()
                ),
                e => e.into(),
            })?,
        )
    } else {
        None
    };
    for i in &ifaces {
        loader::detach(&ctx.pins, i, purge)?;
        println!("detached from {i}");
    }
    Ok(())
}

pub fn monitor(ctx: &Ctx, state: OnOff) -> anyhow::Result<()> {
    set_flag(ctx, CONFIG_MONITOR, matches!(state, OnOff::On))?;
    match state {
        OnOff::On => {
            println!("monitor mode on: matches are counted as would_drop, nothing is dropped")
        }
        OnOff::Off => println!("monitor mode off: matches are dropped"),
    }
    Ok(())
}

pub fn malformed(ctx: &Ctx, action: MalformedAction) -> anyhow::Result<()> {
    set_flag(
        ctx,
        CONFIG_DROP_MALFORMED,
        matches!(action, MalformedAction::Drop),
    )?;
    match action {
        MalformedAction::Drop => println!("non-SIP payloads on SIP ports are now dropped"),
        MalformedAction::Pass => println!("non-SIP payloads on SIP ports are counted and passed"),
    }
    Ok(())
}

pub fn ports(ctx: &Ctx, ports: &[u16], tcp: Option<&str>) -> anyhow::Result<()> {
    let mut maps = Maps::open(&ctx.pins)?;
    if let Some(tcp) = tcp {
        maps.set_tcp_ports(&parse_port_list(tcp)?)?;
    }
    if !ports.is_empty() {
        maps.set_ports(ports)?;
    }
    let now = maps.ports()?;
    if now.is_empty() {
        bail!("no SIP ports configured: nothing is filtered (set some with `sip-xdp ports 5060`)");
    }
    let show = |p: &[u16]| -> String {
        if p.is_empty() {
            "none".into()
        } else {
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    println!("SIP ports: {}", show(&now));
    match maps.tcp_ports()? {
        Some(t) => println!("TCP/TLS ports (bans enforced): {}", show(&t)),
        None => println!("TCP/TLS ports: not enforced by the loaded program (reload it)"),
    }
    Ok(())
}

/// `5060,5061`, or `none`.
fn parse_port_list(s: &str) -> anyhow::Result<Vec<u16>> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("--tcp {s:?}: {p:?} is not a port (1-65535); use e.g. --tcp 5060,5061 or --tcp none"),
        })
        .collect()
}

pub fn scope(ctx: &Ctx, scope: Option<BanScope>) -> anyhow::Result<()> {
    if let Some(s) = scope {
        set_flag(ctx, CONFIG_BAN_ALL, s == BanScope::All)?;
    }
    let maps = Maps::open(&ctx.pins)?;
    if maps.config()?.ban_all() {
        println!("ban scope: all (every packet from a banned or blocked source is dropped)");
    } else {
        println!("ban scope: sip (UDP and TCP to the SIP ports are dropped from banned or blocked sources; other traffic passes)");
    }
    Ok(())
}

fn set_flag(ctx: &Ctx, flag: u32, on: bool) -> anyhow::Result<()> {
    let mut maps = Maps::open(&ctx.pins)?;
    let mut c: KernelConfig = maps.config()?;
    if on {
        c.flags |= flag;
    } else {
        c.flags &= !flag;
    }
    maps.set_config(c)?;
    Ok(())
}
