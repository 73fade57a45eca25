//! Per-kind rules for one `[[resource]]`: which keys are required, their forms and defaults.
//!
//! Owns: the typed `ResourceKind` built from a flat `RawResource`. Keys that belong to another
//! kind were already reported by `validate`; this module ignores them. Must not touch: anything
//! outside one resource (names, order, count).

use std::net::IpAddr;
use std::ops::Range;

use toml::Spanned;

use crate::core::Millis;

use super::raw::RawResource;
use super::types::{Mysql, MysqlControl, MysqlEndpoint, Probe, ResourceKind};
use super::validate::Validator;

/// Debian's and MariaDB's default server socket.
pub const DEFAULT_MYSQL_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// With socket authentication (MariaDB's default for root), the daemon — running as root —
/// needs no password file at all.
pub const DEFAULT_MYSQL_USER: &str = "root";

pub(crate) fn resource_kind(
    v: &mut Validator,
    r: &RawResource,
    kind: &str,
    span: &Range<usize>,
    path: &str,
    name: Option<&str>,
) -> Option<ResourceKind> {
    let p = |k: &str| format!("{path}.{k}");
    match kind {
        "drbd" => {
            // Naming the step after the DRBD resource is the common case; allow leaving it out.
            let resource = match &r.drbd_resource {
                Some(s) => v.non_empty(
                    s,
                    &p("drbd-resource"),
                    "write the resource name as `drbdadm` knows it",
                )?,
                None => name?.to_string(),
            };
            Some(ResourceKind::Drbd { resource })
        }
        "filesystem" => {
            let device = v
                .req(
                    &r.device,
                    span,
                    path,
                    "device",
                    "add `device = \"/dev/drbd0\"`",
                )
                .and_then(|d| v.abs_path(d, &p("device")));
            let directory = v
                .req(
                    &r.directory,
                    span,
                    path,
                    "directory",
                    "add `directory = \"/var/lib/mysql\"`, the mount point",
                )
                .and_then(|d| v.abs_path(d, &p("directory")));
            let fstype = v
                .req(&r.fstype, span, path, "fstype", "add `fstype = \"ext4\"` (or xfs, ...); guessing the type is not safe on a replicated disk")
                .and_then(|f| v.non_empty(f, &p("fstype"), "write the file system type, e.g. \"ext4\""));
            let options = r
                .options
                .as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default();
            Some(ResourceKind::Filesystem {
                device: device?,
                directory: directory?,
                fstype: fstype?,
                options,
            })
        }
        "mysql" => mysql(v, r, span, path).map(ResourceKind::Mysql),
        "vip" => vip(v, r, span, path),
        "exec" => {
            let start = v
                .req(
                    &r.start,
                    span,
                    path,
                    "start",
                    "add `start = [\"/path/to/script\", \"start\"]`",
                )
                .and_then(|a| v.argv(a, &p("start")));
            let stop = v
                .req(
                    &r.stop,
                    span,
                    path,
                    "stop",
                    "add `stop = [\"/path/to/script\", \"stop\"]`",
                )
                .and_then(|a| v.argv(a, &p("stop")));
            let probe = match &r.probe {
                Some(a) => Some(v.argv(a, &p("probe")).map(|argv| Probe {
                    argv,
                    interval_ms: v.positive(&r.probe_interval_ms, 5_000, &p("probe-interval-ms")),
                    timeout_ms: v.positive(&r.probe_timeout_ms, 2_000, &p("probe-timeout-ms")),
                })?),
                None => {
                    for (key, value) in [
                        ("probe-interval-ms", &r.probe_interval_ms),
                        ("probe-timeout-ms", &r.probe_timeout_ms),
                    ] {
                        if let Some(s) = value {
                            v.d.warn(
                                s.span(),
                                &p(key),
                                "has no effect without `probe`",
                                "add `probe = [...]` or remove this key",
                            );
                        }
                    }
                    None
                }
            };
            if let Some(pr) = &probe {
                probe_timing(v, r, path, pr.interval_ms, pr.timeout_ms);
            }
            Some(ResourceKind::Exec {
                start: start?,
                stop: stop?,
                probe,
            })
        }
        "systemd" => {
            let unit = v
                .req(&r.unit, span, path, "unit", "add `unit = \"name.service\"`")
                .and_then(|u| {
                    v.non_empty(u, &p("unit"), "write the unit name, e.g. \"nginx.service\"")
                })?;
            Some(ResourceKind::Systemd { unit })
        }
        _ => None,
    }
}

fn probe_timing(v: &mut Validator, r: &RawResource, path: &str, interval: u64, timeout: u64) {
    if timeout >= interval {
        let span = r
            .probe_timeout_ms
            .as_ref()
            .or(r.probe_interval_ms.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        v.d.error(
            span,
            &format!("{path}.probe-timeout-ms"),
            format!("probe timeout {timeout} ms is not less than the probe interval {interval} ms"),
            "make probe-timeout-ms smaller than probe-interval-ms so probes never overlap",
        );
    }
}

fn mysql(v: &mut Validator, r: &RawResource, span: &Range<usize>, path: &str) -> Option<Mysql> {
    let p = |k: &str| format!("{path}.{k}");
    let control = match (&r.unit, &r.start, &r.stop) {
        (Some(unit), None, None) => {
            if let Some(pid) = &r.pid_file {
                v.d.error(
                    pid.span(),
                    &p("pid-file"),
                    "pid-file is only used with start/stop commands",
                    "remove it; systemd tracks the unit's process",
                );
                return None;
            }
            MysqlControl::Unit(v.non_empty(
                unit,
                &p("unit"),
                "write the unit name, e.g. \"mariadb.service\"",
            )?)
        }
        (None, start, stop) if start.is_some() || stop.is_some() => {
            let start = v
                .req(
                    start,
                    span,
                    path,
                    "start",
                    "add `start = [...]` next to `stop`",
                )
                .and_then(|a| v.argv(a, &p("start")));
            let stop = v
                .req(
                    stop,
                    span,
                    path,
                    "stop",
                    "add `stop = [...]` next to `start`",
                )
                .and_then(|a| v.argv(a, &p("stop")));
            let pid_file = match &r.pid_file {
                Some(f) => Some(v.abs_path(f, &p("pid-file"))?),
                None => None,
            };
            MysqlControl::Commands {
                start: start?,
                stop: stop?,
                pid_file,
            }
        }
        (Some(unit), _, _) => {
            v.d.error(
                unit.span(),
                &p("unit"),
                "both `unit` and start/stop commands are set",
                "keep either `unit` or `start` + `stop`",
            );
            return None;
        }
        (None, _, _) => {
            v.d.error(
                span.clone(),
                path,
                "no way to start mysql",
                "add `unit = \"mariadb.service\"`, or `start` and `stop` commands",
            );
            return None;
        }
    };
    let endpoint = match (&r.socket, &r.host) {
        (Some(s), None) => {
            if let Some(port) = &r.port {
                v.d.error(
                    port.span(),
                    &p("port"),
                    "port is only used with `host`",
                    "remove it, or connect with `host` instead of `socket`",
                );
            }
            MysqlEndpoint::Socket(v.abs_path(s, &p("socket"))?)
        }
        (None, Some(h)) => MysqlEndpoint::Tcp {
            host: v.non_empty(
                h,
                &p("host"),
                "write a host name or address, e.g. \"127.0.0.1\"",
            )?,
            port: r.port.as_ref().map(|p| *p.get_ref()).unwrap_or(3306),
        },
        (None, None) => MysqlEndpoint::Socket(DEFAULT_MYSQL_SOCKET.into()),
        (Some(s), Some(_)) => {
            v.d.error(
                s.span(),
                &p("socket"),
                "both `socket` and `host` are set",
                "keep one: the socket is preferred on the same machine",
            );
            return None;
        }
    };
    let user = match &r.user {
        Some(u) => v.non_empty(u, &p("user"), "write the probe user's name")?,
        None => DEFAULT_MYSQL_USER.to_string(),
    };
    let password_file = match &r.password_file {
        Some(f) => Some(v.abs_path(f, &p("password-file"))?),
        None => None,
    };
    let probe_interval_ms = v.positive(&r.probe_interval_ms, 2_000, &p("probe-interval-ms"));
    let probe_timeout_ms = v.positive(&r.probe_timeout_ms, 1_000, &p("probe-timeout-ms"));
    probe_timing(v, r, path, probe_interval_ms, probe_timeout_ms);
    Some(Mysql {
        control,
        endpoint,
        user,
        password_file,
        probe_interval_ms,
        probe_timeout_ms,
    })
}

fn vip(
    v: &mut Validator,
    r: &RawResource,
    span: &Range<usize>,
    path: &str,
) -> Option<ResourceKind> {
    let p = |k: &str| format!("{path}.{k}");
    let address = v.req(
        &r.address,
        span,
        path,
        "address",
        "add `address = \"203.0.113.10/24\"` (address/prefix)",
    );
    let parsed = address.and_then(|a| {
        let text = a.get_ref();
        let Some((ip, prefix)) = text.split_once('/') else {
            let hint = if text.contains(':') { "2001:db8::10/64" } else { "203.0.113.10/24" };
            v.d.error(a.span(), &p("address"), format!("`{text}` has no prefix length"), format!("add it as on `ip addr add`, e.g. \"{hint}\"; the prefix decides the route and broadcast"));
            return None;
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            v.d.error(a.span(), &p("address"), format!("`{ip}` is not an IP address"), "write ADDRESS/PREFIX, e.g. \"203.0.113.10/24\"");
            return None;
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(n) if n <= max => Some((ip, n)),
            _ => {
                v.d.error(a.span(), &p("address"), format!("`{prefix}` is not a prefix length for {ip}"), format!("write a prefix from 0 to {max}"));
                None
            }
        }
    });
    let interface = v
        .req(
            &r.interface,
            span,
            path,
            "interface",
            "add `interface = \"eth0\"`, where the address goes",
        )
        .and_then(|i| v.non_empty(i, &p("interface"), "write the network interface name"));
    let label = match (&r.label, &interface, &parsed) {
        (Some(l), _, Some((ip, _))) if ip.is_ipv6() => {
            v.d.error(
                l.span(),
                &p("label"),
                "IPv6 addresses have no label",
                "remove `label`",
            );
            None
        }
        (Some(l), Some(iface), _) => {
            let text = l.get_ref();
            // Linux rejects labels not prefixed by the device name, or longer than IFNAMSIZ-1.
            if !text.starts_with(&format!("{iface}:")) || text.len() > 15 {
                v.d.error(
                    l.span(),
                    &p("label"),
                    format!("label `{text}` is not `{iface}:SOMETHING` of at most 15 characters"),
                    format!("write e.g. \"{iface}:db\""),
                );
                None
            } else {
                Some(Some(text.clone()))
            }
        }
        (None, _, _) => Some(None),
        _ => None,
    };
    let garp_refresh_ms = garp_refresh(v, &r.garp_refresh_ms, &p("garp-refresh-ms"));
    let (address, prefix) = parsed?;
    Some(ResourceKind::Vip {
        address,
        prefix,
        interface: interface?,
        label: label?,
        garp_refresh_ms: garp_refresh_ms?,
    })
}

/// Shortest refresh period: faster than once a second floods every host's ARP handling for no
/// gain (the takeover bursts already cover the move itself).
pub const MIN_GARP_REFRESH_MS: Millis = 1_000;

fn garp_refresh(v: &mut Validator, value: &Option<Spanned<u64>>, path: &str) -> Option<Millis> {
    match value {
        None => Some(0),
        Some(ms) if *ms.get_ref() != 0 && *ms.get_ref() < MIN_GARP_REFRESH_MS => {
            v.d.error(
                ms.span(),
                path,
                format!(
                    "{} ms would announce the address more than once a second",
                    ms.get_ref()
                ),
                format!("write 0 (off) or at least {MIN_GARP_REFRESH_MS}, e.g. 10000"),
            );
            None
        }
        Some(ms) => Some(*ms.get_ref()),
    }
}
