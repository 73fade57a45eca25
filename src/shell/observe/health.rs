//! What this node tells a load balancer: the `/health` status code and the HAProxy
//! agent-check word, both derived from one status snapshot so they can never disagree.
//!
//! Serving means: this node runs the whole service and nothing is changing it. `Active` with
//! every resource held and no step running; the core releases or restarts a resource whose
//! probe (the mysql `SELECT 1`) fails, so a failed probe shows up here as a running step or a
//! state other than `Active` within one probe interval. In maintenance the daemon neither acts
//! nor probes; a node that still holds everything keeps serving (entering maintenance must not
//! cut the traffic off), one that does not says `maint` so HAProxy shows it as deliberate.

use crate::core::{NodeState, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Serving,
    /// Releasing the service (a planned handoff or a demotion): finish, do not start sessions.
    Draining,
    /// Unmanaged on purpose and not holding the service.
    Maintenance,
    Down,
}

impl Verdict {
    pub fn of(st: &Status) -> Verdict {
        let all_held = !st.resources.is_empty() && st.resources.iter().all(|r| r.held);
        let busy = st.resources.iter().any(|r| r.running.is_some());
        let maintenance = st.maintenance || st.state == NodeState::Maintenance;
        match st.state {
            NodeState::Active if all_held && !busy && !maintenance => Verdict::Serving,
            _ if maintenance && all_held && !busy => Verdict::Serving,
            _ if maintenance => Verdict::Maintenance,
            NodeState::Releasing => Verdict::Draining,
            _ => Verdict::Down,
        }
    }

    /// The HTTP status code for `option httpchk`: 200 only when serving.
    pub fn http_status(self) -> u16 {
        if self == Verdict::Serving {
            200
        } else {
            503
        }
    }

    /// One agent-check reply line. `ready` (not just `up`) so a server HAProxy holds in
    /// DRAIN or MAINT from an earlier answer comes back into rotation.
    pub fn agent_line(self) -> &'static str {
        match self {
            Verdict::Serving => "up ready\n",
            Verdict::Draining => "drain\n",
            Verdict::Maintenance => "maint\n",
            Verdict::Down => "down\n",
        }
    }
}

/// A one-line body for `/health`, for the operator reading HAProxy's check log or curl.
pub fn describe(st: &Status, v: Verdict) -> String {
    let what = match v {
        Verdict::Serving => "serving",
        Verdict::Draining => "releasing the service",
        Verdict::Maintenance => "maintenance, not serving",
        Verdict::Down => "not serving",
    };
    format!(
        "{} {} term {}: {what} ({})\n",
        st.node, st.state, st.term, st.cause
    )
}
