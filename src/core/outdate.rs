//! The answer to DRBD's `fence-peer` handler (the role Heartbeat's dopd played): what became of
//! "outdate the peer's disk", and the exit code DRBD 8.4 expects for it.
//!
//! DRBD acts on the code (`conn_try_outdate_peer` in drbd_nl.c): 3 and 4 mark the peer's disk
//! Inconsistent / Outdated, 5 marks it Outdated only if the local disk is UpToDate ("assumed
//! dead"), 6 outdates the *local* disk (the peer is Primary), 7 marks it Outdated (stonith). Any
//! other code is "helper broken": DRBD changes nothing, so a promote stays refused and a Primary
//! keeps writing with the peer's disk unknown. That is why every doubt here maps to `Failed`
//! (exit 1) and never to one of DRBD's codes: a wrong 5 or 6 would let DRBD assume something
//! nobody checked.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutdateVerdict {
    /// The peer's disk is Inconsistent (or worse): nothing to outdate. Exit 3.
    PeerInconsistent,
    /// The peer outdated its disk, or it was Outdated already. Exit 4.
    PeerOutdated,
    /// The peer could not be asked: silent on every heartbeat link, or no answer in time. Exit 5.
    PeerUnreachable,
    /// The peer holds the service (DRBD Primary) and will not outdate itself. Exit 6.
    PeerPrimary,
    /// The peer was unreachable and twinbeat's `[fencing]` command succeeded. Exit 7.
    PeerFenced,
    /// Asked, but the peer could not outdate its disk, or this node cannot ask. Exit 1.
    Failed,
}

impl OutdateVerdict {
    /// The `fence-peer` handler's exit status for DRBD.
    pub fn exit_code(self) -> u8 {
        match self {
            OutdateVerdict::PeerInconsistent => 3,
            OutdateVerdict::PeerOutdated => 4,
            OutdateVerdict::PeerUnreachable => 5,
            OutdateVerdict::PeerPrimary => 6,
            OutdateVerdict::PeerFenced => 7,
            OutdateVerdict::Failed => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutdateOutcome {
    pub verdict: OutdateVerdict,
    /// For the operator and DRBD's log: what was asked, who answered what.
    pub message: String,
}
