//! Commands that drive the attached program: attach, detach, monitor mode,
//! malformed payloads, SIP ports.

use anyhow::bail;
use sip_xdp_common::{KernelConfig, CONFIG_DROP_MALFORMED, CONFIG_MONITOR};

use super::{Ctx, MalformedAction, OnOff};
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

pub fn detach(ctx: &Ctx, ifaces: &[String], purge: bool) -> anyhow::Result<()> {
    for i in ifaces {
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

pub fn ports(ctx: &Ctx, ports: &[u16]) -> anyhow::Result<()> {
    let mut maps = Maps::open(&ctx.pins)?;
    if !ports.is_empty() {
        maps.set_ports(ports)?;
    }
    let now = maps.ports()?;
    if now.is_empty() {
        bail!("no SIP ports configured: nothing is filtered (set some with `sip-xdp ports 5060`)");
    }
    let list: Vec<String> = now.iter().map(ToString::to_string).collect();
    println!("SIP ports: {}", list.join(" "));
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
