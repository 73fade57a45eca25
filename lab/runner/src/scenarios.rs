//! The nine scenarios (the drill's is in drill.rs, fencing's in fencing.rs). Each starts from a healthy pair (one active, one standby, both
//! heard on every link, the client writing, the replica replicating), injects its fault with
//! the split-brain sampler running, waits (bounded) for the outcome, restores the pair, and
//! ends with the data checks. Figures are taken from the client's logs (write and VIP gaps),
//! the daemons' logs (detection, external command time) and `twinbeat status` (step times).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::checks;
use crate::clientlog;
use crate::daemonlog;
use crate::faults;
use crate::lab::{now_ms, wait_until, Lab, Node, NODES};
use crate::report::{self, Outcome, Report, Target};
use crate::sampler::{Sampler, Samples};

const NAMES: [&str; 9] = [
    "power cut of the active node",
    "kill -9 of the active daemon only",
    "dedicated heartbeat link cut",
    "active node cut off from the peer and the LAN",
    "standby and takeover switchovers",
    "mysqld crashes on the active node",
    "active daemon paused past deadtime",
    "failover drill there and back, as the timer runs it",
    "isolation with a fence agent that works, then one that fails",
];

/// A pause this long between two acknowledged writes is an outage (the writer writes every 20 ms).
const OUTAGE_MS: i64 = 300;

/// What systemd does for a daemon killed by a signal: Restart=on-failure, RestartSec=2s
/// (systemd/twinbeat.service).
const SYSTEMD_RESTART_SEC: Duration = Duration::from_secs(2);

pub(crate) struct Ctx {
    pub lab: Lab,
    pub keepalive: i64,
    pub deadtime: i64,
    pub initdead: i64,
    pub restart_limit: i64,
    pub restart_window: i64,
}

impl Ctx {
    /// The running lab, with the timings and limits its daemons were started with.
    pub fn new() -> Result<Ctx> {
        let lab = Lab::new()?;
        let st = lab
            .status(Node::A)
            .context("node a does not answer `twinbeat status`; is the lab up?")?;
        let [keepalive, deadtime, initdead, restart_limit, restart_window] = read_config(&st)?;
        Ok(Ctx {
            lab,
            keepalive,
            deadtime,
            initdead,
            restart_limit,
            restart_window,
        })
    }
}

pub fn main(which: &[u8], trials: u32, json: &Path) -> Result<bool> {
    let which: Vec<u8> = if which.is_empty() {
        (1..=NAMES.len() as u8).collect()
    } else {
        which.to_vec()
    };
    if let Some(bad) = which.iter().find(|s| !(1..=NAMES.len() as u8).contains(*s)) {
        bail!("no scenario {bad}; the scenarios are 1 to {}", NAMES.len());
    }
    let cx = Ctx::new()?;
    healthy(&cx).context("the lab is not healthy before the first scenario")?;
    let idle = idle_footprint(&cx.lab, Duration::from_secs(10))?;
    let mut outcomes = Vec::new();
    'all: for &s in &which {
        for trial in 1..=trials {
            eprintln!(
                "{} lab: scenario {s} ({}), trial {trial}",
                clock(),
                NAMES[s as usize - 1]
            );
            let mut o = Outcome::new(s, NAMES[s as usize - 1], trial);
            if let Err(e) = run_one(&cx, s, &mut o) {
                o.error = Some(format!("{e:#}"));
            }
            o.finish();
            eprintln!(
                "{} lab: scenario {s}: {}",
                clock(),
                if o.passed { "PASS" } else { "FAIL" }
            );
            outcomes.push(o);
            if let Err(e) = healthy(&cx) {
                eprintln!("lab: the pair did not recover after scenario {s}: {e:#}; stopping");
                break 'all;
            }
        }
    }
    let medians = report::medians(&outcomes);
    let targets = targets(&cx, &medians, &idle);
    let mut timings = BTreeMap::new();
    timings.insert("keepalive".into(), cx.keepalive);
    timings.insert("deadtime".into(), cx.deadtime);
    let passed =
        outcomes.len() == which.len() * trials as usize && outcomes.iter().all(|o| o.passed);
    let r = Report {
        timings,
        idle,
        outcomes,
        medians,
        targets,
        passed,
    };
    print!("{}", report::render(&r));
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("JSON report: {}", json.display());
    Ok(passed)
}

pub(crate) fn clock() -> String {
    let ms = now_ms();
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (ms / 3_600_000) % 24,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// The timings and restart limits from the config the daemon was started with (`twinbeat
/// status` names the file but does not carry them). The restart values default as in the
/// validator: 3 restarts in 300 s.
fn read_config(st: &Value) -> Result<[i64; 5]> {
    let path = st["config"].as_str().context("status has no config path")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let v: toml::Table = text
        .parse()
        .with_context(|| format!("cannot parse {path}"))?;
    let get = |table: &str, k: &str, default: Option<i64>| {
        v.get(table)
            .and_then(|t| t.get(k))
            .and_then(toml::Value::as_integer)
            .or(default)
            .with_context(|| format!("{path}: no [{table}] {k}"))
    };
    Ok([
        get("timing", "keepalive-ms", None)?,
        get("timing", "deadtime-ms", None)?,
        get("timing", "initdead-ms", None)?,
        get("failover", "restart-limit", Some(3))?,
        get("failover", "restart-window-ms", Some(300_000))?,
    ])
}

fn run_one(cx: &Ctx, s: u8, o: &mut Outcome) -> Result<()> {
    let (active, standby) = healthy(cx)?;
    o.note(format!(
        "before: node {active} active, node {standby} standby"
    ));
    match s {
        1 => power_cut(cx, active, o),
        2 => kill_daemon(cx, active, o),
        3 => heartbeat_link_cut(cx, active, o),
        4 => isolation(cx, active, o),
        5 => switchovers(cx, active, o),
        6 => mysqld_crash(cx, active, o),
        7 => paused_daemon(cx, active, o),
        8 => crate::drill::drill(cx, active, o),
        9 => crate::fencing::fencing(cx, active, o),
        _ => unreachable!("checked in main"),
    }
}

fn state_of(st: &Option<Value>) -> &str {
    st.as_ref()
        .and_then(|s| s["core"]["state"].as_str())
        .unwrap_or("unreachable")
}

fn peer_alive_on_all_links(st: &Value) -> bool {
    st["core"]["peer"]["view"] == "alive"
        && st["core"]["links"]
            .as_array()
            .is_some_and(|l| l.iter().all(|l| l["up"] == true))
}

/// Waits (bounded) for the steady state every scenario starts from and ends in.
pub(crate) fn healthy(cx: &Ctx) -> Result<(Node, Node)> {
    let lab = &cx.lab;
    let mut why = String::new();
    let mut found = None;
    let res = wait_until(Duration::from_secs(60), "a healthy pair", || {
        let sa = lab.status(Node::A);
        let sb = lab.status(Node::B);
        let (a, b) = (state_of(&sa), state_of(&sb));
        let active = match (a, b) {
            ("active", "standby") => Node::A,
            ("standby", "active") => Node::B,
            _ => {
                why = format!("node a {a}, node b {b}");
                return false;
            }
        };
        let both_hear = [&sa, &sb]
            .iter()
            .all(|s| s.as_ref().is_some_and(peer_alive_on_all_links));
        if !both_hear {
            why = "the nodes do not hear each other on every link".into();
            return false;
        }
        // A standby still in initdead (restarted by the previous scenario) would not take
        // over yet, and the next fault would test that instead of what it means to.
        let standby_st = if active == Node::A { &sb } else { &sa };
        let up = standby_st
            .as_ref()
            .and_then(|s| s["uptime_ms"].as_i64())
            .unwrap_or(0);
        if up < cx.initdead {
            why = format!("the standby is still in initdead (up {up} ms)");
            return false;
        }
        if !lab.holds_vip(active) || lab.holds_vip(active.other()) {
            why = format!("the VIP is not on node {active} alone");
            return false;
        }
        // With a witness (LAB_WITNESS=1): the active node holds the lease and the standby hears
        // the witness, or the next fault would find a witness still in its quiet period.
        if crate::lab::has_witness() {
            let active_st = if active == Node::A { &sa } else { &sb };
            let lease = active_st
                .as_ref()
                .and_then(|s| s["core"]["lease"]["valid_for_ms"].as_i64())
                .unwrap_or(0);
            let standby_hears = standby_st
                .as_ref()
                .is_some_and(|s| s["witness"]["reachable"] == true);
            if lease <= 0 || !standby_hears {
                why =
                    format!(
                    "the witness: node {active}'s lease valid for {lease} ms, the standby {} it",
                    if standby_hears { "hears" } else { "does not hear" }
                );
                return false;
            }
        }
        let last = clientlog::acked(&lab.logs)
            .ok()
            .and_then(|a| a.last().copied());
        if last.is_none_or(|w| now_ms() - w.at_ms > 1000) {
            why = "no write acknowledged in the last second".into();
            return false;
        }
        let rs = checks::replica_status().unwrap_or_default();
        if rs.get("Slave_IO_Running").map(String::as_str) != Some("Yes")
            || rs.get("Slave_SQL_Running").map(String::as_str) != Some("Yes")
        {
            why = "the replica is not replicating".into();
            return false;
        }
        found = Some((active, active.other()));
        true
    });
    match (res, found) {
        (Ok(()), Some(f)) => Ok(f),
        (Err(e), _) => Err(e.context(format!("last seen: {why}"))),
        (Ok(()), None) => unreachable!("wait_until returned without the condition"),
    }
}

/// The newest acquiring → active transition in a node's status: (total, [(step, ms)]).
fn last_takeover_steps(st: &Value) -> Option<(i64, Vec<(String, i64)>)> {
    let t = st["core"]["transitions"]
        .as_array()?
        .iter()
        .rev()
        .find(|t| t["from"] == "acquiring" && t["to"] == "active")?;
    let steps = t["steps"]
        .as_array()?
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s["elapsed_ms"].as_i64()?)))
        .collect();
    Some((t["total_ms"].as_i64()?, steps))
}

/// Detection, step times and twinbeat's own overhead of the takeover `survivor` began after `t`.
fn takeover_figures(cx: &Ctx, survivor: Node, t: i64, o: &mut Outcome) -> Result<()> {
    let lines = daemonlog::read(&cx.lab.daemon_log(survivor))?;
    let ch = daemonlog::changes(&lines, t);
    let acq = ch.iter().find(|c| c.to == "acquiring");
    let act = ch.iter().find(|c| c.to == "active");
    if let (Some(acq), Some(act)) = (acq, act) {
        o.figure("detection_ms", Some(acq.at_ms - t));
        let total = act.at_ms - acq.at_ms;
        let external = daemonlog::external_ms(&lines, acq.at_ms, act.at_ms);
        o.figure("takeover_ms", Some(total));
        o.figure("external_commands_ms", Some(external));
        o.figure("twinbeat_overhead_ms", Some(total - external));
        o.note(format!("node {survivor} took over: {}", acq.cause));
    }
    if let Some((_, steps)) = cx
        .lab
        .status(survivor)
        .as_ref()
        .and_then(last_takeover_steps)
    {
        for (name, ms) in steps {
            o.figure(&format!("step_{name}_ms"), Some(ms));
        }
    }
    Ok(())
}

/// Client-side figures over [t, now]: longest write gap, longest VIP outage, and how long the
/// replica took to hold the first write acknowledged after the fault.
pub(crate) fn client_figures(cx: &Ctx, t: i64, o: &mut Outcome, prefix: &str) -> Result<()> {
    // A gap still open now would be measured short: wait for the write that closes it.
    wait_ack_after(cx, now_ms(), Duration::from_secs(15))?;
    let now = now_ms();
    let acked = clientlog::acked(&cx.lab.logs)?;
    o.figure(
        &format!("{prefix}write_gap_ms"),
        clientlog::write_gap(&acked, t, now),
    );
    let edges = clientlog::vip_edges(&cx.lab.logs)?;
    o.figure(
        &format!("{prefix}vip_gap_ms"),
        Some(clientlog::vip_gap(&edges, t, now).unwrap_or(0)),
    );
    // After an outage: how long the replica took to hold the write that ended it (polled from
    // now on, so an upper bound). Without an outage there is nothing to catch up.
    let resumed = acked
        .windows(2)
        .filter(|w| w[1].at_ms >= t && w[1].at_ms - w[0].at_ms >= OUTAGE_MS)
        .max_by_key(|w| w[1].at_ms - w[0].at_ms)
        .map(|w| w[1]);
    if let Some(first) = resumed {
        o.figure(
            &format!("{prefix}replica_catchup_ms"),
            checks::replica_catchup(&cx.lab, first.id, first.at_ms),
        );
    }
    Ok(())
}

/// The checks every scenario ends with.
pub(crate) fn final_checks(cx: &Ctx, samples: &Samples, o: &mut Outcome) -> Result<()> {
    o.check(
        "never two VIP holders",
        samples.both_vip.is_empty(),
        format!(
            "{} samples, {} with both nodes holding the VIP",
            samples.count,
            samples.both_vip.len()
        ),
    );
    o.check(
        "never two writable databases",
        samples.both_writable.is_empty(),
        format!(
            "{} samples, {} with both databases writable",
            samples.count,
            samples.both_writable.len()
        ),
    );
    let d = checks::data(&cx.lab)?;
    o.check(
        "every acknowledged write on the primary",
        d.no_write_lost(),
        format!(
            "{} acknowledged, {} missing{}; {} in doubt, {} of them committed",
            d.acked,
            d.missing.len(),
            if d.missing.is_empty() {
                String::new()
            } else {
                format!(" (first: {:?})", &d.missing[..d.missing.len().min(10)])
            },
            d.indoubt,
            d.indoubt_committed
        ),
    );
    o.check(
        "replica consistent, no replication error",
        d.replica_consistent(),
        format!(
            "primary {} rows, replica {} rows in the same range{}",
            d.primary_rows,
            d.replica_rows,
            if d.replica_error.is_empty() {
                String::new()
            } else {
                format!("; {}", d.replica_error)
            }
        ),
    );
    o.check(
        "the VIP answers the client",
        checks::vip_answers(),
        "ping from the client namespace",
    );
    Ok(())
}

fn wait_state(cx: &Ctx, n: Node, want: &[&str], limit: Duration, what: &str) -> Result<()> {
    wait_until(limit, what, || {
        let s = cx.lab.state(n);
        s.as_deref().is_some_and(|s| want.contains(&s))
    })
}

fn wait_active_with_vip(cx: &Ctx, n: Node, limit: Duration) -> Result<()> {
    wait_until(
        limit,
        &format!("node {n} active and holding the VIP"),
        || cx.lab.state(n).as_deref() == Some("active") && cx.lab.holds_vip(n),
    )
}

pub(crate) fn wait_ack_after(cx: &Ctx, t: i64, limit: Duration) -> Result<()> {
    wait_until(limit, "a write acknowledged after the fault", || {
        clientlog::acked(&cx.lab.logs)
            .ok()
            .and_then(|a| clientlog::first_ack_after(&a, t))
            .is_some()
    })
}

pub(crate) fn describe_changes(cx: &Ctx, n: Node, t: i64) -> Result<Vec<daemonlog::Change>> {
    Ok(daemonlog::changes(
        &daemonlog::read(&cx.lab.daemon_log(n))?,
        t,
    ))
}

pub(crate) fn changes_text(ch: &[daemonlog::Change], t: i64) -> String {
    if ch.is_empty() {
        return "no state change".into();
    }
    ch.iter()
        .map(|c| format!("+{} ms {}→{} ({})", c.at_ms - t, c.from, c.to, c.cause))
        .collect::<Vec<_>>()
        .join("; ")
}

// --- 1 ----------------------------------------------------------------------------------------

fn power_cut(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    let t = match faults::power_cut(&cx.lab, x) {
        Ok(t) => t,
        Err(e) => {
            // Half a power cut: give the node its cables and daemon back, so the pair can
            // still recover for the next scenario.
            sampler.finish();
            let _ = faults::power_on(&cx.lab, x);
            return Err(e);
        }
    };
    o.note(format!(
        "node {x} lost power: ext4 shut down without a journal flush, daemon and mariadbd killed, disk, VIP and links gone"
    ));
    let outcome = wait_active_with_vip(cx, y, Duration::from_secs(30))
        .and_then(|_| wait_ack_after(cx, t, Duration::from_secs(15)));
    let samples = sampler.finish();
    // Power comes back whatever happened, so the pair can recover for the next scenario.
    let restored = faults::power_on(&cx.lab, x);
    outcome?;
    takeover_figures(cx, y, t, o)?;
    client_figures(cx, t, o, "")?;
    restored?;
    wait_state(
        cx,
        x,
        &["standby"],
        Duration::from_secs(30),
        "the powered-on node to join as standby",
    )?;
    o.note(format!(
        "node {x} powered on and joined as standby (no failback)"
    ));
    final_checks(cx, &samples, o)
}

// --- 2 ----------------------------------------------------------------------------------------

fn kill_daemon(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    let t = faults::kill_daemon(&cx.lab, x)?;
    // Emulates systemd's Restart=on-failure: not a wait for an event, the delay IS the scenario.
    std::thread::sleep(SYSTEMD_RESTART_SEC);
    let restarted = now_ms();
    cx.lab.ctl(&["start-daemon", x.letter()])?;
    let outcome = wait_until(
        Duration::from_secs(30),
        "one node active with the VIP and the other standby, after the restart",
        || {
            let (sx, sy) = (cx.lab.state(x), cx.lab.state(y));
            matches!(
                (sx.as_deref(), sy.as_deref()),
                (Some("active"), Some("standby")) | (Some("standby"), Some("active"))
            )
        },
    );
    // Settle: the peer must also have finished any refused attempt.
    let samples = sampler.finish();
    outcome?;
    let ch_y = describe_changes(cx, y, t)?;
    let ch_x = describe_changes(cx, x, restarted)?;
    o.note(format!(
        "node {y} (standby) after the kill: {}",
        changes_text(&ch_y, t)
    ));
    o.note(format!(
        "node {x} restarted {} ms after the kill: {}",
        restarted - t,
        changes_text(&ch_x, t)
    ));
    let attempts = ch_y.iter().filter(|c| c.to == "acquiring").count();
    o.figure("standby_takeover_attempts", Some(attempts as i64));
    let holder = samples.sole_vip_holder();
    o.check(
        "the service never left the node whose daemon died",
        holder == Some(x),
        format!(
            "VIP holder at every sample: {}",
            holder.map(|n| n.to_string()).unwrap_or("changed".into())
        ),
    );
    client_figures(cx, t, o, "")?;
    let gap = o.figures.get("write_gap_ms").copied();
    o.check(
        "writes went on (mariadbd kept running)",
        gap.is_some_and(|g| g < cx.deadtime),
        format!("longest write gap {} ms", gap.unwrap_or(-1)),
    );
    final_checks(cx, &samples, o)
}

// --- 3 ----------------------------------------------------------------------------------------

fn heartbeat_link_cut(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    let t = now_ms();
    faults::set_link(x, "hb0", false)?;
    let link_down = |n: Node| {
        cx.lab.status(n).is_some_and(|s| {
            s["core"]["links"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["name"] == "hb" && l["up"] == false))
        })
    };
    let noticed = wait_until(
        Duration::from_secs(10),
        "both nodes' status to show the hb link down",
        || NODES.iter().all(|&n| link_down(n)),
    );
    let noticed_at = now_ms();
    // Nothing may happen: watching for a fixed window IS the test (at least 3 deadtimes).
    let hold = Duration::from_millis((3 * cx.deadtime).max(5000) as u64);
    std::thread::sleep(hold);
    let warn_x = cx
        .lab
        .status(x)
        .map(|s| render_links(&s))
        .unwrap_or_default();
    let restored = faults::set_link(x, "hb0", true);
    let samples = sampler.finish();
    noticed?;
    restored?;
    o.figure("link_down_shown_after_ms", Some(noticed_at - t));
    o.note(format!("node {x} status during the cut: {warn_x}"));
    let (ch_x, ch_y) = (describe_changes(cx, x, t)?, describe_changes(cx, y, t)?);
    o.check(
        "no failover, no state change on either node",
        ch_x.is_empty() && ch_y.is_empty(),
        format!(
            "node {x}: {}; node {y}: {}",
            changes_text(&ch_x, t),
            changes_text(&ch_y, t)
        ),
    );
    o.check(
        "status warned: the hb link shown down on both nodes",
        true,
        format!("within {} ms", noticed_at - t),
    );
    let holder = samples.sole_vip_holder();
    o.check(
        "the VIP stayed on the active node",
        holder == Some(x),
        holder
            .map(|n| format!("node {n} at every sample"))
            .unwrap_or("the holder changed".into()),
    );
    let acked = clientlog::acked(&cx.lab.logs)?;
    let gap = clientlog::write_gap(&acked, t, now_ms());
    o.figure("write_gap_ms", gap);
    wait_until(
        Duration::from_secs(10),
        "the hb link back up on both nodes",
        || NODES.iter().all(|&n| !link_down(n)),
    )?;
    final_checks(cx, &samples, o)
}

fn render_links(st: &Value) -> String {
    st["core"]["links"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| {
                    format!(
                        "{} {}",
                        l["name"].as_str().unwrap_or("?"),
                        if l["up"] == true { "up" } else { "DOWN" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

// --- 4 ----------------------------------------------------------------------------------------

fn isolation(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    let t = now_ms();
    faults::isolate(x, true)?;
    let outcome = wait_active_with_vip(cx, y, Duration::from_secs(30)).and_then(|_| {
        wait_until(
            Duration::from_secs(30),
            &format!("node {x} to give up the VIP"),
            || !cx.lab.holds_vip(x),
        )
    });
    let during_x = cx.lab.state(x).unwrap_or("unreachable".into());
    let healed_at = now_ms();
    let healed = faults::isolate(x, false);
    let after = outcome.and_then(|_| {
        wait_until(
            Duration::from_secs(30),
            "one node active, the other standby, after the heal",
            || {
                matches!(
                    (cx.lab.state(x).as_deref(), cx.lab.state(y).as_deref()),
                    (Some("standby"), Some("active"))
                )
            },
        )
    });
    let samples = sampler.finish();
    healed?;
    let ch_x = describe_changes(cx, x, t)?;
    let ch_y = describe_changes(cx, y, t)?;
    o.note(format!("isolated node {x}: {}", changes_text(&ch_x, t)));
    o.note(format!("node {y}: {}", changes_text(&ch_y, t)));
    o.note(format!(
        "node {x} was {during_x} while cut off; {} ms after the heal node {y} still serves, node {x} is standby",
        now_ms() - healed_at
    ));
    after?;
    if let Some(d) = ch_x.iter().find(|c| c.from == "active") {
        o.figure("isolated_node_demoted_ms", Some(d.at_ms - t));
    }
    takeover_figures(cx, y, t, o)?;
    client_figures(cx, t, o, "")?;
    final_checks(cx, &samples, o)
}

// --- 5 ----------------------------------------------------------------------------------------

fn switchovers(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    for (verb, on, to, prefix) in [
        ("standby", x, y, "standby_"),
        ("takeover", x, x, "takeover_"),
    ] {
        let t = now_ms();
        let out = cx.lab.twinbeat_cmd(on, verb)?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "twinbeat {verb} on node {on} failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        o.note(format!("twinbeat {verb} on node {on}: {text}"));
        let gap = text
            .rsplit_once("service gap ")
            .and_then(|(_, g)| g.trim_end_matches(" ms").parse().ok());
        o.figure(&format!("{prefix}service_gap_ms"), gap);
        wait_active_with_vip(cx, to, Duration::from_secs(30))?;
        wait_ack_after(cx, now_ms(), Duration::from_secs(15))?;
        client_figures(cx, t, o, prefix)?;
        // The target: the receiver's clean stop of mysqld + start + 300 ms.
        let giver = to.other();
        let stop = step_ms(cx, giver, "releasing", "mysql");
        let start = step_ms(cx, to, "acquiring", "mysql");
        if let (Some(a), Some(b)) = (stop, start) {
            o.figure(&format!("{prefix}mysql_stop_plus_start_ms"), Some(a + b));
        }
    }
    let samples = sampler.finish();
    final_checks(cx, &samples, o)
}

/// The time of `step` in the node's newest transition out of `from` (releasing or acquiring).
fn step_ms(cx: &Ctx, n: Node, from: &str, step: &str) -> Option<i64> {
    let st = cx.lab.status(n)?;
    st["core"]["transitions"]
        .as_array()?
        .iter()
        .rev()
        .find(|t| t["from"] == from)?["steps"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == step)?["elapsed_ms"]
        .as_i64()
}

// --- 6 ----------------------------------------------------------------------------------------

fn mysqld_crash(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    let restarts = |n: Node| {
        cx.lab
            .status(n)
            .and_then(|s| s["core"]["restarts"].as_i64())
            .unwrap_or(-1)
    };
    let mut restart_gaps = Vec::new();
    let mut handed_over_after = None;
    let first = now_ms();
    // Restarts an earlier trial left inside the window count against the limit.
    let earlier = daemonlog::changes(
        &daemonlog::read(&cx.lab.daemon_log(x))?,
        first - cx.restart_window,
    )
    .iter()
    .filter(|c| c.from == "active" && c.cause.starts_with("restart of "))
    .count() as i64;
    let expected = (cx.restart_limit - earlier).max(0) as usize;
    // restart-limit (3 by default) restarts, then the hand-over: bounded at 6 crashes.
    let res = (|| -> Result<()> {
        for crash in 1..=6 {
            let before = restarts(x);
            let t = faults::kill_mysqld(&cx.lab, x)?;
            let mut moved = false;
            wait_until(
                Duration::from_secs(30),
                "mysqld restarted on the same node, or the service handed to the peer",
                || {
                    if cx.lab.state(y).as_deref() == Some("active") && cx.lab.holds_vip(y) {
                        moved = true;
                        return true;
                    }
                    restarts(x) > before
                        && cx.lab.state(x).as_deref() == Some("active")
                        && cx.lab.mysqld_pid(x).is_some()
                        && cx.lab.holds_vip(x)
                },
            )?;
            wait_ack_after(cx, now_ms(), Duration::from_secs(15))?;
            let acked = clientlog::acked(&cx.lab.logs)?;
            let gap = clientlog::write_gap(&acked, t, now_ms());
            if moved {
                handed_over_after = Some(crash);
                o.figure("handover_write_gap_ms", gap);
                takeover_figures(cx, y, t, o)?;
                return Ok(());
            }
            if let Some(g) = gap {
                restart_gaps.push(g);
            }
        }
        Ok(())
    })();
    let samples = sampler.finish();
    res?;
    o.figure("restart_write_gap_ms", report::median(restart_gaps.clone()));
    o.figure(
        "crashes_until_handover",
        handed_over_after.map(|c| c as i64),
    );
    o.note(format!(
        "restart write gaps (ms): {restart_gaps:?}; node {x}: {}",
        changes_text(&describe_changes(cx, x, first)?, first)
    ));
    o.check(
        "a crashed mysqld is restarted in place, up to the restart limit",
        restart_gaps.len() == expected,
        format!(
            "{} restart(s) on node {x} before the hand-over; expected {expected} (limit {}, {earlier} already in the last {} s)",
            restart_gaps.len(),
            cx.restart_limit,
            cx.restart_window / 1000
        ),
    );
    o.check(
        "past the restart limit, the peer takes the service",
        handed_over_after.is_some(),
        format!(
            "handed over after crash {}",
            handed_over_after
                .map(|c| c.to_string())
                .unwrap_or("-".into())
        ),
    );
    wait_state(
        cx,
        x,
        &["standby"],
        Duration::from_secs(30),
        "the node that handed over to be standby again",
    )?;
    final_checks(cx, &samples, o)
}

// --- 7 ----------------------------------------------------------------------------------------

fn paused_daemon(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let sampler = Sampler::start();
    let t = faults::pause_daemon(&cx.lab, x, true)?;
    // Paused for deadtime + 2 s: the pause length IS the fault.
    std::thread::sleep(Duration::from_millis((cx.deadtime + 2000) as u64));
    let resumed = faults::pause_daemon(&cx.lab, x, false)?;
    let outcome = wait_until(
        Duration::from_secs(30),
        "one node active with the VIP and the other standby, after the pause",
        || {
            let (sx, sy) = (cx.lab.state(x), cx.lab.state(y));
            match (sx.as_deref(), sy.as_deref()) {
                (Some("active"), Some("standby")) => cx.lab.holds_vip(x) && !cx.lab.holds_vip(y),
                (Some("standby"), Some("active")) => cx.lab.holds_vip(y) && !cx.lab.holds_vip(x),
                _ => false,
            }
        },
    );
    let samples = sampler.finish();
    outcome?;
    o.figure("paused_ms", Some(resumed - t));
    let ch_x = describe_changes(cx, x, t)?;
    let ch_y = describe_changes(cx, y, t)?;
    o.note(format!("paused node {x}: {}", changes_text(&ch_x, t)));
    o.note(format!("node {y}: {}", changes_text(&ch_y, t)));
    let end_active = if cx.lab.state(x).as_deref() == Some("active") {
        x
    } else {
        y
    };
    o.note(format!("afterwards node {end_active} serves"));
    client_figures(cx, t, o, "")?;
    final_checks(cx, &samples, o)
}

// --- figures beyond the scenarios ---------------------------------------------------------------

/// Resident memory and CPU of each daemon over `window` while nothing happens.
fn idle_footprint(lab: &Lab, window: Duration) -> Result<BTreeMap<String, f64>> {
    let ticks = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64;
    let cpu = |pid: i32| -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm) ".
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    };
    let rss_kb = |pid: i32| -> Option<f64> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let pids: Vec<(Node, i32)> = NODES
        .iter()
        .map(|&n| Ok((n, lab.daemon_pid(n).context("daemon pid")?)))
        .collect::<Result<_>>()?;
    let before: Vec<Option<f64>> = pids.iter().map(|(_, p)| cpu(*p)).collect();
    std::thread::sleep(window);
    let mut out = BTreeMap::new();
    for ((n, pid), b) in pids.iter().zip(before) {
        let a = cpu(*pid);
        if let (Some(a), Some(b)) = (a, b) {
            out.insert(
                format!("cpu_pct_{n}"),
                (a - b) / ticks / window.as_secs_f64() * 100.0,
            );
        }
        if let Some(r) = rss_kb(*pid) {
            out.insert(format!("rss_mb_{n}"), r / 1024.0);
        }
    }
    Ok(out)
}

fn targets(
    cx: &Ctx,
    med: &BTreeMap<u8, BTreeMap<String, i64>>,
    idle: &BTreeMap<String, f64>,
) -> Vec<Target> {
    let get = |s: u8, k: &str| med.get(&s).and_then(|f| f.get(k)).copied();
    let le = |what: &str, target: String, measured: Option<i64>, limit: Option<i64>| Target {
        what: what.to_string(),
        target,
        measured: measured.map(|m| m as f64),
        met: measured.zip(limit).map(|(m, l)| m <= l),
    };
    let det = cx.deadtime + cx.keepalive;
    let mut t = vec![
        le(
            "detection after a power cut (median, ms)",
            format!("<= {det} (deadtime + keepalive)"),
            get(1, "detection_ms"),
            Some(det),
        ),
        le(
            "twinbeat's own overhead in a takeover (ms)",
            "<= 50".into(),
            get(1, "twinbeat_overhead_ms"),
            Some(50),
        ),
        le(
            "crash (power cut) write gap (median, ms)",
            "<= 2000".into(),
            get(1, "write_gap_ms"),
            Some(2000),
        ),
    ];
    for p in ["standby_", "takeover_"] {
        let base = get(5, &format!("{p}mysql_stop_plus_start_ms"));
        t.push(le(
            &format!(
                "switchover ({}) write gap (median, ms)",
                p.trim_end_matches('_')
            ),
            format!(
                "<= {} (mysqld stop + start + 300)",
                base.map(|b| (b + 300).to_string()).unwrap_or("?".into())
            ),
            get(5, &format!("{p}write_gap_ms")),
            base.map(|b| b + 300),
        ));
    }
    for n in NODES {
        let rss = idle.get(&format!("rss_mb_{n}")).copied();
        let cpu = idle.get(&format!("cpu_pct_{n}")).copied();
        t.push(Target {
            what: format!("idle daemon {n}: resident memory (MB)"),
            target: "<= 15".into(),
            measured: rss,
            met: rss.map(|r| r <= 15.0),
        });
        t.push(Target {
            what: format!("idle daemon {n}: CPU (% of one core)"),
            target: "<= 1".into(),
            measured: cpu,
            met: cpu.map(|c| c <= 1.0),
        });
    }
    t
}
