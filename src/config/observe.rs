//! The `[metrics]` section: where this node serves Prometheus metrics and health checks.
//!
//! Owns: the section's keys, their validation and the typed `Observe`. Must not touch: sockets
//! (the shell binds them). Addresses are per node, like link addresses, because both nodes read
//! the same file and each must bind only its own management address.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use toml::Spanned;

use super::diag::{closest, list_keys};
use super::parse::join;
use super::raw::RawConfig;
use super::types::Node;
use super::validate::Validator;

/// Concurrent HTTP and agent-check clients served at once when `max-connections` is not set:
/// a Prometheus server, two HAProxies and an operator's curl fit with room to spare.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
const MAX_MAX_CONNECTIONS: u32 = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observe {
    /// Node name -> the address its HTTP listener (`/metrics`, `/health`) binds.
    pub listen: BTreeMap<String, SocketAddr>,
    /// Node name -> the address its HAProxy agent-check listener binds; empty when not used.
    pub agent_listen: BTreeMap<String, SocketAddr>,
    /// Clients served at once over both listeners; more wait in the kernel's accept queue.
    pub max_connections: u32,
}

pub(crate) fn observe(
    raw: &RawConfig,
    v: &mut Validator,
    nodes: Option<&[Node; 2]>,
) -> Option<Observe> {
    let m = raw.metrics.as_ref()?;
    let section = m.get_ref();
    let listen = match &section.listen {
        Some(t) => per_node(v, t, "metrics.listen", nodes),
        None => {
            if !v.removed.contains("metrics.listen") {
                v.d.error(
                    m.span(),
                    "metrics",
                    "missing key `listen`",
                    "add `listen = { NODE = \"IP:PORT\", ... }` with each node's management address, or remove [metrics]",
                );
            }
            None
        }
    };
    let agent_listen = match &section.agent_listen {
        Some(t) => per_node(v, t, "metrics.agent-listen", nodes),
        None => Some(BTreeMap::new()),
    };
    let max_connections = match &section.max_connections {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_MAX_CONNECTIONS => {
            v.d.error(
                n.span(),
                "metrics.max-connections",
                format!("{} is out of range", n.get_ref()),
                format!("write a number from 1 to {MAX_MAX_CONNECTIONS}"),
            );
            DEFAULT_MAX_CONNECTIONS
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let (listen, agent_listen) = (listen?, agent_listen?);
    for (node, a) in &agent_listen {
        if listen.get(node) == Some(a) {
            v.d.error(
                section
                    .agent_listen
                    .as_ref()
                    .map(|t| t.span())
                    .unwrap_or(m.span()),
                &join("metrics.agent-listen", node),
                format!("{a} is also this node's `listen` address"),
                "give the agent-check its own port, e.g. the HTTP port + 1",
            );
            return None;
        }
    }
    Some(Observe {
        listen,
        agent_listen,
        max_connections,
    })
}

type Table = Spanned<BTreeMap<Spanned<String>, Spanned<String>>>;

/// A `{ node = "IP:PORT" }` table: known node names, concrete addresses, non-zero ports.
fn per_node(
    v: &mut Validator,
    table: &Table,
    path: &str,
    nodes: Option<&[Node; 2]>,
) -> Option<BTreeMap<String, SocketAddr>> {
    let mut out = BTreeMap::new();
    let mut ok = true;
    let names: Vec<&str> = nodes
        .map(|n| n.iter().map(|n| n.name.as_str()).collect())
        .unwrap_or_default();
    for (k, a) in table.get_ref() {
        let p = join(path, k.get_ref());
        if nodes.is_some() && !names.contains(&k.get_ref().as_str()) {
            let mut fix = format!("the nodes are {}", list_keys(&names));
            if let Some(best) = closest(k.get_ref(), &names) {
                fix = format!("did you mean `{best}`? {fix}");
            }
            v.d.error(k.span(), &p, format!("unknown node `{}`", k.get_ref()), fix);
            ok = false;
            continue;
        }
        match a.get_ref().parse::<SocketAddr>() {
            Err(_) => {
                v.d.error(
                    a.span(),
                    &p,
                    format!("`{}` is not an IP:PORT address", a.get_ref()),
                    "write e.g. \"203.0.113.10:9105\" or \"[2001:db8::10]:9105\"",
                );
                ok = false;
            }
            // Every address would expose the daemon on the service and heartbeat networks
            // too, including the VIP once it moves here.
            Ok(s) if s.ip().is_unspecified() => {
                v.d.error(
                    a.span(),
                    &p,
                    format!("{} listens on every address of the node", s.ip()),
                    "write the node's management address (or 127.0.0.1 for local scrapes only)",
                );
                ok = false;
            }
            Ok(s) if s.port() == 0 => {
                v.d.error(
                    a.span(),
                    &p,
                    "port 0 picks a random port nobody can find",
                    "write a fixed port, e.g. 9105",
                );
                ok = false;
            }
            Ok(s) => {
                out.insert(k.get_ref().clone(), s);
            }
        }
    }
    if table.get_ref().is_empty() {
        v.d.error(
            table.span(),
            path,
            "no node has an address",
            "add `NODE = \"IP:PORT\"` for each node that should listen",
        );
        ok = false;
    }
    ok.then_some(out)
}
