//! The witness lease on the two-node simulator (virtual time): the real lease table of
//! `twinbeat witness` on a clock of its own, the nodes' cores, and the shell's client loop
//! (a request every lease/3 while the core wants the lease) modelled in `sim`.

mod sim;

use sim::{Event, Sim};
use twinbeat::core::{Action, Command, CommandOutcome, CoreParams, LeaseParams, Millis, NodeState};

const A: usize = 0;
const B: usize = 1;
const LEASE: Millis = 3_000;

fn lease_params(guard_ms: Millis) -> LeaseParams {
    LeaseParams {
        lease_ms: LEASE,
        max_drift_ppm: 10_000,
        guard_ms,
    }
}

fn sim_with(seed: u64, guard_ms: Millis, fast_ppm: u64) -> Sim {
    let mut a = CoreParams::example(1);
    let mut b = CoreParams::example(2);
    a.lease = Some(lease_params(guard_ms));
    b.lease = Some(lease_params(guard_ms));
    let mut sim = Sim::with_params(seed, a, b).with_witness(LEASE);
    sim.witness.as_mut().unwrap().fast_ppm = fast_ppm;
    sim
}

/// Both started at 0, settled by 12 s: A (preferred) active and holding the lease.
fn settled(seed: u64) -> Sim {
    let mut sim = sim_with(seed, 400, 0);
    sim.start_both();
    sim.run_until(12_000);
    assert_eq!(sim.state(A), Some(NodeState::Active), "A should be active");
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert_eq!(holder(&sim), Some(1), "A holds the witness lease");
    sim
}

fn holder(sim: &Sim) -> Option<u16> {
    let w = sim.witness.as_ref()?;
    w.table.as_ref()?.holder(w.clock(sim.now)).map(|h| h.0)
}

fn cut_links(sim: &mut Sim, t: Millis) {
    for link in 0..2 {
        sim.at(t, Event::Cut { link, from: None });
    }
}

fn safe(sim: &Sim) {
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
    assert_eq!(sim.both_held_ms, 0, "both nodes held the DRBD primary");
    assert_eq!(sim.both_vip_ms, 0, "both nodes held the VIP");
    assert_eq!(
        sim.held_against_lease_ms, 0,
        "a node held resources while the witness gave the lease to the other"
    );
}

fn first(sim: &Sim, n: usize, s: NodeState, after: Millis) -> Option<Millis> {
    sim.entered(n, s).into_iter().find(|&t| t > after)
}

#[test]
fn the_first_takeover_waits_for_the_lease() {
    let sim = settled(1);
    let t = sim.entered(A, NodeState::Acquiring)[0];
    assert!(t >= 10_000, "acquired at {t}, before initdead");
    assert!(sim.node(A).status(sim.now).lease.unwrap().grants > 0);
    safe(&sim);
}

#[test]
fn an_active_cut_off_from_peer_and_witness_demotes_before_the_standby_takes_over() {
    let mut sim = settled(2);
    cut_links(&mut sim, 13_000);
    sim.at(13_000, Event::WitnessPath(A, false));
    sim.run_until(25_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby), "isolated A demotes");
    assert_eq!(sim.state(B), Some(NodeState::Active), "B takes over");
    let a_release = first(&sim, A, NodeState::Releasing, 13_000).expect("A released");
    let b_acquire = first(&sim, B, NodeState::Acquiring, 13_000).expect("B acquired");
    // A's last grant was at most lease/3 before the cut; it releases `guard` before its lease
    // ends, B only gets a lease after the witness's record of A's expired.
    assert!(
        a_release + 200 < b_acquire,
        "A released at {a_release}, B acquired at {b_acquire}"
    );
    assert!(
        b_acquire <= 13_000 + LEASE + 1_500,
        "B took over at {b_acquire}: later than one lease plus a renewal after the cut"
    );
    assert_eq!(holder(&sim), Some(2));
    safe(&sim);
}

#[test]
fn witness_down_with_a_healthy_pair_changes_nothing() {
    let mut sim = settled(3);
    sim.at(13_000, Event::WitnessDown);
    sim.run_until(40_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert!(
        first(&sim, A, NodeState::Releasing, 12_000).is_none(),
        "A demoted"
    );
    assert!(
        first(&sim, B, NodeState::Acquiring, 12_000).is_none(),
        "B took over"
    );
    assert!(
        sim.alerts(A).iter().any(|m| m.contains("lease ran out")),
        "{:?}",
        sim.alerts(A)
    );
    let st = sim.node(A).status(sim.now).lease.unwrap();
    assert_eq!(st.valid_for_ms, None);
    safe(&sim);
}

#[test]
fn with_the_heartbeats_cut_only_the_lease_holder_stays_active() {
    let mut sim = settled(4);
    cut_links(&mut sim, 13_000);
    sim.run_until(40_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    assert!(first(&sim, B, NodeState::Acquiring, 12_000).is_none());
    let st = sim.node(B).status(sim.now);
    assert!(
        st.blockers.iter().any(|b| b.contains("lease")),
        "{:?}",
        st.blockers
    );
    assert_eq!(holder(&sim), Some(1));
    safe(&sim);
}

#[test]
fn a_witness_restart_grants_nothing_for_a_lease_and_then_the_active_keeps_it() {
    let mut sim = settled(5);
    sim.at(13_000, Event::WitnessDown);
    sim.at(13_500, Event::WitnessUp);
    // During the quiet period (until 16.5 s) nobody gets a lease: A stays because B is heard.
    sim.run_until(16_000);
    assert_eq!(holder(&sim), None);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    sim.run_until(18_000);
    assert_eq!(holder(&sim), Some(1), "the active node gets the lease back");
    // Now isolate A: the usual demotion, then B.
    cut_links(&mut sim, 20_000);
    sim.at(20_000, Event::WitnessPath(A, false));
    sim.run_until(30_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    safe(&sim);
}

#[test]
fn a_witness_restart_during_an_isolation_makes_the_standby_wait_the_quiet_period() {
    let mut sim = settled(6);
    cut_links(&mut sim, 13_000);
    sim.at(13_000, Event::WitnessPath(A, false));
    sim.at(13_100, Event::WitnessDown);
    sim.at(13_200, Event::WitnessUp);
    sim.run_until(30_000);
    let b_acquire = first(&sim, B, NodeState::Acquiring, 13_000).expect("B acquired");
    assert!(
        b_acquire >= 13_200 + LEASE,
        "B acquired at {b_acquire}, inside the quiet period"
    );
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    safe(&sim);
}

#[test]
fn a_dead_active_is_replaced_once_its_lease_expired_on_the_witness() {
    let mut sim = settled(7);
    sim.at(13_000, Event::PowerCut(A));
    sim.run_until(20_000);
    let b_acquire = first(&sim, B, NodeState::Acquiring, 13_000).expect("B acquired");
    assert!(
        b_acquire <= 13_000 + LEASE + 50,
        "B acquired at {b_acquire}"
    );
    assert_eq!(sim.state(B), Some(NodeState::Active));
    safe(&sim);
}

#[test]
fn the_witness_clock_fast_by_exactly_the_drift_bound_is_still_safe() {
    let mut sim = sim_with(8, 400, 10_000);
    sim.start_both();
    sim.run_until(12_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    for (i, t) in [13_000u64, 40_000, 70_000].into_iter().enumerate() {
        let (from, to) = if i % 2 == 0 { (A, B) } else { (B, A) };
        cut_links(&mut sim, t);
        sim.at(t, Event::WitnessPath(from, false));
        sim.at(t + 15_000, Event::WitnessPath(from, true));
        for link in 0..2 {
            sim.at(t + 15_000, Event::Heal { link, from: None });
        }
        sim.run_until(t + 14_000);
        assert_eq!(sim.state(from), Some(NodeState::Standby), "round {i}");
        assert_eq!(sim.state(to), Some(NodeState::Active), "round {i}");
    }
    safe(&sim);
}

/// The check above can fail: a witness clock far outside the bound, with no guard, lets the
/// standby's lease start while the old holder still holds resources.
#[test]
fn a_witness_clock_beyond_the_drift_bound_is_caught_by_the_checks() {
    let mut sim = sim_with(9, 0, 300_000);
    sim.start_both();
    sim.run_until(12_000);
    cut_links(&mut sim, 13_000);
    sim.at(13_000, Event::WitnessPath(A, false));
    sim.run_until(25_000);
    assert!(
        sim.held_against_lease_ms > 0,
        "expected the overlap that the drift bound exists to prevent"
    );
}

#[test]
fn a_standby_forgets_its_lease_when_the_peer_comes_back() {
    let mut sim = settled(10);
    // B hears nothing from A, but A still reaches the witness: B wants the lease, is denied.
    sim.at(
        13_000,
        Event::Cut {
            link: 0,
            from: Some(A),
        },
    );
    sim.at(
        13_000,
        Event::Cut {
            link: 1,
            from: Some(A),
        },
    );
    sim.run_until(16_000);
    assert!(sim.node(B).wants_lease(sim.now));
    assert_eq!(sim.state(B), Some(NodeState::Standby));
    for link in 0..2 {
        sim.at(
            16_500,
            Event::Heal {
                link,
                from: Some(A),
            },
        );
    }
    sim.run_until(18_000);
    assert!(!sim.node(B).wants_lease(sim.now));
    assert_eq!(
        sim.node(B).status(sim.now).lease.unwrap().valid_for_ms,
        None
    );
    assert_eq!(
        sim.count(B, |a| matches!(a, Action::PersistTerm(_))),
        0,
        "B never took over"
    );
    safe(&sim);
}

/// Found by `with_a_witness_never_two_writable_nodes` (shrunk). The dedicated link is cut and
/// A's path to the witness goes down, so A's lease runs out; 67% loss on the LAN, in both
/// directions, means that by chance A still hears B while B stops hearing A for deadtime. A kept
/// the service because it heard B standing by; B got the lease (A's record had expired) and
/// started acquiring before A heard it do so: both held the DRBD primary for 151 ms. Hearing
/// the peer says nothing about the peer hearing this node: only its echo does.
#[test]
fn a_one_way_heartbeat_loss_while_the_lease_is_out_never_gives_two_primaries() {
    let params = |id: u16| {
        let mut p = CoreParams::example(id);
        p.handoff_timeout_ms = 10_000;
        for st in &mut p.steps {
            st.acquire_timeout_ms = 3_000;
            st.release_timeout_ms = 3_000;
        }
        p.lease = Some(lease_params(400));
        p
    };
    let mut sim =
        Sim::with_params(8_940_809_735_374_215_348, params(1), params(2)).with_witness(LEASE);
    sim.resume_inbox_first = true;
    sim.start_both();
    let schedule = [
        (3_791, Event::StartDaemon(A)),
        (
            2_260,
            Event::Cut {
                link: 0,
                from: None,
            },
        ),
        (1_007, Event::Delay { link: 0, ms: 0 }),
        (1_558, Event::StartDaemon(A)),
        (3_659, Event::WitnessUp),
        (
            1_218,
            Event::Loss {
                link: 1,
                percent: 67,
            },
        ),
        (2_523, Event::WitnessPath(A, false)),
        (2_985, Event::WitnessUp),
    ];
    let mut t = 12_000;
    for (gap, e) in schedule {
        t += gap;
        sim.at(t, e);
    }
    sim.run_until(t + 20_000);
    safe(&sim);
    // The failover still happens: A, cut off from the witness and unconfirmed by B, releases;
    // B takes over with the lease.
    assert_eq!(sim.state(B), Some(NodeState::Active));
    assert_eq!(holder(&sim), Some(2));
}

/// The same race without chance: B stops hearing A altogether (both links cut in the A→B
/// direction only) while A's path to the witness is down. A still hears B standing by, but B's
/// echoes of A's beats stop, so A releases before B can have declared it dead.
#[test]
fn a_one_way_cut_with_the_witness_out_of_reach_moves_the_service_safely() {
    let mut sim = settled(11);
    for link in 0..2 {
        sim.at(
            13_000,
            Event::Cut {
                link,
                from: Some(A),
            },
        );
    }
    sim.at(13_000, Event::WitnessPath(A, false));
    sim.run_until(25_000);
    let a_release = first(&sim, A, NodeState::Releasing, 13_000).expect("A released");
    let b_acquire = first(&sim, B, NodeState::Acquiring, 13_000).expect("B took over");
    assert!(
        a_release + 400 <= b_acquire,
        "A released at {a_release}, B acquired at {b_acquire}"
    );
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    safe(&sim);
}

/// With the witness down nobody has a lease, yet a planned handoff still works: the receiver
/// says it is acquiring, waits for the giver's echo of that, then acquires.
#[test]
fn a_planned_handoff_with_the_witness_down_still_works() {
    let mut sim = settled(12);
    sim.at(13_000, Event::WitnessDown);
    sim.run_until(20_000);
    assert_eq!(sim.state(A), Some(NodeState::Active));
    let id = sim.command(A, Command::Standby);
    sim.run_until(25_000);
    assert!(
        matches!(sim.outcome(A, id), Some(CommandOutcome::Done { .. })),
        "{:?}",
        sim.outcome(A, id)
    );
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(sim.state(B), Some(NodeState::Active));
    sim.run_until(40_000);
    assert_eq!(
        sim.state(B),
        Some(NodeState::Active),
        "B keeps it without a lease"
    );
    safe(&sim);
}
