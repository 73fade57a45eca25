//! The core's self-description for `twinbeat status`: plain serializable data, computed on demand.

use serde::{Deserialize, Serialize};

use super::liveness::PeerView;
use super::plan::StepTiming;
use super::types::{DiskState, HandoffMsg, Millis, NodeState, OutdateMsg};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Millis,
    pub from: NodeState,
    pub to: NodeState,
    pub cause: String,
    /// Steps run on the way (for transitions that end a plan), with their timings.
    pub steps: Vec<StepTiming>,
    pub total_ms: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub up: bool,
    pub last_heard_ms_ago: Option<Millis>,
    pub beats: u64,
    pub late: u64,
    pub rejected: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub view: PeerView,
    pub state: Option<NodeState>,
    pub term: Option<u64>,
    pub held: Option<u32>,
    pub disk: Option<DiskState>,
    pub generation: Option<u64>,
    pub last_heard_ms_ago: Option<Millis>,
    pub restarts_seen: u64,
    pub max_gap_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub name: String,
    pub kind: String,
    pub held: bool,
    /// "acquiring" or "releasing" while a step runs on it.
    pub running: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The node asks the witness for the lease (it holds, takes or would take the service).
    pub wanted: bool,
    /// How long the lease is still trusted on this node's clock (drift bound applied).
    pub valid_for_ms: Option<Millis>,
    pub last_grant_ms_ago: Option<Millis>,
    pub grants: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub state: NodeState,
    pub term: u64,
    pub since_ms: Millis,
    pub cause: String,
    pub failed_reason: Option<String>,
    /// Why this node would not take over right now (empty when nothing stands in the way).
    pub blockers: Vec<String>,
    pub disk: DiskState,
    pub tiebreaker: Option<bool>,
    /// Failed tie-breaker rounds in a row (an active node without its peer steps down at
    /// `[tiebreaker] fall`).
    #[serde(default)]
    pub tiebreaker_fails: u32,
    /// The witness lease as this node believes it (None without a witness).
    #[serde(default)]
    pub lease: Option<LeaseStatus>,
    pub maintenance: bool,
    pub peer: PeerStatus,
    pub links: Vec<LinkStatus>,
    pub resources: Vec<ResourceStatus>,
    pub handoff: Option<HandoffMsg>,
    /// What this node says about outdating in its heartbeats: its own fence-peer request to
    /// the peer, or its answer to the peer's.
    #[serde(default)]
    pub outdate: Option<OutdateMsg>,
    pub takeovers: u64,
    pub restarts: u64,
    pub split_brains: u64,
    /// Newest last.
    pub transitions: Vec<Transition>,
}
