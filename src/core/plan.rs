//! The mechanics of running resource steps one at a time: a queue of acquire/release operations,
//! the held bitmap they change, per-step timings, and the rollback rule (a failed acquire turns
//! the rest of the plan into releases of what is held, in reverse). What a plan is *for* and what
//! happens when it ends is decided in `node`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::io::OpId;
use super::types::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepDirection {
    Acquire,
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StepOp {
    pub dir: StepDirection,
    pub step: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTiming {
    pub step: usize,
    pub name: String,
    pub direction: StepDirection,
    pub elapsed_ms: Millis,
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Running {
    pub op: OpId,
    pub what: StepOp,
    pub started: Millis,
    pub deadline: Millis,
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub ops: VecDeque<StepOp>,
    pub running: Option<Running>,
    /// The first failure, which decides how the plan ends.
    pub failure: Option<String>,
    /// Set when the plan's purpose went away (e.g. the peer became active first): the rest of
    /// the plan is replaced by releases of what is held.
    pub aborted: Option<String>,
    pub timings: Vec<StepTiming>,
    pub started_at: Millis,
    /// Steps whose release failed in this plan: their state is unknown, so their held bit
    /// stays set and no later recomputation of the plan (an abort) queues them again.
    pub release_failed: u32,
}

/// Bit mask of steps `0..n`.
pub(crate) fn all_steps(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

impl Plan {
    /// Acquire steps `from..n` in config order.
    pub fn acquire(from: usize, n: usize, now: Millis) -> Plan {
        Plan::new(
            (from..n).map(|step| StepOp {
                dir: StepDirection::Acquire,
                step,
            }),
            now,
        )
    }

    /// Release every held step at or above `from`, highest first.
    pub fn release(held: u32, from: usize, now: Millis) -> Plan {
        Plan::new(release_ops(held, from), now)
    }

    /// Release steps `from..` (highest first), then acquire them again in order.
    pub fn restart(held: u32, from: usize, n: usize, now: Millis) -> Plan {
        let mut plan = Plan::release(held, from, now);
        plan.ops.extend((from..n).map(|step| StepOp {
            dir: StepDirection::Acquire,
            step,
        }));
        plan
    }

    fn new(ops: impl Iterator<Item = StepOp>, now: Millis) -> Plan {
        Plan {
            ops: ops.collect(),
            running: None,
            failure: None,
            aborted: None,
            timings: Vec::new(),
            started_at: now,
            release_failed: 0,
        }
    }

    /// Gives up on acquiring: whatever is held (including a step still running, once it
    /// finishes) is released in reverse.
    pub fn abort(&mut self, held: u32, reason: String) {
        // Once only: recomputing later would queue again a release that already failed.
        if self.aborted.is_some() {
            return;
        }
        self.aborted = Some(reason);
        self.ops = release_ops(self.releasable(held), 0).collect();
    }

    /// What a recomputed plan may still release: the held steps, less those whose release
    /// failed here and the one being released right now (it ends one way or the other; queueing
    /// it again would retry a failed release, out of reverse order).
    fn releasable(&self, held: u32) -> u32 {
        let running = match &self.running {
            Some(r) if r.what.dir == StepDirection::Release => 1u32 << r.what.step,
            _ => 0,
        };
        held & !self.release_failed & !running
    }

    /// Direction of the operation running now, or of the next one.
    pub fn direction(&self) -> Option<StepDirection> {
        self.running
            .as_ref()
            .map(|r| r.what.dir)
            .or_else(|| self.ops.front().map(|o| o.dir))
    }

    /// Records the end of the running step and updates `held`. Returns false if `op` is not the
    /// running operation (a late answer to a cancelled op).
    pub fn finish(
        &mut self,
        op: OpId,
        result: Result<(), String>,
        now: Millis,
        held: &mut u32,
        name: &str,
    ) -> bool {
        let Some(running) = self.running.take_if(|r| r.op == op) else {
            return false;
        };
        let StepOp { dir, step } = running.what;
        let bit = 1u32 << step;
        match (&result, dir) {
            (Ok(()), StepDirection::Acquire) => *held |= bit,
            (Ok(()), StepDirection::Release) => *held &= !bit,
            (Err(_), _) => {}
        }
        if result.is_err() && dir == StepDirection::Release {
            self.release_failed |= bit;
        }
        if self.aborted.is_some() && result.is_ok() && dir == StepDirection::Acquire {
            self.ops = release_ops(self.releasable(*held), 0).collect();
        }
        let error = result.err();
        self.timings.push(StepTiming {
            step,
            name: name.to_string(),
            direction: dir,
            elapsed_ms: now.saturating_sub(running.started),
            error: error.clone(),
        });
        if let Some(e) = error {
            let verb = match dir {
                StepDirection::Acquire => "acquire",
                StepDirection::Release => "release",
            };
            if self.failure.is_none() {
                self.failure = Some(format!("{verb} of {name} failed: {e}"));
            }
            if dir == StepDirection::Acquire {
                // Rollback: whatever was queued is abandoned, and what is held goes away in
                // reverse, so a failed takeover never leaves a half-built service behind.
                self.ops = release_ops(self.releasable(*held), 0).collect();
            }
            // A failed release keeps going with the lower steps: leaving them up would not make
            // the stuck step any safer, and the held bit stays set so the peer never acquires.
            // Nothing is acquired on top of a step in an unknown state (a restart stops here).
            self.ops.retain(|o| o.dir == StepDirection::Release);
        }
        true
    }
}

fn release_ops(held: u32, from: usize) -> impl Iterator<Item = StepOp> {
    (from..32)
        .rev()
        .filter(move |s| held & (1u32 << s) != 0)
        .map(|step| StepOp {
            dir: StepDirection::Release,
            step,
        })
}
