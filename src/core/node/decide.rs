//! Decisions, re-evaluated after every call: when to start, keep, hand over or give up the service.

use super::*;

impl Node {
    // ---- decisions ----

    pub(super) fn decide(&mut self, now: Millis) {
        self.pump(now);
        if self.lease_check(now) {
            return;
        }
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

    pub(super) fn decide_active(&mut self, now: Millis) {
        let peer = self.live_beat(now);
        // The peer took over while this node could not see it (frozen, or every link cut) and
        // is still acquiring, past its first step: its DRBD is Primary, so whatever clients
        // write here from now on exists on this disk only. Step down at once (VIP first)
        // rather than when it says "active" (its database may take tens of seconds to start).
        // While it holds nothing its promotion has not happened, and DRBD refuses it as long
        // as this node is Primary and connected (a daemon killed and restarted by systemd):
        // dropping the service then would hand a healthy one over for nothing. Only a
        // strictly higher term: with an equal one the acquiring peer gives way (rule 6).
        if let Some(b) =
            peer.filter(|b| b.state == NodeState::Acquiring && b.term > self.term && b.held > 0)
        {
            let cause = format!(
                "split brain: peer {} is taking over with term {} (ours {}); releasing",
                self.p.peer_name, b.term, self.term
            );
            return self.release_after_split_brain(now, cause);
        }
        if let Some(b) = peer.filter(|b| b.state == NodeState::Active) {
            let peer_wins = b.term > self.term || (b.term == self.term && !self.p.preferred);
            if peer_wins {
                let cause = format!(
                    "split brain: peer {} is active with term {} (ours {}); releasing",
                    self.p.peer_name, b.term, self.term
                );
                return self.release_after_split_brain(now, cause);
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
        // A daemon that just started and adopted a running service has neither heard the peer
        // nor had a tie-breaker answer yet; demoting then would drop a healthy service. Only a
        // peer silent past deadtime (or never heard once initdead is over) together with a
        // tie-breaker that answered "unreachable" `fall` rounds in a row makes this node the
        // isolated one: a survivor starved by its own database's recovery was seen to miss
        // single rounds (its ping could not finish in time), and one miss must not cost the
        // only copy of the service.
        let alone = match self.peer_view(now) {
            PeerView::Dead => true,
            PeerView::Unknown => now >= self.boot_at + self.p.initdead_ms,
            PeerView::Alive | PeerView::Late => false,
        };
        if alone
            && self.p.tiebreaker
            && self.tiebreaker == Some(false)
            && self.tiebreaker_fails >= self.p.tiebreaker_fall.max(1)
        {
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

    fn release_after_split_brain(&mut self, now: Millis, cause: String) {
        self.split_brains += 1;
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
    }

    pub(super) fn decide_standby(&mut self, now: Millis) {
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
                            if let Some(f) = self.p.fencing.clone() {
                                self.start_fence(now, &f);
                            }
                            return;
                        }
                    }
                }
                self.begin_acquire(now, cause, None);
            }
        }
    }

    pub(super) fn maybe_failback(&mut self, now: Millis) {
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
            self.ask_handoff(now, Role::Receiver, None);
        }
    }

    /// Healthy enough to run the service: not failed and the disk may be promoted.
    pub(super) fn fit_to_acquire(&self) -> bool {
        !matches!(self.phase, Phase::Failed(_)) && (!self.p.disk_gate || self.disk.can_promote())
    }

    /// Why the peer could not take the service in a planned handoff, if it could not.
    pub(super) fn peer_unfit_reason(&self, now: Millis) -> Option<String> {
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

    pub(super) fn peer_can_take_over(&self, now: Millis) -> bool {
        self.peer_unfit_reason(now).is_none()
    }

    /// Should this standby node start the service now? Rule 4 lives here: no takeover during
    /// initdead, and none before the peer has been silent on every link for deadtime.
    pub(super) fn verdict(&self, now: Millis) -> Verdict {
        self.verdict_with(now, true)
    }

    /// `verdict`, optionally leaving out the witness lease: "would this node take over if it
    /// held the lease?" decides whether it asks for one.
    pub(super) fn verdict_with(&self, now: Millis, need_lease: bool) -> Verdict {
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
                // A fence that completed with the peer silent since proves it is down, whatever it
                // last said; `Cleared` is reset by any beat heard after it.
                if !matches!(self.fence, Fence::Cleared)
                    && self
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
        if self.outdate.outdating_locally() {
            blockers.push("outdating the local disk at the peer's request".into());
        }
        if let Fence::Failed { retry_at } = self.fence {
            blockers.push(format!(
                "fencing the peer failed; retrying in {} ms",
                retry_at.saturating_sub(now)
            ));
        }
        if need_lease && go.is_some() {
            blockers.extend(self.lease_blocker(now));
        }
        match go {
            Some((cause, fence)) if blockers.is_empty() => Verdict::Go { cause, fence },
            _ => Verdict::Blocked(blockers),
        }
    }
}
