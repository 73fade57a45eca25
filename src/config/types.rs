//! The validated, typed configuration the daemon uses, and its projection onto the core.
//!
//! Owns: the shape of a *valid* config (every value present, defaulted and in range) and
//! `Config::core_params`. Must not touch: TOML, spans, the file system.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::core::{CoreParams, FenceParams, Millis, StepParams};

use super::diag::Diagnostic;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this was loaded from, for logs and reload.
    pub source: PathBuf,
    pub cluster: Cluster,
    /// Exactly two, in file order.
    pub nodes: [Node; 2],
    /// Index into `nodes` of the node this process runs on.
    pub this_node: usize,
    pub links: Vec<Link>,
    pub timing: Timing,
    pub auth: Auth,
    /// Takeover order: acquire first to last, release last to first.
    pub resources: Vec<Resource>,
    pub tiebreaker: Tiebreaker,
    pub fencing: Option<Fencing>,
    pub failover: Failover,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// `twinbeat drill`'s settings; `None` without a `[drill]` section (drills refuse).
    pub drill: Option<Drill>,
    /// `[metrics]`: Prometheus metrics and health checks; `None` (off) without the section.
    pub metrics: Option<super::observe::Observe>,
    /// Non-fatal findings (e.g. a suspicious resource order); the daemon logs them at start.
    pub warnings: Vec<Diagnostic>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    /// Carried in every heartbeat so two clusters sharing a LAN ignore each other.
    pub id: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// As printed by `uname -n`.
    pub name: String,
    pub id: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub interface: String,
    pub port: u16,
    /// Each node's address on this link, indexed like `Config::nodes`.
    pub addresses: [IpAddr; 2],
}

impl Link {
    /// Where the node at `node` index binds and where its peer sends to.
    pub fn endpoint(&self, node: usize) -> SocketAddr {
        SocketAddr::new(self.addresses[node.min(1)], self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub keepalive_ms: Millis,
    pub warntime_ms: Millis,
    pub deadtime_ms: Millis,
    pub initdead_ms: Millis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha1,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha1 => "hmac-sha1",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub id: u8,
    pub secret: Vec<u8>,
}

/// Never prints the secret, so a `{:?}` in a log line cannot leak it.
impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AuthKey {{ id: {}, secret: <{} bytes> }}",
            self.id,
            self.secret.len()
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub algorithm: Algorithm,
    pub key_file: PathBuf,
    /// The key heartbeats are signed with; always one of `accept`.
    pub send_key: u8,
    /// Every key a received heartbeat may be signed with (the listed ids, in config order).
    pub accept: Vec<AuthKey>,
}

impl Auth {
    pub fn key(&self, id: u8) -> Option<&AuthKey> {
        self.accept.iter().find(|k| k.id == id)
    }

    pub fn send(&self) -> &AuthKey {
        // validate guarantees presence; fall back to the first key rather than panic.
        self.key(self.send_key).unwrap_or(&self.accept[0])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub start_timeout_ms: Millis,
    pub stop_timeout_ms: Millis,
    pub kind: ResourceKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Drbd {
        /// The DRBD resource name as `drbdadm` knows it.
        resource: String,
    },
    Filesystem {
        device: PathBuf,
        directory: PathBuf,
        fstype: String,
        /// `mount -o` string, e.g. `noatime,nodiratime`; empty for none.
        options: String,
    },
    Mysql(Mysql),
    Vip {
        address: IpAddr,
        prefix: u8,
        interface: String,
        /// IPv4 label such as `lan0:db` (Linux: interface name + `:`, at most 15 bytes).
        label: Option<String>,
        /// Period of the gratuitous ARP / NA refresh while held; 0 = off (the default).
        garp_refresh_ms: Millis,
    },
    Exec {
        start: Vec<String>,
        stop: Vec<String>,
        probe: Option<Probe>,
    },
    Systemd {
        unit: String,
    },
}

impl ResourceKind {
    pub fn name(&self) -> &'static str {
        match self {
            ResourceKind::Drbd { .. } => "drbd",
            ResourceKind::Filesystem { .. } => "filesystem",
            ResourceKind::Mysql(_) => "mysql",
            ResourceKind::Vip { .. } => "vip",
            ResourceKind::Exec { .. } => "exec",
            ResourceKind::Systemd { .. } => "systemd",
        }
    }

    /// Whether the shell probes it while active (a failed probe counts as a resource failure).
    pub fn monitored(&self) -> bool {
        match self {
            ResourceKind::Mysql(_) | ResourceKind::Vip { .. } => true,
            ResourceKind::Exec { probe, .. } => probe.is_some(),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub argv: Vec<String>,
    pub interval_ms: Millis,
    pub timeout_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MysqlControl {
    Unit(String),
    Commands {
        start: Vec<String>,
        stop: Vec<String>,
        pid_file: Option<PathBuf>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MysqlEndpoint {
    Socket(PathBuf),
    Tcp { host: String, port: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mysql {
    pub control: MysqlControl,
    /// Where the `SELECT 1` health probe connects.
    pub endpoint: MysqlEndpoint,
    pub user: String,
    /// File holding the probe user's password; `None` for socket authentication.
    pub password_file: Option<PathBuf>,
    pub probe_interval_ms: Millis,
    pub probe_timeout_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiebreaker {
    pub ping: Vec<IpAddr>,
    pub witness: Option<SocketAddr>,
    pub timeout_ms: Millis,
    /// Failed ping rounds in a row before an active node without its peer steps down.
    pub fall: u32,
    /// The witness lease (see `core/node/lease.rs`); meaningful only with `witness`.
    pub lease_ms: Millis,
    pub lease_guard_ms: Millis,
    pub max_clock_drift_ppm: u32,
}

impl Tiebreaker {
    pub fn configured(&self) -> bool {
        !self.ping.is_empty() || self.witness.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fencing {
    pub command: Vec<String>,
    pub required: bool,
    pub timeout_ms: Millis,
    pub retry_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failover {
    pub auto_failback: bool,
    /// Index into `Config::nodes`.
    pub preferred_node: Option<usize>,
    pub restart_limit: u32,
    pub restart_window_ms: Millis,
    pub handoff_timeout_ms: Millis,
}

impl Config {
    pub fn this(&self) -> &Node {
        &self.nodes[self.this_node]
    }

    pub fn peer(&self) -> &Node {
        &self.nodes[1 - self.this_node]
    }

    /// The same config seen from the other node (for tests and two-node simulations).
    pub fn for_peer(&self) -> Config {
        Config {
            this_node: 1 - self.this_node,
            ..self.clone()
        }
    }

    /// The plain numbers and flags the pure core runs on, from this node's point of view.
    pub fn core_params(&self) -> CoreParams {
        CoreParams {
            node_id: self.this().id,
            peer_id: self.peer().id,
            node_name: self.this().name.clone(),
            peer_name: self.peer().name.clone(),
            links: self.links.iter().map(|l| l.name.clone()).collect(),
            keepalive_ms: self.timing.keepalive_ms,
            warntime_ms: self.timing.warntime_ms,
            deadtime_ms: self.timing.deadtime_ms,
            initdead_ms: self.timing.initdead_ms,
            steps: self
                .resources
                .iter()
                .map(|r| StepParams {
                    name: r.name.clone(),
                    kind: r.kind.name().to_string(),
                    acquire_timeout_ms: r.start_timeout_ms,
                    release_timeout_ms: r.stop_timeout_ms,
                    monitored: r.kind.monitored(),
                })
                .collect(),
            restart_limit: self.failover.restart_limit,
            restart_window_ms: self.failover.restart_window_ms,
            handoff_timeout_ms: self.failover.handoff_timeout_ms,
            tiebreaker: !self.tiebreaker.ping.is_empty(),
            tiebreaker_fall: self.tiebreaker.fall,
            lease: self.tiebreaker.witness.map(|_| crate::core::LeaseParams {
                lease_ms: self.tiebreaker.lease_ms,
                max_drift_ppm: self.tiebreaker.max_clock_drift_ppm,
                guard_ms: self.tiebreaker.lease_guard_ms,
            }),
            fencing: self.fencing.as_ref().map(|f| FenceParams {
                timeout_ms: f.timeout_ms,
                required: f.required,
                retry_ms: f.retry_ms,
            }),
            disk_gate: self
                .resources
                .iter()
                .any(|r| matches!(r.kind, ResourceKind::Drbd { .. })),
            auto_failback: self.failover.auto_failback,
            // Without `preferred-node`, the first listed node wins a tie: exactly one node must.
            preferred: self.failover.preferred_node.unwrap_or(0) == self.this_node,
        }
    }
}

/// `[drill]`: how `twinbeat drill` writes its canary rows and what it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drill {
    /// Where the canary writes go: the VIP (as clients reach the service), or a socket.
    pub endpoint: MysqlEndpoint,
    pub user: String,
    pub password_file: Option<PathBuf>,
    /// Plain identifiers (letters, digits, `_`): they are written into SQL.
    pub database: String,
    pub table: String,
    /// A drill is refused when the last one recorded on this node is more recent than this.
    pub min_interval_ms: Millis,
    /// Limits for the verdict, per switch.
    pub max_service_gap_ms: Millis,
    pub max_write_gap_ms: Millis,
    /// One canary write every this often during a switch; each attempt times out after
    /// `write_timeout_ms` (connect or statement).
    pub write_interval_ms: Millis,
    pub write_timeout_ms: Millis,
    /// Replicas of the VIP the drill checks: replicating before the switch (a pre-check), and
    /// holding every acknowledged canary row within `max_replica_catchup_ms` after it.
    pub replicas: Vec<Replica>,
    pub max_replica_catchup_ms: Millis,
}

/// A replica the drill reads the canary from, over TCP as the drill user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
