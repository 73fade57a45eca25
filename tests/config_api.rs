//! The config library as the daemon uses it: `Config::load`/`from_source`, `core_params`,
//! and robustness against garbage.

mod support;

use std::path::Path;

use twinbeat::config::{check_source, Config, ConfigError, ResourceKind};

fn example(name: &str) -> String {
    let key = support::key_file(
        &format!("api-{name}"),
        "1 0123456789abcdef0123\n2 fedcba9876543210fedc\n",
    );
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/twinbeat.toml")).unwrap();
    text.replace("/etc/twinbeat/authkey", key.to_str().unwrap())
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
fn core_params_from_each_node() {
    let text = example("core");
    let a = Config::from_source(&text, Path::new("t.toml"), Some("db-a")).unwrap();
    let b = Config::from_source(&text, Path::new("t.toml"), Some("db-b")).unwrap();
    assert_eq!(a.for_peer(), b);
    let p = b.core_params();
    assert_eq!((p.node_id, p.peer_id), (2, 1));
    assert_eq!(
        (p.node_name.as_str(), p.peer_name.as_str()),
        ("db-b", "db-a")
    );
    assert_eq!(p.links, ["hb", "lan"]);
    assert_eq!(
        (p.keepalive_ms, p.warntime_ms, p.deadtime_ms, p.initdead_ms),
        (200, 500, 1000, 10000)
    );
    let steps: Vec<(&str, &str, bool)> = p
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.kind.as_str(), s.monitored))
        .collect();
    assert_eq!(
        steps,
        [
            ("r0", "drbd", false),
            ("data", "filesystem", false),
            ("mysql", "mysql", true),
            ("vip", "vip", true)
        ]
    );
    assert_eq!(p.steps[2].acquire_timeout_ms, 300_000);
    assert!(p.disk_gate && p.tiebreaker && !p.auto_failback);
    assert!(p.fencing.as_ref().unwrap().required);
    assert!(!p.preferred && a.core_params().preferred);
    assert_eq!(
        (p.restart_limit, p.restart_window_ms, p.handoff_timeout_ms),
        (3, 300_000, 120_000)
    );
    match &b.resources[3].kind {
        ResourceKind::Vip {
            address, prefix, ..
        } => {
            assert_eq!(
                (address.to_string().as_str(), *prefix),
                ("203.0.113.10", 24)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.links[1].endpoint(0).to_string(), "198.51.100.11:694");
    // The secret never shows up in debug output.
    assert!(!format!("{b:?}").contains("0123456789abcdef0123"));
}

#[test]
fn key_rotation_accepts_listed_ids_and_signs_with_send_key() {
    let text = example("rotate")
        .replace("keys = [1]", "keys = [1, 2]")
        .replace("send-key = 1", "send-key = 2");
    let c = Config::from_source(&text, Path::new("t.toml"), Some("db-a")).unwrap();
    assert_eq!(
        c.auth.accept.iter().map(|k| k.id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(c.auth.send().secret, b"fedcba9876543210fedc");
    let text = example("rotate3").replace("keys = [1]", "keys = [1, 3]");
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.contains("key id 3 is not in")),
        "{errs:?}"
    );
}

#[test]
fn timing_rules() {
    let text = example("timing");
    let errs = errors(&text.replace("deadtime-ms = 1000", "deadtime-ms = 400"));
    assert!(
        errs.iter()
            .any(|e| e.contains("not more than 2 x keepalive")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("warntime 500 ms is not less than deadtime 400 ms")),
        "{errs:?}"
    );
    let errs = errors(&text.replace("initdead-ms = 10000", "initdead-ms = 900"));
    assert!(
        errs.iter()
            .any(|e| e.contains("initdead 900 ms is less than deadtime 1000 ms")),
        "{errs:?}"
    );
}

#[test]
fn more_than_32_resources_is_an_error() {
    let mut text = example("many");
    for i in 0..29 {
        text += &format!(
            "\n[[resource]]\nname = \"x{i}\"\nkind = \"systemd\"\nunit = \"x{i}.service\"\n"
        );
    }
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.contains("resource[32]: 33 resources; at most 32")),
        "{errs:?}"
    );
}

#[test]
fn this_node_must_be_one_of_the_nodes() {
    let text = example("thisnode");
    let err = Config::from_source(&text, Path::new("t.toml"), Some("nope")).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownThisNode { .. }));
}

#[test]
fn garbage_never_panics_and_always_reports() {
    let inputs = [
        "",
        "=",
        "[[[",
        "\u{0}\u{feff}",
        "cluster = 5\nnode = \"x\"\nlink = []\nresource = [1, 2]\n",
        "[cluster]\nid = -1\nname = 7\n[timing]\nkeepalive-ms = 0\ndeadtime-ms = 18446744073709551615\n",
        "[[node]]\n[[node]]\n[[node]]\n[[link]]\naddress = { a = \"x\" }\n",
        "[[resource]]\nkind = \"vip\"\naddress = \"1.2.3.4/99\"\nlabel = \"x\"\n[[resource]]\nkind = 3\n",
        "[auth]\nkeys = [0, 0, 300]\nsend-key = 9\nkey-file = \"\"\n",
        "[tiebreaker]\nping = [\"x\"]\nwitness = \"1.2.3.4\"\n[fencing]\ncommand = [\"\"]\n",
        "[failover]\nauto-failback = true\n[daemon]\nstate-dir = \"rel\"\n",
        "a.b.c.d.e = 1\n[cluster.x.y]\nz = [[1], {a = 2}]\n",
    ];
    for input in inputs {
        let errs = errors(input);
        assert!(!errs.is_empty(), "no error for {input:?}");
        for e in &errs {
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }
}

#[test]
fn drill_section_defaults_and_errors() {
    let text = example("drill");
    let c = Config::from_source(&text, Path::new("t.toml"), Some("db-a")).unwrap();
    let d = c.drill.expect("the reference config has [drill]");
    assert_eq!(
        (d.database.as_str(), d.table.as_str()),
        ("twinbeat_drill", "canary")
    );
    assert_eq!(d.min_interval_ms, 86_400_000);
    assert_eq!(
        d.endpoint,
        twinbeat::config::MysqlEndpoint::Tcp {
            host: "203.0.113.10".into(),
            port: 3306
        }
    );
    let head = text.split("\n[drill]").next().unwrap().to_string();
    assert!(
        Config::from_source(&head, Path::new("t.toml"), Some("db-a"))
            .unwrap()
            .drill
            .is_none()
    );
    let bad = format!(
        "{head}\n[drill]\nsocket = \"run/x.sock\"\nport = 3306\ntable = \"x;drop\"\nmax-write-gap-ms = 0\n"
    );
    let e = errors(&bad).join("\n");
    assert!(
        e.contains("drill.socket: `run/x.sock` is a relative path"),
        "{e}"
    );
    assert!(e.contains("drill.port: `port` applies to `host`"), "{e}");
    assert!(
        e.contains("drill.table: `x;drop` is not a plain identifier"),
        "{e}"
    );
    assert!(
        e.contains("drill.max-write-gap-ms: must be greater than 0"),
        "{e}"
    );
    let e = errors(&format!("{head}\n[drill]\nuser = \"u\"\n")).join("\n");
    assert!(e.contains("drill: missing key `host`"), "{e}");
}

#[test]
fn drill_replicas_parse_with_default_port_and_refuse_junk() {
    let text = example("drill");
    let d = Config::from_source(&text, Path::new("t.toml"), Some("db-a"))
        .unwrap()
        .drill
        .unwrap();
    let shown: Vec<String> = d.replicas.iter().map(|r| r.to_string()).collect();
    assert_eq!(shown, ["203.0.113.30:3306"]);
    assert_eq!(d.max_replica_catchup_ms, 30_000);
    let head = text.split("\n[drill]").next().unwrap().to_string();
    let ok = format!(
        "{head}\n[drill]\nhost = \"203.0.113.10\"\nreplicas = [\"replica-1\", \"[2001:db8::30]:3307\", \"198.51.100.30\"]\n"
    );
    let d = Config::from_source(&ok, Path::new("t.toml"), Some("db-a"))
        .unwrap()
        .drill
        .unwrap();
    let shown: Vec<String> = d.replicas.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        [
            "replica-1:3306",
            "[2001:db8::30]:3307",
            "198.51.100.30:3306"
        ]
    );
    let bad = format!(
        "{head}\n[drill]\nhost = \"203.0.113.10\"\nreplicas = [\"db:0\", \"a b\", \"\"]\nmax-replica-catchup-ms = 0\n"
    );
    let e = errors(&bad).join("\n");
    for want in [
        "drill.replicas[0]: `db:0` is not HOST or HOST:PORT",
        "drill.replicas[1]: `a b` is not HOST or HOST:PORT",
        "drill.replicas[2]: `` is not HOST or HOST:PORT",
        "drill.max-replica-catchup-ms: must be greater than 0",
    ] {
        assert!(e.contains(want), "want {want:?} in:\n{e}");
    }
}

#[test]
fn tiebreaker_fall_default_range_and_needs_ping() {
    let text = example("fall");
    let c = Config::from_source(&text, Path::new("t.toml"), Some("db-a")).unwrap();
    assert_eq!(c.tiebreaker.fall, 3);
    assert_eq!(c.core_params().tiebreaker_fall, 3);
    let with = |fall: &str| text.replace("\nfall = 3\n", &format!("\nfall = {fall}\n"));
    let c = Config::from_source(&with("5"), Path::new("t.toml"), Some("db-a")).unwrap();
    assert_eq!(c.core_params().tiebreaker_fall, 5);
    for bad in ["0", "11"] {
        let errs = errors(&with(bad));
        assert!(
            errs.iter()
                .any(|e| e.contains("tiebreaker.fall") && e.contains("out of range")),
            "{bad}: {errs:?}"
        );
    }
    let no_ping = errors("[tiebreaker]\nfall = 2\n");
    assert!(
        no_ping
            .iter()
            .any(|e| e.contains("tiebreaker.fall") && e.contains("no ping targets")),
        "{no_ping:?}"
    );
}
