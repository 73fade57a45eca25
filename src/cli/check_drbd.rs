//! `twinbeat check`'s look at DRBD itself: can the DRBD resource honour twinbeat's timings, and
//! does anything stop a split brain when every heartbeat link fails?
//!
//! Reads the resource's effective settings with `drbdadm dump RES` (the configuration as
//! drbdadm resolved it, includes and `common` merged). Everything found here is a warning: a
//! config that works but may not do what the operator expects must not fail `check`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, Diagnostic, ResourceKind, Severity};
use crate::exec;
use crate::resources::drbd::conf::{self, ResourceSettings};

/// What DRBD said about one resource: its settings, or why they could not be read.
pub enum Dump {
    Settings(ResourceSettings),
    /// drbdadm is not installed here: nothing about DRBD was checked.
    NoDrbdadm,
    Unreadable(String),
}

/// One drbd resource of the config and what DRBD said about it.
pub struct ResourceDump {
    /// Its index in `[[resource]]`.
    pub index: usize,
    /// 1-based (line, column) in the config file, and the key path to name in warnings.
    pub at: (usize, usize),
    pub path: String,
    pub dump: Dump,
}

/// The outcome for the operator: warnings (diagnostics) and one summary line per resource.
pub struct DrbdReport {
    pub warnings: Vec<Diagnostic>,
    pub lines: Vec<String>,
}

/// `drbdadm` as `PATH` finds it, the way the daemon would run it.
pub fn find_drbdadm() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("drbdadm"))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `drbdadm dump RES` and extracts the settings.
pub fn dump(drbdadm: &Path, res: &str) -> Dump {
    let argv = vec![
        drbdadm.display().to_string(),
        "dump".to_string(),
        res.to_string(),
    ];
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Dump::Unreadable(format!("cannot start a runtime: {e}")),
    };
    let out = rt.block_on(exec::output_quiet(&argv, Duration::from_secs(10)));
    let out = match out {
        Ok(o) if o.success() => o,
        Ok(o) => {
            return Dump::Unreadable(format!(
                "`{}` failed: {}",
                exec::show(&argv),
                exec::failed(&argv, o)
            ))
        }
        Err(e) => return Dump::Unreadable(e.to_string()),
    };
    settings_from_dump(&out.stdout, res)
}

/// The pure half of `dump`, for tests.
pub fn settings_from_dump(text: &str, res: &str) -> Dump {
    match conf::parse(text) {
        Err(e) => Dump::Unreadable(format!("cannot parse `drbdadm dump {res}`: {e}")),
        Ok(items) => match conf::resource_settings(&items, res) {
            Ok(s) => Dump::Settings(s),
            Err(e) => Dump::Unreadable(format!("`drbdadm dump {res}`: {e}")),
        },
    }
}

fn seconds(ms: u64) -> String {
    if ms % 1_000 == 0 {
        format!("{} s", ms / 1_000)
    } else {
        format!("{:.1} s", ms as f64 / 1_000.0)
    }
}

/// The warnings for `config`, given what DRBD said about each drbd resource.
pub fn report(config: &Config, dumps: &[ResourceDump]) -> DrbdReport {
    let mut warnings = Vec::new();
    let mut lines = Vec::new();
    let deadtime = config.timing.deadtime_ms;
    let warn = |at: (usize, usize), path: String, message: String, fix: String| Diagnostic {
        severity: Severity::Warning,
        file: config.source.clone(),
        line: at.0,
        col: at.1,
        path,
        message,
        fix,
    };
    let split_guard = config.tiebreaker.configured() || config.fencing.is_some();
    for d in dumps {
        let (i, at, path, dump) = (d.index, d.at, d.path.clone(), &d.dump);
        let ResourceKind::Drbd { resource: res } = &config.resources[i].kind else {
            continue;
        };
        let s = match dump {
            Dump::NoDrbdadm => {
                lines.push(format!(
                    "drbd:      {res}: not checked: drbdadm is not installed here (run `twinbeat check` on the node, where drbd-utils is)"
                ));
                if !split_guard {
                    warnings.push(warn(
                        at,
                        path.clone(),
                        "no tie-breaker and no [fencing]; whether DRBD fences through twinbeat could not be checked (no drbdadm here)".into(),
                        split_fix(res),
                    ));
                }
                continue;
            }
            Dump::Unreadable(why) => {
                lines.push(format!("drbd:      {res}: not checked: {why}"));
                warnings.push(warn(
                    at,
                    path.clone(),
                    format!("cannot read DRBD's settings for {res}: {why}"),
                    format!("check that /etc/drbd.d defines `resource {res}` for this host (`drbdadm dump {res}`)"),
                ));
                continue;
            }
            Dump::Settings(s) => s,
        };
        let detect = s.detection_ms();
        let shown = |v: conf::Value, unit: &str| {
            format!("{}{unit}{}", v.value, if v.set { "" } else { " (default)" })
        };
        lines.push(format!(
            "drbd:      {res}: notices a dead peer within {} (ping-int {}, ping-timeout {}, timeout {}); fencing {}, fence-peer {}",
            seconds(detect),
            shown(s.ping_int_s, " s"),
            shown(s.ping_timeout_ds, "/10 s"),
            shown(s.timeout_ds, "/10 s"),
            s.fencing.as_deref().unwrap_or("dont-care (default)"),
            s.fence_peer.as_deref().unwrap_or("none"),
        ));
        if detect > deadtime {
            warnings.push(warn(
                at,
                path.clone(),
                format!(
                    "DRBD may take up to {} to notice a dead peer (ping-int {} s + ping-timeout {}/10 s, or timeout {}/10 s with writes in flight), longer than deadtime {deadtime} ms: until then the survivor's `drbdadm primary` is refused because DRBD still sees the peer as Primary, and the takeover waits or fails",
                    seconds(detect),
                    s.ping_int_s.value,
                    s.ping_timeout_ds.value,
                    s.timeout_ds.value
                ),
                format!(
                    "in resource {res}'s net section set e.g. `ping-int 1; ping-timeout 5; timeout 5;` (1.9 s measured with real DRBD 8.4), or raise timing.deadtime-ms above {detect}"
                ),
            ));
        }
        if s.fencing_on() && !s.handler_is_twinbeat() {
            let handler = match &s.fence_peer {
                Some(h) => format!("the fence-peer handler is `{h}`, not twinbeat"),
                None => "there is no fence-peer handler, so DRBD refuses every promote while it cannot see the peer".into(),
            };
            warnings.push(warn(
                at,
                path.clone(),
                format!(
                    "DRBD resource {res} has `fencing {}` but {handler}",
                    s.fencing.as_deref().unwrap_or("")
                ),
                format!("add `handlers {{ fence-peer \"/usr/sbin/twinbeat fence-peer\"; }}` to resource {res}"),
            ));
        }
        if s.handler_is_twinbeat() && !s.fencing_on() {
            warnings.push(warn(
                at,
                path.clone(),
                format!("DRBD resource {res} names twinbeat as its fence-peer handler, but its fencing policy is {}, so DRBD never calls it", s.fencing.as_deref().unwrap_or("dont-care (default)")),
                format!("add `disk {{ fencing resource-only; }}` to resource {res}"),
            ));
        }
        if !split_guard && !s.fences_through_twinbeat() {
            warnings.push(warn(
                at,
                path,
                format!("no tie-breaker, no [fencing] and no DRBD fencing for {res}: if every heartbeat link fails, both nodes promote and the data splits"),
                split_fix(res),
            ));
        }
    }
    DrbdReport { warnings, lines }
}

fn split_fix(res: &str) -> String {
    format!(
        "add a [tiebreaker] (ping targets or a witness), a [fencing] command, or DRBD fencing in resource {res}: `disk {{ fencing resource-only; }} handlers {{ fence-peer \"/usr/sbin/twinbeat fence-peer\"; }}`"
    )
}

/// Where `resource[index]`'s `drbd-resource` key (else the table) is in the config text,
/// 1-based, and the key path to name.
pub fn locate(text: &str, index: usize) -> ((usize, usize), String) {
    match crate::config::locate_resource_key(text, index, "drbd-resource") {
        Some((at, true)) => (at, format!("resource[{index}].drbd-resource")),
        Some((at, false)) => (at, format!("resource[{index}]")),
        None => ((1, 1), format!("resource[{index}]")),
    }
}
