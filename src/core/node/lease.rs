//! The witness lease: when this node may hold the service because a third machine (the witness,
//! `twinbeat witness`) says so, and when it must give the service up because that permission
//! runs out.
//!
//! Owns: the lease this node believes it holds (`valid_until`, on this node's clock), whether it
//! wants one, the takeover gate and the lapse rule. Must not touch: the wire format or the socket
//! (the shell's witness client sends requests and reports grants), the witness's own table
//! (`crate::witness::table`).
//!
//! # The protocol, as the core sees it
//!
//! While [`Node::wants_lease`] is true the shell sends a lease request every `lease / 3` and
//! remembers, per request, the local time `t_s` it was sent. A grant names the request it answers
//! (authenticated, echoing the request's generation and seq), so the shell hands the core
//! `Input::LeaseGranted { sent_at: t_s, lease_ms: L }` where `t_s` comes from the shell's own
//! record, never from the packet. The witness grants only when no *other* node holds an unexpired
//! lease on the witness's clock, and records `expiry = grant_time + L` (witness clock).
//!
//! # Why two nodes never both hold a valid lease
//!
//! This node trusts a grant until `valid_until = t_s + L·(1 − ρ)` on its own clock, where ρ is
//! `max-clock-drift-ppm`: the bound on how much faster the witness's clock may run than this
//! node's over one lease period.
//!
//! 1. `t_s` is before the grant in real time (the request caused it), so the witness's expiry is
//!    at least `L` witness-ms after the real instant `t_s`.
//! 2. Over the real interval from `t_s` to the moment this node's clock reads `valid_until`, this
//!    node measures `L·(1 − ρ)`; the witness measures at most `L·(1 − ρ)·(1 + ρ) = L·(1 − ρ²) < L`.
//!    So when this node's lease ends, the witness's record of it has not expired yet.
//! 3. The witness grants the other node only after that record expired on its own clock.
//!    So every lease the other node gets starts after this node's has ended, in real time.
//! 4. A restarted witness has no records: it grants nothing for `L` after it starts. Every lease
//!    an earlier run granted expired on that run's clock within `L` of its last grant, and so (by
//!    2, applied to the node's copy) no node trusts it any more once the new run starts granting.
//!
//! Clock rates: `Millis` is CLOCK_MONOTONIC, which NTP may slew by at most 500 ppm and which a
//! healthy quartz oscillator keeps within about 100 ppm; the default ρ of 1% (10 000 ppm) is
//! fifty times that. Only rates matter, never offsets: no two clocks are ever compared.
//! What no lease bounds: a daemon frozen (SIGSTOP, a paused VM) cannot release what it holds
//! when its lease runs out. Fencing exists for that; the stall detection in `inputs.rs` keeps a
//! frozen node from trusting anything when it wakes up.
//!
//! # The rules (all in this file)
//!
//! - **Takeover gate.** A standby node becomes active only while it holds a lease with more than
//!   `guard` left. Besides that, the usual gates apply: the peer silent on every link for
//!   deadtime, initdead, an UpToDate disk, fencing. (A planned handoff is coordinated by
//!   heartbeats: the giver has released everything before the receiver starts, so it needs no
//!   lease; the receiver asks for one as soon as it is active.)
//! - **Lapse rule.** An active (or acquiring) node whose lease has `guard` or less left releases
//!   everything, VIP first (release is the reverse of acquire), unless the peer is heard right
//!   now (within warntime) and is not itself acquiring or active. The release therefore starts
//!   `guard` before `valid_until` and, with the guard covering the release of the VIP and the
//!   database, the node stops writing while its lease still holds, hence (rules 2–3) before the
//!   witness can give the peer a lease.
//! - **Witness down, pair healthy.** If nobody can reach the witness, nobody gets a lease: the
//!   active node keeps the service because it hears the peer, and the standby cannot take over
//!   because it has no lease. No failover, nobody demotes. If the heartbeats then fail as well
//!   the active node releases as soon as the peer is late (warntime), while the peer needs
//!   deadtime of silence *and* a lease; `twinbeat check` requires `warntime + guard` to fit in
//!   deadtime, so for a cut that silences both directions at once the active node is out first.
//!   What this case cannot rule out is a one-way heartbeat loss (the peer no longer hears this
//!   node but this node still hears the peer) at the same time as this node losing the witness:
//!   the peer may then get a lease and start acquiring; this node sees the peer acquiring and
//!   releases at once (VIP first, while the peer's VIP is still its last step), but that is a
//!   race won in practice, not a proof. Fencing closes it.
//! - **Wanting.** A node wants a lease while it holds or acquires the service, and while it is a
//!   standby that would take over but for the lease. When it stops wanting one it forgets the
//!   lease at once (a late grant is ignored) and the shell tells the witness to release it, so a
//!   standby can never take over on a lease left from an earlier episode.

use super::*;

/// The lease this node believes it holds.
#[derive(Clone, Debug, Default)]
pub(super) struct LeaseState {
    /// Trusted until this moment (this node's clock); `None` when no lease is held.
    pub valid_until: Option<Millis>,
    pub wanted: bool,
    pub last_grant: Option<Millis>,
    pub grants: u64,
    /// Edge-triggered alerts: the lease ran out while the service stayed (peer heard).
    pub lapse_reported: bool,
}

impl Node {
    /// Whether the shell should ask the witness for the lease now (see the module doc).
    pub fn wants_lease(&self, now: Millis) -> bool {
        if self.p.lease.is_none() {
            return false;
        }
        match &self.phase {
            Phase::Active => true,
            Phase::Running { goal, .. } => matches!(goal, Goal::Active { .. }) || self.held != 0,
            Phase::Standby => matches!(self.verdict_with(now, false), Verdict::Go { .. }),
            Phase::Init | Phase::Failed(_) | Phase::Maintenance | Phase::Stopped => false,
        }
    }

    /// The witness granted the request sent at `sent_at` for `lease_ms` of its own clock.
    pub(super) fn on_lease_granted(&mut self, now: Millis, sent_at: Millis, lease_ms: Millis) {
        let Some(lp) = &self.p.lease else {
            return;
        };
        // A grant for a request sent before the node stopped wanting it belongs to an episode
        // that is over; the shell releases it at the witness.
        if !self.lease.wanted || sent_at > now {
            return;
        }
        let until = sent_at + lp.trusted_ms(lease_ms);
        if until <= now {
            return;
        }
        self.lease.valid_until = Some(self.lease.valid_until.map_or(until, |v| v.max(until)));
        self.lease.last_grant = Some(now);
        self.lease.grants += 1;
        self.lease.lapse_reported = false;
    }

    /// A lease with more than `guard` left: enough to hold the service.
    pub(super) fn lease_usable(&self, now: Millis) -> bool {
        let Some(lp) = &self.p.lease else {
            return true;
        };
        self.lease
            .valid_until
            .is_some_and(|v| now + lp.guard_ms < v)
    }

    /// Why a takeover needs to wait for the witness, if it does.
    pub(super) fn lease_blocker(&self, now: Millis) -> Option<String> {
        if self.lease_usable(now) {
            return None;
        }
        Some(match self.lease.valid_until {
            Some(v) if v > now => format!(
                "the witness lease has only {} ms left; waiting for a renewal",
                v - now
            ),
            _ => "no lease from the witness (it is unreachable, or the peer holds the lease)"
                .to_string(),
        })
    }

    /// Heard within warntime and not itself taking or holding the service: the peer, not the
    /// witness, vouches that the service runs only here.
    fn peer_heard_and_quiet(&self, now: Millis) -> bool {
        self.peer_view(now) == PeerView::Alive
            && self.peer.beat.is_some_and(|b| {
                !matches!(b.state, NodeState::Acquiring | NodeState::Active) && b.held == 0
            })
    }

    /// The lapse rule (module doc): Some(cause) when the service must go now.
    fn lease_lapse(&mut self, now: Millis) -> Option<String> {
        let lp = self.p.lease.clone()?;
        if self.lease_usable(now) {
            return None;
        }
        let peer = self.p.peer_name.clone();
        if self.peer_heard_and_quiet(now) {
            // Only a lease that existed can run out; right after a planned handoff there was none.
            if self.lease.valid_until.is_some() && !self.lease.lapse_reported {
                self.lease.lapse_reported = true;
                self.alert(
                    Severity::Error,
                    format!(
                        "the witness lease ran out; keeping the service because peer {peer} is heard and standing by"
                    ),
                );
            }
            return None;
        }
        // A daemon that just started (and adopted a running service) gets one warntime for the
        // peer's first beat and the witness's first grant before it counts as cut off.
        if self.peer_view(now) == PeerView::Unknown && now < self.boot_at + self.p.warntime_ms {
            return None;
        }
        let left = match self.lease.valid_until {
            Some(v) if v > now => format!("{} ms left, guard {} ms", v - now, lp.guard_ms),
            _ => "none held".to_string(),
        };
        Some(format!(
            "the witness lease is running out ({left}) and peer {peer} is not heard standing by: releasing before the witness can grant it to {peer}"
        ))
    }

    /// Applies the lapse rule to an active or acquiring node; true when it started a release.
    pub(super) fn lease_check(&mut self, now: Millis) -> bool {
        let holding = match &self.phase {
            Phase::Active => true,
            Phase::Running {
                goal: Goal::Active { .. },
                plan,
            } => plan.failure.is_none() && plan.aborted.is_none(),
            _ => false,
        };
        if !holding {
            return false;
        }
        let Some(cause) = self.lease_lapse(now) else {
            return false;
        };
        self.alert(Severity::Error, cause.clone());
        if let Phase::Running { plan, .. } = &mut self.phase {
            plan.abort(self.held, cause);
            return true;
        }
        self.end_handoff(now, Err(cause.clone()));
        self.start_plan(
            now,
            Plan::release(self.held, 0, now),
            Goal::Standby {
                cause: "demoted: the witness lease ran out".into(),
            },
            &cause,
        );
        true
    }

    /// After every call: a node that no longer wants the lease forgets it.
    pub(super) fn lease_after(&mut self, now: Millis) {
        let wants = self.wants_lease(now);
        if !wants {
            self.lease.valid_until = None;
        }
        self.lease.wanted = wants;
    }

    /// Moments the lease rules must be looked at again.
    pub(super) fn lease_timers(&self) -> Vec<Millis> {
        let Some(lp) = &self.p.lease else {
            return Vec::new();
        };
        let mut t = vec![self.boot_at + self.p.warntime_ms];
        if let Some(v) = self.lease.valid_until {
            t.push(v.saturating_sub(lp.guard_ms));
            t.push(v);
        }
        t
    }

    pub(super) fn lease_status(&self, now: Millis) -> Option<LeaseStatus> {
        self.p.lease.as_ref()?;
        Some(LeaseStatus {
            wanted: self.lease.wanted,
            valid_for_ms: self.lease.valid_until.filter(|&v| v > now).map(|v| v - now),
            last_grant_ms_ago: self.lease.last_grant.map(|t| now.saturating_sub(t)),
            grants: self.lease.grants,
        })
    }
}
