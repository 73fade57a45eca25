//! The heartbeat datagram: fixed layout, encoding, authenticated opening, body parsing.
//!
//! Owns: the byte layout below and the order of the stateless checks. Must not touch: sockets,
//! clocks, replay state (`replay.rs`), key storage (`auth.rs`), what a beat means (`core/`).
//!
//! # Layout (version 1)
//!
//! All integers are big-endian (network byte order). Offsets are fixed; no field is optional in
//! size, so a datagram's length alone says whether it can be a heartbeat.
//!
//! ```text
//! offset size field          value
//! ------ ---- -------------- -----------------------------------------------------------------
//!  0      4   magic          "TWBT" (0x54 0x57 0x42 0x54)
//!  4      1   version        1; any other value is rejected (UnsupportedVersion)
//!  5      1   key id         which keyring key made the tag
//!  6      2   flags          0 in version 1; see "Flags" below
//!  8      4   cluster id     both nodes of a pair share it; others are rejected (WrongCluster)
//! 12      2   node id        the sender's node id
//! 14      8   generation     boot generation: persisted, incremented on every daemon start
//! 22      8   sequence       per generation, +1 per heartbeat (the same bytes go on every link)
//! ---- body ---------------------------------------------------------------------------------
//! 30      8   term           increments on every takeover
//! 38      4   held           bitmap: bit i set = resource step i held
//! 42      1   node state     NodeState::code()
//! 43      1   disk state     DiskState::code()
//! 44      1   handoff kind   0 none, 1 request, 2 offer, 3 accept, 4 refuse, 5 released
//! 45      1   refuse reason  RefuseReason::code() when handoff kind is refuse, else 0
//! 46      4   handoff id     0 when there is no handoff message
//! 50      1   outdate kind   0 none, 1 request, 2 done, 3 failed, 4 refused (holds the
//!                            service), 5 inconsistent (nothing to outdate)
//! 51      4   outdate id     0 when there is no outdate message
//! ---- tag ----------------------------------------------------------------------------------
//! 55     32   tag            HMAC-SHA256 over bytes 0..55     (datagram: 87 bytes)
//! 55     20   tag            HMAC-SHA1   over bytes 0..55     (datagram: 75 bytes)
//! ```
//!
//! Unused slots must be zero: the encoding is canonical (one beat, one byte string), so a
//! round trip is exact and a non-zero "unused" byte is a sender bug worth reporting (BadBody).
//!
//! # Flags
//!
//! The low byte (bits 0–7) holds *critical* flags: a flag that changes how the datagram must be
//! read. An unknown critical bit is rejected (UnknownFlags), because guessing would misread the
//! peer. The high byte (bits 8–15) holds *advisory* flags: hints an older node may safely ignore,
//! so unknown advisory bits are accepted and dropped. Version 1 defines no flags and sends 0.
//! A change of layout bumps the version instead.
//!
//! # Check order on receive (stateless part, [`open`])
//!
//! 1. length: at most [`MAX_DATAGRAM`] (TooLong), at least the heartbeat length (TooShort);
//! 2. key id: must be in the keyring (UnknownKeyId);
//! 3. the MAC, in constant time, over everything before the trailing tag (BadMac);
//! 4. magic, version, then the exact length of that version (TooLong), cluster id, flags.
//!
//! Magic and version are checked after the MAC on purpose: the tag is always the trailing
//! `tag_len` bytes and covers everything before it, whatever the version, so an authentic
//! datagram from a newer peer is reported as UnsupportedVersion (actionable) rather than as a
//! length or MAC error. Nothing unauthenticated is believed beyond the key id, which only picks
//! the key to check with. The stateful checks (sender, replay) then the body come in
//! `receiver.rs`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::auth::{Algorithm, Keyring};
use super::reject::Reject;
use crate::core::types::{
    Beat, DiskState, HandoffKind, HandoffMsg, NodeState, OutdateKind, OutdateMsg, RefuseReason,
};

pub const MAGIC: [u8; 4] = *b"TWBT";
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 30;
/// Bytes of body.
pub const BODY_LEN: usize = 25;
/// Bytes covered by the tag: header and body.
pub const SIGNED_LEN: usize = HEADER_LEN + BODY_LEN;
/// Largest datagram the receiver looks at, and the receive buffer size the shell should use
/// (anything longer is rejected before any work). Leaves room for later versions to grow.
pub const MAX_DATAGRAM: usize = 512;

/// Critical flag bits (see the module doc): unknown ones are rejected.
pub const CRITICAL_FLAGS: u16 = 0x00ff;
/// Critical flags this version understands.
pub const KNOWN_CRITICAL_FLAGS: u16 = 0x0000;

/// Length of a version-1 heartbeat under `algorithm`: 87 bytes for HMAC-SHA256, 75 for HMAC-SHA1.
pub const fn datagram_len(algorithm: Algorithm) -> usize {
    SIGNED_LEN + algorithm.tag_len()
}

mod off {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const KEY_ID: usize = 5;
    pub const FLAGS: usize = 6;
    pub const CLUSTER: usize = 8;
    pub const NODE: usize = 12;
    pub const GENERATION: usize = 14;
    pub const SEQ: usize = 22;
    pub const TERM: usize = 30;
    pub const HELD: usize = 38;
    pub const STATE: usize = 42;
    pub const DISK: usize = 43;
    pub const HANDOFF_KIND: usize = 44;
    pub const REFUSE: usize = 45;
    pub const HANDOFF_ID: usize = 46;
    pub const OUTDATE_KIND: usize = 50;
    pub const OUTDATE_ID: usize = 51;
}

/// The authenticated envelope of a heartbeat: who sent it, under which key, and where it falls in
/// the sender's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    pub cluster_id: u32,
    pub key_id: u8,
    pub node_id: u16,
    pub generation: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("cannot sign with key id {key_id}: it is not in the keyring")]
    UnknownKeyId { key_id: u8 },
}

/// Encodes and signs one heartbeat. The returned bytes are [`datagram_len`] long.
pub fn encode(header: &Header, beat: &Beat, keyring: &Keyring) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0u8; datagram_len(keyring.algorithm())];
    let (signed, tag) = buf.split_at_mut(SIGNED_LEN);
    put(signed, off::MAGIC, &MAGIC);
    signed[off::VERSION] = VERSION;
    signed[off::KEY_ID] = header.key_id;
    put(signed, off::FLAGS, &0u16.to_be_bytes());
    put(signed, off::CLUSTER, &header.cluster_id.to_be_bytes());
    put(signed, off::NODE, &header.node_id.to_be_bytes());
    put(signed, off::GENERATION, &header.generation.to_be_bytes());
    put(signed, off::SEQ, &header.seq.to_be_bytes());

    put(signed, off::TERM, &beat.term.to_be_bytes());
    put(signed, off::HELD, &beat.held.to_be_bytes());
    signed[off::STATE] = beat.state.code();
    signed[off::DISK] = beat.disk.code();
    if let Some(h) = beat.handoff {
        let (kind, reason) = handoff_code(h.kind);
        signed[off::HANDOFF_KIND] = kind;
        signed[off::REFUSE] = reason;
        put(signed, off::HANDOFF_ID, &h.id.to_be_bytes());
    }
    if let Some(o) = beat.outdate {
        signed[off::OUTDATE_KIND] = outdate_code(o.kind);
        put(signed, off::OUTDATE_ID, &o.id.to_be_bytes());
    }
    if !keyring.sign(header.key_id, signed, tag) {
        return Err(EncodeError::UnknownKeyId {
            key_id: header.key_id,
        });
    }
    Ok(buf)
}

/// An authenticated datagram whose header has been checked; the body is not parsed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub header: Header,
    pub body: [u8; BODY_LEN],
}

/// Runs the stateless checks (see the module doc for the order) and returns the header with the
/// still-unparsed body. Never allocates, never panics.
pub fn open(bytes: &[u8], keyring: &Keyring, cluster_id: u32) -> Result<Opened, Reject> {
    let expected = datagram_len(keyring.algorithm());
    if bytes.len() > MAX_DATAGRAM {
        return Err(Reject::TooLong {
            len: bytes.len(),
            max: MAX_DATAGRAM,
        });
    }
    if bytes.len() < expected {
        return Err(Reject::TooShort {
            len: bytes.len(),
            expected,
        });
    }
    let key_id = bytes[off::KEY_ID];
    let (signed, tag) = bytes.split_at(bytes.len() - keyring.tag_len());
    match keyring.verify(key_id, signed, tag) {
        None => return Err(Reject::UnknownKeyId { key_id }),
        Some(false) => return Err(Reject::BadMac { key_id }),
        Some(true) => {}
    }
    // Authentic from here on.
    if signed[off::MAGIC..off::MAGIC + 4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if signed[off::VERSION] != VERSION {
        return Err(Reject::UnsupportedVersion {
            version: signed[off::VERSION],
            supported: VERSION,
        });
    }
    // Version 1 has one length; extra authenticated bytes mean a sender bug, not a heartbeat.
    let Ok(signed) = <&[u8; SIGNED_LEN]>::try_from(signed) else {
        return Err(Reject::TooLong {
            len: bytes.len(),
            max: expected,
        });
    };
    let header = Header {
        cluster_id: u32::from_be_bytes(take(signed, off::CLUSTER)),
        key_id,
        node_id: u16::from_be_bytes(take(signed, off::NODE)),
        generation: u64::from_be_bytes(take(signed, off::GENERATION)),
        seq: u64::from_be_bytes(take(signed, off::SEQ)),
    };
    if header.cluster_id != cluster_id {
        return Err(Reject::WrongCluster {
            cluster_id: header.cluster_id,
            expected: cluster_id,
        });
    }
    let flags = u16::from_be_bytes(take(signed, off::FLAGS));
    let unknown = flags & CRITICAL_FLAGS & !KNOWN_CRITICAL_FLAGS;
    if unknown != 0 {
        return Err(Reject::UnknownFlags { flags: unknown });
    }
    Ok(Opened {
        header,
        body: take(signed, HEADER_LEN),
    })
}

/// Parses a body returned by [`open`]. Offsets are relative to the datagram, so subtract the
/// header length once here.
pub fn parse_body(body: &[u8; BODY_LEN]) -> Result<Beat, Reject> {
    let at = |o: usize| o - HEADER_LEN;
    let bad = |field: &'static str, value: u32| Reject::BadBody { field, value };

    let state_code = body[at(off::STATE)];
    let state = NodeState::from_code(state_code).ok_or(bad("node state", state_code.into()))?;
    let disk_code = body[at(off::DISK)];
    let disk = DiskState::from_code(disk_code).ok_or(bad("disk state", disk_code.into()))?;

    let kind = body[at(off::HANDOFF_KIND)];
    let reason = body[at(off::REFUSE)];
    let handoff_id = u32::from_be_bytes(take(body, at(off::HANDOFF_ID)));
    let handoff = match kind {
        0 => None,
        1 => Some(HandoffKind::Request),
        2 => Some(HandoffKind::Offer),
        3 => Some(HandoffKind::Accept),
        4 => Some(HandoffKind::Refuse {
            reason: RefuseReason::from_code(reason).ok_or(bad("refuse reason", reason.into()))?,
        }),
        5 => Some(HandoffKind::Released),
        other => return Err(bad("handoff kind", other.into())),
    };
    if kind != 4 && reason != 0 {
        return Err(bad("refuse reason", reason.into()));
    }
    if handoff.is_none() && handoff_id != 0 {
        return Err(bad("handoff id", handoff_id));
    }

    let okind = body[at(off::OUTDATE_KIND)];
    let outdate_id = u32::from_be_bytes(take(body, at(off::OUTDATE_ID)));
    let outdate = match okind {
        0 => None,
        1 => Some(OutdateKind::Request),
        2 => Some(OutdateKind::Done),
        3 => Some(OutdateKind::Failed),
        4 => Some(OutdateKind::Refused),
        5 => Some(OutdateKind::Inconsistent),
        other => return Err(bad("outdate kind", other.into())),
    };
    if outdate.is_none() && outdate_id != 0 {
        return Err(bad("outdate id", outdate_id));
    }

    Ok(Beat {
        state,
        term: u64::from_be_bytes(take(body, at(off::TERM))),
        held: u32::from_be_bytes(take(body, at(off::HELD))),
        disk,
        handoff: handoff.map(|kind| HandoffMsg {
            id: handoff_id,
            kind,
        }),
        outdate: outdate.map(|kind| OutdateMsg {
            id: outdate_id,
            kind,
        }),
    })
}

/// [`open`] then [`parse_body`]: everything but the sender and replay checks. For tests, tools
/// and the fuzzer; the daemon goes through `Receiver::accept`.
pub fn decode(bytes: &[u8], keyring: &Keyring, cluster_id: u32) -> Result<(Header, Beat), Reject> {
    let opened = open(bytes, keyring, cluster_id)?;
    Ok((opened.header, parse_body(&opened.body)?))
}

fn handoff_code(kind: HandoffKind) -> (u8, u8) {
    match kind {
        HandoffKind::Request => (1, 0),
        HandoffKind::Offer => (2, 0),
        HandoffKind::Accept => (3, 0),
        HandoffKind::Refuse { reason } => (4, reason.code()),
        HandoffKind::Released => (5, 0),
    }
}

fn outdate_code(kind: OutdateKind) -> u8 {
    match kind {
        OutdateKind::Request => 1,
        OutdateKind::Done => 2,
        OutdateKind::Failed => 3,
        OutdateKind::Refused => 4,
        OutdateKind::Inconsistent => 5,
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Copies `N` bytes at a constant offset out of a fixed-size array. The offsets are constants of
/// the layout (checked by the round-trip tests), so the slice is always in range.
fn take<const N: usize, const L: usize>(buf: &[u8; L], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants_agree() {
        assert_eq!(off::SEQ + 8, HEADER_LEN);
        assert_eq!(off::OUTDATE_ID + 4, SIGNED_LEN);
        assert_eq!(datagram_len(Algorithm::HmacSha256), 87);
        assert_eq!(datagram_len(Algorithm::HmacSha1), 75);
        const { assert!(SIGNED_LEN + 32 <= MAX_DATAGRAM) };
    }
}
