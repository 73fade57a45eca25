//! Day-two surfaces for machines: Prometheus `/metrics`, the `/health` check for HAProxy's
//! `option httpchk`, and HAProxy's agent-check line protocol.
//!
//! Owns: the TCP listeners, their limits, and turning a status snapshot into answers. Must not
//! decide or block anything: every answer is built from the same `DaemonStatus` that
//! `twinbeat status` gets, asked for over the driver's control channel (the loop answers it
//! between heartbeats, as it does for the CLI), and every connection runs in its own task
//! under a connection cap and time limits, so a slow or hostile client costs a task, never the
//! loop's time.
//!
//! A listener that cannot bind (the management address is not up yet, the port is taken) is
//! logged and retried every few seconds: failover must not stop because a scrape port is busy.

mod agent;
pub mod health;
mod http;
pub mod recorder;
pub mod render;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::control::{DaemonStatus, Incoming, Request, Response};
pub use http::{parse as http_parse, Parsed};
pub use recorder::Recorder;

/// How long a client has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Largest HTTP request head read; anything longer is answered 431 and closed.
pub const MAX_REQUEST: usize = 8 * 1024;
const BIND_RETRY: Duration = Duration::from_secs(5);
/// The driver answers between two heartbeats; longer means it is busy or stuck, and a check
/// that waits longer than HAProxy's own timeout is useless anyway.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks the driver loop for a status snapshot.
#[derive(Clone)]
pub struct Snapshots {
    to_driver: mpsc::UnboundedSender<Incoming>,
}

impl Snapshots {
    pub fn new(to_driver: mpsc::UnboundedSender<Incoming>) -> Snapshots {
        Snapshots { to_driver }
    }

    pub async fn get(&self) -> Option<DaemonStatus> {
        let (reply, rx) = oneshot::channel();
        self.to_driver
            .send(Incoming {
                request: Request::Status,
                reply,
            })
            .ok()?;
        match tokio::time::timeout(SNAPSHOT_TIMEOUT, rx).await {
            Ok(Ok(Response::Status(s))) => Some(*s),
            _ => None,
        }
    }
}

/// Everything a connection handler needs.
#[derive(Clone)]
pub struct Shared {
    pub snapshots: Snapshots,
    pub recorder: Recorder,
    pub slots: Arc<Semaphore>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http,
    Agent,
}

/// Starts this node's listeners (those configured for it) on the current runtime.
pub fn start(cfg: &crate::config::Observe, node: &str, snapshots: Snapshots, recorder: Recorder) {
    let shared = Shared {
        snapshots,
        recorder,
        slots: Arc::new(Semaphore::new(cfg.max_connections as usize)),
    };
    if let Some(a) = cfg.listen.get(node) {
        tokio::spawn(listen(*a, Protocol::Http, shared.clone()));
    }
    if let Some(a) = cfg.agent_listen.get(node) {
        tokio::spawn(listen(*a, Protocol::Agent, shared));
    }
}

async fn bind(addr: SocketAddr, what: &str) -> TcpListener {
    let mut logged = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(%addr, "{what} listening");
                return l;
            }
            Err(e) => {
                if !logged {
                    tracing::error!(%addr, error = %e, "cannot listen for {what}; retrying every {} s (check `[metrics]` and that the address is configured on this node)", BIND_RETRY.as_secs());
                    logged = true;
                }
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

async fn listen(addr: SocketAddr, proto: Protocol, shared: Shared) {
    let what = match proto {
        Protocol::Http => "metrics and health (HTTP)",
        Protocol::Agent => "HAProxy agent-check",
    };
    let listener = bind(addr, what).await;
    serve(listener, proto, shared).await;
}

async fn serve(listener: TcpListener, proto: Protocol, shared: Shared) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a full fd table.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over the cap the connection is closed at once: queueing it would hold a socket and
        // memory per client, and a check that gets no answer fails as it should.
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection cap reached; closing");
            drop(stream);
            continue;
        };
        let s = shared.clone();
        tokio::spawn(handle(stream, proto, s, permit));
    }
}

async fn handle(stream: TcpStream, proto: Protocol, shared: Shared, _permit: OwnedSemaphorePermit) {
    let r = match proto {
        Protocol::Http => http::handle(stream, &shared).await,
        Protocol::Agent => agent::handle(stream, &shared).await,
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "observe client");
    }
}

/// Test hook: serves on an already-bound listener (port 0 in tests).
pub async fn serve_http(listener: TcpListener, shared: Shared) {
    serve(listener, Protocol::Http, shared).await
}

/// Test hook: serves agent-check on an already-bound listener.
pub async fn serve_agent(listener: TcpListener, shared: Shared) {
    serve(listener, Protocol::Agent, shared).await
}
