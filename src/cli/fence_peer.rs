//! `twinbeat fence-peer`: DRBD's fence-peer handler (Heartbeat's dopd / drbd-peer-outdater).
//!
//! drbd.conf: `disk { fencing resource-only; }` and
//! `handlers { fence-peer "/usr/sbin/twinbeat fence-peer"; }`. DRBD runs it when it loses the
//! replication link while Primary, or is asked to promote with the peer's disk unknown, with the
//! resource in `DRBD_RESOURCE` (plus `DRBD_MINOR`, `DRBD_PEER_ADDRESS`, `DRBD_PEER_AF`, ...).
//! The local daemon asks the peer's daemon over the heartbeat links; the exit status is DRBD's:
//! 3 peer Inconsistent, 4 peer outdated, 5 peer unreachable, 6 peer Primary, 7 peer fenced.
//! Anything that went wrong on this side (no daemon, wrong resource, no answer) exits 1, which
//! DRBD treats as "the handler is broken" and acts on nothing: never a code that claims
//! something about the peer that nobody checked.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::{ask, Target};
use crate::core::{Millis, OutdateVerdict};
use crate::shell::control::{Request, Response};

#[derive(Debug, Args)]
pub struct FencePeerArgs {
    /// The DRBD resource (default: `DRBD_RESOURCE`, set by DRBD for its handlers).
    #[arg(long, value_name = "NAME")]
    pub resource: Option<String>,
    /// How long the daemon waits for the peer's answer (default: the daemon's, about three
    /// deadtimes plus the drbd resource's stop timeout).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<Millis>,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &FencePeerArgs) -> anyhow::Result<ExitCode> {
    let resource = match args
        .resource
        .clone()
        .or_else(|| std::env::var("DRBD_RESOURCE").ok())
        .filter(|r| !r.trim().is_empty())
    {
        Some(r) => r,
        None => {
            eprintln!(
                "twinbeat fence-peer: no drbd resource: DRBD sets DRBD_RESOURCE for its handlers; \
                 run by hand, pass --resource NAME"
            );
            return Ok(ExitCode::from(1));
        }
    };
    let peer = std::env::var("DRBD_PEER_ADDRESS").unwrap_or_default();
    let timeout_ms = args.timeout_ms;
    // The daemon bounds the wait itself; this only catches a daemon that never answers.
    let socket_wait = Duration::from_millis(timeout_ms.unwrap_or(120_000) + 10_000);
    let req = Request::FencePeer {
        resource: resource.clone(),
        timeout_ms,
    };
    let code = match ask(&args.target, req, socket_wait) {
        Err(e) => {
            eprintln!("twinbeat fence-peer {resource}: {e}; exit 1 (DRBD changes nothing)");
            1
        }
        Ok(Response::Outdate(o)) => {
            let code = o.verdict.exit_code();
            let line = format!(
                "twinbeat fence-peer {resource}{}: {}; exit {code}",
                if peer.is_empty() {
                    String::new()
                } else {
                    format!(" (peer {peer})")
                },
                o.message
            );
            if o.verdict == OutdateVerdict::Failed {
                eprintln!("{line} (DRBD changes nothing)");
            } else {
                println!("{line}");
            }
            code
        }
        Ok(Response::Error { message }) => {
            eprintln!("twinbeat fence-peer {resource}: {message}; exit 1 (DRBD changes nothing)");
            1
        }
        Ok(_) => {
            eprintln!("twinbeat fence-peer {resource}: unexpected answer from the daemon; exit 1");
            1
        }
    };
    Ok(ExitCode::from(code))
}
