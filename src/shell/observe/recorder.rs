//! Metrics that accumulate over the daemon's life: transitions, step durations, completed
//! plans, drills. The driver loop updates them as events happen (atomic adds, a short write
//! lock the first time a label set appears); the HTTP task encodes them on a scrape.
//!
//! Must not hold anything the status snapshot already carries (state, term, link counters):
//! those are rendered fresh from the snapshot on each scrape, so they can never drift from
//! what `twinbeat status` shows.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::core::{NodeState, StepDirection};
use crate::shell::history::{Entry, Kind};

pub type Labels = Vec<(&'static str, String)>;
type SecondsGauge = Gauge<f64, AtomicU64>;

fn step_histogram() -> Histogram {
    // 50 ms .. ~7 min: a VIP add is tens of ms, a MariaDB crash recovery can take minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

#[derive(Clone)]
pub struct Recorder {
    transitions: Family<Labels, Counter>,
    plans: Family<Labels, Counter>,
    steps: Family<Labels, Histogram, fn() -> Histogram>,
    plan_total: Family<Labels, Histogram, fn() -> Histogram>,
    drills: Family<Labels, Counter>,
    drill_last_passed: Gauge,
    drill_last_unix: SecondsGauge,
    drill_last_service_gap: SecondsGauge,
    drill_last_write_gap: SecondsGauge,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            transitions: Family::default(),
            plans: Family::default(),
            steps: Family::new_with_constructor(step_histogram),
            plan_total: Family::new_with_constructor(step_histogram),
            drills: Family::default(),
            drill_last_passed: Gauge::default(),
            drill_last_unix: SecondsGauge::default(),
            drill_last_service_gap: SecondsGauge::default(),
            drill_last_write_gap: SecondsGauge::default(),
        }
    }
}

pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Takeover => "takeover",
        Kind::Restart => "restart",
        Kind::Handoff => "handoff",
        Kind::Demotion => "demotion",
        Kind::SplitBrain => "split-brain",
        Kind::Release => "release",
        Kind::FailedTakeover => "failed-takeover",
        Kind::Failure => "failure",
        Kind::Drill => "drill",
    }
}

impl Recorder {
    /// Every state change the core reports, plan-ending or not.
    pub fn transition(&self, from: NodeState, to: NodeState) {
        self.transitions
            .get_or_create(&vec![
                ("from", from.as_str().to_string()),
                ("to", to.as_str().to_string()),
            ])
            .inc();
    }

    /// A history entry: a completed plan with its step timings, or a drill.
    pub fn entry(&self, e: &Entry) {
        self.plans
            .get_or_create(&vec![("kind", kind_name(e.kind).to_string())])
            .inc();
        for s in &e.steps {
            let direction = match s.direction {
                StepDirection::Acquire => "acquire",
                StepDirection::Release => "release",
            };
            let outcome = if s.error.is_some() { "error" } else { "ok" };
            self.steps
                .get_or_create(&vec![
                    ("step", s.name.clone()),
                    ("direction", direction.to_string()),
                    ("outcome", outcome.to_string()),
                ])
                .observe(s.elapsed_ms as f64 / 1000.0);
        }
        if let Some(ms) = e.total_ms {
            self.plan_total
                .get_or_create(&vec![("kind", kind_name(e.kind).to_string())])
                .observe(ms as f64 / 1000.0);
        }
        if let Some(d) = &e.drill {
            let result = if d.passed { "passed" } else { "failed" };
            self.drills
                .get_or_create(&vec![("result", result.to_string())])
                .inc();
            self.drill_last_passed.set(i64::from(d.passed));
            self.drill_last_unix.set(d.unix_ms as f64 / 1000.0);
            let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
            self.drill_last_service_gap.set(max(&d.service_gaps_ms));
            self.drill_last_write_gap.set(max(&d.write_gaps_ms));
        }
    }

    /// Adds these metrics (shared, not copied) to a scrape's registry.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "transitions",
            "State changes of this node since the daemon started",
            self.transitions.clone(),
        );
        r.register(
            "plans",
            "Completed plans (takeover, handoff, split-brain release, ...) since the daemon started",
            self.plans.clone(),
        );
        r.register_with_unit(
            "step_duration",
            "Duration of each acquire/release step of a completed plan",
            Unit::Seconds,
            self.steps.clone(),
        );
        r.register_with_unit(
            "plan_duration",
            "Total duration of completed plans, by kind",
            Unit::Seconds,
            self.plan_total.clone(),
        );
        r.register(
            "drills",
            "twinbeat drill runs recorded since the daemon started, by result",
            self.drills.clone(),
        );
        r.register(
            "drill_last_passed",
            "1 when the newest recorded drill passed, 0 when it failed or none ran",
            self.drill_last_passed.clone(),
        );
        r.register_with_unit(
            "drill_last_timestamp",
            "Start of the newest recorded drill (Unix time; 0 when none ran)",
            Unit::Seconds,
            self.drill_last_unix.clone(),
        );
        r.register_with_unit(
            "drill_last_service_gap",
            "Longest service gap the daemon measured in the newest drill",
            Unit::Seconds,
            self.drill_last_service_gap.clone(),
        );
        r.register_with_unit(
            "drill_last_write_gap",
            "Longest write gap the drill's canary writer saw in the newest drill",
            Unit::Seconds,
            self.drill_last_write_gap.clone(),
        );
    }
}
