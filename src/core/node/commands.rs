//! Operator commands: standby, takeover, maintenance, shutdown; each answered exactly once.

use super::*;

impl Node {
    // ---- operator commands ----

    pub(super) fn refuse(&mut self, id: u64, reason: impl Into<String>) {
        self.queue.push_back(Action::CommandDone {
            id,
            outcome: CommandOutcome::Refused {
                reason: reason.into(),
            },
        });
    }

    pub(super) fn done(&mut self, id: u64, message: String, gap_ms: Option<Millis>) {
        self.queue.push_back(Action::CommandDone {
            id,
            outcome: CommandOutcome::Done { message, gap_ms },
        });
    }

    pub(super) fn fail(&mut self, id: u64, reason: String) {
        self.queue.push_back(Action::CommandDone {
            id,
            outcome: CommandOutcome::Failed { reason },
        });
    }

    pub(super) fn new_handoff_id(&mut self) -> u32 {
        let id = (u32::from(self.p.node_id) << 16) | (self.next_handoff & 0xffff);
        self.next_handoff = self.next_handoff.wrapping_add(1);
        id
    }

    /// Opens a handoff by asking the peer (`Offer` as giver, `Request` as receiver).
    pub(super) fn ask_handoff(&mut self, now: Millis, role: Role, command: Option<u64>) {
        let id = self.new_handoff_id();
        self.handoff = Some(Handoff {
            id,
            role,
            stage: Stage::Asked,
            deadline: now + self.answer_timeout(),
            command,
            gap_from: None,
        });
    }

    pub(super) fn answer_timeout(&self) -> Millis {
        (3 * self.p.deadtime_ms).max(2_000)
    }

    pub(super) fn on_command(&mut self, now: Millis, id: u64, command: Command) {
        match command {
            Command::Standby => self.cmd_standby(now, id),
            Command::Takeover => self.cmd_takeover(now, id),
            Command::Maintenance { on } => self.cmd_maintenance(now, id, on),
            Command::Shutdown => self.cmd_shutdown(now, id),
        }
    }

    pub(super) fn busy_reason(&self) -> Option<String> {
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

    pub(super) fn cmd_standby(&mut self, now: Millis, id: u64) {
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
        self.ask_handoff(now, Role::Giver, Some(id));
    }

    pub(super) fn cmd_takeover(&mut self, now: Millis, id: u64) {
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
                self.ask_handoff(now, Role::Receiver, Some(id));
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

    pub(super) fn cmd_maintenance(&mut self, now: Millis, id: u64, on: bool) {
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

    pub(super) fn cmd_shutdown(&mut self, now: Millis, id: u64) {
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
}
