//! The heartbeat datagram: fixed layout, encoding, authenticated opening, body parsing.
//!
//! Owns: the byte layout below and the order of the stateless checks. Must not touch: sockets,
//! clocks, replay state (`replay.rs`), key storage (`auth.rs`), what a beat means (`core/`).
//!
//! # Layout (versions 1 and 2)
//!
//! All integers are big-endian (network byte order). Offsets are fixed; no field is optional in
//! size, so a datagram's length and version alone say whether it can be a heartbeat.
//!
//! ```text
//! offset size field          value
//! ------ ---- -------------- -----------------------------------------------------------------
//!  0      4   magic          "TWBT" (0x54 0x57 0x42 0x54)
//!  4      1   version        1 or 2; any other value is rejected (UnsupportedVersion)
//!  5      1   key id         which keyring key made the tag
//!  6      2   flags          see "Flags" below
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
//! ---- version 2 only: stamp and echo (see `core/node/lease.rs`) ------------------------------
//! 55      1   present        bit 0: stamp, bit 1: echo; other bits 0
//! 56      8   stamp          the sender's clock (ms) when it sent this beat; 0 if absent
//! 64      8   echo gen.      the receiver's boot generation named by the echo; 0 if absent
//! 72      8   echo stamp     the stamp of the receiver's newest beat the sender has; 0 if absent
//! ---- tag ----------------------------------------------------------------------------------
//! v1: 55 / v2: 80   32   tag  HMAC-SHA256 over everything before it   (87 / 112 bytes)
//! v1: 55 / v2: 80   20   tag  HMAC-SHA1   over everything before it   (75 / 100 bytes)
//! ```
//!
//! Unused slots must be zero: the encoding is canonical (one beat, one byte string), so a
//! round trip is exact and a non-zero "unused" byte is a sender bug worth reporting (BadBody).
//! Version 1 carries no stamp and no echo: a beat decoded from it has neither.
//!
//! # Versions on a mixed pair
//!
//! A daemon of version 1 rejects version 2 datagrams (UnsupportedVersion), and the two
//! nodes of a pair are upgraded one at a time. So a sender uses version 2 only once the peer's
//! current run has shown that it reads it: by sending version 2, or a version-1 datagram with
//! the advisory flag [`FLAG_READS_V2`]. Until then it sends version 1 with that flag, which a
//! version-1 daemon accepts and ignores (unknown advisory bits are dropped). The shell learns it
//! from every fresh beat ([`Accepted::reads_v2`](super::receiver::Accepted)), so a peer
//! downgraded to version 1 is answered in version 1 from its first beat on. Without echoes (a
//! version-1 peer) the core simply has no peer confirmation, which is the safe side.
//!
//! # Flags
//!
//! The low byte (bits 0–7) holds *critical* flags: a flag that changes how the datagram must be
//! read. An unknown critical bit is rejected (UnknownFlags), because guessing would misread the
//! peer. The high byte (bits 8–15) holds *advisory* flags: hints an older node may safely ignore,
//! so unknown advisory bits are accepted and dropped. Bit 8 ([`FLAG_READS_V2`]): "I read
//! version 2", in version-1 datagrams. A change of layout bumps the version instead.
//!
//! # Check order on receive (stateless part, [`open`])
//!
//! 1. length: at most [`MAX_DATAGRAM`] (TooLong), at least a version-1 heartbeat (TooShort);
//! 2. key id: must be in the keyring (UnknownKeyId);
//! 3. the MAC, in constant time, over everything before the trailing tag (BadMac);
//! 4. magic, version, then the exact length of that version (TooLong / TooShort), cluster id,
//!    flags.
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
    Beat, DiskState, Echo, HandoffKind, HandoffMsg, Millis, NodeState, OutdateKind, OutdateMsg,
    RefuseReason,
};

pub const MAGIC: [u8; 4] = *b"TWBT";
/// The current layout: version 1 plus the stamp and the echo.
pub const VERSION: u8 = 2;
/// The first layout, still read, and sent to a peer not known to read version 2.
pub const VERSION_1: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 30;
/// Bytes of the body both versions share.
pub const BODY_LEN: usize = 25;
/// Bytes version 2 adds after the body: presence, stamp, echo generation, echo stamp.
pub const EXT_LEN: usize = 25;
/// Bytes covered by the tag in a version-1 datagram: header and body.
pub const SIGNED_LEN_V1: usize = HEADER_LEN + BODY_LEN;
/// Bytes covered by the tag in a version-2 datagram: header, body and extension.
pub const SIGNED_LEN: usize = SIGNED_LEN_V1 + EXT_LEN;
/// Largest datagram the receiver looks at, and the receive buffer size the shell should use
/// (anything longer is rejected before any work). Leaves room for later versions to grow.
pub const MAX_DATAGRAM: usize = 512;

/// Critical flag bits (see the module doc): unknown ones are rejected.
pub const CRITICAL_FLAGS: u16 = 0x00ff;
/// Critical flags this version understands.
pub const KNOWN_CRITICAL_FLAGS: u16 = 0x0000;
/// Advisory flag: the sender reads version 2 (set in the version-1 datagrams it sends).
pub const FLAG_READS_V2: u16 = 0x0100;

/// Length of a version-2 heartbeat under `algorithm`: 112 bytes for HMAC-SHA256, 100 for
/// HMAC-SHA1.
pub const fn datagram_len(algorithm: Algorithm) -> usize {
    SIGNED_LEN + algorithm.tag_len()
}

/// Length of a version-1 heartbeat under `algorithm`: 87 bytes for HMAC-SHA256, 75 for
/// HMAC-SHA1. No heartbeat is shorter.
pub const fn datagram_len_v1(algorithm: Algorithm) -> usize {
    SIGNED_LEN_V1 + algorithm.tag_len()
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
    pub const PRESENT: usize = 55;
    pub const STAMP: usize = 56;
    pub const ECHO_GENERATION: usize = 64;
    pub const ECHO_STAMP: usize = 72;
}

const PRESENT_STAMP: u8 = 0b01;
const PRESENT_ECHO: u8 = 0b10;

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

/// Encodes and signs one heartbeat in the current layout (version 2). The returned bytes are
/// [`datagram_len`] long.
pub fn encode(header: &Header, beat: &Beat, keyring: &Keyring) -> Result<Vec<u8>, EncodeError> {
    encode_version(header, beat, keyring, VERSION)
}

/// Encodes and signs one heartbeat in the version-1 layout, for a peer not known to read
/// version 2: the stamp and the echo are left out, and the advisory flag [`FLAG_READS_V2`]
/// tells the peer that this node reads version 2. The bytes are [`datagram_len_v1`] long.
pub fn encode_v1(header: &Header, beat: &Beat, keyring: &Keyring) -> Result<Vec<u8>, EncodeError> {
    encode_version(header, beat, keyring, VERSION_1)
}

fn encode_version(
    header: &Header,
    beat: &Beat,
    keyring: &Keyring,
    version: u8,
) -> Result<Vec<u8>, EncodeError> {
    let (signed_len, flags) = if version == VERSION_1 {
        (SIGNED_LEN_V1, FLAG_READS_V2)
    } else {
        (SIGNED_LEN, 0)
    };
    let mut buf = vec![0u8; signed_len + keyring.tag_len()];
    let (signed, tag) = buf.split_at_mut(signed_len);
    put(signed, off::MAGIC, &MAGIC);
    signed[off::VERSION] = version;
    signed[off::KEY_ID] = header.key_id;
    put(signed, off::FLAGS, &flags.to_be_bytes());
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
    if version != VERSION_1 {
        if let Some(stamp) = beat.stamp {
            signed[off::PRESENT] |= PRESENT_STAMP;
            put(signed, off::STAMP, &stamp.to_be_bytes());
        }
        if let Some(e) = beat.echo {
            signed[off::PRESENT] |= PRESENT_ECHO;
            put(signed, off::ECHO_GENERATION, &e.generation.to_be_bytes());
            put(signed, off::ECHO_STAMP, &e.stamp.to_be_bytes());
        }
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
    /// [`VERSION_1`] or [`VERSION`].
    pub version: u8,
    /// The flags field (critical bits already checked).
    pub flags: u16,
    pub body: [u8; BODY_LEN],
    /// Version 2's stamp and echo; `None` in version 1.
    pub ext: Option<[u8; EXT_LEN]>,
}

impl Opened {
    /// The sender reads version 2: it sent version 2, or said so with [`FLAG_READS_V2`].
    pub fn reads_v2(&self) -> bool {
        self.version >= VERSION || self.flags & FLAG_READS_V2 != 0
    }
}

/// Runs the stateless checks (see the module doc for the order) and returns the header with the
/// still-unparsed body. Never allocates, never panics.
pub fn open(bytes: &[u8], keyring: &Keyring, cluster_id: u32) -> Result<Opened, Reject> {
    let shortest = datagram_len_v1(keyring.algorithm());
    if bytes.len() > MAX_DATAGRAM {
        return Err(Reject::TooLong {
            len: bytes.len(),
            max: MAX_DATAGRAM,
        });
    }
    if bytes.len() < shortest {
        return Err(Reject::TooShort {
            len: bytes.len(),
            expected: shortest,
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
    let version = signed[off::VERSION];
    let signed_len = match version {
        VERSION_1 => SIGNED_LEN_V1,
        VERSION => SIGNED_LEN,
        _ => {
            return Err(Reject::UnsupportedVersion {
                version,
                supported: VERSION,
            })
        }
    };
    // Each version has one length; extra authenticated bytes mean a sender bug, not a heartbeat.
    let expected = signed_len + keyring.tag_len();
    if signed.len() > signed_len {
        return Err(Reject::TooLong {
            len: bytes.len(),
            max: expected,
        });
    }
    if signed.len() < signed_len {
        return Err(Reject::TooShort {
            len: bytes.len(),
            expected,
        });
    }
    let Ok(head) = <&[u8; SIGNED_LEN_V1]>::try_from(&signed[..SIGNED_LEN_V1]) else {
        return Err(Reject::TooShort {
            len: bytes.len(),
            expected,
        });
    };
    let header = Header {
        cluster_id: u32::from_be_bytes(take(head, off::CLUSTER)),
        key_id,
        node_id: u16::from_be_bytes(take(head, off::NODE)),
        generation: u64::from_be_bytes(take(head, off::GENERATION)),
        seq: u64::from_be_bytes(take(head, off::SEQ)),
    };
    if header.cluster_id != cluster_id {
        return Err(Reject::WrongCluster {
            cluster_id: header.cluster_id,
            expected: cluster_id,
        });
    }
    let flags = u16::from_be_bytes(take(head, off::FLAGS));
    let unknown = flags & CRITICAL_FLAGS & !KNOWN_CRITICAL_FLAGS;
    if unknown != 0 {
        return Err(Reject::UnknownFlags { flags: unknown });
    }
    let ext = match <&[u8; EXT_LEN]>::try_from(&signed[SIGNED_LEN_V1..]) {
        Ok(e) => Some(*e),
        Err(_) => None,
    };
    Ok(Opened {
        header,
        version,
        flags,
        body: take(head, HEADER_LEN),
        ext,
    })
}

/// Parses the body (and version 2's stamp and echo) of a datagram returned by [`open`].
/// Offsets are relative to the datagram, so subtract the header length once here.
pub fn parse_body(opened: &Opened) -> Result<Beat, Reject> {
    let body = &opened.body;
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

    let (stamp, echo) = match &opened.ext {
        None => (None, None),
        Some(ext) => parse_ext(ext)?,
    };

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
        stamp,
        echo,
    })
}

/// Version 2's extension: the stamp and the echo, each present or all zero.
fn parse_ext(ext: &[u8; EXT_LEN]) -> Result<(Option<Millis>, Option<Echo>), Reject> {
    let at = |o: usize| o - SIGNED_LEN_V1;
    let bad = |field: &'static str, value: u32| Reject::BadBody { field, value };
    let present = ext[at(off::PRESENT)];
    if present & !(PRESENT_STAMP | PRESENT_ECHO) != 0 {
        return Err(bad("stamp/echo presence", present.into()));
    }
    let stamp = u64::from_be_bytes(take(ext, at(off::STAMP)));
    let generation = u64::from_be_bytes(take(ext, at(off::ECHO_GENERATION)));
    let echo_stamp = u64::from_be_bytes(take(ext, at(off::ECHO_STAMP)));
    // A u64 does not fit the u32 `value`; what matters is which field is wrong.
    let nonzero = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    if present & PRESENT_STAMP == 0 && stamp != 0 {
        return Err(bad("stamp", nonzero(stamp)));
    }
    if present & PRESENT_ECHO == 0 && (generation != 0 || echo_stamp != 0) {
        return Err(bad("echo", nonzero(generation | echo_stamp)));
    }
    Ok((
        (present & PRESENT_STAMP != 0).then_some(stamp),
        (present & PRESENT_ECHO != 0).then_some(Echo {
            generation,
            stamp: echo_stamp,
        }),
    ))
}

/// [`open`] then [`parse_body`]: everything but the sender and replay checks. For tests, tools
/// and the fuzzer; the daemon goes through `Receiver::accept`.
pub fn decode(bytes: &[u8], keyring: &Keyring, cluster_id: u32) -> Result<(Header, Beat), Reject> {
    let opened = open(bytes, keyring, cluster_id)?;
    Ok((opened.header, parse_body(&opened)?))
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
        assert_eq!(off::OUTDATE_ID + 4, SIGNED_LEN_V1);
        assert_eq!(off::PRESENT, SIGNED_LEN_V1);
        assert_eq!(off::ECHO_STAMP + 8, SIGNED_LEN);
        assert_eq!(datagram_len_v1(Algorithm::HmacSha256), 87);
        assert_eq!(datagram_len_v1(Algorithm::HmacSha1), 75);
        assert_eq!(datagram_len(Algorithm::HmacSha256), 112);
        assert_eq!(datagram_len(Algorithm::HmacSha1), 100);
        const { assert!(SIGNED_LEN + 32 <= MAX_DATAGRAM) };
    }
}
