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
//!   lease; the receiver asks for one at once, see "Starts without a lease".)
//! - **Lapse rule.** An active (or acquiring) node whose lease has `guard` or less left releases
//!   everything, VIP first (release is the reverse of acquire), unless the peer confirms (below)
//!   for more than `guard` from now. The release therefore starts `guard` before `valid_until`
//!   and, with the guard covering the release of the VIP and the database, the node stops
//!   writing while its lease still holds, hence (rules 2–3) before the witness can give the peer
//!   a lease.
//! - **Peer confirmation** (the witness down or out of reach, the pair healthy). Every beat
//!   carries its sender's clock (`stamp`) and echoes the stamp of the newest beat received from
//!   the peer, with the peer's boot generation. Say this node (X) sent a beat stamped `s`, and
//!   every beat X sent since then, up to now, said it claims the service (acquiring, active or
//!   releasing, or holding a step). If the peer (Y) echoes `s`:
//!
//!   1. Y received that beat after X's clock read `s` (the shell sends a beat after the core
//!      stamped it), so Y's last-heard time is at or after that instant.
//!   2. Y starts the service on its own only (a) after `deadtime` without any beat from X, or
//!      `initdead` after its own start when it has not heard X since; or (b) when X's newest
//!      beat says X stands by holding nothing. (b) is out: every beat of X that Y can hold as
//!      newest from then on claims the service. A handoff needs X to release first.
//!   3. So Y cannot start before `D = min(deadtime, initdead)` of its own clock after the
//!      instant X's clock read `s`; if Y's clock runs at most (1 + ρ) times as fast as X's,
//!      that is at least `D·(1 − ρ)` of X's clock: X holds `peer_until = s + D·(1 − ρ)`.
//!   4. X keeps the service while `peer_until` is more than `guard` away and Y's newest beat
//!      says it is neither acquiring, active nor holding anything; it releases (VIP first)
//!      `guard` before `peer_until` otherwise, as with a lease.
//!
//!   No delay is assumed: the bound is measured from X's own stamp, like `t_s` for a lease.
//!   Hearing Y proves nothing about Y hearing X (loss can be one-way, by chance or not): only
//!   Y's echo does. An echo of a previous run of X (another generation) counts for nothing.
//!   In a healthy pair Y echoes every beat within about one keepalive, so X keeps the service
//!   indefinitely while the witness is down; `twinbeat check` requires
//!   `warntime + guard < deadtime·(1 − ρ)`, which leaves at least `warntime` for an echo to
//!   come back before X gives up.
//! - **Starts without a lease.** No acquire step starts without a usable lease or the peer's
//!   confirmation. A takeover by the usual rules needs the lease anyway; a planned handoff or an
//!   operator's takeover (which need none) says "acquiring" first and waits, holding nothing,
//!   for either, at most `deadtime`, then gives up. A daemon that just started and adopted the
//!   running service gets `warntime` to hear the witness or the peer's first echo.
//! - **Witness down, pair healthy.** Nobody gets a lease: the active node keeps the service on
//!   the peer's confirmation, and the standby cannot take over because it has no lease. No
//!   failover, nobody demotes. If the heartbeats then fail (in either direction, or both) the
//!   echoes stop and the active node releases within `deadtime·(1 − ρ)` of the last beat the
//!   peer echoed, less `guard`, before the peer can declare it dead.
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
    /// Edge-triggered alerts: the lease ran out while the service stayed (peer confirmed).
    pub lapse_reported: bool,
    /// The newest stamp of this run's beats that the peer echoed: it heard this node then.
    pub echoed: Option<Millis>,
    /// The stamp of the newest beat this node sent that did not claim the service (neither
    /// acquiring, active nor releasing, and holding nothing).
    pub unclaimed_sent: Option<Millis>,
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

    /// A beat this node sends; `now` is its stamp.
    pub(super) fn lease_sent(&mut self, now: Millis, beat: &Beat) {
        if !(beat.state.may_hold_service() || beat.held != 0) {
            self.lease.unclaimed_sent = Some(now);
        }
    }

    /// The peer's beat echoes one of ours: it heard us at or after that stamp. An echo of a
    /// previous run of this daemon (another generation) says nothing about this one.
    pub(super) fn on_echo(&mut self, now: Millis, e: Echo) {
        if e.generation != self.generation || e.stamp > now {
            return;
        }
        self.lease.echoed = Some(self.lease.echoed.map_or(e.stamp, |s| s.max(e.stamp)));
    }

    /// Until when (this node's clock) the peer provably cannot have started the service, on
    /// the evidence of its echo (module doc, "peer confirmation"): the echoed beat claimed the
    /// service, as has every beat since, and the peer received it after its stamp, so it
    /// needs `min(deadtime, initdead)` of its own clock without a beat from us before it may
    /// take over; measured here, that is at least that long less the drift bound.
    fn peer_until(&self) -> Option<Millis> {
        let lp = self.p.lease.as_ref()?;
        let s = self.lease.echoed?;
        if self.lease.unclaimed_sent.is_some_and(|u| s <= u) {
            return None;
        }
        let d = self.p.deadtime_ms.min(self.p.initdead_ms);
        let ppm = u64::from(lp.max_drift_ppm.min(1_000_000));
        Some(s + d - (d * ppm).div_ceil(1_000_000))
    }

    /// The peer's newest beat says it neither takes nor holds the service.
    fn peer_quiet(&self) -> bool {
        self.peer.beat.is_some_and(|b| {
            !matches!(b.state, NodeState::Acquiring | NodeState::Active) && b.held == 0
        })
    }

    /// The peer, not the witness, vouches that the service runs only here, for more than
    /// `guard` from now: it stands by, and its echo bounds when it could take over.
    fn peer_confirms(&self, now: Millis) -> bool {
        let Some(lp) = &self.p.lease else {
            return false;
        };
        self.peer_quiet() && self.peer_until().is_some_and(|u| now + lp.guard_ms < u)
    }

    /// May this node run (or start) an acquire step now: a usable lease, or the peer's
    /// confirmation. Always true without a witness.
    pub(super) fn entitled(&self, now: Millis) -> bool {
        self.p.lease.is_none() || self.lease_usable(now) || self.peer_confirms(now)
    }

    /// A takeover that needs no lease (a handoff, an operator's takeover) announces itself
    /// as acquiring and waits with nothing held for the lease or the peer's confirmation,
    /// at most a deadtime.
    fn waiting_to_acquire(&self, now: Millis) -> Option<Millis> {
        match &self.phase {
            Phase::Running {
                plan,
                goal: Goal::Active { .. },
            } if self.held == 0
                && plan.running.is_none()
                && plan.aborted.is_none()
                && plan.failure.is_none() =>
            {
                Some(plan.started_at + self.p.deadtime_ms).filter(|&end| now < end)
            }
            _ => None,
        }
    }

    /// The lapse rule (module doc): Some(cause) when the service must go now.
    fn lease_lapse(&mut self, now: Millis) -> Option<String> {
        let lp = self.p.lease.clone()?;
        if self.lease_usable(now) {
            return None;
        }
        let peer = self.p.peer_name.clone();
        if self.peer_confirms(now) {
            // Only a lease that existed can run out; right after a planned handoff there was none.
            if self.lease.valid_until.is_some() && !self.lease.lapse_reported {
                self.lease.lapse_reported = true;
                self.alert(
                    Severity::Error,
                    format!(
                        "the witness lease ran out; keeping the service because peer {peer} stands by and confirms it hears this node"
                    ),
                );
            }
            return None;
        }
        let unknown_or_quiet = self.peer.beat.is_none() || self.peer_quiet();
        // A daemon that just started (and adopted a running service) gets one warntime for the
        // peer's first echo and the witness's first grant before it counts as cut off.
        if now < self.boot_at + self.p.warntime_ms && unknown_or_quiet {
            return None;
        }
        if self.waiting_to_acquire(now).is_some() && unknown_or_quiet {
            return None;
        }
        let left = match self.lease.valid_until {
            Some(v) if v > now => format!("{} ms left, guard {} ms", v - now, lp.guard_ms),
            _ => "none held".to_string(),
        };
        Some(format!(
            "the witness lease is running out ({left}) and peer {peer} does not confirm that it hears this node and stands by: releasing before the witness can grant it to {peer}"
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
        if let Some(u) = self.peer_until() {
            t.push(u.saturating_sub(lp.guard_ms));
        }
        t.extend(self.waiting_to_acquire(self.now));
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
