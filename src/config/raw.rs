//! Raw serde types: the TOML file exactly as written, with the span of every value.
//!
//! Owns: key names (kebab-case), TOML value types, and which keys each resource kind accepts.
//! Must not touch: defaults, ranges, cross-field rules, the file system (all in `validate`).
//!
//! Every field is an `Option`, even required ones: serde then never stops at a "missing field",
//! so the recovery loop in `parse` can always drop an offending key and go on, and `validate`
//! reports a missing key once, with its own fix.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    pub cluster: S<RawCluster>,
    pub node: Option<Vec<Spanned<RawNode>>>,
    pub link: Option<Vec<Spanned<RawLink>>>,
    pub timing: S<RawTiming>,
    pub auth: S<RawAuth>,
    pub resource: Option<Vec<Spanned<RawResource>>>,
    pub tiebreaker: S<RawTiebreaker>,
    pub fencing: S<RawFencing>,
    pub failover: S<RawFailover>,
    pub daemon: S<RawDaemon>,
    pub drill: S<RawDrill>,
    pub metrics: S<RawMetrics>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCluster {
    pub name: S<String>,
    pub id: S<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawNode {
    pub name: S<String>,
    pub id: S<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLink {
    pub name: S<String>,
    pub interface: S<String>,
    pub port: S<u16>,
    /// Node name -> that node's address on this link. Keys stay spanned so an unknown node
    /// name is reported at the name.
    pub address: S<BTreeMap<Spanned<String>, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTiming {
    pub keepalive_ms: S<u64>,
    pub warntime_ms: S<u64>,
    pub deadtime_ms: S<u64>,
    pub initdead_ms: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAuth {
    pub algorithm: S<String>,
    pub key_file: S<String>,
    pub keys: S<Vec<Spanned<u8>>>,
    pub send_key: S<u8>,
}

/// One `[[resource]]`. Flat on purpose: serde's tagged enums buffer their content and lose
/// spans, and a flat struct lets `validate` say "key X does not apply to kind Y" instead of a
/// bare "unknown field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawResource {
    pub name: S<String>,
    pub kind: S<String>,
    pub start_timeout_ms: S<u64>,
    pub stop_timeout_ms: S<u64>,
    // drbd
    pub drbd_resource: S<String>,
    // filesystem
    pub device: S<String>,
    pub directory: S<String>,
    pub fstype: S<String>,
    pub options: S<String>,
    // mysql, systemd
    pub unit: S<String>,
    // mysql, exec
    pub start: S<Vec<String>>,
    pub stop: S<Vec<String>>,
    pub pid_file: S<String>,
    pub socket: S<String>,
    pub host: S<String>,
    pub port: S<u16>,
    pub user: S<String>,
    pub password_file: S<String>,
    pub probe_interval_ms: S<u64>,
    pub probe_timeout_ms: S<u64>,
    // exec
    pub probe: S<Vec<String>>,
    // vip
    pub address: S<String>,
    pub interface: S<String>,
    pub label: S<String>,
    pub garp_refresh_ms: S<u64>,
}

/// Keys every resource accepts, whatever its kind.
pub const COMMON_RESOURCE_KEYS: &[&str] = &["name", "kind", "start-timeout-ms", "stop-timeout-ms"];

pub const RESOURCE_KINDS: &[&str] = &["drbd", "filesystem", "mysql", "vip", "exec", "systemd"];

/// Keys a resource of `kind` accepts besides the common ones; `None` for an unknown kind.
pub fn kind_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "drbd" => &["drbd-resource"],
        "filesystem" => &["device", "directory", "fstype", "options"],
        "mysql" => &[
            "unit",
            "start",
            "stop",
            "pid-file",
            "socket",
            "host",
            "port",
            "user",
            "password-file",
            "probe-interval-ms",
            "probe-timeout-ms",
        ],
        "vip" => &["address", "interface", "label", "garp-refresh-ms"],
        "exec" => &[
            "start",
            "stop",
            "probe",
            "probe-interval-ms",
            "probe-timeout-ms",
        ],
        "systemd" => &["unit"],
        _ => return None,
    })
}

/// All keys a resource of `kind` accepts, common ones first.
pub fn resource_keys(kind: &str) -> Option<Vec<&'static str>> {
    let own = kind_keys(kind)?;
    Some(COMMON_RESOURCE_KEYS.iter().chain(own).copied().collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTiebreaker {
    pub ping: S<Vec<Spanned<String>>>,
    pub witness: S<String>,
    pub timeout_ms: S<u64>,
    pub fall: S<u64>,
    pub lease_ms: S<u64>,
    pub lease_guard_ms: S<u64>,
    pub max_clock_drift_ppm: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFencing {
    pub command: S<Vec<String>>,
    pub required: S<bool>,
    pub timeout_ms: S<u64>,
    pub retry_ms: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFailover {
    pub auto_failback: S<bool>,
    pub preferred_node: S<String>,
    pub restart_limit: S<u32>,
    pub restart_window_ms: S<u64>,
    pub handoff_timeout_ms: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDaemon {
    pub state_dir: S<String>,
    pub control_socket: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDrill {
    pub host: S<String>,
    pub port: S<u16>,
    pub socket: S<String>,
    pub user: S<String>,
    pub password_file: S<String>,
    pub database: S<String>,
    pub table: S<String>,
    pub min_interval_ms: S<u64>,
    pub max_service_gap_ms: S<u64>,
    pub max_write_gap_ms: S<u64>,
    pub write_interval_ms: S<u64>,
    pub write_timeout_ms: S<u64>,
    pub replicas: S<Vec<Spanned<String>>>,
    pub max_replica_catchup_ms: S<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMetrics {
    pub listen: S<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub agent_listen: S<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub max_connections: S<u32>,
}
