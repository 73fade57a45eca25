//! The `systemd` resource kind: a unit started, stopped and probed with `systemctl`.
//!
//! Owns: the `systemctl start|stop|is-active` commands for one unit, and the helpers
//! (`start_unit`, `stop_unit`, `is_active`) other executors (mysql with `unit = ...`) reuse.
//! Must not touch: the unit's files, `enable`/`disable`, `daemon-reload`, restarts on failure
//! (a unit twinbeat manages should have no `Restart=` fighting the failover, and should not be
//! enabled at boot: the active node decides where it runs).
//!
//! `systemctl start` on an active unit and `stop` on an inactive one succeed, so acquire and
//! release are idempotent without asking first. The machine this was written on has no systemd
//! as PID 1; the tests use a `Runner` double with systemctl's real messages.

use std::sync::Arc;
use std::time::Duration;

use super::{Context, Resource, StepError, StepResult};
use crate::config;
use crate::exec::{self, BoxFuture, ExecError, Runner};

pub struct Unit {
    unit: String,
    runner: Arc<dyn Runner>,
    start_timeout: Duration,
    stop_timeout: Duration,
    /// Upper bound for `is-active`, which answers at once unless systemd is stuck.
    probe_timeout: Duration,
}

impl Unit {
    pub fn new(r: &config::Resource, ctx: &Context) -> StepResult<Unit> {
        let config::ResourceKind::Systemd { unit } = &r.kind else {
            return Err(StepError::Failed(format!(
                "resource {} is of kind {}, not systemd",
                r.name,
                r.kind.name()
            )));
        };
        Ok(Unit {
            unit: unit.clone(),
            runner: ctx.runner.clone(),
            start_timeout: Duration::from_millis(r.start_timeout_ms),
            stop_timeout: Duration::from_millis(r.stop_timeout_ms),
            probe_timeout: Duration::from_secs(5),
        })
    }
}

/// Where to look when systemctl failed, appended to every error.
fn look(unit: &str) -> String {
    format!("see `systemctl status {unit}` and `journalctl -u {unit}`")
}

/// `systemctl start UNIT`, waiting for the start job (so for `Type=notify` units, until ready).
pub async fn start_unit(runner: &dyn Runner, unit: &str, timeout: Duration) -> StepResult {
    let argv = exec::argv(&["systemctl", "start", unit]);
    exec::run_with(runner, &argv, timeout)
        .await
        .map_err(|e| StepError::Failed(format!("cannot start {unit}: {e}; {}", look(unit))))?;
    tracing::info!(unit, "systemd unit started");
    Ok(())
}

/// `systemctl stop UNIT`, waiting for the stop job.
pub async fn stop_unit(runner: &dyn Runner, unit: &str, timeout: Duration) -> StepResult {
    let argv = exec::argv(&["systemctl", "stop", unit]);
    exec::run_with(runner, &argv, timeout)
        .await
        .map_err(|e| StepError::Failed(format!("cannot stop {unit}: {e}; {}", look(unit))))?;
    tracing::info!(unit, "systemd unit stopped");
    Ok(())
}

/// `systemctl is-active --quiet UNIT`: exit 0 is active, 3 is not (inactive, failed,
/// activating, unknown unit). Anything else means systemd could not be asked (no bus, not
/// booted with systemd): an error, because "not running" would be a guess.
pub async fn is_active(runner: &dyn Runner, unit: &str, timeout: Duration) -> StepResult<bool> {
    let argv = exec::argv(&["systemctl", "is-active", "--quiet", unit]);
    let o = runner.output(&argv, timeout).await.map_err(|e| {
        let hint = match e {
            ExecError::Timeout { .. } => "; systemd may be stuck",
            _ => "",
        };
        StepError::Failed(format!(
            "cannot ask systemd whether {unit} is active: {e}{hint}"
        ))
    })?;
    match o.code {
        Some(0) => Ok(true),
        Some(3) => Ok(false),
        _ => Err(StepError::Failed(format!(
            "cannot ask systemd whether {unit} is active: {}",
            exec::failed(&argv, o)
        ))),
    }
}

impl Resource for Unit {
    fn acquire(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(start_unit(
            self.runner.as_ref(),
            &self.unit,
            self.start_timeout,
        ))
    }

    fn release(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(stop_unit(
            self.runner.as_ref(),
            &self.unit,
            self.stop_timeout,
        ))
    }

    fn probe(&self) -> BoxFuture<'_, StepResult<bool>> {
        Box::pin(is_active(
            self.runner.as_ref(),
            &self.unit,
            self.probe_timeout,
        ))
    }
}
