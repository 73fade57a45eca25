//! A two-node simulator on virtual time.
//!
//! Both `Node`s run against a virtual network (per link and direction: up/down, loss, delay,
//! jitter, duplication), virtual resources (each step takes a set time, may fail or hang), and a
//! script of faults. Nothing sleeps; time jumps from event to event. While it runs it checks the
//! six rules of DESIGN.md at the moment each action is emitted and records every violation, so a
//! failing run names the rule, the node and the time.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use twinbeat::core::{
    Action, Beat, Command, CommandOutcome, CoreParams, DiskState, Input, Millis, Node, NodeState,
    OpId, OutdateOutcome,
};
use twinbeat::witness::table::{Answer, Table};

/// A small deterministic PRNG (xorshift64*): the simulator must not depend on the host.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// True with probability `p` percent.
    pub fn chance(&mut self, percent: u8) -> bool {
        self.below(100) < u64::from(percent)
    }
}

#[derive(Clone, Debug)]
pub struct Direction {
    pub up: bool,
    pub loss_percent: u8,
    pub delay_ms: Millis,
    pub jitter_ms: Millis,
    pub dup_percent: u8,
}

impl Default for Direction {
    fn default() -> Self {
        Direction {
            up: true,
            loss_percent: 0,
            delay_ms: 1,
            jitter_ms: 0,
            dup_percent: 0,
        }
    }
}

/// How often the shell pings the tie-breaker targets (shell/worker.rs).
pub const TIEBREAKER_ROUND_MS: Millis = 1_000;

/// A fault or operator action at a point in virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Power cut: the daemon and every resource on the node vanish.
    PowerCut(usize),
    /// The daemon dies (kill -9); resources stay as they are.
    KillDaemon(usize),
    /// The daemon starts again (new boot generation), probing the resources it finds.
    StartDaemon(usize),
    Pause(usize),
    Resume(usize),
    /// Cut link `link` in both directions (`None`) or only from node `from`.
    Cut {
        link: usize,
        from: Option<usize>,
    },
    Heal {
        link: usize,
        from: Option<usize>,
    },
    Loss {
        link: usize,
        percent: u8,
    },
    Delay {
        link: usize,
        ms: Millis,
    },
    Command(usize, Command),
    Disk(usize, DiskState),
    TieBreaker(usize, bool),
    /// The shell's once-a-second tie-breaker round: the node's current answer again (only
    /// for the daemon of that boot generation).
    TieBreakerRound(usize, u64),
    /// A monitored step's probe fails on the node.
    HealthFail(usize, usize),
    /// The next acquire of `step` on the node fails.
    FailNextAcquire(usize, usize),
    /// The next release of `step` on the node fails.
    FailNextRelease(usize, usize),
    /// The next acquire of `step` on the node never finishes.
    HangNextAcquire(usize, usize),
    SetFence(usize, bool),
    /// The witness process stops (its table is lost) or starts with an empty table.
    WitnessDown,
    WitnessUp,
    /// The path between node `n` and the witness, both directions.
    WitnessPath(usize, bool),
}

/// The witness: the real lease table (`twinbeat::witness::table`) on a clock of its own that
/// runs `fast_ppm` faster than the nodes' (the direction that shortens a lease in real time),
/// reached over a path per node with a fixed one-way delay.
pub struct SimWitness {
    pub table: Option<Table>,
    pub lease_ms: Millis,
    pub fast_ppm: u64,
    pub path_up: [bool; 2],
    pub delay_ms: Millis,
}

impl SimWitness {
    pub fn clock(&self, now: Millis) -> Millis {
        now + now * self.fast_ppm / 1_000_000
    }
}

/// A node's witness client, as the shell runs it: a request every lease/3 while the core wants
/// the lease, a release when it stops wanting it.
#[derive(Clone, Debug, Default)]
struct LeaseClient {
    wanted: bool,
    next_request: Millis,
}

#[derive(Clone, Debug)]
enum LeaseDgram {
    ToWitness {
        from: usize,
        release: bool,
        sent_at: Millis,
    },
    ToNode {
        to: usize,
        generation: u64,
        sent_at: Millis,
        granted: Option<Millis>,
    },
}

#[derive(Clone, Debug)]
struct Datagram {
    to: usize,
    link: usize,
    generation: u64,
    seq: u64,
    beat: Beat,
}

#[derive(Clone, Debug)]
struct PendingOp {
    op: OpId,
    step: usize,
    acquire: bool,
    finish_at: Option<Millis>,
    ok: bool,
}

#[derive(Clone, Debug, Default)]
struct Window {
    generation: u64,
    high: u64,
    link_high: BTreeMap<usize, u64>,
}

/// Both nodes' params with the same fence command (timeout 5 s, retry 2 s).
pub fn fenced_params(required: bool) -> (CoreParams, CoreParams) {
    let f = twinbeat::core::FenceParams {
        timeout_ms: 5_000,
        required,
        retry_ms: 2_000,
    };
    let mut a = CoreParams::example(1);
    let mut b = CoreParams::example(2);
    a.fencing = Some(f.clone());
    b.fencing = Some(f);
    (a, b)
}

pub struct SimNode {
    pub params: CoreParams,
    pub node: Option<Node>,
    pub paused: bool,
    inbox: Vec<Input>,
    pub generation: u64,
    seq: u64,
    pub persisted_term: u64,
    /// Resources actually in place on this node.
    pub world: u32,
    pending: Vec<PendingOp>,
    pending_fence: Option<(OpId, Millis)>,
    pub fence_ok: bool,
    /// How long the `[fencing]` command takes.
    pub fence_ms: Millis,
    pub fenced_peer_at: Vec<Millis>,
    /// `drbdadm outdate` in progress: op and when it finishes (`None`: it hangs).
    pending_outdate: Option<(OpId, Option<Millis>)>,
    pub outdate_ok: bool,
    pub outdate_hangs: bool,
    pub outdate_ms: Millis,
    /// When this node's disk was outdated at the peer's request.
    pub outdated_at: Vec<Millis>,
    /// Answers to `outdate_peer` (DRBD's fence-peer handler) by request id.
    pub outdates: BTreeMap<u64, (Millis, OutdateOutcome)>,
    pub step_ms: Millis,
    /// Acquire durations that differ from `step_ms`, by step index.
    pub acquire_ms: BTreeMap<usize, Millis>,
    fail_acquire: BTreeSet<usize>,
    fail_release: BTreeSet<usize>,
    hang_acquire: BTreeSet<usize>,
    pub disk: DiskState,
    pub tiebreaker: bool,
    /// How long after a start the tie-breaker's first answer arrives (the shell pings first).
    pub tiebreaker_first_ms: Millis,
    pub boot_at: Millis,
    window: Window,
    /// Every action with its time, for determinism checks and assertions.
    pub log: Vec<(Millis, Action)>,
    pub commands: BTreeMap<u64, CommandOutcome>,
    /// Last time any datagram from the peer was delivered, and the last fresh beat.
    last_rx: Option<Millis>,
    last_beat: Option<(Millis, Beat)>,
    // Rule-checking state.
    last_release_step: Option<usize>,
    rolling_back: Option<String>,
    release_failed: bool,
}

pub struct Sim {
    pub now: Millis,
    pub nodes: [SimNode; 2],
    /// `links[l][from]`: link `l` in the direction from node `from`.
    pub links: Vec<[Direction; 2]>,
    net: BTreeMap<(Millis, u64), Datagram>,
    net_seq: u64,
    script: BTreeMap<(Millis, u64), Event>,
    script_seq: u64,
    pub rng: Rng,
    /// Deliver queued heartbeats before timers when a paused node resumes.
    pub resume_inbox_first: bool,
    pub violations: Vec<String>,
    next_command: u64,
    /// Sampled every step: both nodes holding step 0 (the DRBD primary) at the same time.
    pub both_held_ms: Millis,
    /// Both nodes holding the last step (the VIP: where clients write) at the same time.
    pub both_vip_ms: Millis,
    pub witness: Option<SimWitness>,
    lease_clients: [LeaseClient; 2],
    lease_net: BTreeMap<(Millis, u64), LeaseDgram>,
    /// Time a node held any resource while the witness's table gave the lease to the other one.
    pub held_against_lease_ms: Millis,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim::with_params(seed, CoreParams::example(1), CoreParams::example(2))
    }

    pub fn with_params(seed: u64, a: CoreParams, b: CoreParams) -> Sim {
        let links = a.links.len();
        let mk = |p: CoreParams| SimNode {
            params: p,
            node: None,
            paused: false,
            inbox: Vec::new(),
            generation: 0,
            seq: 0,
            persisted_term: 0,
            world: 0,
            pending: Vec::new(),
            pending_fence: None,
            fence_ok: true,
            fenced_peer_at: Vec::new(),
            fence_ms: 100,
            pending_outdate: None,
            outdate_ok: true,
            outdate_hangs: false,
            outdate_ms: 300,
            outdated_at: Vec::new(),
            outdates: BTreeMap::new(),
            step_ms: 50,
            acquire_ms: BTreeMap::new(),
            fail_acquire: BTreeSet::new(),
            fail_release: BTreeSet::new(),
            hang_acquire: BTreeSet::new(),
            disk: DiskState::UpToDate,
            tiebreaker: true,
            tiebreaker_first_ms: 0,
            boot_at: 0,
            window: Window::default(),
            log: Vec::new(),
            commands: BTreeMap::new(),
            last_rx: None,
            last_beat: None,
            last_release_step: None,
            rolling_back: None,
            release_failed: false,
        };
        Sim {
            now: 0,
            nodes: [mk(a), mk(b)],
            links: vec![[Direction::default(), Direction::default()]; links],
            net: BTreeMap::new(),
            net_seq: 0,
            script: BTreeMap::new(),
            script_seq: 0,
            rng: Rng::new(seed),
            resume_inbox_first: true,
            violations: Vec::new(),
            next_command: 1,
            both_held_ms: 0,
            both_vip_ms: 0,
            witness: None,
            lease_clients: [LeaseClient::default(), LeaseClient::default()],
            lease_net: BTreeMap::new(),
            held_against_lease_ms: 0,
        }
    }

    /// Adds a witness (started at time 0, so its quiet period ends at `lease_ms`).
    pub fn with_witness(mut self, lease_ms: Millis) -> Sim {
        self.witness = Some(SimWitness {
            table: Some(Table::new(0, lease_ms)),
            lease_ms,
            fast_ppm: 0,
            path_up: [true, true],
            delay_ms: 2,
        });
        self
    }

    /// Starts both daemons now.
    pub fn start_both(&mut self) {
        self.start(0);
        self.start(1);
    }

    pub fn at(&mut self, t: Millis, e: Event) {
        self.script.insert((t, self.script_seq), e);
        self.script_seq += 1;
    }

    /// Issues an operator command now and returns its id (see `outcome`).
    pub fn command(&mut self, n: usize, c: Command) -> u64 {
        let id = self.next_command;
        self.next_command += 1;
        self.input(n, Input::Command { id, command: c });
        id
    }

    /// DRBD on node `n` runs its fence-peer handler now; returns the request id (see `outdates`).
    pub fn outdate_peer(&mut self, n: usize, timeout_ms: Option<Millis>) -> u64 {
        let id = self.next_command;
        self.next_command += 1;
        self.input(n, Input::OutdatePeer { id, timeout_ms });
        id
    }

    /// The fence-peer exit code DRBD on node `n` got for request `id`, if answered yet.
    pub fn outdate_code(&self, n: usize, id: u64) -> Option<u8> {
        self.nodes[n]
            .outdates
            .get(&id)
            .map(|(_, o)| o.verdict.exit_code())
    }

    pub fn outcome(&self, n: usize, id: u64) -> Option<&CommandOutcome> {
        self.nodes[n].commands.get(&id)
    }

    pub fn state(&self, n: usize) -> Option<NodeState> {
        self.nodes[n].node.as_ref().map(|x| x.state())
    }

    pub fn node(&self, n: usize) -> &Node {
        self.nodes[n].node.as_ref().expect("node is running")
    }

    /// Times at which node `n` changed to `to`.
    pub fn entered(&self, n: usize, to: NodeState) -> Vec<Millis> {
        self.nodes[n]
            .log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::StateChanged { to: s, .. } if *s == to => Some(*t),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, n: usize, f: impl Fn(&Action) -> bool) -> usize {
        self.nodes[n].log.iter().filter(|(_, a)| f(a)).count()
    }

    pub fn alerts(&self, n: usize) -> Vec<String> {
        self.nodes[n]
            .log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Alert { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: Millis) {
        let mut guard = 0u64;
        loop {
            guard += 1;
            assert!(
                guard < 5_000_000,
                "simulator made no progress at {}",
                self.now
            );
            let Some(next) = self.next_event_time() else {
                break;
            };
            if next > t {
                break;
            }
            self.sample(next);
            self.now = next;
            self.step_once();
        }
        self.sample(t);
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Millis) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `pred` holds, at most `limit` ms of virtual time; returns the time it held.
    pub fn run_until_pred(&mut self, limit: Millis, pred: impl Fn(&Sim) -> bool) -> Option<Millis> {
        let end = self.now + limit;
        while self.now < end {
            if pred(self) {
                return Some(self.now);
            }
            let next = self.next_event_time().unwrap_or(end).min(end);
            self.run_until(next.max(self.now + 1).min(end));
        }
        pred(self).then_some(self.now)
    }

    fn sample(&mut self, next: Millis) {
        let dt = next.saturating_sub(self.now);
        let both = self.nodes[0].world & 1 != 0 && self.nodes[1].world & 1 != 0;
        if both {
            self.both_held_ms += dt;
        }
        let vip = 1u32 << (self.nodes[0].params.steps.len() - 1);
        if self.nodes[0].world & vip != 0 && self.nodes[1].world & vip != 0 {
            self.both_vip_ms += dt;
        }
        if let Some(w) = &self.witness {
            if let Some((holder, _)) = w.table.as_ref().and_then(|t| t.holder(w.clock(self.now))) {
                let other = if holder == self.nodes[0].params.node_id {
                    1
                } else {
                    0
                };
                if self.nodes[other].world != 0 {
                    self.held_against_lease_ms += dt;
                }
            }
        }
    }

    fn next_event_time(&self) -> Option<Millis> {
        let mut t = Vec::new();
        t.extend(self.script.keys().next().map(|k| k.0));
        t.extend(self.net.keys().next().map(|k| k.0));
        t.extend(self.lease_net.keys().next().map(|k| k.0));
        for (n, c) in self.lease_clients.iter().enumerate() {
            if c.wanted && self.nodes[n].node.is_some() && !self.nodes[n].paused {
                t.push(c.next_request);
            }
        }
        for n in &self.nodes {
            if n.paused || n.node.is_none() {
                continue;
            }
            t.extend(n.pending.iter().filter_map(|p| p.finish_at));
            t.extend(n.pending_fence.map(|f| f.1));
            t.extend(n.pending_outdate.and_then(|f| f.1));
            if let Some(node) = &n.node {
                t.extend(node.poll_timeout());
            }
        }
        t.into_iter().min().map(|x| x.max(self.now))
    }

    fn step_once(&mut self) {
        let now = self.now;
        while let Some(((t, _), _)) = self.script.first_key_value() {
            if *t > now {
                break;
            }
            let (_, e) = self.script.pop_first().expect("checked");
            self.apply(e);
        }
        while let Some(((t, _), _)) = self.net.first_key_value() {
            if *t > now {
                break;
            }
            let (_, d) = self.net.pop_first().expect("checked");
            self.deliver(d);
        }
        while let Some(((t, _), _)) = self.lease_net.first_key_value() {
            if *t > now {
                break;
            }
            let (_, d) = self.lease_net.pop_first().expect("checked");
            self.deliver_lease(d);
        }
        for n in 0..2 {
            if self.nodes[n].paused || self.nodes[n].node.is_none() {
                continue;
            }
            let due: Vec<PendingOp> = self.nodes[n]
                .pending
                .iter()
                .filter(|p| p.finish_at.is_some_and(|f| f <= now))
                .cloned()
                .collect();
            for p in due {
                self.nodes[n].pending.retain(|q| q.op != p.op);
                let bit = 1u32 << p.step;
                if p.ok {
                    if p.acquire {
                        self.nodes[n].world |= bit;
                    } else {
                        self.nodes[n].world &= !bit;
                    }
                }
                let result = if p.ok {
                    Ok(())
                } else {
                    Err(format!("simulated failure of step {}", p.step))
                };
                if !p.ok && p.acquire {
                    let name = self.nodes[n].params.steps[p.step].name.clone();
                    self.nodes[n].rolling_back = Some(name);
                }
                if !p.ok && !p.acquire {
                    self.nodes[n].release_failed = true;
                }
                self.input(n, Input::StepFinished { op: p.op, result });
            }
            if let Some((op, t)) = self.nodes[n].pending_fence {
                if t <= now {
                    self.nodes[n].pending_fence = None;
                    let ok = self.nodes[n].fence_ok;
                    if ok {
                        self.nodes[n].fenced_peer_at.push(now);
                        // A successful fence powers the peer off.
                        let peer = 1 - n;
                        self.nodes[peer].node = None;
                        self.nodes[peer].world = 0;
                        self.nodes[peer].pending.clear();
                        self.nodes[peer].pending_fence = None;
                    }
                    let result = if ok {
                        Ok(())
                    } else {
                        Err("simulated fence failure".into())
                    };
                    self.input(n, Input::FenceFinished { op, result });
                }
            }
            if let Some((op, Some(t))) = self.nodes[n].pending_outdate {
                if t <= now {
                    self.nodes[n].pending_outdate = None;
                    let ok = self.nodes[n].outdate_ok;
                    let result = if ok {
                        self.nodes[n].disk = DiskState::Outdated;
                        self.nodes[n].outdated_at.push(now);
                        Ok(())
                    } else {
                        Err("simulated drbdadm outdate failure".into())
                    };
                    self.input(n, Input::OutdateFinished { op, result });
                    if ok {
                        // The disk watcher reports the change a moment later.
                        self.at(now + 10, Event::Disk(n, DiskState::Outdated));
                    }
                }
            }
            let due = self.nodes[n]
                .node
                .as_ref()
                .and_then(|x| x.poll_timeout())
                .is_some_and(|t| t <= now);
            if due {
                self.nodes[n]
                    .node
                    .as_mut()
                    .expect("running")
                    .handle_timeout(now);
                self.drain(n);
            }
            self.lease_client(n);
        }
    }

    /// The shell's witness client for node `n`.
    fn lease_client(&mut self, n: usize) {
        let Some(w) = &self.witness else {
            return;
        };
        let Some(node) = self.nodes[n].node.as_ref() else {
            return;
        };
        let now = self.now;
        let wants = node.wants_lease(now);
        let c = &mut self.lease_clients[n];
        let release = c.wanted && !wants;
        let request = wants && (!c.wanted || now >= c.next_request);
        c.wanted = wants;
        if !(release || request) {
            return;
        }
        if request {
            c.next_request = now + w.lease_ms / 3;
        }
        if w.path_up[n] {
            let at = now + w.delay_ms;
            self.lease_net.insert(
                (at, self.net_seq),
                LeaseDgram::ToWitness {
                    from: n,
                    release,
                    sent_at: now,
                },
            );
            self.net_seq += 1;
        }
    }

    fn deliver_lease(&mut self, d: LeaseDgram) {
        let now = self.now;
        match d {
            LeaseDgram::ToWitness {
                from,
                release,
                sent_at,
            } => {
                let Some(w) = self.witness.as_mut() else {
                    return;
                };
                let wnow = w.clock(now);
                let id = self.nodes[from].params.node_id;
                let Some(t) = w.table.as_mut() else {
                    return;
                };
                let answer = if release {
                    t.release(wnow, id)
                } else {
                    t.request(wnow, id)
                };
                let granted = match answer {
                    Answer::Granted { lease_ms } => Some(lease_ms),
                    _ => None,
                };
                if w.path_up[from] && !release {
                    let at = now + w.delay_ms;
                    self.lease_net.insert(
                        (at, self.net_seq),
                        LeaseDgram::ToNode {
                            to: from,
                            generation: self.nodes[from].generation,
                            sent_at,
                            granted,
                        },
                    );
                    self.net_seq += 1;
                }
            }
            LeaseDgram::ToNode {
                to,
                generation,
                sent_at,
                granted,
            } => {
                // A reply to a request of an earlier run of the daemon answers nothing.
                if generation != self.nodes[to].generation {
                    return;
                }
                if let Some(lease_ms) = granted {
                    self.input(to, Input::LeaseGranted { sent_at, lease_ms });
                }
            }
        }
    }

    fn apply(&mut self, e: Event) {
        match e {
            Event::PowerCut(n) => {
                let s = &mut self.nodes[n];
                s.node = None;
                s.world = 0;
                s.pending.clear();
                s.pending_fence = None;
                s.pending_outdate = None;
                s.paused = false;
                s.inbox.clear();
            }
            Event::KillDaemon(n) => {
                let s = &mut self.nodes[n];
                s.node = None;
                s.pending_outdate = None;
                // In-flight commands finish on their own; their result is lost with the daemon.
                for p in std::mem::take(&mut s.pending) {
                    if p.ok && p.finish_at.is_some() {
                        let bit = 1u32 << p.step;
                        if p.acquire {
                            s.world |= bit;
                        } else {
                            s.world &= !bit;
                        }
                    }
                }
                s.pending_fence = None;
                s.paused = false;
                s.inbox.clear();
            }
            Event::StartDaemon(n) => {
                if self.nodes[n].node.is_none() {
                    self.start(n);
                }
            }
            Event::Pause(n) => {
                if self.nodes[n].node.is_some() {
                    self.nodes[n].paused = true;
                }
            }
            Event::Resume(n) => self.resume(n),
            Event::Cut { link, from } => self.set_up(link, from, false),
            Event::Heal { link, from } => self.set_up(link, from, true),
            Event::Loss { link, percent } => {
                for d in &mut self.links[link] {
                    d.loss_percent = percent;
                }
            }
            Event::Delay { link, ms } => {
                for d in &mut self.links[link] {
                    d.delay_ms = ms;
                }
            }
            Event::Command(n, c) => {
                self.command(n, c);
            }
            Event::Disk(n, d) => {
                self.nodes[n].disk = d;
                self.input(n, Input::Disk(d));
            }
            Event::TieBreaker(n, ok) => {
                self.nodes[n].tiebreaker = ok;
                self.input(n, Input::TieBreaker { ok });
            }
            Event::TieBreakerRound(n, generation) => {
                let s = &self.nodes[n];
                if s.node.is_some() && s.generation == generation {
                    let ok = s.tiebreaker;
                    self.input(n, Input::TieBreaker { ok });
                    self.at(
                        self.now + TIEBREAKER_ROUND_MS,
                        Event::TieBreakerRound(n, generation),
                    );
                }
            }
            Event::HealthFail(n, step) => {
                if self.nodes[n].world & (1 << step) != 0 {
                    self.nodes[n].world &= !(1 << step);
                }
                self.input(
                    n,
                    Input::Health {
                        step,
                        ok: false,
                        detail: "simulated probe failure".into(),
                    },
                );
            }
            Event::FailNextAcquire(n, s) => {
                self.nodes[n].fail_acquire.insert(s);
            }
            Event::FailNextRelease(n, s) => {
                self.nodes[n].fail_release.insert(s);
            }
            Event::HangNextAcquire(n, s) => {
                self.nodes[n].hang_acquire.insert(s);
            }
            Event::SetFence(n, ok) => self.nodes[n].fence_ok = ok,
            Event::WitnessDown => {
                if let Some(w) = self.witness.as_mut() {
                    w.table = None;
                }
            }
            Event::WitnessUp => {
                if let Some(w) = self.witness.as_mut() {
                    if w.table.is_none() {
                        w.table = Some(Table::new(w.clock(self.now), w.lease_ms));
                    }
                }
            }
            Event::WitnessPath(n, up) => {
                if let Some(w) = self.witness.as_mut() {
                    w.path_up[n] = up;
                }
            }
        }
    }

    fn set_up(&mut self, link: usize, from: Option<usize>, up: bool) {
        for (i, d) in self.links[link].iter_mut().enumerate() {
            if from.is_none_or(|f| f == i) {
                d.up = up;
            }
        }
    }

    pub fn start(&mut self, n: usize) {
        let now = self.now;
        let s = &mut self.nodes[n];
        s.generation += 1;
        s.seq = 0;
        s.boot_at = now;
        s.paused = false;
        s.inbox.clear();
        s.last_rx = None;
        s.last_beat = None;
        s.last_release_step = None;
        s.rolling_back = None;
        self.lease_clients[n] = LeaseClient::default();
        let node = Node::new(
            s.params.clone(),
            s.persisted_term,
            s.world,
            now,
            s.generation,
        );
        s.node = Some(node);
        self.drain(n);
        let (disk, tb) = (self.nodes[n].disk, self.nodes[n].tiebreaker);
        self.input(n, Input::Disk(disk));
        let first = self.nodes[n].tiebreaker_first_ms;
        match first {
            0 => self.input(n, Input::TieBreaker { ok: tb }),
            d => self.at(now + d, Event::TieBreaker(n, tb)),
        }
        if self.nodes[n].params.tiebreaker {
            let generation = self.nodes[n].generation;
            self.at(
                now + first + TIEBREAKER_ROUND_MS,
                Event::TieBreakerRound(n, generation),
            );
        }
    }

    fn resume(&mut self, n: usize) {
        if !self.nodes[n].paused {
            return;
        }
        self.nodes[n].paused = false;
        let now = self.now;
        if !self.resume_inbox_first {
            if let Some(node) = self.nodes[n].node.as_mut() {
                node.handle_timeout(now);
            }
            self.drain(n);
        }
        for i in std::mem::take(&mut self.nodes[n].inbox) {
            self.input(n, i);
        }
    }

    /// Hands an input to node `n` (queued while it is paused) and processes its actions.
    pub fn input(&mut self, n: usize, input: Input) {
        if self.nodes[n].node.is_none() {
            return;
        }
        if self.nodes[n].paused {
            self.nodes[n].inbox.push(input);
            return;
        }
        let now = self.now;
        if let Input::Heartbeat { beat, fresh, .. } = &input {
            self.nodes[n].last_rx = Some(now);
            if *fresh {
                self.nodes[n].last_beat = Some((now, *beat));
            }
        }
        self.nodes[n]
            .node
            .as_mut()
            .expect("running")
            .handle(now, input);
        self.drain(n);
    }

    fn deliver(&mut self, d: Datagram) {
        let n = d.to;
        if self.nodes[n].node.is_none() {
            return;
        }
        // The replay window of proto/, reduced to what matters here: the first copy of a
        // sequence number is fresh, a copy on another link only proves that link works.
        let w = &mut self.nodes[n].window;
        if d.generation > w.generation {
            *w = Window {
                generation: d.generation,
                ..Window::default()
            };
        }
        if d.generation < w.generation {
            return;
        }
        let link_high = w.link_high.get(&d.link).copied().unwrap_or(0);
        let fresh = if d.seq > w.high {
            w.high = d.seq;
            true
        } else if d.seq > link_high {
            false
        } else {
            return;
        };
        w.link_high.insert(d.link, d.seq.max(link_high));
        self.input(
            n,
            Input::Heartbeat {
                link: d.link,
                generation: d.generation,
                beat: d.beat,
                fresh,
            },
        );
    }

    fn send(&mut self, from: usize, beat: Beat) {
        let s = &mut self.nodes[from];
        s.seq += 1;
        let (generation, seq) = (s.generation, s.seq);
        for link in 0..self.links.len() {
            let d = self.links[link][from].clone();
            if !d.up || self.rng.chance(d.loss_percent) {
                continue;
            }
            let copies = if self.rng.chance(d.dup_percent) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now + d.delay_ms + self.rng.below(d.jitter_ms + 1);
                self.net.insert(
                    (at, self.net_seq),
                    Datagram {
                        to: 1 - from,
                        link,
                        generation,
                        seq,
                        beat,
                    },
                );
                self.net_seq += 1;
            }
        }
    }

    fn drain(&mut self, n: usize) {
        loop {
            let Some(a) = self.nodes[n].node.as_mut().and_then(|x| x.poll_action()) else {
                return;
            };
            self.check(n, &a);
            self.nodes[n].log.push((self.now, a.clone()));
            self.perform(n, a);
        }
    }

    fn perform(&mut self, n: usize, a: Action) {
        let now = self.now;
        match a {
            Action::SendHeartbeat(beat) => self.send(n, beat),
            Action::Acquire { op, step, .. } => {
                let s = &mut self.nodes[n];
                let hang = s.hang_acquire.remove(&step);
                let ok = !s.fail_acquire.remove(&step);
                let took = s.acquire_ms.get(&step).copied().unwrap_or(s.step_ms);
                s.pending.push(PendingOp {
                    op,
                    step,
                    acquire: true,
                    finish_at: (!hang).then_some(now + took),
                    ok,
                });
            }
            Action::Release { op, step, .. } => {
                let s = &mut self.nodes[n];
                let ok = !s.fail_release.remove(&step);
                s.pending.push(PendingOp {
                    op,
                    step,
                    acquire: false,
                    finish_at: Some(now + s.step_ms),
                    ok,
                });
            }
            Action::Cancel { op } => {
                let s = &mut self.nodes[n];
                if s.pending.iter().any(|p| p.op == op && p.acquire) {
                    s.rolling_back = Some(String::new());
                }
                s.pending.retain(|p| p.op != op);
                if s.pending_fence.is_some_and(|f| f.0 == op) {
                    s.pending_fence = None;
                }
                if s.pending_outdate.is_some_and(|f| f.0 == op) {
                    s.pending_outdate = None;
                }
            }
            Action::FencePeer { op, .. } => {
                self.nodes[n].pending_fence = Some((op, now + self.nodes[n].fence_ms));
            }
            Action::PersistTerm(t) => self.nodes[n].persisted_term = t,
            Action::ProbeAll => {
                let held = self.nodes[n].world;
                self.input(n, Input::Probed { held });
            }
            Action::CommandDone { id, outcome } => {
                self.nodes[n].commands.insert(id, outcome);
            }
            Action::OutdateDisk { op, .. } => {
                let s = &mut self.nodes[n];
                let finish = (!s.outdate_hangs).then_some(now + s.outdate_ms);
                s.pending_outdate = Some((op, finish));
            }
            Action::OutdatePeerDone { id, outcome } => {
                let first = self.nodes[n].outdates.insert(id, (now, outcome)).is_none();
                if !first {
                    self.violation(n, "outdate", format!("request {id} answered twice"));
                }
            }
            Action::Announce | Action::StateChanged { .. } | Action::Alert { .. } => {}
        }
    }

    fn violation(&mut self, n: usize, rule: &str, what: String) {
        self.violations
            .push(format!("t={} node{}: rule {rule}: {what}", self.now, n + 1));
    }

    /// The six rules of DESIGN.md, checked as each action leaves a node.
    fn check(&mut self, n: usize, a: &Action) {
        let now = self.now;
        let p = self.nodes[n].params.clone();
        let node = self.nodes[n].node.as_ref().expect("running");
        let held = node.held();
        let term = node.term();
        let state_now = node.state();
        let boot = self.nodes[n].boot_at;
        match a {
            // Rule 2: one step at a time.
            Action::Acquire { step, .. } | Action::Release { step, .. }
                if !self.nodes[n].pending.is_empty() =>
            {
                self.violation(n, "2", format!("step {step} started while another runs"));
            }
            _ => {}
        }
        match a {
            // A node that holds (or may hold) the service never outdates its own disk, and
            // never runs two outdates at once.
            Action::OutdateDisk { .. } => {
                let st = state_now;
                if st.may_hold_service() || held != 0 {
                    self.violation(
                        n,
                        "outdate",
                        format!("outdate of the local disk while {st} holding {held:#x}"),
                    );
                }
                if self.nodes[n].pending_outdate.is_some() {
                    self.violation(n, "outdate", "second outdate while one runs".into());
                }
            }
            Action::Acquire { step: 0, .. } if self.nodes[n].disk == DiskState::Outdated => {
                self.violation(n, "outdate", "promote of an Outdated disk".into());
            }
            Action::Acquire { step, .. } => {
                // Rule 1: acquire in config order: everything below is held, nothing above.
                let expect = if *step == 0 { 0 } else { (1u32 << step) - 1 };
                if held != expect {
                    self.violation(
                        n,
                        "1",
                        format!("acquire of step {step} with held mask {held:#x}"),
                    );
                }
                // Rule 3: a failed acquire is followed by releases only.
                if self.nodes[n].rolling_back.is_some() {
                    self.violation(n, "3", format!("acquire of step {step} during rollback"));
                }
                self.nodes[n].last_release_step = None;
            }
            Action::Release { step, .. } => {
                if held & (1 << step) == 0 {
                    self.violation(n, "1", format!("release of step {step} that is not held"));
                }
                if let Some(prev) = self.nodes[n].last_release_step {
                    if *step >= prev {
                        self.violation(
                            n,
                            "1",
                            format!("release of step {step} after step {prev}: not reverse order"),
                        );
                    }
                }
                self.nodes[n].last_release_step = Some(*step);
            }
            Action::StateChanged { to, cause, .. } => {
                if *to != NodeState::Releasing {
                    self.nodes[n].last_release_step = None;
                }
                if let Some(name) = self.nodes[n].rolling_back.clone() {
                    if !matches!(to, NodeState::Releasing | NodeState::Acquiring) {
                        self.nodes[n].rolling_back = None;
                        if !matches!(to, NodeState::Failed | NodeState::Standby) {
                            self.violation(
                                n,
                                "3",
                                format!("failed acquire ended in {to}, not failed"),
                            );
                        }
                        if *to == NodeState::Failed && !cause.contains(&name) {
                            self.violation(
                                n,
                                "3",
                                format!("failure cause {cause:?} does not name {name}"),
                            );
                        }
                        if held != 0 && !self.nodes[n].release_failed {
                            self.violation(n, "3", format!("rollback left held mask {held:#x}"));
                        }
                    }
                }
                if *to == NodeState::Active {
                    // Rule 6: never active while knowing the peer active with >= term.
                    if let Some((t, b)) = self.nodes[n].last_beat {
                        if now.saturating_sub(t) < p.deadtime_ms
                            && b.state == NodeState::Active
                            && b.term >= term
                        {
                            self.violation(
                                n,
                                "6",
                                format!(
                                    "became active with term {term} while the peer said active with term {}",
                                    b.term
                                ),
                            );
                        }
                    }
                }
            }
            Action::PersistTerm(_) => {
                // Rule 4: a takeover starts only after deadtime of silence on every link and
                // after initdead, unless the peer itself said it holds nothing.
                // A copy of the last beat on another link carries the same words, so the peer
                // is alive and said it holds nothing as long as any copy arrived within deadtime.
                let heard_recently = self.nodes[n]
                    .last_rx
                    .is_some_and(|t| now.saturating_sub(t) < p.deadtime_ms);
                let cooperative = heard_recently
                    && self.nodes[n]
                        .last_beat
                        .is_some_and(|(_, b)| b.held == 0 && !b.state.may_hold_service());
                let silent = self.nodes[n]
                    .last_rx
                    .is_none_or(|t| now.saturating_sub(t) >= p.deadtime_ms);
                let after_initdead = now.saturating_sub(boot) >= p.initdead_ms;
                if !(cooperative || silent && after_initdead) {
                    self.violation(
                        n,
                        "4",
                        format!(
                            "takeover with the peer heard {} ms ago, {} ms after boot",
                            self.nodes[n]
                                .last_rx
                                .map(|t| now.saturating_sub(t))
                                .unwrap_or(u64::MAX),
                            now - boot
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    /// Every action of node `n` in order, as text, for determinism checks.
    pub fn trace(&self, n: usize) -> Vec<String> {
        self.nodes[n]
            .log
            .iter()
            .map(|(t, a)| format!("{t} {a:?}"))
            .collect()
    }
}
