use std::process::ExitCode;

use std::io::IsTerminal as _;

use clap::Parser as _;
use sip_xdp::cli::{self, Cli, Color, LogFormat};
use tracing_subscriber::EnvFilter;

/// glibc gives every thread that allocates an arena of its own, and keeps
/// what was freed there: the database driver's threads (one per SQLite
/// connection) each held on to a copy of a 100k-row read. Two arenas keep
/// that read's peak RSS down.
///
/// A fixed mmap threshold returns every large buffer to the kernel when it
/// is freed. glibc's own threshold slides up to the largest buffer freed,
/// so the next buffer that size (the ban index read whole every 30 s, the
/// batch reads of the maps) comes from the heap, where a freed block below
/// one still in use stays resident: the controller's memory climbed in
/// steps of one such buffer over hours.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first in main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// A command whose reader goes away (`sip-xdp list blocked | head`) ends
/// the way `cat` and `ls` end there: quietly, by SIGPIPE. Rust ignores
/// SIGPIPE, which turns the next print into a panic. The controller keeps
/// ignoring it: a client that hangs up on the metrics port is an error on
/// that socket, not a reason to stop filtering.
fn quiet_broken_pipe() {
    // SAFETY: called in main before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    // The controller's lifecycle lines (running, synced, reloaded) are
    // info; a command prints its own result and logs only what went wrong.
    let daemon = matches!(cli.command, sip_xdp::cli::Command::Run { .. });
    if !daemon {
        quiet_broken_pipe();
    }
    let default = match (cli.verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Escape codes between field names break every parser of the log
    // (fail2ban's regex first): colours only for a person at a terminal.
    let ansi = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sip_xdp::logline::OneLine::new(std::io::stderr, ansi))
        .with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line the operator can act on: the error and its causes.
            eprintln!("sip-xdp: {e:#}");
            ExitCode::FAILURE
        }
    }
}
