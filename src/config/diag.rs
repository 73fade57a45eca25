//! Diagnostics: one problem found in a config file, located by byte span and printed as
//! `FILE:LINE:COL: field.path: what is wrong; how to fix it`.
//!
//! Owns: the diagnostic type, byte-offset to line:column conversion, and "did you mean"
//! suggestions. Must not touch: parsing or validation rules (they only *produce* diagnostics).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// How bad a problem is. Warnings are printed but never make a config unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, already resolved to a 1-based line and column so it can outlive the source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes) so editors land on the right spot.
    pub col: usize,
    /// Dotted key path, e.g. `resource[2].address` (0-based array indexes).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}: {}", self.path, self.message)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// Converts byte offsets into line:column for one source text.
pub(crate) struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    /// 1-based (line, column). Offsets past the end or inside a UTF-8 sequence are clamped, so a
    /// bad span from a dependency can never panic here.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts[line];
        let col = self
            .source
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }
}

/// Collects diagnostics for one file while parsing and validating it.
pub(crate) struct Diags<'a> {
    file: &'a Path,
    index: LineIndex<'a>,
    pub(crate) list: Vec<Diagnostic>,
}

impl<'a> Diags<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Diags {
            file,
            index: LineIndex::new(source),
            list: Vec::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        span: Range<usize>,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        let (line, col) = self.index.locate(span.start);
        let d = Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line,
            col,
            path: path.to_string(),
            message: message.into(),
            fix: fix.into(),
        };
        // Two rules can see the same fault (e.g. a value both out of range and misordered);
        // the operator should read it once.
        if !self.list.contains(&d) {
            self.list.push(d);
        }
    }

    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Error, span, path, message, fix);
    }

    pub(crate) fn warn(
        &mut self,
        span: Range<usize>,
        path: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(Severity::Warning, span, path, message, fix);
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    /// Sorted by position so the output reads top to bottom like the file.
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.col, d.severity));
        self.list
    }
}

/// The allowed key closest to a misspelt one, if any is close enough to be a plausible typo.
pub(crate) fn closest<'k>(wrong: &str, allowed: &[&'k str]) -> Option<&'k str> {
    // snake_case and camelCase habits from other tools are the most common slip.
    let kebab: String = wrong
        .chars()
        .flat_map(|c| {
            if c == '_' {
                vec!['-']
            } else if c.is_ascii_uppercase() {
                vec!['-', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect();
    let kebab = kebab.trim_start_matches('-');
    if let Some(k) = allowed.iter().find(|k| **k == kebab) {
        return Some(k);
    }
    allowed
        .iter()
        .map(|k| (strsim::damerau_levenshtein(wrong, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// `a`, `b` and `c` — for "allowed keys are ..." messages.
pub(crate) fn list_keys(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_from_one_and_in_chars() {
        let idx = LineIndex::new("ab\nçd = 1\n");
        assert_eq!(idx.locate(0), (1, 1));
        assert_eq!(idx.locate(3), (2, 1));
        assert_eq!(idx.locate(6), (2, 3)); // 'ç' is two bytes
        assert_eq!(idx.locate(999), (3, 1));
        assert_eq!(idx.locate(4), (2, 2)); // inside 'ç': clamped, no panic
    }

    #[test]
    fn closest_finds_typos_and_snake_case() {
        let keys = ["keepalive-ms", "warntime-ms", "deadtime-ms", "initdead-ms"];
        assert_eq!(closest("keepalive_ms", &keys), Some("keepalive-ms"));
        assert_eq!(closest("deadtme-ms", &keys), Some("deadtime-ms"));
        assert_eq!(closest("keepaliveMs", &keys), Some("keepalive-ms"));
        assert_eq!(closest("colour", &keys), None);
    }
}
