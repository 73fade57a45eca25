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
use super::status::{LinkStatus, PeerStatus, ResourceStatus, Status, Transition};
use super::types::{Beat, DiskState, HandoffKind, HandoffMsg, Millis, NodeState, RefuseReason};

const TRANSITIONS_KEPT: usize = 32;
const HANDOFF_IDS_KEPT: usize = 8;

/// How long a running plan is meant to end up.
#[derive(Clone, Debug)]
enum Goal {
    /// Takeover, restart, or the receiving side of a handoff.
    Active {
        cause: String,
        command: Option<u64>,
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
}

impl Node {
    /// `held_at_start` is the shell's probe of the resources before the daemon acts: all held
    /// means a restarted daemon adopts the running service; some held is a leftover that is
    /// released before anything is decided.
    pub fn new(p: CoreParams, persisted_term: u64, held_at_start: u32, now: Millis) -> Node {
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
            Input::TieBreaker { ok } => self.tiebreaker = Some(ok),
            Input::FenceFinished { op, result } => self.on_fence_finished(now, op, result),
            Input::Command { id, command } => self.on_command(now, id, command),
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
        t.extend(self.refusal.map(|r| r.until));
        t.push(self.boot_at + self.p.initdead_ms);
        t.push(self.stall_grace_until);
        if self.p.auto_failback {
            t.push(self.next_failback_try);
        }
        for l in &self.peer.links {
            if let Some(rx) = l.last_rx {
                t.push(rx + self.p.deadtime_ms);
            }
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

    pub fn held(&self) -> u32 {
        self.held
    }

    /// The beat this node sends now.
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
            outdate: None,
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
            takeovers: self.takeovers,
            restarts: self.restarts_total,
            split_brains: self.split_brains,
            transitions: self.transitions.iter().cloned().collect(),
        }
    }

    // ---- bookkeeping around every call ----

    fn before(&mut self, now: Millis) {
        let now = now.max(self.now);
        // The shell calls at least every keepalive. A much longer gap means this process was
        // frozen (SIGSTOP, VM pause, swap storm): the peer's heartbeats may be sitting unread in
        // the socket buffers, so silence measured across the freeze proves nothing. Give the peer
        // one more deadtime before trusting it.
        if let Some(last) = self.last_call {
            let gap = now.saturating_sub(last);
            if gap > self.p.keepalive_ms + self.p.deadtime_ms / 2 {
                self.stall_grace_until = now + self.p.deadtime_ms;
                // A step or fence timeout measures the external command, not our freeze: its
                // result is probably waiting unread, so the frozen time is not held against it.
                let frozen = gap - self.p.keepalive_ms;
                if let Phase::Running { plan, .. } = &mut self.phase {
                    if let Some(r) = plan.running.as_mut() {
                        r.deadline += frozen;
                    }
                }
                if let Fence::Running { deadline, .. } = &mut self.fence {
                    *deadline += frozen;
                }
                self.alert(
                    Severity::Warn,
                    format!(
                        "this node stalled for {gap} ms (expected a call every {} ms); no takeover decision for {} ms",
                        self.p.keepalive_ms, self.p.deadtime_ms
                    ),
                );
            }
        }
        self.last_call = Some(now);
        self.now = now;
        // Deadlines that fell due are handled on every call, not only in `handle_timeout`:
        // `poll_timeout` never reports a moment that has passed, so one missed here is lost.
        self.expire(now);
    }

    fn after(&mut self, now: Millis) {
        self.observe_liveness(now);
        self.decide(now);
        let beat = self.beat();
        if now >= self.next_send || self.last_sent != Some(beat) {
            self.queue.push_back(Action::SendHeartbeat(beat));
            self.last_sent = Some(beat);
            self.next_send = now + self.p.keepalive_ms;
        }
    }

    fn alert(&mut self, severity: Severity, message: String) {
        self.queue.push_back(Action::Alert { severity, message });
    }

    fn peer_view(&self, now: Millis) -> PeerView {
        self.peer.view(now, self.p.warntime_ms, self.p.deadtime_ms)
    }

    fn live_beat(&self, now: Millis) -> Option<Beat> {
        self.peer
            .live_beat(now, self.p.warntime_ms, self.p.deadtime_ms)
    }

    fn step_name(&self, step: usize) -> String {
        self.p
            .steps
            .get(step)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("step {step}"))
    }

    /// Edge-triggered warnings about the peer and each link.
    fn observe_liveness(&mut self, now: Millis) {
        let view = self.peer_view(now);
        let silent = self
            .peer
            .last_rx()
            .map(|t| now.saturating_sub(t))
            .unwrap_or(0);
        let late = view == PeerView::Late;
        if late && !self.peer_was_late {
            self.alert(
                Severity::Warn,
                format!(
                    "peer {} late: no heartbeat on any link for {silent} ms (warntime {} ms)",
                    self.p.peer_name, self.p.warntime_ms
                ),
            );
        }
        self.peer_was_late = late;
        let dead = view == PeerView::Dead;
        if dead && !self.peer_was_dead {
            self.alert(
                Severity::Warn,
                format!(
                    "peer {} dead: silent on every link for {silent} ms (deadtime {} ms)",
                    self.p.peer_name, self.p.deadtime_ms
                ),
            );
        }
        self.peer_was_dead = dead;
        if matches!(view, PeerView::Alive | PeerView::Late) {
            let mut down = Vec::new();
            for (i, l) in self.peer.links.iter_mut().enumerate() {
                let silent = l.last_rx.map(|t| now.saturating_sub(t));
                if silent.is_none_or(|s| s >= self.p.deadtime_ms) && !l.reported_down {
                    l.reported_down = true;
                    down.push((i, silent));
                }
            }
            for (i, silent) in down {
                let msg = match silent {
                    Some(s) => format!(
                        "link {} down: no heartbeat for {s} ms while the peer is heard on another link",
                        self.p.links[i]
                    ),
                    None => format!(
                        "link {} down: never carried a heartbeat while the peer is heard on another link",
                        self.p.links[i]
                    ),
                };
                self.alert(Severity::Warn, msg);
            }
        }
    }

    // ---- inputs ----

    fn on_heartbeat(&mut self, now: Millis, link: usize, generation: u64, beat: Beat, fresh: bool) {
        if link >= self.peer.links.len() {
            return;
        }
        let rx = self.peer.record(now, link, generation, beat, fresh);
        if let Some(gap) = rx.gap.filter(|&g| g > self.p.warntime_ms) {
            self.peer.links[link].late += 1;
            self.alert(
                Severity::Warn,
                format!(
                    "heartbeat from {} on {} arrived {gap} ms after the previous one (warntime {} ms)",
                    self.p.peer_name, self.p.links[link], self.p.warntime_ms
                ),
            );
        }
        if rx.restarted {
            self.alert(
                Severity::Warn,
                format!(
                    "peer {} restarted (new boot generation {generation})",
                    self.p.peer_name
                ),
            );
        }
        if !fresh {
            return;
        }
        // Hearing the peer ends any silence episode: a later silence needs fencing again.
        if !matches!(self.fence, Fence::Running { .. }) {
            self.fence = Fence::Idle;
        }
        if let Some(msg) = beat.handoff {
            self.on_peer_handoff(now, msg, beat);
        }
        // Rule 6: never become active while the peer is active with an equal or higher term.
        if beat.state == NodeState::Active && beat.term >= self.term {
            if let Phase::Running {
                plan,
                goal: Goal::Active { .. },
            } = &mut self.phase
            {
                if plan.direction() == Some(StepDirection::Acquire) {
                    plan.abort(
                        self.held,
                        format!(
                            "peer {} became active with term {} (ours {})",
                            self.p.peer_name, beat.term, self.term
                        ),
                    );
                }
            }
        }
    }

    fn on_step_finished(&mut self, now: Millis, op: OpId, result: Result<(), String>) {
        let Phase::Running { plan, .. } = &mut self.phase else {
            return;
        };
        let Some(step) = plan
            .running
            .as_ref()
            .filter(|r| r.op == op)
            .map(|r| r.what.step)
        else {
            return;
        };
        let name = self
            .p
            .steps
            .get(step)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        plan.finish(op, result, now, &mut self.held, &name);
    }

    fn on_probed(&mut self, now: Millis, held: u32) {
        let Some(command) = self.maintenance_exit.take() else {
            return;
        };
        let all = all_steps(self.n_steps);
        self.held = held & all;
        let peer_active = self
            .live_beat(now)
            .filter(|b| b.state == NodeState::Active && b.term >= self.term);
        if let Some(b) = peer_active.filter(|_| self.held != 0) {
            // Rule 6: a running copy here while the peer is active is a split; the peer's term
            // is at least ours, so the local copy goes.
            let cause = format!(
                "left maintenance with resources running while {} is active with term {}: releasing them",
                self.p.peer_name, b.term
            );
            self.alert(Severity::Error, cause.clone());
            self.start_plan(
                now,
                Plan::release(self.held, 0, now),
                Goal::Standby {
                    cause: "released the local copy after maintenance".into(),
                },
                &cause,
            );
        } else if self.n_steps > 0 && self.held == all {
            self.enter(
                now,
                Phase::Active,
                "left maintenance: every resource is running",
            );
        } else if self.held == 0 {
            self.enter(now, Phase::Standby, "left maintenance: nothing is running");
        } else {
            self.start_plan(
                now,
                Plan::release(self.held, 0, now),
                Goal::Standby {
                    cause: "released a partial service found when leaving maintenance".into(),
                },
                "left maintenance with a partial service: releasing before deciding",
            );
        }
        if let Some(id) = command {
            self.done(id, "maintenance mode off".into(), None);
        }
    }

    fn on_resource_failure(&mut self, now: Millis, step: usize, detail: String) {
        if !matches!(self.phase, Phase::Active)
            || step >= self.n_steps
            || !self.p.steps[step].monitored
            || self.held & (1 << step) == 0
        {
            return;
        }
        let name = self.step_name(step);
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= self.p.restart_window_ms)
        {
            self.restarts.pop_front();
        }
        let within_limit = (self.restarts.len() as u64) < u64::from(self.p.restart_limit);
        if !within_limit && self.peer_can_take_over(now) {
            let reason = format!(
                "{name} failed {} times within {} ms (last: {detail}); handing the service to {}",
                self.restarts.len() + 1,
                self.p.restart_window_ms,
                self.p.peer_name
            );
            self.alert(Severity::Error, reason.clone());
            self.start_plan(
                now,
                Plan::release(self.held, 0, now),
                Goal::Failed {
                    reason: reason.clone(),
                },
                &reason,
            );
            return;
        }
        if !within_limit {
            self.alert(
                Severity::Error,
                format!(
                    "{name} keeps failing ({detail}) and peer {} cannot take over; restarting it again",
                    self.p.peer_name
                ),
            );
        }
        self.restarts.push_back(now);
        self.restarts_total += 1;
        let cause = format!("restart of {name} after a failed probe: {detail}");
        self.alert(Severity::Warn, cause.clone());
        self.start_plan(
            now,
            Plan::restart(self.held, step, self.n_steps, now),
            Goal::Active {
                cause: format!("restarted {name}"),
                command: None,
            },
            &cause,
        );
    }

    fn on_fence_finished(&mut self, now: Millis, op: OpId, result: Result<(), String>) {
        let Fence::Running { op: running, .. } = self.fence else {
            return;
        };
        if running != op {
            return;
        }
        self.fence_result(now, result);
    }

    fn fence_result(&mut self, now: Millis, result: Result<(), String>) {
        let Some(f) = self.p.fencing.clone() else {
            return;
        };
        match result {
            Ok(()) => {
                self.fence = Fence::Cleared;
                self.alert(
                    Severity::Warn,
                    format!("fenced peer {} before taking over", self.p.peer_name),
                );
            }
            Err(e) if f.required => {
                self.fence = Fence::Failed {
                    retry_at: now + f.retry_ms,
                };
                self.alert(
                    Severity::Error,
                    format!(
                        "fencing peer {} failed: {e}; no takeover until fencing succeeds (retry in {} ms)",
                        self.p.peer_name, f.retry_ms
                    ),
                );
            }
            Err(e) => {
                self.fence = Fence::Cleared;
                self.alert(
                    Severity::Error,
                    format!(
                        "fencing peer {} failed: {e}; taking over anyway because fencing is not required",
                        self.p.peer_name
                    ),
                );
            }
        }
    }

    // ---- operator commands ----

    fn refuse(&mut self, id: u64, reason: impl Into<String>) {
        self.queue.push_back(Action::CommandDone {
            id,
            outcome: CommandOutcome::Refused {
                reason: reason.into(),
            },
        });
    }

    fn done(&mut self, id: u64, message: String, gap_ms: Option<Millis>) {
        self.queue.push_back(Action::CommandDone {
            id,
            outcome: CommandOutcome::Done { message, gap_ms },
        });
    }

    fn fail(&mut self, id: u64, reason: String) {
        self.queue.push_back(Action::CommandDone {
            id,
            outcome: CommandOutcome::Failed { reason },
        });
    }

    fn new_handoff_id(&mut self) -> u32 {
        let id = (u32::from(self.p.node_id) << 16) | (self.next_handoff & 0xffff);
        self.next_handoff = self.next_handoff.wrapping_add(1);
        id
    }

    fn answer_timeout(&self) -> Millis {
        (3 * self.p.deadtime_ms).max(2_000)
    }

    fn on_command(&mut self, now: Millis, id: u64, command: Command) {
        match command {
            Command::Standby => self.cmd_standby(now, id),
            Command::Takeover => self.cmd_takeover(now, id),
            Command::Maintenance { on } => self.cmd_maintenance(now, id, on),
            Command::Shutdown => self.cmd_shutdown(now, id),
        }
    }

    fn busy_reason(&self) -> Option<String> {
        match &self.phase {
            Phase::Maintenance => Some(
                "this node is in maintenance mode; run `twinbeat maintenance off` first".into(),
            ),
            Phase::Stopped => Some("this node is shutting down".into()),
            Phase::Running { .. } => Some(format!(
                "a transition is running ({}); wait for it to finish",
                self.state()
            )),
            _ if self.handoff.is_some() => Some("a handoff is already under way".into()),
            _ => None,
        }
    }

    fn cmd_standby(&mut self, now: Millis, id: u64) {
        if let Some(r) = self.busy_reason() {
            return self.refuse(id, r);
        }
        if !matches!(self.phase, Phase::Active) {
            return self.done(
                id,
                format!("already {}; nothing to hand over", self.state()),
                None,
            );
        }
        if let Some(r) = self.peer_unfit_reason(now) {
            return self.refuse(id, r);
        }
        let hid = self.new_handoff_id();
        self.handoff = Some(Handoff {
            id: hid,
            role: Role::Giver,
            stage: Stage::Asked,
            deadline: now + self.answer_timeout(),
            command: Some(id),
            gap_from: None,
        });
    }

    fn cmd_takeover(&mut self, now: Millis, id: u64) {
        if let Some(r) = self.busy_reason() {
            return self.refuse(id, r);
        }
        match &self.phase {
            Phase::Active => return self.done(id, "already active".into(), None),
            Phase::Failed(_) if self.held != 0 => {
                return self.refuse(
                    id,
                    format!(
                        "resources are still held after a failed release (mask {:#x}); release them by hand, then retry",
                        self.held
                    ),
                )
            }
            _ => {}
        }
        if self.p.disk_gate && !self.disk.can_promote() {
            return self.refuse(
                id,
                format!(
                    "the local disk is {:?}, not UpToDate; promoting it could lose data",
                    self.disk
                ),
            );
        }
        let Some(peer) = self.live_beat(now) else {
            return self.refuse(
                id,
                format!(
                    "peer {} is not heard; twinbeat takes over by itself once it has been silent for deadtime and the safety gates pass",
                    self.p.peer_name
                ),
            );
        };
        if matches!(self.phase, Phase::Failed(_)) {
            self.enter(
                now,
                Phase::Standby,
                "operator cleared the failure (takeover)",
            );
        }
        match peer.state {
            NodeState::Active => {
                let hid = self.new_handoff_id();
                self.handoff = Some(Handoff {
                    id: hid,
                    role: Role::Receiver,
                    stage: Stage::Asked,
                    deadline: now + self.answer_timeout(),
                    command: Some(id),
                    gap_from: None,
                });
            }
            NodeState::Acquiring | NodeState::Releasing => self.refuse(
                id,
                format!(
                    "peer {} is {}; retry when it settles",
                    self.p.peer_name, peer.state
                ),
            ),
            NodeState::Maintenance => self.refuse(
                id,
                format!("peer {} is in maintenance mode", self.p.peer_name),
            ),
            NodeState::Init | NodeState::Standby | NodeState::Failed | NodeState::Stopped
                if peer.held != 0 =>
            {
                self.refuse(
                    id,
                    format!(
                        "peer {} still holds resources (mask {:#x}) while {}",
                        self.p.peer_name, peer.held, peer.state
                    ),
                )
            }
            NodeState::Init | NodeState::Standby | NodeState::Failed | NodeState::Stopped => self
                .begin_acquire(
                    now,
                    format!(
                        "operator takeover (peer {} is {})",
                        self.p.peer_name, peer.state
                    ),
                    Some(id),
                ),
        }
    }

    fn cmd_maintenance(&mut self, now: Millis, id: u64, on: bool) {
        let in_maintenance = matches!(self.phase, Phase::Maintenance);
        if on {
            if in_maintenance {
                return self.done(id, "already in maintenance mode".into(), None);
            }
            if let Some(r) = self.busy_reason() {
                return self.refuse(id, r);
            }
            self.enter(now, Phase::Maintenance, "operator: maintenance on");
            self.done(
                id,
                "maintenance mode on: observing, not acting".into(),
                None,
            );
        } else {
            if !in_maintenance {
                return self.done(id, "not in maintenance mode".into(), None);
            }
            if self.maintenance_exit.is_some() {
                return self.refuse(id, "already leaving maintenance (probing resources)");
            }
            self.maintenance_exit = Some(Some(id));
            self.queue.push_back(Action::ProbeAll);
        }
    }

    fn cmd_shutdown(&mut self, now: Millis, id: u64) {
        let phase = std::mem::replace(&mut self.phase, Phase::Init);
        match phase {
            Phase::Running { mut plan, goal } => {
                if plan.direction() == Some(StepDirection::Acquire) {
                    plan.abort(self.held, "shutting down".into());
                }
                if let Goal::Active {
                    command: Some(c), ..
                } = goal
                {
                    self.fail(c, "interrupted: the daemon is shutting down".into());
                }
                self.phase = Phase::Running {
                    plan,
                    goal: Goal::Shutdown { command: id },
                };
            }
            Phase::Maintenance => {
                self.phase = Phase::Maintenance;
                self.done(
                    id,
                    "in maintenance mode: resources left as they are".into(),
                    None,
                );
            }
            other if self.held != 0 => {
                self.phase = other;
                self.start_plan(
                    now,
                    Plan::release(self.held, 0, now),
                    Goal::Shutdown { command: id },
                    "shutting down: releasing the service",
                );
            }
            Phase::Stopped => {
                self.phase = Phase::Stopped;
                self.done(id, "already stopped".into(), None);
            }
            _ => {
                self.enter(now, Phase::Stopped, "shutting down: nothing held");
                self.done(id, "nothing held; safe to stop".into(), None);
            }
        }
        if let Some(h) = self.handoff.take() {
            if let Some(c) = h.command {
                self.fail(c, "interrupted: the daemon is shutting down".into());
            }
        }
    }

    // ---- the handoff protocol ----

    fn on_peer_handoff(&mut self, now: Millis, msg: HandoffMsg, beat: Beat) {
        if self.handoff_ids_done.contains(&msg.id) {
            return;
        }
        let ours = self.handoff.as_ref().map(|h| (h.id, h.role, h.stage));
        match (msg.kind, ours) {
            (HandoffKind::Request, Some((id, _, _))) | (HandoffKind::Offer, Some((id, _, _)))
                if id == msg.id => {}
            (HandoffKind::Request, _) => {
                let refuse = match &self.phase {
                    _ if self.handoff.is_some() => Some(RefuseReason::HandoffInProgress),
                    Phase::Active => None,
                    Phase::Maintenance => Some(RefuseReason::Maintenance),
                    Phase::Running { .. } => Some(RefuseReason::Busy),
                    _ => Some(RefuseReason::NotActive),
                };
                match refuse {
                    Some(reason) => self.refuse_peer(now, msg.id, reason),
                    None => {
                        self.handoff = Some(Handoff {
                            id: msg.id,
                            role: Role::Giver,
                            stage: Stage::Agreed,
                            deadline: now + self.p.handoff_timeout_ms,
                            command: None,
                            gap_from: Some(now),
                        });
                        self.start_plan(
                            now,
                            Plan::release(self.held, 0, now),
                            Goal::Standby {
                                cause: format!("handed the service to {}", self.p.peer_name),
                            },
                            &format!("takeover requested by {}", self.p.peer_name),
                        );
                    }
                }
            }
            (HandoffKind::Offer, _) => {
                let refuse = match &self.phase {
                    _ if self.handoff.is_some() => Some(RefuseReason::HandoffInProgress),
                    Phase::Maintenance => Some(RefuseReason::Maintenance),
                    Phase::Running { .. } => Some(RefuseReason::Busy),
                    Phase::Standby if self.fit_to_acquire() => None,
                    _ => Some(RefuseReason::NotHealthy),
                };
                match refuse {
                    Some(reason) => self.refuse_peer(now, msg.id, reason),
                    None => {
                        self.handoff = Some(Handoff {
                            id: msg.id,
                            role: Role::Receiver,
                            stage: Stage::Agreed,
                            deadline: now + self.p.handoff_timeout_ms,
                            command: None,
                            gap_from: Some(now),
                        });
                    }
                }
            }
            (HandoffKind::Accept, Some((id, Role::Giver, Stage::Asked))) if id == msg.id => {
                if !matches!(self.phase, Phase::Active) {
                    return self.end_handoff(
                        now,
                        Err("this node left the active state before the peer agreed".into()),
                    );
                }
                if let Some(h) = &mut self.handoff {
                    h.stage = Stage::Agreed;
                    h.deadline = now + self.p.handoff_timeout_ms;
                    h.gap_from = Some(now);
                }
                self.start_plan(
                    now,
                    Plan::release(self.held, 0, now),
                    Goal::Standby {
                        cause: format!("handed the service to {}", self.p.peer_name),
                    },
                    &format!("standby: handing the service to {}", self.p.peer_name),
                );
            }
            (HandoffKind::Accept, Some((id, Role::Receiver, Stage::Asked))) if id == msg.id => {
                if let Some(h) = &mut self.handoff {
                    h.stage = Stage::Agreed;
                    h.deadline = now + self.p.handoff_timeout_ms;
                    h.gap_from = Some(now);
                }
            }
            (HandoffKind::Refuse { reason }, Some((id, _, Stage::Asked))) if id == msg.id => {
                let _ = beat;
                self.end_handoff_refused(format!(
                    "peer {} refused: {}",
                    self.p.peer_name,
                    reason.describe()
                ));
            }
            _ => {}
        }
    }

    fn refuse_peer(&mut self, now: Millis, id: u32, reason: RefuseReason) {
        self.refusal = Some(Refusal {
            id,
            reason,
            until: now + self.answer_timeout(),
        });
    }

    fn finish_handoff_id(&mut self, id: u32) {
        self.handoff_ids_done.push_back(id);
        while self.handoff_ids_done.len() > HANDOFF_IDS_KEPT {
            self.handoff_ids_done.pop_front();
        }
    }

    fn end_handoff_refused(&mut self, reason: String) {
        if let Some(h) = self.handoff.take() {
            self.finish_handoff_id(h.id);
            if let Some(c) = h.command {
                self.refuse(c, reason);
            }
        }
    }

    fn end_handoff(&mut self, now: Millis, result: Result<String, String>) {
        let Some(h) = self.handoff.take() else {
            return;
        };
        self.finish_handoff_id(h.id);
        let Some(c) = h.command else {
            return;
        };
        match result {
            Ok(msg) => {
                let gap = h.gap_from.map(|t| now.saturating_sub(t));
                self.done(c, msg, gap);
            }
            Err(reason) => self.fail(c, reason),
        }
    }

    // ---- plans ----

    fn start_plan(&mut self, now: Millis, plan: Plan, goal: Goal, cause: &str) {
        self.phase_change(now, Phase::Running { plan, goal }, cause, Vec::new(), None);
        self.pump(now);
    }

    /// Term handling and bookkeeping for any acquisition of the whole service.
    fn begin_acquire(&mut self, now: Millis, cause: String, command: Option<u64>) {
        let peer_term = self.peer.beat.map(|b| b.term).unwrap_or(0);
        self.term = self.term.max(peer_term) + 1;
        self.takeovers += 1;
        self.queue.push_back(Action::PersistTerm(self.term));
        self.fence = Fence::Idle;
        self.start_plan(
            now,
            Plan::acquire(0, self.n_steps, now),
            Goal::Active {
                cause: cause.clone(),
                command,
            },
            &cause,
        );
    }

    /// Starts the next step of the running plan, or ends the plan when nothing is left.
    fn pump(&mut self, now: Millis) {
        loop {
            let before = self.state();
            let Phase::Running { plan, .. } = &mut self.phase else {
                return;
            };
            if plan.running.is_some() {
                return;
            }
            let Some(next) = plan.ops.pop_front() else {
                break;
            };
            let StepOp { dir, step } = next;
            if dir == StepDirection::Release && self.held & (1 << step) == 0 {
                continue;
            }
            let op = self.next_op;
            self.next_op += 1;
            let Some(s) = self.p.steps.get(step) else {
                continue;
            };
            let timeout_ms = match dir {
                StepDirection::Acquire => s.acquire_timeout_ms,
                StepDirection::Release => s.release_timeout_ms,
            };
            let Phase::Running { plan, .. } = &mut self.phase else {
                return;
            };
            plan.running = Some(super::plan::Running {
                op,
                what: next,
                started: now,
                deadline: now + timeout_ms,
            });
            self.queue.push_back(match dir {
                StepDirection::Acquire => Action::Acquire {
                    op,
                    step,
                    timeout_ms,
                },
                StepDirection::Release => Action::Release {
                    op,
                    step,
                    timeout_ms,
                },
            });
            let after = self.state();
            if before != after {
                // A restart turns from releasing to acquiring mid-plan.
                self.queue.push_back(Action::StateChanged {
                    from: before,
                    to: after,
                    cause: self.cause.clone(),
                });
            }
            return;
        }
        self.finish_plan(now);
    }

    fn finish_plan(&mut self, now: Millis) {
        let Phase::Running { plan, goal } = std::mem::replace(&mut self.phase, Phase::Init) else {
            return;
        };
        // Restore a valid phase before anything else looks at it.
        self.phase = Phase::Running {
            plan: plan.clone(),
            goal: goal.clone(),
        };
        let total = Some(now.saturating_sub(plan.started_at));
        let timings = plan.timings.clone();
        let failure = plan.failure.clone().or(plan.aborted.clone());
        match (goal, failure) {
            (Goal::Active { cause, command }, None) => {
                self.phase_change(now, Phase::Active, &cause, timings, total);
                self.restarts_retain_after_success();
                if let Some(c) = command {
                    self.done(c, format!("active ({cause})"), total);
                }
                if self
                    .handoff
                    .as_ref()
                    .is_some_and(|h| h.role == Role::Receiver)
                {
                    let name = self.p.peer_name.clone();
                    self.end_handoff(now, Ok(format!("took over the service from {name}")));
                }
            }
            (Goal::Active { command, .. }, Some(reason)) => {
                let next = if self.held == 0 && plan.aborted.is_some() && plan.failure.is_none() {
                    Phase::Standby
                } else {
                    Phase::Failed(reason.clone())
                };
                self.phase_change(now, next, &reason, timings, total);
                if plan.failure.is_some() {
                    self.alert(Severity::Error, format!("takeover failed: {reason}"));
                }
                if let Some(c) = command {
                    self.fail(c, reason.clone());
                }
                if self
                    .handoff
                    .as_ref()
                    .is_some_and(|h| h.role == Role::Receiver)
                {
                    self.end_handoff(now, Err(reason));
                }
            }
            (Goal::Standby { cause }, None) => {
                self.phase_change(now, Phase::Standby, &cause, timings, total);
                if let Some(h) = self
                    .handoff
                    .as_mut()
                    .filter(|h| h.role == Role::Giver && h.stage == Stage::Agreed)
                {
                    h.stage = Stage::Released;
                    h.deadline = now + self.p.handoff_timeout_ms;
                }
            }
            (Goal::Standby { .. }, Some(reason)) => {
                self.phase_change(now, Phase::Failed(reason.clone()), &reason, timings, total);
                self.alert(Severity::Error, reason.clone());
                self.end_handoff(now, Err(reason));
            }
            (Goal::Failed { reason }, failure) => {
                let reason = match failure {
                    Some(f) => format!("{reason}; {f}"),
                    None => reason,
                };
                self.phase_change(now, Phase::Failed(reason.clone()), &reason, timings, total);
            }
            (Goal::Shutdown { command }, failure) => {
                let (next, cause) = match &failure {
                    None => (Phase::Stopped, "released for shutdown".to_string()),
                    Some(f) => (Phase::Failed(f.clone()), f.clone()),
                };
                self.phase_change(now, next, &cause, timings, total);
                match failure {
                    None => self.done(command, "released; safe to stop".into(), total),
                    Some(f) => self.fail(command, f),
                }
            }
        }
    }

    fn restarts_retain_after_success(&mut self) {
        // Restart history is kept across a successful restart on purpose: the limit counts
        // failures within the window, successful or not.
    }

    fn enter(&mut self, now: Millis, phase: Phase, cause: &str) {
        self.phase_change(now, phase, cause, Vec::new(), None);
    }

    fn phase_change(
        &mut self,
        now: Millis,
        phase: Phase,
        cause: &str,
        steps: Vec<super::plan::StepTiming>,
        total_ms: Option<Millis>,
    ) {
        let from = self.state();
        self.phase = phase;
        let to = self.state();
        if from == to && steps.is_empty() {
            return;
        }
        self.since = now;
        self.cause = cause.to_string();
        if from != to {
            self.queue.push_back(Action::StateChanged {
                from,
                to,
                cause: cause.to_string(),
            });
        }
        self.transitions.push_back(Transition {
            at: now,
            from,
            to,
            cause: cause.to_string(),
            steps,
            total_ms,
        });
        while self.transitions.len() > TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
    }

    // ---- timers ----

    fn expire(&mut self, now: Millis) {
        if let Phase::Running { plan, .. } = &mut self.phase {
            if let Some(r) = plan.running.as_ref().filter(|r| r.deadline <= now) {
                let op = r.op;
                let step = r.what.step;
                let timeout = r.deadline - r.started;
                let name = self.step_name(step);
                if let Phase::Running { plan, .. } = &mut self.phase {
                    plan.finish(
                        op,
                        Err(format!("timed out after {timeout} ms")),
                        now,
                        &mut self.held,
                        &name,
                    );
                }
                self.queue.push_back(Action::Cancel { op });
            }
        }
        if let Fence::Running { deadline, .. } = self.fence {
            if deadline <= now {
                let op = match self.fence {
                    Fence::Running { op, .. } => op,
                    _ => 0,
                };
                self.queue.push_back(Action::Cancel { op });
                self.fence_result(now, Err("fence command timed out".into()));
            }
        }
        if let Fence::Failed { retry_at } = self.fence {
            if retry_at <= now {
                self.fence = Fence::Idle;
            }
        }
        if self.refusal.is_some_and(|r| r.until <= now) {
            self.refusal = None;
        }
        if let Some(h) = self.handoff.clone().filter(|h| h.deadline <= now) {
            let peer = self.p.peer_name.clone();
            match (h.role, h.stage) {
                (_, Stage::Asked) => self.end_handoff_refused(format!(
                    "peer {peer} did not answer within {} ms; nothing changed",
                    self.answer_timeout()
                )),
                (Role::Giver, Stage::Released) => self.end_handoff(
                    now,
                    Err(format!(
                        "released, but {peer} did not become active within {} ms; twinbeat's normal rules decide who runs the service now",
                        self.p.handoff_timeout_ms
                    )),
                ),
                (Role::Receiver, Stage::Agreed) => self.end_handoff(
                    now,
                    Err(format!(
                        "{peer} agreed but did not release within {} ms",
                        self.p.handoff_timeout_ms
                    )),
                ),
                // Steps have their own timeouts; the plan ends the handoff.
                (Role::Giver, Stage::Agreed) | (_, Stage::Acquiring) | (Role::Receiver, _) => {
                    if let Some(h) = &mut self.handoff {
                        h.deadline = now + self.p.handoff_timeout_ms;
                    }
                }
            }
        }
    }

    // ---- decisions ----

    fn decide(&mut self, now: Millis) {
        self.pump(now);
        if self.peer_view(now) == PeerView::Dead && self.handoff.is_some() {
            let peer = self.p.peer_name.clone();
            let running = matches!(self.phase, Phase::Running { .. });
            let asked = self
                .handoff
                .as_ref()
                .is_some_and(|h| h.stage == Stage::Asked);
            if asked {
                self.end_handoff_refused(format!(
                    "peer {peer} went silent before answering; nothing changed"
                ));
            } else if !running {
                self.end_handoff(
                    now,
                    Err(format!("peer {peer} went silent during the handoff")),
                );
            }
        }
        match &self.phase {
            Phase::Init => {
                let heard = self.peer.beat.is_some();
                let initdead_over = now >= self.boot_at + self.p.initdead_ms;
                if heard || initdead_over {
                    let cause = if heard {
                        format!("heard peer {}", self.p.peer_name)
                    } else {
                        format!(
                            "peer {} not heard within initdead ({} ms)",
                            self.p.peer_name, self.p.initdead_ms
                        )
                    };
                    self.enter(now, Phase::Standby, &cause);
                    self.decide_standby(now);
                }
            }
            Phase::Standby => self.decide_standby(now),
            Phase::Active => self.decide_active(now),
            Phase::Failed(_) => {
                if self.held == 0
                    && self
                        .live_beat(now)
                        .is_some_and(|b| b.state == NodeState::Active)
                {
                    let cause = format!("peer {} holds the service", self.p.peer_name);
                    self.enter(now, Phase::Standby, &cause);
                }
            }
            Phase::Maintenance | Phase::Stopped | Phase::Running { .. } => {}
        }
    }

    fn decide_active(&mut self, now: Millis) {
        let peer = self.live_beat(now);
        if let Some(b) = peer.filter(|b| b.state == NodeState::Active) {
            let peer_wins = b.term > self.term || (b.term == self.term && !self.p.preferred);
            if peer_wins {
                self.split_brains += 1;
                let cause = format!(
                    "split brain: peer {} is active with term {} (ours {}); releasing",
                    self.p.peer_name, b.term, self.term
                );
                self.alert(Severity::Error, cause.clone());
                self.end_handoff(now, Err(cause.clone()));
                self.start_plan(
                    now,
                    Plan::release(self.held, 0, now),
                    Goal::Standby {
                        cause: "released after split brain".into(),
                    },
                    &cause,
                );
                return;
            }
            if !self.split_announced {
                self.split_announced = true;
                self.split_brains += 1;
                self.alert(
                    Severity::Error,
                    format!(
                        "split brain: peer {} is also active (term {}, ours {}); keeping the service and re-announcing it",
                        self.p.peer_name, b.term, self.term
                    ),
                );
                self.queue.push_back(Action::Announce);
            }
            return;
        }
        self.split_announced = false;
        if let Some(h) = self.handoff.clone() {
            if h.role == Role::Receiver {
                self.end_handoff(now, Ok("active".into()));
            }
        }
        let alone = matches!(self.peer_view(now), PeerView::Dead | PeerView::Unknown);
        if alone && self.p.tiebreaker && self.tiebreaker != Some(true) {
            let cause = format!(
                "lost peer {} and the tie-breaker: demoting to avoid a split brain",
                self.p.peer_name
            );
            self.alert(Severity::Error, cause.clone());
            self.start_plan(
                now,
                Plan::release(self.held, 0, now),
                Goal::Standby {
                    cause: "demoted: no peer and no tie-breaker".into(),
                },
                &cause,
            );
        }
    }

    fn decide_standby(&mut self, now: Millis) {
        // A giver that has released waits for the receiver; it must not grab the service back.
        if let Some(h) = self.handoff.clone() {
            match (h.role, h.stage) {
                (Role::Giver, Stage::Released) => {
                    let peer = self.p.peer_name.clone();
                    match self.live_beat(now).map(|b| b.state) {
                        Some(NodeState::Active) => {
                            self.end_handoff(now, Ok(format!("{peer} is active")));
                        }
                        Some(NodeState::Failed) => self.end_handoff(
                            now,
                            Err(format!(
                                "{peer} failed to take over; the service returns to this node"
                            )),
                        ),
                        _ => return,
                    }
                }
                (Role::Receiver, Stage::Agreed) | (Role::Receiver, Stage::Asked) => {
                    let released = self.live_beat(now).is_some_and(|b| {
                        b.handoff
                            == Some(HandoffMsg {
                                id: h.id,
                                kind: HandoffKind::Released,
                            })
                            && b.held == 0
                            && !b.state.may_hold_service()
                    });
                    if released && self.fit_to_acquire() {
                        if let Some(hh) = &mut self.handoff {
                            hh.stage = Stage::Acquiring;
                        }
                        let cause = format!("handoff from {}", self.p.peer_name);
                        self.begin_acquire(now, cause, None);
                    }
                    return;
                }
                _ => return,
            }
        }
        match self.verdict(now) {
            Verdict::Stay | Verdict::Blocked(_) => self.maybe_failback(now),
            Verdict::Go { cause, fence } => {
                if fence {
                    match self.fence {
                        Fence::Cleared => {}
                        Fence::Running { .. } | Fence::Failed { .. } => return,
                        Fence::Idle => {
                            let Some(f) = self.p.fencing.clone() else {
                                return;
                            };
                            let op = self.next_op;
                            self.next_op += 1;
                            self.fence = Fence::Running {
                                op,
                                deadline: now + f.timeout_ms,
                            };
                            self.queue.push_back(Action::FencePeer {
                                op,
                                timeout_ms: f.timeout_ms,
                            });
                            return;
                        }
                    }
                }
                self.begin_acquire(now, cause, None);
            }
        }
    }

    fn maybe_failback(&mut self, now: Millis) {
        if !self.p.auto_failback
            || !self.p.preferred
            || self.handoff.is_some()
            || now < self.next_failback_try
            || now < self.boot_at + self.p.initdead_ms
            || !matches!(self.phase, Phase::Standby)
            || !self.fit_to_acquire()
        {
            return;
        }
        if self
            .live_beat(now)
            .is_some_and(|b| b.state == NodeState::Active)
        {
            self.next_failback_try = now + self.p.handoff_timeout_ms;
            let hid = self.new_handoff_id();
            self.handoff = Some(Handoff {
                id: hid,
                role: Role::Receiver,
                stage: Stage::Asked,
                deadline: now + self.answer_timeout(),
                command: None,
                gap_from: None,
            });
        }
    }

    /// Healthy enough to run the service: not failed and the disk may be promoted.
    fn fit_to_acquire(&self) -> bool {
        !matches!(self.phase, Phase::Failed(_)) && (!self.p.disk_gate || self.disk.can_promote())
    }

    /// Why the peer could not take the service in a planned handoff, if it could not.
    fn peer_unfit_reason(&self, now: Millis) -> Option<String> {
        let peer = &self.p.peer_name;
        let Some(b) = self.live_beat(now) else {
            return Some(format!(
                "peer {peer} is not heard; it cannot take the service"
            ));
        };
        if b.state != NodeState::Standby {
            return Some(format!("peer {peer} is {}, not standby", b.state));
        }
        if b.held != 0 {
            return Some(format!(
                "peer {peer} still holds resources (mask {:#x})",
                b.held
            ));
        }
        if self.p.disk_gate && !b.disk.can_promote() {
            return Some(format!(
                "peer {peer}'s disk is {:?}, not UpToDate; it must not be promoted",
                b.disk
            ));
        }
        None
    }

    fn peer_can_take_over(&self, now: Millis) -> bool {
        self.peer_unfit_reason(now).is_none()
    }

    /// Should this standby node start the service now? Rule 4 lives here: no takeover during
    /// initdead, and none before the peer has been silent on every link for deadtime.
    fn verdict(&self, now: Millis) -> Verdict {
        let peer = &self.p.peer_name;
        let mut blockers = Vec::new();
        let go = match self.peer_view(now) {
            PeerView::Alive | PeerView::Late => {
                let Some(b) = self.peer.beat else {
                    return Verdict::Stay;
                };
                match b.state {
                    NodeState::Active
                    | NodeState::Acquiring
                    | NodeState::Releasing
                    | NodeState::Init
                    | NodeState::Maintenance => return Verdict::Stay,
                    NodeState::Standby | NodeState::Failed | NodeState::Stopped => {}
                }
                if b.held != 0 {
                    blockers.push(format!(
                        "peer {peer} is {} but still holds resources (mask {:#x}); resolve that on the peer",
                        b.state, b.held
                    ));
                    None
                } else {
                    let peer_fit = b.state == NodeState::Standby
                        && (!self.p.disk_gate || b.disk.can_promote());
                    if peer_fit && !self.p.preferred {
                        return Verdict::Stay;
                    }
                    Some((
                        if peer_fit {
                            format!("both nodes standby; this node is preferred over {peer}")
                        } else {
                            format!("peer {peer} cannot run the service ({})", b.state)
                        },
                        false,
                    ))
                }
            }
            PeerView::Dead | PeerView::Unknown => {
                if self
                    .peer
                    .beat
                    .is_some_and(|b| b.state == NodeState::Maintenance)
                {
                    blockers.push(format!(
                        "peer {peer} went silent while in maintenance mode; it may still run the service unmanaged"
                    ));
                }
                if self.p.tiebreaker && self.tiebreaker != Some(true) {
                    blockers.push(
                        "the tie-breaker does not confirm that this node may take over".into(),
                    );
                }
                let silent = match self.peer.last_rx() {
                    Some(t) => format!("silent on every link for {} ms", now.saturating_sub(t)),
                    None => format!(
                        "not heard since this node started {} ms ago",
                        now - self.boot_at
                    ),
                };
                Some((format!("peer {peer} {silent}"), self.p.fencing.is_some()))
            }
        };
        let initdead_end = self.boot_at + self.p.initdead_ms;
        if now < initdead_end {
            blockers.push(format!("initdead: {} ms left", initdead_end - now));
        }
        if now < self.stall_grace_until {
            blockers.push(format!(
                "this node stalled recently; waiting {} ms for the peer's heartbeats",
                self.stall_grace_until - now
            ));
        }
        if self.p.disk_gate && !self.disk.can_promote() {
            blockers.push(format!(
                "local disk is {:?}; only an UpToDate disk is ever promoted",
                self.disk
            ));
        }
        if matches!(self.phase, Phase::Failed(_)) {
            blockers.push("this node is failed".into());
        }
        if let Fence::Failed { retry_at } = self.fence {
            blockers.push(format!(
                "fencing the peer failed; retrying in {} ms",
                retry_at.saturating_sub(now)
            ));
        }
        match go {
            Some((cause, fence)) if blockers.is_empty() => Verdict::Go { cause, fence },
            _ => Verdict::Blocked(blockers),
        }
    }
}
