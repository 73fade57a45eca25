//! The worker: a thread of its own that runs resource steps, probes, fencing and the
//! tie-breaker, so that nothing they do (slow commands, busy executors) can delay a heartbeat.
//! The driver loop sends `Job`s and receives `Report`s; the worker never decides anything.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::config;
use crate::core::{DiskState, OpId};
use crate::exec;
use crate::resources::{self, DiskReport, Resource, StepError};

pub enum Job {
    Acquire {
        op: OpId,
        step: usize,
    },
    Release {
        op: OpId,
        step: usize,
    },
    Cancel {
        op: OpId,
    },
    Fence {
        op: OpId,
        timeout: Duration,
    },
    /// Outdate the local DRBD disk (the peer asked; the core checked it is safe).
    Outdate {
        op: OpId,
    },
    ProbeAll,
    Announce,
}

/// Waits for the start-up probe's answer and keeps every other report that came first: the
/// disk-state watcher reports only changes, so its first reading (often ready before the probe)
/// must not be lost, or a node started on an UpToDate DRBD disk never sees it and never takes
/// over. None when the worker is gone.
pub async fn await_probe(
    reports: &mut mpsc::UnboundedReceiver<Report>,
) -> Option<(u32, Vec<Report>)> {
    let mut early = Vec::new();
    loop {
        match reports.recv().await? {
            Report::Probed { held } => return Some((held, early)),
            other => early.push(other),
        }
    }
}

#[derive(Debug)]
pub enum Report {
    Step {
        op: OpId,
        result: Result<(), String>,
        elapsed_ms: u64,
    },
    Fence {
        op: OpId,
        result: Result<(), String>,
    },
    Outdate {
        op: OpId,
        result: Result<(), String>,
    },
    Probed {
        held: u32,
    },
    Health {
        step: usize,
        ok: bool,
        detail: String,
    },
    Disk(DiskState),
    /// How the replicated disk's replication looks, sent when it changes.
    Replication(DiskReport),
    TieBreaker(bool),
}

/// What the driver tells the worker about which monitored steps to probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Monitor {
    /// Probe monitored steps for health (the node is active and nothing is running).
    pub active: bool,
}

pub struct Worker {
    pub jobs: mpsc::UnboundedSender<Job>,
    pub reports: mpsc::UnboundedReceiver<Report>,
    pub monitor: watch::Sender<Monitor>,
    pub thread: std::thread::JoinHandle<()>,
}

struct Shared {
    resources: Vec<Box<dyn Resource>>,
    monitored: Vec<(usize, Duration, Duration)>,
    fence: Option<Vec<String>>,
    ping: Vec<std::net::IpAddr>,
    ping_timeout: Duration,
    /// Bumped when a `drbdadm outdate` starts and after its result is reported: the disk
    /// watcher drops a read that overlapped one and reports the next read even if unchanged.
    outdate_epoch: AtomicU64,
}

/// Starts the worker thread with executors built from the config.
pub fn start(cfg: &config::Config, ctx: resources::Context) -> Result<Worker, StepError> {
    let mut built = Vec::with_capacity(cfg.resources.len());
    let mut monitored = Vec::new();
    for (i, r) in cfg.resources.iter().enumerate() {
        built.push(resources::build(r, &ctx)?);
        if let Some((interval, timeout)) = probe_timing(r) {
            monitored.push((i, interval, timeout));
        }
    }
    let shared = Arc::new(Shared {
        resources: built,
        monitored,
        fence: cfg.fencing.as_ref().map(|f| f.command.clone()),
        ping: cfg.tiebreaker.ping.clone(),
        ping_timeout: Duration::from_millis(cfg.tiebreaker.timeout_ms.max(100)),
        outdate_epoch: AtomicU64::new(0),
    });
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let (monitor, monitor_rx) = watch::channel(Monitor::default());
    let thread = std::thread::Builder::new()
        .name("twinbeat-worker".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the worker runtime");
                    return;
                }
            };
            rt.block_on(run(shared, jobs_rx, reports_tx, monitor_rx));
        })
        .map_err(|e| StepError::Failed(format!("cannot start the worker thread: {e}")))?;
    Ok(Worker {
        jobs,
        reports,
        monitor,
        thread,
    })
}

fn probe_timing(r: &config::Resource) -> Option<(Duration, Duration)> {
    use config::ResourceKind as K;
    let ms = Duration::from_millis;
    match &r.kind {
        K::Mysql(m) => Some((ms(m.probe_interval_ms), ms(m.probe_timeout_ms))),
        K::Vip { .. } => Some((ms(1_000), ms(1_000))),
        K::Exec { probe: Some(p), .. } => Some((ms(p.interval_ms), ms(p.timeout_ms))),
        _ => None,
    }
}

async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    reports: mpsc::UnboundedSender<Report>,
    monitor: watch::Receiver<Monitor>,
) {
    let mut running: BTreeMap<OpId, AbortHandle> = BTreeMap::new();
    spawn_background(&shared, &reports, monitor);
    while let Some(job) = jobs.recv().await {
        running.retain(|_, h| !h.is_finished());
        match job {
            Job::Acquire { op, step } | Job::Release { op, step } => {
                let acquire = matches!(job, Job::Acquire { .. });
                let s = shared.clone();
                let tx = reports.clone();
                let h = tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let result = match s.resources.get(step) {
                        Some(r) if acquire => r.acquire().await.map_err(|e| e.to_string()),
                        Some(r) => r.release().await.map_err(|e| e.to_string()),
                        None => Err(format!("no resource step {step}")),
                    };
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    let _ = tx.send(Report::Step {
                        op,
                        result,
                        elapsed_ms,
                    });
                });
                running.insert(op, h.abort_handle());
            }
            Job::Cancel { op } => {
                // Dropping the step's future kills any command it runs (exec kills the group).
                if let Some(h) = running.remove(&op) {
                    h.abort();
                }
            }
            Job::Fence { op, timeout } => {
                let argv = shared.fence.clone().unwrap_or_default();
                let tx = reports.clone();
                let h = tokio::spawn(async move {
                    let result = exec::run(&argv, timeout)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = tx.send(Report::Fence { op, result });
                });
                running.insert(op, h.abort_handle());
            }
            Job::Outdate { op } => {
                let s = shared.clone();
                let tx = reports.clone();
                shared.outdate_epoch.fetch_add(1, Ordering::SeqCst);
                let h = tokio::spawn(async move {
                    let mut result = Err("no drbd resource is configured on this node".to_string());
                    for r in &s.resources {
                        if let Some(f) = r.outdate() {
                            result = f.await.map_err(|e| e.to_string());
                            break;
                        }
                    }
                    let _ = tx.send(Report::Outdate { op, result });
                    // After the report: a disk read that starts from here on is queued behind
                    // it, so the core's "Outdated" after a successful outdate is corrected by
                    // what DRBD says if the outdate did not take (it ran on a connected disk).
                    s.outdate_epoch.fetch_add(1, Ordering::SeqCst);
                });
                running.insert(op, h.abort_handle());
            }
            Job::ProbeAll => {
                let s = shared.clone();
                let tx = reports.clone();
                tokio::spawn(async move {
                    let held = probe_all(&s).await;
                    let _ = tx.send(Report::Probed { held });
                });
            }
            Job::Announce => {
                let s = shared.clone();
                tokio::spawn(async move {
                    for r in &s.resources {
                        if let Some(f) = r.announce() {
                            if let Err(e) = f.await {
                                tracing::warn!(error = %e, "re-announce failed");
                            }
                        }
                    }
                });
            }
        }
    }
}

/// Probes every step; a probe that fails counts as "not in place" (logged), so a daemon never
/// adopts a resource it cannot see.
pub async fn probe_all_resources(resources: &[Box<dyn Resource>]) -> u32 {
    let mut held = 0u32;
    for (i, r) in resources.iter().enumerate().take(32) {
        match r.probe().await {
            Ok(true) => held |= 1 << i,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(step = i, error = %e, "probe failed; treating the resource as not in place")
            }
        }
    }
    held
}

async fn probe_all(s: &Shared) -> u32 {
    probe_all_resources(&s.resources).await
}

fn spawn_background(
    shared: &Arc<Shared>,
    reports: &mpsc::UnboundedSender<Report>,
    monitor: watch::Receiver<Monitor>,
) {
    // Health of monitored steps while active.
    for &(step, interval, timeout) in &shared.monitored {
        let s = shared.clone();
        let tx = reports.clone();
        let mon = monitor.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !mon.borrow().active {
                    continue;
                }
                let r = &s.resources[step];
                let (ok, detail) = match tokio::time::timeout(timeout, r.probe()).await {
                    Ok(Ok(true)) => (true, String::new()),
                    Ok(Ok(false)) => (false, "not in place".to_string()),
                    Ok(Err(e)) => (false, e.to_string()),
                    Err(_) => (
                        false,
                        format!("probe timed out after {} ms", timeout.as_millis()),
                    ),
                };
                // The monitor may have changed while probing (a release started): only report
                // a failure that was seen while the node was still meant to be active.
                if !ok
                    && mon.borrow().active
                    && tx.send(Report::Health { step, ok, detail }).is_err()
                {
                    return;
                }
            }
        });
    }
    // The replicated disk's state, for the core's promote gate.
    for r in 0..shared.resources.len() {
        if shared.resources[r].disk_state().is_none() {
            continue;
        }
        let s = shared.clone();
        let tx = reports.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1_000));
            let mut last = None;
            let mut last_view: Option<DiskReport> = None;
            loop {
                tick.tick().await;
                let Some(f) = s.resources[r].disk_state() else {
                    return;
                };
                let epoch = s.outdate_epoch.load(Ordering::SeqCst);
                let (d, view) = match f.await {
                    Ok(rep) => (rep.disk, Some(rep)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the DRBD disk state");
                        (DiskState::Unknown, None)
                    }
                };
                // The core changes its idea of the disk on an outdate's result; a read that
                // overlapped the outdate may predate it, and an unchanged read after it must
                // still be said once (only this watcher knows what DRBD really holds).
                if s.outdate_epoch.load(Ordering::SeqCst) != epoch {
                    continue;
                }
                if last != Some((d, epoch)) {
                    last = Some((d, epoch));
                    if tx.send(Report::Disk(d)).is_err() {
                        return;
                    }
                }
                if let Some(v) = view.filter(|v| last_view.as_ref() != Some(v)) {
                    last_view = Some(v.clone());
                    if tx.send(Report::Replication(v)).is_err() {
                        return;
                    }
                }
            }
        });
    }
    // The tie-breaker: any ping target answering is a pass. A round in which no ping could even
    // finish (killed at its time limit: this host is starved, e.g. by the database's crash
    // recovery) says nothing about the network and is not reported; the core counts failed
    // rounds in a row (`[tiebreaker] fall`) before it calls the tie-breaker lost.
    if !shared.ping.is_empty() {
        let s = shared.clone();
        let tx = reports.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1_000));
            let mut last = None;
            let mut starved = 0u32;
            loop {
                tick.tick().await;
                let pings = s.ping.iter().map(|ip| {
                    let wait = s.ping_timeout.as_secs().max(1).to_string();
                    let argv =
                        exec::argv(&["ping", "-n", "-q", "-c", "1", "-W", &wait, &ip.to_string()]);
                    let t = s.ping_timeout + Duration::from_secs(1);
                    async move {
                        match exec::output_quiet(&argv, t).await {
                            Ok(o) => Some(o.success()),
                            Err(exec::ExecError::Timeout { .. }) => None,
                            Err(_) => Some(false),
                        }
                    }
                });
                let answers = futures::future::join_all(pings).await;
                let ok = answers.contains(&Some(true));
                if !ok && answers.iter().all(Option::is_none) {
                    starved += 1;
                    // Single starved rounds are common on a busy host; say it from the third on.
                    if starved == 3 || (starved > 3 && starved.is_power_of_two()) {
                        tracing::warn!(rounds = starved, "tie-breaker: no ping finished in time (this host is starved); the round is not counted");
                    }
                    continue;
                }
                starved = 0;
                if last != Some(ok) {
                    last = Some(ok);
                    tracing::info!(reachable = ok, "tie-breaker ping targets");
                }
                if tx.send(Report::TieBreaker(ok)).is_err() {
                    return;
                }
            }
        });
    }
}
