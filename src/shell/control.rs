//! The operator's control socket: a unix stream socket, mode 0600 (root only), one JSON request
//! line in, one JSON response line out. `twinbeat status|standby|takeover|maintenance` and
//! `twinbeat fence-peer` (DRBD's handler) are its clients (`cli/`).
//!
//! Owns: the request/response types and the listener. Reads are bounded in size and time, so a
//! stuck or hostile client cannot hold the daemon.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::core::{CommandOutcome, Millis, OutdateOutcome, Status};
use crate::proto::Counters;

use super::history::Entry;

/// Large enough for a drill's history entry; still bounded.
const MAX_REQUEST: u64 = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Request {
    Status,
    Standby,
    Takeover,
    Maintenance {
        on: bool,
    },
    /// `twinbeat drill` hands its result to the daemon, the history file's only writer.
    RecordDrill {
        entry: Box<Entry>,
    },
    /// `twinbeat fence-peer` (DRBD's fence-peer handler): ask the peer's daemon to outdate its
    /// disk of the DRBD resource `resource`, which must be this config's drbd resource.
    FencePeer {
        resource: String,
        #[serde(default)]
        timeout_ms: Option<Millis>,
    },
}

/// Heartbeat figures the shell measures (the core sees only what it needs to decide).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatStats {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Datagrams from an address that is not the peer's on that link.
    pub foreign_source: u64,
    pub counters: Counters,
    /// Gaps between fresh heartbeats: within 1.5 keepalives / up to warntime / up to deadtime /
    /// beyond deadtime. A growing tail means a busy host or a lossy link.
    pub gap_buckets: [u64; 4],
    pub max_gap_ms: u64,
    /// Longest time the driver loop was late for its own timer (scheduling delay on this host).
    pub max_loop_lag_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub node: String,
    pub peer: String,
    pub cluster: String,
    pub config: PathBuf,
    pub generation: u64,
    pub uptime_ms: u64,
    pub core: Status,
    pub heartbeat: HeartbeatStats,
    /// The newest failover history entries, oldest first (`twinbeat history` shows them all).
    #[serde(default)]
    pub history: Vec<Entry>,
    /// The replicated disk's replication as last read (None without DRBD, or not read yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::resources::DiskReport>,
    /// The witness lease client's view (None without a witness).
    #[serde(default)]
    pub witness: Option<super::witness_client::WitnessStatus>,
    /// Where this node serves `/metrics` + `/health`, and agent-check (from `[metrics]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_listen: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reply")]
pub enum Response {
    Status(Box<DaemonStatus>),
    Outcome(CommandOutcome),
    /// The answer to `FencePeer`.
    Outdate(OutdateOutcome),
    Error {
        message: String,
    },
}

/// A request on its way to the driver loop, with where to send the answer.
pub struct Incoming {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another twinbeat is already listening on {0}; stop it first (only one daemon per node)"
    )]
    InUse(PathBuf),
    #[error("cannot create the control socket {path}: {source}; check `control-socket` and that its directory is writable")]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds the control socket, replacing a stale one left by a crashed daemon.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// Accepts clients forever, forwarding each request to the driver.
pub async fn serve(listener: UnixListener, to_driver: mpsc::UnboundedSender<Incoming>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = to_driver.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, tx).await {
                tracing::debug!(error = %e, "control client");
            }
        });
    }
}

async fn handle(stream: UnixStream, to_driver: mpsc::UnboundedSender<Incoming>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(MAX_REQUEST));
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => Response::Error {
            message: "no request within 5 s".into(),
        },
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
            Ok(request) => {
                let (reply, rx) = oneshot::channel();
                if to_driver.send(Incoming { request, reply }).is_err() {
                    Response::Error {
                        message: "the daemon is shutting down".into(),
                    }
                } else {
                    rx.await.unwrap_or(Response::Error {
                        message: "the daemon dropped the request (shutting down?)".into(),
                    })
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

/// Client side: sends one request and waits (bounded) for the answer.
pub async fn request(path: &Path, req: Request, timeout: Duration) -> Result<Response, String> {
    let work = async {
        let mut s = UnixStream::connect(path).await.map_err(|e| {
            format!(
                "cannot reach the daemon at {}: {e}; is `twinbeat run` running on this node (and are you root)?",
                path.display()
            )
        })?;
        let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        line.push(b'\n');
        s.write_all(&line).await.map_err(|e| e.to_string())?;
        let mut reply = String::new();
        BufReader::new(s.take(16 * 1024 * 1024))
            .read_line(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str::<Response>(reply.trim())
            .map_err(|e| format!("bad answer from the daemon: {e}"))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer from the daemon within {} s", timeout.as_secs()))?
}
