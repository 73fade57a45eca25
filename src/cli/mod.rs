//! The `twinbeat` command line: one file per subcommand, dispatched from here.
//!
//! Owns: argument parsing (clap), exit codes and what is printed for the operator.
//! Must not touch: validation rules (in `config`), the daemon's logic (in `core` / `shell`).
//! Each subcommand has a variant in `Command` and a file of its own.
//! Exit codes: 0 ok, 1 error, 2 usage, 3 refused; `fence-peer` uses DRBD's handler codes instead.

mod check;
mod check_drbd;
mod client;
mod drill;
mod fence_peer;
mod handoff;
mod history;
mod run;
pub mod status;
mod witness;

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
    /// Run the daemon (normally started by systemd: twinbeat.service).
    Run(run::RunArgs),
    /// Show this node's view: roles, peer, links, resources, recent transitions.
    Status(status::StatusArgs),
    /// Hand the service to the peer and wait until it runs there (like hb_standby).
    Standby(handoff::HandoffArgs),
    /// Take the service from the peer, or start it here if the peer does not hold it
    /// (like hb_takeover); also clears a local failure.
    Takeover(handoff::HandoffArgs),
    /// Stop acting while still observing (`on`), or probe and resume (`off`).
    Maintenance(handoff::MaintenanceArgs),
    /// A planned switchover to the peer (and back with --and-back), measured, with a canary
    /// write that must survive; exit 0 pass, 1 fail, 3 refused.
    Drill(drill::DrillArgs),
    /// DRBD's fence-peer handler: ask the peer's daemon to outdate its disk; exits with DRBD's
    /// codes (3 peer Inconsistent, 4 peer outdated, 5 peer unreachable, 6 peer Primary,
    /// 7 peer fenced, 1 anything else: DRBD then changes nothing).
    FencePeer(fence_peer::FencePeerArgs),
    /// Show the failover history: every takeover, handoff, restart, demotion and drill.
    History(history::HistoryArgs),
    /// Run the witness: a third machine that grants the "active" lease to one node at a time.
    Witness(witness::WitnessArgs),
}

/// Runs the parsed command line; the returned code is the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Standby(args) => handoff::standby(&args),
        Command::Takeover(args) => handoff::takeover(&args),
        Command::Maintenance(args) => handoff::maintenance(&args),
        Command::History(args) => history::run(&args),
        Command::Drill(args) => drill::run(&args),
        Command::FencePeer(args) => fence_peer::run(&args),
        Command::Witness(args) => witness::run(&args),
    }
}
