//! What goes into the core (`Input`) and what comes out (`Action`). Both are serde enums so a
//! run can be recorded as JSON lines and replayed.

use serde::{Deserialize, Serialize};

use super::outdate::OutdateOutcome;
use super::types::{Beat, DiskState, Millis, NodeState};

/// Identifies one external operation (a step or a fence) so a late result can be told apart.
pub type OpId = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "input")]
pub enum Input {
    /// An authenticated heartbeat from the peer. `fresh == false` marks a copy of an already
    /// delivered datagram arriving on another link: it proves the link works, nothing more.
    Heartbeat {
        link: usize,
        generation: u64,
        beat: Beat,
        fresh: bool,
    },
    /// A datagram on `link` failed authentication, replay or parsing.
    HeartbeatRejected { link: usize, reason: String },
    /// The executor finished `Action::Acquire` / `Action::Release` with this op id.
    StepFinished {
        op: OpId,
        result: Result<(), String>,
    },
    /// Answer to `Action::ProbeAll`: bit `i` set when resource step `i` is in place.
    Probed { held: u32 },
    /// Periodic health of a monitored step while active.
    Health {
        step: usize,
        ok: bool,
        detail: String,
    },
    /// The local replicated disk changed state.
    Disk(DiskState),
    /// The tie-breaker's current verdict (ping targets reachable, or witness lease held).
    TieBreaker { ok: bool },
    /// The witness granted the lease request this node sent at `sent_at` (this node's clock,
    /// from the shell's own record of the request) for `lease_ms` of the witness's clock.
    LeaseGranted { sent_at: Millis, lease_ms: Millis },
    /// The executor finished `Action::FencePeer`.
    FenceFinished {
        op: OpId,
        result: Result<(), String>,
    },
    /// An operator command; answered by `Action::CommandDone` with the same id.
    Command { id: u64, command: Command },
    /// DRBD's fence-peer handler (`twinbeat fence-peer`) asks to outdate the peer's disk;
    /// answered by `Action::OutdatePeerDone` with the same id within `timeout_ms` (the core's
    /// default when `None`).
    OutdatePeer { id: u64, timeout_ms: Option<Millis> },
    /// The executor finished `Action::OutdateDisk`.
    OutdateFinished {
        op: OpId,
        result: Result<(), String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Command {
    /// Hand the service to the peer (Heartbeat's hb_standby).
    Standby,
    /// Take the service from the peer, or start it here when the peer does not hold it
    /// (Heartbeat's hb_takeover). Also clears a local failure.
    Takeover,
    /// Stop acting (keep observing) or resume.
    Maintenance { on: bool },
    /// Release everything (if held) before the daemon exits.
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum CommandOutcome {
    /// Done. `gap_ms` is the measured service gap of a handoff (release start to peer active,
    /// or peer release seen to local active).
    Done {
        message: String,
        gap_ms: Option<Millis>,
    },
    /// Not attempted; nothing changed.
    Refused { reason: String },
    /// Attempted and did not complete; `reason` says where the service is now.
    Failed { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Send this beat on every link.
    SendHeartbeat(Beat),
    /// Run the acquire of step `step`; answer with `Input::StepFinished { op, .. }`.
    Acquire {
        op: OpId,
        step: usize,
        timeout_ms: Millis,
    },
    /// Run the release of step `step`; answer with `Input::StepFinished { op, .. }`.
    Release {
        op: OpId,
        step: usize,
        timeout_ms: Millis,
    },
    /// The core gave up on `op` (it timed out): stop it; its result will be ignored.
    Cancel {
        op: OpId,
    },
    /// Fence the peer before a takeover; answer with `Input::FenceFinished`.
    FencePeer {
        op: OpId,
        timeout_ms: Millis,
    },
    /// Announce the service addresses again (gratuitous ARP / unsolicited NA).
    Announce,
    /// Persist the term before acting on it, so a restart never reuses an older term.
    PersistTerm(u64),
    /// Probe every step and answer with `Input::Probed`.
    ProbeAll,
    StateChanged {
        from: NodeState,
        to: NodeState,
        cause: String,
    },
    Alert {
        severity: Severity,
        message: String,
    },
    CommandDone {
        id: u64,
        outcome: CommandOutcome,
    },
    /// The peer asked: mark the local DRBD disk Outdated (`drbdadm outdate`); answer with
    /// `Input::OutdateFinished`. Never emitted while this node may hold the service.
    OutdateDisk {
        op: OpId,
        timeout_ms: Millis,
    },
    /// The answer to `Input::OutdatePeer` with this id.
    OutdatePeerDone {
        id: u64,
        outcome: OutdateOutcome,
    },
}
