//! `RawConfig` -> `Config`: defaults, ranges, cross-field rules, the key file.
//!
//! Owns: every semantic rule and every default value. Each rule reports through `Diags` and
//! carries on, so one run lists every problem. Must not touch: TOML syntax and types (`parse`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::core::{Millis, MAX_STEPS};

use super::diag::{closest, list_keys, Diags};
use super::keyfile;
use super::parse::join;
use super::raw::*;
use super::types::*;

pub const DEFAULT_PORT: u16 = 694;
pub const DEFAULT_KEEPALIVE_MS: Millis = 200;
pub const DEFAULT_WARNTIME_MS: Millis = 500;
pub const DEFAULT_DEADTIME_MS: Millis = 1_000;
pub const DEFAULT_INITDEAD_MS: Millis = 10_000;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/twinbeat";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/twinbeat/control.sock";

/// (start, stop) timeouts per kind, chosen for the slow-but-healthy case: a promote waits for
/// DRBD's handshake, a mount may replay a journal, InnoDB crash recovery and a clean shutdown
/// flushing the buffer pool take minutes on a large server; an address change takes an instant.
pub fn default_timeouts(kind: &str) -> (Millis, Millis) {
    match kind {
        "drbd" => (30_000, 30_000),
        "filesystem" => (120_000, 60_000),
        "mysql" => (300_000, 300_000),
        "vip" => (5_000, 5_000),
        _ => (60_000, 60_000),
    }
}

pub(crate) struct Validator<'d, 'f> {
    pub d: &'d mut Diags<'f>,
    pub removed: &'d BTreeSet<String>,
}

impl Validator<'_, '_> {
    /// A required key: reports it missing (unless `parse` already reported and dropped it).
    pub(crate) fn req<'v, T>(
        &mut self,
        value: &'v Option<Spanned<T>>,
        table_span: &Range<usize>,
        table_path: &str,
        key: &str,
        fix: &str,
    ) -> Option<&'v Spanned<T>> {
        if value.is_none() {
            let path = join(table_path, key);
            if !self.removed.contains(&path) {
                self.d.error(
                    table_span.clone(),
                    &path,
                    format!("missing key `{key}`"),
                    fix,
                );
            }
        }
        value.as_ref()
    }

    pub(crate) fn abs_path(&mut self, value: &Spanned<String>, path: &str) -> Option<PathBuf> {
        let p = PathBuf::from(value.get_ref());
        if value.get_ref().is_empty() {
            self.d
                .error(value.span(), path, "empty path", "write an absolute path");
            None
        } else if !p.is_absolute() {
            self.d.error(
                value.span(),
                path,
                format!("`{}` is a relative path", value.get_ref()),
                "write an absolute path starting with `/`; the daemon's working directory is not defined",
            );
            None
        } else {
            Some(p)
        }
    }

    pub(crate) fn argv(&mut self, value: &Spanned<Vec<String>>, path: &str) -> Option<Vec<String>> {
        let argv = value.get_ref();
        match argv.first() {
            None => {
                self.d.error(
                    value.span(),
                    path,
                    "empty command",
                    "write the program and its arguments, e.g. [\"/usr/sbin/foo\", \"--bar\"]",
                );
                None
            }
            Some(prog) if prog.trim().is_empty() => {
                self.d.error(
                    value.span(),
                    path,
                    "the program (first element) is empty",
                    "write the program's absolute path first",
                );
                None
            }
            Some(prog) => {
                if prog.contains(' ') && argv.len() == 1 {
                    self.d.error(
                        value.span(),
                        path,
                        format!("`{prog}` looks like a shell command line; commands are argv arrays and no shell runs them"),
                        "split it into one array element per argument",
                    );
                    return None;
                }
                if !prog.starts_with('/') {
                    self.d.warn(
                        value.span(),
                        path,
                        format!("`{prog}` is looked up in PATH at run time"),
                        "write the absolute path so the daemon runs the same program under systemd",
                    );
                }
                Some(argv.clone())
            }
        }
    }

    pub(crate) fn positive(
        &mut self,
        value: &Option<Spanned<u64>>,
        default: Millis,
        path: &str,
    ) -> Millis {
        match value {
            Some(v) if *v.get_ref() == 0 => {
                self.d.error(
                    v.span(),
                    path,
                    "must be greater than 0",
                    "write a positive number of milliseconds",
                );
                default
            }
            Some(v) => *v.get_ref(),
            None => default,
        }
    }

    pub(crate) fn non_empty(
        &mut self,
        value: &Spanned<String>,
        path: &str,
        fix: &str,
    ) -> Option<String> {
        if value.get_ref().trim().is_empty() {
            self.d.error(value.span(), path, "must not be empty", fix);
            None
        } else {
            Some(value.get_ref().clone())
        }
    }
}

/// Runs every rule. Returns the config only when no error was found; warnings go with it.
pub(crate) fn validate(
    raw: &RawConfig,
    tree: &DeTable<'_>,
    v: &mut Validator<'_, '_>,
) -> Option<Config> {
    let root = 0..0;
    let cluster = cluster(raw, v, &root);
    let nodes = nodes(raw, v, &root);
    let links = links(raw, v, &root, nodes.as_ref());
    let timing = timing(raw, v);
    let auth = auth(raw, v, &root);
    let resources = resources(raw, tree, v, &root);
    let tiebreaker = tiebreaker(raw, v, &timing);
    let fencing = fencing(raw, v);
    let failover = failover(raw, v, nodes.as_ref());
    let (state_dir, control_socket) = daemon(raw, v);
    let drill = drill(raw, v);
    let metrics = super::observe::observe(raw, v, nodes.as_ref());
    if v.d.has_errors() {
        return None;
    }
    Some(Config {
        source: PathBuf::new(),
        cluster: cluster?,
        nodes: nodes?,
        this_node: 0,
        links: links?,
        timing,
        auth: auth?,
        resources: resources?,
        tiebreaker,
        fencing,
        failover,
        state_dir: state_dir?,
        control_socket: control_socket?,
        drill,
        metrics,
        warnings: Vec::new(),
    })
}

fn cluster(raw: &RawConfig, v: &mut Validator, root: &Range<usize>) -> Option<Cluster> {
    let c = v.req(
        &raw.cluster,
        root,
        "",
        "cluster",
        "add a [cluster] table with `name` and `id`",
    )?;
    let span = c.span();
    let c = c.get_ref();
    let name = v.req(
        &c.name,
        &span,
        "cluster",
        "name",
        "add `name = \"...\"`, the same on both nodes",
    );
    let name = name.and_then(|n| v.non_empty(n, "cluster.name", "write the cluster's name"));
    let id = v.req(
        &c.id,
        &span,
        "cluster",
        "id",
        "add `id = N` (1..65535), the same on both nodes and unique on the network",
    );
    Some(Cluster {
        name: name?,
        id: *id?.get_ref(),
    })
}

fn nodes(raw: &RawConfig, v: &mut Validator, root: &Range<usize>) -> Option<[Node; 2]> {
    let fix = "add two [[node]] tables, each with `name` (as `uname -n` prints it) and `id`";
    let Some(list) = raw.node.as_ref() else {
        if !v.removed.contains("node") {
            v.d.error(root.clone(), "node", "no [[node]] tables", fix);
        }
        return None;
    };
    if list.len() != 2 {
        let span = list
            .get(2)
            .or(list.first())
            .map(|n| n.span())
            .unwrap_or(root.clone());
        v.d.error(
            span,
            "node",
            format!(
                "{} [[node]] tables; twinbeat manages exactly two nodes",
                list.len()
            ),
            fix,
        );
    }
    let mut out: Vec<Node> = Vec::new();
    let mut ok = list.len() == 2;
    for (i, n) in list.iter().enumerate() {
        let path = format!("node[{i}]");
        let span = n.span();
        let n = n.get_ref();
        let name = v.req(
            &n.name,
            &span,
            &path,
            "name",
            "add `name = \"...\"` as `uname -n` prints it on that node",
        );
        let name = name.and_then(|s| {
            let p = format!("{path}.name");
            let name = v.non_empty(s, &p, "write the node's name as `uname -n` prints it")?;
            if name.chars().any(char::is_whitespace) {
                v.d.error(
                    s.span(),
                    &p,
                    "node names cannot contain spaces",
                    "write the name as `uname -n` prints it",
                );
                return None;
            }
            if out.iter().any(|o| o.name == name) {
                v.d.error(
                    s.span(),
                    &p,
                    format!("node name `{name}` is used twice"),
                    "give each node its own name",
                );
                return None;
            }
            Some(name)
        });
        let id = v.req(
            &n.id,
            &span,
            &path,
            "id",
            "add `id = N` (1..65535), different on each node",
        );
        let id = id.and_then(|s| {
            let id = *s.get_ref();
            if id == 0 {
                v.d.error(
                    s.span(),
                    &format!("{path}.id"),
                    "node id 0 is reserved",
                    "use an id from 1 to 65535",
                );
                return None;
            }
            if out.iter().any(|o| o.id == id) {
                v.d.error(
                    s.span(),
                    &format!("{path}.id"),
                    format!("node id {id} is used twice"),
                    "give each node its own id",
                );
                return None;
            }
            Some(id)
        });
        match (name, id) {
            (Some(name), Some(id)) => out.push(Node { name, id }),
            _ => ok = false,
        }
    }
    if !ok {
        return None;
    }
    let mut it = out.into_iter();
    Some([it.next()?, it.next()?])
}

fn links(
    raw: &RawConfig,
    v: &mut Validator,
    root: &Range<usize>,
    nodes: Option<&[Node; 2]>,
) -> Option<Vec<Link>> {
    let Some(list) = raw.link.as_ref() else {
        if !v.removed.contains("link") {
            v.d.error(
                root.clone(),
                "link",
                "no [[link]] tables",
                "add at least one [[link]] (two on separate networks are better)",
            );
        }
        return None;
    };
    if list.len() == 1 {
        v.d.warn(
            list[0].span(),
            "link[0]",
            "only one heartbeat link: a single cable or switch failure looks like a dead peer",
            "add a second [[link]] over a different network",
        );
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, l) in list.iter().enumerate() {
        let path = format!("link[{i}]");
        let span = l.span();
        let l = l.get_ref();
        let name = v
            .req(
                &l.name,
                &span,
                &path,
                "name",
                "add `name = \"...\"`, e.g. the network's purpose (`hb`, `lan`)",
            )
            .and_then(|s| {
                let p = format!("{path}.name");
                let name = v.non_empty(s, &p, "write the link's name")?;
                if out.iter().any(|o: &Link| o.name == name) {
                    v.d.error(
                        s.span(),
                        &p,
                        format!("link name `{name}` is used twice"),
                        "give each link its own name",
                    );
                    return None;
                }
                Some(name)
            });
        let interface = v
            .req(
                &l.interface,
                &span,
                &path,
                "interface",
                "add `interface = \"eth1\"`",
            )
            .and_then(|s| {
                v.non_empty(
                    s,
                    &format!("{path}.interface"),
                    "write the network interface name",
                )
            });
        let port = match &l.port {
            Some(p) if *p.get_ref() == 0 => {
                v.d.error(
                    p.span(),
                    &format!("{path}.port"),
                    "port 0 is not a port",
                    "remove it to use 694, or pick a free UDP port",
                );
                None
            }
            Some(p) => Some(*p.get_ref()),
            None => Some(DEFAULT_PORT),
        };
        let addresses = v
            .req(
                &l.address,
                &span,
                &path,
                "address",
                "add `address = { NODE-A = \"IP\", NODE-B = \"IP\" }`",
            )
            .and_then(|a| link_addresses(v, a, &format!("{path}.address"), nodes));
        match (name, interface, port, addresses) {
            (Some(name), Some(interface), Some(port), Some(addresses)) => out.push(Link {
                name,
                interface,
                port,
                addresses,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn link_addresses(
    v: &mut Validator,
    table: &Spanned<std::collections::BTreeMap<Spanned<String>, Spanned<String>>>,
    path: &str,
    nodes: Option<&[Node; 2]>,
) -> Option<[IpAddr; 2]> {
    let mut found: [Option<IpAddr>; 2] = [None, None];
    let mut ok = true;
    let mut unknown = Vec::new();
    for (k, a) in table.get_ref() {
        let p = join(path, k.get_ref());
        let ip = match a.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                v.d.error(
                    a.span(),
                    &p,
                    format!("`{}` is not an IP address", a.get_ref()),
                    "write a plain IPv4 or IPv6 address, without port or prefix",
                );
                ok = false;
                None
            }
        };
        let Some(nodes) = nodes else { continue };
        match nodes.iter().position(|n| &n.name == k.get_ref()) {
            // A bad address was reported above; the node is still "defined" on this link.
            Some(i) => found[i] = ip.or(Some(IpAddr::from([0, 0, 0, 0]))),
            None => unknown.push(k),
        }
    }
    let nodes = nodes?;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    // A misspelt node name most likely meant a node that has no address yet.
    let missing: Vec<&str> = (0..2)
        .filter(|i| found[*i].is_none())
        .map(|i| names[i])
        .collect();
    for k in unknown {
        let mut fix = format!("the nodes are {}", list_keys(&names));
        if let Some(best) = closest(k.get_ref(), &missing) {
            fix = format!("did you mean `{best}`? {fix}");
        }
        v.d.error(
            k.span(),
            &join(path, k.get_ref()),
            format!("unknown node `{}`", k.get_ref()),
            fix,
        );
        ok = false;
    }
    for name in &missing {
        v.d.error(
            table.span(),
            path,
            format!("no address for node `{name}`: a link must be defined for both nodes"),
            format!("add `{name} = \"IP\"` to this table"),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let [Some(a), Some(b)] = found else {
        return None;
    };
    if a.is_ipv4() != b.is_ipv4() {
        v.d.error(
            table.span(),
            path,
            "one address is IPv4 and the other IPv6",
            "use the same address family for both nodes on a link",
        );
        return None;
    }
    if a == b {
        v.d.error(
            table.span(),
            path,
            "both nodes have the same address",
            "give each node its own address on the link",
        );
        return None;
    }
    ok.then_some([a, b])
}

fn timing(raw: &RawConfig, v: &mut Validator) -> Timing {
    let t = raw.timing.as_ref().map(|t| t.get_ref());
    let get = |f: fn(&RawTiming) -> &Option<Spanned<u64>>| t.and_then(|t| f(t).as_ref());
    let keepalive = get(|t| &t.keepalive_ms);
    let warntime = get(|t| &t.warntime_ms);
    let deadtime = get(|t| &t.deadtime_ms);
    let initdead = get(|t| &t.initdead_ms);
    let out = Timing {
        keepalive_ms: v.positive(
            &keepalive.cloned(),
            DEFAULT_KEEPALIVE_MS,
            "timing.keepalive-ms",
        ),
        warntime_ms: v.positive(
            &warntime.cloned(),
            DEFAULT_WARNTIME_MS,
            "timing.warntime-ms",
        ),
        deadtime_ms: v.positive(
            &deadtime.cloned(),
            DEFAULT_DEADTIME_MS,
            "timing.deadtime-ms",
        ),
        initdead_ms: v.positive(
            &initdead.cloned(),
            DEFAULT_INITDEAD_MS,
            "timing.initdead-ms",
        ),
    };
    // Point at whichever key the operator wrote; fall back to the table, then the file start.
    let table = raw.timing.as_ref().map(|t| t.span()).unwrap_or(0..0);
    let at = |s: Option<&Spanned<u64>>| s.map(|s| s.span()).unwrap_or(table.clone());
    if out.warntime_ms >= out.deadtime_ms {
        v.d.error(
            at(warntime.or(deadtime)),
            "timing.warntime-ms",
            format!("warntime {} ms is not less than deadtime {} ms", out.warntime_ms, out.deadtime_ms),
            "make warntime-ms smaller than deadtime-ms (about half), so a late peer is noticed before it is declared dead",
        );
    }
    if out.deadtime_ms <= 2 * out.keepalive_ms {
        v.d.error(
            at(deadtime.or(keepalive)),
            "timing.deadtime-ms",
            format!("deadtime {} ms is not more than 2 x keepalive {} ms", out.deadtime_ms, out.keepalive_ms),
            "make deadtime-ms at least 3 keepalives (5 recommended), so one or two lost heartbeats never cause a takeover",
        );
    }
    if out.initdead_ms < out.deadtime_ms {
        v.d.error(
            at(initdead.or(deadtime)),
            "timing.initdead-ms",
            format!("initdead {} ms is less than deadtime {} ms", out.initdead_ms, out.deadtime_ms),
            "make initdead-ms at least deadtime-ms (10 x is usual), since links and switches are slow to come up at boot",
        );
    }
    if out.warntime_ms <= out.keepalive_ms && out.warntime_ms < out.deadtime_ms {
        v.d.warn(
            at(warntime),
            "timing.warntime-ms",
            format!(
                "warntime {} ms is not more than keepalive {} ms; every heartbeat would be late",
                out.warntime_ms, out.keepalive_ms
            ),
            "make warntime-ms at least 2 keepalives",
        );
    }
    out
}

fn auth(raw: &RawConfig, v: &mut Validator, root: &Range<usize>) -> Option<Auth> {
    let a = v.req(
        &raw.auth,
        root,
        "",
        "auth",
        "add an [auth] table with `key-file` and `keys`",
    )?;
    let span = a.span();
    let a = a.get_ref();
    let algorithm = match a.algorithm.as_ref() {
        None => Some(Algorithm::HmacSha256),
        Some(s) => match s.get_ref().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha1" => Some(Algorithm::HmacSha1),
            other => {
                v.d.error(
                    s.span(),
                    "auth.algorithm",
                    format!("unknown algorithm `{other}`"),
                    "use \"hmac-sha256\" (default) or \"hmac-sha1\"",
                );
                None
            }
        },
    };
    let ids: Option<Vec<u8>> = match v.req(
        &a.keys,
        &span,
        "auth",
        "keys",
        "add `keys = [1]`, the ids from the key file accepted on receive",
    ) {
        None => None,
        Some(list) if list.get_ref().is_empty() => {
            v.d.error(
                list.span(),
                "auth.keys",
                "no key ids",
                "list at least one id from the key file, e.g. `keys = [1]`",
            );
            None
        }
        Some(list) => {
            let mut ids = Vec::new();
            let mut ok = true;
            for (i, id) in list.get_ref().iter().enumerate() {
                let p = format!("auth.keys[{i}]");
                if *id.get_ref() == 0 {
                    v.d.error(
                        id.span(),
                        &p,
                        "key id 0 is reserved",
                        "use ids from 1 to 255",
                    );
                    ok = false;
                } else if ids.contains(id.get_ref()) {
                    v.d.error(
                        id.span(),
                        &p,
                        format!("key id {} is listed twice", id.get_ref()),
                        "list each id once",
                    );
                    ok = false;
                } else {
                    ids.push(*id.get_ref());
                }
            }
            ok.then_some(ids)
        }
    };
    let send_key = match (&a.send_key, &ids) {
        (Some(s), Some(ids)) if !ids.contains(s.get_ref()) => {
            v.d.error(
                s.span(),
                "auth.send-key",
                format!("send-key {} is not in `keys`", s.get_ref()),
                "add it to `keys`, or pick one of the listed ids",
            );
            None
        }
        (Some(s), _) => Some(*s.get_ref()),
        (None, Some(ids)) if ids.len() == 1 => Some(ids[0]),
        (None, Some(_)) => {
            v.d.error(
                span.clone(),
                "auth.send-key",
                "several keys are listed but none is chosen to sign",
                "add `send-key = ID`, the same on both nodes",
            );
            None
        }
        (None, None) => None,
    };
    let key_file = v
        .req(
            &a.key_file,
            &span,
            "auth",
            "key-file",
            "add `key-file = \"/etc/twinbeat/authkey\"`",
        )
        .and_then(|k| v.abs_path(k, "auth.key-file").map(|p| (p, k.span())));
    let (key_file, file_span) = key_file?;
    let (keys, problems) = keyfile::read(&key_file);
    let readable = problems.is_empty() || !keys.is_empty();
    for p in problems {
        v.d.error(file_span.clone(), "auth.key-file", p.message, p.fix);
    }
    let ids = ids?;
    let mut accept = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match keys.iter().find(|k| k.id == *id) {
            Some(k) => accept.push(AuthKey {
                id: k.id,
                secret: k.secret.clone(),
            }),
            None if readable => {
                let span = a
                    .keys
                    .as_ref()
                    .and_then(|l| l.get_ref().get(i))
                    .map(|s| s.span())
                    .unwrap_or(span.clone());
                v.d.error(
                    span,
                    &format!("auth.keys[{i}]"),
                    format!("key id {id} is not in {}", key_file.display()),
                    format!("add a line `{id} SECRET` to the key file, or remove the id"),
                );
            }
            None => {}
        }
    }
    if accept.len() != ids.len() {
        return None;
    }
    Some(Auth {
        algorithm: algorithm?,
        key_file,
        send_key: send_key?,
        accept,
    })
}

fn resources(
    raw: &RawConfig,
    tree: &DeTable<'_>,
    v: &mut Validator,
    root: &Range<usize>,
) -> Option<Vec<Resource>> {
    let Some(list) = raw.resource.as_ref() else {
        if !v.removed.contains("resource") {
            v.d.error(
                root.clone(),
                "resource",
                "no [[resource]] tables",
                "add the resources to run, in takeover order (e.g. drbd, filesystem, mysql, vip)",
            );
        }
        return None;
    };
    if list.len() > MAX_STEPS {
        v.d.error(
            list[MAX_STEPS].span(),
            &format!("resource[{MAX_STEPS}]"),
            format!(
                "{} resources; at most {MAX_STEPS} fit in a heartbeat",
                list.len()
            ),
            "merge resources (e.g. one exec script for several steps) or remove some",
        );
    }
    let tables: Vec<&DeTable> = match tree.get("resource").map(|v| v.get_ref()) {
        Some(DeValue::Array(a)) => a.iter().filter_map(|t| t.get_ref().as_table()).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    let mut ok = true;
    let mut names: Vec<String> = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let path = format!("resource[{i}]");
        let span = r.span();
        let r = r.get_ref();
        let name = v
            .req(&r.name, &span, &path, "name", "add `name = \"...\"`, unique among resources")
            .and_then(|s| {
                let p = format!("{path}.name");
                let name = v.non_empty(s, &p, "write the resource's name")?;
                if names.contains(&name) {
                    v.d.error(s.span(), &p, format!("resource name `{name}` is used twice"), "give each resource its own name; status and logs refer to resources by name");
                    return None;
                }
                names.push(name.clone());
                Some(name)
            });
        let kind = v
            .req(
                &r.kind,
                &span,
                &path,
                "kind",
                &format!("add `kind = \"...\"`, one of {}", list_keys(RESOURCE_KINDS)),
            )
            .and_then(|k| {
                if kind_keys(k.get_ref()).is_some() {
                    Some(k.get_ref().clone())
                } else {
                    let mut fix = format!("use one of {}", list_keys(RESOURCE_KINDS));
                    if let Some(best) = closest(k.get_ref(), RESOURCE_KINDS) {
                        fix = format!("did you mean `{best}`? {fix}");
                    }
                    v.d.error(
                        k.span(),
                        &format!("{path}.kind"),
                        format!("unknown resource kind `{}`", k.get_ref()),
                        fix,
                    );
                    None
                }
            });
        let Some(kind) = kind else {
            ok = false;
            continue;
        };
        // Keys that exist for some kind but not this one: serde accepted them (flat struct).
        let allowed = resource_keys(&kind).unwrap_or_default();
        if let Some(table) = tables.get(i) {
            for (k, _) in table.iter() {
                if !allowed.contains(&k.get_ref().as_ref()) {
                    let mut fix = format!(
                        "allowed keys for a `{kind}` resource are {}",
                        list_keys(&allowed)
                    );
                    if let Some(best) = closest(k.get_ref(), &allowed) {
                        fix = format!("did you mean `{best}`? {fix}");
                    }
                    v.d.error(
                        k.span(),
                        &join(&path, k.get_ref()),
                        format!("key `{}` does not apply to kind `{kind}`", k.get_ref()),
                        fix,
                    );
                    ok = false;
                }
            }
        }
        let (start_default, stop_default) = default_timeouts(&kind);
        let start_timeout_ms = v.positive(
            &r.start_timeout_ms,
            start_default,
            &format!("{path}.start-timeout-ms"),
        );
        let stop_timeout_ms = v.positive(
            &r.stop_timeout_ms,
            stop_default,
            &format!("{path}.stop-timeout-ms"),
        );
        let typed = super::kinds::resource_kind(v, r, &kind, &span, &path, name.as_deref());
        match (name, typed) {
            (Some(name), Some(kind)) => out.push(Resource {
                name,
                start_timeout_ms,
                stop_timeout_ms,
                kind,
            }),
            _ => ok = false,
        }
    }
    order_warnings(v, list);
    (ok && list.len() <= MAX_STEPS).then_some(out)
}

/// The usual stack is drbd -> filesystem -> service -> vip; anything else is legal (exec steps
/// may do anything) but usually a mistake, e.g. mounting before the disk is promoted or
/// publishing the address before the database answers.
fn order_warnings(v: &mut Validator, list: &[Spanned<RawResource>]) {
    let rank = |k: &str| match k {
        "drbd" => Some(0),
        "filesystem" => Some(1),
        "mysql" => Some(2),
        "vip" => Some(3),
        _ => None,
    };
    let kinds: Vec<Option<(&str, u8, Range<usize>)>> = list
        .iter()
        .map(|r| {
            let k = r.get_ref().kind.as_ref()?;
            Some((k.get_ref().as_str(), rank(k.get_ref())?, k.span()))
        })
        .collect();
    for (j, later) in kinds.iter().enumerate() {
        let Some((kind_j, rank_j, span_j)) = later else {
            continue;
        };
        if let Some((kind_i, _, _)) = kinds[..j]
            .iter()
            .flatten()
            .find(|(_, rank_i, _)| rank_i > rank_j)
        {
            v.d.warn(
                span_j.clone(),
                &format!("resource[{j}].kind"),
                format!("a `{kind_j}` resource comes after a `{kind_i}` resource"),
                "resources start in file order; the usual order is drbd, filesystem, mysql, vip",
            );
        }
    }
}

/// Defaults of the witness lease: failover after the active dies takes up to one lease, so it
/// is a few deadtimes; 1% drift is fifty times what NTP may slew a clock.
pub const DEFAULT_LEASE_MS: Millis = 3_000;
pub const DEFAULT_LEASE_GUARD_MS: Millis = 300;
pub const DEFAULT_MAX_CLOCK_DRIFT_PPM: u64 = 10_000;

/// More failed rounds than this keeps an isolated active node writable too long after its peer
/// took over (rounds are a second apart).
const MAX_TIEBREAKER_FALL: u64 = 10;

fn tiebreaker(raw: &RawConfig, v: &mut Validator, timing: &Timing) -> Tiebreaker {
    let mut out = Tiebreaker {
        ping: Vec::new(),
        witness: None,
        timeout_ms: 500,
        fall: crate::core::DEFAULT_TIEBREAKER_FALL,
        lease_ms: DEFAULT_LEASE_MS,
        lease_guard_ms: DEFAULT_LEASE_GUARD_MS,
        max_clock_drift_ppm: DEFAULT_MAX_CLOCK_DRIFT_PPM as u32,
    };
    let Some(t) = raw.tiebreaker.as_ref() else {
        return out;
    };
    let t = t.get_ref();
    for (i, p) in t
        .ping
        .as_ref()
        .map(|p| p.get_ref().as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        match p.get_ref().parse::<IpAddr>() {
            Ok(ip) => out.ping.push(ip),
            Err(_) => v.d.error(
                p.span(),
                &format!("tiebreaker.ping[{i}]"),
                format!("`{}` is not an IP address", p.get_ref()),
                "write a plain IPv4 or IPv6 address, e.g. the default gateway",
            ),
        }
    }
    if let Some(w) = t.witness.as_ref() {
        match w.get_ref().parse::<SocketAddr>() {
            Ok(a) => out.witness = Some(a),
            Err(_) => v.d.error(
                w.span(),
                "tiebreaker.witness",
                format!("`{}` is not an address with a port", w.get_ref()),
                "write IP:PORT, e.g. \"192.0.2.50:694\" or \"[2001:db8::50]:694\"",
            ),
        }
    }
    out.timeout_ms = v.positive(&t.timeout_ms, 500, "tiebreaker.timeout-ms");
    if let Some(f) = t.fall.as_ref() {
        let n = *f.get_ref();
        if out.ping.is_empty() {
            v.d.error(
                f.span(),
                "tiebreaker.fall",
                "counts failed ping rounds, but no ping targets are configured",
                "add `ping = [\"IP\", ...]` to [tiebreaker], or remove this key",
            );
        } else if !(1..=MAX_TIEBREAKER_FALL).contains(&n) {
            v.d.error(
                f.span(),
                "tiebreaker.fall",
                format!("{n} failed rounds is out of range"),
                format!(
                    "write 1 to {MAX_TIEBREAKER_FALL} (rounds are a second apart; an isolated active node steps down after that many)"
                ),
            );
        } else {
            out.fall = n as u32;
        }
    }
    lease(t, v, timing, &mut out);
    out
}

/// The lease keys and the inequalities the safety argument in `core/node/lease.rs` needs.
fn lease(t: &RawTiebreaker, v: &mut Validator, timing: &Timing, out: &mut Tiebreaker) {
    let keys = [
        ("tiebreaker.lease-ms", &t.lease_ms),
        ("tiebreaker.lease-guard-ms", &t.lease_guard_ms),
        ("tiebreaker.max-clock-drift-ppm", &t.max_clock_drift_ppm),
    ];
    if out.witness.is_none() {
        for (name, k) in keys {
            if let Some(k) = k {
                v.d.error(
                    k.span(),
                    name,
                    "a lease setting without a witness",
                    "set `witness = \"IP:PORT\"` in [tiebreaker], or remove this key",
                );
            }
        }
        return;
    }
    out.lease_ms = v.positive(&t.lease_ms, DEFAULT_LEASE_MS, "tiebreaker.lease-ms");
    out.lease_guard_ms = match &t.lease_guard_ms {
        Some(g) => *g.get_ref(),
        None => DEFAULT_LEASE_GUARD_MS,
    };
    let span = |k: &Option<Spanned<u64>>| k.as_ref().map(|k| k.span()).unwrap_or(0..0);
    let ppm = match &t.max_clock_drift_ppm {
        Some(p) if *p.get_ref() > 100_000 || *p.get_ref() == 0 => {
            v.d.error(
                p.span(),
                "tiebreaker.max-clock-drift-ppm",
                format!("{} ppm is outside 1..=100000", p.get_ref()),
                "write a bound on how much faster the witness's clock may run than a node's, in parts per million; 10000 (1%) is the default and far above what NTP allows",
            );
            DEFAULT_MAX_CLOCK_DRIFT_PPM
        }
        Some(p) => {
            if *p.get_ref() < 500 {
                v.d.warn(
                    p.span(),
                    "tiebreaker.max-clock-drift-ppm",
                    format!(
                        "{} ppm is less than the 500 ppm NTP may slew a clock",
                        p.get_ref()
                    ),
                    "use at least 500, or keep the default 10000",
                );
            }
            *p.get_ref()
        }
        None => DEFAULT_MAX_CLOCK_DRIFT_PPM,
    };
    out.max_clock_drift_ppm = ppm as u32;
    let lp = crate::core::LeaseParams {
        lease_ms: out.lease_ms,
        max_drift_ppm: out.max_clock_drift_ppm,
        guard_ms: out.lease_guard_ms,
    };
    let trusted = lp.trusted_ms(out.lease_ms);
    // Renewals go out every lease/3: a lease must survive one lost renewal and still leave the
    // guard, or a healthy active node would demote itself over a single dropped datagram.
    let renew = out.lease_ms / 3;
    if trusted < 2 * renew + out.lease_guard_ms {
        v.d.error(
            span(&t.lease_ms),
            "tiebreaker.lease-ms",
            format!(
                "a lease of {} ms is trusted for {trusted} ms after the drift bound, less than two renewals ({renew} ms each) plus the guard {} ms",
                out.lease_ms, out.lease_guard_ms
            ),
            format!(
                "raise lease-ms to at least {} or lower lease-guard-ms",
                (3 * out.lease_guard_ms * 1_000_000).div_ceil(1_000_000 - 3 * ppm.min(300_000)) + 3
            ),
        );
    }
    // Without a lease (witness down) the active gives up once the peer is late, while the peer
    // waits deadtime: warntime + guard must fit in a deadtime measured on a slower clock.
    let dead_slow = timing.deadtime_ms - (timing.deadtime_ms * ppm).div_ceil(1_000_000);
    if timing.warntime_ms + out.lease_guard_ms >= dead_slow {
        v.d.error(
            span(&t.lease_guard_ms),
            "tiebreaker.lease-guard-ms",
            format!(
                "warntime {} ms + lease guard {} ms is not less than deadtime {} ms less the drift bound ({dead_slow} ms)",
                timing.warntime_ms, out.lease_guard_ms, timing.deadtime_ms
            ),
            "lower lease-guard-ms (it needs to cover only the VIP release) or raise deadtime-ms",
        );
    }
    if out.lease_ms < timing.deadtime_ms {
        v.d.warn(
            span(&t.lease_ms),
            "tiebreaker.lease-ms",
            format!(
                "lease {} ms is shorter than deadtime {} ms: an isolated active node gives the service up sooner than the peer could take it",
                out.lease_ms, timing.deadtime_ms
            ),
            "make lease-ms a few deadtimes (3 x is usual)",
        );
    }
}

fn fencing(raw: &RawConfig, v: &mut Validator) -> Option<Fencing> {
    let f = raw.fencing.as_ref()?;
    let span = f.span();
    let f = f.get_ref();
    let command = v
        .req(
            &f.command,
            &span,
            "fencing",
            "command",
            "add `command = [\"/path/to/fence-agent\", ...]`, or remove [fencing]",
        )
        .and_then(|c| v.argv(c, "fencing.command"))?;
    Some(Fencing {
        command,
        // Configuring fencing and then ignoring its failure is rarely what anyone means.
        required: f.required.as_ref().map(|r| *r.get_ref()).unwrap_or(true),
        timeout_ms: v.positive(&f.timeout_ms, 30_000, "fencing.timeout-ms"),
        retry_ms: v.positive(&f.retry_ms, 5_000, "fencing.retry-ms"),
    })
}

fn failover(raw: &RawConfig, v: &mut Validator, nodes: Option<&[Node; 2]>) -> Failover {
    let f = raw.failover.as_ref().map(|f| f.get_ref());
    let mut out = Failover {
        auto_failback: false,
        preferred_node: None,
        restart_limit: 3,
        restart_window_ms: 300_000,
        handoff_timeout_ms: 120_000,
    };
    let Some(f) = f else { return out };
    out.auto_failback = f
        .auto_failback
        .as_ref()
        .map(|b| *b.get_ref())
        .unwrap_or(false);
    if let (Some(p), Some(nodes)) = (f.preferred_node.as_ref(), nodes) {
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        match names.iter().position(|n| n == p.get_ref()) {
            Some(i) => out.preferred_node = Some(i),
            None => {
                let mut fix = format!("the nodes are {}", list_keys(&names));
                if let Some(best) = closest(p.get_ref(), &names) {
                    fix = format!("did you mean `{best}`? {fix}");
                }
                v.d.error(
                    p.span(),
                    "failover.preferred-node",
                    format!("unknown node `{}`", p.get_ref()),
                    fix,
                );
            }
        }
    }
    if out.auto_failback && f.preferred_node.is_none() {
        let span = f.auto_failback.as_ref().map(|s| s.span()).unwrap_or(0..0);
        v.d.error(
            span,
            "failover.auto-failback",
            "auto-failback needs a node to fail back to",
            "add `preferred-node = \"NAME\"`, or set auto-failback = false",
        );
    }
    if let Some(l) = f.restart_limit.as_ref() {
        out.restart_limit = *l.get_ref();
    }
    out.restart_window_ms = v.positive(
        &f.restart_window_ms,
        out.restart_window_ms,
        "failover.restart-window-ms",
    );
    out.handoff_timeout_ms = v.positive(
        &f.handoff_timeout_ms,
        out.handoff_timeout_ms,
        "failover.handoff-timeout-ms",
    );
    out
}

fn daemon(raw: &RawConfig, v: &mut Validator) -> (Option<PathBuf>, Option<PathBuf>) {
    let d = raw.daemon.as_ref().map(|d| d.get_ref());
    let state_dir = match d.and_then(|d| d.state_dir.as_ref()) {
        Some(s) => v.abs_path(s, "daemon.state-dir"),
        None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
    };
    let control_socket = match d.and_then(|d| d.control_socket.as_ref()) {
        Some(s) => v.abs_path(s, "daemon.control-socket"),
        None => Some(PathBuf::from(DEFAULT_CONTROL_SOCKET)),
    };
    (state_dir, control_socket)
}

/// A plain SQL identifier: the drill writes database and table names into statements.
fn identifier(v: &mut Validator, value: &Spanned<String>, path: &str) -> Option<String> {
    let s = value.get_ref();
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        v.d.error(
            value.span(),
            path,
            format!("`{s}` is not a plain identifier"),
            "use 1 to 64 letters, digits or `_`, e.g. \"twinbeat_drill\"",
        );
        None
    } else {
        Some(s.clone())
    }
}

/// `HOST`, `HOST:PORT` or `[V6]:PORT`; the port defaults to 3306.
fn parse_replica(s: &str) -> Option<Replica> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(Replica {
            host: a.ip().to_string(),
            port: a.port(),
        });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(Replica {
            host: ip.to_string(),
            port: 3306,
        });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => (s, 3306),
    };
    let name_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    name_ok.then(|| Replica {
        host: host.to_string(),
        port,
    })
}

fn drill(raw: &RawConfig, v: &mut Validator) -> Option<Drill> {
    let d = raw.drill.as_ref()?;
    let span = d.span();
    let d = d.get_ref();
    let endpoint = match (&d.host, &d.socket) {
        (Some(_), Some(s)) => {
            v.d.error(
                s.span(),
                "drill.socket",
                "both `host` and `socket` are set",
                "keep `host` (the VIP, so the canary sees what clients see) and remove `socket`",
            );
            None
        }
        (None, None) => {
            if !v.removed.contains("drill.host") && !v.removed.contains("drill.socket") {
                v.d.error(
                    span.clone(),
                    "drill",
                    "missing key `host`",
                    "add `host = \"VIP\"` (the service address clients use), or `socket = \"/path\"`",
                );
            }
            None
        }
        (Some(h), None) => v
            .non_empty(h, "drill.host", "write the VIP, e.g. \"198.51.100.100\"")
            .map(|host| MysqlEndpoint::Tcp {
                host,
                port: d.port.as_ref().map(|p| *p.get_ref()).unwrap_or(3306),
            }),
        (None, Some(s)) => {
            if let Some(p) = &d.port {
                v.d.error(
                    p.span(),
                    "drill.port",
                    "`port` applies to `host`, not to `socket`",
                    "remove `port`, or connect with `host`",
                );
            }
            v.abs_path(s, "drill.socket").map(MysqlEndpoint::Socket)
        }
    };
    let user = match &d.user {
        Some(u) => v.non_empty(u, "drill.user", "write the MySQL user the drill writes as"),
        None => Some("root".to_string()),
    };
    let password_file = match &d.password_file {
        Some(p) => v.abs_path(p, "drill.password-file").map(Some),
        None => Some(None),
    };
    let database = match &d.database {
        Some(x) => identifier(v, x, "drill.database"),
        None => Some("twinbeat_drill".to_string()),
    };
    let table = match &d.table {
        Some(x) => identifier(v, x, "drill.table"),
        None => Some("canary".to_string()),
    };
    let min_interval_ms = d
        .min_interval_ms
        .as_ref()
        .map(|x| *x.get_ref())
        .unwrap_or(86_400_000);
    let max_service_gap_ms = v.positive(&d.max_service_gap_ms, 10_000, "drill.max-service-gap-ms");
    let max_write_gap_ms = v.positive(&d.max_write_gap_ms, 15_000, "drill.max-write-gap-ms");
    let write_interval_ms = v.positive(&d.write_interval_ms, 50, "drill.write-interval-ms");
    let write_timeout_ms = v.positive(&d.write_timeout_ms, 1_000, "drill.write-timeout-ms");
    if let Some(t) = &d.write_timeout_ms {
        if *t.get_ref() > max_write_gap_ms {
            v.d.warn(
                t.span(),
                "drill.write-timeout-ms",
                "longer than `max-write-gap-ms`: one stuck write alone exceeds the limit",
                "keep the write timeout well below the gap limit (default 1000)",
            );
        }
    }
    let mut replicas = Vec::new();
    for (i, r) in d
        .replicas
        .as_ref()
        .map(|r| r.get_ref().as_slice())
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        match parse_replica(r.get_ref()) {
            Some(x) => replicas.push(x),
            None => v.d.error(
                r.span(),
                &format!("drill.replicas[{i}]"),
                format!("`{}` is not HOST or HOST:PORT", r.get_ref()),
                "write e.g. \"198.51.100.30:3306\", \"replica-1\" or \"[2001:db8::30]:3306\"",
            ),
        }
    }
    let max_replica_catchup_ms = v.positive(
        &d.max_replica_catchup_ms,
        30_000,
        "drill.max-replica-catchup-ms",
    );
    Some(Drill {
        replicas,
        max_replica_catchup_ms,
        endpoint: endpoint?,
        user: user?,
        password_file: password_file?,
        database: database?,
        table: table?,
        min_interval_ms,
        max_service_gap_ms,
        max_write_gap_ms,
        write_interval_ms,
        write_timeout_ms,
    })
}
