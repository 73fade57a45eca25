//! Scenario outcomes, their medians, the human summary and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: u8,
    pub name: &'static str,
    pub trial: u32,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Measured figures in ms (counts where the name says so).
    pub figures: BTreeMap<String, i64>,
    /// What happened, in words: who did what, for the documented outcome.
    pub notes: Vec<String>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn new(scenario: u8, name: &'static str, trial: u32) -> Outcome {
        Outcome {
            scenario,
            name,
            trial,
            passed: false,
            checks: Vec::new(),
            figures: BTreeMap::new(),
            notes: Vec::new(),
            error: None,
        }
    }
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        });
    }
    pub fn figure(&mut self, name: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.figures.insert(name.to_string(), v);
        }
    }
    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
    pub fn finish(&mut self) {
        self.passed = self.error.is_none() && self.checks.iter().all(|c| c.ok);
    }
}

pub fn median(mut v: Vec<i64>) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

/// Per scenario, the median of each figure over its trials.
pub fn medians(outcomes: &[Outcome]) -> BTreeMap<u8, BTreeMap<String, i64>> {
    let mut all: BTreeMap<u8, BTreeMap<String, Vec<i64>>> = BTreeMap::new();
    for o in outcomes {
        for (k, v) in &o.figures {
            all.entry(o.scenario)
                .or_default()
                .entry(k.clone())
                .or_default()
                .push(*v);
        }
    }
    all.into_iter()
        .map(|(s, figs)| {
            (
                s,
                figs.into_iter()
                    .filter_map(|(k, v)| Some((k, median(v)?)))
                    .collect(),
            )
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub timings: BTreeMap<String, i64>,
    pub idle: BTreeMap<String, f64>,
    pub outcomes: Vec<Outcome>,
    pub medians: BTreeMap<u8, BTreeMap<String, i64>>,
    pub targets: Vec<Target>,
    pub passed: bool,
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n== twinbeat namespace lab: scenario results");
    let _ = writeln!(
        o,
        "timings: {}",
        r.timings
            .iter()
            .map(|(k, v)| format!("{k} {v} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for out in &r.outcomes {
        let _ = writeln!(
            o,
            "\n[{}] scenario {} ({}), trial {}",
            if out.passed { "PASS" } else { "FAIL" },
            out.scenario,
            out.name,
            out.trial
        );
        if let Some(e) = &out.error {
            let _ = writeln!(o, "    error: {e}");
        }
        for c in &out.checks {
            let _ = writeln!(
                o,
                "    {} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if !out.figures.is_empty() {
            let _ = writeln!(
                o,
                "    figures: {}",
                out.figures
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        for n in &out.notes {
            let _ = writeln!(o, "    - {n}");
        }
    }
    let _ = writeln!(o, "\n== medians over trials (ms unless named)");
    for (s, figs) in &r.medians {
        let _ = writeln!(
            o,
            "  scenario {s}: {}",
            figs.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let _ = writeln!(
        o,
        "  idle daemons: {}",
        r.idle
            .iter()
            .map(|(k, v)| format!("{k}={v:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        o,
        "\n== targets (a miss is a finding to explain, not a failure)"
    );
    for t in &r.targets {
        let _ = writeln!(
            o,
            "  {:<46} target {:<34} measured {:>8}  {}",
            t.what,
            t.target,
            t.measured.map(|v| format!("{v:.1}")).unwrap_or("-".into()),
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            }
        );
    }
    let passed = r.outcomes.iter().filter(|o| o.passed).count();
    let _ = writeln!(
        o,
        "\nscenarios: {} passed, {} failed",
        passed,
        r.outcomes.len() - passed
    );
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert_eq!(super::median(vec![]), None);
        assert_eq!(super::median(vec![5, 1, 3]), Some(3));
        assert_eq!(super::median(vec![4, 1, 3, 10]), Some(3));
    }
}
