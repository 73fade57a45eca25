//! Named failover scenarios on the two-node simulator (virtual time; no sleeping).

mod sim;

use sim::{Event, Sim};
use twinbeat::core::{Action, Command, CommandOutcome, CoreParams, DiskState, NodeState, PeerView};

const A: usize = 0;
const B: usize = 1;

/// Both nodes started at t=0 and settled: A (preferred) active, B standby.
fn settled(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.start_both();
    sim.run_until(12_000);
    assert_eq!(sim.state(A), Some(NodeState::Active), "A should be active");
    assert_eq!(
        sim.state(B),
        Some(NodeState::Standby),
        "B should be standby"
    );
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    sim
}

fn no_violations(sim: &Sim) {
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}

#[test]
fn cold_start_waits_initdead_then_the_preferred_node_takes_the_service() {
    let mut sim = Sim::new(1);
    sim.start_both();
    sim.run_until(1_000);
    // Both heard each other: no longer Init, but nobody acts before initdead (10 s).
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    sim.run_until(9_900);
    assert!(sim.entered(A, NodeState::Acquiring).is_empty());
    sim.run_until(12_000);
    let t = sim.entered(A, NodeState::Acquiring);
    assert_eq!(t.len(), 1, "A acquires exactly once");
    assert!(t[0] >= 10_000, "A acquired at {} before initdead", t[0]);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.nodes[A].world, 0b1111, "all four steps in place on A");
    assert_eq!(sim.nodes[B].world, 0, "nothing on B");
    assert_eq!(sim.node(A).term(), 1);
    no_violations(&sim);
}

#[test]
fn a_lone_node_takes_over_after_initdead() {
    let mut sim = Sim::new(2);
    sim.start(A);
    sim.run_until(9_999);
    assert_eq!(sim.state(A), Some(NodeState::Init));
    sim.run_until(11_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    let t = sim.entered(A, NodeState::Acquiring)[0];
    assert_eq!(t, 10_000, "takeover exactly at initdead");
    no_violations(&sim);
}

#[test]
fn acquire_runs_in_config_order_and_release_in_reverse() {
    let mut sim = settled(3);
    let steps = |sim: &Sim, n: usize| -> Vec<String> {
        sim.nodes[n]
            .log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Acquire { step, .. } => Some(format!("+{step}")),
                Action::Release { step, .. } => Some(format!("-{step}")),
                _ => None,
            })
            .collect()
    };
    assert_eq!(steps(&sim, A), ["+0", "+1", "+2", "+3"]);
    let id = sim.command(A, Command::Standby);
    sim.run_for(5_000);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Done { .. })),
        "{:?}",
        sim.outcome(A, id)
    );
    assert_eq!(
        steps(&sim, A),
        ["+0", "+1", "+2", "+3", "-3", "-2", "-1", "-0"]
    );
    assert_eq!(steps(&sim, B), ["+0", "+1", "+2", "+3"]);
    no_violations(&sim);
}

#[test]
fn crash_of_the_active_node_is_detected_within_one_keepalive_of_deadtime() {
    for seed in 0..20 {
        let mut sim = settled(100 + seed);
        let crash = 20_000 + seed * 37;
        sim.at(crash, Event::PowerCut(A));
        sim.run_until(30_000);
        let t = sim.entered(B, NodeState::Acquiring);
        assert_eq!(t.len(), 1, "seed {seed}: B takes over once");
        let detection = t[0] - crash;
        let p = CoreParams::example(2);
        assert!(
            detection <= p.deadtime_ms && detection + p.keepalive_ms + 1 >= p.deadtime_ms,
            "seed {seed}: detection {detection} ms not within one keepalive of deadtime"
        );
        assert_eq!(sim.state(B), Some(NodeState::Active));
        assert_eq!(sim.node(B).term(), 2, "takeover increments the term");
        assert_eq!(sim.nodes[B].persisted_term, 2, "the term is persisted");
        no_violations(&sim);
    }
}

#[test]
fn losing_one_link_warns_but_never_fails_over() {
    let mut sim = settled(4);
    sim.at(
        13_000,
        Event::Cut {
            link: 0,
            from: None,
        },
    );
    sim.run_until(40_000);
    assert!(
        sim.entered(B, NodeState::Acquiring).is_empty(),
        "no failover"
    );
    assert_eq!(sim.state(A), Some(NodeState::Active));
    let alerts = sim.alerts(B);
    assert!(
        alerts.iter().any(|m| m.contains("link hb0 down")),
        "B warns about hb0: {alerts:#?}"
    );
    let st = sim.node(B).status(sim.now);
    assert!(!st.links[0].up && st.links[1].up);
    assert_eq!(st.peer.view, PeerView::Alive);
    no_violations(&sim);
}

#[test]
fn lossy_delayed_duplicating_links_do_not_cause_a_failover() {
    let mut sim = Sim::new(5);
    for l in 0..2 {
        for d in 0..2 {
            sim.links[l][d].loss_percent = 30;
            sim.links[l][d].delay_ms = 40;
            sim.links[l][d].jitter_ms = 60;
            sim.links[l][d].dup_percent = 20;
        }
    }
    sim.start_both();
    sim.run_until(120_000);
    assert_eq!(sim.entered(A, NodeState::Acquiring).len(), 1);
    assert!(sim.entered(B, NodeState::Acquiring).is_empty());
    no_violations(&sim);
}

#[test]
fn partition_then_heal_the_higher_term_keeps_the_service() {
    let mut sim = settled(6);
    sim.at(
        13_000,
        Event::Cut {
            link: 0,
            from: None,
        },
    );
    sim.at(
        13_000,
        Event::Cut {
            link: 1,
            from: None,
        },
    );
    sim.run_until(20_000);
    // Without a tie-breaker both are active: the documented two-node outcome.
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    assert_eq!(sim.node(B).term(), 2);
    sim.at(
        21_000,
        Event::Heal {
            link: 0,
            from: None,
        },
    );
    sim.at(
        21_000,
        Event::Heal {
            link: 1,
            from: None,
        },
    );
    sim.run_until(25_000);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Standby),
        "lower term releases"
    );
    assert_eq!(
        sim.state(B),
        Some(NodeState::Active),
        "higher term keeps it"
    );
    assert_eq!(sim.nodes[A].world, 0);
    assert_eq!(
        sim.count(B, |a| matches!(a, Action::Announce)),
        1,
        "the winner re-announces once"
    );
    assert_eq!(sim.count(A, |a| matches!(a, Action::Announce)), 0);
    assert!(sim.node(A).status(sim.now).split_brains >= 1);
    no_violations(&sim);
}

#[test]
fn a_paused_active_node_wakes_up_and_releases_without_announcing() {
    for inbox_first in [true, false] {
        let mut sim = settled(7);
        sim.resume_inbox_first = inbox_first;
        sim.at(13_000, Event::Pause(A));
        sim.at(16_000, Event::Resume(A));
        sim.run_until(14_500);
        assert_eq!(sim.state(B), Some(NodeState::Active), "B took over");
        sim.run_until(25_000);
        assert_eq!(
            sim.state(A),
            Some(NodeState::Standby),
            "inbox_first={inbox_first}"
        );
        assert_eq!(sim.state(B), Some(NodeState::Active));
        assert_eq!(sim.count(A, |a| matches!(a, Action::Announce)), 0);
        assert!(
            sim.alerts(A).iter().any(|m| m.contains("stalled")),
            "A notices its own stall"
        );
        assert!(
            !sim.alerts(A).iter().any(|m| m.contains("link lan0 down")),
            "its own stall is not a link failure: {:#?}",
            sim.alerts(A)
        );
        no_violations(&sim);
    }
}

#[test]
fn a_paused_standby_node_does_not_take_over_on_waking() {
    let mut sim = settled(8);
    sim.resume_inbox_first = false;
    sim.at(13_000, Event::Pause(B));
    sim.at(18_000, Event::Resume(B));
    sim.run_until(30_000);
    assert!(
        sim.entered(B, NodeState::Acquiring).is_empty(),
        "stall grace keeps B from mistaking its own freeze for a dead peer"
    );
    no_violations(&sim);
}

#[test]
fn a_failed_acquire_rolls_back_in_reverse_and_the_peer_takes_over() {
    let mut sim = Sim::new(9);
    sim.at(0, Event::FailNextAcquire(A, 2));
    sim.start_both();
    sim.run_until(12_000);
    let st = sim.node(A).status(sim.now);
    assert_eq!(
        st.state,
        NodeState::Standby,
        "A is standby once B holds the service"
    );
    let failed = sim.entered(A, NodeState::Failed);
    assert_eq!(failed.len(), 1);
    let why = st
        .transitions
        .iter()
        .find(|t| t.to == NodeState::Failed)
        .expect("failure recorded");
    assert!(
        why.cause.contains("acquire of mysql failed"),
        "{}",
        why.cause
    );
    let names: Vec<_> = why
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.direction))
        .collect();
    use twinbeat::core::StepDirection::{Acquire as Acq, Release as Rel};
    assert_eq!(
        names,
        [
            ("r0", Acq),
            ("data", Acq),
            ("mysql", Acq),
            ("data", Rel),
            ("r0", Rel)
        ]
    );
    assert_eq!(sim.nodes[A].world, 0);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn a_hung_step_times_out_is_cancelled_and_rolled_back() {
    let mut p = CoreParams::example(1);
    p.steps[1].acquire_timeout_ms = 2_000;
    let mut sim = Sim::with_params(10, p, CoreParams::example(2));
    sim.at(0, Event::HangNextAcquire(A, 1));
    sim.start_both();
    sim.run_until(20_000);
    assert_eq!(sim.count(A, |a| matches!(a, Action::Cancel { .. })), 1);
    let st = sim.node(A).status(sim.now);
    let t = st
        .transitions
        .iter()
        .find(|t| t.to == NodeState::Failed)
        .expect("failure recorded");
    assert!(t.cause.contains("timed out after 2000 ms"), "{}", t.cause);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn a_failing_resource_is_restarted_then_handed_over_past_the_limit() {
    let mut sim = settled(11);
    for i in 0..3 {
        sim.at(13_000 + i * 2_000, Event::HealthFail(A, 2));
    }
    sim.run_until(19_000);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "three restarts allowed"
    );
    assert_eq!(sim.node(A).status(sim.now).restarts, 3);
    // A restart of mysql releases vip then mysql, and acquires them again in order.
    let ops: Vec<String> = sim.nodes[A]
        .log
        .iter()
        .filter(|(t, _)| *t >= 13_000 && *t < 15_000)
        .filter_map(|(_, a)| match a {
            Action::Acquire { step, .. } => Some(format!("+{step}")),
            Action::Release { step, .. } => Some(format!("-{step}")),
            _ => None,
        })
        .collect();
    assert_eq!(ops, ["-3", "-2", "+2", "+3"]);
    sim.at(19_500, Event::HealthFail(A, 2));
    sim.run_until(25_000);
    assert_eq!(sim.state(B), Some(NodeState::Active), "B took over");
    assert!(sim.entered(A, NodeState::Failed).len() == 1);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Standby),
        "A leaves failed once the peer holds the service"
    );
    no_violations(&sim);
}

#[test]
fn standby_hands_the_service_over_and_reports_the_gap() {
    let mut sim = settled(12);
    let id = sim.command(A, Command::Standby);
    sim.run_for(5_000);
    match sim.outcome(A, id) {
        Some(CommandOutcome::Done {
            gap_ms: Some(g), ..
        }) => {
            // Four releases and four acquires of 50 ms each, plus heartbeat round trips.
            assert!(*g >= 400 && *g < 1_500, "gap {g}");
        }
        other => panic!("standby did not complete: {other:?}"),
    }
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    assert_eq!(sim.both_held_ms, 0, "never both primary");
    assert_eq!(sim.node(B).term(), 2);
    no_violations(&sim);
}

#[test]
fn takeover_pulls_the_service_over_and_reports_the_gap() {
    let mut sim = settled(13);
    let id = sim.command(B, Command::Takeover);
    sim.run_for(5_000);
    assert!(
        matches!(
            sim.outcome(B, id),
            Some(CommandOutcome::Done {
                gap_ms: Some(_),
                ..
            })
        ),
        "{:?}",
        sim.outcome(B, id)
    );
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    assert_eq!(sim.both_held_ms, 0);
    // And back again with standby on B.
    let id = sim.command(B, Command::Standby);
    sim.run_for(5_000);
    assert!(matches!(
        sim.outcome(B, id),
        Some(CommandOutcome::Done { .. })
    ));
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.node(A).term(), 3);
    no_violations(&sim);
}

/// Seed 3 run 73 of the lab's campaign, replayed: a node whose daemon had restarted asked for a
/// takeover, and its peer ignored the request as a duplicate, because the new daemon numbers its
/// handoffs from 1 again and the peer still remembered the finished handoff 1 of the previous
/// daemon. The command failed after 3 x deadtime with "did not answer".
#[test]
fn a_restarted_daemon_s_handoff_is_not_mistaken_for_one_of_its_previous_life() {
    let mut sim = settled(40);
    let id = sim.command(A, Command::Standby);
    sim.run_for(5_000);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Done { .. })),
        "{:?}",
        sim.outcome(A, id)
    );
    assert_eq!(sim.state(B), Some(NodeState::Active));
    // A (standby, holding nothing) restarts: a new boot generation, handoff ids from 1 again.
    let t = sim.now;
    sim.at(t + 500, Event::KillDaemon(A));
    sim.at(t + 1_000, Event::StartDaemon(A));
    sim.run_until(t + 8_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    let id = sim.command(A, Command::Takeover);
    sim.run_for(8_000);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Done { .. })),
        "takeover after a restart: {:?}",
        sim.outcome(A, id)
    );
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert_eq!(sim.both_held_ms, 0);
    no_violations(&sim);
}

#[test]
fn standby_is_refused_when_the_peer_disk_is_not_up_to_date() {
    let mut sim = settled(14);
    sim.at(12_500, Event::Disk(B, DiskState::Outdated));
    sim.run_until(13_000);
    let id = sim.command(A, Command::Standby);
    sim.run_for(3_000);
    match sim.outcome(A, id) {
        Some(CommandOutcome::Refused { reason }) => {
            assert!(reason.contains("Outdated"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "the service stays where it was"
    );
    no_violations(&sim);
}

#[test]
fn the_peer_refuses_an_offer_when_it_is_not_healthy() {
    let mut sim = settled(15);
    // B's disk goes bad after A last checked it: A offers, B refuses on the wire.
    let id = sim.command(A, Command::Standby);
    sim.input(B, twinbeat::core::Input::Disk(DiskState::Inconsistent));
    sim.run_for(3_000);
    match sim.outcome(A, id) {
        Some(CommandOutcome::Refused { reason }) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(sim.state(A), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn a_handoff_to_a_silent_peer_times_out_and_leaves_the_service() {
    let mut sim = settled(16);
    // B freezes just as A offers the service: the offer is never answered.
    let id = sim.command(A, Command::Standby);
    sim.at(sim.now, Event::Pause(B));
    sim.at(sim.now + 6_000, Event::Resume(B));
    sim.run_for(10_000);
    match sim.outcome(A, id) {
        Some(CommandOutcome::Refused { reason }) => {
            assert!(reason.contains("silent before answering"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "the service stays on A"
    );
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    no_violations(&sim);
}

#[test]
fn when_the_receiver_fails_to_acquire_the_service_returns_to_the_giver() {
    let mut sim = settled(17);
    sim.at(12_100, Event::FailNextAcquire(B, 1));
    sim.run_until(12_200);
    let id = sim.command(A, Command::Standby);
    sim.run_for(20_000);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Failed { .. })),
        "{:?}",
        sim.outcome(A, id)
    );
    assert_eq!(
        sim.entered(B, NodeState::Failed).len(),
        1,
        "B failed to acquire"
    );
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "A took the service back"
    );
    assert_eq!(
        sim.state(B),
        Some(NodeState::Standby),
        "B is standby again once A holds the service"
    );
    assert_eq!(sim.both_held_ms, 0);
    no_violations(&sim);
}

#[test]
fn an_outdated_disk_is_never_promoted_even_when_alone() {
    let mut sim = settled(18);
    sim.at(12_500, Event::Disk(B, DiskState::Outdated));
    sim.at(13_000, Event::PowerCut(A));
    sim.run_until(60_000);
    assert!(sim.entered(B, NodeState::Acquiring).is_empty());
    let st = sim.node(B).status(sim.now);
    assert!(
        st.blockers.iter().any(|b| b.contains("Outdated")),
        "{:?}",
        st.blockers
    );
    // Once the disk is UpToDate again (e.g. the operator resolved it), B takes over.
    sim.at(61_000, Event::Disk(B, DiskState::UpToDate));
    sim.run_until(62_000);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

fn with_tiebreaker(seed: u64) -> Sim {
    let mut a = CoreParams::example(1);
    let mut b = CoreParams::example(2);
    a.tiebreaker = true;
    b.tiebreaker = true;
    let mut sim = Sim::with_params(seed, a, b);
    sim.start_both();
    sim.run_until(12_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    sim
}

#[test]
fn the_tie_breaker_blocks_a_takeover_and_demotes_an_isolated_active_node() {
    let mut sim = with_tiebreaker(19);
    // A full partition where A is also cut from the tie-breaker: A demotes, B takes over.
    sim.at(
        13_000,
        Event::Cut {
            link: 0,
            from: None,
        },
    );
    sim.at(
        13_000,
        Event::Cut {
            link: 1,
            from: None,
        },
    );
    sim.at(13_000, Event::TieBreaker(A, false));
    sim.run_until(16_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby), "isolated A demotes");
    assert_eq!(sim.state(B), Some(NodeState::Active));
    // B cannot reach the tie-breaker either now: it demotes, and A must not take over.
    sim.at(17_000, Event::TieBreaker(B, false));
    sim.run_until(25_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    let st = sim.node(A).status(sim.now);
    assert!(
        st.blockers.iter().any(|b| b.contains("tie-breaker")),
        "{:?}",
        st.blockers
    );
    no_violations(&sim);
}

#[test]
fn a_partition_with_a_tie_breaker_never_gives_two_active_nodes() {
    let mut sim = with_tiebreaker(20);
    sim.at(
        13_000,
        Event::Cut {
            link: 0,
            from: None,
        },
    );
    sim.at(
        13_000,
        Event::Cut {
            link: 1,
            from: None,
        },
    );
    // Only A still reaches the tie-breaker (B's side of the switch is gone).
    sim.at(13_000, Event::TieBreaker(B, false));
    sim.run_until(30_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert_eq!(sim.both_held_ms, 0);
    no_violations(&sim);
}

fn with_fencing(seed: u64, required: bool) -> Sim {
    let (a, b) = sim::fenced_params(required);
    let mut sim = Sim::with_params(seed, a, b);
    sim.start_both();
    sim.run_until(12_000);
    sim
}

#[test]
fn a_takeover_fences_the_peer_first() {
    let mut sim = with_fencing(21, true);
    sim.at(13_000, Event::KillDaemon(A));
    sim.run_until(16_000);
    assert_eq!(sim.nodes[B].fenced_peer_at.len(), 1, "B fenced A");
    assert_eq!(sim.state(B), Some(NodeState::Active));
    let fenced = sim.nodes[B].fenced_peer_at[0];
    let acquiring = sim.entered(B, NodeState::Acquiring)[0];
    assert!(fenced <= acquiring, "fence before acquire");
    assert_eq!(sim.both_held_ms, 0, "the fence removed A's resources first");
    no_violations(&sim);
}

#[test]
fn a_failed_required_fence_blocks_the_takeover_and_is_retried() {
    let mut sim = with_fencing(22, true);
    sim.at(12_500, Event::SetFence(B, false));
    sim.at(13_000, Event::KillDaemon(A));
    sim.run_until(20_000);
    assert!(sim.entered(B, NodeState::Acquiring).is_empty());
    let fences = sim.count(B, |a| matches!(a, Action::FencePeer { .. }));
    assert!(fences >= 2, "fencing retried, {fences} attempts");
    sim.at(20_500, Event::SetFence(B, true));
    sim.run_until(25_000);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn a_failed_optional_fence_lets_the_takeover_go_on() {
    let mut sim = with_fencing(23, false);
    sim.at(12_500, Event::SetFence(B, false));
    sim.at(13_000, Event::PowerCut(A));
    sim.run_until(16_000);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    assert!(sim
        .alerts(B)
        .iter()
        .any(|m| m.contains("taking over anyway")));
    no_violations(&sim);
}

#[test]
fn maintenance_mode_observes_and_never_acts() {
    let mut sim = settled(24);
    let a = sim.command(A, Command::Maintenance { on: true });
    let b = sim.command(B, Command::Maintenance { on: true });
    assert!(matches!(
        sim.outcome(A, a),
        Some(CommandOutcome::Done { .. })
    ));
    assert!(matches!(
        sim.outcome(B, b),
        Some(CommandOutcome::Done { .. })
    ));
    let before_a = sim.nodes[A].log.len();
    // Even a resource failure and a dead peer do not make a node in maintenance act.
    sim.at(13_000, Event::HealthFail(A, 2));
    sim.at(14_000, Event::KillDaemon(A));
    sim.run_until(30_000);
    assert!(sim.nodes[A].log[before_a..]
        .iter()
        .all(|(_, a)| !matches!(a, Action::Acquire { .. } | Action::Release { .. })));
    assert!(sim.entered(B, NodeState::Acquiring).is_empty());
    assert_eq!(sim.state(B), Some(NodeState::Maintenance));
    no_violations(&sim);
}

#[test]
fn leaving_maintenance_reprobes_and_adopts_what_runs() {
    let mut sim = settled(25);
    sim.command(A, Command::Maintenance { on: true });
    sim.run_for(1_000);
    let id = sim.command(A, Command::Maintenance { on: false });
    sim.run_for(1_000);
    assert!(matches!(
        sim.outcome(A, id),
        Some(CommandOutcome::Done { .. })
    ));
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "all four steps still up: adopted"
    );
    assert_eq!(sim.count(A, |a| matches!(a, Action::ProbeAll)), 1);
    no_violations(&sim);
}

#[test]
fn a_daemon_restart_within_deadtime_adopts_the_running_service() {
    let mut sim = settled(26);
    sim.at(13_000, Event::KillDaemon(A));
    sim.at(13_500, Event::StartDaemon(A));
    sim.run_until(30_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert!(
        sim.entered(B, NodeState::Acquiring).is_empty(),
        "B saw a restart, not a death"
    );
    let st = sim.node(B).status(sim.now);
    assert_eq!(st.peer.restarts_seen, 1);
    assert_eq!(st.peer.generation, Some(2));
    assert!(sim.alerts(B).iter().any(|m| m.contains("restarted")));
    // No step ran again on A: the service was adopted, not restarted.
    let acquires_after = sim.nodes[A]
        .log
        .iter()
        .filter(|(t, a)| *t >= 13_500 && matches!(a, Action::Acquire { .. }))
        .count();
    assert_eq!(acquires_after, 0);
    no_violations(&sim);
}

#[test]
fn a_failed_release_stays_failed_and_keeps_the_peer_from_acquiring() {
    let mut sim = settled(27);
    sim.at(12_100, Event::FailNextRelease(A, 1));
    sim.run_until(12_200);
    let id = sim.command(A, Command::Standby);
    sim.run_for(10_000);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Failed { .. })),
        "{:?}",
        sim.outcome(A, id)
    );
    assert_eq!(sim.state(A), Some(NodeState::Failed));
    assert_eq!(
        sim.node(A).held(),
        0b10,
        "the stuck filesystem stays marked held"
    );
    assert!(
        sim.entered(B, NodeState::Acquiring).is_empty(),
        "B never mounts a live filesystem"
    );
    let st = sim.node(B).status(sim.now);
    assert!(
        st.blockers.iter().any(|b| b.contains("still holds")),
        "{:?}",
        st.blockers
    );
    no_violations(&sim);
}

#[test]
fn auto_failback_returns_the_service_to_the_preferred_node() {
    let mut a = CoreParams::example(1);
    let mut b = CoreParams::example(2);
    a.auto_failback = true;
    b.auto_failback = true;
    let mut sim = Sim::with_params(28, a, b);
    sim.start_both();
    sim.run_until(12_000);
    sim.at(13_000, Event::PowerCut(A));
    sim.run_until(20_000);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    sim.at(21_000, Event::StartDaemon(A));
    sim.run_until(28_000);
    assert_eq!(
        sim.state(B),
        Some(NodeState::Active),
        "no failback during A's initdead"
    );
    sim.run_until(40_000);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "failback to the preferred node"
    );
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert_eq!(sim.both_held_ms, 0);
    no_violations(&sim);
}

#[test]
fn without_auto_failback_a_returning_node_stays_standby() {
    let mut sim = settled(29);
    sim.at(13_000, Event::PowerCut(A));
    sim.at(21_000, Event::StartDaemon(A));
    sim.run_until(60_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn shutdown_of_the_active_node_releases_and_the_peer_takes_over() {
    let mut sim = settled(30);
    let id = sim.command(A, Command::Shutdown);
    sim.run_for(1_000);
    assert!(matches!(
        sim.outcome(A, id),
        Some(CommandOutcome::Done { .. })
    ));
    assert_eq!(sim.nodes[A].world, 0);
    sim.at(sim.now, Event::KillDaemon(A));
    sim.run_for(3_000);
    assert_eq!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn status_tells_the_truth_about_peer_links_and_resources() {
    let mut sim = settled(31);
    let st = sim.node(A).status(sim.now);
    assert_eq!(st.state, NodeState::Active);
    assert_eq!(st.term, 1);
    assert_eq!(st.peer.state, Some(NodeState::Standby));
    assert_eq!(st.peer.view, PeerView::Alive);
    assert!(st.links.iter().all(|l| l.up && l.beats > 0));
    assert!(st.resources.iter().all(|r| r.held));
    let t = st.transitions.last().expect("a transition");
    assert_eq!(t.to, NodeState::Active);
    assert_eq!(t.steps.len(), 4);
    assert_eq!(t.total_ms, Some(200));
    sim.at(13_000, Event::PowerCut(B));
    sim.run_until(13_600);
    assert_eq!(sim.node(A).status(sim.now).peer.view, PeerView::Late);
    sim.run_until(14_100);
    assert_eq!(sim.node(A).status(sim.now).peer.view, PeerView::Dead);
    no_violations(&sim);
}

#[test]
fn a_node_frozen_during_a_step_does_not_blame_the_step() {
    let mut p = CoreParams::example(1);
    p.steps[0].release_timeout_ms = 3_000;
    let mut sim = Sim::with_params(32, p, CoreParams::example(2));
    sim.resume_inbox_first = false;
    sim.start_both();
    sim.run_until(12_000);
    let id = sim.command(A, Command::Shutdown);
    // A freezes while its last release (step 0) runs, for longer than that step's timeout.
    sim.run_until(12_160);
    sim.at(12_160, Event::Pause(A));
    sim.at(17_000, Event::Resume(A));
    sim.run_until(20_000);
    assert_eq!(sim.count(A, |a| matches!(a, Action::Cancel { .. })), 0);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Done { .. })),
        "{:?}",
        sim.outcome(A, id)
    );
    assert_eq!(sim.nodes[A].world, 0);
    no_violations(&sim);
}

#[test]
fn a_restarted_daemon_keeps_its_adopted_service_until_the_tie_breaker_has_answered() {
    let mut sim = with_tiebreaker(40);
    // The real shell's first ping answer comes about a second after the start.
    sim.nodes[A].tiebreaker_first_ms = 1_200;
    sim.at(13_000, Event::KillDaemon(A));
    sim.at(13_500, Event::StartDaemon(A));
    sim.run_until(20_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    let released = sim.nodes[A]
        .log
        .iter()
        .filter(|(t, a)| *t >= 13_500 && matches!(a, Action::Release { .. }))
        .count();
    assert_eq!(released, 0, "adopted, then demoted for want of an answer");
    assert!(sim.entered(B, NodeState::Acquiring).is_empty());
    no_violations(&sim);
}

#[test]
fn a_restarted_daemon_alone_without_the_tie_breaker_demotes_after_initdead() {
    let mut sim = with_tiebreaker(41);
    sim.nodes[A].tiebreaker_first_ms = 1_200;
    sim.nodes[A].tiebreaker = false;
    sim.at(13_000, Event::KillDaemon(A));
    for link in 0..2 {
        sim.at(13_000, Event::Cut { link, from: None });
    }
    sim.at(13_500, Event::StartDaemon(A));
    // Never heard the peer: not alone before initdead (10 s) is over, alone after.
    sim.run_until(23_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    sim.run_until(26_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    no_violations(&sim);
}

fn announces(sim: &Sim, n: usize) -> usize {
    sim.count(n, |a| matches!(a, Action::Announce))
}

/// Seed 3 run 73 of the lab's campaign: the service moved while the LAN was cut, so the new
/// active node's gratuitous ARPs were lost and the client kept the old MAC for 23 s after the
/// LAN came back. The active node announces again when a link returns from a silence.
#[test]
fn the_active_node_announces_again_when_a_cut_link_carries_beats_again() {
    let mut sim = settled(41);
    let before_a = announces(&sim, A);
    let before_b = announces(&sim, B);
    sim.at(
        12_000,
        Event::Cut {
            link: 1,
            from: None,
        },
    );
    sim.run_until(16_000);
    assert_eq!(
        announces(&sim, A),
        before_a,
        "nothing to announce during the cut"
    );
    sim.at(
        16_000,
        Event::Heal {
            link: 1,
            from: None,
        },
    );
    sim.run_until(20_000);
    assert_eq!(
        announces(&sim, A) - before_a,
        1,
        "one announcement when lan0 returns"
    );
    assert_eq!(
        announces(&sim, B),
        before_b,
        "the standby announces nothing"
    );
    assert!(
        sim.alerts(A)
            .iter()
            .any(|m| m.contains("link lan0 carries heartbeats again")),
        "{:#?}",
        sim.alerts(A)
    );
    assert_eq!(sim.state(A), Some(NodeState::Active));
    no_violations(&sim);
}

/// A gap shorter than deadtime on one link (a few lost beats) is not a cut: no announcement.
#[test]
fn a_short_gap_on_a_link_announces_nothing() {
    let mut sim = settled(42);
    let before = announces(&sim, A);
    sim.at(
        12_000,
        Event::Cut {
            link: 1,
            from: None,
        },
    );
    sim.at(
        12_600,
        Event::Heal {
            link: 1,
            from: None,
        },
    );
    sim.run_until(16_000);
    assert_eq!(announces(&sim, A), before);
    no_violations(&sim);
}

#[test]
fn a_lone_survivor_rides_out_single_tie_breaker_misses_and_steps_down_after_fall_rounds() {
    // Seen in the QEMU lab: a survivor busy with its database's crash recovery could not finish
    // a ping within the timeout, missed one round, and dropped the only copy of the service.
    let mut sim = with_tiebreaker(42);
    assert_eq!(sim.node(A).status(sim.now).tiebreaker_fails, 0);
    sim.at(13_000, Event::PowerCut(B));
    sim.run_until(16_000);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "B is dead, A serves alone"
    );
    // Two failed rounds in a row (16.1 s, and the 17 s round), then an answer again.
    sim.at(16_100, Event::TieBreaker(A, false));
    sim.at(17_500, Event::TieBreaker(A, true));
    sim.run_until(17_400);
    assert_eq!(sim.node(A).status(sim.now).tiebreaker_fails, 2);
    sim.run_until(19_900);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Active),
        "two misses are not isolation"
    );
    assert_eq!(sim.node(A).status(sim.now).tiebreaker_fails, 0);
    // Lost for good: the rounds at 20, 21 and 22 s fail; the third one makes A step down.
    sim.at(20_000, Event::TieBreaker(A, false));
    sim.run_until(21_900);
    assert_eq!(sim.state(A), Some(NodeState::Active), "fall is 3 rounds");
    sim.run_until(30_000);
    assert_eq!(
        sim.state(A),
        Some(NodeState::Standby),
        "three misses in a row: isolated"
    );
    let last = sim
        .node(A)
        .status(sim.now)
        .transitions
        .last()
        .cloned()
        .unwrap();
    assert!(last.cause.contains("no tie-breaker"), "{}", last.cause);
    no_violations(&sim);
}

#[test]
fn a_restarted_daemon_keeps_the_service_while_the_peer_attempt_holds_nothing() {
    // Seen in the namespace lab (scenario 2): the active daemon was killed and restarted by
    // systemd 2 s later, after the standby had begun taking over. Its promotion could not
    // succeed (DRBD refuses while this node is Primary and connected), so the restarted node,
    // which adopted the running service, must not drop it for an attempt that holds nothing.
    let mut sim = settled(45);
    // DRBD's refusal, as the disk step's failure once its promotion times out.
    sim.nodes[B].acquire_ms.insert(0, 3_000);
    sim.at(12_500, Event::FailNextAcquire(B, 0));
    sim.at(13_000, Event::KillDaemon(A));
    sim.run_until_pred(20_000, |s| s.state(B) == Some(NodeState::Acquiring))
        .expect("B starts its takeover");
    sim.at(sim.now + 500, Event::StartDaemon(A));
    let t = sim.now;
    sim.run_until(t + 10_000);
    assert_eq!(sim.state(A), Some(NodeState::Active), "A kept the service");
    assert!(
        sim.nodes[A]
            .log
            .iter()
            .all(|(when, a)| *when < t || !matches!(a, Action::Release { .. })),
        "A released something: {:?}",
        sim.trace(A)
    );
    assert_ne!(sim.state(B), Some(NodeState::Active));
    no_violations(&sim);
}

#[test]
fn a_frozen_active_node_steps_down_as_soon_as_it_hears_the_peer_taking_over() {
    // Seen in the QEMU lab: a guest frozen past deadtime resumed as the active node while its
    // peer was still acquiring (MariaDB's start under emulation took 25 s). The resumed node
    // kept the VIP, and clients wrote to it, until the peer said "active": its DRBD had been
    // disconnected the whole time, so those acknowledged writes were on one disk only.
    for inbox_first in [true, false] {
        let mut sim = settled(44);
        sim.resume_inbox_first = inbox_first;
        // DRBD's promotion is quick; MariaDB's start is what takes long.
        sim.nodes[B].step_ms = 4_000;
        sim.nodes[B].acquire_ms.insert(0, 200);
        sim.at(13_000, Event::Pause(A));
        sim.at(17_000, Event::Resume(A));
        sim.run_until(17_000);
        assert_eq!(
            sim.state(B),
            Some(NodeState::Acquiring),
            "B's takeover runs"
        );
        // One heartbeat from B after the resume is enough.
        sim.run_until(17_600);
        assert_ne!(
            sim.state(A),
            Some(NodeState::Active),
            "inbox_first={inbox_first}: A still active while B acquires with a higher term"
        );
        let released_at = sim.nodes[A]
            .log
            .iter()
            .find(|(t, a)| *t >= 17_000 && matches!(a, Action::Release { .. }))
            .map(|(t, _)| *t)
            .expect("A releases");
        let b_active = sim
            .run_until_pred(40_000, |s| s.state(B) == Some(NodeState::Active))
            .expect("B becomes active");
        assert!(
            released_at < b_active,
            "A released at {released_at}, B active at {b_active}"
        );
        sim.run_until(45_000);
        assert_eq!(sim.state(A), Some(NodeState::Standby));
        assert_eq!(sim.state(B), Some(NodeState::Active));
        assert_eq!(sim.count(A, |a| matches!(a, Action::Announce)), 0);
        no_violations(&sim);
    }
}
