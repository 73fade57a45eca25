//! DRBD's fence-peer handler through the core (the role Heartbeat's dopd played), on the
//! two-node simulator: every answer DRBD can get, and the ones it must never get.
//! Exit codes: 3 peer Inconsistent, 4 peer outdated, 5 peer unreachable, 6 peer Primary,
//! 7 peer fenced, 1 anything else (DRBD acts on nothing).

mod sim;

use sim::{Event, Rng, Sim};
use twinbeat::core::{
    Action, Command, CoreParams, DiskState, Input, NodeState, OutdateKind, OutdateMsg,
    OutdateVerdict,
};

const A: usize = 0;
const B: usize = 1;

fn settled_with(seed: u64, a: CoreParams, b: CoreParams) -> Sim {
    let mut sim = Sim::with_params(seed, a, b);
    sim.start_both();
    sim.run_until(12_000);
    assert_eq!(sim.state(A), Some(NodeState::Active), "A should be active");
    assert_eq!(
        sim.state(B),
        Some(NodeState::Standby),
        "B should be standby"
    );
    no_violations(&sim);
    sim
}

fn settled(seed: u64) -> Sim {
    settled_with(seed, CoreParams::example(1), CoreParams::example(2))
}

fn with_fencing(seed: u64, required: bool) -> Sim {
    let (a, b) = sim::fenced_params(required);
    settled_with(seed, a, b)
}

fn no_violations(sim: &Sim) {
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

/// Runs until request `id` of node `n` is answered (at most `limit` ms); returns the exit code
/// and how long it took.
fn answer(sim: &mut Sim, n: usize, id: u64, limit: u64) -> (u8, u64) {
    let asked = sim.now;
    let at = sim
        .run_until_pred(limit, |s| s.outdate_code(n, id).is_some())
        .unwrap_or_else(|| {
            panic!(
                "request {id} of node{} not answered within {limit} ms:\n{:#?}",
                n + 1,
                sim.trace(n).iter().rev().take(20).collect::<Vec<_>>()
            )
        });
    (sim.outdate_code(n, id).expect("answered"), at - asked)
}

fn outdates_run(sim: &Sim, n: usize) -> usize {
    sim.count(n, |a| matches!(a, Action::OutdateDisk { .. }))
}

fn cut_all(sim: &mut Sim) {
    let now = sim.now;
    sim.at(
        now,
        Event::Cut {
            link: 0,
            from: None,
        },
    );
    sim.at(
        now,
        Event::Cut {
            link: 1,
            from: None,
        },
    );
}

#[test]
fn a_standby_peer_outdates_its_disk_and_then_never_takes_over() {
    let mut sim = settled(11);
    let id = sim.outdate_peer(A, None);
    let (code, took) = answer(&mut sim, A, id, 5_000);
    assert_eq!(code, 4, "peer outdated");
    // One beat there, the outdate (300 ms in the simulator), one beat back: well under a second.
    assert!(took < 1_000, "answered after {took} ms");
    assert_eq!(
        sim.nodes[B].outdated_at.len(),
        1,
        "B ran drbdadm outdate once"
    );
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "A keeps writing alone"
    );
    // The point of outdating: B's data is now older, so B must not take over when A dies.
    sim.at(sim.now + 100, Event::PowerCut(A));
    sim.run_for(30_000);
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert!(
        sim.entered(B, NodeState::Acquiring).is_empty(),
        "B promoted an Outdated disk"
    );
    let blockers = sim.node(B).status(sim.now).blockers;
    assert!(
        blockers.iter().any(|b| b.contains("Outdated")),
        "B says why it waits: {blockers:?}"
    );
    no_violations(&sim);
}

#[test]
fn a_peer_already_outdated_is_outdated_again_and_an_inconsistent_one_is_not() {
    // Outdated: its idea of the disk may be stale, so DRBD is asked again (a no-op if true).
    for (disk, code, runs) in [
        (DiskState::Outdated, 4, 1),
        (DiskState::Inconsistent, 3, 0),
        (DiskState::Diskless, 3, 0),
    ] {
        let mut sim = settled(12);
        sim.at(sim.now, Event::Disk(B, disk));
        sim.run_for(10);
        let id = sim.outdate_peer(A, None);
        let (got, _) = answer(&mut sim, A, id, 5_000);
        assert_eq!(got, code, "peer disk {disk:?}");
        assert_eq!(
            outdates_run(&sim, B),
            runs,
            "peer disk {disk:?}: drbdadm outdate runs"
        );
        no_violations(&sim);
    }
}

#[test]
fn an_active_peer_refuses_and_keeps_its_disk() {
    let mut sim = settled(13);
    // B's DRBD asks (e.g. someone promotes B by hand while the replication link is down).
    let id = sim.outdate_peer(B, None);
    let (code, took) = answer(&mut sim, B, id, 5_000);
    assert_eq!(code, 6, "peer is Primary");
    assert!(took < 1_000, "answered after {took} ms");
    assert_eq!(
        outdates_run(&sim, A),
        0,
        "the active node never outdates itself"
    );
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.nodes[A].world, 0b1111);
    no_violations(&sim);
}

#[test]
fn a_node_in_the_middle_of_a_takeover_refuses_too() {
    let mut sim = settled(14);
    // B becomes the active node through a handoff; A's DRBD asks while B is acquiring.
    let _ = sim.command(A, Command::Standby);
    let acquiring = sim
        .run_until_pred(10_000, |s| s.state(B) == Some(NodeState::Acquiring))
        .expect("B acquires");
    let id = sim.outdate_peer(A, None);
    let (code, _) = answer(&mut sim, A, id, 5_000);
    assert_eq!(
        code, 6,
        "B (acquiring since {acquiring}) may hold the service"
    );
    assert_eq!(outdates_run(&sim, B), 0);
    no_violations(&sim);
}

#[test]
fn a_silent_peer_is_unreachable_once_deadtime_passes() {
    let mut sim = settled(15);
    cut_all(&mut sim);
    sim.run_for(1);
    let id = sim.outdate_peer(A, None);
    let (code, took) = answer(&mut sim, A, id, 10_000);
    assert_eq!(code, 5, "peer could not be asked");
    // When the core declares the peer dead: deadtime (1000 ms) after the last beat heard, which
    // came up to one keepalive (200 ms) before the cut.
    assert!((790..=1_010).contains(&took), "answered after {took} ms");
    assert_eq!(outdates_run(&sim, B), 0);
    no_violations(&sim);
}

#[test]
fn a_peer_already_dead_is_unreachable_at_once() {
    let mut sim = settled(16);
    sim.at(sim.now, Event::PowerCut(B));
    sim.run_for(5_000);
    let id = sim.outdate_peer(A, None);
    let (code, took) = answer(&mut sim, A, id, 1_000);
    assert_eq!((code, took), (5, 0));
    no_violations(&sim);
}

#[test]
fn a_silent_peer_is_fenced_when_fencing_is_configured() {
    let mut sim = with_fencing(17, true);
    cut_all(&mut sim);
    sim.run_for(1);
    let id = sim.outdate_peer(A, None);
    let (code, took) = answer(&mut sim, A, id, 10_000);
    assert_eq!(code, 7, "the [fencing] command succeeded");
    assert_eq!(sim.nodes[A].fenced_peer_at.len(), 1, "fenced exactly once");
    // Peer dead (as above), then the fence (100 ms in the simulator).
    assert!((890..=1_110).contains(&took), "answered after {took} ms");
    assert!(sim.nodes[B].node.is_none(), "the fence powered B off");
    no_violations(&sim);
}

#[test]
fn a_failed_fence_is_not_reported_as_fenced() {
    let mut sim = with_fencing(18, true);
    sim.nodes[A].fence_ok = false;
    cut_all(&mut sim);
    sim.run_for(1);
    let id = sim.outdate_peer(A, None);
    let (code, _) = answer(&mut sim, A, id, 10_000);
    assert_eq!(code, 5, "unreachable, not fenced");
    no_violations(&sim);
}

#[test]
fn during_a_takeover_the_survivor_answers_from_what_it_knows() {
    // No fencing: A died, B promotes, B's DRBD calls the handler while B acquires step 0.
    let mut sim = settled(19);
    sim.at(sim.now, Event::PowerCut(A));
    sim.run_until_pred(5_000, |s| s.state(B) == Some(NodeState::Acquiring))
        .expect("B takes over");
    let id = sim.outdate_peer(B, None);
    let (code, took) = answer(&mut sim, B, id, 1_000);
    assert_eq!((code, took), (5, 0));
    // With fencing: B fenced A before its takeover, so the answer is "fenced".
    let mut sim = with_fencing(20, true);
    cut_all(&mut sim);
    sim.run_until_pred(5_000, |s| s.state(B) == Some(NodeState::Acquiring))
        .expect("B takes over after fencing A");
    assert_eq!(sim.nodes[B].fenced_peer_at.len(), 1);
    let id = sim.outdate_peer(B, None);
    let (code, took) = answer(&mut sim, B, id, 1_000);
    assert_eq!((code, took), (7, 0));
    assert_eq!(sim.nodes[B].fenced_peer_at.len(), 1, "no second fence");
    sim.run_for(2_000);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn a_peer_that_cannot_outdate_answers_failed_and_drbd_acts_on_nothing() {
    let mut sim = settled(21);
    sim.nodes[B].outdate_ok = false;
    let id = sim.outdate_peer(A, None);
    let (code, _) = answer(&mut sim, A, id, 5_000);
    assert_eq!(code, 1);
    assert_eq!(sim.node(B).status(sim.now).disk, DiskState::UpToDate);
    no_violations(&sim);
}

#[test]
fn a_heard_peer_that_never_answers_is_a_failure_not_unreachable() {
    let mut sim = settled(22);
    sim.nodes[B].outdate_hangs = true;
    let id = sim.outdate_peer(A, Some(2_000));
    let (code, took) = answer(&mut sim, A, id, 5_000);
    assert_eq!(
        code, 1,
        "the peer is alive: exit 5 would let DRBD assume it is outdated"
    );
    assert_eq!(took, 2_000, "the core's deadline");
    // While its outdate hangs B must not take over, even with A gone.
    sim.at(sim.now, Event::PowerCut(A));
    sim.run_for(10_000);
    assert!(sim.entered(B, NodeState::Acquiring).is_empty());
    assert!(sim
        .node(B)
        .status(sim.now)
        .blockers
        .iter()
        .any(|b| b.contains("outdating")));
    // The hung command is cancelled at its timeout (the drbd step's 30 s) and B answers Failed.
    sim.run_for(25_000);
    assert!(sim.count(B, |a| matches!(a, Action::Cancel { .. })) >= 1);
    no_violations(&sim);
}

#[test]
fn forged_late_and_duplicate_answers_are_ignored() {
    let mut sim = settled(23);
    // Hold B's answers back: cut B -> A so only A's request flows.
    sim.at(
        sim.now,
        Event::Cut {
            link: 0,
            from: Some(B),
        },
    );
    sim.at(
        sim.now,
        Event::Cut {
            link: 1,
            from: Some(B),
        },
    );
    sim.run_for(1);
    let id = sim.outdate_peer(A, Some(10_000));
    sim.run_for(50);
    let wire_id = sim.node(A).beat().outdate.expect("A asks in its beats").id;
    let gen = sim.nodes[B].generation;
    let mut forged = sim.node(B).beat();
    for kind in [
        OutdateKind::Done,
        OutdateKind::Refused,
        OutdateKind::Inconsistent,
    ] {
        // An answer with the wrong id (an old request, or a bug) changes nothing.
        forged.outdate = Some(OutdateMsg {
            id: wire_id.wrapping_add(1),
            kind,
        });
        sim.input(
            A,
            Input::Heartbeat {
                link: 0,
                generation: gen,
                beat: forged,
                fresh: true,
            },
        );
        // A copy on another link (not fresh) carries no answer either.
        forged.outdate = Some(OutdateMsg { id: wire_id, kind });
        sim.input(
            A,
            Input::Heartbeat {
                link: 1,
                generation: gen,
                beat: forged,
                fresh: false,
            },
        );
    }
    sim.run_for(100);
    assert_eq!(sim.outdate_code(A, id), None, "still waiting");
    assert!(sim.node(A).beat().outdate.is_some(), "still asking");
    assert_eq!(
        sim.node(A).status(sim.now).outdate,
        Some(OutdateMsg {
            id: wire_id,
            kind: OutdateKind::Request
        }),
        "status shows the open request"
    );
    // The real answer arrives when B's links heal.
    sim.at(
        sim.now,
        Event::Heal {
            link: 0,
            from: Some(B),
        },
    );
    sim.at(
        sim.now,
        Event::Heal {
            link: 1,
            from: Some(B),
        },
    );
    let (code, _) = answer(&mut sim, A, id, 5_000);
    assert_eq!(code, 4);
    // B keeps repeating its answer for a while, on both links: A answers DRBD once (the
    // simulator records a second answer to the same id as a violation).
    sim.run_for(3_000);
    assert_eq!(sim.nodes[A].outdates.len(), 1);
    assert_eq!(
        sim.nodes[B].outdated_at.len(),
        1,
        "one drbdadm outdate for many beats"
    );
    // A late answer to a request that already timed out is ignored.
    let id2 = sim.outdate_peer(A, Some(500));
    sim.at(
        sim.now,
        Event::Cut {
            link: 0,
            from: Some(B),
        },
    );
    sim.at(
        sim.now,
        Event::Cut {
            link: 1,
            from: Some(B),
        },
    );
    let (code, _) = answer(&mut sim, A, id2, 2_000);
    assert_eq!(code, 1, "heard but no answer in time");
    let late = sim.node(B).beat().outdate;
    assert!(
        matches!(
            late,
            Some(OutdateMsg {
                kind: OutdateKind::Done,
                ..
            })
        ),
        "B did answer, too late: {late:?}"
    );
    sim.at(
        sim.now,
        Event::Heal {
            link: 0,
            from: Some(B),
        },
    );
    sim.at(
        sim.now,
        Event::Heal {
            link: 1,
            from: Some(B),
        },
    );
    sim.run_for(2_000);
    assert_eq!(sim.nodes[A].outdates.len(), 2);
    assert_eq!(
        sim.nodes[A].outdates[&id2].1.verdict,
        OutdateVerdict::Failed
    );
    no_violations(&sim);
}

#[test]
fn repeated_handler_calls_share_one_request() {
    let mut sim = settled(24);
    let first = sim.outdate_peer(A, None);
    sim.run_for(20);
    let second = sim.outdate_peer(A, None);
    let (c1, _) = answer(&mut sim, A, first, 5_000);
    let (c2, _) = answer(&mut sim, A, second, 5_000);
    assert_eq!((c1, c2), (4, 4));
    assert_eq!(outdates_run(&sim, B), 1);
    no_violations(&sim);
}

#[test]
fn without_drbd_or_in_maintenance_nothing_is_claimed() {
    let mut a = CoreParams::example(1);
    let mut b = CoreParams::example(2);
    a.disk_gate = false;
    b.disk_gate = false;
    let mut sim = settled_with(25, a, b);
    let id = sim.outdate_peer(A, None);
    assert_eq!(answer(&mut sim, A, id, 100).0, 1, "no drbd resource here");

    let mut sim = settled(26);
    let _ = sim.command(B, Command::Maintenance { on: true });
    sim.run_for(500);
    assert_eq!(sim.state(B), Some(NodeState::Maintenance));
    let id = sim.outdate_peer(A, None);
    assert_eq!(
        answer(&mut sim, A, id, 5_000).0,
        1,
        "a node in maintenance does not act"
    );
    assert_eq!(outdates_run(&sim, B), 0);
    no_violations(&sim);
}

#[test]
fn a_restarted_peer_gets_fresh_answers() {
    let mut sim = settled(27);
    let id = sim.outdate_peer(A, None);
    assert_eq!(answer(&mut sim, A, id, 5_000).0, 4);
    // A's daemon restarts (it keeps the service: adopted) and DRBD asks again at once; B's
    // disk resyncs meanwhile (UpToDate again), so the honest answer needs a new outdate.
    sim.run_for(100);
    assert_eq!(sim.node(B).status(sim.now).disk, DiskState::Outdated);
    sim.at(sim.now, Event::Disk(B, DiskState::UpToDate));
    sim.at(sim.now + 10, Event::KillDaemon(A));
    sim.at(sim.now + 20, Event::StartDaemon(A));
    sim.run_for(40);
    let id = sim.outdate_peer(A, None);
    assert_eq!(answer(&mut sim, A, id, 5_000).0, 4);
    assert_eq!(
        sim.nodes[B].outdated_at.len(),
        2,
        "outdated again, not a stale answer"
    );
    no_violations(&sim);
}

#[test]
fn outdate_runs_are_deterministic() {
    let run = || {
        let mut sim = settled(28);
        sim.links[0][0].loss_percent = 30;
        sim.links[1][1].loss_percent = 30;
        let id = sim.outdate_peer(A, None);
        answer(&mut sim, A, id, 10_000);
        (sim.trace(A), sim.trace(B))
    };
    assert_eq!(run(), run());
}

/// Random faults and random handler calls: every call is answered exactly once, within its
/// deadline, with a code that matches what happened, and no node outdates itself while it may
/// hold the service or promotes an Outdated disk (the simulator's checks).
#[test]
fn random_faults_every_request_answered_once_and_honestly() {
    for seed in 0..60u64 {
        let mut rng = Rng::new(seed + 1_000);
        let fencing = rng.chance(40);
        let mut sim = if fencing {
            with_fencing(seed, rng.chance(50))
        } else {
            settled(seed)
        };
        sim.links[0][0].loss_percent = rng.below(20) as u8;
        sim.links[1][1].loss_percent = rng.below(20) as u8;
        let mut asked = Vec::new();
        let mut paused = [false; 2];
        for _ in 0..8 {
            let t = sim.now + rng.below(3_000);
            let n = rng.below(2) as usize;
            let e = match rng.below(9) {
                0 => Event::Cut {
                    link: rng.below(2) as usize,
                    from: None,
                },
                1 => Event::Heal {
                    link: rng.below(2) as usize,
                    from: None,
                },
                2 => Event::KillDaemon(n),
                3 => Event::StartDaemon(n),
                4 => Event::Command(n, Command::Standby),
                5 => Event::Disk(n, DiskState::UpToDate),
                6 => Event::PowerCut(n),
                _ => {
                    paused[n] = true;
                    Event::Pause(n)
                }
            };
            sim.at(t, e);
            sim.at(t + rng.below(2_000), Event::Resume(n));
            sim.run_until(t);
            if sim.nodes[n].node.is_some() && !sim.nodes[n].paused {
                let timeout = 1_000 + rng.below(10_000);
                asked.push((n, sim.outdate_peer(n, Some(timeout)), sim.now, timeout));
            }
        }
        sim.run_for(60_000);
        for (n, id, at, timeout) in asked {
            let Some((done, o)) = sim.nodes[n].outdates.get(&id).cloned() else {
                // Only a daemon that died (or was paused) before answering leaves it open.
                let killed = sim.nodes[n].log.iter().all(|(t, _)| *t < at + timeout);
                assert!(
                    killed,
                    "seed {seed}: request {id} of node{} never answered",
                    n + 1
                );
                continue;
            };
            // A frozen node answers when it thaws; otherwise the core's deadline holds.
            assert!(
                paused[n] || done <= at + timeout,
                "seed {seed}: answered after its deadline"
            );
            if o.verdict == OutdateVerdict::PeerFenced {
                assert!(fencing, "seed {seed}: 'fenced' without a fencing command");
            }
        }
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:#?}",
            sim.violations
        );
    }
}

#[test]
fn both_nodes_asking_at_once_both_get_answers() {
    let mut sim = settled(29);
    let from_a = sim.outdate_peer(A, None);
    let from_b = sim.outdate_peer(B, None);
    let (a, _) = answer(&mut sim, A, from_a, 10_000);
    let (b, _) = answer(&mut sim, B, from_b, 10_000);
    // B is standby: it outdates itself for A. A is active: it refuses B.
    assert_eq!((a, b), (4, 6));
    assert_eq!(outdates_run(&sim, A), 0);
    assert_eq!(outdates_run(&sim, B), 1);
    no_violations(&sim);
}

/// A fenced pair with a ping tie-breaker; `b_fences` false leaves B without a fence command,
/// so what A alone does stays visible.
fn fenced_with_tiebreaker(seed: u64, b_fences: bool) -> Sim {
    let (mut a, mut b) = sim::fenced_params(true);
    a.tiebreaker = true;
    b.tiebreaker = true;
    if !b_fences {
        b.fencing = None;
    }
    settled_with(seed, a, b)
}

#[test]
fn an_isolated_active_node_neither_fences_the_peer_nor_reports_it_gone() {
    // A loses every link and the tie-breaker; its DRBD (Primary, the replication link gone)
    // runs the handler. Powering B off, or telling DRBD that B is gone (exit 5: write alone),
    // would let the wrong side of the partition go on: the request waits and ends in 1.
    let mut sim = fenced_with_tiebreaker(30, false);
    let cut = sim.now;
    cut_all(&mut sim);
    sim.at(cut, Event::TieBreaker(A, false));
    sim.run_for(1);
    let id = sim.outdate_peer(A, None);
    let (code, took) = answer(&mut sim, A, id, 60_000);
    assert_eq!(code, 1, "nobody may claim anything about B");
    assert!(
        took > 3_000,
        "the request waited for its deadline ({took} ms)"
    );
    assert!(sim.nodes[A].fenced_peer_at.is_empty(), "A never fenced B");
    assert_eq!(sim.count(A, |a| matches!(a, Action::FencePeer { .. })), 0);
    let (_, outcome) = &sim.nodes[A].outdates[&id];
    assert!(
        outcome.message.contains("may be the isolated one"),
        "{}",
        outcome.message
    );
    assert!(
        sim.alerts(A)
            .iter()
            .any(|m| m.contains("may be the isolated one")),
        "said while it waited"
    );
    // Meanwhile the node that still reaches the tie-breaker took over, and A stepped down.
    assert_eq!(sim.state(B), Some(NodeState::Active));
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    no_violations(&sim);
}

#[test]
fn a_survivor_that_reaches_the_tie_breaker_fences_the_silent_peer() {
    let mut sim = fenced_with_tiebreaker(31, true);
    sim.at(sim.now, Event::PowerCut(B));
    sim.run_for(3_000);
    let id = sim.outdate_peer(A, None);
    let (code, _) = answer(&mut sim, A, id, 10_000);
    assert_eq!(code, 7, "the tie-breaker answers: the fence runs");
    assert_eq!(sim.nodes[A].fenced_peer_at.len(), 1);
    no_violations(&sim);
}

#[test]
fn the_isolation_doubt_ends_when_the_tie_breaker_answers_again() {
    // A single failed round at the moment DRBD asks only delays the answer.
    let mut sim = fenced_with_tiebreaker(32, true);
    sim.at(sim.now, Event::PowerCut(B));
    sim.run_for(3_000);
    sim.at(sim.now, Event::TieBreaker(A, false));
    sim.at(sim.now + 1_500, Event::TieBreaker(A, true));
    sim.run_for(1);
    let id = sim.outdate_peer(A, None);
    let (code, took) = answer(&mut sim, A, id, 10_000);
    assert_eq!(code, 7);
    assert!((1_400..=2_000).contains(&took), "answered after {took} ms");
    no_violations(&sim);
}

/// A cut off for longer than deadtime; B starts a 3 s fence (that succeeds or fails); the cut
/// heals 200 ms into it and A's DRBD asks B to outdate its disk. Returns the request id.
fn ask_while_fenced(seed: u64, fence_ok: bool) -> (Sim, u64) {
    let mut sim = with_fencing(seed, true);
    sim.nodes[B].fence_ms = 3_000;
    sim.nodes[B].fence_ok = fence_ok;
    cut_all(&mut sim);
    sim.run_until_pred(20_000, |s| {
        s.count(B, |a| matches!(a, Action::FencePeer { .. })) > 0
    })
    .expect("B fences A");
    let now = sim.now;
    for link in [0, 1] {
        sim.at(now + 200, Event::Heal { link, from: None });
    }
    sim.run_until(now + 400);
    let id = sim.outdate_peer(A, None);
    (sim, id)
}

#[test]
fn a_node_fencing_its_peer_holds_back_that_peer_s_outdate_request() {
    // QEMU campaign seed 2 run 4: the active node A was cut off for 2.8 s. B started fencing
    // it; the cut healed while the (slow) fence ran and A's DRBD asked B to outdate its disk.
    // B did, then the fence switched A off: the only UpToDate disk was off, B's was Outdated,
    // and nobody could run the service. Held back, the request dies with A and B takes over.
    let (mut sim, id) = ask_while_fenced(61, true);
    sim.run_for(10_000);
    assert_eq!(outdates_run(&sim, B), 0, "B never outdated its disk");
    // (A beat still in flight when the fence returned makes B fence once more, harmlessly.)
    assert!(
        !sim.nodes[B].fenced_peer_at.is_empty(),
        "A was switched off"
    );
    assert_eq!(sim.outdate_code(A, id), None, "A's handler died with A");
    assert_eq!(sim.state(B), Some(NodeState::Active), "B took over");
    assert!(sim
        .alerts(B)
        .iter()
        .any(|m| m.contains("held back while this node fences the peer")));
    no_violations(&sim);
}

#[test]
fn a_held_back_request_is_served_when_the_fence_fails() {
    // The fence fails: B does not take over, so A goes on, and B outdates its disk as asked.
    let (mut sim, id) = ask_while_fenced(62, false);
    let (code, took) = answer(&mut sim, A, id, 15_000);
    assert_eq!(code, 4, "B outdated its disk once the fence had failed");
    assert!(
        took >= 2_000,
        "held back while the fence ran: answered after {took} ms"
    );
    assert_eq!(outdates_run(&sim, B), 1);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_ne!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}
