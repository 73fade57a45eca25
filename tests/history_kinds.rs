//! The failover history names each event's kind from the core's transition (states plus the
//! cause's wording). These runs drive the real core through each kind of event on the simulator
//! and check the history's classification of what the core actually said, so a change of wording
//! in the core cannot silently turn, say, a demotion into a plain release.

mod sim;

use sim::{Event, Sim};
use twinbeat::core::{CoreParams, NodeState, Transition};
use twinbeat::shell::history::Kind;

const A: usize = 0;
const B: usize = 1;

/// The plan-ending transitions (the ones with a total time: what the shell records) of a node,
/// with their kinds.
fn recorded(sim: &Sim, n: usize) -> Vec<(Kind, Transition)> {
    sim.node(n)
        .transitions()
        .filter(|t| t.total_ms.is_some())
        .map(|t| (Kind::of(t), t.clone()))
        .collect()
}

fn kinds(sim: &Sim, n: usize) -> Vec<Kind> {
    recorded(sim, n).into_iter().map(|(k, _)| k).collect()
}

fn cut_all(sim: &mut Sim, at: u64) {
    for link in 0..2 {
        sim.at(at, Event::Cut { link, from: None });
    }
}

fn heal_all(sim: &mut Sim, at: u64) {
    for link in 0..2 {
        sim.at(at, Event::Heal { link, from: None });
    }
}

fn settled(mut sim: Sim) -> Sim {
    sim.start_both();
    sim.run_until(12_000);
    assert_eq!(sim.state(A), Some(NodeState::Active), "A should be active");
    sim
}

#[test]
fn takeover_handoff_and_restart_are_named_from_the_cores_words() {
    let mut sim = settled(Sim::new(31));
    assert_eq!(kinds(&sim, A), [Kind::Takeover]);
    sim.at(13_000, Event::HealthFail(A, 2));
    sim.run_until(16_000);
    assert_eq!(
        kinds(&sim, A).last(),
        Some(&Kind::Restart),
        "{:#?}",
        recorded(&sim, A)
    );
    let _ = sim.command(A, twinbeat::core::Command::Standby);
    sim.run_for(5_000);
    assert_eq!(
        kinds(&sim, A).last(),
        Some(&Kind::Handoff),
        "{:#?}",
        recorded(&sim, A)
    );
    assert_eq!(kinds(&sim, B).last(), Some(&Kind::Takeover));
}

#[test]
fn an_isolated_node_records_a_demotion() {
    let mut a = CoreParams::example(1);
    let mut b = CoreParams::example(2);
    a.tiebreaker = true;
    b.tiebreaker = true;
    let mut sim = settled(Sim::with_params(32, a, b));
    cut_all(&mut sim, 13_000);
    sim.at(13_000, sim::Event::TieBreaker(A, false));
    sim.run_until(16_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(
        kinds(&sim, A).last(),
        Some(&Kind::Demotion),
        "{:#?}",
        recorded(&sim, A)
    );
}

#[test]
fn the_lower_term_after_a_split_records_split_brain() {
    let mut sim = settled(Sim::new(33));
    cut_all(&mut sim, 13_000);
    sim.run_until(20_000);
    assert_eq!(
        sim.state(B),
        Some(NodeState::Active),
        "both active while split"
    );
    heal_all(&mut sim, 21_000);
    sim.run_until(25_000);
    assert_eq!(sim.state(A), Some(NodeState::Standby));
    assert_eq!(
        kinds(&sim, A).last(),
        Some(&Kind::SplitBrain),
        "{:#?}",
        recorded(&sim, A)
    );
}

#[test]
fn a_rolled_back_takeover_records_a_failed_takeover() {
    let mut sim = Sim::new(34);
    sim.at(0, Event::FailNextAcquire(A, 2));
    sim.start_both();
    sim.run_until(12_000);
    assert!(
        kinds(&sim, A).contains(&Kind::FailedTakeover),
        "{:#?}",
        recorded(&sim, A)
    );
}
