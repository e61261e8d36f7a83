//! The command line: argument definitions (`args`), and one function per
//! command, grouped by what it touches: `edit` changes the lists (database
//! and kernel), `show` reads them, `filter` drives the attached program,
//! `status` reports on everything, `doctor` checks the machine, `report`
//! sums up a period.
//!
//! May import every other room; nothing imports `cli` but `main`.

mod args;
mod doctor;
pub mod edit;
mod filter;
mod report;
mod show;
mod status;

use anyhow::Context as _;

pub use args::{
    Cli, Color, Command, ConfigAction, DbAction, ListWhat, LogFormat, MalformedAction, OnOff,
};

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
            crate::config::check_db_url(db)
                .map_err(|(_, why)| anyhow::anyhow!("--db / SIP_XDP_DB: {why}"))?;
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
    if let Some(done) = without_config(&cli) {
        return done;
    }
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
            run_controller(ctx, overrides, detach_on_exit)
        }
        Command::Db {
            action: DbAction::Migrate,
        } => show::migrate(&ctx),
        Command::Db {
            action: DbAction::Prune,
        } => show::prune(&ctx),
        // Answered above, before the configuration was needed.
        Command::Doctor { .. } | Command::Completions { .. } | Command::Man => Ok(()),
        Command::Config { .. } => {
            config_check(&ctx);
            Ok(())
        }
        Command::Events {
            since,
            event_type,
            limit,
            json,
        } => show::events(&ctx, since, event_type.as_deref(), limit, json),
        Command::Attach { iface, mode } => filter::attach(&ctx, &iface, mode),
        Command::Detach { iface, all, purge } => filter::detach(&ctx, &iface, all, purge),
        Command::Block {
            target,
            duration,
            reason,
            source,
        } => edit::block_cmd(&ctx, &target, duration, (&reason, &source)),
        Command::Unblock { target } => edit::unblock_cmd(&ctx, &target),
        Command::Allow { target, comment } => edit::allow_cmd(&ctx, &target, &comment),
        Command::Disallow { target } => edit::disallow_cmd(&ctx, &target),
        Command::List { what, json, kernel } => show::list(&ctx, what, json, kernel),
        Command::Stats { json } => show::stats(&ctx, json),
        Command::Report { since, n, json } => report::report(&ctx, since, n, json),
        Command::Top { n, json } => show::top(&ctx, n, json),
        Command::Monitor { state } => filter::monitor(&ctx, state),
        Command::Malformed { action } => filter::malformed(&ctx, action),
        Command::Ports { ports, tcp } => filter::ports(&ctx, &ports, tcp.as_deref()),
        Command::Scope { scope } => filter::scope(&ctx, scope),
        Command::Status { json } => status::status(&ctx, json),
    }
}

fn run_controller(ctx: Ctx, overrides: Overrides, detach_on_exit: bool) -> anyhow::Result<()> {
    let mut c = Controller::start(ctx.cfg, overrides, ctx.pins)?;
    ctx.rt.block_on(c.run(detach_on_exit))
}

/// `config check`: the file was read and checked to get here.
fn config_check(ctx: &Ctx) {
    match &ctx.cfg.path {
        Some(p) => println!("{}: ok", p.display()),
        None => println!(
            "no configuration file: every key has its default (`sip-xdp config example` lists them)"
        ),
    }
}

/// Commands that need no valid configuration: one writes it, one checks
/// it, two describe the CLI itself.
fn without_config(cli: &Cli) -> Option<anyhow::Result<()>> {
    match cli.command {
        Command::Config {
            action: ConfigAction::Example,
        } => {
            print!("{}", crate::config::EXAMPLE);
            Some(Ok(()))
        }
        Command::Doctor { json } => Some(doctor::run(cli, json)),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "sip-xdp", &mut std::io::stdout());
            Some(Ok(()))
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            Some(
                clap_mangen::Man::new(cmd)
                    .section("8")
                    .render(&mut std::io::stdout())
                    .context("writing the manual page"),
            )
        }
        _ => None,
    }
}
