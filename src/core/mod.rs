//! The failover logic, as a pure state machine.
//!
//! Owns: node state, peer liveness per link, ordered acquire/release with per-step timeouts,
//! rollback, restarts, planned handoff, terms and split-brain rules, safety gates.
//! Must not touch: sockets, processes, files, clocks, randomness, tokio. Time arrives as `Millis`
//! in every call; outputs leave through `Node::poll_action`.

pub mod params;
pub mod types;

pub use params::{CoreParams, FenceParams, LeaseParams, StepParams, DEFAULT_TIEBREAKER_FALL};
pub use types::*;

mod handoff;
pub mod io;
pub mod liveness;
mod node;
pub mod outdate;
pub mod plan;
pub mod status;

pub use io::{Action, Command, CommandOutcome, Input, OpId, Severity};
pub use liveness::PeerView;
pub use node::Node;
pub use outdate::{OutdateOutcome, OutdateVerdict};
pub use plan::{StepDirection, StepTiming};
pub use status::{LeaseStatus, LinkStatus, PeerStatus, ResourceStatus, Status, Transition};
