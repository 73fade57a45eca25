//! The pure parts of `/metrics`, `/health` and agent-check: rendering a status snapshot, the
//! serving verdict, and request-head parsing.

mod support;

use std::path::Path;

use twinbeat::config::Config;
use twinbeat::core::{Node, NodeState, StepDirection, StepTiming};
use twinbeat::shell::control::{DaemonStatus, HeartbeatStats};
use twinbeat::shell::history::{DrillSummary, Entry, Kind};
use twinbeat::shell::observe::health::Verdict;
use twinbeat::shell::observe::render::{render, Extra};
use twinbeat::shell::observe::Recorder;

fn config() -> Config {
    let key = support::key_file(
        "render",
        "1 0123456789abcdef0123456789abcdef
",
    );
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/twinbeat.toml"))
        .unwrap()
        .replace("/etc/twinbeat/authkey", key.to_str().unwrap());
    Config::from_source(&text, Path::new("t.toml"), Some("db-a")).unwrap()
}

fn snapshot(node: &Node, now: u64) -> DaemonStatus {
    let mut hb = HeartbeatStats::default();
    hb.counters.bad_mac = 3;
    hb.counters.replay = 2;
    hb.gap_buckets = [10, 1, 0, 0];
    DaemonStatus {
        node: "db-a".into(),
        peer: "db-b".into(),
        cluster: "c".into(),
        config: "t.toml".into(),
        generation: 4,
        uptime_ms: 12_500,
        core: node.status(now),
        heartbeat: hb,
        history: Vec::new(),
        replication: None,
        witness: None,
        metrics_listen: None,
        agent_listen: None,
    }
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok())?
    })
}

#[test]
fn a_standby_snapshot_renders_one_hot_state_and_rejections_by_class() {
    let cfg = config();
    let node = Node::new(cfg.core_params(), 7, 0, 0, 1);
    let st = snapshot(&node, 100);
    let out = render(&st, &Recorder::default(), Extra::default());
    assert_eq!(sample(&out, "twinbeat_term"), Some(7.0), "{out}");
    let state = st.core.state.as_str();
    assert_eq!(
        sample(&out, &format!("twinbeat_node_state{{state=\"{state}\"}}")),
        Some(1.0)
    );
    let ones = out
        .lines()
        .filter(|l| l.starts_with("twinbeat_node_state{") && l.ends_with(" 1"))
        .count();
    assert_eq!(ones, 1, "exactly one state is 1:\n{out}");
    assert_eq!(
        sample(
            &out,
            r#"twinbeat_heartbeats_rejected_total{reason="bad-mac",class="forged"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &out,
            r#"twinbeat_heartbeats_rejected_total{reason="replay",class="replayed"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&out, r#"twinbeat_heartbeat_gaps_total{within="warntime"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&out, "twinbeat_service_serving"), Some(0.0));
    assert_eq!(sample(&out, "twinbeat_uptime_seconds"), Some(12.5));
    assert_eq!(
        sample(&out, r#"twinbeat_link_up{link="hb"}"#),
        Some(0.0),
        "{out}"
    );
    // Never heard: no age sample rather than a made-up one.
    assert!(
        !out.contains("twinbeat_link_heartbeat_age_seconds{"),
        "{out}"
    );
    assert!(out.ends_with("# EOF\n"));
    assert_eq!(Verdict::of(&st.core), Verdict::Down);
    assert_eq!(Verdict::of(&st.core).http_status(), 503);
    assert_eq!(Verdict::of(&st.core).agent_line(), "down\n");
}

#[test]
fn recorded_plans_steps_and_drills_show_up() {
    let rec = Recorder::default();
    rec.transition(NodeState::Standby, NodeState::Acquiring);
    rec.transition(NodeState::Acquiring, NodeState::Active);
    let step = |name: &str, ms, error: Option<&str>| StepTiming {
        step: 0,
        name: name.into(),
        direction: StepDirection::Acquire,
        elapsed_ms: ms,
        error: error.map(str::to_string),
    };
    rec.entry(&Entry {
        time: "2026-12-02T15:00:00.000Z".into(),
        node: "db-a".into(),
        kind: Kind::Takeover,
        from: Some(NodeState::Acquiring),
        to: Some(NodeState::Active),
        cause: "peer dead".into(),
        steps: vec![step("drbd", 120, None), step("vip", 30, Some("boom"))],
        total_ms: Some(150),
        term: 2,
        drill: None,
    });
    rec.entry(&Entry {
        time: "2026-12-02T15:01:00.000Z".into(),
        node: "db-a".into(),
        kind: Kind::Drill,
        from: None,
        to: None,
        cause: "drill".into(),
        steps: Vec::new(),
        total_ms: None,
        term: 2,
        drill: Some(DrillSummary {
            unix_ms: 1_700_000_000_000,
            passed: false,
            from_node: "db-a".into(),
            to_node: "db-b".into(),
            and_back: false,
            service_gaps_ms: vec![800, 2_500],
            write_gaps_ms: vec![1_200],
            vip_gaps_ms: Vec::new(),
            replica_reconnect_ms: Vec::new(),
            canary_written: 10,
            canary_missing: 1,
            problems: vec!["a row is missing".into()],
        }),
    });
    let cfg = config();
    let node = Node::new(cfg.core_params(), 2, 0, 0, 1);
    let out = render(
        &snapshot(&node, 0),
        &rec,
        Extra {
            announce_frames: 6,
            refresh_rounds: 1,
        },
    );
    assert_eq!(
        sample(
            &out,
            r#"twinbeat_transitions_total{from="acquiring",to="active"}"#
        ),
        Some(1.0),
        "{out}"
    );
    assert_eq!(
        sample(&out, r#"twinbeat_plans_total{kind="takeover"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &out,
            r#"twinbeat_step_duration_seconds_count{step="drbd",direction="acquire",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &out,
            r#"twinbeat_step_duration_seconds_sum{step="drbd",direction="acquire",outcome="ok"}"#
        ),
        Some(0.12)
    );
    assert_eq!(
        sample(
            &out,
            r#"twinbeat_step_duration_seconds_count{step="vip",direction="acquire",outcome="error"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&out, r#"twinbeat_drills_total{result="failed"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&out, "twinbeat_drill_last_passed"), Some(0.0));
    assert_eq!(
        sample(&out, "twinbeat_drill_last_service_gap_seconds"),
        Some(2.5)
    );
    assert_eq!(sample(&out, "twinbeat_announce_frames_total"), Some(6.0));
    assert_eq!(
        sample(&out, "twinbeat_garp_refresh_rounds_total"),
        Some(1.0)
    );
}

#[test]
fn request_heads_parse_or_are_refused() {
    use twinbeat::shell::observe::http_parse as parse;
    use twinbeat::shell::observe::Parsed;
    assert_eq!(parse(b"GET /metr"), Parsed::Need);
    assert_eq!(
        parse(b"GET /health?x=1 HTTP/1.0\r\nHost: a\r\n\r\n"),
        Parsed::Request {
            method: "GET".into(),
            path: "/health?x=1".into()
        }
    );
    assert_eq!(
        parse(b"\x00\x01garbage\r\n\r\n"),
        Parsed::Bad("malformed request")
    );
    let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
        Parsed::Bad("too many headers")
    );
}

/// `twinbeat status` shows DRBD's replication, and says so loudly when writes reach only this
/// node's disk (a cut replication link leaves the local disk UpToDate).
#[test]
fn status_shows_drbd_replication_and_flags_a_disconnected_peer() {
    let cfg = config();
    let node = Node::new(cfg.core_params(), 7, 0, 0, 1);
    let mut st = snapshot(&node, 100);
    assert!(!twinbeat::cli::status::render(&st).contains("  drbd       "));
    let mut rep = twinbeat::resources::DiskReport {
        disk: twinbeat::core::DiskState::UpToDate,
        resource: "r0".into(),
        connection: Some("Connected".into()),
        peer_disk: twinbeat::core::DiskState::UpToDate,
        replication: Some("Established".into()),
    };
    st.replication = Some(rep.clone());
    let out = twinbeat::cli::status::render(&st);
    assert!(
        out.contains("drbd       r0: connection Connected, peer disk UpToDate"),
        "{out}"
    );
    assert!(!out.contains("NOT REPLICATING"), "{out}");
    rep.connection = Some("StandAlone".into());
    rep.peer_disk = twinbeat::core::DiskState::Unknown;
    st.replication = Some(rep);
    let out = twinbeat::cli::status::render(&st);
    assert!(
        out.contains("r0: NOT REPLICATING: connection StandAlone"),
        "{out}"
    );
    let metrics = render(&st, &Recorder::default(), Extra::default());
    assert_eq!(
        sample(&metrics, "twinbeat_drbd_replicating{drbd_resource=\"r0\"}"),
        Some(0.0),
        "{metrics}"
    );
}
