//! `Node`: one side of the pair, as a deterministic state machine.
//!
//! Inputs arrive through `handle(now, input)` and `handle_timeout(now)`; outputs leave through
//! `poll_action()`; `poll_timeout()` says when to call `handle_timeout` next. Every decision is
//! re-evaluated after every call (`decide`), from the current facts, so the order in which facts
//! arrive cannot leave a stale decision behind.

use std::collections::VecDeque;

use super::handoff::{Handoff, Refusal, Role, Stage};
use super::io::{Action, Command, CommandOutcome, Input, OpId, Severity};
use super::liveness::{PeerTracker, PeerView};
use super::params::CoreParams;
use super::plan::{all_steps, Plan, StepDirection, StepOp};
use super::status::{LeaseStatus, LinkStatus, PeerStatus, ResourceStatus, Status, Transition};
use super::types::{
    Beat, DiskState, Echo, HandoffKind, HandoffMsg, Millis, NodeState, RefuseReason,
};

const TRANSITIONS_KEPT: usize = 32;
const HANDOFF_IDS_KEPT: usize = 8;

/// How long a running plan is meant to end up.
#[derive(Clone, Debug)]
enum Goal {
    /// Takeover, restart, or the receiving side of a handoff.
    Active {
        cause: String,
        command: Option<u64>,
        /// What the alert calls a failure: "takeover", "restart of mysql".
        what: String,
    },
    Standby {
        cause: String,
    },
    /// Hand the service over after a resource kept failing.
    Failed {
        reason: String,
    },
    Shutdown {
        command: u64,
    },
}

#[derive(Clone, Debug)]
enum Phase {
    Init,
    Standby,
    Active,
    Failed(String),
    Maintenance,
    /// Shut down: nothing held, never acts again.
    Stopped,
    Running {
        plan: Plan,
        goal: Goal,
    },
}

#[derive(Clone, Debug, Default)]
enum Fence {
    #[default]
    Idle,
    Running {
        op: OpId,
        deadline: Millis,
    },
    /// The peer was fenced (or fencing failed and is not required) during this silence.
    Cleared,
    Failed {
        retry_at: Millis,
    },
}

/// Outcome of asking "should this standby node start the service now?".
enum Verdict {
    /// Nothing to do: the peer runs the service, or will.
    Stay,
    /// The service is not running anywhere, yet something forbids taking it.
    Blocked(Vec<String>),
    Go {
        cause: String,
        fence: bool,
    },
}

pub struct Node {
    p: CoreParams,
    /// This daemon's boot generation (the shell's, persisted and incremented on every start):
    /// an echo names it, so an echo of a previous run's beat is never taken for this run's.
    generation: u64,
    n_steps: usize,
    boot_at: Millis,
    now: Millis,
    last_call: Option<Millis>,
    phase: Phase,
    since: Millis,
    cause: String,
    term: u64,
    held: u32,
    disk: DiskState,
    tiebreaker: Option<bool>,
    /// Failed tie-breaker rounds since the last success.
    tiebreaker_fails: u32,
    lease: lease::LeaseState,
    peer: PeerTracker,
    peer_was_late: bool,
    peer_was_dead: bool,
    next_send: Millis,
    last_sent: Option<Beat>,
    stall_grace_until: Millis,
    handoff: Option<Handoff>,
    refusal: Option<Refusal>,
    handoff_ids_done: VecDeque<u32>,
    next_handoff: u32,
    next_failback_try: Millis,
    restarts: VecDeque<Millis>,
    fence: Fence,
    maintenance_exit: Option<Option<u64>>,
    split_announced: bool,
    next_op: OpId,
    queue: VecDeque<Action>,
    transitions: VecDeque<Transition>,
    takeovers: u64,
    restarts_total: u64,
    split_brains: u64,
    outdate: outdate::Outdate,
}

impl Node {
    /// `held_at_start` is the shell's probe of the resources before the daemon acts: all held
    /// means a restarted daemon adopts the running service; some held is a leftover that is
    /// released before anything is decided. `generation` is this run's boot generation, the
    /// one the shell puts in the header of every heartbeat it sends.
    pub fn new(
        p: CoreParams,
        persisted_term: u64,
        held_at_start: u32,
        now: Millis,
        generation: u64,
    ) -> Node {
        let n_steps = p.steps.len().min(super::types::MAX_STEPS);
        let all = all_steps(n_steps);
        let links = p.links.len();
        let disk = if p.disk_gate {
            DiskState::Unknown
        } else {
            DiskState::NotReplicated
        };
        let held = held_at_start & all;
        let mut node = Node {
            generation,
            n_steps,
            boot_at: now,
            now,
            last_call: None,
            phase: Phase::Init,
            since: now,
            cause: "started".to_string(),
            term: persisted_term,
            held,
            disk,
            tiebreaker: None,
            tiebreaker_fails: 0,
            lease: lease::LeaseState::default(),
            peer: PeerTracker::new(links),
            peer_was_late: false,
            peer_was_dead: false,
            next_send: now,
            last_sent: None,
            stall_grace_until: now,
            handoff: None,
            refusal: None,
            handoff_ids_done: VecDeque::new(),
            next_handoff: 1,
            next_failback_try: now,
            restarts: VecDeque::new(),
            fence: Fence::Idle,
            maintenance_exit: None,
            split_announced: false,
            next_op: 1,
            queue: VecDeque::new(),
            transitions: VecDeque::new(),
            takeovers: 0,
            restarts_total: 0,
            split_brains: 0,
            outdate: outdate::Outdate::new(now),
            p,
        };
        if n_steps > 0 && held == all {
            node.enter(
                now,
                Phase::Active,
                "adopted: every resource was already running",
            );
        } else if held != 0 {
            node.start_plan(
                now,
                Plan::release(held, 0, now),
                Goal::Standby {
                    cause: "released a partial service found at start".to_string(),
                },
                "partial service found at start: releasing before deciding",
            );
        }
        node.after(now);
        node
    }

    /// Applies parameters from a reloaded config. Who the nodes are, the links and the steps
    /// (names, kinds, order) cannot change under a running node; timings, timeouts, limits and
    /// gates can.
    pub fn reconfigure(&mut self, p: CoreParams) -> Result<(), String> {
        if (p.node_id, p.peer_id, &p.node_name, &p.peer_name)
            != (
                self.p.node_id,
                self.p.peer_id,
                &self.p.node_name,
                &self.p.peer_name,
            )
        {
            return Err("the nodes changed".into());
        }
        if p.links != self.p.links {
            return Err("the heartbeat links changed".into());
        }
        let shape = |s: &[super::params::StepParams]| {
            s.iter()
                .map(|x| (x.name.clone(), x.kind.clone()))
                .collect::<Vec<_>>()
        };
        if shape(&p.steps) != shape(&self.p.steps) {
            return Err("the resources (names, kinds or order) changed".into());
        }
        self.p = p;
        Ok(())
    }

    pub fn handle(&mut self, now: Millis, input: Input) {
        self.before(now);
        match input {
            Input::Heartbeat {
                link,
                generation,
                beat,
                fresh,
            } => self.on_heartbeat(now, link, generation, beat, fresh),
            Input::HeartbeatRejected { link, reason: _ } => {
                if let Some(l) = self.peer.links.get_mut(link) {
                    l.rejected += 1;
                }
            }
            Input::StepFinished { op, result } => self.on_step_finished(now, op, result),
            Input::Probed { held } => self.on_probed(now, held),
            Input::Health { step, ok, detail } => {
                if !ok {
                    self.on_resource_failure(now, step, detail);
                }
            }
            Input::Disk(d) => {
                if self.p.disk_gate {
                    self.disk = d;
                }
            }
            Input::TieBreaker { ok } => {
                self.tiebreaker = Some(ok);
                self.tiebreaker_fails = if ok {
                    0
                } else {
                    self.tiebreaker_fails.saturating_add(1)
                };
            }
            Input::LeaseGranted { sent_at, lease_ms } => {
                self.on_lease_granted(now, sent_at, lease_ms)
            }
            Input::FenceFinished { op, result } => self.on_fence_finished(now, op, result),
            Input::Command { id, command } => self.on_command(now, id, command),
            Input::OutdatePeer { id, timeout_ms } => self.on_outdate_peer(now, id, timeout_ms),
            Input::OutdateFinished { op, result } => self.on_outdate_finished(now, op, result),
        }
        self.after(now);
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        self.before(now);
        self.after(now);
    }

    /// The next moment `handle_timeout` must be called, if any.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t: Vec<Millis> = vec![self.next_send];
        if let Phase::Running { plan, .. } = &self.phase {
            t.extend(plan.running.as_ref().map(|r| r.deadline));
        }
        match self.fence {
            Fence::Running { deadline, .. } => t.push(deadline),
            Fence::Failed { retry_at } => t.push(retry_at),
            Fence::Idle | Fence::Cleared => {}
        }
        t.extend(self.handoff.as_ref().map(|h| h.deadline));
        t.extend(self.outdate.deadlines());
        t.extend(self.refusal.map(|r| r.until));
        t.push(self.boot_at + self.p.initdead_ms);
        t.push(self.stall_grace_until);
        t.extend(self.lease_timers());
        if self.p.auto_failback {
            t.push(self.next_failback_try);
        }
        for l in &self.peer.links {
            if let Some(rx) = l.last_rx {
                t.push(rx + self.p.deadtime_ms);
            }
        }
        if let Some(first) = self.peer.first_rx {
            t.push(first + self.p.deadtime_ms);
        }
        if let Some(rx) = self.peer.last_rx() {
            t.push(rx + self.p.warntime_ms + 1);
            t.push(rx + self.p.deadtime_ms);
        }
        t.into_iter().filter(|&x| x > self.now).min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.queue.pop_front()
    }

    pub fn state(&self) -> NodeState {
        match &self.phase {
            Phase::Init => NodeState::Init,
            Phase::Standby => NodeState::Standby,
            Phase::Active => NodeState::Active,
            Phase::Failed(_) => NodeState::Failed,
            Phase::Maintenance => NodeState::Maintenance,
            Phase::Stopped => NodeState::Stopped,
            Phase::Running { plan, goal } => match (plan.direction(), goal) {
                (Some(StepDirection::Acquire), _) => NodeState::Acquiring,
                (Some(StepDirection::Release), _) => NodeState::Releasing,
                (None, Goal::Active { .. }) if plan.failure.is_none() => NodeState::Acquiring,
                (None, _) => NodeState::Releasing,
            },
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The last transitions (as in `Status::transitions`), oldest first. Read-only: the shell
    /// uses it to append the ones that end a plan to the failover history.
    pub fn transitions(&self) -> impl DoubleEndedIterator<Item = &Transition> {
        self.transitions.iter()
    }

    pub fn held(&self) -> u32 {
        self.held
    }

    /// What this node says about itself now: the beat it sends, less the stamp and the echo
    /// (which change with every beat and are filled in as it goes out).
    pub fn beat(&self) -> Beat {
        let handoff = self
            .handoff
            .as_ref()
            .map(Handoff::message)
            .or(self.refusal.map(|r| r.message()));
        Beat {
            state: self.state(),
            term: self.term,
            held: self.held,
            disk: self.disk,
            handoff,
            outdate: self.outdate.message(),
            stamp: None,
            echo: None,
        }
    }

    pub fn status(&self, now: Millis) -> Status {
        let p = &self.p;
        let beat = self.peer.beat;
        let running = match &self.phase {
            Phase::Running { plan, .. } => plan.running.as_ref().map(|r| r.what),
            _ => None,
        };
        let blockers = match self.phase {
            Phase::Standby | Phase::Init => match self.verdict(now) {
                Verdict::Blocked(b) => b,
                Verdict::Stay | Verdict::Go { .. } => Vec::new(),
            },
            _ => Vec::new(),
        };
        Status {
            node: p.node_name.clone(),
            state: self.state(),
            term: self.term,
            since_ms: self.since,
            cause: self.cause.clone(),
            failed_reason: match &self.phase {
                Phase::Failed(r) => Some(r.clone()),
                _ => None,
            },
            blockers,
            disk: self.disk,
            tiebreaker: if p.tiebreaker { self.tiebreaker } else { None },
            tiebreaker_fails: self.tiebreaker_fails,
            lease: self.lease_status(now),
            maintenance: matches!(self.phase, Phase::Maintenance),
            peer: PeerStatus {
                name: p.peer_name.clone(),
                view: self.peer_view(now),
                state: beat.map(|b| b.state),
                term: beat.map(|b| b.term),
                held: beat.map(|b| b.held),
                disk: beat.map(|b| b.disk),
                generation: self.peer.generation,
                last_heard_ms_ago: self.peer.last_rx().map(|t| now.saturating_sub(t)),
                restarts_seen: self.peer.restarts_seen,
                max_gap_ms: self.peer.max_gap_ms,
            },
            links: p
                .links
                .iter()
                .zip(&self.peer.links)
                .map(|(name, l)| LinkStatus {
                    name: name.clone(),
                    up: l
                        .last_rx
                        .is_some_and(|t| now.saturating_sub(t) < p.deadtime_ms),
                    last_heard_ms_ago: l.last_rx.map(|t| now.saturating_sub(t)),
                    beats: l.beats,
                    late: l.late,
                    rejected: l.rejected,
                })
                .collect(),
            resources: p
                .steps
                .iter()
                .enumerate()
                .take(self.n_steps)
                .map(|(i, s)| ResourceStatus {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    held: self.held & (1 << i) != 0,
                    running: running.filter(|r| r.step == i).map(|r| {
                        match r.dir {
                            StepDirection::Acquire => "acquiring",
                            StepDirection::Release => "releasing",
                        }
                        .to_string()
                    }),
                })
                .collect(),
            handoff: self.beat().handoff,
            outdate: self.outdate.message(),
            takeovers: self.takeovers,
            restarts: self.restarts_total,
            split_brains: self.split_brains,
            transitions: self.transitions.iter().cloned().collect(),
        }
    }
}

mod commands;
mod decide;
mod handoff_msgs;
mod inputs;
mod lease;
mod outdate;
mod plans;
