//! `twinbeat check [FILE] [--node NAME]`: validate a config as the daemon would, then ask DRBD
//! (`drbdadm dump`, when drbdadm is installed) whether it can honour the config's timings and
//! fencing (`check_drbd`): those findings are warnings.
//!
//! Exit status: 0 valid (warnings may be printed), 1 invalid (every problem on stderr),
//! 2 usage error (from clap).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::check_drbd;
use crate::config::{self, Config, ConfigError, ResourceKind};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    #[arg(default_value = config::DEFAULT_PATH)]
    pub file: PathBuf,
    /// Check as this node (default: the node named like this host, `uname -n`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut err = std::io::stderr().lock();
    match Config::load(&args.file, args.node.as_deref()) {
        Ok(config) => {
            let drbd = drbd_report(&config);
            let mut warnings = config.warnings.clone();
            warnings.extend(drbd.warnings);
            for w in &warnings {
                writeln!(err, "{w}")?;
            }
            print!("{}", summary(&config));
            for l in &drbd.lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid { path, diagnostics }) => {
            for d in &diagnostics {
                writeln!(err, "{d}")?;
            }
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            writeln!(err, "{}: {errors} error(s); not valid", path.display())?;
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            writeln!(err, "twinbeat check: {e}")?;
            Ok(ExitCode::from(1))
        }
    }
}

/// Asks DRBD (through `drbdadm dump`) about every drbd resource of the config.
fn drbd_report(config: &Config) -> check_drbd::DrbdReport {
    let text = std::fs::read_to_string(&config.source).unwrap_or_default();
    let drbdadm = check_drbd::find_drbdadm();
    let dumps: Vec<_> = config
        .resources
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.kind {
            ResourceKind::Drbd { resource } => {
                let dump = match &drbdadm {
                    Some(path) => check_drbd::dump(path, resource),
                    None => check_drbd::Dump::NoDrbdadm,
                };
                let (at, path) = check_drbd::locate(&text, i);
                Some(check_drbd::ResourceDump {
                    index: i,
                    at,
                    path,
                    dump,
                })
            }
            _ => None,
        })
        .collect();
    check_drbd::report(config, &dumps)
}

/// A few lines an operator can eyeball: is this the cluster, the order and the timing I meant?
pub fn summary(c: &Config) -> String {
    let mut s = String::new();
    let node = |i: usize| {
        let n = &c.nodes[i];
        let me = if i == c.this_node { " (this node)" } else { "" };
        format!("{} id {}{me}", n.name, n.id)
    };
    s += &format!("{}: valid\n", c.source.display());
    s += &format!("cluster:   {} (id {})\n", c.cluster.name, c.cluster.id);
    s += &format!("nodes:     {}, {}\n", node(0), node(1));
    for l in &c.links {
        s += &format!(
            "link:      {} on {}: {} <-> {}\n",
            l.name,
            l.interface,
            l.endpoint(0),
            l.endpoint(1)
        );
    }
    let t = &c.timing;
    s += &format!(
        "timing:    keepalive {} ms, warntime {} ms, deadtime {} ms, initdead {} ms\n",
        t.keepalive_ms, t.warntime_ms, t.deadtime_ms, t.initdead_ms
    );
    let order: Vec<String> = c
        .resources
        .iter()
        .map(|r| match &r.kind {
            ResourceKind::Vip {
                address, prefix, ..
            } => format!("{} (vip {address}/{prefix})", r.name),
            k => format!("{} ({})", r.name, k.name()),
        })
        .collect();
    s += &format!("resources: {}\n", order.join(" -> "));
    s += &format!(
        "auth:      {} with key {} of {:?}\n",
        c.auth.algorithm.as_str(),
        c.auth.send_key,
        c.auth.accept.iter().map(|k| k.id).collect::<Vec<_>>()
    );
    let tb = &c.tiebreaker;
    s += &format!(
        "safety:    tie-breaker {}, fencing {}, auto-failback {}\n",
        if tb.configured() { "on" } else { "off" },
        match &c.fencing {
            Some(f) if f.required => "required",
            Some(_) => "best effort",
            None => "off",
        },
        if c.failover.auto_failback {
            "on"
        } else {
            "off"
        }
    );
    s
}
