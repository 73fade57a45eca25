//! The planned-handoff protocol's local half: which handoff this node is in, in which role and
//! stage, and what it says about it in its heartbeats.
//!
//! A handoff always moves the service one way: the *giver* releases everything first, says
//! `Released`, and only then does the *receiver* acquire. Either side may start it:
//! `twinbeat standby` on the giver sends `Offer`, `twinbeat takeover` on the receiver sends
//! `Request`; the other side answers `Accept` or `Refuse`.

use super::types::{HandoffKind, HandoffMsg, Millis, RefuseReason};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Giver,
    Receiver,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// We sent `Offer` (giver) or `Request` (receiver) and wait for `Accept`.
    Asked,
    /// Agreed. The giver is releasing; the receiver waits for `Released`.
    Agreed,
    /// Giver only: everything released; waiting for the receiver to become active.
    Released,
    /// Receiver only: acquiring.
    Acquiring,
}

#[derive(Clone, Debug)]
pub(crate) struct Handoff {
    pub id: u32,
    pub role: Role,
    pub stage: Stage,
    pub deadline: Millis,
    /// The operator command waiting for the outcome, if this node's operator started it.
    pub command: Option<u64>,
    /// When the service gap started as far as this node can tell (giver: release start;
    /// receiver: the giver's agreement seen).
    pub gap_from: Option<Millis>,
}

impl Handoff {
    /// What this node says about the handoff in its heartbeats.
    pub fn message(&self) -> HandoffMsg {
        let kind = match (self.role, self.stage) {
            (Role::Giver, Stage::Asked) => HandoffKind::Offer,
            (Role::Receiver, Stage::Asked) => HandoffKind::Request,
            (Role::Giver, Stage::Released) => HandoffKind::Released,
            _ => HandoffKind::Accept,
        };
        HandoffMsg { id: self.id, kind }
    }
}

/// A refusal is repeated in heartbeats for a while so a lost datagram does not lose it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal {
    pub id: u32,
    pub reason: RefuseReason,
    pub until: Millis,
}

impl Refusal {
    pub fn message(&self) -> HandoffMsg {
        HandoffMsg {
            id: self.id,
            kind: HandoffKind::Refuse {
                reason: self.reason,
            },
        }
    }
}
