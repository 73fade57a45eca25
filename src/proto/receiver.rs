//! The receiving side: the full check pipeline for one peer, and its counters.
//!
//! Owns: the order of checks (stateless ones in `wire::open`, then sender, replay window, body)
//! and counting every outcome. Must not touch: sockets, clocks, logging (the shell logs
//! rejections at a rate limit), liveness decisions (the core gets `Accepted` with the link).

use super::auth::Keyring;
use super::reject::{Counters, Reject};
use super::replay::{Verdict, Window};
use super::wire::{open, parse_body, Header};
use crate::core::types::Beat;

/// A datagram that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub header: Header,
    pub beat: Beat,
    /// `true`: a new body, deliver it. `false`: the same beat already came in on another link;
    /// it only proves that the link it arrived on is alive.
    pub fresh: bool,
    /// The sender reads wire version 2 (it sent it, or flagged a version-1 datagram so): the
    /// shell's `Sender` may answer in version 2.
    pub reads_v2: bool,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    keyring: Keyring,
    cluster_id: u32,
    local_node_id: u16,
    peer_node_id: u16,
    window: Window,
    counters: Counters,
}

impl Receiver {
    /// A receiver for heartbeats from `peer_node_id` over `links` links (indexes `0..links`).
    pub fn new(
        keyring: Keyring,
        cluster_id: u32,
        local_node_id: u16,
        peer_node_id: u16,
        links: usize,
    ) -> Receiver {
        Receiver {
            keyring,
            cluster_id,
            local_node_id,
            peer_node_id,
            window: Window::new(links),
            counters: Counters::default(),
        }
    }

    /// Checks one datagram received on `link`, counts the outcome and returns it.
    pub fn accept(&mut self, link: usize, bytes: &[u8]) -> Result<Accepted, Reject> {
        let outcome = self.check(link, bytes);
        match &outcome {
            Ok(a) if a.fresh => self.counters.fresh = self.counters.fresh.saturating_add(1),
            Ok(_) => self.counters.link_duplicate = self.counters.link_duplicate.saturating_add(1),
            Err(reject) => self.counters.record(reject),
        }
        outcome
    }

    fn check(&mut self, link: usize, bytes: &[u8]) -> Result<Accepted, Reject> {
        // A bad link index is the caller's bug; report it before looking at the bytes.
        self.window.check_link(link)?;
        let opened = open(bytes, &self.keyring, self.cluster_id)?;
        let header = opened.header;
        if header.node_id == self.local_node_id {
            return Err(Reject::FromSelf {
                node_id: header.node_id,
            });
        }
        if header.node_id != self.peer_node_id {
            return Err(Reject::UnknownSender {
                node_id: header.node_id,
                expected: self.peer_node_id,
            });
        }
        let verdict = self.window.check(link, header.generation, header.seq)?;
        // Parse before committing: an authentic but malformed body (a buggy peer) must not move
        // the window, or its seq would shadow nothing and only confuse the link bookkeeping.
        let beat = parse_body(&opened)?;
        self.window
            .commit(link, header.generation, header.seq, verdict);
        Ok(Accepted {
            header,
            beat,
            fresh: verdict == Verdict::Fresh,
            reads_v2: opened.reads_v2(),
        })
    }

    /// Per-outcome counts since start, for `twinbeat status --json`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The peer's boot generation as last accepted, if any.
    pub fn peer_generation(&self) -> Option<u64> {
        self.window.generation()
    }
}
