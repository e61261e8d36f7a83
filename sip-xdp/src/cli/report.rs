//! `report`: what happened over a period, from the database (bans by
//! reason, most banned sources, events per hour, registration failures by
//! user) and, when the filter is loaded, the busiest sources right now.

use std::time::Duration;

use serde_json::json;

use super::{edit::open_store, Ctx};
use crate::{db::store, kernel::Maps};

pub fn report(ctx: &Ctx, since: Duration, n: usize, as_json: bool) -> anyhow::Result<()> {
    let from = store::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
    let r = ctx.rt.block_on(async {
        let s = open_store(&ctx.cfg).await?;
        anyhow::Ok(s.report(from, n as i64).await?)
    })?;
    // The kernel's view: packets and drops per source since it was tracked.
    let busiest = Maps::open(&ctx.pins).map(|m| m.top(n)).unwrap_or_default();
    if as_json {
        let top: Vec<_> = busiest
            .iter()
            .map(|t| json!({"source": source(t), "packets": t.packets, "dropped": t.dropped}))
            .collect();
        println!(
            "{}",
            json!({"since": from, "report": r, "busiest_sources": top})
        );
        return Ok(());
    }
    println!(
        "since {} UTC ({})",
        from.format("%Y-%m-%d %H:%M"),
        humantime::format_duration(since)
    );
    println!("\nbans by reason:");
    for (reason, bans) in &r.bans_by_reason {
        println!("  {reason:<24} {bans:>8}");
    }
    println!("\nmost banned sources:");
    for (ip, bans, last) in &r.top_banned {
        println!(
            "  {ip:<40} {bans:>4} ban(s), last {}",
            last.format("%Y-%m-%d %H:%M:%S")
        );
    }
    if !busiest.is_empty() {
        println!("\nbusiest sources in the kernel now (packets, dropped):");
        for t in &busiest {
            println!("  {:<40} {:>10} {:>10}", source(t), t.packets, t.dropped);
        }
    }
    println!("\nevents per hour (UTC):");
    let mut last_hour = None;
    for (hour, kind, count) in &r.events_per_hour {
        if last_hour != Some(hour) {
            print!("\n  {}", hour.format("%Y-%m-%d %H:%M"));
            last_hour = Some(hour);
        }
        print!("  {kind} {count}");
    }
    println!("\n\nregistration failures by user:");
    for (user, domain, attempts, sources) in &r.failures_by_user {
        let who = if domain.is_empty() {
            user.clone()
        } else {
            format!("{user}@{domain}")
        };
        println!("  {who:<40} {attempts:>6} attempt(s) from {sources} source(s)");
    }
    Ok(())
}

/// The source as `top` names it: an address, or a prefix.
fn source(t: &crate::kernel::handles::SourceRow) -> String {
    let full = if t.src_ip.is_ipv4() { 32 } else { 128 };
    if t.prefix_len >= full {
        t.src_ip.to_string()
    } else {
        format!("{}/{}", t.src_ip, t.prefix_len)
    }
}
