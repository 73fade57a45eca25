//! DRBD-level fencing between the daemons (the role Heartbeat's dopd played).
//!
//! The asking side: DRBD's `fence-peer` handler (`twinbeat fence-peer`) arrives as
//! `Input::OutdatePeer`. The request rides in every heartbeat until the peer answers, the peer
//! goes silent on every link (then the `[fencing]` command, if configured, decides between
//! "fenced" and "unreachable"), or the deadline passes. Only an answer carrying the request's
//! id counts.
//!
//! The answering side: a node that may hold the service never outdates itself (`Refused`); a
//! node that is Inconsistent has nothing to outdate; otherwise the shell runs `drbdadm outdate`
//! and the result is repeated in heartbeats while the peer keeps asking. While that runs, and
//! afterwards through the disk gate, this node cannot take over: its data is about to be, or
//! is, older than the peer's.

use super::*;
use crate::core::outdate::{OutdateOutcome, OutdateVerdict};
use crate::core::types::{OutdateKind, OutdateMsg};

/// Answers remembered per id, so a request repeated after its answer stopped being sent gets
/// the same answer instead of a second `drbdadm outdate`.
const ANSWERS_KEPT: usize = 8;

#[derive(Clone, Debug)]
struct Asking {
    id: u32,
    /// Every `Input::OutdatePeer` waiting for this request (DRBD may call the handler again).
    waiters: Vec<u64>,
    deadline: Millis,
}

#[derive(Clone, Debug)]
enum Serving {
    Running {
        id: u32,
        op: OpId,
        deadline: Millis,
    },
    Answer {
        id: u32,
        kind: OutdateKind,
        until: Millis,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Outdate {
    next_id: u32,
    asking: Option<Asking>,
    serving: Option<Serving>,
    answered: VecDeque<(u32, OutdateKind)>,
    /// The `[fencing]` command succeeded and the peer has been silent since.
    pub(super) peer_fenced: bool,
    /// The open request waits because this node may be the isolated one (said once).
    doubt_reported: bool,
    /// The peer's request this node holds back while it fences that peer (said once).
    deferred: Option<u32>,
    /// The boot generation of the peer this node's `[fencing]` command switched off: its
    /// requests are moot (they were in flight), and answering one would only let a fence that
    /// missed its target tell a Primary to write on.
    pub(super) fenced_generation: Option<u64>,
}

impl Outdate {
    pub(super) fn new(now: Millis) -> Outdate {
        // Ids start from the boot moment, not 1: a restarted daemon must not reuse an id whose
        // answer the peer may still be repeating from before the restart.
        let seed = (now as u32).wrapping_mul(2_654_435_761) | 1;
        Outdate {
            next_id: seed,
            asking: None,
            serving: None,
            answered: VecDeque::new(),
            peer_fenced: false,
            doubt_reported: false,
            deferred: None,
            fenced_generation: None,
        }
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// What this node says about outdating in its heartbeats: an answer to the peer first
    /// (it is short-lived), else its own request.
    pub(super) fn message(&self) -> Option<OutdateMsg> {
        if let Some(Serving::Answer { id, kind, .. }) = self.serving {
            return Some(OutdateMsg { id, kind });
        }
        self.asking.as_ref().map(|a| OutdateMsg {
            id: a.id,
            kind: OutdateKind::Request,
        })
    }

    pub(super) fn deadlines(&self) -> impl Iterator<Item = Millis> + '_ {
        let serving = self.serving.as_ref().map(|s| match s {
            Serving::Running { deadline, .. } => *deadline,
            Serving::Answer { until, .. } => *until,
        });
        self.asking
            .as_ref()
            .map(|a| a.deadline)
            .into_iter()
            .chain(serving)
    }

    /// True while `drbdadm outdate` runs here at the peer's request.
    pub(super) fn outdating_locally(&self) -> bool {
        matches!(self.serving, Some(Serving::Running { .. }))
    }

    /// The peer restarted: its old ids mean nothing any more.
    pub(super) fn peer_restarted(&mut self) {
        self.answered.clear();
        if matches!(self.serving, Some(Serving::Answer { .. })) {
            self.serving = None;
        }
    }
}

impl Node {
    pub(super) fn on_outdate_peer(&mut self, now: Millis, id: u64, timeout_ms: Option<Millis>) {
        if !self.p.disk_gate {
            return self.outdate_reply(
                id,
                OutdateVerdict::Failed,
                "this node has no drbd resource configured, so it cannot ask its peer to outdate one"
                    .into(),
            );
        }
        if let Some(a) = &mut self.outdate.asking {
            a.waiters.push(id);
            return;
        }
        let timeout = timeout_ms.unwrap_or_else(|| self.outdate_default_timeout());
        let wire = self.outdate.take_id();
        self.outdate.asking = Some(Asking {
            id: wire,
            waiters: vec![id],
            deadline: now + timeout,
        });
        self.alert(
            Severity::Warn,
            format!(
                "DRBD asks to outdate the disk of peer {} (request {wire}, up to {timeout} ms)",
                self.p.peer_name
            ),
        );
    }

    /// How long a request waits for the peer by default: the peer's answer needs a heartbeat
    /// each way and its `drbdadm outdate` (bounded like a DRBD release).
    fn outdate_default_timeout(&self) -> Millis {
        self.answer_timeout() + self.outdate_run_timeout()
    }

    fn outdate_run_timeout(&self) -> Millis {
        self.p
            .steps
            .iter()
            .find(|s| s.kind == "drbd")
            .map_or(30_000, |s| s.release_timeout_ms)
    }

    /// An answer sent now lingers this long after the peer last asked, so a lost datagram does
    /// not lose it while a finished exchange stops taking the heartbeat's one outdate slot.
    fn outdate_linger(&self) -> Millis {
        self.p.deadtime_ms.max(3 * self.p.keepalive_ms)
    }

    fn outdate_reply(&mut self, id: u64, verdict: OutdateVerdict, message: String) {
        self.queue.push_back(Action::OutdatePeerDone {
            id,
            outcome: OutdateOutcome { verdict, message },
        });
    }

    fn complete_asking(&mut self, verdict: OutdateVerdict, message: String) {
        let Some(a) = self.outdate.asking.take() else {
            return;
        };
        self.outdate.doubt_reported = false;
        let severity = match verdict {
            OutdateVerdict::PeerOutdated | OutdateVerdict::PeerInconsistent => Severity::Warn,
            _ => Severity::Error,
        };
        self.alert(
            severity,
            format!(
                "outdate request {} to peer {}: {message} (fence-peer exit {})",
                a.id,
                self.p.peer_name,
                verdict.exit_code()
            ),
        );
        for w in a.waiters {
            self.outdate_reply(w, verdict, message.clone());
        }
    }

    /// Re-evaluates the pending request against what is known of the peer now.
    pub(super) fn outdate_step(&mut self, now: Millis) {
        if self.outdate.asking.is_none() {
            return;
        }
        let peer = self.p.peer_name.clone();
        if self.outdate.peer_fenced {
            return self.complete_asking(
                OutdateVerdict::PeerFenced,
                format!("peer {peer} was unreachable and the [fencing] command fenced it"),
            );
        }
        if matches!(self.peer_view(now), PeerView::Alive | PeerView::Late) {
            return;
        }
        let silent = match self.peer.last_rx() {
            Some(t) => format!("silent on every link for {} ms", now.saturating_sub(t)),
            None => "not heard since this node started".to_string(),
        };
        // The request waits (until the gate opens, or the deadline answers "failed"): the
        // isolated side of a partition must neither power the healthy peer off nor tell its
        // DRBD to go on writing alone.
        if let Some(why) = self.isolation_doubt(now) {
            if !self.outdate.doubt_reported {
                self.outdate.doubt_reported = true;
                self.alert(
                    Severity::Warn,
                    format!(
                        "peer {peer} is {silent}, but {why}: this node may be the isolated one; \
                         not fencing the peer nor reporting it gone while that lasts"
                    ),
                );
            }
            return;
        }
        let Some(f) = self.p.fencing.clone() else {
            return self.complete_asking(
                OutdateVerdict::PeerUnreachable,
                format!("peer {peer} is {silent}; it could not be asked"),
            );
        };
        match self.fence {
            Fence::Idle => self.start_fence(now, &f),
            Fence::Running { .. } => {}
            // `Cleared` without `peer_fenced` is a failed fence that is not required.
            Fence::Failed { .. } | Fence::Cleared => self.complete_asking(
                OutdateVerdict::PeerUnreachable,
                format!("peer {peer} is {silent} and the [fencing] command failed"),
            ),
        }
    }

    /// Why this node must not act on the peer's silence (fence it, or answer DRBD that it is
    /// gone), if it must not: a tie-breaker that does not answer now, or no usable witness
    /// lease, means this node may be the isolated one, and the same gates hold a takeover.
    fn isolation_doubt(&self, now: Millis) -> Option<&'static str> {
        if self.p.tiebreaker && self.tiebreaker != Some(true) {
            return Some("the tie-breaker does not answer");
        }
        if self.p.lease.is_some() && !self.lease_usable(now) {
            return Some("this node holds no usable witness lease");
        }
        None
    }

    /// An outdate message in a fresh beat from the peer.
    pub(super) fn on_peer_outdate(&mut self, now: Millis, msg: OutdateMsg) {
        let peer = self.p.peer_name.clone();
        let (verdict, message) = match msg.kind {
            OutdateKind::Request => return self.serve_outdate(now, msg.id),
            _ if self.outdate.asking.as_ref().map(|a| a.id) != Some(msg.id) => return,
            OutdateKind::Done => (
                OutdateVerdict::PeerOutdated,
                format!("peer {peer} outdated its disk (or it was Outdated already)"),
            ),
            OutdateKind::Inconsistent => (
                OutdateVerdict::PeerInconsistent,
                format!("peer {peer}'s disk is Inconsistent or worse; nothing to outdate"),
            ),
            OutdateKind::Refused => (
                OutdateVerdict::PeerPrimary,
                format!("peer {peer} holds the service and refused to outdate itself"),
            ),
            OutdateKind::Failed => (
                OutdateVerdict::Failed,
                format!("peer {peer} could not outdate its disk; its log says why"),
            ),
        };
        self.complete_asking(verdict, message);
    }

    fn serve_outdate(&mut self, now: Millis, id: u32) {
        let linger = self.outdate_linger();
        match &mut self.outdate.serving {
            Some(Serving::Running { id: r, .. }) if *r == id => return,
            Some(Serving::Answer { id: r, until, .. }) if *r == id => {
                *until = now + linger;
                return;
            }
            // One `drbdadm outdate` at a time; the peer repeats its new request until served.
            Some(Serving::Running { .. }) => return,
            _ => {}
        }
        // This node is fencing the peer in order to take over: outdating its own disk now
        // would leave the only copies on a disk it is about to switch off (QEMU campaign seed 2
        // run 4: the active node, cut off for 2.8 s, asked after the cut healed; the standby
        // outdated itself, then powered the asker off, and nobody could run the service).
        // Refusing would be worse: DRBD's exit 6 lets the asker, a Primary, resume writing
        // until it is switched off. No answer keeps its I/O frozen; the request repeats and
        // is served once the fence is over (moot if the asker is off by then).
        let fenced = self.outdate.fenced_generation.is_some()
            && self.outdate.fenced_generation == self.peer.generation;
        if fenced || matches!(self.fence, Fence::Running { .. }) {
            if self.outdate.deferred != Some(id) {
                self.outdate.deferred = Some(id);
                let peer = self.p.peer_name.clone();
                self.alert(
                    Severity::Warn,
                    format!(
                        "peer {peer} asks this node to outdate its disk (request {id}): {}",
                        if fenced {
                            "not answered: this node's fence switched that run of the peer off"
                        } else {
                            "held back while this node fences the peer to take over"
                        }
                    ),
                );
            }
            return;
        }
        if let Some(&(_, kind)) = self.outdate.answered.iter().find(|(i, _)| *i == id) {
            self.outdate.serving = Some(Serving::Answer {
                id,
                kind,
                until: now + linger,
            });
            return;
        }
        let peer = self.p.peer_name.clone();
        let state = self.state();
        let answer = if state.may_hold_service() || self.held != 0 {
            Some((
                OutdateKind::Refused,
                format!("refused: this node is {state} and may hold the service"),
            ))
        } else if matches!(self.phase, Phase::Maintenance | Phase::Stopped) {
            Some((
                OutdateKind::Failed,
                format!("not done: this node is {state} and does not act"),
            ))
        } else if !self.p.disk_gate {
            Some((
                OutdateKind::Failed,
                "not done: this node has no drbd resource configured".to_string(),
            ))
        } else {
            // An Outdated disk is outdated again all the same: this node's idea of its disk
            // may be stale (in the QEMU lab a late request from a cut that had healed
            // ran on a connected disk: exit 0, yet DRBD still said UpToDate), and answering
            // "Outdated already" from it would let the peer write alone on a disk this node
            // could later promote. `drbdadm outdate` of an Outdated disk is a quick no-op.
            match self.disk {
                DiskState::Inconsistent | DiskState::Diskless | DiskState::Failed => Some((
                    OutdateKind::Inconsistent,
                    format!("the local disk is {:?}; nothing to outdate", self.disk),
                )),
                DiskState::NotReplicated => Some((
                    OutdateKind::Failed,
                    "not done: no replicated disk".to_string(),
                )),
                _ => None,
            }
        };
        match answer {
            Some((kind, why)) => {
                self.alert(
                    Severity::Warn,
                    format!("peer {peer} asks this node to outdate its disk (request {id}): {why}"),
                );
                self.answer_outdate(now, id, kind);
            }
            None => {
                let op = self.next_op;
                self.next_op += 1;
                let timeout_ms = self.outdate_run_timeout();
                self.outdate.serving = Some(Serving::Running {
                    id,
                    op,
                    deadline: now + timeout_ms,
                });
                self.alert(
                    Severity::Warn,
                    format!(
                        "peer {peer} asks this node to outdate its disk (request {id}): its DRBD lost the replication link and goes on without this node"
                    ),
                );
                self.queue.push_back(Action::OutdateDisk { op, timeout_ms });
            }
        }
    }

    fn answer_outdate(&mut self, now: Millis, id: u32, kind: OutdateKind) {
        self.outdate.serving = Some(Serving::Answer {
            id,
            kind,
            until: now + self.outdate_linger(),
        });
        self.outdate.answered.push_back((id, kind));
        while self.outdate.answered.len() > ANSWERS_KEPT {
            self.outdate.answered.pop_front();
        }
    }

    pub(super) fn on_outdate_finished(
        &mut self,
        now: Millis,
        op: OpId,
        result: Result<(), String>,
    ) {
        let Some(Serving::Running {
            id, op: running, ..
        }) = self.outdate.serving
        else {
            return;
        };
        if running != op {
            return;
        }
        self.outdate_result(now, id, result);
    }

    fn outdate_result(&mut self, now: Millis, id: u32, result: Result<(), String>) {
        let kind = match result {
            Ok(()) => {
                // The disk watcher reports the change later; until then the promote gate must
                // already know that this disk may not be promoted.
                if self.p.disk_gate {
                    self.disk = DiskState::Outdated;
                }
                OutdateKind::Done
            }
            Err(e) => {
                self.alert(
                    Severity::Error,
                    format!(
                        "outdating the local disk for peer {} failed: {e}",
                        self.p.peer_name
                    ),
                );
                OutdateKind::Failed
            }
        };
        self.answer_outdate(now, id, kind);
    }

    pub(super) fn outdate_expire(&mut self, now: Millis) {
        match self.outdate.serving {
            Some(Serving::Running { id, op, deadline }) if deadline <= now => {
                self.queue.push_back(Action::Cancel { op });
                self.outdate_result(
                    now,
                    id,
                    Err(format!(
                        "drbdadm outdate timed out after {} ms",
                        self.outdate_run_timeout()
                    )),
                );
            }
            Some(Serving::Answer { until, .. }) if until <= now => self.outdate.serving = None,
            _ => {}
        }
        if self
            .outdate
            .asking
            .as_ref()
            .is_some_and(|a| a.deadline <= now)
        {
            let peer = self.p.peer_name.clone();
            // A peer that is heard but does not answer was not "unreachable": exit 5 would let
            // DRBD assume its disk is out of date when nobody outdated it.
            let doubt = (!matches!(self.peer_view(now), PeerView::Alive | PeerView::Late))
                .then(|| self.isolation_doubt(now))
                .flatten();
            let (verdict, message) = if matches!(self.fence, Fence::Running { .. }) {
                (
                    OutdateVerdict::PeerUnreachable,
                    format!("peer {peer} is silent on every link; the [fencing] command did not finish in time"),
                )
            } else if let Some(why) = doubt {
                (
                    OutdateVerdict::Failed,
                    format!(
                        "peer {peer} is silent on every link, but {why}: this node may be the isolated one, so it neither fenced the peer nor reported it gone"
                    ),
                )
            } else {
                (
                    OutdateVerdict::Failed,
                    format!(
                        "peer {peer} is heard but did not answer in time (an older twinbeat, or its disk command hangs)"
                    ),
                )
            };
            self.complete_asking(verdict, message);
        }
    }
}
