//! The core's view of the configuration: plain numbers and flags, produced by `config::Config`
//! (see `Config::core_params`). The core never parses files or looks at paths.

use serde::{Deserialize, Serialize};

use super::types::Millis;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepParams {
    /// The resource's name from the config, for status and logs.
    pub name: String,
    /// The resource kind (`drbd`, `filesystem`, `mysql`, `vip`, `exec`, `systemd`), for status.
    pub kind: String,
    pub acquire_timeout_ms: Millis,
    pub release_timeout_ms: Millis,
    /// Whether the shell probes this step's health while active (a failed probe restarts it).
    pub monitored: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceParams {
    pub timeout_ms: Millis,
    /// When true, a failed fence blocks the takeover; when false it is logged and the takeover goes on.
    pub required: bool,
    /// How long to wait before fencing again after a failure.
    pub retry_ms: Millis,
}

/// The witness lease (see `node/lease.rs` for the safety argument). All times on this node's
/// monotonic clock except `lease_ms`, which the witness measures on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseParams {
    /// The longest lease this node believes, whatever the witness grants.
    pub lease_ms: Millis,
    /// Bound on how much faster the witness's clock may run than this node's, in parts per
    /// million: a lease of `L` witness-ms is trusted for `L * (1 - ppm/1e6)` local ms.
    pub max_drift_ppm: u32,
    /// The release starts this long before the lease lapses, so the VIP (released first) and
    /// the database are gone while the lease still holds.
    pub guard_ms: Millis,
}

impl LeaseParams {
    /// How long a grant of `granted_ms` witness-ms is trusted on this node's clock.
    pub fn trusted_ms(&self, granted_ms: Millis) -> Millis {
        let l = granted_ms.min(self.lease_ms);
        let ppm = u64::from(self.max_drift_ppm.min(1_000_000));
        // Rounded down: trusting a millisecond less is always safe.
        l - (l * ppm).div_ceil(1_000_000)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreParams {
    pub node_id: u16,
    pub peer_id: u16,
    pub node_name: String,
    pub peer_name: String,
    /// One name per heartbeat link, in config order; `Input::Heartbeat::link` indexes this.
    pub links: Vec<String>,
    pub keepalive_ms: Millis,
    pub warntime_ms: Millis,
    pub deadtime_ms: Millis,
    pub initdead_ms: Millis,
    /// The ordered `[[resource]]` list: acquire in this order, release in reverse.
    pub steps: Vec<StepParams>,
    /// Restarts of a failed resource allowed within `restart_window_ms` before handing over.
    pub restart_limit: u32,
    pub restart_window_ms: Millis,
    /// How long a planned handoff may take from request to the receiver being active.
    pub handoff_timeout_ms: Millis,
    /// A tie-breaker (ping targets or witness) is configured: takeovers need its approval.
    pub tiebreaker: bool,
    /// Failed tie-breaker rounds in a row before an active node that lost its peer counts the
    /// tie-breaker as lost and steps down (keepalived's `fall`): one lost ping, or a probe a
    /// starved host could not finish in time, must not drop the only copy of the service.
    #[serde(default = "default_tiebreaker_fall")]
    pub tiebreaker_fall: u32,
    /// A witness is configured: holding the service needs its lease (see `node/lease.rs`).
    #[serde(default)]
    pub lease: Option<LeaseParams>,
    pub fencing: Option<FenceParams>,
    /// A DRBD resource is configured: never promote unless the local disk is UpToDate.
    pub disk_gate: bool,
    pub auto_failback: bool,
    /// This node wins when both nodes are healthy standbys (and is the failback target).
    pub preferred: bool,
}

/// The default of `[tiebreaker] fall`.
pub const DEFAULT_TIEBREAKER_FALL: u32 = 3;

fn default_tiebreaker_fall() -> u32 {
    DEFAULT_TIEBREAKER_FALL
}

impl CoreParams {
    /// A small valid configuration for tests and examples: two links, four steps, default timings.
    pub fn example(node_id: u16) -> CoreParams {
        let step = |name: &str, kind: &str, monitored: bool| StepParams {
            name: name.to_string(),
            kind: kind.to_string(),
            acquire_timeout_ms: 30_000,
            release_timeout_ms: 30_000,
            monitored,
        };
        CoreParams {
            node_id,
            peer_id: if node_id == 1 { 2 } else { 1 },
            node_name: format!("node{node_id}"),
            peer_name: format!("node{}", if node_id == 1 { 2 } else { 1 }),
            links: vec!["hb0".to_string(), "lan0".to_string()],
            keepalive_ms: 200,
            warntime_ms: 500,
            deadtime_ms: 1_000,
            initdead_ms: 10_000,
            steps: vec![
                step("r0", "drbd", false),
                step("data", "filesystem", false),
                step("mysql", "mysql", true),
                step("vip", "vip", true),
            ],
            restart_limit: 3,
            restart_window_ms: 300_000,
            handoff_timeout_ms: 120_000,
            tiebreaker: false,
            tiebreaker_fall: DEFAULT_TIEBREAKER_FALL,
            lease: None,
            fencing: None,
            disk_gate: true,
            auto_failback: false,
            preferred: node_id == 1,
        }
    }
}
