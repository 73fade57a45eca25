//! The sending side: numbers and signs heartbeats.
//!
//! Owns: this node's (generation, next seq) and the key id it signs with. Must not touch:
//! sockets (the shell sends the returned bytes on every link), persistence of the generation
//! (the shell reads, increments and writes it before building a `Sender`).

use super::auth::Keyring;
use super::wire::{encode, encode_v1, EncodeError, Header};
use crate::core::types::Beat;

#[derive(Debug, Clone)]
pub struct Sender {
    keyring: Keyring,
    header: Header,
    /// The peer's current run reads version 2 (see "Versions on a mixed pair" in `wire`).
    peer_reads_v2: bool,
}

impl Sender {
    /// A sender for this boot. `generation` must be larger than every generation this node used
    /// before (persisted, +1 per start), or the peer rejects the beats as replays. Seqs start at 0.
    pub fn new(
        keyring: Keyring,
        key_id: u8,
        cluster_id: u32,
        node_id: u16,
        generation: u64,
    ) -> Result<Sender, EncodeError> {
        if !keyring.contains(key_id) {
            return Err(EncodeError::UnknownKeyId { key_id });
        }
        Ok(Sender {
            keyring,
            header: Header {
                cluster_id,
                key_id,
                node_id,
                generation,
                seq: 0,
            },
            peer_reads_v2: false,
        })
    }

    /// Encodes the next heartbeat: version 2 once the peer is known to read it, version 1
    /// (without stamp and echo, flagged [`FLAG_READS_V2`](super::wire::FLAG_READS_V2)) until
    /// then. Send the SAME bytes on every link: the receiver recognises the
    /// copies as one heartbeat and uses them only as proof that each link is alive.
    pub fn next(&mut self, beat: &Beat) -> Vec<u8> {
        // The key id was checked in `new`/`set_key_id`, so encoding cannot fail; an empty
        // datagram would be rejected by the peer as too short rather than crash this node.
        let bytes = if self.peer_reads_v2 {
            encode(&self.header, beat, &self.keyring)
        } else {
            encode_v1(&self.header, beat, &self.keyring)
        }
        .unwrap_or_default();
        // Saturating: at one beat per millisecond u64 lasts 584 million years; should it ever
        // saturate, the peer sees stale beats instead of this node panicking.
        self.header.seq = self.header.seq.saturating_add(1);
        bytes
    }

    /// What the peer's newest fresh beat said about the versions it reads
    /// ([`Accepted::reads_v2`](super::receiver::Accepted)): version 2 (with the stamp and the
    /// echo) from now on, or version 1 again for a peer that was downgraded.
    pub fn set_peer_reads_v2(&mut self, reads_v2: bool) {
        self.peer_reads_v2 = reads_v2;
    }

    /// Switches the signing key (rotation step two: every receiver already accepts the new id).
    pub fn set_key_id(&mut self, key_id: u8) -> Result<(), EncodeError> {
        if !self.keyring.contains(key_id) {
            return Err(EncodeError::UnknownKeyId { key_id });
        }
        self.header.key_id = key_id;
        Ok(())
    }

    /// The header the next call to [`Sender::next`] will use.
    pub fn next_header(&self) -> Header {
        self.header
    }
}
