//! What `block`, `unblock`, `allow` and `disallow` do: write the database
//! (the source of truth) and the pinned maps (immediate effect), so a change
//! holds at once whether or not the controller runs, and the controller's
//! next sync agrees with it. Also the joined views `list` prints.

use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDateTime;
use ipnet::IpNet;
use serde::Serialize;
use sip_xdp_common::Reason;

use super::Ctx;
use crate::{
    config::{redact, Config},
    db::{
        outbox::{Applied, Change, Op, Outbox},
        store::{self, BlockRow, Store},
    },
    guard::Guard,
    kernel::{Maps, Pins},
    parse::{is_host, parse_net},
    Error,
};

pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    crate::db::connect(&cfg.db)
        .await
        .with_context(|| format!("database {}", redact(&cfg.db)))
}

/// The kernel maps if the filter is loaded; `None` (not an error) if not.
fn kernel(pins: &Pins) -> anyhow::Result<Option<Maps>> {
    match Maps::open(pins) {
        Ok(m) => Ok(Some(m)),
        Err(Error::NotLoaded(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where a change landed, for the message the operator reads.
pub struct Outcome {
    pub db: Result<(), String>,
    /// The outbox file the change waits in when the database failed.
    pub queued: Option<String>,
    pub kernel: bool,
}

impl Outcome {
    /// Notes for stderr about a change the database has not taken yet.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Err(e), Some(path)) = (&self.db, &self.queued) {
            out.push(format!(
                "warning: the database is unreachable ({e}); the change holds in the kernel and is \
                 queued in {path}: the controller writes it to the database when it is back"
            ));
        }
        if !self.kernel {
            out.push("note: the filter is not loaded; this takes effect when `sip-xdp run` or `attach` starts".into());
        }
        out
    }

    /// Why the change will not last, if it will not: it is in the kernel
    /// only, and a running controller puts the kernel back in line with
    /// the database. The command then fails, so a caller that trusts exit
    /// codes (fail2ban) knows.
    pub fn undone(&self) -> Option<String> {
        match (&self.db, &self.queued) {
            (Err(e), None) => Some(format!(
                "applied to the kernel only: {e}, and it could not be queued. A running \
                 controller will undo it at its first sync after the database is back; repeat the \
                 command then"
            )),
            _ => None,
        }
    }
}

/// Writes `change` to the database; when the database cannot be reached,
/// queues it in the outbox. Returns what it did, or why not and where it
/// waits. A change the database refuses for what it holds is an error
/// here, before the kernel is touched: queued, it would fail for ever.
async fn record(
    cfg: &Config,
    change: &Change,
) -> anyhow::Result<(Result<Applied, String>, Option<String>)> {
    change.check().map_err(refused)?;
    let ob = Outbox::new(&cfg.outbox).with_widest(cfg.widest);
    let r = match open_store(cfg).await {
        Ok(store) => write_after_queued(&store, &ob, change).await?,
        Err(e) => Err(format!("{e:#}")),
    };
    if r.is_ok() {
        return Ok((r, None));
    }
    Ok(match ob.push(change) {
        Ok(()) => (r, Some(ob.path().display().to_string())),
        Err(e) => {
            tracing::error!(path = %ob.path().display(), error = %e, "could not queue the change");
            (r, None)
        }
    })
}

/// Writes the changes queued earlier, then `change`: otherwise it would be
/// overtaken by them (an unblock now, then the block queued an hour ago).
/// A change the database refuses for what it holds is an error.
async fn write_after_queued(
    store: &Store,
    ob: &Outbox,
    change: &Change,
) -> anyhow::Result<Result<Applied, String>> {
    let drained = match ob.drain(|c| c.apply_queued(store)).await {
        Ok(d) => d,
        Err(e) => return Ok(Err(format!("{e} (writing the changes queued before it)"))),
    };
    let refusals = drained.refusals(ob, &change.node);
    if !refusals.is_empty() {
        if let Err(e) = store.insert_events(&refusals).await {
            tracing::warn!(error = %e, "could not record the refused queued changes");
        }
    }
    match change.apply(store, false).await {
        Err(e) if e.is_data_error() => Err(refused(e)),
        r => Ok(r.map_err(|e| e.to_string())),
    }
}

fn refused(e: store::StoreError) -> anyhow::Error {
    anyhow::anyhow!("the database would refuse this change ({e}); nothing was changed")
}

fn outcome<T>(db: &Result<T, String>, queued: Option<String>, kernel: bool) -> Outcome {
    Outcome {
        db: db.as_ref().map(|_| ()).map_err(Clone::clone),
        queued,
        kernel,
    }
}

pub async fn block(
    cfg: &Config,
    pins: &Pins,
    net: IpNet,
    dur: Option<Duration>,
    (reason, source): (&str, &str),
) -> anyhow::Result<Outcome> {
    let guard = Guard::for_this_host();
    if let Some(why) = guard.refusal(&net) {
        return Err(Error::Refused { net, why }.into());
    }
    let mut maps = kernel(pins)?;
    if let Some(m) = &maps {
        if is_host(&net) && m.is_allowed(net.addr())? {
            return Err(Error::Refused {
                net,
                why: "it is on the allow-list (`sip-xdp disallow` it first)".into(),
            }
            .into());
        }
    }
    let now = store::now();
    let expires = dur.map(|d| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    let op = Op::Block {
        reason: reason.to_string(),
        expires_at: expires,
        source: source.to_string(),
    };
    let change = Change::new(op, &net, now, &cfg.node);
    let (db, queued) = if maps.is_some() {
        record(cfg, &change).await?
    } else {
        // Nothing to hold it meanwhile: not queued.
        change.check().map_err(refused)?;
        let r = async { anyhow::Ok(change.apply(&open_store(cfg).await?, false).await?) }
            .await
            .map_err(|e| format!("{e:#}"));
        (r, None)
    };
    let kernel = match &mut maps {
        Some(m) => {
            m.block(&guard, net, dur, Reason::from_source(source).ban_reason())?;
            true
        }
        None if db.is_err() => anyhow::bail!(
            "{}; and the filter is not loaded: nothing was blocked",
            db.unwrap_err()
        ),
        None => false,
    };
    tracing::info!(src_ip = %net, reason = source, "blocked");
    Ok(outcome(&db, queued, kernel))
}

pub async fn unblock(
    cfg: &Config,
    pins: &Pins,
    net: IpNet,
) -> anyhow::Result<(u64, bool, Outcome)> {
    let (db, queued) = record(
        cfg,
        &Change::new(Op::Unblock, &net, store::now(), &cfg.node),
    )
    .await?;
    let maps = kernel(pins)?;
    let kernel = maps.is_some();
    let in_kernel = match maps {
        Some(mut m) => m.unblock(&net)?,
        None => false,
    };
    let rows = db.as_ref().map_or(0, |a| a.rows);
    tracing::info!(src_ip = %net, rows, "unblocked");
    Ok((rows, in_kernel, outcome(&db, queued, kernel)))
}

pub async fn allow(
    cfg: &Config,
    pins: &Pins,
    net: IpNet,
    comment: &str,
) -> anyhow::Result<(Vec<String>, Outcome)> {
    if let Some(why) = cfg.widest.refusal(&net) {
        anyhow::bail!(
            "refusing to allow {net}: {why}: every source in it would pass and its bans be lifted \
             (`[rails]` in the configuration sets the widest entry)"
        );
    }
    let op = Op::Allow {
        comment: comment.to_string(),
    };
    let (db, queued) = record(cfg, &Change::new(op, &net, store::now(), &cfg.node)).await?;
    let mut lifted = db.as_ref().map(|a| a.lifted.clone()).unwrap_or_default();
    let maps = kernel(pins)?;
    let in_kernel = maps.is_some();
    if let Some(mut m) = maps {
        for ip in m.allow(net)? {
            let s = ip.to_string();
            if !lifted.contains(&s) {
                lifted.push(s);
            }
        }
    }
    for ip in &lifted {
        tracing::info!(src_ip = %ip, reason = "allow-listed", "unblocked");
    }
    Ok((lifted, outcome(&db, queued, in_kernel)))
}

pub async fn disallow(cfg: &Config, pins: &Pins, net: IpNet) -> anyhow::Result<(bool, Outcome)> {
    let (db, queued) = record(
        cfg,
        &Change::new(Op::Disallow, &net, store::now(), &cfg.node),
    )
    .await?;
    let maps = kernel(pins)?;
    let in_kernel = maps.is_some();
    let mut removed = false;
    if let Some(mut m) = maps {
        removed = m.disallow(&net)?;
    }
    let rows = db.as_ref().map_or(0, |a| a.rows);
    Ok((removed || rows > 0, outcome(&db, queued, in_kernel)))
}

/// A block as `list blocked` shows it: the database row, and whether the
/// kernel enforces it (with its hit count).
#[derive(Debug, Serialize)]
pub struct ListedBlock {
    #[serde(flatten)]
    pub row: BlockRow,
    pub enforced: bool,
    pub hits: u64,
}

pub async fn list_blocked(cfg: &Config, pins: &Pins) -> anyhow::Result<Vec<ListedBlock>> {
    let store = open_store(cfg).await?;
    let kernel_rows = kernel(pins)?.map(|m| m.list_blocked()).unwrap_or_default();
    Ok(store
        .active_blocks(store::now())
        .await?
        .into_iter()
        .map(|row| {
            let k = parse_net(&row.ip_address)
                .ok()
                .and_then(|n| kernel_rows.iter().find(|k| k.net == n && !k.expired));
            ListedBlock {
                enforced: k.is_some(),
                hits: k.map_or(0, |k| k.hits),
                row,
            }
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct ListedAllow {
    pub id: i64,
    pub ip_address: String,
    pub comment: String,
    pub created_at: NaiveDateTime,
    pub enforced: bool,
}

pub async fn list_allowed(cfg: &Config, pins: &Pins) -> anyhow::Result<Vec<ListedAllow>> {
    let store = open_store(cfg).await?;
    let kernel_rows = kernel(pins)?.map(|m| m.list_allowed()).unwrap_or_default();
    Ok(store
        .allows()
        .await?
        .into_iter()
        .map(|r| ListedAllow {
            enforced: parse_net(&r.ip_address).is_ok_and(|n| kernel_rows.contains(&n)),
            id: r.id,
            ip_address: r.ip_address,
            comment: r.comment,
            created_at: r.created_at,
        })
        .collect())
}

/// Prints the notes; fails when the change will not last.
fn finish(out: &Outcome) -> anyhow::Result<()> {
    for n in out.notes() {
        eprintln!("{n}");
    }
    match out.undone() {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}

pub fn block_cmd(
    ctx: &Ctx,
    target: &str,
    duration: Option<Duration>,
    why: (&str, &str),
) -> anyhow::Result<()> {
    let net = parse_net(target)?;
    let out = ctx
        .rt
        .block_on(block(&ctx.cfg, &ctx.pins, net, duration, why))?;
    match duration {
        Some(d) => println!("blocked {net} for {}", humantime::format_duration(d)),
        None => println!("blocked {net}"),
    }
    if let Ok(m) = Maps::open(&ctx.pins) {
        let allowed = m.allow_overlapping(&net);
        if !allowed.is_empty() {
            let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            eprintln!(
                "note: allow-list entries inside it still pass: {}",
                list.join(", ")
            );
        }
    }
    finish(&out)
}

pub fn unblock_cmd(ctx: &Ctx, target: &str) -> anyhow::Result<()> {
    let net = parse_net(target)?;
    let (rows, in_kernel, out) = ctx.rt.block_on(unblock(&ctx.cfg, &ctx.pins, net))?;
    if rows > 0 || in_kernel {
        println!("unblocked {net}");
    } else {
        println!("{net} was not blocked (see `sip-xdp list blocked`)");
    }
    finish(&out)
}

pub fn allow_cmd(ctx: &Ctx, target: &str, comment: &str) -> anyhow::Result<()> {
    let net = parse_net(target)?;
    let (lifted, out) = ctx.rt.block_on(allow(&ctx.cfg, &ctx.pins, net, comment))?;
    println!("allowed {net}");
    for ip in lifted {
        println!("lifted ban on {ip}");
    }
    finish(&out)
}

pub fn disallow_cmd(ctx: &Ctx, target: &str) -> anyhow::Result<()> {
    let net = parse_net(target)?;
    let (removed, out) = ctx.rt.block_on(disallow(&ctx.cfg, &ctx.pins, net))?;
    if removed {
        println!("removed {net} from the allow-list");
    } else {
        println!("{net} was not on the allow-list (see `sip-xdp list allowed`)");
    }
    finish(&out)
}
