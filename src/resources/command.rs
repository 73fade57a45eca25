//! The `exec` resource kind (type `Command`): a resource managed by operator-supplied commands,
//! like a Heartbeat resource script.
//!
//! Owns: running the configured `start` / `stop` argv with the resource's start / stop timeout,
//! and the optional probe argv with its own timeout. Must not touch: what the commands do, nor
//! any retry (a failed start is reported; whether to try again is the core's call).
//!
//! Contract for the commands (as for LSB init scripts): `start` on a running resource and `stop`
//! on a stopped one must succeed, because twinbeat runs them without asking first — that is what
//! makes acquire and release idempotent here. Exit 0 is success; anything else is a failure
//! whose stderr (or stdout) tail lands in the error.
//!
//! Probe: exit 0 means in place and healthy, any other exit (or hanging past its timeout) means
//! not. Without a probe, `probe()` answers `Ok(false)`: twinbeat cannot tell whether the
//! resource is in place, so at start it never adopts it as running; if this node becomes
//! active it runs `start` again (harmless under the contract above), and the resource is not
//! monitored while active.

use std::sync::Arc;
use std::time::Duration;

use super::{Context, Resource, StepError, StepResult};
use crate::config;
use crate::exec::{self, BoxFuture, ExecError, Runner};

pub struct Command {
    name: String,
    start: Vec<String>,
    stop: Vec<String>,
    probe: Option<(Vec<String>, Duration)>,
    runner: Arc<dyn Runner>,
    start_timeout: Duration,
    stop_timeout: Duration,
}

impl Command {
    pub fn new(r: &config::Resource, ctx: &Context) -> StepResult<Command> {
        let config::ResourceKind::Exec { start, stop, probe } = &r.kind else {
            return Err(StepError::Failed(format!(
                "resource {} is of kind {}, not exec",
                r.name,
                r.kind.name()
            )));
        };
        Ok(Command {
            name: r.name.clone(),
            start: start.clone(),
            stop: stop.clone(),
            probe: probe
                .as_ref()
                .map(|p| (p.argv.clone(), Duration::from_millis(p.timeout_ms))),
            runner: ctx.runner.clone(),
            start_timeout: Duration::from_millis(r.start_timeout_ms),
            stop_timeout: Duration::from_millis(r.stop_timeout_ms),
        })
    }

    async fn step(&self, what: &str, argv: &[String], timeout: Duration) -> StepResult {
        exec::run_with(self.runner.as_ref(), argv, timeout)
            .await
            .map_err(|e| {
                StepError::Failed(format!(
                    "cannot {what} resource {}: {e}; run the command by hand to see why",
                    self.name
                ))
            })?;
        tracing::info!(resource = %self.name, what, "exec resource command succeeded");
        Ok(())
    }

    async fn check(&self) -> StepResult<bool> {
        let Some((argv, timeout)) = &self.probe else {
            return Ok(false);
        };
        match self.runner.output(argv, *timeout).await {
            Ok(o) if o.success() => Ok(true),
            Ok(o) => {
                tracing::info!(resource = %self.name, code = ?o.code, "exec resource probe says not in place");
                Ok(false)
            }
            // A probe that hangs is how a hung service shows: not healthy.
            Err(ExecError::Timeout { timeout_ms, .. }) => {
                tracing::warn!(resource = %self.name, timeout_ms = timeout_ms as u64, "exec resource probe timed out; counting it as not in place");
                Ok(false)
            }
            // A probe that cannot run says nothing about the resource: that is a config problem.
            Err(e) => Err(StepError::Failed(format!(
                "cannot probe resource {}: {e}",
                self.name
            ))),
        }
    }
}

impl Resource for Command {
    fn acquire(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(self.step("start", &self.start, self.start_timeout))
    }

    fn release(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(self.step("stop", &self.stop, self.stop_timeout))
    }

    fn probe(&self) -> BoxFuture<'_, StepResult<bool>> {
        Box::pin(self.check())
    }
}
