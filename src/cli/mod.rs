//! The `twinbeat` command line: one file per subcommand, dispatched from here.
//!
//! Owns: argument parsing (clap), exit codes and what is printed for the operator.
//! Must not touch: validation rules (in `config`), the daemon's logic (in `core` / `shell`).
//! New subcommands (`run`, `status`, `standby`, `takeover`, `drill`) get a variant in `Command`
//! and a file next to `check.rs`.

mod check;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "twinbeat",
    version,
    about = "Failover daemon for a pair of database servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file: print every problem with FILE:LINE:COL, cause and fix.
    Check(check::CheckArgs),
}

/// Runs the parsed command line; the returned code is the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&args),
    }
}
