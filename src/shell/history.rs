//! The failover history: one JSON line per completed plan (takeovers, handoffs, restarts,
//! demotions, failed takeovers) and per drill, in `<state-dir>/history.jsonl`.
//!
//! Owns: the entry format, the file (append, rotation) and reading it back. The daemon is the
//! only writer (a drill sends its entry over the control socket), and it writes on a thread of
//! its own, so a slow disk never delays a heartbeat. Must not decide anything: the entries are
//! built from what the core already reported (`Status::transitions`).
//!
//! Bounded: when appending would take the file past `MAX_BYTES`, it is renamed to
//! `history.jsonl.1` (replacing the previous one) and a new file starts. At most about
//! 2 × `MAX_BYTES` are kept — thousands of entries, years of failovers and monthly drills.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::{Millis, NodeState, StepDirection, StepTiming, Transition};

pub const FILE: &str = "history.jsonl";
pub const ROTATED: &str = "history.jsonl.1";
/// Size at which the file is rotated.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Entries the daemon keeps in memory for `twinbeat status`.
pub const RECENT_KEPT: usize = 10;

/// What kind of event an entry records; derived from the transition, `cause` says more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// This node started the service (automatic takeover, or the receiving side of a handoff).
    Takeover,
    /// A monitored resource was restarted in place.
    Restart,
    /// This node handed the service to the peer (planned).
    Handoff,
    /// Lost the peer and the tie-breaker, and released.
    Demotion,
    /// Released because the peer is active with a higher term (after a split, or mid-plan).
    SplitBrain,
    /// Any other release (shutdown, leaving maintenance, a partial service found at start).
    Release,
    /// A takeover that did not complete (rolled back).
    FailedTakeover,
    /// Any other plan that ended in `failed`.
    Failure,
    /// A `twinbeat drill` run (see `drill`).
    Drill,
}

impl Kind {
    /// Classifies a plan-ending transition by its states and the core's cause text.
    pub fn of(t: &Transition) -> Kind {
        let c = t.cause.as_str();
        match t.to {
            NodeState::Active if c.starts_with("restarted") => Kind::Restart,
            NodeState::Active => Kind::Takeover,
            // A takeover that fails rolls back first (acquiring → releasing → failed): the plan
            // began with an acquire, where a failed restart or release began with a release.
            NodeState::Failed
                if t.from == NodeState::Acquiring
                    || t.steps
                        .first()
                        .is_some_and(|s| s.direction == StepDirection::Acquire) =>
            {
                Kind::FailedTakeover
            }
            NodeState::Failed => Kind::Failure,
            _ if c.starts_with("handed the service") => Kind::Handoff,
            _ if c.starts_with("demoted") => Kind::Demotion,
            _ if c.contains("split brain") || c.contains("gave way") => Kind::SplitBrain,
            _ => Kind::Release,
        }
    }
}

/// The part of a drill report kept in the history (the full report goes to `--json FILE`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillSummary {
    /// When the drill started (Unix ms): the minimum-interval check reads it.
    pub unix_ms: u64,
    pub passed: bool,
    /// The node that held the service at the start, and where it went.
    pub from_node: String,
    pub to_node: String,
    pub and_back: bool,
    /// Service gaps the daemon measured (one per switch).
    pub service_gaps_ms: Vec<Millis>,
    /// Longest write-unavailable gap the drill's own canary writer saw, per switch.
    pub write_gaps_ms: Vec<Millis>,
    /// Longest time the VIP refused TCP connections on the MySQL port, per switch (empty when
    /// the drill writes through a socket).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vip_gaps_ms: Vec<Millis>,
    /// Per switch, the slowest replica's time from the switch until it replicated the first
    /// canary row the new primary acknowledged (empty without `[drill] replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_reconnect_ms: Vec<Millis>,
    /// Canary rows written and found on the new primary.
    pub canary_written: u64,
    pub canary_missing: u64,
    /// Why it failed or aborted (empty when it passed).
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Wall clock, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub node: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NodeState>,
    pub cause: String,
    #[serde(default)]
    pub steps: Vec<StepTiming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<Millis>,
    pub term: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillSummary>,
}

impl Entry {
    pub fn from_transition(node: &str, term: u64, t: &Transition, at: SystemTime) -> Entry {
        Entry {
            time: rfc3339(at),
            node: node.to_string(),
            kind: Kind::of(t),
            from: Some(t.from),
            to: Some(t.to),
            cause: t.cause.clone(),
            steps: t.steps.clone(),
            total_ms: t.total_ms,
            term,
            drill: None,
        }
    }

    /// One line for `twinbeat status` / `twinbeat history`.
    pub fn one_line(&self) -> String {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut s = format!("{} {} {kind}", self.time, self.node);
        if let (Some(f), Some(t)) = (self.from, self.to) {
            s.push_str(&format!(" {f} -> {t}"));
        }
        if let Some(d) = &self.drill {
            let gaps = |v: &[Millis]| {
                v.iter()
                    .map(|g| format!("{g} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            s.push_str(&format!(
                " {} {} -> {}{}: service gap {}, write gap {}, canary {}/{}",
                if d.passed { "PASS" } else { "FAIL" },
                d.from_node,
                d.to_node,
                if d.and_back { " and back" } else { "" },
                gaps(&d.service_gaps_ms),
                gaps(&d.write_gaps_ms),
                d.canary_written - d.canary_missing.min(d.canary_written),
                d.canary_written,
            ));
        }
        if let Some(ms) = self.total_ms {
            s.push_str(&format!(" in {ms} ms"));
        }
        s.push_str(&format!(" (term {}): {}", self.term, self.cause));
        s
    }
}

/// Appends `entry` to `dir/history.jsonl`, rotating first when the file would pass `max_bytes`.
pub fn append(dir: &Path, entry: &Entry, max_bytes: u64) -> io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
    line.push(b'\n');
    let path = dir.join(FILE);
    let size = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    if size > 0 && size + line.len() as u64 > max_bytes {
        fs::rename(&path, dir.join(ROTATED))?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    // One write of a whole line: a reader never sees half an entry from this writer.
    f.write_all(&line)?;
    f.sync_data()
}

/// Every entry in the rotated file and then the current one, oldest first. Lines that do not
/// parse (a torn write after a power cut, a newer format) are counted, not fatal.
pub fn read(dir: &Path) -> io::Result<(Vec<Entry>, usize)> {
    let mut out = Vec::new();
    let mut bad = 0;
    for name in [ROTATED, FILE] {
        let text = match fs::read_to_string(dir.join(name)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Entry>(line) {
                Ok(e) => out.push(e),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out, bad))
}

/// The daemon's writer: entries are appended in order on a thread of their own.
pub struct Writer {
    tx: std::sync::mpsc::Sender<Entry>,
    recent: VecDeque<Entry>,
}

impl Writer {
    pub fn start(dir: PathBuf) -> Writer {
        let recent = match read(&dir) {
            Ok((all, _)) => all
                .into_iter()
                .rev()
                .take(RECENT_KEPT)
                .rev()
                .collect::<VecDeque<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot read the failover history");
                VecDeque::new()
            }
        };
        let (tx, rx) = std::sync::mpsc::channel::<Entry>();
        std::thread::Builder::new()
            .name("twinbeat-history".into())
            .spawn(move || {
                for e in rx {
                    if let Err(err) = append(&dir, &e, MAX_BYTES) {
                        tracing::error!(error = %err, file = %dir.join(FILE).display(), "cannot append to the failover history; check that the state dir is writable and not full");
                    }
                }
            })
            .expect("spawning the history thread");
        Writer { tx, recent }
    }

    pub fn record(&mut self, e: Entry) {
        tracing::info!(entry = %e.one_line(), "history");
        self.recent.push_back(e.clone());
        while self.recent.len() > RECENT_KEPT {
            self.recent.pop_front();
        }
        let _ = self.tx.send(e);
    }

    /// The newest entries, oldest first.
    pub fn recent(&self) -> Vec<Entry> {
        self.recent.iter().cloned().collect()
    }
}

/// Finds the transitions in `all` (oldest first) that came after `last_seen`.
pub fn new_since<'a>(all: &'a [Transition], last_seen: Option<&Transition>) -> &'a [Transition] {
    match last_seen {
        None => all,
        Some(seen) => match all.iter().rposition(|t| t == seen) {
            Some(i) => &all[i + 1..],
            // Everything we saw has been pushed out of the core's window: all are new.
            None => all,
        },
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-03-01T02:03:04.567Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::StepDirection;
    use std::time::Duration;

    fn tr(from: NodeState, to: NodeState, cause: &str) -> Transition {
        Transition {
            at: 5,
            from,
            to,
            cause: cause.into(),
            steps: vec![StepTiming {
                step: 0,
                name: "vip".into(),
                direction: StepDirection::Acquire,
                elapsed_ms: 12,
                error: None,
            }],
            total_ms: Some(15),
        }
    }

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // last second of 2025
        assert_eq!(rfc3339(t), "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn classifies_transitions() {
        use NodeState::*;
        let k = |f, t, c| Kind::of(&tr(f, t, c));
        assert_eq!(
            k(Acquiring, Active, "peer db-b dead on all links"),
            Kind::Takeover
        );
        assert_eq!(k(Acquiring, Active, "restarted mysql"), Kind::Restart);
        assert_eq!(
            k(Releasing, Standby, "handed the service to db-b"),
            Kind::Handoff
        );
        assert_eq!(
            k(Releasing, Standby, "demoted: no peer and no tie-breaker"),
            Kind::Demotion
        );
        assert_eq!(
            k(Releasing, Standby, "released after split brain"),
            Kind::SplitBrain
        );
        // A failed release (its plan began with a release) and a rolled-back takeover (began
        // with an acquire) both end releasing → failed.
        let mut release = tr(Releasing, Failed, "release of data failed");
        release.steps[0].direction = StepDirection::Release;
        assert_eq!(Kind::of(&release), Kind::Failure);
        assert_eq!(
            k(Releasing, Failed, "acquire of mysql failed"),
            Kind::FailedTakeover
        );
        assert_eq!(k(Acquiring, Failed, "drbd: refused"), Kind::FailedTakeover);
        assert_eq!(
            k(Releasing, Stopped, "released for shutdown"),
            Kind::Release
        );
    }

    #[test]
    fn entry_is_one_json_line_and_round_trips() {
        let t = tr(NodeState::Acquiring, NodeState::Active, "peer dead");
        let e = Entry::from_transition("db-a", 7, &t, UNIX_EPOCH);
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        assert!(
            line.contains(r#""time":"1970-01-01T00:00:00.000Z""#),
            "{line}"
        );
        assert!(line.contains(r#""kind":"takeover""#), "{line}");
        assert!(line.contains(r#""total_ms":15"#), "{line}");
        assert_eq!(serde_json::from_str::<Entry>(&line).unwrap(), e);
        assert_eq!(
            e.one_line(),
            "1970-01-01T00:00:00.000Z db-a takeover acquiring -> active in 15 ms (term 7): peer dead"
        );
    }

    #[test]
    fn appends_rotates_and_reads_back_in_order() {
        let dir = std::env::temp_dir().join(format!("twinbeat-history-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let t = tr(NodeState::Acquiring, NodeState::Active, "peer dead");
        let mut sizes = Vec::new();
        for term in 0..20 {
            let e = Entry::from_transition("db-a", term, &t, UNIX_EPOCH);
            append(&dir, &e, 1000).unwrap();
            sizes.push(fs::metadata(dir.join(FILE)).unwrap().len());
        }
        assert!(sizes.iter().all(|&s| s <= 1000), "{sizes:?}");
        assert!(dir.join(ROTATED).exists());
        // A torn last line (power cut mid-write) is skipped and counted.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .unwrap();
        f.write_all(b"{\"time\":\"19").unwrap();
        let (all, bad) = read(&dir).unwrap();
        assert_eq!(bad, 1);
        let terms: Vec<u64> = all.iter().map(|e| e.term).collect();
        assert!(
            !terms.is_empty() && *terms.last().unwrap() == 19,
            "{terms:?}"
        );
        assert!(terms.windows(2).all(|w| w[1] == w[0] + 1), "{terms:?}");
        let on_disk: u64 = [FILE, ROTATED]
            .iter()
            .map(|n| fs::metadata(dir.join(n)).unwrap().len())
            .sum();
        assert!(on_disk <= 2 * 1000 + 20, "{on_disk}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_since_finds_what_came_after_the_last_seen() {
        let a = tr(NodeState::Acquiring, NodeState::Active, "a");
        let b = tr(NodeState::Releasing, NodeState::Standby, "b");
        let c = tr(NodeState::Acquiring, NodeState::Active, "c");
        let all = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(new_since(&all, None).len(), 3);
        assert_eq!(new_since(&all, Some(&a)), &all[1..]);
        assert!(new_since(&all, Some(&c)).is_empty());
        let gone = tr(NodeState::Init, NodeState::Standby, "gone");
        assert_eq!(new_since(&all, Some(&gone)).len(), 3);
    }
}
