//! Executors for the core's `Acquire` / `Release` actions, one module per resource kind.
//!
//! Owns: how to put a resource in place, take it away, and tell whether it is in place. Each
//! operation is idempotent (acquiring what is already there succeeds), logs every external
//! action, and reports failures with the cause and the fix. Must not decide anything: whether to
//! acquire, retry the whole takeover or hand over is the core's call. Timeouts for a whole step
//! belong to the core (the shell drops the future, which kills any command it runs).

use std::sync::Arc;

use crate::config;
use crate::core::DiskState;
use crate::exec::{BoxFuture, ExecError, Runner};

pub mod command;
pub mod drbd;
pub mod filesystem;
pub mod mysql;
pub mod systemd;
pub mod vip;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The resource said no for a reason that retrying now will not fix (e.g. a DRBD disk that
    /// is not UpToDate, or a peer DRBD still Primary after the retry window).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// What executors share: how commands are run (a recorded double in tests).
#[derive(Clone)]
pub struct Context {
    pub runner: Arc<dyn Runner>,
}

impl Context {
    pub fn system() -> Context {
        Context {
            runner: Arc::new(crate::exec::SystemRunner),
        }
    }
}

pub type StepResult<T = ()> = Result<T, StepError>;

/// One read of the replicated disk: the local state the promote gate needs, and how
/// replication looks, in the resource's own words (for status and alerts: a cut replication
/// link leaves the local disk UpToDate, so the disk state alone looks healthy).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiskReport {
    pub disk: DiskState,
    /// The resource the line is about (`r0`).
    pub resource: String,
    /// `Connected`, `Connecting`, `StandAlone`, `NetworkFailure`...; None when not reported.
    pub connection: Option<String>,
    pub peer_disk: DiskState,
    /// `Established`, `SyncSource`, `SyncTarget`, `Off`...; None when not reported.
    pub replication: Option<String>,
}

impl DiskReport {
    /// Whether writes reach the peer's disk now (protocol C: acknowledged on both).
    pub fn replicating(&self) -> bool {
        self.connection.as_deref() == Some("Connected")
    }
}

/// One `[[resource]]`, ready to run.
pub trait Resource: Send + Sync {
    fn acquire(&self) -> BoxFuture<'_, StepResult>;
    fn release(&self) -> BoxFuture<'_, StepResult>;
    /// Whether the resource is in place (and, for monitored kinds, healthy).
    fn probe(&self) -> BoxFuture<'_, StepResult<bool>>;
    /// Announces the service address again (VIPs only).
    fn announce(&self) -> Option<BoxFuture<'_, StepResult>> {
        None
    }
    /// The local replicated disk's state and its replication (DRBD only).
    fn disk_state(&self) -> Option<BoxFuture<'_, StepResult<DiskReport>>> {
        None
    }
    /// Marks the local replicated disk Outdated at the peer's request (DRBD only).
    fn outdate(&self) -> Option<BoxFuture<'_, StepResult>> {
        None
    }
}

/// Builds the executor for one configured resource.
pub fn build(r: &config::Resource, ctx: &Context) -> StepResult<Box<dyn Resource>> {
    use config::ResourceKind as K;
    Ok(match &r.kind {
        K::Drbd { .. } => Box::new(drbd::Drbd::new(r, ctx)?),
        K::Filesystem { .. } => Box::new(filesystem::Filesystem::new(r, ctx)?),
        K::Mysql(_) => Box::new(mysql::Mysql::new(r, ctx)?),
        K::Vip { .. } => Box::new(vip::Vip::new(r, ctx)?),
        K::Exec { .. } => Box::new(command::Command::new(r, ctx)?),
        K::Systemd { .. } => Box::new(systemd::Unit::new(r, ctx)?),
    })
}
