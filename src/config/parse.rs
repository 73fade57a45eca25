//! TOML text -> `RawConfig`, reporting every syntax, unknown-key and type problem.
//!
//! Owns: the recovery strategy. Serde stops at the first error, so each error is recorded with
//! its span, the offending key is removed from the spanned document tree, and deserialization
//! is retried (bounded). Must not touch: semantic rules (see `validate`).

use std::collections::BTreeSet;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

use super::diag::{closest, list_keys, Diags};
use super::raw::{resource_keys, RawConfig};

/// More retries than any real file has mistakes; it only bounds a pathological input.
const MAX_RETRIES: usize = 256;

/// What parsing produced: the raw config (absent when recovery was impossible), the final
/// spanned tree (for key-level checks), and the paths of keys dropped because of an error, so
/// `validate` does not report them a second time as "missing".
pub(crate) struct Parsed<'i> {
    pub raw: Option<RawConfig>,
    pub tree: DeTable<'i>,
    pub removed: BTreeSet<String>,
}

pub(crate) fn parse<'i>(source: &'i str, diags: &mut Diags<'_>) -> Parsed<'i> {
    let (root, syntax) = DeTable::parse_recoverable(source);
    if !syntax.is_empty() {
        for e in &syntax {
            diags.error(
                e.span().unwrap_or(0..0),
                "(syntax)",
                format!("invalid TOML: {}", one_line(e.message())),
                "fix the syntax at this position",
            );
        }
        // A half-parsed tree would produce confusing follow-up errors; syntax first.
        return Parsed {
            raw: None,
            tree: root.into_inner(),
            removed: BTreeSet::new(),
        };
    }
    let root_span = root.span();
    let mut tree = root.into_inner();
    let mut removed = BTreeSet::new();
    for _ in 0..MAX_RETRIES {
        let attempt = Spanned::new(root_span.clone(), tree.clone());
        match RawConfig::deserialize(Deserializer::from(attempt)) {
            Ok(raw) => {
                return Parsed {
                    raw: Some(raw),
                    tree,
                    removed,
                }
            }
            Err(e) => {
                let span = e.span();
                let hit = span.as_ref().and_then(|s| remove_at(&mut tree, s, ""));
                match hit {
                    Some(hit) => {
                        report(diags, &hit, e.message());
                        removed.insert(hit.path);
                    }
                    None => {
                        diags.error(
                            span.unwrap_or(0..0),
                            "(document)",
                            one_line(e.message()),
                            "fix this value",
                        );
                        break;
                    }
                }
            }
        }
    }
    Parsed {
        raw: None,
        tree,
        removed,
    }
}

/// A key removed from the tree because serde rejected it or its value.
struct Hit {
    path: String,
    span: Range<usize>,
    /// The key itself was unknown (as opposed to its value having the wrong type).
    unknown: bool,
    /// For a key inside a `[[resource]]`: that resource's kind, to list only its keys.
    resource_kind: Option<String>,
}

fn report(diags: &mut Diags<'_>, hit: &Hit, message: &str) {
    let message = one_line(message);
    if hit.unknown {
        let key = hit.path.rsplit('.').next().unwrap_or(&hit.path);
        let allowed: Vec<String> = match hit.resource_kind.as_deref().and_then(resource_keys) {
            Some(keys) => keys.iter().map(|k| k.to_string()).collect(),
            None => backticked(&message).into_iter().skip(1).collect(),
        };
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let scope = match &hit.resource_kind {
            Some(kind) => format!(" for a `{kind}` resource"),
            None => String::new(),
        };
        let mut fix = if allowed.is_empty() {
            "remove it; this table takes no keys".to_string()
        } else {
            format!("allowed keys{scope} are {}", list_keys(&allowed))
        };
        if let Some(best) = closest(key, &allowed) {
            fix = format!("did you mean `{best}`? {fix}");
        }
        diags.error(
            hit.span.clone(),
            &hit.path,
            format!("unknown key `{key}`"),
            fix,
        );
    } else {
        // serde names our internal `Raw*` structs; the operator wrote a table.
        let message = match message.split_once("expected struct ") {
            Some((head, _)) => format!("{head}expected a table"),
            None => message,
        };
        diags.error(
            hit.span.clone(),
            &hit.path,
            format!("wrong type or value: {message}"),
            type_hint(&message),
        );
    }
}

/// Removes the key whose name or value the error span points at; returns where it was.
fn remove_at(table: &mut DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<Hit> {
    let kind = table
        .get("kind")
        .and_then(|v| v.get_ref().as_str())
        .map(str::to_string);
    let mut found: Option<(String, Hit)> = None;
    for (k, v) in table.iter_mut() {
        let name = k.get_ref().to_string();
        let path = join(prefix, &name);
        if k.span() == *span {
            found = Some((
                name,
                Hit {
                    path,
                    span: span.clone(),
                    unknown: true,
                    resource_kind: kind.clone().filter(|_| prefix.starts_with("resource[")),
                },
            ));
            break;
        }
        let value_span = v.span();
        let inside = match v.get_mut() {
            DeValue::Table(t) => {
                if value_span == *span {
                    true
                } else if let Some(hit) = remove_at(t, span, &path) {
                    return Some(hit);
                } else {
                    false
                }
            }
            DeValue::Array(items) => {
                let mut inside = contains(&value_span, span);
                for (i, item) in items.iter_mut().enumerate() {
                    let item_span = item.span();
                    if let DeValue::Table(t) = item.get_mut() {
                        if item_span == *span {
                            inside = true;
                        } else if let Some(hit) = remove_at(t, span, &format!("{path}[{i}]")) {
                            return Some(hit);
                        }
                    } else if contains(&item_span, span) {
                        inside = true;
                    }
                }
                inside
            }
            _ => contains(&value_span, span),
        };
        if inside {
            found = Some((
                name,
                Hit {
                    path,
                    span: value_span,
                    unknown: false,
                    resource_kind: None,
                },
            ));
            break;
        }
    }
    let (name, hit) = found?;
    table.remove(name.as_str());
    Some(hit)
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer != &(0..0)
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The words serde put between backticks: for an unknown field, the field then the allowed ones.
fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turns serde's "expected u64" into something an operator can act on.
fn type_hint(message: &str) -> String {
    let expected = message.rsplit("expected ").next().unwrap_or("");
    let hint = if expected.starts_with('u') || expected.starts_with('i') {
        "write a whole number without quotes, within the type's range"
    } else if expected.contains("string") {
        "write the value in double quotes"
    } else if expected.contains("bool") {
        "write true or false, without quotes"
    } else if expected.contains("sequence") {
        "write an array, e.g. [\"/usr/bin/true\"]"
    } else if expected.contains("table") || expected.contains("map") {
        "write a table, e.g. a [section] header or { key = value }"
    } else {
        "fix the value's type"
    };
    hint.to_string()
}
