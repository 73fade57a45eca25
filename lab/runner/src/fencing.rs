//! Scenario 9: fencing with the lab's fence agent (`lab/bin/fence-standin`), armed for this
//! scenario only. Part 1: the active node is isolated; the standby must power it off before it
//! takes over, so the old primary is dead before the new one starts. Part 2: the same with an
//! agent that fails: `required = true` blocks the takeover (the service stays down, by design)
//! and the agent is retried every `retry-ms`, not in a storm; once the agent works again the
//! standby fences and takes over.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::faults;
use crate::lab::{now_ms, wait_until, Lab, Node, RUN};
use crate::report::Outcome;
use crate::sampler::Sampler;
use crate::scenarios::{client_figures, final_checks, healthy, Ctx};

/// The lab fence agent's action, run by the agent from the host's namespaces.
pub fn power_off(node: &str) -> Result<bool> {
    let n = match node {
        "a" => Node::A,
        "b" => Node::B,
        other => bail!("no node {other:?}; the lab's nodes are a and b"),
    };
    let lab = Lab::new()?;
    faults::power_cut(&lab, n)?;
    Ok(true)
}

fn mode_file() -> PathBuf {
    PathBuf::from(RUN).join("fence/mode")
}

/// Arms the agent (`power-off`, `fail`) or disarms it (`None`).
pub(crate) fn arm(mode: Option<&str>) -> Result<()> {
    let f = mode_file();
    match mode {
        Some(m) => {
            std::fs::create_dir_all(f.parent().context("path")?)?;
            std::fs::write(&f, m).with_context(|| format!("cannot write {}", f.display()))
        }
        None => match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub at_ms: i64,
    pub target: String,
    pub mode: String,
    pub result: String,
}

/// fence.log lines ("EPOCH_MS TARGET MODE RESULT") after `t`.
pub(crate) fn calls_after(lab: &Lab, t: i64) -> Vec<Call> {
    let text = std::fs::read_to_string(lab.logs.join("fence.log")).unwrap_or_default();
    parse_calls(&text)
        .into_iter()
        .filter(|c| c.at_ms >= t)
        .collect()
}

fn parse_calls(text: &str) -> Vec<Call> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Call {
                at_ms: f.next()?.parse().ok()?,
                target: f.next()?.to_string(),
                mode: f.next()?.to_string(),
                result: f.next()?.to_string(),
            })
        })
        .collect()
}

fn blockers(lab: &Lab, n: Node) -> String {
    lab.status(n)
        .and_then(|s| {
            s["core"]["blockers"].as_array().map(|b| {
                b.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_default()
}

pub fn fencing(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let res = run(cx, x, o);
    // Whatever happened, later scenarios run with the agent disarmed and both nodes up.
    let _ = arm(None);
    for n in [Node::A, Node::B] {
        let _ = faults::isolate(n, false);
        if cx.lab.daemon_pid(n).is_none() {
            let _ = faults::power_on(&cx.lab, n);
        }
    }
    res
}

fn run(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let lab = &cx.lab;
    let y = x.other();
    let sampler = Sampler::start();

    // --- part 1: isolation, the agent works --------------------------------------------------
    arm(Some("power-off"))?;
    let t = now_ms();
    faults::isolate(x, true)?;
    o.note(format!("isolated node {x} (hb0 and its switch port down)"));
    wait_until(
        Duration::from_secs(30),
        &format!("node {y} active with the VIP after fencing node {x}"),
        || lab.state(y).as_deref() == Some("active") && lab.holds_vip(y),
    )?;
    let calls = calls_after(lab, t);
    let started = calls.iter().find(|c| c.result == "start");
    let done = calls.iter().find(|c| c.result == "ok");
    o.check(
        &format!("node {y} fenced node {x} before taking over"),
        started.is_some_and(|c| c.target == x.letter() && c.mode == "power-off") && done.is_some(),
        format!("fence.log: {calls:?}"),
    );
    o.check(
        &format!("node {x} is powered off"),
        lab.daemon_pid(x).is_none() && lab.mysqld_pid(x).is_none() && !lab.holds_vip(x),
        "no daemon, no mariadbd, no VIP",
    );
    let ch = crate::scenarios::describe_changes(cx, y, t)?;
    let acquiring = ch.iter().find(|c| c.to == "acquiring").map(|c| c.at_ms);
    if let (Some(s), Some(d)) = (started, done) {
        o.figure("fence_detection_ms", Some(s.at_ms - t));
        o.figure("fence_power_off_ms", Some(d.at_ms - s.at_ms));
        o.check(
            "the takeover began only after the fence completed",
            acquiring.is_some_and(|a| a >= d.at_ms),
            format!(
                "fence done at +{} ms, acquiring at {}",
                d.at_ms - t,
                acquiring
                    .map(|a| format!("+{} ms", a - t))
                    .unwrap_or_else(|| "never".into())
            ),
        );
    }
    client_figures(cx, t, o, "fenced_")?;
    faults::isolate(x, false)?;
    faults::power_on(lab, x)?;
    arm(None)?;
    healthy(cx).context("the pair after powering the fenced node on")?;

    // --- part 2: the agent fails; the takeover must wait for it --------------------------------
    let (active, standby) = (y, x);
    arm(Some("fail"))?;
    let t2 = now_ms();
    faults::isolate(active, true)?;
    o.note(format!("isolated node {active} with the agent failing"));
    // Two retries' worth past deadtime: long enough to see a retry, not a storm.
    let hold = Duration::from_millis((cx.deadtime + 2 * 2_000 + 1_000) as u64);
    let mut took_over = false;
    let _ = wait_until(hold, "(expected to time out)", || {
        took_over = lab.holds_vip(standby);
        took_over
    });
    let failed: Vec<Call> = calls_after(lab, t2)
        .into_iter()
        .filter(|c| c.result == "failed")
        .collect();
    let why = blockers(lab, standby);
    o.check(
        "a failing fence agent blocks the takeover",
        !took_over && why.contains("fencing the peer failed"),
        format!(
            "node {standby} holds the VIP: {took_over}; its blockers: {}",
            if why.is_empty() { "none" } else { &why }
        ),
    );
    // retry-ms is 2000 in the lab's configs: a handful of calls over the hold, not hundreds.
    let max_calls = (hold.as_millis() as usize) / 2_000 + 2;
    o.check(
        "the agent is retried every retry-ms, not in a loop",
        (2..=max_calls).contains(&failed.len()),
        format!(
            "{} failed call(s) in {} ms (at most {max_calls} expected)",
            failed.len(),
            hold.as_millis()
        ),
    );
    o.figure("fence_failed_calls", Some(failed.len() as i64));
    arm(Some("power-off"))?;
    let t3 = now_ms();
    wait_until(
        Duration::from_secs(30),
        &format!("node {standby} to fence node {active} and take over once the agent works"),
        || lab.state(standby).as_deref() == Some("active") && lab.holds_vip(standby),
    )?;
    o.figure("fence_retry_to_active_ms", Some(now_ms() - t3));
    client_figures(cx, t2, o, "blocked_")?;
    faults::isolate(active, false)?;
    faults::power_on(lab, active)?;
    arm(None)?;
    healthy(cx).context("the pair after powering the fenced node on")?;
    let samples = sampler.finish();
    final_checks(cx, &samples, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_log_lines_parse_and_torn_ones_are_skipped() {
        let text = "1000 b power-off start\n1200 b power-off ok\n1300 a fail\n";
        let calls = parse_calls(text);
        assert_eq!(calls.len(), 2);
        assert_eq!(
            calls[1],
            Call {
                at_ms: 1200,
                target: "b".into(),
                mode: "power-off".into(),
                result: "ok".into()
            }
        );
    }
}
