//! `twinbeat drill [--and-back] [--json FILE]`: a planned switchover that measures the outage
//! and proves no acknowledged write was lost.
//!
//! Runs on either node: on the active node it hands the service to the peer (`standby`), on the
//! standby node it pulls it over (`takeover`); `--and-back` then moves it back the other way.
//! Around each switch a canary writer inserts one row every `write-interval-ms` through
//! `[drill] host` (the VIP: what clients see), on a kept connection that reconnects after an
//! error, like an application's pool. After each switch every acknowledged row must be readable
//! on the new primary.
//!
//! Pre-checks (any failure refuses, exit 3, nothing changed): the daemon answers; one node
//! active, the other standby; the peer heard on every link; both disks `UpToDate` (or
//! `NotReplicated` without DRBD); no handoff running; no drill recorded on this node within
//! `min-interval-ms`; the canary write and read work; every `[drill] replicas` entry
//! replicates the canary within `max-replica-catchup-ms`. Per switch the report has the
//! daemon's service gap, the canary's write gap, the VIP gap (TCP connects to the MySQL port
//! every 20 ms) and, per replica, the time until it replicated the first row the new primary
//! acknowledged (reconnection plus catch-up; it must also hold every acknowledged row). A switch that fails midway stops the
//! drill (no way back is attempted) and waits until a node is active again; if none is, it asks
//! this node to take over. Exit status: 0 pass, 1 fail, 3 refused.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use super::client::Target;
use crate::config::{self, Config, Drill, MysqlEndpoint, Replica};
use crate::core::{CommandOutcome, DiskState, Millis, NodeState, PeerView};
use crate::shell::control::{self, DaemonStatus, Request, Response};
use crate::shell::history::{self, DrillSummary, Entry, Kind};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// After the switchover, move the service back to where it was (a second measured switch).
    #[arg(long)]
    pub and_back: bool,
    /// Also write the full report as JSON to FILE (written for refusals too).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The node this runs on (default: the node named like this host, `uname -n`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Switch {
    /// `standby` (hand over from here) or `takeover` (pull here).
    pub command: String,
    pub from_node: String,
    pub to_node: String,
    /// The daemon's measured service gap (release start to peer active, or the reverse).
    pub service_gap_ms: Option<Millis>,
    /// Longest time between two acknowledged canary writes around the switch.
    pub write_gap_ms: Millis,
    /// Longest time the VIP accepted no TCP connection on the MySQL port (probed every
    /// 20 ms); `None` when the drill writes through a socket.
    pub vip_gap_ms: Option<Millis>,
    /// Each `[drill] replicas` entry after this switch.
    pub replicas: Vec<ReplicaFigure>,
    /// How long the command took end to end.
    pub command_ms: Millis,
    pub writes_acked: u64,
    pub writes_failed: u64,
    /// Sent, and no answer came: may or may not have been committed (not required to exist).
    pub writes_in_doubt: u64,
    /// Acknowledged canary rows not found on the new primary: lost writes.
    pub canary_missing: u64,
    pub outcome: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplicaFigure {
    pub replica: String,
    /// From the switch command's return until the replica held the first canary row the new
    /// primary acknowledged: its reconnection to the VIP plus catching up. `None`: not within
    /// `max-replica-catchup-ms`.
    pub reconnect_ms: Option<Millis>,
    /// Acknowledged canary rows of this switch still missing on the replica at the limit.
    pub missing: u64,
    /// Why the replica could not be read, or what its replication threads say when it lags.
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub max_service_gap_ms: Millis,
    pub max_write_gap_ms: Millis,
    pub max_replica_catchup_ms: Millis,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub time: String,
    pub node: String,
    pub peer: String,
    pub drill_id: String,
    /// `pass`, `fail` or `refused`.
    pub verdict: String,
    pub and_back: bool,
    pub prechecks: Vec<Check>,
    pub switches: Vec<Switch>,
    pub limits: Limits,
    /// Every reason for a fail or a refusal.
    pub problems: Vec<String>,
    /// Where the service was when the drill ended (from this node's daemon).
    pub service_on: Option<String>,
    pub duration_ms: Millis,
}

pub fn run(args: &DrillArgs) -> anyhow::Result<ExitCode> {
    let file = args
        .target
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let cfg = match Config::load(&file, args.node.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twinbeat drill: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let socket = args
        .target
        .socket
        .clone()
        .unwrap_or_else(|| cfg.control_socket.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(drill(&cfg, &socket, args.and_back));
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        let mut body = serde_json::to_vec_pretty(&report)?;
        body.push(b'\n');
        if let Err(e) = write_atomically(path, &body) {
            eprintln!("twinbeat drill: cannot write {}: {e}", path.display());
        }
    }
    if report.verdict != "refused" {
        let entry = history_entry(&report, &cfg);
        let req = Request::RecordDrill {
            entry: Box::new(entry),
        };
        match rt.block_on(control::request(&socket, req, Duration::from_secs(10))) {
            Ok(Response::Outcome(CommandOutcome::Done { .. })) => {}
            Ok(other) => {
                eprintln!("twinbeat drill: the daemon did not record the drill: {other:?}")
            }
            Err(e) => eprintln!("twinbeat drill: cannot record the drill in the history: {e}"),
        }
    }
    Ok(ExitCode::from(match report.verdict.as_str() {
        "pass" => 0,
        "refused" => 3,
        _ => 1,
    }))
}

fn write_atomically(path: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

fn history_entry(r: &Report, cfg: &Config) -> Entry {
    let first = r.switches.first();
    Entry {
        time: r.time.clone(),
        node: r.node.clone(),
        kind: Kind::Drill,
        from: None,
        to: None,
        cause: if r.problems.is_empty() {
            format!("drill {} passed", r.drill_id)
        } else {
            format!("drill {}: {}", r.drill_id, r.problems.join("; "))
        },
        steps: Vec::new(),
        total_ms: Some(r.duration_ms),
        term: 0,
        drill: Some(DrillSummary {
            unix_ms: drill_unix_ms(&r.drill_id),
            passed: r.verdict == "pass",
            from_node: first.map(|s| s.from_node.clone()).unwrap_or_default(),
            to_node: first
                .map(|s| s.to_node.clone())
                .unwrap_or_else(|| cfg.peer().name.clone()),
            and_back: r.and_back,
            service_gaps_ms: r.switches.iter().filter_map(|s| s.service_gap_ms).collect(),
            write_gaps_ms: r.switches.iter().map(|s| s.write_gap_ms).collect(),
            vip_gaps_ms: r.switches.iter().filter_map(|s| s.vip_gap_ms).collect(),
            replica_reconnect_ms: r
                .switches
                .iter()
                .filter_map(|s| s.replicas.iter().filter_map(|x| x.reconnect_ms).max())
                .collect(),
            canary_written: r.switches.iter().map(|s| s.writes_acked).sum(),
            canary_missing: r.switches.iter().map(|s| s.canary_missing).sum(),
            problems: r.problems.clone(),
        }),
    }
}

fn drill_unix_ms(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

async fn status(socket: &std::path::Path) -> Result<DaemonStatus, String> {
    match control::request(socket, Request::Status, Duration::from_secs(10)).await? {
        Response::Status(st) => Ok(*st),
        Response::Error { message } => Err(message),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

/// Who holds the service, as this node's daemon sees it.
fn service_on(st: &DaemonStatus) -> Option<String> {
    if st.core.state == NodeState::Active {
        Some(st.node.clone())
    } else if st.core.peer.view == PeerView::Alive && st.core.peer.state == Some(NodeState::Active)
    {
        Some(st.peer.clone())
    } else {
        None
    }
}

fn disk_ok(d: Option<DiskState>) -> bool {
    matches!(
        d,
        Some(DiskState::UpToDate) | Some(DiskState::NotReplicated)
    )
}

fn prechecks(st: &DaemonStatus, cfg: &Config, drill: &Drill, now_ms: u64) -> Vec<Check> {
    let c = &st.core;
    let mut out = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        out.push(Check {
            name: name.into(),
            ok,
            detail,
        })
    };
    let pair = (c.state, c.peer.state);
    check(
        "roles",
        matches!(
            pair,
            (NodeState::Active, Some(NodeState::Standby))
                | (NodeState::Standby, Some(NodeState::Active))
        ),
        format!(
            "{} is {}, {} is {}",
            st.node,
            c.state,
            st.peer,
            c.peer
                .state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into())
        ),
    );
    check(
        "peer alive",
        c.peer.view == PeerView::Alive,
        format!("peer {} is {:?}", st.peer, c.peer.view),
    );
    let down: Vec<&str> = c
        .links
        .iter()
        .filter(|l| !l.up)
        .map(|l| l.name.as_str())
        .collect();
    check(
        "every link up",
        down.is_empty(),
        if down.is_empty() {
            format!("{} link(s) up", c.links.len())
        } else {
            format!("link(s) down: {}", down.join(", "))
        },
    );
    check(
        "disks",
        disk_ok(Some(c.disk)) && disk_ok(c.peer.disk),
        format!(
            "{} {:?}, {} {:?} (UpToDate or NotReplicated needed)",
            st.node,
            c.disk,
            st.peer,
            c.peer.disk.unwrap_or(DiskState::Unknown)
        ),
    );
    check(
        "no handoff running",
        c.handoff.is_none() && !c.maintenance,
        match (&c.handoff, c.maintenance) {
            (_, true) => "this node is in maintenance".into(),
            (Some(h), _) => format!("a handoff is in progress ({:?})", h.kind),
            _ => "none".into(),
        },
    );
    if c.state == NodeState::Standby && !c.blockers.is_empty() {
        check("takeover possible here", false, c.blockers.join("; "));
    }
    // The interval: the newest drill in this node's history.
    let last = history::read(&cfg.state_dir).ok().and_then(|(all, _)| {
        all.into_iter()
            .rev()
            .find_map(|e| e.drill.map(|d| d.unix_ms))
    });
    match last {
        Some(t) if now_ms.saturating_sub(t) < drill.min_interval_ms => check(
            "minimum interval",
            false,
            format!(
                "the last drill ran {} s ago; `[drill] min-interval-ms` is {} s",
                now_ms.saturating_sub(t) / 1000,
                drill.min_interval_ms / 1000
            ),
        ),
        Some(t) => check(
            "minimum interval",
            true,
            format!("last drill {} s ago", now_ms.saturating_sub(t) / 1000),
        ),
        None => check("minimum interval", true, "no drill recorded".into()),
    }
    out
}

/// Connection options for the canary.
fn opts(d: &Drill) -> Result<mysql_async::Opts, String> {
    let pass = match &d.password_file {
        None => None,
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read the drill password file {}: {e}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
    };
    let b = mysql_async::OptsBuilder::default()
        .user(Some(d.user.clone()))
        .pass(pass)
        .prefer_socket(false)
        .stmt_cache_size(0)
        .wait_timeout(Some(60));
    let b = match &d.endpoint {
        MysqlEndpoint::Socket(p) => b.socket(Some(p.to_string_lossy().into_owned())),
        MysqlEndpoint::Tcp { host, port } => b.ip_or_hostname(host.clone()).tcp_port(*port),
    };
    Ok(b.into())
}

async fn connect(o: &mysql_async::Opts, within: Duration) -> Result<mysql_async::Conn, String> {
    match tokio::time::timeout(within, mysql_async::Conn::new(o.clone())).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {} ms", within.as_millis())),
    }
}

fn table(d: &Drill) -> String {
    format!("`{}`.`{}`", d.database, d.table)
}

/// Creates the canary table if missing, writes one row and reads it back.
async fn canary_ready(d: &Drill, o: &mysql_async::Opts, id: &str) -> Result<(), String> {
    let t = Duration::from_millis(d.write_timeout_ms.max(5_000));
    let mut c = connect(o, t).await?;
    let work = async {
        c.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{}`", d.database))
            .await?;
        c.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (drill_id VARCHAR(100) NOT NULL, seq BIGINT NOT NULL, \
             written_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \
             PRIMARY KEY (drill_id, seq)) ENGINE=InnoDB",
            table(d)
        ))
        .await?;
        // Old drills' rows are of no further use; keep the table small.
        c.query_drop(format!(
            "DELETE FROM {} WHERE written_at < NOW() - INTERVAL 90 DAY",
            table(d)
        ))
        .await?;
        c.query_drop(format!(
            "INSERT INTO {} (drill_id, seq) VALUES ('{id}', 0)",
            table(d)
        ))
        .await?;
        let n: Option<i64> = c
            .query_first(format!(
                "SELECT COUNT(*) FROM {} WHERE drill_id = '{id}' AND seq = 0",
                table(d)
            ))
            .await?;
        Ok::<_, mysql_async::Error>(n)
    };
    let r = tokio::time::timeout(t * 2, work).await;
    let _ = c.disconnect().await;
    match r {
        Ok(Ok(Some(1))) => Ok(()),
        Ok(Ok(n)) => Err(format!("the canary row read back {n:?} times")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the canary write did not finish in time".into()),
    }
}

#[derive(Default)]
struct WriterLog {
    /// (seq, ms since the writer started) of every acknowledged write.
    acked: Vec<(u64, Millis)>,
    failed: u64,
    in_doubt: u64,
    last_error: Option<String>,
}

/// Writes canary rows until `stop` is set; returns when it has.
async fn writer(
    d: Drill,
    o: mysql_async::Opts,
    id: String,
    first_seq: u64,
    log: Arc<Mutex<WriterLog>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    base: Instant,
) {
    let timeout = Duration::from_millis(d.write_timeout_ms);
    let mut conn: Option<mysql_async::Conn> = None;
    let mut seq = first_seq;
    let mut tick = tokio::time::interval(Duration::from_millis(d.write_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tick.tick().await;
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(&o, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    let mut l = log.lock().unwrap();
                    l.failed += 1;
                    l.last_error = Some(e);
                    continue;
                }
            },
        };
        let sql = format!(
            "INSERT INTO {} (drill_id, seq) VALUES ('{id}', {seq})",
            table(&d)
        );
        let r = tokio::time::timeout(timeout, c.query_drop(sql)).await;
        let mut l = log.lock().unwrap();
        match r {
            Ok(Ok(())) => {
                l.acked.push((seq, base.elapsed().as_millis() as Millis));
                conn = Some(c);
            }
            Ok(Err(e)) => {
                // A server error after sending (e.g. read-only, connection killed): the row
                // may exist or not. Reconnect for the next one.
                l.in_doubt += 1;
                l.last_error = Some(e.to_string());
            }
            Err(_) => {
                l.in_doubt += 1;
                l.last_error = Some(format!("no answer within {} ms", timeout.as_millis()));
            }
        }
        seq += 1;
    }
    if let Some(c) = conn {
        let _ = tokio::time::timeout(timeout, c.disconnect()).await;
    }
}

/// The acknowledged canary rows of `id` on whatever primary the endpoint reaches now.
async fn rows_present(d: &Drill, o: &mysql_async::Opts, id: &str) -> Result<BTreeSet<u64>, String> {
    let t = Duration::from_millis(d.write_timeout_ms.max(5_000));
    let mut c = connect(o, t).await?;
    let q = c.query::<u64, _>(format!(
        "SELECT seq FROM {} WHERE drill_id = '{id}'",
        table(d)
    ));
    let r = tokio::time::timeout(t, q).await;
    let _ = c.disconnect().await;
    match r {
        Ok(Ok(v)) => Ok(v.into_iter().collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the canary read did not finish in time".into()),
    }
}

async fn drill(cfg: &Config, socket: &std::path::Path, and_back: bool) -> Report {
    let started = Instant::now();
    let start_ms = unix_ms();
    let node = cfg.this().name.clone();
    let peer = cfg.peer().name.clone();
    let drill_id = format!("{node}-{start_ms}");
    let mut r = Report {
        time: history::rfc3339(SystemTime::now()),
        node: node.clone(),
        peer: peer.clone(),
        drill_id: drill_id.clone(),
        verdict: "refused".into(),
        and_back,
        prechecks: Vec::new(),
        switches: Vec::new(),
        limits: Limits {
            max_service_gap_ms: cfg.drill.as_ref().map_or(0, |d| d.max_service_gap_ms),
            max_write_gap_ms: cfg.drill.as_ref().map_or(0, |d| d.max_write_gap_ms),
            max_replica_catchup_ms: cfg.drill.as_ref().map_or(0, |d| d.max_replica_catchup_ms),
        },
        problems: Vec::new(),
        service_on: None,
        duration_ms: 0,
    };
    let finish = |mut r: Report, verdict: &str| {
        r.verdict = verdict.into();
        r.duration_ms = started.elapsed().as_millis() as Millis;
        r
    };
    let Some(d) = cfg.drill.clone() else {
        r.problems.push(format!(
            "{} has no [drill] section; add one (see etc/twinbeat.toml)",
            cfg.source.display()
        ));
        return finish(r, "refused");
    };
    let st = match status(socket).await {
        Ok(s) => s,
        Err(e) => {
            r.problems.push(format!("the daemon does not answer: {e}"));
            return finish(r, "refused");
        }
    };
    r.service_on = service_on(&st);
    r.prechecks = prechecks(&st, cfg, &d, start_ms);
    let o = match opts(&d) {
        Ok(o) => Some(o),
        Err(e) => {
            r.prechecks.push(Check {
                name: "mysql".into(),
                ok: false,
                detail: e,
            });
            None
        }
    };
    if let Some(o) = &o {
        let res = canary_ready(&d, o, &drill_id).await;
        r.prechecks.push(Check {
            name: "mysql".into(),
            ok: res.is_ok(),
            detail: match res {
                Ok(()) => format!("canary written and read back through {}", endpoint(&d)),
                Err(e) => format!("canary through {}: {e}", endpoint(&d)),
            },
        });
    }
    if let Some(o) = o.as_ref().filter(|_| r.prechecks.iter().all(|c| c.ok)) {
        for rep in &d.replicas {
            let ro = replica_opts(o, rep);
            let limit = Duration::from_millis(d.max_replica_catchup_ms);
            let res = replica_reaches(&d, &ro, &drill_id, 0, limit, Instant::now()).await;
            r.prechecks.push(Check {
                name: format!("replica {rep}"),
                ok: res.is_ok(),
                detail: match res {
                    Ok(ms) => format!("replicated the canary in {ms} ms"),
                    Err(e) => e,
                },
            });
        }
    }
    let failed: Vec<String> = r
        .prechecks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    if !failed.is_empty() {
        r.problems = failed;
        return finish(r, "refused");
    }
    let o = o.expect("checked above");

    let here_active = st.core.state == NodeState::Active;
    let mut plan = vec![if here_active { "standby" } else { "takeover" }];
    if and_back {
        plan.push(if here_active { "takeover" } else { "standby" });
    }
    let mut seq = 1;
    let handoff_budget =
        Duration::from_millis(cfg.failover.handoff_timeout_ms) + Duration::from_secs(30);
    for (i, command) in plan.iter().enumerate() {
        let (from_node, to_node) = if *command == "standby" {
            (node.clone(), peer.clone())
        } else {
            (peer.clone(), node.clone())
        };
        let mut sw = Switch {
            command: command.to_string(),
            from_node,
            to_node: to_node.clone(),
            ..Switch::default()
        };
        let log = Arc::new(Mutex::new(WriterLog::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let base = Instant::now();
        let probe = match &d.endpoint {
            MysqlEndpoint::Tcp { host, port } => Some(tokio::spawn(vip_probe(
                host.clone(),
                *port,
                stop.clone(),
                base,
            ))),
            MysqlEndpoint::Socket(_) => None,
        };
        let w = tokio::spawn(writer(
            d.clone(),
            o.clone(),
            drill_id.clone(),
            seq,
            log.clone(),
            stop.clone(),
            base,
        ));
        // A baseline: writes flow before the switch starts.
        let flowing = wait_until(Duration::from_secs(5), || {
            !log.lock().unwrap().acked.is_empty()
        })
        .await;
        let req = if *command == "standby" {
            Request::Standby
        } else {
            Request::Takeover
        };
        let outcome = if flowing {
            let t0 = Instant::now();
            let o = control::request(socket, req, handoff_budget).await;
            sw.command_ms = t0.elapsed().as_millis() as Millis;
            o
        } else {
            Err("canary writes did not flow before the switch".into())
        };
        let done = Instant::now();
        let done_at = done.duration_since(base).as_millis() as Millis;
        let ok = match outcome {
            Ok(Response::Outcome(CommandOutcome::Done { message, gap_ms })) => {
                sw.service_gap_ms = gap_ms;
                sw.outcome = message;
                true
            }
            Ok(Response::Outcome(CommandOutcome::Refused { reason })) => {
                sw.outcome = format!("refused: {reason}");
                false
            }
            Ok(Response::Outcome(CommandOutcome::Failed { reason })) => {
                sw.outcome = format!("failed: {reason}");
                false
            }
            Ok(other) => {
                sw.outcome = format!("unexpected answer: {other:?}");
                false
            }
            Err(e) => {
                sw.outcome = e;
                false
            }
        };
        // Writes must resume on the new primary: wait (bounded) for one acknowledged after the
        // command returned, so the gap covers the whole outage the client saw.
        let resume_limit = Duration::from_millis(d.max_write_gap_ms.max(10_000) * 2);
        let resumed = wait_until(resume_limit, || {
            log.lock()
                .unwrap()
                .acked
                .last()
                .is_some_and(|&(_, t)| t > done_at)
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = w.await;
        if let Some(p) = probe {
            let end = base.elapsed().as_millis() as Millis;
            sw.vip_gap_ms = p.await.ok().map(|ok| longest_gap(&ok, end));
        }
        let l = std::mem::take(&mut *log.lock().unwrap());
        seq += l.acked.len() as u64 + l.failed + l.in_doubt + 1;
        sw.writes_acked = l.acked.len() as u64;
        sw.writes_failed = l.failed;
        sw.writes_in_doubt = l.in_doubt;
        sw.write_gap_ms = l
            .acked
            .windows(2)
            .map(|p| p[1].1 - p[0].1)
            .max()
            .unwrap_or(0);
        if !resumed {
            let end = base.elapsed().as_millis() as Millis;
            let last = l.acked.last().map(|&(_, t)| t).unwrap_or(0);
            sw.write_gap_ms = sw.write_gap_ms.max(end - last);
            r.problems.push(format!(
                "switch {}: writes did not resume within {} s after the {command} ({})",
                i + 1,
                resume_limit.as_secs(),
                l.last_error.clone().unwrap_or_default()
            ));
        }
        // Every acknowledged row (this switch's and the pre-switch canary) on the new primary.
        let mut expected: BTreeSet<u64> = l.acked.iter().map(|&(s, _)| s).collect();
        expected.insert(0);
        match rows_present(&d, &o, &drill_id).await {
            Ok(present) => {
                sw.canary_missing = expected.difference(&present).count() as u64;
                if sw.canary_missing > 0 {
                    r.problems.push(format!(
                        "switch {}: {} acknowledged canary write(s) missing on {to_node}",
                        i + 1,
                        sw.canary_missing
                    ));
                }
            }
            Err(e) => r.problems.push(format!(
                "switch {}: cannot read the canary back: {e}",
                i + 1
            )),
        }
        // The replicas follow the VIP: each must replicate from the new primary, and hold every
        // acknowledged row, within the catch-up limit counted from the switch.
        let first_new = l.acked.iter().find(|&&(_, t)| t > done_at).map(|&(s, _)| s);
        for rep in &d.replicas {
            let ro = replica_opts(&o, rep);
            let limit = Duration::from_millis(d.max_replica_catchup_ms);
            let mut fig = ReplicaFigure {
                replica: rep.to_string(),
                reconnect_ms: None,
                missing: 0,
                detail: String::new(),
            };
            match first_new {
                None => fig.detail = "no canary row was acknowledged after the switch".into(),
                Some(target) => {
                    match replica_reaches(&d, &ro, &drill_id, target, limit, done).await {
                        Ok(ms) => fig.reconnect_ms = Some(ms),
                        Err(e) => fig.detail = e,
                    }
                }
            }
            let left = limit.saturating_sub(done.elapsed());
            match replica_missing(&d, &ro, &drill_id, &expected, left).await {
                Ok(n) => fig.missing = n,
                Err(e) if fig.detail.is_empty() => fig.detail = e,
                Err(_) => {}
            }
            if fig.reconnect_ms.is_none() || fig.missing > 0 {
                r.problems.push(format!(
                    "switch {}: replica {rep} {}{}",
                    i + 1,
                    if fig.missing > 0 {
                        format!(
                            "lacks {} acknowledged canary row(s) {} ms after the switch",
                            fig.missing, d.max_replica_catchup_ms
                        )
                    } else {
                        format!(
                            "did not replicate from the new primary within {} ms",
                            d.max_replica_catchup_ms
                        )
                    },
                    if fig.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", fig.detail)
                    }
                ));
            }
            sw.replicas.push(fig);
        }
        if let Some(g) = sw.service_gap_ms.filter(|&g| g > d.max_service_gap_ms) {
            r.problems.push(format!(
                "switch {}: service gap {g} ms over the limit {} ms",
                i + 1,
                d.max_service_gap_ms
            ));
        }
        if sw.write_gap_ms > d.max_write_gap_ms {
            r.problems.push(format!(
                "switch {}: write gap {} ms over the limit {} ms",
                i + 1,
                sw.write_gap_ms,
                d.max_write_gap_ms
            ));
        }
        r.switches.push(sw.clone());
        if !ok {
            r.problems.push(format!(
                "switch {} ({command}) did not complete: {}",
                i + 1,
                sw.outcome
            ));
            if i == 0 && sw.outcome.starts_with("refused") {
                // The daemon refused before changing anything: as good as a failed pre-check.
                r.service_on = status(socket).await.ok().and_then(|s| service_on(&s));
                return finish(r, "refused");
            }
            r.service_on = recover(socket).await;
            if r.service_on.is_none() {
                r.problems
                    .push("no node is active after the abort: the operator must act".into());
            }
            return finish(r, "fail");
        }
        if !r.problems.is_empty() {
            // Lost writes or a stuck client: leave the service where it is and let an operator
            // look rather than moving it again.
            break;
        }
    }
    r.service_on = status(socket).await.ok().and_then(|s| service_on(&s));
    let verdict = if r.problems.is_empty() {
        "pass"
    } else {
        "fail"
    };
    finish(r, verdict)
}

/// Longest stretch without a success, counting from the first success to `end`.
fn longest_gap(ok: &[Millis], end: Millis) -> Millis {
    let inner = ok.windows(2).map(|p| p[1] - p[0]).max().unwrap_or(0);
    let tail = ok.last().map_or(end, |&t| end.saturating_sub(t));
    inner.max(tail)
}

/// TCP connects to the VIP's MySQL port every 20 ms until `stop`; returns when each succeeded
/// (ms since `base`). Says whether the address was reachable with a listener, not whether the
/// server accepted writes: the canary measures that.
async fn vip_probe(
    host: String,
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    base: Instant,
) -> Vec<Millis> {
    let mut ok = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        tick.tick().await;
        let c = tokio::net::TcpStream::connect((host.as_str(), port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), c).await {
            ok.push(base.elapsed().as_millis() as Millis);
        }
    }
    ok
}

/// The drill's connection options pointed at a replica instead of the VIP.
fn replica_opts(o: &mysql_async::Opts, r: &Replica) -> mysql_async::Opts {
    mysql_async::OptsBuilder::from_opts(o.clone())
        .socket(None::<String>)
        .ip_or_hostname(r.host.clone())
        .tcp_port(r.port)
        .into()
}

/// Polls the replica until it holds canary row `seq` of drill `id` (rows apply in commit
/// order, so the earlier ones are there too); the answer is the time since `since`. Fails
/// after `limit`, saying what the replica's threads report.
async fn replica_reaches(
    d: &Drill,
    o: &mysql_async::Opts,
    id: &str,
    seq: u64,
    limit: Duration,
    since: Instant,
) -> Result<Millis, String> {
    let until = since + limit;
    let step = Duration::from_millis(d.write_timeout_ms.max(1_000));
    let mut conn: Option<mysql_async::Conn> = None;
    let mut last_err = String::new();
    while Instant::now() < until {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(o, step).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    last_err = format!("cannot connect: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let q = c.query_first::<i64, _>(format!(
            "SELECT COALESCE(MAX(seq), -1) FROM {} WHERE drill_id = '{id}'",
            table(d)
        ));
        match tokio::time::timeout(step, q).await {
            Ok(Ok(Some(max))) if max >= seq as i64 => {
                if let Some(c) = conn.take() {
                    let _ = c.disconnect().await;
                }
                return Ok(since.elapsed().as_millis() as Millis);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // A table not replicated yet reads as an error: keep polling.
                last_err = e.to_string();
                conn = None;
            }
            Err(_) => {
                last_err = "query timed out".into();
                conn = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let threads = match conn.as_mut() {
        Some(c) => replication_threads(c).await,
        None => None,
    };
    Err(format!(
        "canary row {seq} not replicated within {} ms{}{}",
        limit.as_millis(),
        threads.map(|t| format!("; {t}")).unwrap_or_default(),
        if last_err.is_empty() {
            String::new()
        } else {
            format!("; last error: {last_err}")
        }
    ))
}

/// `Slave_IO_Running`, `Slave_SQL_Running` and the last errors, when the drill user may read
/// them (REPLICA MONITOR); `None` otherwise.
async fn replication_threads(c: &mut mysql_async::Conn) -> Option<String> {
    let q = c.query_first::<mysql_async::Row, _>("SHOW SLAVE STATUS");
    let row = tokio::time::timeout(Duration::from_secs(2), q)
        .await
        .ok()?
        .ok()??;
    let get = |k: &str| -> String {
        row.get_opt::<String, _>(k)
            .and_then(|v| v.ok())
            .unwrap_or_default()
    };
    let mut s = format!(
        "IO thread {}, SQL thread {}",
        get("Slave_IO_Running"),
        get("Slave_SQL_Running")
    );
    for k in ["Last_IO_Error", "Last_SQL_Error"] {
        let e = get(k);
        if !e.is_empty() {
            s.push_str(&format!(", {k}: {e}"));
        }
    }
    Some(s)
}

/// How many of `expected` are not on the replica, waiting up to `limit` for them.
async fn replica_missing(
    d: &Drill,
    o: &mysql_async::Opts,
    id: &str,
    expected: &BTreeSet<u64>,
    limit: Duration,
) -> Result<u64, String> {
    let until = Instant::now() + limit;
    loop {
        let missing = match rows_present(d, o, id).await {
            Ok(present) => Ok(expected.difference(&present).count() as u64),
            Err(e) => Err(e),
        };
        match missing {
            Ok(0) => return Ok(0),
            other if Instant::now() >= until => return other,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn endpoint(d: &Drill) -> String {
    match &d.endpoint {
        MysqlEndpoint::Socket(p) => p.display().to_string(),
        MysqlEndpoint::Tcp { host, port } => format!("{host}:{port}"),
    }
}

async fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After a failed switch: wait for the daemons to settle the service somewhere (a receiver
/// that fails goes `failed` and the giver takes the service back); if after a minute nobody
/// holds it, ask this node to take over. Returns where the service is.
async fn recover(socket: &std::path::Path) -> Option<String> {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if let Ok(st) = status(socket).await {
            let busy = matches!(st.core.state, NodeState::Acquiring | NodeState::Releasing)
                || st.core.handoff.is_some();
            if let Some(on) = service_on(&st) {
                if !busy {
                    return Some(on);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = control::request(socket, Request::Takeover, Duration::from_secs(300)).await;
    status(socket).await.ok().and_then(|s| service_on(&s))
}

/// The terminal report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "twinbeat drill {} on {} ({}): {}",
        r.drill_id,
        r.node,
        r.time,
        r.verdict.to_uppercase()
    );
    let width = r
        .prechecks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(22);
    for c in &r.prechecks {
        let _ = writeln!(
            o,
            "  check  {:<width$} {}  {}",
            c.name,
            if c.ok { "ok  " } else { "FAIL" },
            c.detail
        );
    }
    for (i, s) in r.switches.iter().enumerate() {
        let _ = writeln!(
            o,
            "  switch {} {} {} -> {}: {}",
            i + 1,
            s.command,
            s.from_node,
            s.to_node,
            s.outcome
        );
        let _ = writeln!(
            o,
            "           service gap {} (limit {} ms), write gap {} ms (limit {} ms), command {} ms",
            s.service_gap_ms
                .map(|g| format!("{g} ms"))
                .unwrap_or_else(|| "-".into()),
            r.limits.max_service_gap_ms,
            s.write_gap_ms,
            r.limits.max_write_gap_ms,
            s.command_ms
        );
        if let Some(g) = s.vip_gap_ms {
            let _ = writeln!(
                o,
                "           VIP gap {g} ms (no TCP connection to the MySQL port)"
            );
        }
        let _ = writeln!(
            o,
            "           canary writes acked {}, failed {}, in doubt {}, missing on {} {}",
            s.writes_acked, s.writes_failed, s.writes_in_doubt, s.to_node, s.canary_missing
        );
        for x in &s.replicas {
            let _ = writeln!(
                o,
                "           replica {}: {} (limit {} ms), missing {}{}",
                x.replica,
                x.reconnect_ms
                    .map(|ms| format!("replicating from the new primary after {ms} ms"))
                    .unwrap_or_else(|| "NOT replicating from the new primary".into()),
                r.limits.max_replica_catchup_ms,
                x.missing,
                if x.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", x.detail)
                }
            );
        }
    }
    for p in &r.problems {
        let _ = writeln!(o, "  problem {p}");
    }
    let _ = writeln!(
        o,
        "  service on {}; {} ms in all",
        r.service_on.as_deref().unwrap_or("NO NODE"),
        r.duration_ms
    );
    o
}
