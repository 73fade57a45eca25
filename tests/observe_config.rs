//! `[metrics]` and `garp-refresh-ms`: defaults, and a clear diagnostic for each mistake.

mod support;

use std::path::Path;

use twinbeat::config::{check_source, Config, ResourceKind, DEFAULT_MAX_CONNECTIONS};

const KEY: &str = "1 0123456789abcdef0123456789abcdef\n";

/// The reference config, with its own `[metrics]` section replaced by `metrics`.
fn example(name: &str, metrics: &str) -> String {
    let key = support::key_file(&format!("obs-{name}"), KEY);
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/twinbeat.toml")).unwrap();
    let text = text.replace("/etc/twinbeat/authkey", key.to_str().unwrap());
    let head = text.split("\n[metrics]").next().unwrap();
    format!("{head}\n{metrics}")
}

fn errors(text: &str) -> Vec<String> {
    match check_source(text, Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .diagnostics()
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect(),
    }
}

#[test]
fn reference_metrics_section_is_per_node() {
    let text = example("ref", "");
    let full = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/twinbeat.toml"))
        .unwrap()
        .replace(
            "/etc/twinbeat/authkey",
            support::key_file("obs-ref2", KEY).to_str().unwrap(),
        );
    let c = Config::from_source(&full, Path::new("t.toml"), Some("db-b")).unwrap();
    let m = c.metrics.expect("[metrics] in the reference config");
    assert_eq!(m.listen["db-b"].to_string(), "203.0.113.22:9105");
    assert_eq!(m.agent_listen["db-a"].to_string(), "203.0.113.21:9106");
    assert_eq!(m.max_connections, 16);
    // Without the section: off.
    let c = Config::from_source(&text, Path::new("t.toml"), Some("db-a")).unwrap();
    assert!(c.metrics.is_none());
    // agent-listen and max-connections are optional.
    let c = Config::from_source(
        &example("min", "[metrics]\nlisten = { db-a = \"127.0.0.1:9105\" }\n"),
        Path::new("t.toml"),
        Some("db-a"),
    )
    .unwrap();
    let m = c.metrics.unwrap();
    assert!(m.agent_listen.is_empty());
    assert_eq!(m.max_connections, DEFAULT_MAX_CONNECTIONS);
}

#[test]
fn metrics_mistakes_are_reported_with_a_fix() {
    let cases: &[(&str, &str)] = &[
        ("[metrics]\n", "missing key `listen`"),
        ("[metrics]\nlisten = { db-a = \"0.0.0.0:9105\" }\n", "listens on every address"),
        ("[metrics]\nlisten = { db-a = \"[::]:9105\" }\n", "listens on every address"),
        ("[metrics]\nlisten = { db-a = \"203.0.113.21\" }\n", "is not an IP:PORT address"),
        ("[metrics]\nlisten = { db-a = \"203.0.113.21:0\" }\n", "port 0"),
        ("[metrics]\nlisten = { db-c = \"203.0.113.21:9105\" }\n", "unknown node `db-c`"),
        ("[metrics]\nlisten = {}\n", "no node has an address"),
        (
            "[metrics]\nlisten = { db-a = \"127.0.0.1:9105\" }\nmax-connections = 0\n",
            "0 is out of range",
        ),
        (
            "[metrics]\nlisten = { db-a = \"127.0.0.1:9105\" }\nagent-listen = { db-a = \"127.0.0.1:9105\" }\n",
            "also this node's `listen` address",
        ),
        ("[metrics]\nlisten = { db-a = \"127.0.0.1:9105\" }\nport = 1\n", "port"),
    ];
    for (i, (section, want)) in cases.iter().enumerate() {
        let errs = errors(&example(&format!("bad{i}"), section));
        assert!(
            errs.iter()
                .any(|e| e.contains(want) && e.contains("metrics")),
            "{section:?}: want {want:?} in {errs:#?}"
        );
    }
    // A typo in a node name suggests the right one.
    let errs = errors(&example(
        "typo",
        "[metrics]\nlisten = { db-aa = \"127.0.0.1:9105\" }\n",
    ));
    assert!(
        errs.iter().any(|e| e.contains("did you mean `db-a`")),
        "{errs:#?}"
    );
}

#[test]
fn garp_refresh_defaults_off_and_refuses_floods() {
    let base = example("garp", "");
    let c = Config::from_source(&base, Path::new("t.toml"), Some("db-a")).unwrap();
    let vip = c.resources.iter().find(|r| r.name == "vip").unwrap();
    assert!(matches!(
        vip.kind,
        ResourceKind::Vip {
            garp_refresh_ms: 0,
            ..
        }
    ));
    let with = |v: &str| {
        base.replace(
            "label = \"lan0:db\"",
            &format!("label = \"lan0:db\"\ngarp-refresh-ms = {v}"),
        )
    };
    let c = Config::from_source(&with("10000"), Path::new("t.toml"), Some("db-a")).unwrap();
    let vip = c.resources.iter().find(|r| r.name == "vip").unwrap();
    assert!(matches!(
        vip.kind,
        ResourceKind::Vip {
            garp_refresh_ms: 10_000,
            ..
        }
    ));
    let errs = errors(&with("200"));
    assert!(
        errs.iter()
            .any(|e| e.contains("garp-refresh-ms") && e.contains("at least 1000")),
        "{errs:#?}"
    );
    // Only vips announce.
    let errs = errors(&base.replace("kind = \"drbd\"", "kind = \"drbd\"\ngarp-refresh-ms = 1000"));
    assert!(
        errs.iter().any(|e| e.contains("garp-refresh-ms")),
        "{errs:#?}"
    );
}
