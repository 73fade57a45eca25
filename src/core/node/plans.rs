//! Starting, pumping and finishing plans of steps; phase changes and the transition log; deadlines.

use super::*;

impl Node {
    // ---- plans ----

    pub(super) fn start_plan(&mut self, now: Millis, plan: Plan, goal: Goal, cause: &str) {
        self.phase_change(now, Phase::Running { plan, goal }, cause, Vec::new(), None);
        self.pump(now);
    }

    /// Term handling and bookkeeping for any acquisition of the whole service.
    pub(super) fn begin_acquire(&mut self, now: Millis, cause: String, command: Option<u64>) {
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
                what: "takeover".into(),
            },
            &cause,
        );
    }

    /// Starts the next step of the running plan, or ends the plan when nothing is left.
    pub(super) fn pump(&mut self, now: Millis) {
        loop {
            let before = self.state();
            // With a witness, no acquire step starts without the lease or the peer's
            // confirmation (lease.rs); the plan waits, saying it is acquiring.
            let entitled = self.entitled(now);
            let Phase::Running { plan, .. } = &mut self.phase else {
                return;
            };
            if plan.running.is_some() {
                return;
            }
            if !entitled
                && plan
                    .ops
                    .front()
                    .is_some_and(|o| o.dir == StepDirection::Acquire)
            {
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
            plan.running = Some(crate::core::plan::Running {
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

    pub(super) fn finish_plan(&mut self, now: Millis) {
        let Phase::Running { plan, goal } = &self.phase else {
            return;
        };
        let (plan, goal) = (plan.clone(), goal.clone());
        let total = Some(now.saturating_sub(plan.started_at));
        let timings = plan.timings.clone();
        let failure = plan.failure.clone().or(plan.aborted.clone());
        match (goal, failure) {
            (Goal::Active { command, .. }, None) if self.peer_outranks(now) => {
                // Rule 6, last line of defence: a peer active with an equal or higher term
                // appeared while the last step ran. Give way instead of becoming active.
                let cause = format!(
                    "peer {} is active with an equal or higher term: releasing instead of becoming active",
                    self.p.peer_name
                );
                if let Some(c) = command {
                    self.fail(c, cause.clone());
                }
                self.start_plan(
                    now,
                    Plan::release(self.held, 0, now),
                    Goal::Standby {
                        cause: "gave way to the active peer".into(),
                    },
                    &cause,
                );
            }
            (Goal::Active { cause, command, .. }, None) => {
                self.phase_change(now, Phase::Active, &cause, timings, total);
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
            (Goal::Active { command, what, .. }, Some(reason)) => {
                let next = if self.held == 0 && plan.aborted.is_some() && plan.failure.is_none() {
                    Phase::Standby
                } else {
                    Phase::Failed(reason.clone())
                };
                self.phase_change(now, next, &reason, timings, total);
                if plan.failure.is_some() {
                    self.alert(Severity::Error, format!("{what} failed: {reason}"));
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

    pub(super) fn peer_outranks(&self, now: Millis) -> bool {
        self.live_beat(now)
            .is_some_and(|b| b.state == NodeState::Active && b.term >= self.term)
    }

    pub(super) fn enter(&mut self, now: Millis, phase: Phase, cause: &str) {
        self.phase_change(now, phase, cause, Vec::new(), None);
    }

    pub(super) fn phase_change(
        &mut self,
        now: Millis,
        phase: Phase,
        cause: &str,
        steps: Vec<crate::core::plan::StepTiming>,
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

    pub(super) fn expire(&mut self, now: Millis) {
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
}
