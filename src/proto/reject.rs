//! Why a received datagram was not delivered, and the per-reason counters for status.
//!
//! Owns: the typed rejection reasons and their counting. Must not touch: logging or rate limiting
//! (the shell logs rejections at a rate limit), the decision of what a rejection means for the
//! peer's liveness (the core decides that).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A received datagram that was dropped, and why. Listed in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Reject {
    /// The caller passed a link index the receiver was not built with (a bug in the caller,
    /// reported rather than panicking).
    #[error("unknown link index {link}: the receiver was built for {links} link(s)")]
    UnknownLink { link: usize, links: usize },
    #[error("datagram too short: {len} bytes, a heartbeat is {expected} bytes")]
    TooShort { len: usize, expected: usize },
    #[error("datagram too long: {len} bytes, a heartbeat is at most {max} bytes")]
    TooLong { len: usize, max: usize },
    #[error(
        "unknown key id {key_id}: add it to the keyring on this node, or fix the sender's key id"
    )]
    UnknownKeyId { key_id: u8 },
    #[error("bad mac under key id {key_id}: different key or algorithm on the sender, or a corrupted or forged datagram")]
    BadMac { key_id: u8 },
    #[error("bad magic: authenticated, but not a twinbeat heartbeat")]
    BadMagic,
    #[error(
        "unsupported protocol version {version}: this node speaks version {supported}; upgrade it"
    )]
    UnsupportedVersion { version: u8, supported: u8 },
    #[error("heartbeat from cluster {cluster_id}, but this node is in cluster {expected}: check cluster-id on both nodes")]
    WrongCluster { cluster_id: u32, expected: u32 },
    #[error("unknown critical flags {flags:#06x}: the sender uses a feature this node does not understand; upgrade it")]
    UnknownFlags { flags: u16 },
    #[error("heartbeat carries this node's own id {node_id}: a network loop, or both nodes configured with the same node id")]
    FromSelf { node_id: u16 },
    #[error("heartbeat from node {node_id}, but the peer is node {expected}: check node ids in both configs")]
    UnknownSender { node_id: u16, expected: u16 },
    #[error(
        "replay: generation {generation} is older than the peer's current generation {current}"
    )]
    Replay { generation: u64, current: u64 },
    #[error("stale: sequence {seq} is not newer than {highest} already seen in this generation (reorder or replay)")]
    Stale { seq: u64, highest: u64 },
    #[error("bad heartbeat body: {field} has invalid value {value}")]
    BadBody { field: &'static str, value: u32 },
}

/// Datagrams received, by outcome. Serialized into `twinbeat status --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Counters {
    /// Delivered with a new body.
    pub fresh: u64,
    /// The same datagram already delivered from another link: proves this link alive, not a
    /// rejection, so it is counted apart from them.
    pub link_duplicate: u64,
    pub unknown_link: u64,
    pub too_short: u64,
    pub too_long: u64,
    pub unknown_key_id: u64,
    pub bad_mac: u64,
    pub bad_magic: u64,
    pub unsupported_version: u64,
    pub wrong_cluster: u64,
    pub unknown_flags: u64,
    pub from_self: u64,
    pub unknown_sender: u64,
    pub replay: u64,
    pub stale: u64,
    pub bad_body: u64,
}

impl Counters {
    pub(crate) fn record(&mut self, reject: &Reject) {
        let slot = match reject {
            Reject::UnknownLink { .. } => &mut self.unknown_link,
            Reject::TooShort { .. } => &mut self.too_short,
            Reject::TooLong { .. } => &mut self.too_long,
            Reject::UnknownKeyId { .. } => &mut self.unknown_key_id,
            Reject::BadMac { .. } => &mut self.bad_mac,
            Reject::BadMagic => &mut self.bad_magic,
            Reject::UnsupportedVersion { .. } => &mut self.unsupported_version,
            Reject::WrongCluster { .. } => &mut self.wrong_cluster,
            Reject::UnknownFlags { .. } => &mut self.unknown_flags,
            Reject::FromSelf { .. } => &mut self.from_self,
            Reject::UnknownSender { .. } => &mut self.unknown_sender,
            Reject::Replay { .. } => &mut self.replay,
            Reject::Stale { .. } => &mut self.stale,
            Reject::BadBody { .. } => &mut self.bad_body,
        };
        // Saturating: a counter that stops at u64::MAX is still truthful enough; a panic is not.
        *slot = slot.saturating_add(1);
    }

    /// All rejections together (everything except `fresh` and `link_duplicate`).
    pub fn rejected(&self) -> u64 {
        [
            self.unknown_link,
            self.too_short,
            self.too_long,
            self.unknown_key_id,
            self.bad_mac,
            self.bad_magic,
            self.unsupported_version,
            self.wrong_cluster,
            self.unknown_flags,
            self.from_self,
            self.unknown_sender,
            self.replay,
            self.stale,
            self.bad_body,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
    }
}
