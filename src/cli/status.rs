//! `twinbeat status [--json]`: what the daemon on this node knows, right now.
//!
//! Exit status: 0 answered, 1 daemon unreachable.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::client::{ask, Target};
use crate::core::{OutdateKind, PeerView, StepDirection};
use crate::shell::control::{DaemonStatus, Request, Response};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the full status as JSON (for monitoring and scripts).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    match ask(&args.target, Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status(st)) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", render(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Response::Error { message }) => {
            eprintln!("twinbeat status: {message}");
            Ok(ExitCode::from(1))
        }
        Ok(other) => {
            eprintln!("twinbeat status: unexpected answer: {other:?}");
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("twinbeat status: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn ms(v: u64) -> String {
    if v < 10_000 {
        format!("{v} ms")
    } else if v < 600_000 {
        format!("{:.1} s", v as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", v / 60_000, (v / 1000) % 60)
    }
}

/// The human view: one line per fact an operator looks for first.
pub fn render(st: &DaemonStatus) -> String {
    let c = &st.core;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "twinbeat {} (cluster {}), boot generation {}, up {}",
        st.node,
        st.cluster,
        st.generation,
        ms(st.uptime_ms)
    );
    let _ = writeln!(
        o,
        "  state      {}, term {}, for {}: {}",
        c.state,
        c.term,
        ms(st.uptime_ms.saturating_sub(c.since_ms)),
        c.cause
    );
    if let Some(r) = &c.failed_reason {
        let _ = writeln!(o, "  FAILED     {r}");
    }
    let p = &c.peer;
    let peer_state = match (p.view, p.state) {
        (PeerView::Unknown, _) => "never heard".to_string(),
        (v, Some(s)) => {
            format!(
                "{}, {s}, term {}, disk {:?}",
                match v {
                    PeerView::Alive => "alive",
                    PeerView::Late => "LATE",
                    PeerView::Dead => "DEAD (last known:",
                    PeerView::Unknown => "",
                },
                p.term.unwrap_or(0),
                p.disk.unwrap_or(crate::core::DiskState::Unknown)
            ) + if v == PeerView::Dead { ")" } else { "" }
        }
        (_, None) => "heard, state unknown".to_string(),
    };
    let heard = p
        .last_heard_ms_ago
        .map(|a| format!(", heard {} ago", ms(a)))
        .unwrap_or_default();
    let _ = writeln!(o, "  peer       {}: {peer_state}{heard}", p.name);
    for (i, l) in c.links.iter().enumerate() {
        let label = if i == 0 {
            "  links      "
        } else {
            "             "
        };
        let heard = l
            .last_heard_ms_ago
            .map(|a| format!("heard {} ago", ms(a)))
            .unwrap_or_else(|| "never heard".into());
        let _ = writeln!(
            o,
            "{label}{}: {}, {heard}, {} beats, {} late, {} rejected",
            l.name,
            if l.up { "up" } else { "DOWN" },
            l.beats,
            l.late,
            l.rejected
        );
    }
    let _ = writeln!(o, "  disk       {:?}", c.disk);
    if let Some(r) = &st.replication {
        let _ = writeln!(
            o,
            "  drbd       {}: {}connection {}, peer disk {}, replication {}",
            r.resource,
            if r.replicating() {
                ""
            } else {
                "NOT REPLICATING: "
            },
            r.connection.as_deref().unwrap_or("none"),
            crate::resources::drbd::disk_name(r.peer_disk),
            r.replication.as_deref().unwrap_or("none")
        );
    }
    if let Some(tb) = c.tiebreaker {
        let _ = if tb {
            writeln!(o, "  tiebreaker reachable")
        } else {
            writeln!(
                o,
                "  tiebreaker NOT reachable ({} failed round(s) in a row)",
                c.tiebreaker_fails
            )
        };
    }
    if let Some(w) = &st.witness {
        let holder = match w.holder {
            Some(0) => "nobody".to_string(),
            Some(id) if id == w.node_id => format!("{} (this node)", st.node),
            Some(id) => format!("node id {id}"),
            None => "unknown".to_string(),
        };
        let left = w
            .holder_remaining_ms
            .map(|m| format!(", {} left", ms(m)))
            .unwrap_or_default();
        let mine = match c.lease.as_ref().and_then(|l| l.valid_for_ms) {
            Some(v) => format!("; lease trusted here for {}", ms(v)),
            None => "; no lease here".to_string(),
        };
        let reach = if w.reachable {
            "reachable"
        } else {
            "NOT reachable"
        };
        let _ = writeln!(
            o,
            "  witness    {} {reach}: holder {holder}{left}{mine}{}",
            w.address,
            if w.counters.rejected() > 0 {
                format!(" ({} rejected datagrams)", w.counters.rejected())
            } else {
                String::new()
            }
        );
    }
    let res: Vec<String> = c
        .resources
        .iter()
        .map(|r| {
            let what = match (&r.running, r.held) {
                (Some(op), _) => op.clone(),
                (None, true) => "held".into(),
                (None, false) => "-".into(),
            };
            format!("{} ({}) {what}", r.name, r.kind)
        })
        .collect();
    let _ = writeln!(o, "  resources  {}", res.join(" · "));
    if !c.blockers.is_empty() {
        for (i, b) in c.blockers.iter().enumerate() {
            let label = if i == 0 {
                "  blocked    "
            } else {
                "             "
            };
            let _ = writeln!(o, "{label}{b}");
        }
    }
    if let Some(h) = &c.handoff {
        let _ = writeln!(o, "  handoff    {:?} (id {:#x})", h.kind, h.id);
    }
    if let Some(m) = &c.outdate {
        let what = match m.kind {
            OutdateKind::Request => "asking the peer to outdate its disk (DRBD fence-peer)",
            OutdateKind::Done => "told the peer: this disk is outdated",
            OutdateKind::Inconsistent => "told the peer: this disk is Inconsistent",
            OutdateKind::Refused => "told the peer: refused, this node may hold the service",
            OutdateKind::Failed => "told the peer: could not outdate this disk",
        };
        let _ = writeln!(o, "  outdate    {what} (id {:#x})", m.id);
    }
    let hb = &st.heartbeat;
    let rejected = hb.counters.rejected();
    let _ = writeln!(
        o,
        "  heartbeats sent {}, received {}, rejected {rejected}, from strangers {}; gaps ≤1.5×keepalive {}, ≤warntime {}, ≤deadtime {}, beyond {}; max gap {}; max loop lag {}",
        hb.sent,
        hb.received,
        hb.foreign_source,
        hb.gap_buckets[0],
        hb.gap_buckets[1],
        hb.gap_buckets[2],
        hb.gap_buckets[3],
        ms(hb.max_gap_ms),
        ms(hb.max_loop_lag_ms)
    );
    let _ = writeln!(
        o,
        "  counters   takeovers {}, restarts {}, split brains {}",
        c.takeovers, c.restarts, c.split_brains
    );
    if let Some(a) = &st.metrics_listen {
        let agent = st
            .agent_listen
            .as_ref()
            .map(|a| format!(", agent-check on {a}"))
            .unwrap_or_default();
        let _ = writeln!(o, "  metrics    http://{a}/metrics and /health{agent}");
    }
    if !c.transitions.is_empty() {
        let _ = writeln!(o, "  recent transitions (newest last):");
        for t in c.transitions.iter().rev().take(8).rev() {
            let steps: Vec<String> = t
                .steps
                .iter()
                .map(|s| {
                    let dir = match s.direction {
                        StepDirection::Acquire => "+",
                        StepDirection::Release => "-",
                    };
                    let err = s
                        .error
                        .as_ref()
                        .map(|e| format!(" FAILED: {e}"))
                        .unwrap_or_default();
                    format!("{dir}{} {}{err}", s.name, ms(s.elapsed_ms))
                })
                .collect();
            let total = t
                .total_ms
                .map(|v| format!(" in {}", ms(v)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "    {} ago  {} → {}{total}: {}",
                ms(st.uptime_ms.saturating_sub(t.at)),
                t.from,
                t.to,
                t.cause
            );
            if !steps.is_empty() {
                let _ = writeln!(o, "               {}", steps.join(", "));
            }
        }
    }
    if !st.history.is_empty() {
        let _ = writeln!(
            o,
            "  last failovers and drills (newest last; all: twinbeat history):"
        );
        for e in st.history.iter().rev().take(5).rev() {
            let _ = writeln!(o, "    {}", e.one_line());
        }
    }
    o
}
