//! The witness's UDP loop: authenticated requests in, the table's answer out, to the address the
//! request came from.
//!
//! Owns: the socket, the witness's clock (CLOCK_MONOTONIC from process start: a restart starts a
//! new clock and, with it, the table's quiet period) and logging. Takes an already-bound socket
//! and a shutdown future, so tests can run it on port 0.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;

use super::config::WitnessConfig;
use super::table::{Answer, Table};
use crate::proto::lease::{self, Kind, LeaseCounters, Msg, WitnessInbox, WITNESS_ID};

/// Runs until `shutdown` completes. Returns the counters, for the exit log and tests.
pub async fn serve(
    cfg: &WitnessConfig,
    sock: UdpSocket,
    shutdown: impl Future<Output = ()>,
) -> LeaseCounters {
    let start = Instant::now();
    let now = || start.elapsed().as_millis() as u64;
    let mut table = Table::new(now(), cfg.lease_ms);
    let mut inbox = WitnessInbox::new(cfg.keyring.clone(), cfg.cluster_id, &cfg.nodes);
    // No persistent state: wall-clock milliseconds at start keep generations increasing across
    // restarts well enough for the nodes' logs; the nodes match replies by their own request
    // (generation, seq), never by this.
    let generation = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut seq = 0u64;
    let mut last_holder: Option<u16> = None;
    let mut last_reject_log: Option<Instant> = None;
    let mut suppressed = 0u64;
    let mut buf = [0u8; 512];
    tracing::info!(
        listen = %cfg.listen,
        lease_ms = cfg.lease_ms,
        nodes = ?cfg.nodes,
        "witness started: granting nothing for one lease ({} ms), since an earlier run may have granted one",
        cfg.lease_ms
    );
    tokio::pin!(shutdown);
    let mut usr1 =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    loop {
        let usr1_recv = async {
            match usr1.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = usr1_recv => {
                let t = now();
                tracing::info!(
                    holder = ?table.holder(t),
                    quiet_ms = table.quiet_ms(t),
                    grants = table.grants,
                    denials = table.denials,
                    changes = table.changes,
                    counters = %serde_json::to_string(&inbox.counters).unwrap_or_default(),
                    "witness status (SIGUSR1)"
                );
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((len, from)) = r else { continue };
                let m = match inbox.accept(&buf[..len]) {
                    Ok(m) => m,
                    Err(e) => {
                        if last_reject_log.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                            suppressed += 1;
                        } else {
                            tracing::warn!(
                                %from,
                                suppressed,
                                rejected_total = inbox.counters.rejected(),
                                "rejected lease datagram: {e}"
                            );
                            suppressed = 0;
                            last_reject_log = Some(Instant::now());
                        }
                        continue;
                    }
                };
                let t = now();
                let answer = match m.kind {
                    Kind::Request => table.request(t, m.sender),
                    Kind::Release => table.release(t, m.sender),
                    _ => table.query(t),
                };
                let holder = table.holder(t).map(|h| h.0);
                if holder != last_holder {
                    tracing::info!(holder = ?holder, previous = ?last_holder, %from, "lease holder changed");
                    last_holder = holder;
                }
                let (kind, ms, holder) = match answer {
                    Answer::Granted { lease_ms } => (Kind::Granted, lease_ms, m.sender),
                    Answer::Denied { holder, remaining_ms } => (Kind::Denied, remaining_ms, holder.unwrap_or(0)),
                    Answer::Status { holder, remaining_ms } => (Kind::Status, remaining_ms, holder.unwrap_or(0)),
                };
                seq += 1;
                let reply = Msg {
                    key_id: cfg.send_key,
                    kind,
                    cluster_id: cfg.cluster_id,
                    sender: WITNESS_ID,
                    generation,
                    seq,
                    subject: m.sender,
                    echo_generation: m.generation,
                    echo_seq: m.seq,
                    ms: u32::try_from(ms).unwrap_or(u32::MAX),
                    holder,
                };
                if let Some(b) = lease::encode(&reply, &cfg.keyring) {
                    if let Err(e) = sock.send_to(&b, from).await {
                        tracing::warn!(%from, error = %e, "cannot answer a lease datagram");
                    }
                }
            }
        }
    }
    tracing::info!(
        counters = %serde_json::to_string(&inbox.counters).unwrap_or_default(),
        "witness stopped"
    );
    inbox.counters.clone()
}
