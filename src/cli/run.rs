//! `twinbeat run`: the daemon. Loads and validates the config, then hands over to `shell`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{self, Config, ConfigError};
use crate::shell::{self, RunOptions};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Run as this node (default: the node named like this host, `uname -n`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Run the heartbeat thread at this SCHED_RR priority (1-99), so a loaded host does not
    /// starve heartbeats into a false failover.
    #[arg(long, value_name = "PRIORITY", num_args = 0..=1, default_missing_value = "10")]
    pub realtime: Option<i32>,
    /// Lock the daemon's memory (mlockall) so heartbeats never wait for a page-in.
    #[arg(long)]
    pub lock_memory: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let cfg = match Config::load(&args.config, args.node.as_deref()) {
        Ok(c) => c,
        Err(ConfigError::Invalid { path, diagnostics }) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!(
                "{}: not valid; twinbeat did not start (check it with `twinbeat check`)",
                path.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("twinbeat: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let opts = RunOptions {
        realtime: args.realtime,
        lock_memory: args.lock_memory,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(shell::run(cfg, opts)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("twinbeat: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Under systemd (JOURNAL_STREAM set) the journal adds timestamps and stores severity itself:
/// print neither time nor colour. On a terminal, both.
pub(super) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TWINBEAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    let _ = if journal {
        b.without_time().try_init()
    } else {
        b.try_init()
    };
}
