//! The witness's own small config file (`/etc/twinbeat/witness.toml`). The witness is not a
//! node: it needs the pair's cluster id, node ids and keys, and where to listen, nothing else.
//!
//! ```toml
//! listen = "192.0.2.50:694"   # the address the nodes' `[tiebreaker] witness` points at
//! cluster-id = 1              # [cluster] id of the pair
//! nodes = [1, 2]              # the pair's [[node]] ids
//! lease-ms = 3000             # the same as the nodes' `[tiebreaker] lease-ms`
//! [auth]                      # as on the nodes; a copy of their key file (mode 0600)
//! algorithm = "hmac-sha256"
//! key-file = "/etc/twinbeat/authkeys"
//! keys = [1]
//! send-key = 1
//! ```
//!
//! Owns: parsing and checking that file. Every problem names the key, the cause and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::keyfile;
use crate::proto::{Algorithm, Keyring};

pub const DEFAULT_PATH: &str = "/etc/twinbeat/witness.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    listen: String,
    cluster_id: u16,
    nodes: Vec<u16>,
    lease_ms: Option<u64>,
    auth: RawAuth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAuth {
    algorithm: Option<String>,
    key_file: PathBuf,
    keys: Vec<u8>,
    send_key: Option<u8>,
}

#[derive(Clone, Debug)]
pub struct WitnessConfig {
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub cluster_id: u32,
    pub nodes: [u16; 2],
    pub lease_ms: u64,
    pub keyring: Keyring,
    pub send_key: u8,
}

/// Every problem found, one line each: `FILE: KEY: cause; fix`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct WitnessConfigError(pub Vec<String>);

pub fn load(path: &Path) -> Result<WitnessConfig, WitnessConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        WitnessConfigError(vec![format!(
            "{shown}: cannot read the witness config: {e}; create it (see `twinbeat witness --help` and etc/witness.toml)"
        )])
    })?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<WitnessConfig, WitnessConfigError> {
    let shown = path.display().to_string();
    let raw: Raw = toml::from_str(text).map_err(|e| {
        WitnessConfigError(vec![format!(
            "{shown}: {}",
            e.to_string().trim_end().replace('\n', "\n  ")
        )])
    })?;
    let mut errs = Vec::new();
    let mut err =
        |key: &str, cause: String, fix: &str| errs.push(format!("{shown}: {key}: {cause}; {fix}"));
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                "listen",
                format!("`{}` is not an address with a port", raw.listen),
                "write IP:PORT, the address the nodes' `[tiebreaker] witness` points at, e.g. \"192.0.2.50:694\"",
            );
            None
        }
    };
    let nodes = match raw.nodes.as_slice() {
        [a, b] if *a != 0 && *b != 0 && a != b => Some([*a, *b]),
        _ => {
            err(
                "nodes",
                format!("{:?} is not two different non-zero node ids", raw.nodes),
                "list the ids of the pair's two [[node]] tables, e.g. `nodes = [1, 2]`",
            );
            None
        }
    };
    let lease_ms = raw.lease_ms.unwrap_or(crate::config::DEFAULT_LEASE_MS);
    if !(100..=600_000).contains(&lease_ms) {
        err(
            "lease-ms",
            format!("{lease_ms} ms is outside 100..=600000"),
            "use the nodes' `[tiebreaker] lease-ms` (default 3000)",
        );
    }
    let algorithm = match raw.auth.algorithm.as_deref() {
        None | Some("hmac-sha256") => Some(Algorithm::HmacSha256),
        Some("hmac-sha1") => Some(Algorithm::HmacSha1),
        Some(other) => {
            err(
                "auth.algorithm",
                format!("unknown algorithm `{other}`"),
                "use the nodes' algorithm: \"hmac-sha256\" (default) or \"hmac-sha1\"",
            );
            None
        }
    };
    let send_key = raw.auth.send_key.or(raw.auth.keys.first().copied());
    if raw.auth.keys.is_empty() {
        err(
            "auth.keys",
            "no key ids".into(),
            "list the ids the nodes accept, e.g. `keys = [1]`",
        );
    }
    if send_key.is_some_and(|k| !raw.auth.keys.contains(&k)) {
        err(
            "auth.send-key",
            format!("key id {} is not in `keys`", send_key.unwrap_or(0)),
            "sign with one of the accepted ids",
        );
    }
    let (lines, problems) = keyfile::read(&raw.auth.key_file);
    for p in problems {
        err("auth.key-file", p.message, &p.fix);
    }
    let mut keys = Vec::new();
    for id in &raw.auth.keys {
        match lines.iter().find(|l| l.id == *id) {
            Some(l) => keys.push((l.id, l.secret.clone())),
            None if !lines.is_empty() => err(
                "auth.keys",
                format!("key id {id} is not in {}", raw.auth.key_file.display()),
                "copy the nodes' key file, or list only ids it holds",
            ),
            None => {}
        }
    }
    let keyring = match algorithm {
        Some(a) if !keys.is_empty() => match Keyring::new(a, keys) {
            Ok(k) => Some(k),
            Err(e) => {
                err("auth", e.to_string(), "fix the key file");
                None
            }
        },
        _ => None,
    };
    match (listen, nodes, keyring, send_key) {
        (Some(listen), Some(nodes), Some(keyring), Some(send_key)) if errs.is_empty() => {
            Ok(WitnessConfig {
                source: path.to_path_buf(),
                listen,
                cluster_id: u32::from(raw.cluster_id),
                nodes,
                lease_ms,
                keyring,
                send_key,
            })
        }
        _ => Err(WitnessConfigError(errs)),
    }
}
