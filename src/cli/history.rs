//! `twinbeat history [--json] [--last N]`: the failover history of this node, read from
//! `<state-dir>/history.jsonl` (and its rotated predecessor).
//!
//! Reads the file directly rather than asking the daemon: the history matters most when the
//! daemon is down or has just crashed, and the daemon is its only writer, so reading needs no
//! coordination. `--state-dir` overrides the config's `state-dir`.
//!
//! Exit status: 0 shown (also when empty), 1 the file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{self, Config};
use crate::shell::history;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Print the entries as JSON lines, exactly as stored.
    #[arg(long)]
    pub json: bool,
    /// Only the newest N entries.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// The state directory holding history.jsonl (default: `state-dir` from the config).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The config file naming the state directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn state_dir(args: &HistoryArgs) -> PathBuf {
    if let Some(d) = &args.state_dir {
        return d.clone();
    }
    let file = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let node = config::hostname().ok();
    match Config::load(&file, node.as_deref()) {
        Ok(c) => c.state_dir,
        Err(_) => PathBuf::from(config::DEFAULT_STATE_DIR),
    }
}

pub fn run(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let dir = state_dir(args);
    let (mut all, bad) = match history::read(&dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!(
                "twinbeat history: cannot read {}: {e}",
                dir.join(history::FILE).display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(n) = args.last {
        let skip = all.len().saturating_sub(n);
        all.drain(..skip);
    }
    for e in &all {
        if args.json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            println!("{}", e.one_line());
        }
    }
    if !args.json && all.is_empty() {
        println!(
            "no failovers recorded in {}",
            dir.join(history::FILE).display()
        );
    }
    if bad > 0 {
        eprintln!("twinbeat history: skipped {bad} line(s) that do not parse");
    }
    Ok(ExitCode::SUCCESS)
}
