//! The nemesis campaign: randomized fault schedules against the running lab, each replayable
//! from its seed, with the client writing and the replica replicating throughout.
//!
//! A run draws 1..=`max_faults` faults (kill -9 a daemon and restart it, power-cut a node,
//! SIGSTOP a daemon or a database, cut the heartbeat cable or the LAN, drop one node's
//! heartbeats in one direction only, random heartbeat loss, isolate a node, standby/takeover
//! fired in the middle of it all), applies them one after another with short random gaps (so
//! the next one often lands while the pair is still recovering), heals everything, and checks:
//! never two VIP holders or two writable databases (sampled every 50 ms), no acknowledged write
//! lost, the replica equal to the primary, and the service back within `RECOVERY_BOUND` of the
//! last heal.
//!
//! The generator is a fixed SplitMix64 rather than a crate's RNG on purpose: a seed must replay
//! the same schedule after any dependency upgrade.
//!
//! Two options change what a run faces, so a run replays only with the same options:
//! - `witness` (a lab brought up with `LAB_WITNESS=1`): three runs in four also get one witness
//!   fault (killed and restarted, paused, cut off the LAN, or unreachable from one node), drawn
//!   from a second generator so the node faults of every seed stay exactly those of a campaign
//!   without the option; it runs in the background, overlapping the node faults that follow.
//! - `delay`: three runs in four also get a heartbeat delay (both nodes' heartbeats on hb0,
//!   lan0 or both held back for a fixed time, in order: `delay.rs`, since this kernel has no
//!   netem), from a third generator, applied in turn like the node faults.
//! - `fence`: the lab's fence agent is armed (`power-off`), so a takeover from a silent peer
//!   powers it off first. A node the agent powered off is powered on again when the step that
//!   was running heals, as a power cut heals; the service-back bound counts from that.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::clientlog;
use crate::faults;
use crate::fencing;
use crate::lab::{now_ms, wait_until, Node, NODES};
use crate::report::{median, Outcome};
use crate::sampler::Sampler;
use crate::scenarios::{self, Ctx};

/// After the last fault heals, the service must be back (one node active with the VIP and a
/// write acknowledged) within this bound. It covers the slowest honest path: a takeover that
/// waits out the DRBD stand-in's 8 s refusal, then a fresh attempt.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);

/// What a campaign runs with besides its seed (see the module doc).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Options {
    pub witness: bool,
    pub delay: bool,
    pub fence: bool,
}

/// Seeds the witness faults' own generator, so drawing them never shifts the node faults.
const WITNESS_SALT: u64 = 0x7769_746e_6573_7321;
/// Seeds the delay faults' generator, for the same reason.
const DELAY_SALT: u64 = 0x6465_6c61_7965_6421;

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// Which node a fault hits, resolved when it is applied.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Target {
    Active,
    Standby,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
enum Fault {
    KillDaemon {
        node: Target,
        restart_after_ms: u64,
    },
    PowerCut {
        node: Target,
        off_ms: u64,
    },
    PauseDaemon {
        node: Target,
        ms: u64,
    },
    PauseDatabase {
        ms: u64,
    },
    CutHeartbeatCable {
        ms: u64,
    },
    CutLan {
        ms: u64,
    },
    DropOneWay {
        node: Target,
        link: &'static str,
        ms: u64,
    },
    Loss {
        link: &'static str,
        percent: u8,
        ms: u64,
    },
    /// Both nodes' outgoing heartbeats on `link` ("hb0", "lan0" or "hb0+lan0") held back
    /// `delay_ms`, in order, for `ms`.
    Delay {
        link: &'static str,
        delay_ms: u64,
        ms: u64,
    },
    Isolate {
        node: Target,
        ms: u64,
    },
    Operator {
        node: Target,
        verb: &'static str,
    },
    /// kill -9 of the witness, started again after a while (it then grants nothing for a lease).
    WitnessDown {
        restart_after_ms: u64,
    },
    /// SIGSTOP of the witness: requests queue up and are answered late, all at once.
    WitnessPause {
        ms: u64,
    },
    /// The witness's switch port down: neither node reaches it, the pair still hears itself.
    WitnessCut {
        ms: u64,
    },
    /// One node's datagrams to and from the witness dropped (nftables in that node's namespace).
    WitnessCutFrom {
        node: Target,
        ms: u64,
    },
}

#[derive(Clone, Debug, Serialize)]
struct Step {
    gap_before_ms: u64,
    fault: Fault,
}

fn schedule(seed: u64, max_faults: u32) -> Vec<Step> {
    let mut r = SplitMix(seed);
    let n = r.range(1, u64::from(max_faults.max(1)));
    (0..n)
        .map(|_| {
            let node = if r.below(3) < 2 {
                Target::Active
            } else {
                Target::Standby
            };
            let ms = r.range(500, 5000);
            let link = if r.below(2) == 0 { "hb0" } else { "lan0" };
            let fault = match r.below(10) {
                0 => Fault::KillDaemon {
                    node,
                    restart_after_ms: r.range(300, 4000),
                },
                1 => Fault::PowerCut {
                    node,
                    off_ms: r.range(500, 5000),
                },
                2 => Fault::PauseDaemon { node, ms },
                3 => Fault::PauseDatabase {
                    ms: r.range(300, 3000),
                },
                4 => Fault::CutHeartbeatCable { ms },
                5 => Fault::CutLan { ms },
                6 => Fault::DropOneWay { node, link, ms },
                7 => Fault::Loss {
                    link,
                    percent: r.range(20, 80) as u8,
                    ms,
                },
                8 => Fault::Isolate { node, ms },
                _ => Fault::Operator {
                    node,
                    verb: if r.below(2) == 0 {
                        "standby"
                    } else {
                        "takeover"
                    },
                },
            };
            Step {
                gap_before_ms: r.range(0, 2000),
                fault,
            }
        })
        .collect()
}

/// The run's schedule with the options: the node faults are always `schedule`'s, so a seed's runs
/// face the same node faults with and without a witness.
fn plan(seed: u64, max_faults: u32, opts: Options) -> Vec<Step> {
    let mut steps = schedule(seed, max_faults);
    if opts.witness {
        let mut w = SplitMix(seed ^ WITNESS_SALT);
        if w.below(4) != 0 {
            let at = w.below(steps.len() as u64 + 1) as usize;
            let node = if w.below(2) == 0 {
                Target::Active
            } else {
                Target::Standby
            };
            // Up to two leases (the lab's is 4.5 s): long enough for leases to run out.
            let ms = w.range(1000, 9000);
            let fault = match w.below(4) {
                0 => Fault::WitnessDown {
                    restart_after_ms: ms,
                },
                1 => Fault::WitnessPause { ms },
                2 => Fault::WitnessCut { ms },
                _ => Fault::WitnessCutFrom { node, ms },
            };
            steps.insert(
                at,
                Step {
                    gap_before_ms: w.range(0, 2000),
                    fault,
                },
            );
        }
    }
    if opts.delay {
        let mut d = SplitMix(seed ^ DELAY_SALT);
        if d.below(4) != 0 {
            let at = d.below(steps.len() as u64 + 1) as usize;
            let link = ["hb0", "lan0", "hb0+lan0"][d.below(3) as usize];
            // From well under the lab's warntime (500 ms) to twice its deadtime (1500 ms).
            let delay_ms = d.range(100, 3000);
            let ms = d.range(2000, 8000);
            steps.insert(
                at,
                Step {
                    gap_before_ms: d.range(0, 2000),
                    fault: Fault::Delay { link, delay_ms, ms },
                },
            );
        }
    }
    steps
}

fn run_seed(seed: u64, run: u32) -> u64 {
    SplitMix(seed ^ (u64::from(run) << 32)).next()
}

fn resolve(cx: &Ctx, t: Target) -> Node {
    let active = if cx.lab.holds_vip(Node::B) || cx.lab.state(Node::B).as_deref() == Some("active")
    {
        Node::B
    } else {
        Node::A
    };
    match t {
        Target::Active => active,
        Target::Standby => active.other(),
    }
}

fn pause(ms: u64) {
    // The fault's length is part of the schedule: sleeping IS the fault, not a wait for an event.
    std::thread::sleep(Duration::from_millis(ms));
}

/// One run's context: the lab, the options, and when the run began.
struct RunCx<'a> {
    cx: &'a Ctx,
    opts: Options,
    start: i64,
}

impl RunCx<'_> {
    /// With the fence agent armed: it powered `n` off (or is at it) since `t`, and the node was
    /// not powered on again since.
    fn fenced_since(&self, n: Node, t: i64) -> bool {
        self.opts.fence && fenced_off(&self.cx.lab, n, t.max(self.start))
    }

    /// A heal that failed because the fence agent powered the node off meanwhile is no failure:
    /// the node is off, and `power_on_fenced` brings it back when the step ends.
    fn tolerate(&self, n: Node, since: i64, what: &str, res: Result<()>) -> Result<Option<String>> {
        match res {
            Ok(()) => Ok(None),
            Err(e) if self.fenced_since(n, since) => Ok(Some(format!(
                "{what} of {n} not done, the fence agent powered it off ({e:#})"
            ))),
            Err(e) => Err(e),
        }
    }

    fn skipped(&self, n: Node, what: &str) -> Option<String> {
        self.fenced_since(n, self.start).then(|| {
            format!("{what} {n}: skipped, the fence agent powered it off (it is off until the step heals)")
        })
    }
}

/// The epoch ms at which this node's daemon was last started (its pid file is written then).
fn daemon_started_ms(n: Node) -> i64 {
    std::fs::metadata(n.dir().join("twinbeat.pid"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The fence agent began or finished powering `n` off after `since` and after the node's daemon
/// last started (a node powered on again is no longer fenced).
fn fenced_off(lab: &crate::lab::Lab, n: Node, since: i64) -> bool {
    let since = since.max(daemon_started_ms(n));
    fencing::calls_after(lab, since).iter().any(|c| {
        c.target == n.letter() && c.mode == "power-off" && (c.result == "start" || c.result == "ok")
    })
}

/// The last fence call on `n` since `since` has finished (ok or failed).
fn fence_settled(lab: &crate::lab::Lab, n: Node, since: i64) -> bool {
    fencing::calls_after(lab, since)
        .iter()
        .rfind(|c| c.target == n.letter())
        .is_none_or(|c| c.result != "start")
}

/// Powers on again every node the fence agent powered off during this run, as a power cut heals
/// (a fence agent's `reboot`): waits for the agent to finish, then cables in and daemon started.
fn power_on_fenced(r: &RunCx, o: &mut Outcome) -> Result<()> {
    if !r.opts.fence {
        return Ok(());
    }
    let lab = &r.cx.lab;
    for n in NODES {
        if !fenced_off(lab, n, r.start) {
            continue;
        }
        let since = r.start.max(daemon_started_ms(n));
        // The agent's own bound: [fencing] timeout-ms is 20 s in the lab's configs.
        wait_until(
            Duration::from_secs(25),
            &format!("the fence agent to finish powering node {n} off (lab/build/logs/fence.log)"),
            || fence_settled(lab, n, since),
        )?;
        let Some(off_at) = fencing::calls_after(lab, since)
            .iter()
            .find(|c| c.target == n.letter() && c.result == "ok")
            .map(|c| c.at_ms)
        else {
            o.note(format!(
                "fenced {n}: the fence agent failed (lab/build/logs/fence.log); node left as it is"
            ));
            continue;
        };
        // Off and on again, as a whole: a daemon the campaign started while the agent was at
        // work may have survived it, with the node's cables pulled.
        faults::power_cut(lab, n)?;
        faults::power_on(lab, n)?;
        o.note(format!(
            "fenced {n}: powered off by the fence agent at +{} ms, powered on again at +{} ms",
            off_at - r.start,
            now_ms() - r.start
        ));
    }
    Ok(())
}

type Heal = std::thread::JoinHandle<Result<()>>;

/// Applies one fault and heals it again. Operator commands are fired on a thread of their own
/// and keep going while the next faults happen; so do witness faults, which heal on their thread
/// (`heals`) so that they overlap the node faults that follow.
fn apply(
    r: &RunCx,
    f: &Fault,
    ops: &mut Vec<std::thread::JoinHandle<String>>,
    heals: &mut Vec<Heal>,
) -> Result<String> {
    let cx = r.cx;
    Ok(match *f {
        Fault::KillDaemon {
            node,
            restart_after_ms,
        } => {
            let n = resolve(cx, node);
            if let Some(s) = r.skipped(n, "kill -9 daemon") {
                return Ok(s);
            }
            let t = now_ms();
            let killed = faults::kill_daemon(&cx.lab, n).map(|_| ());
            if let Some(s) = r.tolerate(n, t, "kill -9 daemon", killed)? {
                return Ok(s);
            }
            pause(restart_after_ms);
            if r.fenced_since(n, t) {
                return Ok(format!(
                    "kill -9 daemon {n}; not restarted after {restart_after_ms} ms: the fence agent powered it off"
                ));
            }
            let started = cx.lab.ctl(&["start-daemon", n.letter()]).map(|_| ());
            if let Some(s) = r.tolerate(n, t, "restart", started)? {
                return Ok(format!("kill -9 daemon {n}; {s}"));
            }
            format!("kill -9 daemon {n}, restart after {restart_after_ms} ms")
        }
        Fault::PowerCut { node, off_ms } => {
            let n = resolve(cx, node);
            let t = now_ms();
            let cut = faults::power_cut(&cx.lab, n);
            pause(off_ms);
            let on = faults::power_on(&cx.lab, n);
            if let Some(s) = r.tolerate(n, t, "power on", on)? {
                return Ok(format!("power cut {n} for {off_ms} ms; {s}"));
            }
            cut?;
            format!("power cut {n} for {off_ms} ms")
        }
        Fault::PauseDaemon { node, ms } => {
            let n = resolve(cx, node);
            if let Some(s) = r.skipped(n, "SIGSTOP daemon") {
                return Ok(s);
            }
            let t = now_ms();
            let stopped = faults::pause_daemon(&cx.lab, n, true).map(|_| ());
            if let Some(s) = r.tolerate(n, t, "SIGSTOP daemon", stopped)? {
                return Ok(s);
            }
            pause(ms);
            let resumed = faults::pause_daemon(&cx.lab, n, false).map(|_| ());
            if let Some(s) = r.tolerate(n, t, "SIGCONT daemon", resumed)? {
                return Ok(format!("SIGSTOP daemon {n} for {ms} ms; {s}"));
            }
            format!("SIGSTOP daemon {n} for {ms} ms")
        }
        Fault::PauseDatabase { ms } => {
            let n = resolve(cx, Target::Active);
            if faults::pause_mysqld(&cx.lab, n, true).is_err() {
                return Ok(format!("SIGSTOP mariadbd {n}: none running, skipped"));
            }
            pause(ms);
            // The daemon may have stopped and replaced it meanwhile: resume whatever is there.
            let _ = faults::pause_mysqld(&cx.lab, n, false);
            format!("SIGSTOP mariadbd {n} for {ms} ms")
        }
        Fault::CutHeartbeatCable { ms } => {
            faults::set_link(Node::A, "hb0", false)?;
            pause(ms);
            faults::set_link(Node::A, "hb0", true)?;
            format!("cut hb cable for {ms} ms")
        }
        Fault::CutLan { ms } => {
            faults::set_port(Node::A, false)?;
            faults::set_port(Node::B, false)?;
            pause(ms);
            faults::set_port(Node::A, true)?;
            faults::set_port(Node::B, true)?;
            format!("cut the LAN (both nodes' ports) for {ms} ms")
        }
        Fault::DropOneWay { node, link, ms } => {
            let n = resolve(cx, node);
            faults::drop_heartbeats(n, link, 100, "tblab_nemesis")?;
            pause(ms);
            faults::undo_drop(n, "tblab_nemesis")?;
            format!("drop {n}'s heartbeats on {link} (one way) for {ms} ms")
        }
        Fault::Loss { link, percent, ms } => {
            for n in [Node::A, Node::B] {
                faults::drop_heartbeats(n, link, percent, "tblab_nemesis")?;
            }
            pause(ms);
            for n in [Node::A, Node::B] {
                faults::undo_drop(n, "tblab_nemesis")?;
            }
            format!("{percent}% heartbeat loss on {link} for {ms} ms")
        }
        Fault::Delay { link, delay_ms, ms } => {
            let wait = Duration::from_millis(delay_ms);
            let ifaces: Vec<&str> = link.split('+').collect();
            let mut held = Vec::new();
            for n in [Node::A, Node::B] {
                held.push(crate::delay::Delay::start(n, &ifaces, wait)?);
            }
            pause(ms);
            let mut sent = 0;
            for d in held {
                sent += d.stop()?;
            }
            // Both nodes beat several times a second: a delay that held nothing did not happen.
            if sent == 0 {
                bail!("the delay on {link} held no heartbeat in {ms} ms: is the NFQUEUE rule matching?");
            }
            format!("heartbeats on {link} delayed {delay_ms} ms for {ms} ms ({sent} held back)")
        }
        Fault::Isolate { node, ms } => {
            let n = resolve(cx, node);
            faults::isolate(n, true)?;
            pause(ms);
            faults::isolate(n, false)?;
            format!("isolate {n} for {ms} ms")
        }
        Fault::Operator { node, verb } => {
            let n = resolve(cx, node);
            let twinbeat = cx.lab.twinbeat.clone();
            ops.push(std::thread::spawn(move || {
                let sock = n.socket();
                let out = crate::lab::run_quiet(
                    &[
                        twinbeat.to_str().unwrap_or("twinbeat"),
                        verb,
                        "--socket",
                        sock.to_str().unwrap_or(""),
                    ],
                    90,
                );
                match out {
                    Ok(o) => format!(
                        "twinbeat {verb} on {n}: {}{}",
                        String::from_utf8_lossy(&o.stdout).trim(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => format!("twinbeat {verb} on {n}: {e}"),
                }
            }));
            format!("twinbeat {verb} on {n} (in the background)")
        }
        Fault::WitnessDown { restart_after_ms } => {
            faults::kill_witness()?;
            let lab = cx.lab.clone();
            heal_later(heals, restart_after_ms, move || {
                lab.ctl(&["start-witness"]).map(|_| ())
            });
            format!("kill -9 the witness, restart after {restart_after_ms} ms (in the background)")
        }
        Fault::WitnessPause { ms } => {
            faults::pause_witness(true)?;
            heal_later(heals, ms, || faults::pause_witness(false));
            format!("SIGSTOP the witness for {ms} ms (in the background)")
        }
        Fault::WitnessCut { ms } => {
            faults::set_witness_port(false)?;
            heal_later(heals, ms, || faults::set_witness_port(true));
            format!("cut the witness off the LAN for {ms} ms (in the background)")
        }
        Fault::WitnessCutFrom { node, ms } => {
            let n = resolve(cx, node);
            faults::cut_witness_from(n, true)?;
            heal_later(heals, ms, move || faults::cut_witness_from(n, false));
            format!("cut node {n} off the witness for {ms} ms (in the background)")
        }
    })
}

/// Heals a fault on its own thread after `ms`, while the schedule goes on.
fn heal_later(heals: &mut Vec<Heal>, ms: u64, heal: impl FnOnce() -> Result<()> + Send + 'static) {
    heals.push(std::thread::spawn(move || {
        pause(ms);
        heal()
    }));
}

#[derive(Debug, Serialize)]
struct RunReport {
    run: u32,
    seed: u64,
    schedule: Vec<Step>,
    outcome: Outcome,
}

#[derive(Debug, Serialize)]
struct CampaignReport<'a> {
    seed: u64,
    options: Options,
    runs: &'a [RunReport],
}

pub fn main(
    seed: u64,
    runs: u32,
    only: Option<u32>,
    max_faults: u32,
    opts: Options,
    json: &Path,
) -> Result<bool> {
    let cx = Ctx::new()?;
    let has_witness = crate::lab::has_witness();
    if opts.witness != has_witness {
        bail!(
            "{}",
            if opts.witness {
                "--witness needs a lab with a witness: use lab/campaign.sh --witness (it brings the lab up with LAB_WITNESS=1)"
            } else {
                "this lab has a witness (LAB_WITNESS=1): pass --witness, so the runs replay with it"
            }
        );
    }
    // Armed for the whole campaign, or disarmed whatever an earlier command left.
    fencing::arm(opts.fence.then_some("power-off"))?;
    let res = campaign(&cx, seed, runs, only, max_faults, opts, json);
    if opts.fence {
        let _ = fencing::arm(None);
    }
    res
}

fn campaign(
    cx: &Ctx,
    seed: u64,
    runs: u32,
    only: Option<u32>,
    max_faults: u32,
    opts: Options,
    json: &Path,
) -> Result<bool> {
    scenarios::healthy(cx).context("the lab is not healthy before the campaign")?;
    let list: Vec<u32> = match only {
        Some(r) => vec![r],
        None => (1..=runs).collect(),
    };
    let mut reports = Vec::new();
    for &run in &list {
        let s = run_seed(seed, run);
        let plan = plan(s, max_faults, opts);
        eprintln!(
            "{} nemesis: run {run} (seed {seed}{}, replay with --only {run}): {} fault(s)",
            scenarios::clock(),
            options_text(opts),
            plan.len()
        );
        let r = RunCx {
            cx,
            opts,
            start: now_ms(),
        };
        let mut o = Outcome::new(0, "nemesis run", run);
        if let Err(e) = one_run(&r, &plan, &mut o) {
            o.error = Some(format!("{e:#}"));
        }
        o.finish();
        eprintln!(
            "{} nemesis: run {run}: {}",
            scenarios::clock(),
            if o.passed { "PASS" } else { "FAIL" }
        );
        let recovered = recover(&r, &mut o);
        reports.push(RunReport {
            run,
            seed: s,
            schedule: plan,
            outcome: o,
        });
        if let Err(e) = recovered {
            eprintln!("nemesis: the pair did not recover after run {run}: {e:#}; stopping");
            break;
        }
    }
    print!("{}", render(seed, opts, &reports));
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = CampaignReport {
        seed,
        options: opts,
        runs: &reports,
    };
    std::fs::write(json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("JSON report: {}", json.display());
    Ok(reports.len() == list.len() && reports.iter().all(|r| r.outcome.passed))
}

fn options_text(opts: Options) -> String {
    let mut s = String::new();
    if opts.witness {
        s.push_str(", --witness");
    }
    if opts.delay {
        s.push_str(", --delay");
    }
    if opts.fence {
        s.push_str(", --fence power-off");
    }
    s
}

fn one_run(r: &RunCx, plan: &[Step], o: &mut Outcome) -> Result<()> {
    let cx = r.cx;
    let start = r.start;
    let sampler = Sampler::start();
    let mut ops = Vec::new();
    let mut heals = Vec::new();
    let mut applied = Ok(());
    for step in plan {
        pause(step.gap_before_ms);
        match apply(r, &step.fault, &mut ops, &mut heals) {
            Ok(what) => o.note(what),
            Err(e) => {
                applied = Err(e);
                break;
            }
        }
        // A node the fence agent powered off comes back when the step that was running heals.
        if let Err(e) = power_on_fenced(r, o) {
            applied = Err(e);
            break;
        }
    }
    // The witness faults heal on their own threads; the last heal is the last of them.
    for h in heals {
        let healed = h
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a witness fault's thread panicked")));
        if let Err(e) = healed {
            applied = applied.and(Err(e.context("healing a witness fault")));
        }
    }
    if applied.is_ok() {
        applied = power_on_fenced(r, o);
    }
    let healed = now_ms();
    // The service must come back by itself: one node active with the VIP, a write acknowledged.
    let back = wait_until(
        RECOVERY_BOUND,
        "the service back after the last heal",
        || {
            [Node::A, Node::B]
                .iter()
                .any(|&n| cx.lab.holds_vip(n) && cx.lab.state(n).as_deref() == Some("active"))
                && clientlog::acked(&cx.lab.logs)
                    .ok()
                    .and_then(|a| clientlog::first_ack_after(&a, healed))
                    .is_some()
        },
    );
    let back_at = now_ms();
    for h in ops {
        if let Ok(text) = h.join() {
            o.note(text);
        }
    }
    // A takeover after the last heal may still have fenced the peer: power it on to settle.
    let fenced_late = power_on_fenced(r, o);
    let settled = scenarios::healthy(cx);
    let samples = sampler.finish();
    applied?;
    fenced_late?;
    o.check(
        "service back within the bound after the last heal",
        back.is_ok(),
        format!(
            "{} ms (bound {} ms)",
            back_at - healed,
            RECOVERY_BOUND.as_millis()
        ),
    );
    o.figure("recovery_ms", Some(back_at - healed));
    if r.opts.fence {
        let fences = fencing::calls_after(&cx.lab, start)
            .iter()
            .filter(|c| c.mode == "power-off" && c.result == "ok")
            .count();
        o.figure("fences", Some(fences as i64));
    }
    let acked = clientlog::acked(&cx.lab.logs)?;
    let end = now_ms();
    let outages: Vec<i64> = acked
        .windows(2)
        .filter(|w| w[1].at_ms >= start && w[0].at_ms <= end)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .filter(|g| *g >= 300)
        .collect();
    let down: i64 = outages.iter().sum();
    o.figure(
        "longest_outage_ms",
        outages.iter().max().copied().or(Some(0)),
    );
    o.figure(
        "availability_permille",
        Some(1000 - down * 1000 / (end - start).max(1)),
    );
    o.figure("duration_ms", Some(end - start));
    for n in [Node::A, Node::B] {
        let ch = scenarios::describe_changes(cx, n, start)?;
        o.note(format!("node {n}: {}", scenarios::changes_text(&ch, start)));
    }
    settled.context("the pair did not settle (one active, one standby) after the run")?;
    scenarios::final_checks(cx, &samples, o)
}

/// Back to a healthy pair for the next run. A pair that does not get there by itself is a
/// finding (recorded by the run's checks); here a node the fence agent left off is powered on
/// and an operator's `takeover` is tried once so the campaign can go on.
fn recover(r: &RunCx, o: &mut Outcome) -> Result<()> {
    let cx = r.cx;
    power_on_fenced(r, o)?;
    if scenarios::healthy(cx).is_ok() {
        return Ok(());
    }
    for n in [Node::A, Node::B] {
        let _ = cx.lab.twinbeat_cmd(n, "takeover");
        if scenarios::healthy(cx).is_ok() {
            eprintln!("nemesis: needed `twinbeat takeover` on node {n} to recover");
            return Ok(());
        }
    }
    scenarios::healthy(cx).map(|_| ())
}

fn kind(f: &Fault) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v["fault"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn render(seed: u64, opts: Options, reports: &[RunReport]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n== nemesis campaign, seed {seed}{}",
        options_text(opts)
    );
    let _ = writeln!(
        o,
        "{:>4} {:>6} {:>5} {:>5} {:>7} {:>9} {:>9}  faults",
        "run", "result", "viol", "lost", "avail", "longest", "recovery"
    );
    let mut violations = 0;
    let mut lost_runs = 0;
    for r in reports {
        let f = &r.outcome.figures;
        let viol = r
            .outcome
            .checks
            .iter()
            .filter(|c| !c.ok && c.name.starts_with("never two"))
            .count();
        violations += viol;
        let lost = r
            .outcome
            .checks
            .iter()
            .any(|c| !c.ok && c.name.starts_with("every acknowledged"));
        lost_runs += usize::from(lost);
        let l = f.get("longest_outage_ms").copied().unwrap_or(0);
        let faults: Vec<&str> = r
            .outcome
            .notes
            .iter()
            .filter(|n| !n.starts_with("node ") && !n.starts_with("twinbeat "))
            .map(String::as_str)
            .collect();
        let _ = writeln!(
            o,
            "{:>4} {:>6} {:>5} {:>5} {:>6.1}% {:>7}ms {:>7}ms  {}",
            r.run,
            if r.outcome.passed { "PASS" } else { "FAIL" },
            viol,
            if lost { "YES" } else { "0" },
            f.get("availability_permille").copied().unwrap_or(0) as f64 / 10.0,
            l,
            f.get("recovery_ms").copied().unwrap_or(-1),
            faults.join("; ")
        );
        if !r.outcome.passed {
            if let Some(e) = &r.outcome.error {
                let _ = writeln!(o, "       error: {e}");
            }
            for c in r.outcome.checks.iter().filter(|c| !c.ok) {
                let _ = writeln!(o, "       FAIL {}: {}", c.name, c.detail);
            }
        }
    }
    let passed = reports.iter().filter(|r| r.outcome.passed).count();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in reports {
        for s in &r.schedule {
            *kinds.entry(kind(&s.fault)).or_default() += 1;
        }
    }
    let skipped = reports
        .iter()
        .flat_map(|r| &r.outcome.notes)
        .filter(|n| n.contains("skipped") || n.contains("not done") || n.contains("not restarted"))
        .count();
    let figure = |name: &str| -> Vec<i64> {
        reports
            .iter()
            .filter_map(|r| r.outcome.figures.get(name).copied())
            .collect()
    };
    let ms = |v: Option<i64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    let pct = |v: Option<i64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v as f64 / 10.0));
    let avail = figure("availability_permille");
    let longest = figure("longest_outage_ms");
    let back = figure("recovery_ms");
    let _ = writeln!(
        o,
        "\nruns: {} ({passed} passed, {} failed)",
        reports.len(),
        reports.len() - passed
    );
    let _ = writeln!(
        o,
        "faults by kind: {}",
        kinds
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        o,
        "faults skipped or cut short (nothing to hit, or the node was fenced): {skipped}"
    );
    if opts.fence {
        let fences = figure("fences");
        let _ = writeln!(
            o,
            "fences (the agent powered a node off): {} in {} runs",
            fences.iter().sum::<i64>(),
            fences.iter().filter(|&&f| f > 0).count()
        );
    }
    let _ = writeln!(
        o,
        "split-brain violations: {violations}; runs with a lost acknowledged write: {lost_runs}"
    );
    let _ = writeln!(
        o,
        "availability: median {}, min {}",
        pct(median(avail.clone())),
        pct(avail.iter().min().copied())
    );
    let _ = writeln!(
        o,
        "longest outage: median {}, max {}",
        ms(median(longest.clone())),
        ms(longest.iter().max().copied())
    );
    let _ = writeln!(
        o,
        "service back after the last heal: median {}, max {} (bound {} ms)",
        ms(median(back.clone())),
        ms(back.iter().max().copied()),
        RECOVERY_BOUND.as_millis()
    );
    let _ = writeln!(
        o,
        "nemesis: {} passed, {} failed",
        passed,
        reports.len() - passed
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let a = serde_json::to_string(&schedule(run_seed(7, 3), 3)).unwrap();
        let b = serde_json::to_string(&schedule(run_seed(7, 3), 3)).unwrap();
        let c = serde_json::to_string(&schedule(run_seed(7, 4), 3)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_fault_kind_is_drawn_and_counts_stay_in_bounds() {
        let mut kinds = std::collections::BTreeSet::new();
        for run in 0..300 {
            let plan = schedule(run_seed(1, run), 3);
            assert!((1..=3).contains(&plan.len()));
            for s in plan {
                assert!(s.gap_before_ms <= 2000);
                let v = serde_json::to_value(&s.fault).unwrap();
                kinds.insert(v["fault"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(kinds.len(), 10, "{kinds:?}");
    }

    #[test]
    fn schedules_without_options_are_those_of_earlier_campaigns() {
        // Seed 3 run 73 and seed 20261202 run 2 (test.sh's seed) as campaigns drew them before
        // the witness and fence options existed: replaying an old seed must give the old runs.
        let json = |seed, run| {
            serde_json::to_string(&plan(run_seed(seed, run), 3, Options::default())).unwrap()
        };
        assert_eq!(
            json(3, 73),
            r#"[{"gap_before_ms":816,"fault":{"fault":"power-cut","node":"standby","off_ms":999}},{"gap_before_ms":24,"fault":{"fault":"operator","node":"standby","verb":"takeover"}},{"gap_before_ms":134,"fault":{"fault":"cut-lan","ms":4636}}]"#
        );
        assert_eq!(
            json(20261202, 2),
            r#"[{"gap_before_ms":1108,"fault":{"fault":"power-cut","node":"active","off_ms":3775}},{"gap_before_ms":990,"fault":{"fault":"cut-lan","ms":2025}},{"gap_before_ms":1299,"fault":{"fault":"isolate","node":"active","ms":3779}}]"#
        );
        // The fence agent changes what the lab does, not what a run draws.
        let fenced = Options {
            fence: true,
            ..Options::default()
        };
        assert_eq!(
            serde_json::to_string(&plan(run_seed(3, 73), 3, fenced)).unwrap(),
            json(3, 73)
        );
    }

    #[test]
    fn witness_runs_keep_the_node_faults_and_add_at_most_one_witness_fault() {
        let opts = Options {
            witness: true,
            ..Options::default()
        };
        let mut kinds = std::collections::BTreeSet::new();
        let mut with = 0;
        for run in 0..400 {
            let s = run_seed(1, run);
            let base = serde_json::to_value(schedule(s, 3)).unwrap();
            let p = plan(s, 3, opts);
            let (w, nodes): (Vec<_>, Vec<_>) = p
                .iter()
                .partition(|st| kind(&st.fault).starts_with("witness"));
            assert_eq!(serde_json::to_value(&nodes).unwrap(), base, "run {run}");
            assert!(w.len() <= 1);
            with += w.len();
            for st in w {
                assert!(st.gap_before_ms <= 2000);
                kinds.insert(kind(&st.fault));
            }
            // Replayable: the same seed and options give the same plan.
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                serde_json::to_string(&plan(s, 3, opts)).unwrap()
            );
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(
            (250..=350).contains(&with),
            "{with} of 400 runs with a witness fault"
        );
    }

    #[test]
    fn delay_runs_keep_the_other_faults_and_add_at_most_one_bounded_delay() {
        let mut links = std::collections::BTreeSet::new();
        let mut with = 0;
        for run in 0..400 {
            let s = run_seed(2, run);
            for witness in [false, true] {
                let without = Options {
                    witness,
                    ..Options::default()
                };
                let opts = Options {
                    delay: true,
                    ..without
                };
                let base = serde_json::to_value(plan(s, 3, without)).unwrap();
                let p = plan(s, 3, opts);
                let (d, rest): (Vec<_>, Vec<_>) =
                    p.iter().partition(|st| kind(&st.fault) == "delay");
                assert_eq!(serde_json::to_value(&rest).unwrap(), base, "run {run}");
                assert!(d.len() <= 1);
                with += d.len();
                for st in d {
                    let Fault::Delay { link, delay_ms, ms } = st.fault else {
                        unreachable!()
                    };
                    assert!((100..=3000).contains(&delay_ms) && (2000..=8000).contains(&ms));
                    links.insert(link);
                }
            }
        }
        assert_eq!(links.len(), 3, "{links:?}");
        assert!(
            (500..=700).contains(&with),
            "{with} of 800 plans with a delay"
        );
    }

    #[test]
    fn splitmix_matches_its_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut r = SplitMix(0);
        assert_eq!(r.next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next(), 0x6e78_9e6a_a1b9_65f4);
    }
}
