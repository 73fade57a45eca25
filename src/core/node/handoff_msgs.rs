//! The handoff protocol's messages from the peer, and how a handoff ends.

use super::*;

impl Node {
    // ---- the handoff protocol ----

    pub(super) fn on_peer_handoff(&mut self, now: Millis, msg: HandoffMsg) {
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
                self.end_handoff_refused(format!(
                    "peer {} refused: {}",
                    self.p.peer_name,
                    reason.describe()
                ));
            }
            _ => {}
        }
    }

    pub(super) fn refuse_peer(&mut self, now: Millis, id: u32, reason: RefuseReason) {
        self.refusal = Some(Refusal {
            id,
            reason,
            until: now + self.answer_timeout(),
        });
    }

    pub(super) fn finish_handoff_id(&mut self, id: u32) {
        self.handoff_ids_done.push_back(id);
        while self.handoff_ids_done.len() > HANDOFF_IDS_KEPT {
            self.handoff_ids_done.pop_front();
        }
    }

    pub(super) fn end_handoff_refused(&mut self, reason: String) {
        if let Some(h) = self.handoff.take() {
            self.finish_handoff_id(h.id);
            if let Some(c) = h.command {
                self.refuse(c, reason);
            }
        }
    }

    pub(super) fn end_handoff(&mut self, now: Millis, result: Result<String, String>) {
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
}
