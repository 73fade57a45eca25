//! `/metrics`, `/health` and HAProxy agent-check of two real daemons in network namespaces,
//! scraped over real TCP from a third namespace (the client c): the answers follow a planned
//! switchover, slow and oversized requests are cut off without hurting the daemon, the
//! connection cap holds, and the periodic gratuitous ARP refresh fixes a client's stale
//! neighbour entry. Needs root (network namespaces).

mod netns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netns::{Lab, LAN};
use twinbeat::core::NodeState;

const HTTP_PORT: u16 = 9105;
const AGENT_PORT: u16 = 9106;
const MAX_CONNECTIONS: usize = 4;
/// A second service address, with a 1 s refresh (the shared test VIP has none).
const REFRESHED_VIP: &str = "198.51.100.101";

fn addr(who: &str, port: u16) -> SocketAddr {
    let ip = if who == "a" { LAN[0] } else { LAN[1] };
    format!("{ip}:{port}").parse().unwrap()
}

fn connect(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `request` bytes and reads the whole answer (the server closes after one).
fn exchange(to: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(to);
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(lab: &Lab, who: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let to = addr(who, HTTP_PORT);
    let text = lab.in_netns("c", move || exchange(to, req.as_bytes()));
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {text:?}"));
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

fn agent(lab: &Lab, who: &str) -> String {
    let to = addr(who, AGENT_PORT);
    lab.in_netns("c", move || exchange(to, b"twinbeat/db\n"))
}

/// The value of the sample `name{labels}` (or plain `name`), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok())?
    })
}

fn metric(lab: &Lab, who: &str, series: &str) -> f64 {
    let (code, body) = get(lab, who, "/metrics");
    assert_eq!(code, 200, "{body}");
    sample(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

fn state(lab: &Lab, who: &str) -> Option<NodeState> {
    lab.status(who).map(|s| s.core.state)
}

fn c_neighbour(lab: &Lab, ip: &str) -> Option<String> {
    let out = lab.run_in("c", &["ip", "neigh", "show", ip, "dev", "lan0"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut w = text.split_whitespace();
    while let Some(x) = w.next() {
        if x == "lladdr" {
            return w.next().map(str::to_string);
        }
    }
    None
}

#[test]
fn metrics_health_and_agent_check_follow_a_switchover_and_stay_bounded() {
    if !netns::is_root() {
        eprintln!("skipped: needs root for network namespaces (run ./test.sh as root)");
        return;
    }
    let mut lab = Lab::new("m");
    let refreshed = format!(
        r#"
[[resource]]
name = "vip-refreshed"
kind = "vip"
address = "{REFRESHED_VIP}/24"
interface = "lan0"
garp-refresh-ms = 1000
"#
    );
    let metrics = format!(
        r#"
[metrics]
listen = {{ tb-a = "{}", tb-b = "{}" }}
agent-listen = {{ tb-a = "{}", tb-b = "{}" }}
max-connections = {MAX_CONNECTIONS}
"#,
        addr("a", HTTP_PORT),
        addr("b", HTTP_PORT),
        addr("a", AGENT_PORT),
        addr("b", AGENT_PORT)
    );
    lab.write_configs_with(1_000, &refreshed, &metrics);
    lab.start("a");
    lab.start("b");
    lab.wait_for("a active, b standby", Duration::from_secs(15), |l| {
        state(l, "a") == Some(NodeState::Active) && state(l, "b") == Some(NodeState::Standby)
    });

    // Health and agent-check: only the active node serves.
    let (code, body) = get(&lab, "a", "/health");
    assert_eq!(code, 200, "a is active: {body}");
    assert!(body.contains("tb-a active term 1: serving"), "{body}");
    let (code, body) = get(&lab, "b", "/health");
    assert_eq!(code, 503, "b is standby: {body}");
    assert_eq!(agent(&lab, "a"), "up ready\n");
    assert_eq!(agent(&lab, "b"), "down\n");
    assert_eq!(get(&lab, "a", "/nope").0, 404);
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .args(["status", "--socket"])
        .arg(lab.socket("a"))
        .output()
        .expect("twinbeat status runs");
    let text = String::from_utf8_lossy(&text.stdout);
    let want = format!(
        "metrics    http://{}/metrics and /health, agent-check on {}",
        addr("a", HTTP_PORT),
        addr("a", AGENT_PORT)
    );
    assert!(text.contains(&want), "{text}");
    assert_eq!(
        lab.in_netns("c", || exchange(
            addr("a", HTTP_PORT),
            b"POST /health HTTP/1.1\r\n\r\n"
        ))
        .split_whitespace()
        .nth(1),
        Some("405")
    );

    // Metrics: state, term and links as status has them.
    let (_, m) = get(&lab, "a", "/metrics");
    assert_eq!(
        sample(&m, r#"twinbeat_node_state{state="active"}"#),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"twinbeat_node_state{state="standby"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&m, "twinbeat_term"), Some(1.0));
    assert_eq!(sample(&m, "twinbeat_service_serving"), Some(1.0));
    assert_eq!(sample(&m, r#"twinbeat_link_up{link="hb"}"#), Some(1.0));
    let age = sample(&m, r#"twinbeat_link_heartbeat_age_seconds{link="lan"}"#).expect("age");
    assert!(age < 1.0, "heartbeat age {age} s on a healthy link");
    assert!(sample(&m, r#"twinbeat_link_heartbeats_received_total{link="hb"}"#).unwrap() > 0.0);
    assert_eq!(
        sample(
            &m,
            r#"twinbeat_heartbeats_rejected_total{reason="bad-mac",class="forged"}"#
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &m,
            r#"twinbeat_transitions_total{from="acquiring",to="active"}"#
        ) == Some(1.0),
        "{m}"
    );
    assert!(
        m.contains(
            r#"twinbeat_step_duration_seconds_count{step="vip",direction="acquire",outcome="ok"} 1"#
        ),
        "{m}"
    );
    assert!(m.ends_with("# EOF\n"));
    let (_, mb) = get(&lab, "b", "/metrics");
    assert_eq!(
        sample(&mb, r#"twinbeat_node_state{state="standby"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&mb, r#"twinbeat_peer_state{state="active"}"#),
        Some(1.0)
    );

    // GARP refresh: rounds are counted, and a client whose neighbour entry for the refreshed
    // address is wrong gets it corrected without any takeover.
    let rounds = metric(&lab, "a", "twinbeat_garp_refresh_rounds_total");
    lab.wait_for(
        "two more refresh rounds on a",
        Duration::from_secs(6),
        |l| metric(l, "a", "twinbeat_garp_refresh_rounds_total") >= rounds + 2.0,
    );
    let bogus = "02:00:00:00:00:99";
    let out = lab.run_in(
        "c",
        &[
            "ip",
            "neigh",
            "replace",
            REFRESHED_VIP,
            "lladdr",
            bogus,
            "dev",
            "lan0",
            "nud",
            "stale",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c_neighbour(&lab, REFRESHED_VIP).as_deref(), Some(bogus));
    let mac_a = lab.mac("a");
    lab.wait_for(
        "c's entry for the refreshed VIP corrected to a's MAC",
        Duration::from_secs(6),
        |l| c_neighbour(l, REFRESHED_VIP).as_deref() == Some(mac_a.as_str()),
    );
    // b never announces an address it does not hold.
    assert_eq!(metric(&lab, "b", "twinbeat_announce_frames_total"), 0.0);

    // Bounded: a client that sends nothing is cut off with 408 within the read timeout, one
    // that sends a huge head gets 431, and a health check in the meantime is unaffected.
    let to = addr("a", HTTP_PORT);
    let (slow, slow_took, health_meanwhile) = lab.in_netns("c", move || {
        let started = Instant::now();
        let mut idle = connect(to);
        let check = exchange(to, b"GET /health HTTP/1.0\r\n\r\n");
        let mut out = String::new();
        let _ = idle.read_to_string(&mut out);
        (out, started.elapsed(), check)
    });
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow:?}");
    assert!(
        slow_took < Duration::from_secs(3),
        "cut off after {slow_took:?}"
    );
    assert!(
        health_meanwhile.starts_with("HTTP/1.1 200"),
        "{health_meanwhile}"
    );
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = lab.in_netns("c", move || exchange(to, huge.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // The connection cap: with every slot held by an idle client, one more is closed at once
    // (no answer), and once they time out the endpoint serves again.
    let (refused, took) = lab.in_netns("c", move || {
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| connect(to)).collect();
        // Give the daemon time to accept them all before the extra one arrives.
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let extra = exchange(to, b"GET /health HTTP/1.0\r\n\r\n");
        drop(idle);
        (extra, started.elapsed())
    });
    assert_eq!(refused, "", "over the cap: closed without an answer");
    assert!(
        took < Duration::from_secs(1),
        "closed at once, not after {took:?}"
    );
    lab.wait_for(
        "a serves /health again after the cap",
        Duration::from_secs(5),
        |l| get(l, "a", "/health").0 == 200,
    );
    assert!(lab.status("a").is_some(), "the daemon itself is unaffected");

    // Planned switchover: health and agent-check flip, term and transitions follow.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .args(["standby", "--socket"])
        .arg(lab.socket("a"))
        .output()
        .expect("twinbeat standby runs");
    assert!(
        out.status.success(),
        "standby: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_for("b serving /health", Duration::from_secs(10), |l| {
        get(l, "b", "/health").0 == 200
    });
    assert_eq!(get(&lab, "a", "/health").0, 503);
    assert_eq!(agent(&lab, "b"), "up ready\n");
    assert_eq!(agent(&lab, "a"), "down\n");
    let (_, mb) = get(&lab, "b", "/metrics");
    assert_eq!(
        sample(&mb, r#"twinbeat_node_state{state="active"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&mb, "twinbeat_term"), Some(2.0), "{mb}");
    assert_eq!(
        sample(&mb, r#"twinbeat_plans_total{kind="takeover"}"#),
        Some(1.0)
    );
    let (_, ma) = get(&lab, "a", "/metrics");
    assert_eq!(
        sample(
            &ma,
            r#"twinbeat_transitions_total{from="active",to="releasing"}"#
        ),
        Some(1.0),
        "{ma}"
    );
    assert_eq!(
        sample(&ma, r#"twinbeat_plans_total{kind="handoff"}"#),
        Some(1.0),
        "{ma}"
    );
    assert!(
        ma.contains(
            r#"twinbeat_step_duration_seconds_count{step="vip",direction="release",outcome="ok"} 1"#
        ),
        "{ma}"
    );
    // a released the refreshed address, so its refresh stopped with it.
    let stopped = metric(&lab, "a", "twinbeat_garp_refresh_rounds_total");
    lab.wait_for("b refreshing", Duration::from_secs(6), |l| {
        metric(l, "b", "twinbeat_garp_refresh_rounds_total") >= 2.0
    });
    assert_eq!(
        metric(&lab, "a", "twinbeat_garp_refresh_rounds_total"),
        stopped
    );

    assert_eq!(lab.stop("a", Duration::from_secs(10)), Some(0));
    assert_eq!(lab.stop("b", Duration::from_secs(10)), Some(0));
}
