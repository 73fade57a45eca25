//! Witness lease messages: the datagrams between a node and `twinbeat witness`, their layout and
//! their checks. Same keys, same HMAC, same (generation, seq) replay rule as heartbeats.
//!
//! Owns: the byte layout below, encoding, the stateless checks, and the two receiving ends'
//! stateful checks: [`WitnessInbox`] (the witness: sender known, (generation, seq) advancing per
//! node) and [`ReplyMatcher`] (a node: a reply counts only if it answers a request this node sent
//! and has not had answered). Must not touch: sockets, clocks, what a lease means (the witness's
//! table in `crate::witness::table`, the node's rules in `core/node/lease.rs`).
//!
//! # Layout (version 1)
//!
//! Big-endian, fixed size, canonical (unused bytes zero), like the heartbeat (`wire.rs`).
//!
//! ```text
//! offset size field          value
//!  0      4   magic          "TWBL": a different magic from heartbeats, so neither is ever
//!                            mistaken for the other even under the same key
//!  4      1   version        1
//!  5      1   key id
//!  6      1   kind           1 request, 2 query, 3 release | 16 granted, 17 denied, 18 status
//!  7      1   zero
//!  8      4   cluster id
//! 12      2   sender id      a node id; the witness sends as 0
//! 14      8   generation     the sender's: a node sends its persisted boot generation
//! 22      8   sequence       per generation, +1 per message
//! 30      2   subject        the node the message is about (requests: the sender itself)
//! 32      8   echo gen       replies: the generation of the request answered; requests: 0
//! 40      8   echo seq       replies: the sequence of the request answered; requests: 0
//! 48      4   ms             granted: lease length; denied/status: the holder's time left
//! 52      2   holder         the node holding the lease on the witness, 0 for nobody
//! 54      2   zero
//! 56     32   tag            HMAC-SHA256 over bytes 0..56 (88 bytes; HMAC-SHA1: 20, 76 bytes)
//! ```
//!
//! Check order on receive: length, key id, MAC (constant time), then magic, version, cluster,
//! kind and the zero bytes; only then the stateful checks. A reply is bound to its request by
//! the echoed (generation, seq), never by a time in the packet: the node computes the lease from
//! its *own* record of when it sent that request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::auth::{Algorithm, Keyring};
use super::reject::{Counters, Reject};
use super::replay::Window;

pub const MAGIC: [u8; 4] = *b"TWBL";
pub const VERSION: u8 = 1;
pub const SIGNED_LEN: usize = 56;
/// The witness's sender id: node ids start at 1.
pub const WITNESS_ID: u16 = 0;

pub const fn datagram_len(algorithm: Algorithm) -> usize {
    SIGNED_LEN + algorithm.tag_len()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Grant or renew the lease to the sender.
    Request,
    /// Who holds the lease? Grants nothing (a standby shows the witness is reachable).
    Query,
    /// The sender no longer needs its lease.
    Release,
    Granted,
    Denied,
    /// The answer to a query or a release.
    Status,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Request => 1,
            Kind::Query => 2,
            Kind::Release => 3,
            Kind::Granted => 16,
            Kind::Denied => 17,
            Kind::Status => 18,
        }
    }
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Request,
            2 => Kind::Query,
            3 => Kind::Release,
            16 => Kind::Granted,
            17 => Kind::Denied,
            18 => Kind::Status,
            _ => return None,
        })
    }
    pub fn is_reply(self) -> bool {
        matches!(self, Kind::Granted | Kind::Denied | Kind::Status)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    pub key_id: u8,
    pub kind: Kind,
    pub cluster_id: u32,
    pub sender: u16,
    pub generation: u64,
    pub seq: u64,
    pub subject: u16,
    pub echo_generation: u64,
    pub echo_seq: u64,
    pub ms: u32,
    /// 0: nobody.
    pub holder: u16,
}

mod off {
    pub const KEY_ID: usize = 5;
    pub const KIND: usize = 6;
    pub const ZERO1: usize = 7;
    pub const CLUSTER: usize = 8;
    pub const SENDER: usize = 12;
    pub const GENERATION: usize = 14;
    pub const SEQ: usize = 22;
    pub const SUBJECT: usize = 30;
    pub const ECHO_GEN: usize = 32;
    pub const ECHO_SEQ: usize = 40;
    pub const MS: usize = 48;
    pub const HOLDER: usize = 52;
    pub const ZERO2: usize = 54;
}

/// Encodes and signs `m`; None when `m.key_id` is not in the keyring.
pub fn encode(m: &Msg, keyring: &Keyring) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; datagram_len(keyring.algorithm())];
    let (s, tag) = buf.split_at_mut(SIGNED_LEN);
    s[0..4].copy_from_slice(&MAGIC);
    s[4] = VERSION;
    s[off::KEY_ID] = m.key_id;
    s[off::KIND] = m.kind.code();
    put(s, off::CLUSTER, &m.cluster_id.to_be_bytes());
    put(s, off::SENDER, &m.sender.to_be_bytes());
    put(s, off::GENERATION, &m.generation.to_be_bytes());
    put(s, off::SEQ, &m.seq.to_be_bytes());
    put(s, off::SUBJECT, &m.subject.to_be_bytes());
    put(s, off::ECHO_GEN, &m.echo_generation.to_be_bytes());
    put(s, off::ECHO_SEQ, &m.echo_seq.to_be_bytes());
    put(s, off::MS, &m.ms.to_be_bytes());
    put(s, off::HOLDER, &m.holder.to_be_bytes());
    keyring.sign(m.key_id, s, tag).then_some(buf)
}

/// The stateless checks, in the order of the module doc. Never panics.
pub fn decode(bytes: &[u8], keyring: &Keyring, cluster_id: u32) -> Result<Msg, Reject> {
    let expected = datagram_len(keyring.algorithm());
    if bytes.len() < expected {
        return Err(Reject::TooShort {
            len: bytes.len(),
            expected,
        });
    }
    if bytes.len() > expected {
        return Err(Reject::TooLong {
            len: bytes.len(),
            max: expected,
        });
    }
    let key_id = bytes[off::KEY_ID];
    let (s, tag) = bytes.split_at(SIGNED_LEN);
    match keyring.verify(key_id, s, tag) {
        None => return Err(Reject::UnknownKeyId { key_id }),
        Some(false) => return Err(Reject::BadMac { key_id }),
        Some(true) => {}
    }
    if s[0..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if s[4] != VERSION {
        return Err(Reject::UnsupportedVersion {
            version: s[4],
            supported: VERSION,
        });
    }
    let cluster = u32::from_be_bytes(take(s, off::CLUSTER));
    if cluster != cluster_id {
        return Err(Reject::WrongCluster {
            cluster_id: cluster,
            expected: cluster_id,
        });
    }
    let kind = Kind::from_code(s[off::KIND]).ok_or(Reject::BadBody {
        field: "lease message kind",
        value: s[off::KIND].into(),
    })?;
    if s[off::ZERO1] != 0 || s[off::ZERO2] != 0 || s[off::ZERO2 + 1] != 0 {
        return Err(Reject::BadBody {
            field: "lease message padding",
            value: 1,
        });
    }
    Ok(Msg {
        key_id,
        kind,
        cluster_id: cluster,
        sender: u16::from_be_bytes(take(s, off::SENDER)),
        generation: u64::from_be_bytes(take(s, off::GENERATION)),
        seq: u64::from_be_bytes(take(s, off::SEQ)),
        subject: u16::from_be_bytes(take(s, off::SUBJECT)),
        echo_generation: u64::from_be_bytes(take(s, off::ECHO_GEN)),
        echo_seq: u64::from_be_bytes(take(s, off::ECHO_SEQ)),
        ms: u32::from_be_bytes(take(s, off::MS)),
        holder: u16::from_be_bytes(take(s, off::HOLDER)),
    })
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

fn take<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Why a lease datagram was dropped: a wire-level reason, or (node side) a reply that answers
/// nothing this node is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseReject {
    #[error(transparent)]
    Wire(#[from] Reject),
    #[error("a lease {kind:?} where a {expected} was expected: a misdirected or forged datagram")]
    WrongDirection { kind: Kind, expected: &'static str },
    #[error("reply to request ({generation}, {seq}) that this node is not waiting for: a replayed, duplicated or very late reply")]
    Unsolicited { generation: u64, seq: u64 },
    #[error(
        "reply about node {subject}, but this node is {expected}: check node ids on the witness"
    )]
    WrongSubject { subject: u16, expected: u16 },
}

/// Lease datagrams by outcome, for status (`wire` reuses the heartbeat counter names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LeaseCounters {
    pub accepted: u64,
    pub wire: Counters,
    pub wrong_direction: u64,
    pub unsolicited: u64,
    pub wrong_subject: u64,
}

impl LeaseCounters {
    pub fn record(&mut self, r: &LeaseReject) {
        let slot = match r {
            LeaseReject::Wire(w) => {
                self.wire.record(w);
                return;
            }
            LeaseReject::WrongDirection { .. } => &mut self.wrong_direction,
            LeaseReject::Unsolicited { .. } => &mut self.unsolicited,
            LeaseReject::WrongSubject { .. } => &mut self.wrong_subject,
        };
        *slot = slot.saturating_add(1);
    }

    pub fn rejected(&self) -> u64 {
        self.wire
            .rejected()
            .saturating_add(self.wrong_direction)
            .saturating_add(self.unsolicited)
            .saturating_add(self.wrong_subject)
    }
}

/// The witness's receiving end: requests from the pair's nodes, each (generation, seq) once and
/// moving forward, so a captured request replayed later cannot renew a lease on a node's behalf.
/// (The windows are in memory: after a witness restart a capture could be replayed once, which
/// only delays the other node, and the restart's quiet period covers it.)
#[derive(Debug, Clone)]
pub struct WitnessInbox {
    keyring: Keyring,
    cluster_id: u32,
    nodes: Vec<(u16, Window)>,
    pub counters: LeaseCounters,
}

impl WitnessInbox {
    pub fn new(keyring: Keyring, cluster_id: u32, nodes: &[u16]) -> WitnessInbox {
        WitnessInbox {
            keyring,
            cluster_id,
            nodes: nodes.iter().map(|&n| (n, Window::new(1))).collect(),
            counters: LeaseCounters::default(),
        }
    }

    pub fn accept(&mut self, bytes: &[u8]) -> Result<Msg, LeaseReject> {
        let r = self.check(bytes);
        match &r {
            Ok(_) => self.counters.accepted = self.counters.accepted.saturating_add(1),
            Err(e) => self.counters.record(e),
        }
        r
    }

    fn check(&mut self, bytes: &[u8]) -> Result<Msg, LeaseReject> {
        let m = decode(bytes, &self.keyring, self.cluster_id)?;
        if m.kind.is_reply() {
            return Err(LeaseReject::WrongDirection {
                kind: m.kind,
                expected: "request, query or release",
            });
        }
        let expected = self.nodes.first().map_or(0, |n| n.0);
        let Some((_, w)) = self
            .nodes
            .iter_mut()
            .find(|(id, _)| *id == m.sender && m.subject == m.sender)
        else {
            return Err(Reject::UnknownSender {
                node_id: m.sender,
                expected,
            }
            .into());
        };
        let v = w.check(0, m.generation, m.seq)?;
        w.commit(0, m.generation, m.seq, v);
        Ok(m)
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

/// A node's receiving end: replies count only when they answer an outstanding request, once.
/// Remembers when each request was sent (this node's clock), which is what a grant is measured
/// from.
#[derive(Debug, Clone)]
pub struct ReplyMatcher {
    keyring: Keyring,
    cluster_id: u32,
    node_id: u16,
    generation: u64,
    /// seq -> (kind sent, sent at), the newest few.
    outstanding: BTreeMap<u64, (Kind, u64)>,
    pub counters: LeaseCounters,
}

/// How many unanswered requests are remembered: a reply later than this many renewals is stale.
const OUTSTANDING: usize = 16;

/// A reply matched to the request it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched {
    pub msg: Msg,
    pub request: Kind,
    /// When this node sent the request (its own clock, as recorded by `sent`).
    pub sent_at: u64,
}

impl ReplyMatcher {
    pub fn new(keyring: Keyring, cluster_id: u32, node_id: u16, generation: u64) -> ReplyMatcher {
        ReplyMatcher {
            keyring,
            cluster_id,
            node_id,
            generation,
            outstanding: BTreeMap::new(),
            counters: LeaseCounters::default(),
        }
    }

    /// Records a request about to be sent.
    pub fn sent(&mut self, seq: u64, kind: Kind, at: u64) {
        self.outstanding.insert(seq, (kind, at));
        while self.outstanding.len() > OUTSTANDING {
            self.outstanding.pop_first();
        }
    }

    pub fn accept(&mut self, bytes: &[u8]) -> Result<Matched, LeaseReject> {
        let r = self.check(bytes);
        match &r {
            Ok(_) => self.counters.accepted = self.counters.accepted.saturating_add(1),
            Err(e) => self.counters.record(e),
        }
        r
    }

    fn check(&mut self, bytes: &[u8]) -> Result<Matched, LeaseReject> {
        let m = decode(bytes, &self.keyring, self.cluster_id)?;
        if !m.kind.is_reply() {
            return Err(LeaseReject::WrongDirection {
                kind: m.kind,
                expected: "reply from the witness",
            });
        }
        if m.sender != WITNESS_ID {
            return Err(Reject::UnknownSender {
                node_id: m.sender,
                expected: WITNESS_ID,
            }
            .into());
        }
        if m.subject != self.node_id {
            return Err(LeaseReject::WrongSubject {
                subject: m.subject,
                expected: self.node_id,
            });
        }
        let unsolicited = LeaseReject::Unsolicited {
            generation: m.echo_generation,
            seq: m.echo_seq,
        };
        if m.echo_generation != self.generation {
            return Err(unsolicited);
        }
        let Some((request, sent_at)) = self.outstanding.remove(&m.echo_seq) else {
            return Err(unsolicited);
        };
        Ok(Matched {
            msg: m,
            request,
            sent_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keyring {
        Keyring::new(
            Algorithm::HmacSha256,
            [(1u8, b"0123456789abcdef-secret".to_vec())],
        )
        .unwrap()
    }

    fn req(seq: u64) -> Msg {
        Msg {
            key_id: 1,
            kind: Kind::Request,
            cluster_id: 7,
            sender: 1,
            generation: 3,
            seq,
            subject: 1,
            echo_generation: 0,
            echo_seq: 0,
            ms: 0,
            holder: 0,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let k = keys();
        let b = encode(&req(5), &k).unwrap();
        assert_eq!(b.len(), 88);
        assert_eq!(decode(&b, &k, 7), Ok(req(5)));
        assert_eq!(off::ZERO2 + 2, SIGNED_LEN);
    }

    #[test]
    fn witness_rejects_replay_forgery_and_strangers() {
        let k = keys();
        let mut inbox = WitnessInbox::new(k.clone(), 7, &[1, 2]);
        let b = encode(&req(5), &k).unwrap();
        assert!(inbox.accept(&b).is_ok());
        assert!(matches!(
            inbox.accept(&b),
            Err(LeaseReject::Wire(Reject::Stale { .. }))
        ));
        let mut forged = b.clone();
        forged[off::MS] ^= 1;
        assert!(matches!(
            inbox.accept(&forged),
            Err(LeaseReject::Wire(Reject::BadMac { .. }))
        ));
        let mut stranger = req(6);
        stranger.sender = 9;
        stranger.subject = 9;
        assert!(matches!(
            inbox.accept(&encode(&stranger, &k).unwrap()),
            Err(LeaseReject::Wire(Reject::UnknownSender { .. }))
        ));
        assert_eq!(inbox.counters.wire.stale, 1);
        assert_eq!(inbox.counters.wire.bad_mac, 1);
        assert_eq!(inbox.counters.rejected(), 3);
    }

    #[test]
    fn node_takes_each_reply_once_and_only_for_its_requests() {
        let k = keys();
        let mut m = ReplyMatcher::new(k.clone(), 7, 1, 3);
        m.sent(5, Kind::Request, 1_000);
        let grant = Msg {
            kind: Kind::Granted,
            sender: WITNESS_ID,
            generation: 99,
            seq: 1,
            echo_generation: 3,
            echo_seq: 5,
            ms: 6_000,
            holder: 1,
            ..req(0)
        };
        let b = encode(&grant, &k).unwrap();
        let got = m.accept(&b).unwrap();
        assert_eq!((got.sent_at, got.msg.ms), (1_000, 6_000));
        assert!(matches!(m.accept(&b), Err(LeaseReject::Unsolicited { .. })));
        let old_gen = Msg {
            echo_generation: 2,
            ..grant
        };
        assert!(matches!(
            m.accept(&encode(&old_gen, &k).unwrap()),
            Err(LeaseReject::Unsolicited { .. })
        ));
        assert_eq!(m.counters.unsolicited, 2);
    }
}
