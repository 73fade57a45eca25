//! Reading a daemon's log (tracing's text format, UTC timestamps): when it changed state, and
//! how long the external work of a takeover took, so twinbeat's own overhead can be told apart.

use std::path::Path;

use anyhow::{Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub at_ms: i64,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub at_ms: i64,
    pub from: String,
    pub to: String,
    pub cause: String,
}

pub fn read(path: &Path) -> Result<Vec<Line>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let (ts, rest) = l.split_once(' ')?;
            let t = humantime::parse_rfc3339(ts).ok()?;
            let at_ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
            Some(Line {
                at_ms,
                text: rest.trim_start().to_string(),
            })
        })
        .collect()
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &text[start..];
    Some(rest.split(' ').next().unwrap_or(rest))
}

/// State changes at or after `after` (epoch ms).
pub fn changes(lines: &[Line], after: i64) -> Vec<Change> {
    lines
        .iter()
        .filter(|l| l.at_ms >= after && l.text.contains("state change from="))
        .filter_map(|l| {
            let cause = l.text.split_once(" cause=").map(|(_, c)| c).unwrap_or("");
            Some(Change {
                at_ms: l.at_ms,
                from: field(&l.text, "from")?.to_string(),
                to: field(&l.text, "to")?.to_string(),
                cause: cause.to_string(),
            })
        })
        .collect()
}

/// The time the external commands of the steps took within [from, to]: commands run, server
/// readiness, netlink and announcements. Periodic resource probes run beside the steps and
/// are left out.
pub fn external_ms(lines: &[Line], from: i64, to: i64) -> i64 {
    const STEP_WORK: [&str; 4] = [
        "ran command",
        "server answers SELECT 1",
        "vip address add",
        "announced address",
    ];
    lines
        .iter()
        .filter(|l| l.at_ms >= from && l.at_ms <= to)
        .filter(|l| STEP_WORK.iter().any(|m| l.text.contains(m)))
        .filter(|l| !l.text.contains(" probe "))
        .filter_map(|l| field(&l.text, "elapsed_ms")?.parse::<i64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-02T07:44:01.720468Z  INFO state change from=standby to=acquiring cause=peer lab-a silent on every link for 1500 ms
2026-12-02T07:44:01.727834Z  INFO ran command argv=/run/twinbeat-lab/bin/disk-standin start /x /y code=Some(0) elapsed_ms=7
2026-12-02T07:44:01.728000Z  INFO ran command argv=/run/twinbeat-lab/bin/disk-standin probe /x /y code=Some(0) elapsed_ms=5
2026-12-02T07:44:01.834382Z  INFO server answers SELECT 1 resource=mysql endpoint=socket /s elapsed_ms=103
2026-12-02T07:44:01.849386Z  INFO state change from=acquiring to=active cause=peer lab-a silent
not a log line
";

    #[test]
    fn changes_and_external_time() {
        let lines = parse(LOG);
        assert_eq!(lines.len(), 5);
        let c = changes(&lines, 0);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].from, "standby");
        assert_eq!(c[0].to, "acquiring");
        assert_eq!(c[0].cause, "peer lab-a silent on every link for 1500 ms");
        assert_eq!(c[1].at_ms - c[0].at_ms, 129);
        assert_eq!(external_ms(&lines, c[0].at_ms, c[1].at_ms), 110);
        assert!(changes(&lines, c[1].at_ms + 1).is_empty());
    }
}
