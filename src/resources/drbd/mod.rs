//! The `drbd` resource kind: promote (`acquire`), demote (`release`), "is it Primary" (`probe`)
//! and the local disk state for the core's promotion gate (`disk_state`).
//!
//! Owns: the `drbdadm`/`drbdsetup` commands for one DRBD resource, reading its state, and the
//! bounded retries DRBD needs. Must not touch: anything above the block device (file systems,
//! the database), DRBD's configuration or connections (`disconnect`, `--force` promotion are the
//! operator's call, never ours), and the decision to take over. The one fencing command here is
//! `outdate`, run only when the core says so: the peer's DRBD lost the replication link and its
//! fence-peer handler asked this node, through the daemons, to mark its own disk Outdated (the
//! role Heartbeat's dopd played).
//!
//! The machine this was written on has no DRBD kernel module. Everything here is tested against
//! output recorded on real DRBD 8.4.11 with drbd-utils 9.22 (`shared/fixtures/drbd-8.4/`,
//! copied to `tests/fixtures/drbd-8.4/`) through a `Runner` double; nothing in `src/` fakes
//! `drbdadm`. The refusal texts matched below are not in those recordings (see
//! `PEER_STILL_PRIMARY`): they come from DRBD's state-change error table.
//!
//! State comes from `drbdsetup events2 --now RES` (stable across DRBD 8.4 and 9), with plain
//! `drbdadm status RES` as the fallback when events2 fails or prints something unparseable.

pub mod conf;
pub mod events;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Context, DiskReport, Resource, StepError, StepResult};
use crate::config;
use crate::core::DiskState;
use crate::exec::{self, BoxFuture, ExecError, Output, Runner};

pub use events::{
    disk_name, parse_events2_now, parse_status, DrbdState, Events2, Line, ParseError, Role,
};

/// DRBD's refusal to promote while it still counts the peer as Primary: the kernel's
/// `SS_TWO_PRIMARIES` (-1), printed by drbdsetup as
/// `r0: State change failed: (-1) Multiple primaries not allowed by config` (8.4 prints the minor,
/// `0: State change failed: ...`), followed by
/// `Command 'drbdsetup-84 primary 0' terminated with exit code 11` (8.4 via drbd-utils 9) or
/// `Command 'drbdsetup primary r0' terminated with exit code 11` (DRBD 9). Exit code 11 covers every
/// state-change refusal (a held-open device, quorum, ...), so the text decides, not the code.
/// LAB.md records that this is what `drbdadm primary` does on the survivor until DRBD's own
/// ping-timeout notices the dead peer.
pub const PEER_STILL_PRIMARY: &str = "Multiple primaries not allowed";

/// DRBD's refusal to promote without UpToDate data: `(-2) Need access to UpToDate data`, exit
/// code 17. Seen when the disk changed between our state read and the `primary` call.
pub const NEED_UPTODATE: &str = "Need access to UpToDate data";

/// DRBD's refusal to promote under its own fencing policy when the fence-peer handler did not
/// outdate the unreachable peer: `(-7) Refusing to be Primary while peer is not outdated`,
/// exit code 11. Retrying does not change the handler's answer.
pub const PEER_NOT_OUTDATED: &str = "Refusing to be Primary while peer is not outdated";

/// How long and how often to wait for DRBD. Defaults suit a real cluster; tests shrink them or
/// run on paused tokio time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Upper bound for read-only queries (`events2 --now`, `status`): they answer in
    /// milliseconds unless DRBD or the kernel is stuck, and a stuck query must not eat the step.
    pub query_timeout: Duration,
    /// Pause between `drbdadm primary` attempts while DRBD still sees the peer as Primary.
    pub promote_retry_interval: Duration,
    /// How long to keep retrying `primary` for that reason. Capped at 3/4 of the resource's
    /// start timeout, so the core's step timeout does not cut the explanation off.
    pub promote_retry_window: Duration,
    /// Plain `drbdadm secondary` attempts before `--force` (a holder of the device, e.g. a file
    /// system being unmounted or a udev probe, may need a moment to close it).
    pub demote_attempts: u32,
    pub demote_retry_interval: Duration,
    /// `drbdadm outdate` is checked by reading the disk state back, and run again while DRBD
    /// still reports another state, this often and for at most this long (QEMU lab: an
    /// outdate just after the connection broke exited 0 and left the disk UpToDate).
    pub outdate_retry_interval: Duration,
    pub outdate_retry_window: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            query_timeout: Duration::from_secs(5),
            promote_retry_interval: Duration::from_millis(500),
            promote_retry_window: Duration::from_secs(10),
            demote_attempts: 3,
            demote_retry_interval: Duration::from_millis(500),
            outdate_retry_interval: Duration::from_millis(250),
            outdate_retry_window: Duration::from_secs(5),
        }
    }
}

pub struct Drbd {
    /// The `[[resource]]` name, for messages.
    name: String,
    /// The DRBD resource name as `drbdadm` knows it.
    res: String,
    runner: Arc<dyn Runner>,
    start_timeout: Duration,
    stop_timeout: Duration,
    timing: Timing,
}

impl Drbd {
    pub fn new(r: &config::Resource, ctx: &Context) -> StepResult<Drbd> {
        let config::ResourceKind::Drbd { resource } = &r.kind else {
            return Err(StepError::Failed(format!(
                "resource {} is of kind {}, not drbd",
                r.name,
                r.kind.name()
            )));
        };
        Ok(Drbd {
            name: r.name.clone(),
            res: resource.clone(),
            runner: ctx.runner.clone(),
            start_timeout: Duration::from_millis(r.start_timeout_ms),
            stop_timeout: Duration::from_millis(r.stop_timeout_ms),
            timing: Timing::default(),
        })
    }

    /// Replaces the retry timing (tests; tuning).
    pub fn with_timing(mut self, timing: Timing) -> Drbd {
        self.timing = timing;
        self
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn argv(&self, parts: &[&str]) -> Vec<String> {
        let mut v = exec::argv(parts);
        v.push(self.res.clone());
        v
    }

    /// The resource's state as DRBD reports it now.
    pub async fn state(&self) -> StepResult<DrbdState> {
        let res = &self.res;
        let events = self.argv(&["drbdsetup", "events2", "--now"]);
        let first = match self.runner.output(&events, self.timing.query_timeout).await {
            Ok(o) if o.success() => match parse_events2_now(res, &o.stdout) {
                Ok(s) => return Ok(s),
                Err(e) => format!("cannot parse the output of `{}`: {e}", exec::show(&events)),
            },
            Ok(o) if no_such_resource(&o) => return Ok(DrbdState::absent()),
            Ok(o) => exec::failed(&events, o).to_string(),
            // No drbdsetup means no drbd-utils: drbdadm will not be there either.
            Err(e @ ExecError::Spawn { .. }) => {
                return Err(StepError::Failed(format!(
                    "cannot read the state of drbd resource {res}: {e} (drbdsetup and drbdadm \
                     come with the drbd-utils package)"
                )))
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(resource = %res, problem = %first, "events2 failed; falling back to drbdadm status");
        let status = self.argv(&["drbdadm", "status"]);
        let second = match self.runner.output(&status, self.timing.query_timeout).await {
            Ok(o) if o.success() => match parse_status(res, &o.stdout) {
                Ok(s) => return Ok(s),
                Err(e) => format!("cannot parse the output of `{}`: {e}", exec::show(&status)),
            },
            Ok(o) if no_such_resource(&o) => return Ok(DrbdState::absent()),
            Ok(o) => exec::failed(&status, o).to_string(),
            Err(e) => e.to_string(),
        };
        Err(StepError::Failed(format!(
            "cannot read the state of drbd resource {res}: {first}; the fallback failed too: \
             {second}; check that the drbd kernel module is loaded (cat /proc/drbd) and that \
             drbd-utils supports it"
        )))
    }

    /// The retry window for a peer DRBD still sees as Primary, within the step's budget.
    fn promote_window(&self) -> Duration {
        self.timing
            .promote_retry_window
            .min(self.start_timeout.mul_f64(0.75))
    }

    /// The retry window for an outdate DRBD has not taken yet, within the stop timeout that
    /// each `drbdadm outdate` runs under.
    fn outdate_window(&self) -> Duration {
        self.timing
            .outdate_retry_window
            .min(self.stop_timeout.mul_f64(0.75))
    }

    async fn promote(&self) -> StepResult {
        let res = &self.res;
        let st = self.state().await?;
        if !st.exists {
            return Err(StepError::Refused(format!(
                "cannot promote drbd resource {res} ({}): it is not up on this node; bring it up \
                 with `drbdadm up {res}` (and check its configuration in /etc/drbd.d)",
                self.name
            )));
        }
        if st.role == Role::Primary {
            tracing::info!(resource = %res, state = %st.summary(), "drbd already Primary; nothing to promote");
            return Ok(());
        }
        if st.disk != DiskState::UpToDate {
            tracing::error!(resource = %res, state = %st.summary(), "refusing to promote a drbd disk that is not UpToDate");
            return Err(StepError::Refused(refuse_disk(res, &st)));
        }
        tracing::info!(resource = %res, state = %st.summary(), "promoting drbd resource");
        let argv = self.argv(&["drbdadm", "primary"]);
        let window = self.promote_window();
        let interval = self.timing.promote_retry_interval;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let o = self
                .runner
                .output(&argv, self.start_timeout)
                .await
                .map_err(|e| command_error("promote", res, e))?;
            if o.success() {
                tracing::info!(resource = %res, attempts, "drbd resource is Primary");
                return Ok(());
            }
            if said(&o, PEER_STILL_PRIMARY) {
                let waited = started.elapsed();
                if waited + interval > window {
                    tracing::error!(resource = %res, attempts, waited_ms = waited.as_millis() as u64, "drbd still sees the peer as Primary; giving up");
                    return Err(StepError::Refused(format!(
                        "cannot promote drbd resource {res}: peer still Primary according to \
                         DRBD after {:.1} s ({attempts} attempts of `{}`); DRBD has not noticed \
                         the peer is gone: tune ping-int/ping-timeout in its net section (e.g. \
                         ping-int 1; ping-timeout 5) or configure fencing so the peer is cut off \
                         first; DRBD said: {}",
                        waited.as_secs_f64(),
                        exec::show(&argv),
                        tail(&o)
                    )));
                }
                tracing::warn!(resource = %res, attempts, waited_ms = waited.as_millis() as u64, "drbd still sees the peer as Primary; retrying promotion");
                tokio::time::sleep(interval).await;
                continue;
            }
            if said(&o, NEED_UPTODATE) {
                return Err(StepError::Refused(format!(
                    "cannot promote drbd resource {res}: DRBD refused because the local disk is \
                     no longer UpToDate (it was a moment ago); check `drbdadm status {res}`: {}",
                    tail(&o)
                )));
            }
            if said(&o, PEER_NOT_OUTDATED) {
                return Err(StepError::Refused(format!(
                    "cannot promote drbd resource {res}: DRBD's fencing policy requires the \
                     unreachable peer to be outdated first and its fence-peer handler did not \
                     do it; check the handler in /etc/drbd.d and its log, or fence the peer by \
                     hand: {}",
                    tail(&o)
                )));
            }
            return Err(StepError::Failed(format!(
                "cannot promote drbd resource {res}: {}; check `drbdadm status {res}` and the \
                 kernel log (dmesg)",
                exec::failed(&argv, o)
            )));
        }
    }

    async fn demote(&self) -> StepResult {
        let res = &self.res;
        let st = self.state().await?;
        if !st.exists {
            tracing::info!(resource = %res, "drbd resource is not up; nothing to demote");
            return Ok(());
        }
        if st.role == Role::Secondary {
            tracing::info!(resource = %res, "drbd already Secondary; nothing to demote");
            return Ok(());
        }
        tracing::info!(resource = %res, state = %st.summary(), "demoting drbd resource");
        let argv = self.argv(&["drbdadm", "secondary"]);
        let attempts = self.timing.demote_attempts.max(1);
        let mut last = String::new();
        for n in 1..=attempts {
            let o = self
                .runner
                .output(&argv, self.stop_timeout)
                .await
                .map_err(|e| command_error("demote", res, e))?;
            if o.success() {
                tracing::info!(resource = %res, attempts = n, "drbd resource is Secondary");
                return Ok(());
            }
            last = tail(&o);
            if n < attempts {
                tracing::warn!(resource = %res, attempt = n, error = %last, "drbd demotion failed; retrying (the device may still be closing)");
                tokio::time::sleep(self.timing.demote_retry_interval).await;
            }
        }
        // `--force` fails pending and new I/O instead of waiting for the device's holders:
        // better than staying Primary on a node that is handing over.
        let force = self.argv(&["drbdadm", "secondary", "--force"]);
        tracing::warn!(resource = %res, attempts, "plain drbd demotion kept failing; trying --force");
        let o = self
            .runner
            .output(&force, self.stop_timeout)
            .await
            .map_err(|e| command_error("demote", res, e))?;
        if o.success() {
            tracing::warn!(resource = %res, "drbd resource demoted with --force: I/O still pending on it was failed");
            return Ok(());
        }
        let forced = tail(&o);
        let hint = if said(&o, "unrecognized option") || said(&o, "unknown option") {
            "this DRBD (8.4) has no `secondary --force`; "
        } else {
            ""
        };
        Err(StepError::Failed(format!(
            "cannot demote drbd resource {res}: `{}` failed {attempts} times (last: {last}); \
             `{}` failed too ({hint}{forced}); something still holds the device open: unmount \
             what is mounted from it and stop its users (`drbdadm sh-dev {res}` names the \
             device; `fuser -vm DEVICE` lists holders), then retry",
            exec::show(&argv),
            exec::show(&force),
        )))
    }

    /// Marks the local disk Outdated (DRBD refuses it on a Primary, which the core never asks).
    /// Succeeds only once DRBD reports the disk Outdated: the peer's fence-peer handler turns
    /// this into "exit 4, the peer is outdated", on which DRBD lets the peer write alone, so an
    /// exit code without the state behind it would be a lie that costs writes.
    async fn outdate_local(&self) -> StepResult {
        let res = &self.res;
        let argv = self.argv(&["drbdadm", "outdate"]);
        tracing::warn!(resource = %res, "outdating the local drbd disk at the peer's request");
        let deadline = Instant::now() + self.outdate_window();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let o = self
                .runner
                .output(&argv, self.stop_timeout)
                .await
                .map_err(|e| command_error("outdate", res, e))?;
            if !o.success() {
                return Err(StepError::Failed(format!(
                    "cannot outdate drbd resource {res}: {}; check `drbdadm status {res}` (DRBD \
                     refuses to outdate a Primary or a connected disk)",
                    exec::failed(&argv, o)
                )));
            }
            let st = self.state().await?;
            if st.disk == DiskState::Outdated {
                tracing::warn!(resource = %res, attempts, "drbd disk is Outdated: this node cannot be promoted until it resyncs");
                return Ok(());
            }
            let conn = st.connection.as_deref().unwrap_or("none");
            if Instant::now() + self.timing.outdate_retry_interval > deadline {
                return Err(StepError::Failed(format!(
                    "`{}` exited 0 {attempts} times, but DRBD still reports the disk {:?} \
                     (connection {conn}); the peer is not told that this disk is outdated. \
                     Check `drbdadm status {res}` and the kernel log (`dmesg | grep drbd`)",
                    exec::show(&argv),
                    st.disk
                )));
            }
            tracing::warn!(resource = %res, attempts, disk = ?st.disk, connection = conn, "drbdadm outdate exited 0 but the disk is not Outdated; trying again");
            tokio::time::sleep(self.timing.outdate_retry_interval).await;
        }
    }
}

fn said(o: &Output, needle: &str) -> bool {
    o.stderr.contains(needle) || o.stdout.contains(needle)
}

fn no_such_resource(o: &Output) -> bool {
    said(o, "No such resource") || said(o, "Unknown resource")
}

/// What the command said, on one line, for messages.
fn tail(o: &Output) -> String {
    let text = if o.stderr.trim().is_empty() {
        &o.stdout
    } else {
        &o.stderr
    };
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let code = match o.code {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    };
    if joined.is_empty() {
        code
    } else {
        format!("{joined} ({code})")
    }
}

fn command_error(what: &str, res: &str, e: ExecError) -> StepError {
    let hint = match e {
        ExecError::Spawn { .. } => " (drbdadm comes with the drbd-utils package)",
        ExecError::Timeout { .. } => "; DRBD may be stuck: check dmesg and `cat /proc/drbd`",
        _ => "",
    };
    StepError::Failed(format!("cannot {what} drbd resource {res}: {e}{hint}"))
}

/// Why a disk that is not UpToDate is not promoted, and what the operator can do.
fn refuse_disk(res: &str, st: &DrbdState) -> String {
    let why = match st.disk {
        DiskState::Outdated => {
            "DRBD marked it Outdated: it missed writes the peer acknowledged. Promoting it \
             would serve old data and lose those writes. Bring the peer back so DRBD resyncs \
             from it"
        }
        DiskState::Inconsistent => {
            "a resync into it has not finished, so it holds a mix of old and new blocks. \
             Promoting it would serve corrupt data. Let the resync finish (watch `drbdadm \
             status`) with the peer connected"
        }
        DiskState::Diskless => {
            "no local backing disk is attached, so every read would go to the peer, which is \
             not there. Attach it (`drbdadm attach`) and let it resync"
        }
        DiskState::Consistent => {
            "DRBD cannot tell whether the peer has newer data. Promoting it could lose the \
             peer's last writes. Connect the peer, or fence it so DRBD can mark it Outdated"
        }
        _ => {
            "it is not usable now. Promoting it could lose writes or fail. Check `drbdadm \
             status` and the kernel log (dmesg)"
        }
    };
    format!(
        "refusing to promote drbd resource {res}: the local disk is {} ({}). {why}. Only if \
         the peer's data is gone for good, an operator who accepts losing its last writes can \
         promote by hand with `drbdadm primary --force {res}`",
        disk_name(st.disk),
        st.summary()
    )
}

impl Resource for Drbd {
    fn acquire(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(self.promote())
    }

    fn release(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(self.demote())
    }

    /// In place means Primary here; a resource that is not up is not in place.
    fn probe(&self) -> BoxFuture<'_, StepResult<bool>> {
        Box::pin(async { Ok(self.state().await?.role == Role::Primary) })
    }

    fn disk_state(&self) -> Option<BoxFuture<'_, StepResult<DiskReport>>> {
        Some(Box::pin(async {
            let st = self.state().await?;
            Ok(DiskReport {
                disk: st.disk,
                resource: self.res.clone(),
                connection: st.connection,
                peer_disk: st.peer_disk,
                replication: st.replication,
            })
        }))
    }

    fn outdate(&self) -> Option<BoxFuture<'_, StepResult>> {
        Some(Box::pin(self.outdate_local()))
    }
}
