//! Scenario 8: `twinbeat drill` in the lab, run with the command line of
//! `systemd/twinbeat-drill.service`, and its report checked against what the lab's own client
//! saw: the same outages, no acknowledged write lost (the drill's canary nor the client's), the
//! replica following, the drill in the daemon's history and in its /metrics, HAProxy's
//! /health and agent-check pointing at the active node before and after, and a second drill
//! inside `min-interval-ms` refused with nothing changed.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::clientlog;
use crate::lab::{now_ms, run_quiet, Lab, Node, RUN};
use crate::report::Outcome;
use crate::sampler::Sampler;
use crate::scenarios::{final_checks, wait_ack_after, Ctx};

/// A client outage longer than this is one of the drill's switches (the client writes every
/// 20 ms; the lab's switchovers are 300–1000 ms).
const OUTAGE_MS: i64 = 200;

/// How far the drill's canary gap may stray from the lab client's for the same switch. Both
/// write through the VIP, but from different namespaces, at different rates (50 vs 20 ms), and
/// with different timeouts (the drill's 1 s, the client's 400 ms connect): a reconnect that
/// lands just after an attempt timed out costs one of them an extra timeout.
const GAP_TOLERANCE_MS: i64 = 1_100;

/// The drill's unit file's `ExecStart`, as argv.
pub fn unit_command(repo: &Path) -> Result<Vec<String>> {
    let unit = repo.join("systemd/twinbeat-drill.service");
    let text = std::fs::read_to_string(&unit)
        .with_context(|| format!("cannot read {}", unit.display()))?;
    exec_start(&text).with_context(|| format!("{} has no ExecStart=", unit.display()))
}

fn exec_start(unit: &str) -> Option<Vec<String>> {
    let line = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))?;
    Some(line.split_whitespace().map(str::to_string).collect())
}

/// The unit's argv with the lab's binary, a JSON path in the lab's logs, and the node's config.
pub fn lab_argv(unit: &[String], twinbeat: &Path, json: &Path, n: Node) -> Result<Vec<String>> {
    if unit.get(1).map(String::as_str) != Some("drill") {
        bail!("the drill unit does not run `twinbeat drill`: {unit:?}");
    }
    let mut argv = vec![twinbeat.display().to_string()];
    let mut args = unit[1..].iter();
    while let Some(a) = args.next() {
        argv.push(a.clone());
        if a == "--json" {
            args.next().context("`--json` without a file in the unit")?;
            argv.push(json.display().to_string());
        }
    }
    argv.extend([
        "--config".into(),
        format!("{RUN}/conf/twinbeat-{}.toml", n.letter()),
        "--node".into(),
        format!("lab-{}", n.letter()),
    ]);
    Ok(argv)
}

/// `[drill] min-interval-ms` of the lab's config for `n`.
fn min_interval_ms(lab: &Lab, n: Node) -> Result<i64> {
    let file = lab.lab.join(format!("conf/twinbeat-{}.toml", n.letter()));
    let text = std::fs::read_to_string(&file)?;
    let v: toml::Value = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    v.get("drill")
        .and_then(|d| d.get("min-interval-ms"))
        .and_then(|m| m.as_integer())
        .with_context(|| format!("{} has no [drill] min-interval-ms", file.display()))
}

/// The newest drill in the node's history, as its status shows it.
fn last_drill(lab: &Lab, n: Node) -> Option<Value> {
    lab.status(n)?["history"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["kind"] == "drill")
        .cloned()
}

fn run_drill(argv: &[String], n: Node) -> Result<(i32, String)> {
    let net = format!("--net=/run/netns/{}", n.ns());
    let mnt = format!("--mount={RUN}/mnt-ns");
    let mut full: Vec<&str> = vec!["nsenter", &net, &mnt];
    full.extend(argv.iter().map(String::as_str));
    // Two handoffs, each bounded by the lab's handoff timeout, plus the canary checks.
    let out = run_quiet(&full, 180)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

/// The client's outages (gaps longer than `OUTAGE_MS`) inside [from, to], oldest first.
fn client_outages(acked: &[clientlog::Write], from: i64, to: i64) -> Vec<i64> {
    acked
        .windows(2)
        .filter(|w| w[0].at_ms >= from && w[1].at_ms <= to)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .filter(|&g| g > OUTAGE_MS)
        .collect()
}

/// A node's LAN address, where its `[metrics]` listeners are (lab/conf).
fn lan_addr(n: Node) -> &'static str {
    match n {
        Node::A => "198.51.100.11",
        Node::B => "198.51.100.12",
    }
}

/// GET `path` on the node's metrics listener from the client namespace: (status, body).
fn http_get(n: Node, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{}:9105{path}", lan_addr(n));
    let out = run_quiet(
        &[
            "nsenter",
            "--net=/run/netns/tblab-c",
            "curl",
            "-s",
            "-m",
            "3",
            "-w",
            "\n%{http_code}",
            &url,
        ],
        10,
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// The node's HAProxy agent-check answer (one line), from the client namespace.
fn agent_check(n: Node) -> Result<String> {
    let script = format!("exec 3<>/dev/tcp/{}/9106 && head -n 1 <&3", lan_addr(n));
    let out = run_quiet(
        &["nsenter", "--net=/run/netns/tblab-c", "bash", "-c", &script],
        10,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What HAProxy would see: /health 200 and `up ready` on the active node, 503 and `down` on
/// the standby.
fn surfaces(x: Node, when: &str, o: &mut Outcome) -> Result<()> {
    let y = x.other();
    let (hx, _) = http_get(x, "/health")?;
    let (hy, _) = http_get(y, "/health")?;
    let (ax, ay) = (agent_check(x)?, agent_check(y)?);
    o.check(
        &format!("HAProxy checks {when}: only the active node is up"),
        hx == 200 && hy == 503 && ax == "up ready" && ay == "down",
        format!("/health {x} {hx}, {y} {hy}; agent-check {x} {ax:?}, {y} {ay:?}"),
    );
    Ok(())
}

/// A sample's value from Prometheus text (`name{labels} value`).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok())?
    })
}

pub fn drill(cx: &Ctx, x: Node, o: &mut Outcome) -> Result<()> {
    let lab = &cx.lab;
    let repo = lab.lab.parent().context("lab has no parent")?;
    let unit = unit_command(repo)?;
    let json = lab.logs.join(format!("drill-{}.json", now_ms()));
    let argv = lab_argv(&unit, &lab.twinbeat, &json, x)?;
    o.note(format!("unit ExecStart: {}", unit.join(" ")));

    // A previous trial's drill is inside the interval: wait it out (bounded by the interval).
    let interval = min_interval_ms(lab, x)?;
    if let Some(t) = last_drill(lab, x).and_then(|d| d["drill"]["unix_ms"].as_i64()) {
        let left = interval - (now_ms() - t);
        if left > 0 {
            std::thread::sleep(Duration::from_millis(left as u64 + 200));
        }
    }

    surfaces(x, "before the drill", o)?;
    let (_, before) = http_get(x, "/metrics")?;
    let passed_series = "twinbeat_drills_total{result=\"passed\"}";
    let passed_before = sample(&before, passed_series).unwrap_or(0.0);

    let sampler = Sampler::start();
    let t0 = now_ms();
    let (code, text) = run_drill(&argv, x)?;
    let t1 = now_ms();
    o.note(format!(
        "drill on node {x} exited {code}:\n{}",
        text.trim_end()
    ));
    o.check(
        "the drill passes (exit 0)",
        code == 0,
        format!("exit {code}"),
    );
    let report: Value = serde_json::from_slice(
        &std::fs::read(&json).with_context(|| format!("no drill report at {}", json.display()))?,
    )
    .context("the drill report is not JSON")?;
    let switches = report["switches"].as_array().cloned().unwrap_or_default();
    o.check(
        "two switches, there and back",
        report["verdict"] == "pass" && switches.len() == 2,
        format!(
            "verdict {}, {} switch(es)",
            report["verdict"],
            switches.len()
        ),
    );
    let missing: i64 = switches
        .iter()
        .map(|s| s["canary_missing"].as_i64().unwrap_or(1))
        .sum();
    o.check(
        "no acknowledged canary row lost",
        missing == 0,
        format!("{missing} missing"),
    );

    // What the lab's client saw in the same window: one outage per switch.
    wait_ack_after(cx, now_ms(), Duration::from_secs(15))?;
    let acked = clientlog::acked(&lab.logs)?;
    let outages = client_outages(&acked, t0, t1);
    let drill_gaps: Vec<i64> = switches
        .iter()
        .filter_map(|s| s["write_gap_ms"].as_i64())
        .collect();
    let close = outages.len() == drill_gaps.len()
        && outages
            .iter()
            .zip(&drill_gaps)
            .all(|(c, d)| (c - d).abs() <= GAP_TOLERANCE_MS);
    o.check(
        "the drill's write gaps match the client's outages",
        close,
        format!(
            "drill {drill_gaps:?} ms, lab client {outages:?} ms (tolerance {GAP_TOLERANCE_MS} ms)"
        ),
    );
    for (i, s) in switches.iter().enumerate() {
        let p = format!("switch{}_", i + 1);
        o.figure(
            &format!("{p}drill_write_gap_ms"),
            s["write_gap_ms"].as_i64(),
        );
        o.figure(&format!("{p}client_write_gap_ms"), outages.get(i).copied());
        o.figure(&format!("{p}drill_vip_gap_ms"), s["vip_gap_ms"].as_i64());
        o.figure(&format!("{p}service_gap_ms"), s["service_gap_ms"].as_i64());
        let reconnect = s["replicas"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["reconnect_ms"].as_i64());
        o.figure(&format!("{p}replica_reconnect_ms"), reconnect);
    }
    let replica_ok = switches.iter().all(|s| {
        s["replicas"].as_array().is_some_and(|r| {
            !r.is_empty()
                && r.iter()
                    .all(|x| x["reconnect_ms"].is_i64() && x["missing"] == 0)
        })
    });
    o.check(
        "the replica followed both switches",
        replica_ok,
        "every switch: reconnect time measured, no canary row missing on the replica",
    );

    let id = report["drill_id"].as_str().unwrap_or_default().to_string();
    let hist = last_drill(lab, x);
    o.check(
        "the drill is in the daemon's history",
        hist.as_ref()
            .is_some_and(|h| h["cause"].as_str().unwrap_or("").contains(&id)),
        format!(
            "newest drill entry: {}",
            hist.map(|h| h["cause"].to_string())
                .unwrap_or_else(|| "none".into())
        ),
    );

    // Back where it was: the load balancer's view and the metrics must say so.
    surfaces(x, "after the drill", o)?;
    let (code, after) = http_get(x, "/metrics")?;
    let passed_after = sample(&after, passed_series);
    o.check(
        "the drill is counted in the node's /metrics",
        code == 200 && passed_after.is_some_and(|v| v >= passed_before + 1.0),
        format!("{passed_series}: {passed_before} before, {passed_after:?} after (HTTP {code})"),
    );

    // Again at once: refused by the interval, and nothing moves.
    let active_before = if lab.holds_vip(x) { x } else { x.other() };
    let json2 = lab.logs.join(format!("drill-{}-refused.json", now_ms()));
    let argv2 = lab_argv(&unit, &lab.twinbeat, &json2, x)?;
    let (code2, text2) = run_drill(&argv2, x)?;
    let interval_refused = text2.contains("minimum interval") && text2.contains("FAIL");
    o.check(
        "a second drill within min-interval-ms is refused (exit 3)",
        code2 == 3 && interval_refused,
        format!("exit {code2}: {}", text2.lines().next().unwrap_or("")),
    );
    o.check(
        "the refused drill changed nothing",
        lab.holds_vip(active_before) && !lab.holds_vip(active_before.other()),
        format!("VIP on node {active_before}"),
    );
    let samples = sampler.finish();
    final_checks(cx, &samples, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_command_line_is_kept_with_the_labs_paths() {
        let unit = "[Service]\nType=oneshot\nExecStart=/usr/sbin/twinbeat drill --and-back --json /var/lib/twinbeat/last-drill.json\n";
        let argv = exec_start(unit).unwrap();
        let lab = lab_argv(
            &argv,
            Path::new("/r/target/release/twinbeat"),
            Path::new("/r/logs/d.json"),
            Node::B,
        )
        .unwrap();
        assert_eq!(
            lab,
            [
                "/r/target/release/twinbeat",
                "drill",
                "--and-back",
                "--json",
                "/r/logs/d.json",
                "--config",
                "/run/twinbeat-lab/conf/twinbeat-b.toml",
                "--node",
                "lab-b"
            ]
        );
        let other = exec_start("ExecStart=/usr/sbin/twinbeat status\n").unwrap();
        assert!(lab_argv(&other, Path::new("t"), Path::new("j"), Node::A).is_err());
        assert!(exec_start("[Service]\n").is_none());
    }

    #[test]
    fn outages_inside_the_window_only() {
        let w = |id, at_ms| clientlog::Write { id, at_ms };
        let acked = [
            w(1, 0),
            w(2, 500),
            w(3, 520),
            w(4, 540),
            w(5, 1400),
            w(6, 3000),
        ];
        assert_eq!(client_outages(&acked, 0, 1500), vec![500, 860]);
        assert_eq!(client_outages(&acked, 100, 3000), vec![860, 1600]);
    }

    #[test]
    fn the_committed_unit_runs_a_drill_there_and_back() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let argv = unit_command(&repo).unwrap();
        assert_eq!(argv[1], "drill");
        assert!(argv.contains(&"--and-back".to_string()), "{argv:?}");
        assert!(argv.contains(&"--json".to_string()), "{argv:?}");
    }
}
