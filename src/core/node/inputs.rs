//! Bookkeeping around every call, and what each input does to the facts.

use super::*;

impl Node {
    // ---- bookkeeping around every call ----

    pub(super) fn before(&mut self, now: Millis) {
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
        self.outdate_expire(now);
    }

    pub(super) fn after(&mut self, now: Millis) {
        self.observe_liveness(now);
        self.outdate_step(now);
        self.decide(now);
        self.lease_after(now);
        let beat = self.beat();
        if now >= self.next_send || self.last_sent != Some(beat) {
            // Stamped with this call's time: the shell sends it after the call returns, so the
            // peer receives it after `now` on any clock (the echo argument in lease.rs).
            self.lease_sent(now, &beat);
            self.queue.push_back(Action::SendHeartbeat(Beat {
                stamp: Some(now),
                echo: self.peer.echo,
                ..beat
            }));
            self.last_sent = Some(beat);
            self.next_send = now + self.p.keepalive_ms;
        }
    }

    pub(super) fn alert(&mut self, severity: Severity, message: String) {
        self.queue.push_back(Action::Alert { severity, message });
    }

    pub(super) fn peer_view(&self, now: Millis) -> PeerView {
        self.peer.view(now, self.p.warntime_ms, self.p.deadtime_ms)
    }

    pub(super) fn live_beat(&self, now: Millis) -> Option<Beat> {
        self.peer
            .live_beat(now, self.p.warntime_ms, self.p.deadtime_ms)
    }

    pub(super) fn step_name(&self, step: usize) -> String {
        self.p
            .steps
            .get(step)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("step {step}"))
    }

    /// Edge-triggered warnings about the peer and each link.
    pub(super) fn observe_liveness(&mut self, now: Millis) {
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
        // After this node's own stall every link looks silent until the inbox is read: no
        // link is "down" for that.
        if matches!(view, PeerView::Alive | PeerView::Late) && now >= self.stall_grace_until {
            let mut down = Vec::new();
            for (i, l) in self.peer.links.iter_mut().enumerate() {
                let silent = l.last_rx.map(|t| now.saturating_sub(t));
                // A link that never carried a beat gets a deadtime from the first beat heard
                // on any link, like a link that went quiet: links come up at different times.
                let heard_for = self.peer.first_rx.map_or(0, |t| now.saturating_sub(t));
                let is_down = match silent {
                    Some(s) => s >= self.p.deadtime_ms,
                    None => heard_for >= self.p.deadtime_ms,
                };
                if is_down && !l.reported_down {
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

    pub(super) fn on_heartbeat(
        &mut self,
        now: Millis,
        link: usize,
        generation: u64,
        beat: Beat,
        fresh: bool,
    ) {
        if link >= self.peer.links.len() {
            return;
        }
        let link_silent = self.peer.links[link].last_rx.map(|t| now.saturating_sub(t));
        // The peer kept talking on another link: this link was cut. Not after a stall of this
        // node: waking from a pause, it finds every link silent and stale beats in its inbox.
        let heard_elsewhere = now >= self.stall_grace_until
            && self.peer.links.iter().enumerate().any(|(i, l)| {
                i != link
                    && l.last_rx
                        .is_some_and(|t| now.saturating_sub(t) < self.p.deadtime_ms)
            });
        let peer_active = beat.state == NodeState::Active;
        let rx = self.peer.record(now, link, generation, beat, fresh);
        if !peer_active {
            self.on_link_back(link, link_silent, heard_elsewhere);
        }
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
            self.outdate.peer_restarted();
            // The new daemon numbers its handoffs from 1 again: forget the ids of its previous
            // life, or its first request would be taken for a finished one and go unanswered.
            // Beats of the old generation are replays now, so no old message can come back.
            let peer = u32::from(self.p.peer_id);
            self.handoff_ids_done.retain(|id| id >> 16 != peer);
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
        if let Some(e) = beat.echo {
            self.on_echo(now, e);
        }
        // Hearing the peer ends any silence episode: a later silence needs fencing again.
        if !matches!(self.fence, Fence::Running { .. }) {
            self.fence = Fence::Idle;
        }
        self.outdate.peer_fenced = false;
        if let Some(msg) = beat.outdate {
            self.on_peer_outdate(now, msg);
        }
        if let Some(msg) = beat.handoff {
            self.on_peer_handoff(now, msg);
        }
        // Rule 6: never become active while the peer is active with an equal or higher term.
        if beat.state == NodeState::Active && beat.term >= self.term {
            if let Phase::Running {
                plan,
                goal: Goal::Active { .. },
            } = &mut self.phase
            {
                // Whatever step the plan is on (a restart releases before it acquires), its
                // goal is gone: what is held goes away in reverse.
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

    /// A link that carries beats again after `deadtime` of silence (or for the first time)
    /// while the peer was heard on another link may be the LAN that clients use: every gratuitous
    /// ARP / NA sent while it was cut was lost, and clients would keep a stale neighbour entry
    /// until it expires (tens of seconds). The active node announces again. Not when the beat
    /// says the peer is active too: that is a split brain, and the split-brain rule alone
    /// decides who keeps and announces the service.
    fn on_link_back(&mut self, link: usize, silent: Option<Millis>, heard_elsewhere: bool) {
        let back = heard_elsewhere && silent.is_none_or(|s| s >= self.p.deadtime_ms);
        if !back || !matches!(self.phase, Phase::Active) {
            return;
        }
        let gap = match silent {
            Some(s) => format!("after {s} ms of silence"),
            None => "for the first time".to_string(),
        };
        self.alert(
            Severity::Warn,
            format!(
                "link {} carries heartbeats again {gap}: announcing the service addresses again",
                self.p.links[link]
            ),
        );
        self.queue.push_back(Action::Announce);
    }

    pub(super) fn on_step_finished(&mut self, now: Millis, op: OpId, result: Result<(), String>) {
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

    pub(super) fn on_probed(&mut self, now: Millis, held: u32) {
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

    pub(super) fn on_resource_failure(&mut self, now: Millis, step: usize, detail: String) {
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
        // Kept after a successful restart too: the limit counts failures within the window.
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
                what: format!("restart of {name}"),
            },
            &cause,
        );
    }

    pub(super) fn on_fence_finished(&mut self, now: Millis, op: OpId, result: Result<(), String>) {
        let Fence::Running { op: running, .. } = self.fence else {
            return;
        };
        if running != op {
            return;
        }
        self.fence_result(now, result);
    }

    /// Runs the fence command, timed out by the core (a takeover and fence-peer both need it).
    pub(super) fn start_fence(&mut self, now: Millis, f: &crate::core::FenceParams) {
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
    }

    pub(super) fn fence_result(&mut self, now: Millis, result: Result<(), String>) {
        let Some(f) = self.p.fencing.clone() else {
            return;
        };
        match result {
            Ok(()) => {
                self.fence = Fence::Cleared;
                self.outdate.peer_fenced = true;
                self.outdate.fenced_generation = self.peer.generation;
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
}
