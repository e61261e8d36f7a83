//! `status`: attachments, program, modes, map fill levels and what the
//! controller last reported, gathered into one JSON value that the text
//! form is printed from.

use anyhow::Context as _;
use serde_json::{json, Value};

use super::Ctx;
use crate::kernel::{loader, Maps};

pub fn status(ctx: &Ctx, as_json: bool) -> anyhow::Result<()> {
    let v = gather(ctx)?;
    if as_json {
        println!("{v}");
        return Ok(());
    }
    print_kernel(&v);
    print_controller(&v["controller"], ctx);
    Ok(())
}

fn seconds_since(rfc3339: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some((chrono::Utc::now() - t.to_utc()).num_milliseconds() as f64 / 1000.0)
}

fn gather(ctx: &Ctx) -> anyhow::Result<Value> {
    let pins = &ctx.pins;
    // What the controller last wrote; stale if it stopped writing.
    let controller: Option<Value> = std::fs::read_to_string(&ctx.cfg.status_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let sync_lag_s = controller
        .as_ref()
        .and_then(|c| c["last_sync_at"].as_str())
        .and_then(seconds_since);
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
    let (config, ports, tcp_ports, fill, verified) = match &maps {
        Some(m) => (
            Some(m.config().context("reading config")?),
            m.ports().context("reading ports")?,
            m.tcp_ports().context("reading TCP ports")?,
            {
                let mut fill = m.fill(None);
                // The index is a copy of BANS' IPv4 entries: shown for its
                // kernel memory and for the bans a full bucket left out.
                if let Some(used) = m.ban_index_used() {
                    fill.push((sip_xdp_common::maps::MAP_BAN_INDEX, used, ban_index_slots()));
                }
                fill
            },
            Some(m.verified_now().len()),
        ),
        None => (None, Vec::new(), None, Vec::new(), None),
    };
    Ok(json!({
        "pin_dir": pins.root(),
        "loaded": prog.is_some(),
        "program_id": prog.as_ref().map(|p| p.id()),
        "attachments": links,
        "monitor": config.map(|c| c.monitor()),
        "drop_malformed": config.map(|c| c.drop_malformed()),
        "sip_ports": ports,
        "tcp_ports": tcp_ports,
        "ban_scope": config.map(|c| if c.ban_all() { "all" } else { "sip" }),
        "verified_sources": verified,
        "maps": fill.iter().map(|(n, e, m)| json!({"map": n, "entries": e, "max": m, "kernel_kib": pins.map_kib(n)})).collect::<Vec<_>>(),
        "kernel_kib": kernel_kib(pins),
        "controller": controller,
        "sync_lag_s": sync_lag_s,
    }))
}

fn ban_index_slots() -> u32 {
    sip_xdp_common::banindex::BUCKETS * sip_xdp_common::banindex::SLOTS as u32
}

fn print_kernel(v: &Value) {
    match v["program_id"].as_u64() {
        Some(id) => println!("program: loaded (id {id})"),
        None => println!("program: not loaded"),
    }
    for l in v["attachments"].as_array().into_iter().flatten() {
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
    if let Some(monitor) = v["monitor"].as_bool() {
        println!(
            "monitor mode: {}",
            if monitor {
                "on (nothing is dropped)"
            } else {
                "off"
            }
        );
        println!(
            "malformed payloads: {}",
            if v["drop_malformed"].as_bool() == Some(true) {
                "dropped"
            } else {
                "passed"
            }
        );
        let list = |k: &str| -> String {
            let l: Vec<String> = v[k]
                .as_array()
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            if l.is_empty() {
                "none".into()
            } else {
                l.join(" ")
            }
        };
        println!("SIP ports: {}", list("sip_ports"));
        if v["tcp_ports"].is_null() {
            println!("TCP/TLS ports: not enforced by the loaded program (reload it)");
        } else {
            println!("TCP/TLS ports (bans enforced): {}", list("tcp_ports"));
        }
        println!("ban scope: {}", v["ban_scope"].as_str().unwrap_or("sip"));
    }
    if let Some(n) = v["verified_sources"].as_u64() {
        println!("verified sources: {n} (`sip-xdp list verified`)");
    }
    for m in v["maps"].as_array().into_iter().flatten() {
        println!(
            "map {:<8} {:>8} / {:<8} {:>8} KiB in the kernel",
            m["map"].as_str().unwrap_or(""),
            m["entries"],
            m["max"],
            m["kernel_kib"]
        );
    }
    if let Some(total) = v["kernel_kib"].as_u64() {
        println!("kernel memory, every map: {} MiB", total / 1024);
    }
}

/// The kernel memory of every pinned map, in KiB (`None` when none is).
fn kernel_kib(pins: &crate::kernel::Pins) -> Option<u64> {
    let dir = std::fs::read_dir(pins.maps_dir()).ok()?;
    let total = dir
        .flatten()
        .filter_map(|e| pins.map_kib(&e.file_name().to_string_lossy()))
        .sum();
    Some(total)
}

fn print_controller(c: &Value, ctx: &Ctx) {
    if c.is_null() {
        println!(
            "controller: no status file at {} (not running?)",
            ctx.cfg.status_file.display()
        );
        return;
    }
    println!(
        "controller: pid {} node {} database {} ({})",
        c["pid"],
        c["node"].as_str().unwrap_or(""),
        c["db"].as_str().unwrap_or(""),
        match (c["db_reachable"].as_bool(), c["db_state"].as_str()) {
            (Some(true), _) => "reachable".to_string(),
            (_, Some("schema mismatch")) => format!(
                "reachable, SCHEMA MISMATCH (`sip-xdp doctor` names the statements to run): {}",
                c["db_error"].as_str().unwrap_or("")
            ),
            _ => format!(
                "UNREACHABLE: {}",
                c["db_error"].as_str().unwrap_or("not connected yet")
            ),
        }
    );
    let lag = c["last_sync_at"]
        .as_str()
        .and_then(seconds_since)
        .map_or("never".to_string(), |s| format!("{s:.1}s ago"));
    println!("last sync: {lag}");
    if c["shedding"].as_bool() == Some(true) {
        println!("overload: shedding unverified new sources (see `sip-xdp stats`: drop_shed)");
    }
    println!(
        "last sync: {} (took {} ms), status written {}, events buffered {}, dropped {}",
        c["last_sync_at"].as_str().unwrap_or("never"),
        c["last_sync_ms"],
        c["written_at"].as_str().unwrap_or(""),
        c["events_buffered"],
        c["events_dropped"]
    );
    for (name, f) in c["feeds"].as_object().into_iter().flatten() {
        let last = f["last_ok"]
            .as_str()
            .and_then(seconds_since)
            .map_or("never".to_string(), |s| format!("{s:.0}s ago"));
        let wide = match f["too_wide"].as_u64() {
            Some(n) if n > 0 => format!(" ({n} refused as too wide)"),
            _ => String::new(),
        };
        match f["last_error"].as_str() {
            None => println!(
                "feed {name}: {} entries{wide}, refreshed {last}",
                f["entries"]
            ),
            Some(e) => println!(
                "feed {name}: FAILING ({e}); keeping its last good list of {} entries from {last}",
                f["entries"]
            ),
        }
    }
    // What the lists hold that needs the operator (the latest first).
    let notices = c["list_notices"].as_array().cloned().unwrap_or_default();
    for n in notices.iter().rev() {
        println!(
            "list {}: {}: {} ({}, {})",
            n["list"].as_str().unwrap_or(""),
            n["entry"].as_str().unwrap_or(""),
            n["what"].as_str().unwrap_or(""),
            n["event"].as_str().unwrap_or(""),
            n["at"].as_str().unwrap_or("")
        );
    }
}
