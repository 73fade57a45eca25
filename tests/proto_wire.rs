//! Wire format properties: round trip, tamper detection, garbage, keys, clusters, node ids.

use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use twinbeat::core::types::{
    Beat, DiskState, Echo, HandoffKind, HandoffMsg, NodeState, OutdateKind, OutdateMsg,
    RefuseReason,
};
use twinbeat::proto::wire::{open, FLAG_READS_V2, HEADER_LEN, SIGNED_LEN, SIGNED_LEN_V1};
use twinbeat::proto::{
    datagram_len, datagram_len_v1, decode, encode, encode_v1, Algorithm, EncodeError, Header,
    Keyring, Receiver, Reject, Sender, MAX_DATAGRAM,
};

const KEY_A: &[u8] = b"key-a-0123456789abcdef";
const KEY_B: &[u8] = b"key-b-fedcba9876543210";
const CLUSTER: u32 = 0x0c1a_5732;
const ME: u16 = 1;
const PEER: u16 = 2;
const ALGS: [Algorithm; 2] = [Algorithm::HmacSha256, Algorithm::HmacSha1];

fn ring(alg: Algorithm, ids: &[(u8, &[u8])]) -> Keyring {
    Keyring::new(alg, ids.iter().copied()).unwrap()
}

fn header(key_id: u8, node_id: u16, generation: u64, seq: u64) -> Header {
    Header {
        cluster_id: CLUSTER,
        key_id,
        node_id,
        generation,
        seq,
    }
}

fn plain_beat() -> Beat {
    Beat {
        state: NodeState::Active,
        term: 7,
        held: 0b1011,
        disk: DiskState::UpToDate,
        handoff: None,
        outdate: None,
        stamp: None,
        echo: None,
    }
}

fn full_beat() -> Beat {
    Beat {
        state: NodeState::Releasing,
        term: u64::MAX - 3,
        held: u32::MAX,
        disk: DiskState::Outdated,
        handoff: Some(HandoffMsg {
            id: 0xdead_beef,
            kind: HandoffKind::Refuse {
                reason: RefuseReason::HandoffInProgress,
            },
        }),
        outdate: Some(OutdateMsg {
            id: 42,
            kind: OutdateKind::Failed,
        }),
        stamp: Some(u64::MAX - 1),
        echo: Some(Echo {
            generation: 0x0102_0304_0506_0708,
            stamp: 1,
        }),
    }
}

/// What a version-1 datagram can carry of a beat: everything but the stamp and the echo.
fn v1_part(beat: Beat) -> Beat {
    Beat {
        stamp: None,
        echo: None,
        ..beat
    }
}

fn receiver(keyring: Keyring) -> Receiver {
    Receiver::new(keyring, CLUSTER, ME, PEER, 2)
}

/// Rewrites the tag after a test patched signed bytes, as a peer with the right key would.
fn resign_sha256(bytes: &mut [u8], key: &[u8]) {
    let (signed, tag) = bytes.split_at_mut(bytes.len() - 32);
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signed);
    tag.copy_from_slice(&mac.finalize().into_bytes());
}

fn arb_handoff_kind() -> impl Strategy<Value = HandoffKind> {
    prop_oneof![
        Just(HandoffKind::Request),
        Just(HandoffKind::Offer),
        Just(HandoffKind::Accept),
        prop::sample::select(RefuseReason::ALL.to_vec())
            .prop_map(|reason| HandoffKind::Refuse { reason }),
        Just(HandoffKind::Released),
    ]
}

fn arb_outdate_kind() -> impl Strategy<Value = OutdateKind> {
    prop::sample::select(vec![
        OutdateKind::Request,
        OutdateKind::Done,
        OutdateKind::Failed,
        OutdateKind::Refused,
        OutdateKind::Inconsistent,
    ])
}

fn arb_beat() -> impl Strategy<Value = Beat> {
    (
        prop::sample::select(NodeState::ALL.to_vec()),
        any::<u64>(),
        any::<u32>(),
        prop::sample::select(DiskState::ALL.to_vec()),
        prop::option::of((any::<u32>(), arb_handoff_kind())),
        prop::option::of((any::<u32>(), arb_outdate_kind())),
        prop::option::of(any::<u64>()),
        prop::option::of((any::<u64>(), any::<u64>())),
    )
        .prop_map(
            |(state, term, held, disk, handoff, outdate, stamp, echo)| Beat {
                state,
                term,
                held,
                disk,
                handoff: handoff.map(|(id, kind)| HandoffMsg { id, kind }),
                outdate: outdate.map(|(id, kind)| OutdateMsg { id, kind }),
                stamp,
                echo: echo.map(|(generation, stamp)| Echo { generation, stamp }),
            },
        )
}

fn arb_header() -> impl Strategy<Value = Header> {
    (
        any::<u32>(),
        any::<u8>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(cluster_id, key_id, node_id, generation, seq)| Header {
            cluster_id,
            key_id,
            node_id,
            generation,
            seq,
        })
}

proptest! {
    #[test]
    fn round_trip(h in arb_header(), beat in arb_beat(), sha1 in any::<bool>()) {
        let alg = if sha1 { Algorithm::HmacSha1 } else { Algorithm::HmacSha256 };
        let keyring = ring(alg, &[(h.key_id, KEY_A)]);
        let bytes = encode(&h, &beat, &keyring).unwrap();
        prop_assert_eq!(bytes.len(), datagram_len(alg));
        let (h2, beat2) = decode(&bytes, &keyring, h.cluster_id).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(beat2, beat);
        // Canonical: re-encoding the decoded values gives the same bytes.
        prop_assert_eq!(encode(&h2, &beat2, &keyring).unwrap(), bytes);
    }

    /// Version 1 (for a peer not known to read version 2) carries everything but the stamp
    /// and the echo, and says that the sender reads version 2.
    #[test]
    fn round_trip_v1(h in arb_header(), beat in arb_beat(), sha1 in any::<bool>()) {
        let alg = if sha1 { Algorithm::HmacSha1 } else { Algorithm::HmacSha256 };
        let keyring = ring(alg, &[(h.key_id, KEY_A)]);
        let bytes = encode_v1(&h, &beat, &keyring).unwrap();
        prop_assert_eq!(bytes.len(), datagram_len_v1(alg));
        let opened = open(&bytes, &keyring, h.cluster_id).unwrap();
        prop_assert_eq!(opened.version, 1);
        prop_assert!(opened.reads_v2());
        let (h2, beat2) = decode(&bytes, &keyring, h.cluster_id).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(beat2, v1_part(beat));
        prop_assert_eq!(encode_v1(&h2, &beat2, &keyring).unwrap(), bytes);
    }

    #[test]
    fn receiver_delivers_what_was_encoded(beat in arb_beat(), generation in any::<u64>(), seq in any::<u64>(), sha1 in any::<bool>()) {
        let alg = if sha1 { Algorithm::HmacSha1 } else { Algorithm::HmacSha256 };
        let keyring = ring(alg, &[(1, KEY_A)]);
        let h = header(1, PEER, generation, seq);
        let bytes = encode(&h, &beat, &keyring).unwrap();
        let got = receiver(keyring).accept(1, &bytes).unwrap();
        prop_assert!(got.fresh);
        prop_assert!(got.reads_v2);
        prop_assert_eq!(got.header, h);
        prop_assert_eq!(got.beat, beat);
    }

    #[test]
    fn arbitrary_bytes_are_rejected(bytes in prop::collection::vec(any::<u8>(), 0..2048), link in 0usize..3) {
        for alg in ALGS {
            // Configure the key id the garbage names (when it has one), so the MAC check runs.
            let other = bytes.get(5).copied().filter(|&id| id != 1).unwrap_or(0);
            let keyring = ring(alg, &[(1, KEY_A), (other, KEY_B)]);
            prop_assert!(decode(&bytes, &keyring, CLUSTER).is_err());
            prop_assert!(receiver(keyring).accept(link, &bytes).is_err());
        }
    }

    /// Authentic datagrams with an arbitrary body (as a buggy or newer peer could send) never
    /// panic the parser: they decode to a beat or are rejected as a bad body, nothing else.
    #[test]
    fn authentic_garbage_body_is_parsed_or_rejected(body in prop::collection::vec(any::<u8>(), SIGNED_LEN - HEADER_LEN)) {
        let keyring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
        let mut bytes = encode(&header(1, PEER, 1, 1), &plain_beat(), &keyring).unwrap();
        bytes[HEADER_LEN..SIGNED_LEN].copy_from_slice(&body);
        resign_sha256(&mut bytes, KEY_A);
        match decode(&bytes, &keyring, CLUSTER) {
            Ok(_) | Err(Reject::BadBody { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected rejection {other:?}"),
        }
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    for alg in ALGS {
        let keyring = ring(alg, &[(1, KEY_A), (3, KEY_B)]);
        for (key_id, beat, v1) in [
            (1, plain_beat(), false),
            (3, full_beat(), false),
            (1, plain_beat(), true),
            (3, full_beat(), true),
        ] {
            let enc = if v1 { encode_v1 } else { encode };
            let bytes = enc(&header(key_id, PEER, 5, 9), &beat, &keyring).unwrap();
            // The untouched datagram is accepted, so a rejection below is the flip's doing.
            assert!(decode(&bytes, &keyring, CLUSTER).is_ok());
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let err = decode(&flipped, &keyring, CLUSTER).unwrap_err();
                // Only the key id byte can fail before the MAC.
                assert!(
                    matches!(err, Reject::BadMac { .. } | Reject::UnknownKeyId { .. }),
                    "{alg} bit {bit}: {err:?}"
                );
                let mut rx = receiver(keyring.clone());
                assert!(rx.accept(0, &flipped).is_err(), "{alg} bit {bit}");
                assert_eq!(rx.counters().rejected(), 1);
            }
        }
    }
}

#[test]
fn every_truncation_is_rejected_and_so_is_an_extra_byte() {
    for alg in ALGS {
        let keyring = ring(alg, &[(1, KEY_A)]);
        let bytes = encode(&header(1, PEER, 1, 1), &full_beat(), &keyring).unwrap();
        let shortest = datagram_len_v1(alg);
        for len in 0..bytes.len() {
            let got = decode(&bytes[..len], &keyring, CLUSTER);
            if len < shortest {
                assert_eq!(
                    got,
                    Err(Reject::TooShort {
                        len,
                        expected: shortest
                    })
                );
            } else {
                // Long enough for version 1: the tag is the trailing bytes, and they do not match.
                assert!(matches!(got, Err(Reject::BadMac { .. })), "{len}: {got:?}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(&longer, &keyring, CLUSTER),
            Err(Reject::BadMac { .. })
        ));
        let huge = vec![0u8; MAX_DATAGRAM + 1];
        assert!(matches!(
            decode(&huge, &keyring, CLUSTER),
            Err(Reject::TooLong { .. })
        ));
    }
}

#[test]
fn datagram_sizes() {
    // 55 (version 1) or 80 (version 2) signed bytes plus the full tag.
    assert_eq!(datagram_len_v1(Algorithm::HmacSha256), 87);
    assert_eq!(datagram_len_v1(Algorithm::HmacSha1), 75);
    assert_eq!(datagram_len(Algorithm::HmacSha256), 112);
    assert_eq!(datagram_len(Algorithm::HmacSha1), 100);
    for alg in ALGS {
        let keyring = ring(alg, &[(1, KEY_A)]);
        for beat in [plain_beat(), full_beat()] {
            let bytes = encode(&header(1, PEER, 1, 1), &beat, &keyring).unwrap();
            assert_eq!(bytes.len(), datagram_len(alg));
            let bytes = encode_v1(&header(1, PEER, 1, 1), &beat, &keyring).unwrap();
            assert_eq!(bytes.len(), datagram_len_v1(alg));
        }
    }
}

/// A pair upgraded one node at a time: the upgraded sender speaks version 1 (flagged "reads
/// version 2") until the peer's current run shows that it reads version 2, and version 1 again
/// for a peer downgraded to a version-1 daemon (whose beats carry no flag).
#[test]
fn the_sender_uses_version_2_only_with_a_peer_that_reads_it() {
    let keyring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    let mut tx = Sender::new(keyring.clone(), 1, CLUSTER, PEER, 1).unwrap();
    let mut rx = receiver(keyring.clone());
    let first = tx.next(&full_beat());
    assert_eq!(first.len(), 87, "version 1 until the peer is known");
    let got = rx.accept(0, &first).unwrap();
    assert!(got.reads_v2);
    assert_eq!(got.beat, v1_part(full_beat()));
    // What a version-1 daemon checks of it: exact version-1 length, known critical flags only.
    // The flag is advisory (high byte), so such a daemon accepts the datagram and ignores it.
    assert_eq!(first[4], 1);
    assert_eq!(u16::from_be_bytes([first[6], first[7]]), FLAG_READS_V2);
    assert_eq!(FLAG_READS_V2 & 0x00ff, 0);

    tx.set_peer_reads_v2(true);
    let second = tx.next(&full_beat());
    assert_eq!(second.len(), 112);
    let got = rx.accept(0, &second).unwrap();
    assert_eq!(got.beat, full_beat());

    // A version-1 daemon's own beats: flags 0, no stamp; it does not read version 2.
    let mut old = encode_v1(&header(1, PEER, 2, 1), &plain_beat(), &keyring).unwrap();
    old[6] = 0;
    resign_sha256(&mut old, KEY_A);
    let got = rx.accept(0, &old).unwrap();
    assert!(!got.reads_v2);
    assert_eq!(got.beat, v1_part(plain_beat()));
    tx.set_peer_reads_v2(got.reads_v2);
    assert_eq!(tx.next(&full_beat()).len(), 87);
}

#[test]
fn wrong_key_unknown_key_other_cluster_own_id_and_stranger_are_rejected() {
    let tx_ring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    let beat = plain_beat();

    let bytes = encode(&header(1, PEER, 1, 1), &beat, &tx_ring).unwrap();
    let mut rx = receiver(ring(Algorithm::HmacSha256, &[(1, KEY_B)]));
    assert_eq!(rx.accept(0, &bytes), Err(Reject::BadMac { key_id: 1 }));
    let mut rx = receiver(ring(Algorithm::HmacSha256, &[(2, KEY_A)]));
    assert_eq!(
        rx.accept(0, &bytes),
        Err(Reject::UnknownKeyId { key_id: 1 })
    );

    let mut foreign = header(1, PEER, 1, 1);
    foreign.cluster_id = CLUSTER + 1;
    let bytes = encode(&foreign, &beat, &tx_ring).unwrap();
    let mut rx = receiver(tx_ring.clone());
    assert_eq!(
        rx.accept(0, &bytes),
        Err(Reject::WrongCluster {
            cluster_id: CLUSTER + 1,
            expected: CLUSTER
        })
    );

    let bytes = encode(&header(1, ME, 1, 1), &beat, &tx_ring).unwrap();
    assert_eq!(rx.accept(0, &bytes), Err(Reject::FromSelf { node_id: ME }));
    let bytes = encode(&header(1, 9, 1, 1), &beat, &tx_ring).unwrap();
    assert_eq!(
        rx.accept(0, &bytes),
        Err(Reject::UnknownSender {
            node_id: 9,
            expected: PEER
        })
    );

    let c = rx.counters();
    assert_eq!(
        (c.wrong_cluster, c.from_self, c.unknown_sender, c.fresh),
        (1, 1, 1, 0)
    );
    assert_eq!(c.rejected(), 3);
}

#[test]
fn algorithm_mismatch_is_rejected() {
    let sha1 = ring(Algorithm::HmacSha1, &[(1, KEY_A)]);
    let sha256 = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    // A version-1 HMAC-SHA1 datagram (75 bytes) is shorter than any HMAC-SHA256 heartbeat.
    let short = encode_v1(&header(1, PEER, 1, 1), &plain_beat(), &sha1).unwrap();
    assert!(matches!(
        decode(&short, &sha256, CLUSTER),
        Err(Reject::TooShort { .. })
    ));
    // Every other mismatch has a plausible length; its trailing bytes are not the tag.
    for (bytes, other) in [
        (
            encode(&header(1, PEER, 1, 1), &plain_beat(), &sha1).unwrap(),
            &sha256,
        ),
        (
            encode(&header(1, PEER, 1, 1), &plain_beat(), &sha256).unwrap(),
            &sha1,
        ),
        (
            encode_v1(&header(1, PEER, 1, 1), &plain_beat(), &sha256).unwrap(),
            &sha1,
        ),
    ] {
        assert!(
            matches!(decode(&bytes, other, CLUSTER), Err(Reject::BadMac { .. })),
            "{} bytes",
            bytes.len()
        );
    }
}

#[test]
fn key_rotation_accepts_either_configured_key() {
    let mut rx = receiver(ring(Algorithm::HmacSha256, &[(1, KEY_A), (2, KEY_B)]));
    let mut old = Sender::new(
        ring(Algorithm::HmacSha256, &[(1, KEY_A)]),
        1,
        CLUSTER,
        PEER,
        1,
    )
    .unwrap();
    let mut new = Sender::new(
        ring(Algorithm::HmacSha256, &[(1, KEY_A), (2, KEY_B)]),
        1,
        CLUSTER,
        PEER,
        2,
    )
    .unwrap();
    assert!(rx.accept(0, &old.next(&plain_beat())).unwrap().fresh);
    // The peer restarted with both keys and switched to the new id.
    new.set_key_id(2).unwrap();
    let got = rx.accept(0, &new.next(&plain_beat())).unwrap();
    assert!(got.fresh);
    assert_eq!(got.header.key_id, 2);
    assert_eq!(
        new.set_key_id(3),
        Err(EncodeError::UnknownKeyId { key_id: 3 })
    );
}

#[test]
fn encoding_with_an_unconfigured_key_id_fails() {
    let keyring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    assert_eq!(
        encode(&header(2, PEER, 1, 1), &plain_beat(), &keyring),
        Err(EncodeError::UnknownKeyId { key_id: 2 })
    );
    assert!(Sender::new(keyring, 2, CLUSTER, PEER, 1).is_err());
}

/// Authenticated header fields that are wrong: the peer has the key, so only the header check
/// stands between us and misreading it.
#[test]
fn authentic_but_unsupported_headers_are_rejected() {
    let keyring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    let good = encode(&header(1, PEER, 1, 1), &plain_beat(), &keyring).unwrap();
    let patched = |at: usize, value: u8| {
        let mut b = good.clone();
        b[at] = value;
        resign_sha256(&mut b, KEY_A);
        decode(&b, &keyring, CLUSTER)
    };
    assert_eq!(patched(0, b'X'), Err(Reject::BadMagic));
    assert_eq!(
        patched(4, 3),
        Err(Reject::UnsupportedVersion {
            version: 3,
            supported: 2
        })
    );
    // A version-1 length saying version 2 is a short version-2 datagram.
    let v1 = encode_v1(&header(1, PEER, 1, 1), &plain_beat(), &keyring).unwrap();
    let mut short = v1.clone();
    short[4] = 2;
    resign_sha256(&mut short, KEY_A);
    assert!(matches!(
        decode(&short, &keyring, CLUSTER),
        Err(Reject::TooShort { .. })
    ));
    // Flags: byte 7 is the low (critical) byte, byte 6 the high (advisory) byte.
    assert_eq!(
        patched(7, 0x01),
        Err(Reject::UnknownFlags { flags: 0x0001 })
    );
    assert_eq!(patched(6, 0x80).unwrap().1, plain_beat());

    // A datagram of either version with an extra authenticated byte is not a heartbeat.
    for (bytes, signed) in [(&good, SIGNED_LEN), (&v1, SIGNED_LEN_V1)] {
        let mut longer = bytes[..signed].to_vec();
        longer.push(0);
        longer.extend_from_slice(&[0u8; 32]);
        resign_sha256(&mut longer, KEY_A);
        assert!(matches!(
            decode(&longer, &keyring, CLUSTER),
            Err(Reject::TooLong { .. })
        ));
    }

    // A newer version may be longer; it is still reported as a version problem.
    let mut v3 = good[..SIGNED_LEN].to_vec();
    v3.extend_from_slice(&[0u8; 40]);
    v3[4] = 3;
    resign_sha256(&mut v3, KEY_A);
    assert!(matches!(
        decode(&v3, &keyring, CLUSTER),
        Err(Reject::UnsupportedVersion { version: 3, .. })
    ));
}

#[test]
fn bad_body_fields_are_named() {
    let keyring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    let good = encode(&header(1, PEER, 1, 1), &plain_beat(), &keyring).unwrap();
    let cases: [(usize, u8, &str); 11] = [
        (42, NodeState::ALL.len() as u8, "node state"),
        (43, DiskState::ALL.len() as u8, "disk state"),
        (44, 6, "handoff kind"),
        (45, 1, "refuse reason"),
        (49, 1, "handoff id"),
        (50, 6, "outdate kind"),
        (54, 1, "outdate id"),
        (55, 4, "stamp/echo presence"),
        (63, 1, "stamp"),
        (64, 1, "echo"),
        (79, 1, "echo"),
    ];
    for (at, value, field) in cases {
        let mut b = good.clone();
        b[at] = value;
        resign_sha256(&mut b, KEY_A);
        match decode(&b, &keyring, CLUSTER) {
            Err(Reject::BadBody { field: f, .. }) => assert_eq!(f, field, "byte {at}"),
            other => panic!("byte {at}: {other:?}"),
        }
        // Through the receiver, counted as bad body, and the window is not moved.
        let mut rx = receiver(keyring.clone());
        assert!(rx.accept(0, &b).is_err());
        assert_eq!(rx.counters().bad_body, 1);
        assert_eq!(rx.peer_generation(), None);
    }
    // A refuse with an unknown reason.
    let mut b = good.clone();
    b[44] = 4;
    b[45] = 5;
    resign_sha256(&mut b, KEY_A);
    assert_eq!(
        decode(&b, &keyring, CLUSTER),
        Err(Reject::BadBody {
            field: "refuse reason",
            value: 5
        })
    );
}

#[test]
fn open_leaves_the_body_unparsed() {
    let keyring = ring(Algorithm::HmacSha1, &[(1, KEY_A)]);
    let bytes = encode(&header(1, PEER, 3, 4), &full_beat(), &keyring).unwrap();
    let opened = open(&bytes, &keyring, CLUSTER).unwrap();
    assert_eq!(opened.header, header(1, PEER, 3, 4));
    assert_eq!(&opened.body[..], &bytes[HEADER_LEN..SIGNED_LEN_V1]);
    assert_eq!(
        opened.ext.as_ref().map(|e| &e[..]),
        Some(&bytes[SIGNED_LEN_V1..SIGNED_LEN])
    );
    let v1 = encode_v1(&header(1, PEER, 3, 4), &full_beat(), &keyring).unwrap();
    assert_eq!(open(&v1, &keyring, CLUSTER).unwrap().ext, None);
}

#[test]
fn rejections_read_as_lowercase_causes_and_counters_serialize() {
    let keyring = ring(Algorithm::HmacSha256, &[(1, KEY_A)]);
    let mut rx = receiver(keyring);
    let err = rx.accept(0, b"hello").unwrap_err();
    assert_eq!(
        err.to_string(),
        "datagram too short: 5 bytes, a heartbeat is 87 bytes"
    );
    assert_eq!(
        rx.accept(7, b"x").unwrap_err(),
        Reject::UnknownLink { link: 7, links: 2 }
    );
    let json = serde_json::to_value(rx.counters()).unwrap();
    assert_eq!(json["too-short"], 1);
    assert_eq!(json["unknown-link"], 1);
    assert_eq!(json["link-duplicate"], 0);
}
