//! The command line: argument definitions (`args`), and one function per
//! command, grouped by what it touches: `edit` changes the lists (database
//! and kernel), `show` reads them, `filter` drives the attached program,
//! `status` reports on everything.
//!
//! May import every other room; nothing imports `cli` but `main`.

mod args;
pub mod edit;
mod filter;
mod show;
mod status;

use anyhow::Context as _;

pub use args::{Cli, Color, Command, DbAction, ListWhat, LogFormat, MalformedAction, OnOff};

use crate::{
    config::{Config, Overrides},
    controller::Controller,
    kernel::Pins,
};

/// What every command needs: the pins, the configuration (with `--db`
/// applied) and a runtime for the database.
pub struct Ctx {
    pub pins: Pins,
    pub cfg: Config,
    pub db_override: Option<String>,
    pub rt: tokio::runtime::Runtime,
}

impl Ctx {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        let mut cfg = Config::load(cli.config.as_deref())?;
        if let Some(db) = &cli.db {
            cfg.db = db.clone();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Self {
            pins: Pins::new(cli.pin_dir.clone()),
            cfg,
            db_override: cli.db.clone(),
            rt,
        })
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx::new(&cli)?;
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
                db: ctx.db_override.clone(),
                node,
                interfaces: iface,
                sync_interval,
                mode,
                metrics,
            };
            let mut c = Controller::start(ctx.cfg, overrides, ctx.pins)?;
            ctx.rt.block_on(c.run(detach_on_exit))
        }
        Command::Db {
            action: DbAction::Migrate,
        } => show::migrate(&ctx),
        Command::Events {
            since,
            event_type,
            limit,
            json,
        } => show::events(&ctx, since, event_type.as_deref(), limit, json),
        Command::Attach { iface, mode } => filter::attach(&ctx, &iface, mode),
        Command::Detach { iface, purge } => filter::detach(&ctx, &iface, purge),
        Command::Block {
            target,
            duration,
            reason,
        } => edit::block_cmd(&ctx, &target, duration, &reason),
        Command::Unblock { target } => edit::unblock_cmd(&ctx, &target),
        Command::Allow { target, comment } => edit::allow_cmd(&ctx, &target, &comment),
        Command::Disallow { target } => edit::disallow_cmd(&ctx, &target),
        Command::List {
            what: ListWhat::Verified,
            json,
            ..
        } => show::list_verified(&ctx, json),
        Command::List {
            what,
            json,
            kernel: true,
        } => show::list_kernel(&ctx, what, json),
        Command::List {
            what: ListWhat::Blocked,
            json,
            kernel: false,
        } => show::list_blocked(&ctx, json),
        Command::List {
            what: ListWhat::Allowed,
            json,
            kernel: false,
        } => show::list_allowed(&ctx, json),
        Command::Stats { json } => show::stats(&ctx, json),
        Command::Top { n, json } => show::top(&ctx, n, json),
        Command::Monitor { state } => filter::monitor(&ctx, state),
        Command::Malformed { action } => filter::malformed(&ctx, action),
        Command::Ports { ports, tcp } => filter::ports(&ctx, &ports, tcp.as_deref()),
        Command::Scope { scope } => filter::scope(&ctx, scope),
        Command::Status { json } => status::status(&ctx, json),
    }
}
