//! The imperative shell around the core: one driver loop (tokio, current thread) that feeds the
//! core heartbeats, timer expiries, step results and operator commands, and carries out its
//! actions. Everything slow runs on the worker thread (`worker`), so a busy step can never
//! delay a heartbeat.
//!
//! Owns: sockets, the clock, the state dir, signals, systemd notification, logging of the core's
//! decisions. Must not decide: every "what now" question goes to `core::Node`.

pub mod control;
pub mod history;
pub mod observe;
mod persist;
pub mod state;
pub mod witness_client;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{self, Config};
use crate::core::{
    Action, Command, CommandOutcome, CoreParams, Input, Millis, Node, Severity, Transition,
};
use crate::net::heartbeat::Links;
use crate::proto::{self, Keyring, Receiver, Sender};
use crate::resources;

use control::{DaemonStatus, HeartbeatStats, Incoming, Request, Response};
use worker::{Job, Monitor, Report};

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Heartbeat(#[from] crate::net::heartbeat::HeartbeatError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("cannot set up resource {name}: {source}")]
    Resource {
        name: String,
        source: resources::StepError,
    },
    #[error("cannot use the heartbeat keys: {0}")]
    Keys(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the worker thread stopped unexpectedly; see the log above")]
    WorkerGone,
}

/// Options of `twinbeat run` that are not in the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Real-time round-robin priority for the driver thread (heartbeats), like Heartbeat's
    /// `realtime on` and Corosync's default: a loaded host must not starve heartbeats.
    pub realtime: Option<i32>,
    /// mlockall(): heartbeat code never waits for a page-in under memory pressure.
    pub lock_memory: bool,
}

/// Runs the daemon until SIGTERM/SIGINT has released everything.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<(), ShellError> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let state = state::StateDir::open_and_boot(&cfg.state_dir)?;
    let state_dir_path = cfg.state_dir.clone();
    let persisted = state.get();
    tracing::info!(
        node = %cfg.this().name,
        peer = %cfg.peer().name,
        generation = persisted.generation,
        term = persisted.term,
        "starting"
    );

    let algorithm = match cfg.auth.algorithm {
        config::Algorithm::HmacSha256 => proto::Algorithm::HmacSha256,
        config::Algorithm::HmacSha1 => proto::Algorithm::HmacSha1,
    };
    let keyring = Keyring::new(
        algorithm,
        cfg.auth.accept.iter().map(|k| (k.id, k.secret.clone())),
    )
    .map_err(|e| ShellError::Keys(e.to_string()))?;
    let cluster_id = u32::from(cfg.cluster.id);
    let mut sender = Sender::new(
        keyring.clone(),
        cfg.auth.send_key,
        cluster_id,
        cfg.this().id,
        persisted.generation,
    )
    .map_err(|e| ShellError::Keys(e.to_string()))?;
    let keyring_for_witness = keyring.clone();
    let mut receiver = Receiver::new(
        keyring,
        cluster_id,
        cfg.this().id,
        cfg.peer().id,
        cfg.links.len(),
    );

    let mut w = worker::start(&cfg, resources::Context::system()).map_err(|source| {
        ShellError::Resource {
            name: "(building executors)".into(),
            source,
        }
    })?;
    // Realtime only for this (driver) thread: the worker was spawned first and keeps normal
    // priority, so a busy step cannot hog the CPU at realtime priority.
    apply_priority(&opts);

    // Probe before acting: a restarted daemon adopts a running service instead of restarting it.
    w.jobs
        .send(Job::ProbeAll)
        .map_err(|_| ShellError::WorkerGone)?;
    let (held, early) = worker::await_probe(&mut w.reports)
        .await
        .ok_or(ShellError::WorkerGone)?;
    tracing::info!(held = format!("{held:#x}"), "probed resources");

    let links = Links::open(&cfg)?;
    let listener = control::bind(&cfg.control_socket).await?;
    let (control_tx, mut control_rx) = mpsc::unbounded_channel::<Incoming>();
    let recorder = observe::Recorder::default();
    if let Some(o) = &cfg.metrics {
        let snapshots = observe::Snapshots::new(control_tx.clone());
        observe::start(o, &cfg.this().name, snapshots, recorder.clone());
    }
    tokio::spawn(control::serve(listener, control_tx));

    let base = Instant::now();
    let now = || base.elapsed().as_millis() as Millis;
    let params: CoreParams = cfg.core_params();
    let (mut lease_grants, lease_wants, witness_status) = match cfg.tiebreaker.witness {
        Some(addr) => {
            let c = witness_client::start(witness_client::Setup {
                witness: addr,
                keyring: keyring_for_witness.clone(),
                key_id: cfg.auth.send_key,
                cluster_id,
                node_id: cfg.this().id,
                generation: persisted.generation,
                lease_ms: cfg.tiebreaker.lease_ms,
                base,
            })
            .await
            .map_err(|e| {
                ShellError::Unsupported(format!(
                    "cannot open a UDP socket for the witness {addr}: {e}"
                ))
            })?;
            tracing::info!(witness = %addr, lease_ms = cfg.tiebreaker.lease_ms, "witness lease client started");
            (Some(c.grants), Some(c.wants), Some(c.status))
        }
        None => (None, None, None),
    };
    let mut node = Node::new(
        params.clone(),
        persisted.term,
        held,
        now(),
        persisted.generation,
    );
    let mut d = Driver {
        generation: persisted.generation,
        cfg,
        params,
        started: base,
        hb: HeartbeatStats::default(),
        last_fresh: None,
        pending: BTreeMap::new(),
        next_id: 1,
        shutdown_id: None,
        suppressed_rejects: 0,
        last_reject_log: None,
        history: history::Writer::start(state_dir_path.clone()),
        last_transition: None,
        recorder,
        replication: None,
        persister: persist::Persister::start(state),
        persisting: None,
        held_back: VecDeque::new(),
    };

    let sig =
        |k| signal(k).map_err(|e| ShellError::Unsupported(format!("cannot handle signals: {e}")));
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let mut sigusr1 = sig(SignalKind::user_defined1())?;
    let watchdog = watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    for r in early {
        d.on_report(&mut node, r, now());
    }
    notify(&[sd_notify::NotifyState::Ready]);
    d.carry_out(&mut node, &mut sender, &links, &w);

    loop {
        let wake = node
            .poll_timeout()
            .map(|t| base + Duration::from_millis(t))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(wake) => {
                let late = Instant::now().saturating_duration_since(wake).as_millis() as u64;
                d.hb.max_loop_lag_ms = d.hb.max_loop_lag_ms.max(late);
                node.handle_timeout(now());
            }
            dgram = links.recv() => {
                match dgram {
                    Ok(dg) => d.on_datagram(&mut node, &mut receiver, &mut sender, &links, dg, now()),
                    Err(e) => tracing::warn!(error = %e, "heartbeat receive error"),
                }
            }
            Some(r) = w.reports.recv() => d.on_report(&mut node, r, now()),
            Some(done) = d.persister.written.recv() => d.on_written(done),
            Some(g) = async {
                match lease_grants.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                node.handle(now(), Input::LeaseGranted { sent_at: g.sent_at, lease_ms: g.lease_ms });
            }
            Some(inc) = control_rx.recv() => {
                let witness = witness_status.as_ref().map(|s| s.status());
                d.on_control(&mut node, &receiver, inc, now(), witness)
            }
            _ = sigterm.recv() => d.begin_shutdown(&mut node, now()),
            _ = sigint.recv() => d.begin_shutdown(&mut node, now()),
            _ = sighup.recv() => d.reload(&mut node),
            _ = sigusr1.recv() => {
                let st = node.status(now());
                tracing::info!(status = %serde_json::to_string(&st).unwrap_or_default(), "status (SIGUSR1)");
                tracing::info!(config = ?d.cfg, "effective config (SIGUSR1)");
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                // From the loop itself: if the loop is stuck, systemd stops hearing this.
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
        let done = d.carry_out(&mut node, &mut sender, &links, &w);
        d.record_history(&node);
        // A lease is asked for a term only once it is durable, like every other claim.
        if let (Some(tx), None) = (&lease_wants, d.persisting) {
            let wants = node.wants_lease(now());
            tx.send_if_modified(|w| std::mem::replace(w, wants) != wants);
        }
        if done {
            break;
        }
        let active = node.state() == crate::core::NodeState::Active;
        if w.monitor.borrow().active != active {
            let _ = w.monitor.send(Monitor { active });
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopped");
    Ok(())
}

struct Driver {
    generation: u64,
    cfg: Config,
    params: CoreParams,
    started: Instant,
    hb: HeartbeatStats,
    last_fresh: Option<Millis>,
    pending: BTreeMap<u64, oneshot::Sender<Response>>,
    next_id: u64,
    shutdown_id: Option<u64>,
    suppressed_rejects: u64,
    last_reject_log: Option<Millis>,
    history: history::Writer,
    /// The newest core transition already looked at for the history.
    last_transition: Option<Transition>,
    recorder: observe::Recorder,
    /// The replicated disk's newest replication view (status; edge-triggered warnings).
    replication: Option<crate::resources::DiskReport>,
    persister: persist::Persister,
    /// The term being written; while it is, only heartbeats go out.
    persisting: Option<u64>,
    /// The core's actions that came after a term still being written, in order.
    held_back: VecDeque<Action>,
}

impl Driver {
    /// Appends every new plan-ending transition (one with a total time) to the history.
    fn record_history(&mut self, node: &Node) {
        if node.transitions().next_back() == self.last_transition.as_ref() {
            return;
        }
        let all: Vec<Transition> = node.transitions().cloned().collect();
        let name = self.cfg.this().name.clone();
        for t in history::new_since(&all, self.last_transition.as_ref()) {
            if t.total_ms.is_some() {
                let e = history::Entry::from_transition(
                    &name,
                    node.term(),
                    t,
                    std::time::SystemTime::now(),
                );
                self.recorder.entry(&e);
                self.history.record(e);
            }
        }
        self.last_transition = all.last().cloned();
    }

    fn on_datagram(
        &mut self,
        node: &mut Node,
        receiver: &mut Receiver,
        sender: &mut Sender,
        links: &Links,
        dg: crate::net::heartbeat::Datagram,
        now: Millis,
    ) {
        if !links.from_peer(&dg) {
            self.hb.foreign_source += 1;
            self.log_reject(
                now,
                dg.link,
                &format!("datagram from {}, not the peer", dg.from),
            );
            return;
        }
        match receiver.accept(dg.link, &dg.bytes) {
            Ok(a) => {
                self.hb.received += 1;
                if a.fresh {
                    // The peer's current run decides the layout we send (wire.rs, "Versions on
                    // a mixed pair").
                    sender.set_peer_reads_v2(a.reads_v2);
                    if let Some(prev) = self.last_fresh {
                        self.record_gap(now.saturating_sub(prev));
                    }
                    self.last_fresh = Some(now);
                }
                node.handle(
                    now,
                    Input::Heartbeat {
                        link: dg.link,
                        generation: a.header.generation,
                        beat: a.beat,
                        fresh: a.fresh,
                    },
                );
            }
            Err(reject) => {
                self.log_reject(now, dg.link, &reject.to_string());
                node.handle(
                    now,
                    Input::HeartbeatRejected {
                        link: dg.link,
                        reason: reject.to_string(),
                    },
                );
            }
        }
    }

    fn record_gap(&mut self, gap: Millis) {
        let p = &self.params;
        let bucket = if gap * 2 <= p.keepalive_ms * 3 {
            0
        } else if gap <= p.warntime_ms {
            1
        } else if gap <= p.deadtime_ms {
            2
        } else {
            3
        };
        self.hb.gap_buckets[bucket] += 1;
        self.hb.max_gap_ms = self.hb.max_gap_ms.max(gap);
    }

    /// Rejected datagrams are logged at most once a second, with a count of the rest.
    fn log_reject(&mut self, now: Millis, link: usize, why: &str) {
        if self
            .last_reject_log
            .is_some_and(|t| now.saturating_sub(t) < 1_000)
        {
            self.suppressed_rejects += 1;
            return;
        }
        let name = self.params.links.get(link).cloned().unwrap_or_default();
        tracing::warn!(
            link = %name,
            suppressed = self.suppressed_rejects,
            "rejected heartbeat datagram: {why}"
        );
        self.suppressed_rejects = 0;
        self.last_reject_log = Some(now);
    }

    fn on_report(&mut self, node: &mut Node, r: Report, now: Millis) {
        let input = match r {
            Report::Step {
                op,
                result,
                elapsed_ms,
            } => {
                if let Err(e) = &result {
                    tracing::warn!(op, elapsed_ms, error = %e, "step failed");
                }
                Input::StepFinished { op, result }
            }
            Report::Fence { op, result } => Input::FenceFinished { op, result },
            Report::Outdate { op, result } => Input::OutdateFinished { op, result },
            Report::Probed { held } => Input::Probed { held },
            Report::Health { step, ok, detail } => {
                tracing::warn!(step = %self.params.steps.get(step).map(|s| s.name.as_str()).unwrap_or("?"), %detail, "health probe failed");
                Input::Health { step, ok, detail }
            }
            Report::Disk(d) => {
                tracing::info!(disk = ?d, "local DRBD disk state");
                Input::Disk(d)
            }
            Report::TieBreaker(ok) => Input::TieBreaker { ok },
            Report::Replication(v) => {
                self.on_replication(v);
                return;
            }
        };
        node.handle(now, input);
    }

    /// DRBD replication is not the core's business (the disk state is), but an operator must
    /// hear when writes stop reaching the peer: the local disk stays UpToDate through a cut.
    fn on_replication(&mut self, v: crate::resources::DiskReport) {
        let was = self.replication.as_ref().map(|r| r.replicating());
        let what = format!(
            "connection {}, peer disk {}, replication {}",
            v.connection.as_deref().unwrap_or("none"),
            crate::resources::drbd::disk_name(v.peer_disk),
            v.replication.as_deref().unwrap_or("none")
        );
        match (was, v.replicating()) {
            (Some(true) | None, false) => tracing::warn!(
                resource = %v.resource,
                state = %what,
                "DRBD is not replicating: writes reach only this node's disk; check DRBD's replication link (drbdadm status)"
            ),
            (Some(false), true) => {
                tracing::info!(resource = %v.resource, state = %what, "DRBD replicates again")
            }
            _ => tracing::info!(resource = %v.resource, state = %what, "DRBD replication state"),
        }
        self.replication = Some(v);
    }

    fn on_control(
        &mut self,
        node: &mut Node,
        receiver: &Receiver,
        inc: Incoming,
        now: Millis,
        witness: Option<witness_client::WitnessStatus>,
    ) {
        let command = match inc.request {
            Request::Status => {
                let st = DaemonStatus {
                    node: self.cfg.this().name.clone(),
                    peer: self.cfg.peer().name.clone(),
                    cluster: self.cfg.cluster.name.clone(),
                    config: self.cfg.source.clone(),
                    generation: self.generation,
                    uptime_ms: self.started.elapsed().as_millis() as u64,
                    core: node.status(now),
                    heartbeat: HeartbeatStats {
                        counters: receiver.counters().clone(),
                        ..self.hb.clone()
                    },
                    history: self.history.recent(),
                    replication: self.replication.clone(),
                    witness,
                    metrics_listen: self.listen(|m| &m.listen),
                    agent_listen: self.listen(|m| &m.agent_listen),
                };
                let _ = inc.reply.send(Response::Status(Box::new(st)));
                return;
            }
            Request::Standby => Command::Standby,
            Request::Takeover => Command::Takeover,
            Request::Maintenance { on } => Command::Maintenance { on },
            Request::FencePeer {
                resource,
                timeout_ms,
            } => {
                let ours = drbd_resources(&self.cfg);
                if !ours.contains(&resource) {
                    let message = if ours.is_empty() {
                        format!(
                            "drbd resource {resource} is not managed here: {} has no drbd resource; add it as a [[resource]] of kind drbd, or point DRBD's fence-peer handler elsewhere",
                            self.cfg.source.display()
                        )
                    } else {
                        format!(
                            "drbd resource {resource} is not managed here ({} manages {}); fix the fence-peer handler of that resource",
                            self.cfg.source.display(),
                            ours.join(", ")
                        )
                    };
                    tracing::error!("fence-peer: {message}");
                    let _ = inc.reply.send(Response::Error { message });
                    return;
                }
                let id = self.next_id;
                self.next_id += 1;
                tracing::warn!(id, %resource, ?timeout_ms, "DRBD's fence-peer handler asks to outdate the peer");
                self.pending.insert(id, inc.reply);
                node.handle(now, Input::OutdatePeer { id, timeout_ms });
                return;
            }
            Request::RecordDrill { mut entry } => {
                entry.node = self.cfg.this().name.clone();
                self.recorder.entry(&entry);
                self.history.record(*entry);
                let _ = inc.reply.send(Response::Outcome(CommandOutcome::Done {
                    message: "recorded in the history".into(),
                    gap_ms: None,
                }));
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        tracing::info!(id, ?command, "operator command");
        self.pending.insert(id, inc.reply);
        node.handle(now, Input::Command { id, command });
    }

    fn begin_shutdown(&mut self, node: &mut Node, now: Millis) {
        if self.shutdown_id.is_some() {
            tracing::warn!("already shutting down: waiting for the release to finish");
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.shutdown_id = Some(id);
        let budget: Millis = self.params.steps.iter().map(|s| s.release_timeout_ms).sum();
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("releasing resources before exit"),
        ]);
        notify_extend(Duration::from_millis(budget + 5_000));
        tracing::info!("shutting down: releasing the service if held");
        node.handle(
            now,
            Input::Command {
                id,
                command: Command::Shutdown,
            },
        );
    }

    fn reload(&mut self, node: &mut Node) {
        let path = self.cfg.source.clone();
        let me = self.cfg.this().name.clone();
        match Config::load(&path, Some(&me)) {
            Err(e) => {
                tracing::error!("reload of {} failed; keeping the running config:", path.display());
                for d in e.diagnostics() {
                    tracing::error!("{d}");
                }
                if e.diagnostics().is_empty() {
                    tracing::error!("{e}");
                }
            }
            Ok(new) if new == self.cfg => tracing::info!("reload: config unchanged"),
            Ok(new) => match reload_difference(&self.cfg, &new) {
                Some(why) => tracing::error!(
                    "reload refused, keeping the running config: {why}; restart the daemon (on the standby node first) to apply it"
                ),
                None => {
                    let params = new.core_params();
                    match node.reconfigure(params.clone()) {
                        Ok(()) => {
                            tracing::info!("reload: applied the new config");
                            self.params = params;
                            self.cfg = new;
                        }
                        Err(why) => tracing::error!("reload refused, keeping the running config: {why}"),
                    }
                }
            },
        }
    }

    fn on_written(&mut self, done: persist::Written) {
        self.persisting = None;
        let took_ms = done.took.as_millis() as u64;
        match done.error {
            // The term must be durable before acting on it; without it a restart could claim
            // an older term. Failing loudly beats a silent split later.
            Some(e) => tracing::error!(term = done.term, error = %e, "cannot persist the term"),
            None if took_ms >= 100 => tracing::warn!(
                term = done.term,
                took_ms,
                "writing the term took long (a busy disk); heartbeats went on, resource actions waited"
            ),
            None => tracing::debug!(term = done.term, took_ms, "term persisted"),
        }
    }

    /// The next action to carry out: while a term is being written, heartbeats go out and
    /// everything else waits in `held_back`, in order.
    fn next_action(&mut self, node: &mut Node) -> Option<Action> {
        if self.persisting.is_none() {
            if let Some(a) = self.held_back.pop_front() {
                return Some(a);
            }
        }
        while let Some(a) = node.poll_action() {
            if self.persisting.is_none() || matches!(a, Action::SendHeartbeat(_)) {
                return Some(a);
            }
            self.held_back.push_back(a);
        }
        None
    }

    /// Carries out the core's actions; returns true when the daemon may exit.
    fn carry_out(
        &mut self,
        node: &mut Node,
        sender: &mut Sender,
        links: &Links,
        w: &worker::Worker,
    ) -> bool {
        let mut exit = false;
        while let Some(a) = self.next_action(node) {
            match a {
                Action::SendHeartbeat(beat) => {
                    let bytes = sender.next(&beat);
                    self.hb.sent += 1;
                    for (link, e) in links.send_all(&bytes) {
                        self.hb.send_errors += 1;
                        tracing::debug!(link, error = %e, "heartbeat send failed");
                    }
                }
                Action::Acquire {
                    op,
                    step,
                    timeout_ms,
                } => {
                    tracing::info!(op, step = %self.step_name(step), timeout_ms, "acquire");
                    let _ = w.jobs.send(Job::Acquire { op, step });
                }
                Action::Release {
                    op,
                    step,
                    timeout_ms,
                } => {
                    tracing::info!(op, step = %self.step_name(step), timeout_ms, "release");
                    let _ = w.jobs.send(Job::Release { op, step });
                }
                Action::Cancel { op } => {
                    tracing::warn!(op, "cancelling a timed-out operation");
                    let _ = w.jobs.send(Job::Cancel { op });
                }
                Action::FencePeer { op, timeout_ms } => {
                    tracing::warn!(op, peer = %self.cfg.peer().name, "fencing the peer");
                    let _ = w.jobs.send(Job::Fence {
                        op,
                        timeout: Duration::from_millis(timeout_ms),
                    });
                }
                Action::OutdateDisk { op, timeout_ms } => {
                    tracing::warn!(op, timeout_ms, peer = %self.cfg.peer().name, "outdating the local drbd disk at the peer's request");
                    let _ = w.jobs.send(Job::Outdate { op });
                }
                Action::OutdatePeerDone { id, outcome } => {
                    if let Some(reply) = self.pending.remove(&id) {
                        tracing::info!(id, ?outcome, "fence-peer request finished");
                        let _ = reply.send(Response::Outdate(outcome));
                    }
                }
                Action::Announce => {
                    tracing::info!("re-announcing the service addresses");
                    let _ = w.jobs.send(Job::Announce);
                }
                Action::PersistTerm(t) => {
                    self.persisting = Some(t);
                    self.persister.write(t);
                }
                Action::ProbeAll => {
                    let _ = w.jobs.send(Job::ProbeAll);
                }
                Action::StateChanged { from, to, cause } => {
                    tracing::info!(%from, %to, %cause, "state change");
                    self.recorder.transition(from, to);
                    let line = format!("{to} (term {}): {cause}", node.term());
                    notify(&[sd_notify::NotifyState::Status(&line)]);
                }
                Action::Alert { severity, message } => match severity {
                    Severity::Warn => tracing::warn!("{message}"),
                    Severity::Error => tracing::error!("{message}"),
                },
                Action::CommandDone { id, outcome } => {
                    if Some(id) == self.shutdown_id {
                        match &outcome {
                            CommandOutcome::Done { message, .. } => tracing::info!("{message}"),
                            CommandOutcome::Refused { reason }
                            | CommandOutcome::Failed { reason } => {
                                tracing::error!("shutdown: {reason}")
                            }
                        }
                        exit = true;
                    } else if let Some(reply) = self.pending.remove(&id) {
                        tracing::info!(id, ?outcome, "operator command finished");
                        let _ = reply.send(Response::Outcome(outcome));
                    }
                }
            }
        }
        exit
    }

    fn listen(
        &self,
        which: impl Fn(&config::Observe) -> &std::collections::BTreeMap<String, std::net::SocketAddr>,
    ) -> Option<String> {
        let m = self.cfg.metrics.as_ref()?;
        which(m).get(&self.cfg.this().name).map(|a| a.to_string())
    }

    fn step_name(&self, step: usize) -> String {
        self.params
            .steps
            .get(step)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("step {step}"))
    }
}

/// Why a new config cannot replace the running one without a restart, if it cannot.
/// The DRBD resource names (as drbdadm knows them) this config manages.
fn drbd_resources(cfg: &Config) -> Vec<String> {
    cfg.resources
        .iter()
        .filter_map(|r| match &r.kind {
            config::ResourceKind::Drbd { resource } => Some(resource.clone()),
            _ => None,
        })
        .collect()
}

fn reload_difference(old: &Config, new: &Config) -> Option<String> {
    if old.cluster != new.cluster || old.nodes != new.nodes || old.this_node != new.this_node {
        return Some("the cluster or node definitions changed".into());
    }
    if old.links != new.links {
        return Some("the heartbeat links changed".into());
    }
    if old.auth != new.auth {
        return Some("the heartbeat keys changed".into());
    }
    if old.resources != new.resources {
        return Some("the resources changed".into());
    }
    if old.state_dir != new.state_dir || old.control_socket != new.control_socket {
        return Some("the state dir or control socket changed".into());
    }
    if old.metrics != new.metrics {
        return Some("the [metrics] listeners changed".into());
    }
    if old.tiebreaker != new.tiebreaker || old.fencing != new.fencing {
        return Some("the tie-breaker or fencing changed".into());
    }
    None
}

fn notify(states: &[sd_notify::NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(states);
}

fn notify_extend(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
}

fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
}

fn apply_priority(opts: &RunOptions) {
    if opts.lock_memory {
        // SAFETY: mlockall has no memory-safety preconditions; failure is reported via errno.
        let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lock memory (mlockall); continuing unlocked");
        } else {
            tracing::info!("memory locked (mlockall)");
        }
    }
    if let Some(prio) = opts.realtime {
        let param = libc::sched_param {
            sched_priority: prio,
        };
        // SAFETY: pid 0 is the calling thread; param is a valid, initialized struct.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), priority = prio, "cannot switch the heartbeat thread to realtime (SCHED_RR); continuing at normal priority");
        } else {
            tracing::info!(
                priority = prio,
                "heartbeat thread runs at realtime priority (SCHED_RR)"
            );
        }
    }
}
