//! The node's side of the witness lease: a task that asks `twinbeat witness` for the lease while
//! the core wants it, and reports grants to the driver loop.
//!
//! Owns: the UDP socket to the witness, the request timing (every lease/3 while wanted, a query
//! every second otherwise, so a standby's status shows whether the witness is reachable), the
//! record of when each request was sent, and the witness part of `twinbeat status`. Must not
//! decide: the grant goes to the core as `Input::LeaseGranted` with the *local* send time of the
//! request it answers, and the core alone says what the lease allows (`core/node/lease.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::core::Millis;
use crate::proto::lease::{self, Kind, LeaseCounters, Msg, ReplyMatcher};
use crate::proto::Keyring;

/// What the task tells the driver loop.
#[derive(Debug)]
pub struct Grant {
    pub sent_at: Millis,
    pub lease_ms: Millis,
}

/// The witness as this node sees it, for `twinbeat status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WitnessStatus {
    pub address: String,
    /// This node's id, to tell "held here" from "held by the peer".
    pub node_id: u16,
    /// A reply arrived within the last three request intervals.
    pub reachable: bool,
    pub last_reply_ms_ago: Option<u64>,
    /// Node id of the holder as the witness last said (0: nobody), and its time left then.
    pub holder: Option<u16>,
    pub holder_remaining_ms: Option<u64>,
    pub wanted: bool,
    pub sent: u64,
    pub send_errors: u64,
    /// Datagrams from another address than the witness's.
    pub foreign_source: u64,
    pub counters: LeaseCounters,
}

pub struct Setup {
    pub witness: SocketAddr,
    pub keyring: Keyring,
    pub key_id: u8,
    pub cluster_id: u32,
    pub node_id: u16,
    pub generation: u64,
    pub lease_ms: Millis,
    /// The clock the core runs on.
    pub base: Instant,
}

pub struct Client {
    pub grants: mpsc::UnboundedReceiver<Grant>,
    pub wants: watch::Sender<bool>,
    pub status: StatusHandle,
}

/// Reads the task's view of the witness, apart from the receiver so both can be borrowed.
#[derive(Clone)]
pub struct StatusHandle {
    status: Arc<Mutex<(WitnessStatus, Option<Instant>)>>,
    interval_wanted: Duration,
}

impl StatusHandle {
    pub fn status(&self) -> WitnessStatus {
        let Ok(g) = self.status.lock() else {
            return WitnessStatus::default();
        };
        let (mut st, last) = g.clone();
        st.last_reply_ms_ago = last.map(|t| t.elapsed().as_millis() as u64);
        let window = 3 * self.interval_wanted.max(Duration::from_secs(1));
        st.reachable = last.is_some_and(|t| t.elapsed() < window);
        st
    }
}

/// Binds the socket and spawns the task on the current runtime.
pub async fn start(s: Setup) -> std::io::Result<Client> {
    let bind: SocketAddr = if s.witness.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).await?;
    let (grants_tx, grants) = mpsc::unbounded_channel();
    let (wants, wants_rx) = watch::channel(false);
    let status = Arc::new(Mutex::new((
        WitnessStatus {
            address: s.witness.to_string(),
            node_id: s.node_id,
            ..WitnessStatus::default()
        },
        None,
    )));
    let interval_wanted = Duration::from_millis((s.lease_ms / 3).max(50));
    tokio::spawn(run(sock, s, wants_rx, grants_tx, status.clone()));
    Ok(Client {
        grants,
        wants,
        status: StatusHandle {
            status,
            interval_wanted,
        },
    })
}

async fn run(
    sock: UdpSocket,
    s: Setup,
    mut wants: watch::Receiver<bool>,
    grants: mpsc::UnboundedSender<Grant>,
    status: Arc<Mutex<(WitnessStatus, Option<Instant>)>>,
) {
    let mut matcher = ReplyMatcher::new(s.keyring.clone(), s.cluster_id, s.node_id, s.generation);
    let mut seq = 0u64;
    let idle = Duration::from_secs(1);
    let wanted_every = Duration::from_millis((s.lease_ms / 3).max(50));
    let mut next = Instant::now();
    let mut buf = [0u8; 512];
    let mut last_log: Option<Instant> = None;
    let mut warned_short = false;
    let now_ms = |base: Instant| base.elapsed().as_millis() as Millis;
    let update = |f: &mut dyn FnMut(&mut WitnessStatus, &mut Option<Instant>)| {
        if let Ok(mut g) = status.lock() {
            let (st, last) = &mut *g;
            f(st, last);
        }
    };
    let send = |kind: Kind, matcher: &mut ReplyMatcher, seq: &mut u64| {
        *seq += 1;
        let m = Msg {
            key_id: s.key_id,
            kind,
            cluster_id: s.cluster_id,
            sender: s.node_id,
            generation: s.generation,
            seq: *seq,
            subject: s.node_id,
            echo_generation: 0,
            echo_seq: 0,
            ms: 0,
            holder: 0,
        };
        // Recorded before sending: the send time is what a grant is measured from, and an
        // earlier record is only more conservative.
        matcher.sent(*seq, kind, now_ms(s.base));
        let ok = lease::encode(&m, &s.keyring)
            .map(|b| sock.try_send_to(&b, s.witness).is_ok())
            .unwrap_or(false);
        update(&mut |st, _| {
            st.sent += 1;
            st.send_errors += u64::from(!ok);
        });
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let wanted = *wants.borrow();
                send(if wanted { Kind::Request } else { Kind::Query }, &mut matcher, &mut seq);
                next = Instant::now() + if wanted { wanted_every } else { idle };
            }
            changed = wants.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted = *wants.borrow_and_update();
                update(&mut |st, _| st.wanted = wanted);
                if wanted {
                    send(Kind::Request, &mut matcher, &mut seq);
                    next = Instant::now() + wanted_every;
                } else {
                    // The core has already forgotten the lease; free it for the peer now rather
                    // than after it runs out.
                    send(Kind::Release, &mut matcher, &mut seq);
                    next = Instant::now() + idle;
                }
            }
            r = sock.recv_from(&mut buf) => {
                let Ok((len, from)) = r else { continue };
                if from != s.witness {
                    update(&mut |st, _| st.foreign_source += 1);
                    continue;
                }
                match matcher.accept(&buf[..len]) {
                    Ok(m) => {
                        let counters = matcher.counters.clone();
                        update(&mut |st, last| {
                            *last = Some(Instant::now());
                            st.holder = Some(m.msg.holder);
                            st.holder_remaining_ms = Some(u64::from(m.msg.ms));
                            st.counters = counters.clone();
                        });
                        if m.msg.kind == Kind::Granted {
                            // The core trusts the shorter of the two; renewals every lease/3 of
                            // the longer one could then let a healthy lease run out.
                            if u64::from(m.msg.ms) < s.lease_ms && !warned_short {
                                warned_short = true;
                                tracing::warn!(
                                    witness = %s.witness,
                                    granted_ms = m.msg.ms,
                                    configured_ms = s.lease_ms,
                                    "the witness grants a shorter lease than [tiebreaker] lease-ms; set the same lease-ms on the witness and both nodes"
                                );
                            }
                            if *wants.borrow() {
                                let _ = grants.send(Grant {
                                    sent_at: m.sent_at,
                                    lease_ms: u64::from(m.msg.ms),
                                });
                            } else {
                                // A grant overtaken by the release (reordered): release again.
                                send(Kind::Release, &mut matcher, &mut seq);
                            }
                        }
                    }
                    Err(e) => {
                        let counters = matcher.counters.clone();
                        update(&mut |st, _| st.counters = counters.clone());
                        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            last_log = Some(Instant::now());
                            tracing::warn!(witness = %s.witness, "rejected witness datagram: {e}");
                        }
                    }
                }
            }
        }
    }
}
