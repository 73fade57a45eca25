//! `twinbeat-lab`: the namespace lab's own tools. Lab only: it drives and measures the lab that
//! `lab/demo.sh` brings up, and is never installed on a database server.
//!
//! - `writer`: the client. Runs in the client namespace, inserts a row every few ms through the
//!   VIP and logs every acknowledged and every in-doubt write; an ICMP prober beside it logs
//!   when the VIP stops and starts answering.
//! - `fs-shutdown DIR`: the power-cut half that must run inside the lab's mount namespace.
//! - `run`: the failover scenarios, with checks and figures (human summary + JSON).
//! - `campaign`: randomized fault schedules from a seed (the nemesis), with the same checks.

mod campaign;
mod checks;
mod clientlog;
mod daemonlog;
mod delay;
mod drill;
mod faults;
mod fencing;
mod icmp;
mod lab;
mod report;
mod sampler;
mod scenarios;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "twinbeat-lab",
    about = "the twinbeat namespace lab's client and scenario runner"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The lab client: run it in the client namespace (VIP and MYSQL_PWD in the environment).
    Writer {
        /// Where acked.log, indoubt.log and vip.log go.
        logdir: PathBuf,
        /// Stops as soon as this file exists.
        stopfile: PathBuf,
        /// Stops by itself after this many seconds.
        max_seconds: u64,
        /// Pause between two writes.
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
    },
    /// Shut the ext4 filesystem at DIR down without flushing its journal (EXT4_IOC_SHUTDOWN,
    /// NOLOGFLUSH): from then on nothing more reaches the disk, as in a power cut.
    FsShutdown { dir: PathBuf },
    /// Power node a or b off as a power cut does (the lab fence agent's action; run it from the
    /// host's namespaces).
    PowerOff { node: String },
    /// Run failover scenarios against the running lab (sudo lab/scenarios.sh wraps bring-up,
    /// this and tear-down).
    Run {
        /// Which scenarios, e.g. 1,3,5 (default: all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<u8>,
        /// Trials of each scenario; figures are medians over them.
        #[arg(long, default_value_t = 1)]
        trials: u32,
        /// Where the JSON report goes.
        #[arg(long, default_value = "lab/build/scenarios.json")]
        json: PathBuf,
    },
    /// Randomized fault schedules against the running lab (sudo lab/campaign.sh wraps it).
    Campaign {
        /// Every run's schedule follows from this seed and the run number.
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 10)]
        runs: u32,
        /// Replay only this run of the seed.
        #[arg(long)]
        only: Option<u32>,
        /// At most this many faults per run.
        #[arg(long, default_value_t = 3)]
        max_faults: u32,
        /// The lab has a witness (lab/campaign.sh --witness brings it up with LAB_WITNESS=1):
        /// three runs in four also get a witness fault. Replay a run with the same option.
        #[arg(long)]
        witness: bool,
        /// Three runs in four also get a heartbeat delay (NFQUEUE: every heartbeat both nodes
        /// send on hb0, lan0 or both held back 100-3000 ms, in order, for 2-8 s). Replay a run
        /// with the same option.
        #[arg(long)]
        delay: bool,
        /// Arm the lab's fence agent for the whole campaign: a takeover from a silent peer powers
        /// it off first (the node is powered on again when the step heals).
        #[arg(long, value_name = "MODE", value_parser = ["power-off"])]
        fence: Option<String>,
        #[arg(long, default_value = "lab/build/campaign.json")]
        json: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Writer {
            logdir,
            stopfile,
            max_seconds,
            interval_ms,
        } => writer::main(&logdir, &stopfile, max_seconds, interval_ms),
        Cmd::FsShutdown { dir } => faults::fs_shutdown(&dir),
        Cmd::PowerOff { node } => fencing::power_off(&node),
        Cmd::Run {
            scenarios,
            trials,
            json,
        } => scenarios::main(&scenarios, trials, &json),
        Cmd::Campaign {
            seed,
            runs,
            only,
            max_faults,
            witness,
            delay,
            fence,
            json,
        } => campaign::main(
            seed,
            runs,
            only,
            max_faults,
            campaign::Options {
                witness,
                delay,
                fence: fence.is_some(),
            },
            &json,
        ),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("twinbeat-lab: {e:#}");
            ExitCode::from(1)
        }
    }
}
