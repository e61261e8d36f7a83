//! Commands that read: `list`, `events`, `stats`, `top`, `db migrate`, as
//! tables for people or JSON for scripts.

use std::time::Duration;

use serde_json::json;

use super::{edit, Ctx, ListWhat};
use crate::{config::redact, db::store, kernel::Maps, logline::printable};

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn migrate(ctx: &Ctx) -> anyhow::Result<()> {
    let store = ctx.rt.block_on(edit::open_store(&ctx.cfg))?;
    println!(
        "database {} ({}) is up to date",
        redact(&ctx.cfg.db),
        store.kind()
    );
    Ok(())
}

pub fn prune(ctx: &Ctx) -> anyhow::Result<()> {
    let store = ctx.rt.block_on(edit::open_store(&ctx.cfg))?;
    let r = &ctx.cfg.retention;
    let p = ctx
        .rt
        .block_on(crate::db::retention::prune_all(&store, r, store::now()))?;
    let age = |d: Option<std::time::Duration>| {
        d.map_or("kept for ever".to_string(), |d| {
            format!("older than {}", humantime::format_duration(d))
        })
    };
    println!(
        "deleted {} events ({}; at most {} kept) and {} lifted blocks ({})",
        p.events,
        age(r.events),
        if r.max_events == 0 {
            "all".to_string()
        } else {
            r.max_events.to_string()
        },
        p.lifted_blocks,
        age(r.lifted_blocks)
    );
    Ok(())
}

pub fn events(
    ctx: &Ctx,
    since: Duration,
    event_type: Option<&str>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let store = ctx.rt.block_on(edit::open_store(&ctx.cfg))?;
    let from = store::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::MAX);
    let rows = ctx.rt.block_on(store.events(from, event_type, limit))?;
    if json {
        return print_json(&rows);
    }
    for r in rows {
        println!(
            "{}  {:<20} {:<8} {:<40} {} {}",
            r.event_time.format("%Y-%m-%d %H:%M:%S%.3f"),
            printable(&r.event_type),
            printable(&r.severity),
            printable(&r.source_ip.unwrap_or_default()),
            printable(&r.node.unwrap_or_default()),
            printable(&r.details.unwrap_or_default())
        );
    }
    Ok(())
}

pub fn list_blocked(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let rows = ctx.rt.block_on(edit::list_blocked(&ctx.cfg, &ctx.pins))?;
    if json {
        return print_json(&rows);
    }
    println!(
        "{:>6} {:<43} {:<10} {:<19} {:<19} {:>8} {:>10}  REASON",
        "ID", "IP_ADDRESS", "SOURCE", "BLOCKED_AT", "EXPIRES_AT", "ENFORCED", "HITS"
    );
    for edit::ListedBlock {
        row: r,
        enforced,
        hits,
    } in rows
    {
        println!(
            "{:>6} {:<43} {:<10} {:<19} {:<19} {:>8} {:>10}  {}",
            r.id,
            printable(&r.ip_address),
            printable(&r.source),
            time(r.blocked_at),
            r.expires_at.map_or("never".into(), time),
            if enforced { "yes" } else { "no" },
            hits,
            printable(&r.reason)
        );
    }
    Ok(())
}

pub fn list_allowed(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let rows = ctx.rt.block_on(edit::list_allowed(&ctx.cfg, &ctx.pins))?;
    if json {
        return print_json(&rows);
    }
    for r in rows {
        println!(
            "{:>6} {:<43} {:>8}  {}",
            r.id,
            printable(&r.ip_address),
            if r.enforced { "enforced" } else { "pending" },
            printable(&r.comment)
        );
    }
    Ok(())
}

/// What the kernel holds, whatever the database says.
pub fn list_kernel(ctx: &Ctx, what: ListWhat, json: bool) -> anyhow::Result<()> {
    let maps = Maps::open(&ctx.pins)?;
    match what {
        ListWhat::Blocked => {
            let rows = maps.list_blocked();
            if json {
                return print_json(&rows);
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
        ListWhat::Verified => return list_verified(ctx, json),
        ListWhat::Allowed => {
            let rows = maps.list_allowed();
            if json {
                return print_json(&rows);
            }
            for r in rows {
                println!("{r}");
            }
        }
    }
    Ok(())
}

pub fn list_verified(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let rows = Maps::open(&ctx.pins)?.list_verified();
    if json {
        return print_json(&rows);
    }
    println!("{:<40} {:<10} {:>10}", "SOURCE", "HOW", "EXPIRES");
    for r in rows {
        println!(
            "{:<40} {:<10} {:>10}",
            r.src_ip.to_string(),
            r.how,
            format!("in {}s", r.expires_in_s)
        );
    }
    Ok(())
}

pub fn stats(ctx: &Ctx, json: bool) -> anyhow::Result<()> {
    let stats = Maps::open(&ctx.pins)?.report()?;
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
    Ok(())
}

pub fn top(ctx: &Ctx, n: usize, json: bool) -> anyhow::Result<()> {
    let rows = Maps::open(&ctx.pins)?.top(n);
    // With a country database configured, each source is named by country.
    let geo = ctx
        .cfg
        .geo_db
        .as_deref()
        .and_then(|p| crate::feed::geo::Db::open(p).ok());
    let country = |ip: std::net::IpAddr| geo.as_ref().and_then(|g| g.country(ip));
    if json {
        let mut v = serde_json::to_value(&rows)?;
        for (row, r) in v.as_array_mut().into_iter().flatten().zip(&rows) {
            row["country"] = serde_json::json!(country(r.src_ip));
        }
        return print_json(&v);
    }
    println!(
        "{:<40} {:>10} {:>12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}  {:<7} TRUST",
        "SOURCE",
        "PACKETS",
        "BYTES",
        "DROPPED",
        "REGISTER",
        "INVITE",
        "OPTIONS",
        "OTHER",
        "MALFORMED",
        "COUNTRY"
    );
    for r in rows {
        let c = |k: &str| r.classes.get(k).copied().unwrap_or(0);
        println!(
            "{:<40} {:>10} {:>12} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}  {:<7} {}",
            crate::parse::spelling(
                &ipnet::IpNet::new(r.src_ip, r.prefix_len).unwrap_or(r.src_ip.into())
            ),
            r.packets,
            r.bytes,
            r.dropped,
            c("register"),
            c("invite"),
            c("options"),
            c("other_request") + c("response") + c("keepalive") + c("sigcomp"),
            c("malformed"),
            country(r.src_ip).unwrap_or_else(|| "-".into()),
            r.verified.unwrap_or("-")
        );
    }
    Ok(())
}

/// `list`: the database rows (with whether the kernel enforces them), the
/// kernel's maps, or the verified sources.
pub fn list(ctx: &Ctx, what: ListWhat, json: bool, kernel: bool) -> anyhow::Result<()> {
    match (what, kernel) {
        (ListWhat::Verified, _) => list_verified(ctx, json),
        (what, true) => list_kernel(ctx, what, json),
        (ListWhat::Blocked, false) => list_blocked(ctx, json),
        (ListWhat::Allowed, false) => list_allowed(ctx, json),
    }
}
