//! Reading what the client saw: acknowledged and in-doubt writes, VIP up/down edges.

use std::path::Path;

use anyhow::{Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub id: u64,
    pub at_ms: i64,
}

fn read(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// "ID EPOCH_MS ..." lines; a torn last line (the writer is appending) is skipped.
pub fn parse_writes(text: &str) -> Vec<Write> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Write {
                id: f.next()?.parse().ok()?,
                at_ms: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

pub fn acked(logdir: &Path) -> Result<Vec<Write>> {
    Ok(parse_writes(&read(&logdir.join("acked.log"))?))
}
pub fn indoubt(logdir: &Path) -> Result<Vec<Write>> {
    Ok(parse_writes(&read(&logdir.join("indoubt.log"))?))
}

pub fn highest_id(logdir: &Path) -> Result<u64> {
    let a = acked(logdir)?;
    let d = indoubt(logdir)?;
    Ok(a.iter().chain(d.iter()).map(|w| w.id).max().unwrap_or(0))
}

/// The longest pause between two consecutive acknowledged writes that ends after `from` and
/// starts before `to` (so a pause that began before the fault counts whole).
pub fn write_gap(acked: &[Write], from: i64, to: i64) -> Option<i64> {
    acked
        .windows(2)
        .filter(|w| w[1].at_ms >= from && w[0].at_ms <= to)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .max()
}

/// The first write acknowledged after `t`.
pub fn first_ack_after(acked: &[Write], t: i64) -> Option<Write> {
    acked.iter().find(|w| w.at_ms > t).copied()
}

/// VIP up/down edges: "EPOCH_MS up|down".
pub fn vip_edges(logdir: &Path) -> Result<Vec<(i64, bool)>> {
    Ok(read(&logdir.join("vip.log"))?
        .lines()
        .filter_map(|l| {
            let (t, s) = l.split_once(' ')?;
            Some((t.parse().ok()?, s.trim() == "up"))
        })
        .collect())
}

/// The longest time the VIP did not answer, among outages that overlap [from, to]; an outage
/// still going on at `to` counts up to `to`.
pub fn vip_gap(edges: &[(i64, bool)], from: i64, to: i64) -> Option<i64> {
    let mut best = None;
    let mut down_since = None;
    for &(t, up) in edges {
        match (up, down_since) {
            (false, None) => down_since = Some(t),
            (true, Some(d)) => {
                if t >= from && d <= to {
                    best = best.max(Some(t - d));
                }
                down_since = None;
            }
            _ => {}
        }
    }
    if let Some(d) = down_since.filter(|d| *d <= to) {
        best = best.max(Some(to - d.max(from)));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: u64, at_ms: i64) -> Write {
        Write { id, at_ms }
    }

    #[test]
    fn gaps_are_measured_over_the_window_only() {
        let a = [w(1, 0), w(2, 20), w(3, 1020), w(4, 1040), w(5, 5000)];
        assert_eq!(write_gap(&a, 10, 1030), Some(1000));
        assert_eq!(write_gap(&a, 1030, 1035), Some(20));
        // A pause that starts inside the window counts whole, even past its end.
        assert_eq!(write_gap(&a, 1030, 1100), Some(3960));
        assert_eq!(first_ack_after(&a, 20), Some(w(3, 1020)));
    }

    #[test]
    fn torn_lines_are_skipped() {
        assert_eq!(parse_writes("1 10\n2 2\n3"), vec![w(1, 10), w(2, 2)]);
    }

    #[test]
    fn vip_outages() {
        let e = [(0, true), (100, false), (350, true), (900, false)];
        assert_eq!(vip_gap(&e, 0, 500), Some(250));
        assert_eq!(vip_gap(&e, 400, 1000), Some(100));
        assert_eq!(vip_gap(&e, 400, 800), None);
    }
}
