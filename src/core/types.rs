//! Plain data shared by the core, the wire format and the shell: what a heartbeat says about its
//! sender. No behaviour lives here beyond small conversions, so `proto/` can encode these types
//! without depending on the state machine.

use serde::{Deserialize, Serialize};

/// Monotonic milliseconds handed in by the shell. The core never reads a clock.
pub type Millis = u64;

/// Largest number of `[[resource]]` steps: the wire carries held steps as a `u32` bitmap.
pub const MAX_STEPS: usize = 32;

/// A node's externally visible state, as carried in every heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Booting: has not heard the peer and `initdead` has not passed yet.
    Init,
    Standby,
    Acquiring,
    Active,
    Releasing,
    /// Cannot run the service until an operator acts or the peer takes over.
    Failed,
    /// Unmanaged: observes, never acts.
    Maintenance,
    /// The daemon released everything and is exiting: the peer may take over at once.
    Stopped,
}

impl NodeState {
    pub const ALL: [NodeState; 8] = [
        NodeState::Init,
        NodeState::Standby,
        NodeState::Acquiring,
        NodeState::Active,
        NodeState::Releasing,
        NodeState::Failed,
        NodeState::Maintenance,
        NodeState::Stopped,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<NodeState> {
        NodeState::ALL.get(code as usize).copied()
    }

    /// True when a node in this state may be running (part of) the service.
    pub fn may_hold_service(self) -> bool {
        matches!(
            self,
            NodeState::Acquiring | NodeState::Active | NodeState::Releasing
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Init => "init",
            NodeState::Standby => "standby",
            NodeState::Acquiring => "acquiring",
            NodeState::Active => "active",
            NodeState::Releasing => "releasing",
            NodeState::Failed => "failed",
            NodeState::Maintenance => "maintenance",
            NodeState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The local replicated disk as DRBD reports it (`disk:` in `drbdsetup events2`).
/// `NotReplicated` means the configuration has no DRBD resource, so there is nothing to gate on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskState {
    Unknown,
    NotReplicated,
    Diskless,
    Attaching,
    Failed,
    Negotiating,
    Inconsistent,
    Outdated,
    Consistent,
    UpToDate,
}

impl DiskState {
    pub const ALL: [DiskState; 10] = [
        DiskState::Unknown,
        DiskState::NotReplicated,
        DiskState::Diskless,
        DiskState::Attaching,
        DiskState::Failed,
        DiskState::Negotiating,
        DiskState::Inconsistent,
        DiskState::Outdated,
        DiskState::Consistent,
        DiskState::UpToDate,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<DiskState> {
        DiskState::ALL.get(code as usize).copied()
    }

    /// Promoting is only safe from a disk holding the newest data (or when there is no DRBD).
    pub fn can_promote(self) -> bool {
        matches!(self, DiskState::UpToDate | DiskState::NotReplicated)
    }
}

/// Why a node refuses a handoff; carried on the wire so the operator on the other node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefuseReason {
    /// A transition is already running.
    Busy,
    /// The receiving node cannot run the service (failed, or disk not up to date).
    NotHealthy,
    /// The node asked to release does not hold the service.
    NotActive,
    /// The node is in maintenance mode.
    Maintenance,
    /// Another handoff is already under way.
    HandoffInProgress,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 5] = [
        RefuseReason::Busy,
        RefuseReason::NotHealthy,
        RefuseReason::NotActive,
        RefuseReason::Maintenance,
        RefuseReason::HandoffInProgress,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<RefuseReason> {
        RefuseReason::ALL.get(code as usize).copied()
    }

    pub fn describe(self) -> &'static str {
        match self {
            RefuseReason::Busy => "a transition is already running",
            RefuseReason::NotHealthy => {
                "the node cannot run the service (failed or disk not UpToDate)"
            }
            RefuseReason::NotActive => "the node does not hold the service",
            RefuseReason::Maintenance => "the node is in maintenance mode",
            RefuseReason::HandoffInProgress => "another handoff is already under way",
        }
    }
}

/// One message of the planned-handoff protocol (standby / takeover).
/// The giver is the node that releases, the receiver the node that acquires afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum HandoffKind {
    /// Receiver → giver: "release the service to me" (`twinbeat takeover`).
    Request,
    /// Giver → receiver: "will you take the service?" (`twinbeat standby`).
    Offer,
    /// Either side agrees to the other's request or offer.
    Accept,
    /// Either side declines, with the reason.
    Refuse { reason: RefuseReason },
    /// Giver → receiver: "I have released everything; acquire now".
    Released,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandoffMsg {
    pub id: u32,
    pub kind: HandoffKind,
}

/// DRBD-level fencing between the daemons (the role Heartbeat's dopd played).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutdateKind {
    /// "Outdate your disk: I am about to continue without you."
    Request,
    /// "My disk is outdated (or I am not attached)."
    Done,
    /// "I could not outdate my disk."
    Failed,
    /// "I hold the service (DRBD Primary): I will not outdate myself." DRBD's exit code 6.
    Refused,
    /// "My disk is Inconsistent or worse: there is nothing to outdate." DRBD's exit code 3.
    Inconsistent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutdateMsg {
    pub id: u32,
    pub kind: OutdateKind,
}

/// "The newest heartbeat I received from you": the receiver of a beat names the beat of its
/// peer it heard last, by the peer's boot generation and the stamp that beat carried. The peer
/// learns from it that this node heard it at or after that stamp (its own clock), which bounds
/// when this node could declare it dead (see `core/node/lease.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Echo {
    pub generation: u64,
    pub stamp: Millis,
}

/// What a heartbeat says about its sender, beyond the authenticated header
/// (cluster, key, node, generation, sequence) that `proto/` owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Beat {
    pub state: NodeState,
    /// Increments on every takeover; the higher term keeps the service after a split.
    pub term: u64,
    /// Bit `i` set: resource step `i` is held (acquired and not yet released).
    pub held: u32,
    pub disk: DiskState,
    pub handoff: Option<HandoffMsg>,
    pub outdate: Option<OutdateMsg>,
    /// The sender's clock when it sent this beat. `None` from a peer that does not stamp its
    /// beats (wire version 1).
    #[serde(default)]
    pub stamp: Option<Millis>,
    /// The newest stamped beat the sender has received from the receiver of this one.
    #[serde(default)]
    pub echo: Option<Echo>,
}

impl Beat {
    pub fn holds_anything(&self) -> bool {
        self.held != 0
    }
}
