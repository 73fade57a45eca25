//! `twinbeat standby`, `twinbeat takeover` (Heartbeat's hb_standby / hb_takeover) and
//! `twinbeat maintenance on|off`: ask the daemon, wait for the outcome, report it.
//!
//! Exit status: 0 done, 1 failed or daemon unreachable, 2 usage, 3 refused (nothing changed).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::client::{ask, Target};
use crate::core::CommandOutcome;
use crate::shell::control::{Request, Response};

#[derive(Debug, Args)]
pub struct HandoffArgs {
    #[command(flatten)]
    pub target: Target,
    /// Give up waiting after this many seconds (the handoff itself goes on in the daemon).
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// `on`: stop acting (keep observing); `off`: probe the resources and resume.
    pub mode: OnOff,
    #[command(flatten)]
    pub target: Target,
}

pub fn standby(args: &HandoffArgs) -> anyhow::Result<ExitCode> {
    command("standby", &args.target, Request::Standby, args.timeout)
}

pub fn takeover(args: &HandoffArgs) -> anyhow::Result<ExitCode> {
    command("takeover", &args.target, Request::Takeover, args.timeout)
}

pub fn maintenance(args: &MaintenanceArgs) -> anyhow::Result<ExitCode> {
    let on = args.mode == OnOff::On;
    command("maintenance", &args.target, Request::Maintenance { on }, 60)
}

fn command(name: &str, target: &Target, req: Request, timeout: u64) -> anyhow::Result<ExitCode> {
    match ask(target, req, Duration::from_secs(timeout)) {
        Err(e) => {
            eprintln!("twinbeat {name}: {e}");
            Ok(ExitCode::from(1))
        }
        Ok(Response::Outcome(CommandOutcome::Done { message, gap_ms })) => {
            match gap_ms {
                Some(g) => println!("{name}: {message}; service gap {g} ms"),
                None => println!("{name}: {message}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Response::Outcome(CommandOutcome::Refused { reason })) => {
            eprintln!("twinbeat {name}: refused: {reason}");
            Ok(ExitCode::from(3))
        }
        Ok(Response::Outcome(CommandOutcome::Failed { reason })) => {
            eprintln!("twinbeat {name}: failed: {reason}");
            Ok(ExitCode::from(1))
        }
        Ok(Response::Error { message }) => {
            eprintln!("twinbeat {name}: {message}");
            Ok(ExitCode::from(1))
        }
        Ok(Response::Status(_) | Response::Outdate(_)) => {
            eprintln!("twinbeat {name}: unexpected answer from the daemon");
            Ok(ExitCode::from(1))
        }
    }
}
