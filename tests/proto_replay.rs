//! Replay window behaviour through the receiver: duplicates across links, reorders, replays,
//! restarts, and a randomized network that duplicates and reorders across two links.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use twinbeat::core::types::{Beat, DiskState, NodeState};
use twinbeat::proto::{Algorithm, Keyring, Receiver, Reject, Sender};

const KEY: &[u8] = b"replay-test-key-0123456789";
const FORGER_KEY: &[u8] = b"not-the-real-key-0123456789";
const CLUSTER: u32 = 77;
const ME: u16 = 1;
const PEER: u16 = 2;

fn keyring(key: &[u8]) -> Keyring {
    Keyring::new(Algorithm::HmacSha256, [(1u8, key)]).unwrap()
}

fn sender(generation: u64) -> Sender {
    Sender::new(keyring(KEY), 1, CLUSTER, PEER, generation).unwrap()
}

fn receiver() -> Receiver {
    Receiver::new(keyring(KEY), CLUSTER, ME, PEER, 2)
}

/// A beat whose term identifies it, so a delivered body can be traced to the datagram it came in.
fn beat(term: u64) -> Beat {
    Beat {
        state: NodeState::Standby,
        term,
        held: 0,
        disk: DiskState::UpToDate,
        handoff: None,
        outdate: None,
        stamp: None,
        echo: None,
    }
}

#[test]
fn same_datagram_twice_on_one_link_is_stale_and_counted() {
    let mut tx = sender(1);
    let mut rx = receiver();
    let d = tx.next(&beat(0));
    assert!(rx.accept(0, &d).unwrap().fresh);
    assert_eq!(rx.accept(0, &d), Err(Reject::Stale { seq: 0, highest: 0 }));
    assert_eq!(rx.counters().stale, 1);
    assert_eq!(rx.counters().fresh, 1);
}

#[test]
fn same_datagram_on_two_links_is_fresh_then_link_duplicate() {
    let mut tx = sender(1);
    let mut rx = receiver();
    let d = tx.next(&beat(10));
    let first = rx.accept(0, &d).unwrap();
    let second = rx.accept(1, &d).unwrap();
    assert!(first.fresh);
    assert!(!second.fresh);
    assert_eq!(second.beat, first.beat);
    assert_eq!(rx.counters().link_duplicate, 1);
    assert_eq!(rx.counters().rejected(), 0);
    // A third copy on either link is stale.
    assert!(matches!(rx.accept(1, &d), Err(Reject::Stale { .. })));
    assert!(matches!(rx.accept(0, &d), Err(Reject::Stale { .. })));
}

#[test]
fn reordered_older_seq_is_stale() {
    let mut tx = sender(1);
    let mut rx = receiver();
    let older = tx.next(&beat(0));
    let newer = tx.next(&beat(1));
    assert!(rx.accept(0, &newer).unwrap().fresh);
    assert_eq!(
        rx.accept(0, &older),
        Err(Reject::Stale { seq: 0, highest: 1 })
    );
    // Never delivered, so it is not a duplicate on the other link either.
    assert!(matches!(rx.accept(1, &older), Err(Reject::Stale { .. })));
    assert_eq!(rx.counters().stale, 2);
}

#[test]
fn older_generation_is_replay_and_newer_generation_resets() {
    let mut old = sender(4);
    let mut new = sender(5);
    let mut rx = receiver();
    let old_beats: Vec<_> = (0..100).map(|i| old.next(&beat(i))).collect();
    assert!(rx.accept(0, &old_beats[99]).unwrap().fresh);

    // The peer restarts: generation 5 begins again at seq 0 and is fresh.
    let restart = rx.accept(1, &new.next(&beat(500))).unwrap();
    assert!(restart.fresh);
    assert_eq!(restart.header.seq, 0);
    assert_eq!(rx.peer_generation(), Some(5));

    // Everything from generation 4 is now a replay, even seqs above the new generation's.
    assert_eq!(
        rx.accept(0, &old_beats[99]),
        Err(Reject::Replay {
            generation: 4,
            current: 5
        })
    );
    assert!(matches!(
        rx.accept(1, &old_beats[3]),
        Err(Reject::Replay { .. })
    ));
    assert_eq!(rx.counters().replay, 2);
    // The reset window also forgot per-link state: seq 1 is fresh on link 0.
    assert!(rx.accept(0, &new.next(&beat(501))).unwrap().fresh);
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// Copy of the current generation's datagram `seq` arriving on `link`.
    Current { seq: usize, link: usize },
    /// A datagram of the peer's previous generation, replayed on `link`.
    Previous { seq: usize, link: usize },
    /// A datagram made with the wrong key, on `link`.
    Forged { seq: usize, link: usize },
}

const PREVIOUS: u64 = 8;
const CURRENT: u64 = 9;

fn network() -> impl Strategy<Value = (usize, Vec<Event>)> {
    // Per current datagram: copies on link 0 and link 1 (0 = lost, 2 = duplicated by the net),
    // and whether a previous-generation or forged datagram is injected alongside.
    prop::collection::vec((0usize..3, 0usize..3, any::<bool>(), any::<bool>()), 1..48)
        .prop_flat_map(|plan| {
            let n = plan.len();
            let mut events = Vec::new();
            for (seq, &(c0, c1, replay, forge)) in plan.iter().enumerate() {
                events.extend((0..c0).map(|_| Event::Current { seq, link: 0 }));
                events.extend((0..c1).map(|_| Event::Current { seq, link: 1 }));
                if replay {
                    events.push(Event::Previous { seq, link: seq % 2 });
                }
                if forge {
                    events.push(Event::Forged {
                        seq,
                        link: (seq + 1) % 2,
                    });
                }
            }
            (Just(n), Just(events).prop_shuffle())
        })
}

proptest! {
    /// Whatever the network does, the receiver delivers each body at most once, in strictly
    /// increasing (generation, seq) order, only bodies the peer sent, and link duplicates only
    /// for bodies already delivered, once per link.
    #[test]
    fn delivery_is_at_most_once_in_order_and_authentic((n, events) in network()) {
        let mut previous = sender(PREVIOUS);
        let mut current = sender(CURRENT);
        let mut forger = Sender::new(keyring(FORGER_KEY), 1, CLUSTER, PEER, CURRENT).unwrap();
        // Terms tell the generations apart: previous-generation beats have term 1000 + seq.
        let prev_dgrams: Vec<_> = (0..n as u64).map(|s| previous.next(&beat(1000 + s))).collect();
        let cur_dgrams: Vec<_> = (0..n as u64).map(|s| current.next(&beat(s))).collect();
        let forged: Vec<_> = (0..n as u64).map(|s| forger.next(&beat(5000 + s))).collect();
        let sent: BTreeMap<(u64, u64), Beat> = (0..n as u64)
            .flat_map(|s| [((PREVIOUS, s), beat(1000 + s)), ((CURRENT, s), beat(s))])
            .collect();

        let mut rx = receiver();
        let mut delivered: Vec<(u64, u64)> = Vec::new();
        let mut vouched: BTreeSet<(usize, u64, u64)> = BTreeSet::new();
        let mut highest_current_arrived: Option<u64> = None;
        for event in &events {
            let (link, bytes) = match *event {
                Event::Current { seq, link } => {
                    highest_current_arrived = highest_current_arrived.max(Some(seq as u64));
                    (link, &cur_dgrams[seq])
                }
                Event::Previous { seq, link } => (link, &prev_dgrams[seq]),
                Event::Forged { seq, link } => (link, &forged[seq]),
            };
            // Bound outside the assertion macros, which stringify their condition.
            let forged_event = matches!(event, Event::Forged { .. });
            match rx.accept(link, bytes) {
                Ok(a) => {
                    let id = (a.header.generation, a.header.seq);
                    prop_assert_eq!(Some(&a.beat), sent.get(&id), "never sent: {:?}", id);
                    prop_assert!(vouched.insert((link, id.0, id.1)), "{:?} twice on link {}", id, link);
                    if a.fresh {
                        if let Some(last) = delivered.last() {
                            prop_assert!(id > *last, "{:?} after {:?}", id, last);
                        }
                        delivered.push(id);
                    } else {
                        prop_assert!(delivered.contains(&id), "duplicate of undelivered {:?}", id);
                    }
                }
                Err(Reject::Stale { .. } | Reject::Replay { .. }) => {
                    prop_assert!(!forged_event);
                }
                Err(Reject::BadMac { .. }) => {
                    prop_assert!(forged_event);
                }
                Err(other) => prop_assert!(false, "unexpected rejection {:?}", other),
            }
        }
        // The newest datagram that reached us at all is always delivered: nothing can shadow it.
        if let Some(top) = highest_current_arrived {
            prop_assert!(delivered.contains(&(CURRENT, top)));
        }
        let c = rx.counters();
        prop_assert_eq!(c.fresh as usize, delivered.len());
        let forged_count = events.iter().filter(|e| matches!(e, Event::Forged { .. })).count();
        prop_assert_eq!(c.bad_mac as usize, forged_count);
    }
}
