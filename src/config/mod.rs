//! The TOML configuration: file -> raw serde types -> validation -> typed `Config`.
//!
//! Owns: the file format (see `etc/twinbeat.toml`), every validation rule, and picking which
//! node this process is. Must not touch: sockets, processes, the core's logic. Reads the file
//! system only for the config itself and the key file (whose permissions are part of validity).
//!
//! Every problem is reported, not just the first, each as
//! `FILE:LINE:COL: field.path: what is wrong; how to fix it` (see `Diagnostic`).

mod diag;
pub(crate) mod keyfile;
mod kinds;
mod observe;
mod parse;
mod raw;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Severity};
pub use keyfile::MIN_SECRET_LEN;
pub use observe::{Observe, DEFAULT_MAX_CONNECTIONS};
pub use types::*;
pub use validate::{
    default_timeouts, DEFAULT_CONTROL_SOCKET, DEFAULT_LEASE_GUARD_MS, DEFAULT_LEASE_MS,
    DEFAULT_MAX_CLOCK_DRIFT_PPM, DEFAULT_PORT, DEFAULT_STATE_DIR,
};

/// Where `twinbeat` looks when no file is named.
pub const DEFAULT_PATH: &str = "/etc/twinbeat/twinbeat.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}; check the path, or name the file explicitly", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has {} problem(s):\n{}", path.display(), count_errors(diagnostics), join_lines(diagnostics))]
    Invalid {
        path: PathBuf,
        /// Errors and warnings, in file order.
        diagnostics: Vec<Diagnostic>,
    },
    #[error(
        "cannot tell which node this is: {source}; pass the node name explicitly (--node NAME)"
    )]
    Hostname { source: std::io::Error },
    #[error("this host is `{name}`, but {} defines only nodes `{}` and `{}`; make `[[node]] name` match `uname -n`, or pass --node NAME", path.display(), nodes[0], nodes[1])]
    UnknownThisNode {
        name: String,
        nodes: [String; 2],
        path: PathBuf,
    },
}

impl ConfigError {
    /// The file problems, if this error is about the file's contents.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

fn count_errors(d: &[Diagnostic]) -> usize {
    d.iter().filter(|d| d.is_error()).count()
}

fn join_lines(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, validates and types the file at `path`, as seen from node `this_node`
    /// (`None`: the node whose name is this host's name, as `uname -n` prints it).
    pub fn load(path: &Path, this_node: Option<&str>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_source(&text, path, this_node)
    }

    /// Like `load`, for text already in memory; `path` is used in messages and relative to
    /// nothing (paths in the file must be absolute anyway). The key file is still read.
    pub fn from_source(
        text: &str,
        path: &Path,
        this_node: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut config = check_source(text, path)?;
        let name = match this_node {
            Some(n) => n.to_string(),
            None => hostname().map_err(|source| ConfigError::Hostname { source })?,
        };
        config.this_node = config
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| ConfigError::UnknownThisNode {
                name,
                nodes: config.nodes.clone().map(|n| n.name),
                path: path.to_path_buf(),
            })?;
        Ok(config)
    }
}

/// Validates without choosing this node (`this_node` is left at 0). Warnings are in
/// `Config::warnings`; errors (with the warnings) in `ConfigError::Invalid`.
pub fn check_source(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut diags = diag::Diags::new(path, text);
    let parsed = parse::parse(text, &mut diags);
    let config = parsed.raw.as_ref().and_then(|raw| {
        let mut v = validate::Validator {
            d: &mut diags,
            removed: &parsed.removed,
        };
        validate::validate(raw, &parsed.tree, &mut v)
    });
    let failed = diags.has_errors();
    let diagnostics = diags.into_sorted();
    match config {
        Some(mut config) if !failed => {
            config.source = path.to_path_buf();
            config.warnings = diagnostics;
            Ok(config)
        }
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            diagnostics,
        }),
    }
}

/// This host's name as `uname -n` prints it (the kernel's UTS nodename).
pub fn hostname() -> Result<String, std::io::Error> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(name.trim().to_string())
}

/// Where `[[resource]]` number `index` (0-based) sets `key`, as 1-based (line, column) in
/// `text`, and whether the key is there (else the table's position). For checks outside
/// validation (e.g. what DRBD says about the resource) that point at the line they are about.
pub fn locate_resource_key(text: &str, index: usize, key: &str) -> Option<((usize, usize), bool)> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let resources = root.get_ref().get("resource")?;
    let DeValue::Array(items) = resources.get_ref() else {
        return None;
    };
    let item = items.get(index)?;
    let key_span = match item.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, _)| k.span()),
        _ => None,
    };
    let found = key_span.is_some();
    let span = key_span.unwrap_or_else(|| item.span());
    Some((diag::LineIndex::new(text).locate(span.start), found))
}
