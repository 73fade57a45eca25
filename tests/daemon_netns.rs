//! Two real `twinbeat run` daemons in two network namespaces, heartbeating over a veth pair and a
//! bridged LAN, moving a real VIP: on `twinbeat standby`, on kill -9 of the active daemon, and
//! back when the killed daemon restarts and finds its stale VIP. A third namespace is the client
//! that must reach the VIP and whose neighbour table must follow the gratuitous ARP.
//! Needs root (network namespaces); CI runs it as root.

mod netns;

use std::time::Duration;

use netns::{Lab, HB};
use twinbeat::core::NodeState;
use twinbeat::proto::{Algorithm, Keyring, Sender};

fn state(lab: &Lab, who: &str) -> Option<NodeState> {
    lab.status(who).map(|s| s.core.state)
}

fn run_cli(lab: &Lab, who: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .args(args)
        .arg("--socket")
        .arg(lab.socket(who))
        .output()
        .expect("twinbeat cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_daemons_move_a_vip_on_standby_on_kill_and_resolve_the_stale_copy() {
    if !netns::is_root() {
        eprintln!("skipped: needs root for network namespaces (run ./test.sh as root)");
        return;
    }
    let mut lab = Lab::new("d");
    lab.write_configs("");
    lab.start("a");
    lab.start("b");

    // Cold start: after initdead (2 s) the preferred node (first listed, tb-a) takes the VIP.
    lab.wait_for("a active, b standby", Duration::from_secs(15), |l| {
        state(l, "a") == Some(NodeState::Active) && state(l, "b") == Some(NodeState::Standby)
    });
    assert!(lab.has_vip("a") && !lab.has_vip("b"));
    assert!(lab.c_can_ping_vip(), "client reaches the VIP on a");
    let st = lab.status("b").expect("status");
    assert!(
        st.core.links.iter().all(|l| l.up),
        "both links up: {:?}",
        st.core.links
    );
    assert_eq!(st.core.peer.state, Some(NodeState::Active));

    // The human status view tells the same story.
    let (code, text, _) = run_cli(&lab, "a", &["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("state      active, term 1"), "{text}");
    assert!(text.contains("vip (vip) held"), "{text}");

    // Planned switchover: standby on a moves the VIP to b and reports the gap.
    let (code, out, err) = run_cli(&lab, "a", &["standby"]);
    assert_eq!(code, 0, "standby failed: {out}{err}\n{}", lab.log("a"));
    assert!(out.contains("service gap"), "{out}");
    assert_eq!(state(&lab, "b"), Some(NodeState::Active));
    assert_eq!(state(&lab, "a"), Some(NodeState::Standby));
    assert!(lab.has_vip("b") && !lab.has_vip("a"));
    assert!(lab.c_can_ping_vip(), "client reaches the VIP on b");
    assert_eq!(lab.c_neighbour_for_vip(), Some(lab.mac("b")));

    // A second standby on the node that is now standby has nothing to hand over.
    let (code, out, _) = run_cli(&lab, "a", &["standby"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to hand over"), "{out}");

    // kill -9 of the active daemon: its VIP stays configured (nothing released it). a takes
    // over after deadtime and its gratuitous ARP moves the client's neighbour entry to a's MAC
    // without the client asking.
    std::thread::sleep(Duration::from_millis(1_100)); // past the neighbour entry's locktime
    lab.kill9("b");
    let took = lab.wait_for("a takes over", Duration::from_secs(10), |l| {
        state(l, "a") == Some(NodeState::Active)
    });
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");
    assert!(lab.has_vip("a"));
    assert!(lab.has_vip("b"), "the killed daemon released nothing");
    lab.wait_for(
        "client's neighbour entry follows the GARP",
        Duration::from_secs(3),
        |l| l.c_neighbour_for_vip() == Some(l.mac("a")),
    );
    assert!(lab.c_can_ping_vip());
    let a_status = lab.status("a").expect("status");
    assert_eq!(a_status.core.term, 3, "takeover after the handoff's term 2");

    // The failover history on a: the cold-start takeover, the handoff to b, the takeover
    // after b's kill, each one JSON line with wall-clock time, steps and total time.
    let hist = lab.dir.join("state-a").join("history.jsonl");
    lab.wait_for("a's history written", Duration::from_secs(3), |_| {
        std::fs::read_to_string(&hist).is_ok_and(|t| t.lines().count() >= 3)
    });
    let text = std::fs::read_to_string(&hist).expect("history.jsonl on a");
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
            assert!(v["total_ms"].is_u64() && v["steps"].is_array(), "{l}");
            v["kind"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(kinds, ["takeover", "handoff", "takeover"], "{text}");
    let (code, out, _) = run_cli(&lab, "a", &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("last failovers and drills"), "{out}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .args(["history", "--last", "2", "--state-dir"])
        .arg(lab.dir.join("state-a"))
        .output()
        .expect("twinbeat history runs");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(" handoff releasing -> standby in "), "{out}");

    // b's daemon comes back: it adopts the VIP it finds (all resources held), hears a active
    // with a higher term, and releases its stale copy. a keeps the service and re-announces.
    lab.start("b");
    lab.wait_for("b releases its stale VIP", Duration::from_secs(10), |l| {
        !l.has_vip("b") && state(l, "b") == Some(NodeState::Standby)
    });
    assert_eq!(state(&lab, "a"), Some(NodeState::Active));
    assert!(lab.has_vip("a"));
    let b = lab.status("b").expect("status");
    assert!(b.core.split_brains >= 1, "the split is counted");
    assert_eq!(b.generation, 2, "a restart is a new boot generation");
    let a = lab.status("a").expect("status");
    assert_eq!(
        a.core.peer.restarts_seen, 1,
        "a saw b come back with a new boot generation"
    );
    assert_eq!(a.core.peer.generation, Some(2));

    // SIGTERM on the active daemon releases the VIP before exiting; b takes over at once
    // (a says it stopped) rather than after deadtime. b must be past its own initdead first:
    // no node takes over during initdead.
    lab.wait_for("b past initdead", Duration::from_secs(5), |l| {
        l.status("b").is_some_and(|s| s.uptime_ms > 2_200)
    });
    let code = lab.stop("a", Duration::from_secs(10));
    assert_eq!(code, Some(0), "clean exit; log:\n{}", lab.log("a"));
    assert!(!lab.has_vip("a"), "released on SIGTERM");
    let took = lab.wait_for(
        "b takes over after a stopped",
        Duration::from_secs(5),
        |l| state(l, "b") == Some(NodeState::Active),
    );
    assert!(
        took < Duration::from_millis(900),
        "b waited {took:?}: should not need deadtime"
    );
    assert!(lab.has_vip("b"));
}

#[test]
fn forged_truncated_and_replayed_datagrams_are_rejected_and_counted() {
    if !netns::is_root() {
        eprintln!("skipped: needs root for network namespaces (run ./test.sh as root)");
        return;
    }
    let mut lab = Lab::new("f");
    lab.write_configs("");
    lab.start("a");
    // Sent from b's namespace and b's heartbeat address, so only the wire checks can refuse them.
    let sent = lab.in_netns("b", || {
        let s = std::net::UdpSocket::bind((HB[1], 0)).expect("bind in b");
        let to = (HB[0], 694);
        let good = Keyring::new(
            Algorithm::HmacSha256,
            [(1u8, b"0123456789abcdef0123456789abcdef".to_vec())],
        )
        .expect("keyring");
        let bad = Keyring::new(
            Algorithm::HmacSha256,
            [(1u8, b"not-the-key-at-all-not-the-key!!".to_vec())],
        )
        .expect("keyring");
        let beat = twinbeat::core::Beat {
            state: NodeState::Standby,
            term: 0,
            held: 0,
            disk: twinbeat::core::DiskState::NotReplicated,
            handoff: None,
            outdate: None,
            stamp: None,
            echo: None,
        };
        let mut forged = Sender::new(bad, 1, 7, 2, 5).expect("sender");
        let mut real = Sender::new(good.clone(), 1, 7, 2, 5).expect("sender");
        let first = real.next(&beat);
        let mut n = 0;
        for _ in 0..3 {
            s.send_to(&forged.next(&beat), to).expect("send");
            n += 1;
        }
        s.send_to(&first[..20], to).expect("send");
        s.send_to(&first, to).expect("send");
        s.send_to(&first, to).expect("send");
        let mut old = Sender::new(good, 1, 7, 2, 4).expect("sender");
        s.send_to(&old.next(&beat), to).expect("send");
        s.send_to(&[0u8; 3000][..1500], to).expect("send");
        n + 5
    });
    assert_eq!(sent, 8);
    lab.wait_for("the rejections are counted", Duration::from_secs(5), |l| {
        l.status("a").is_some_and(|s| {
            let c = &s.heartbeat.counters;
            c.bad_mac >= 3 && c.too_short >= 1 && c.stale + c.replay >= 2 && c.fresh >= 1
        })
    });
    let s = lab.status("a").expect("daemon a still answers");
    let c = &s.heartbeat.counters;
    assert_eq!(c.bad_mac, 3, "{c:?}");
    assert_eq!(c.too_short, 1, "{c:?}");
    assert_eq!(c.fresh, 1, "the one genuine datagram: {c:?}");
    assert_eq!(c.stale, 1, "the same datagram again: {c:?}");
    assert_eq!(c.replay, 1, "an older generation: {c:?}");
    assert!(lab.log("a").contains("rejected heartbeat datagram"));
}

#[test]
fn a_daemon_restarted_within_deadtime_keeps_the_service_and_operators_can_steer() {
    if !netns::is_root() {
        eprintln!("skipped: needs root for network namespaces (run ./test.sh as root)");
        return;
    }
    let mut lab = Lab::new("r");
    // A generous deadtime so a restart (process start, probe, bind) fits inside it.
    lab.write_configs_timed(3_000, "");
    lab.start("a");
    lab.start("b");
    lab.wait_for("a active, b standby", Duration::from_secs(15), |l| {
        state(l, "a") == Some(NodeState::Active) && state(l, "b") == Some(NodeState::Standby)
    });

    // kill -9 and immediate restart of the active daemon: it adopts the VIP it finds, and b
    // sees a new boot generation, not a dead peer.
    let t0 = std::time::Instant::now();
    lab.kill9("a");
    lab.start("a");
    let restart = t0.elapsed();
    lab.wait_for("a active again", Duration::from_secs(5), |l| {
        state(l, "a") == Some(NodeState::Active)
    });
    lab.wait_for("b hears the new generation", Duration::from_secs(3), |l| {
        l.status("b")
            .is_some_and(|s| s.core.peer.generation == Some(2))
    });
    let b = lab.status("b").expect("status");
    assert_eq!(b.core.state, NodeState::Standby, "b never took over");
    assert_eq!(b.core.takeovers, 0);
    assert_eq!(b.core.peer.restarts_seen, 1);
    assert_eq!(b.core.peer.generation, Some(2));
    let a = lab.status("a").expect("status");
    assert_eq!(a.core.term, 1, "adopted, not taken over again");
    assert!(
        a.core
            .transitions
            .iter()
            .any(|t| t.cause.contains("adopted")),
        "{:?}",
        a.core.transitions
    );
    assert!(lab.has_vip("a") && !lab.has_vip("b"));
    eprintln!("daemon restart to answering: {} ms", restart.as_millis());

    // takeover from the standby side pulls the service over.
    let (code, out, err) = run_cli(&lab, "b", &["takeover"]);
    assert_eq!(code, 0, "takeover: {out}{err}");
    assert!(out.contains("service gap"), "{out}");
    assert!(lab.has_vip("b") && !lab.has_vip("a"));

    // maintenance: b stops acting; standby is refused (exit 3) while it lasts.
    let (code, _, _) = run_cli(&lab, "b", &["maintenance", "on"]);
    assert_eq!(code, 0);
    assert_eq!(state(&lab, "b"), Some(NodeState::Maintenance));
    let (code, _, err) = run_cli(&lab, "b", &["standby"]);
    assert_eq!(code, 3, "refused while in maintenance: {err}");
    assert!(err.contains("maintenance"), "{err}");
    let (code, _, _) = run_cli(&lab, "b", &["maintenance", "off"]);
    assert_eq!(code, 0);
    assert_eq!(
        state(&lab, "b"),
        Some(NodeState::Active),
        "re-probed and adopted"
    );
    assert!(lab.has_vip("b"));

    // SIGHUP: a broken file is refused and the running config kept; a resource change needs
    // a restart; a timing change is applied live.
    let cfg = lab.config("b");
    let good = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        good.replace("keepalive-ms = 200", "keepalive-ms = \"fast\""),
    )
    .expect("write");
    lab.signal("b", libc::SIGHUP);
    lab.wait_for("broken reload refused", Duration::from_secs(5), |l| {
        l.log("b").contains("keeping the running config")
    });
    std::fs::write(&cfg, good.replace("/24\"\ninterface", "/25\"\ninterface")).expect("write");
    lab.signal("b", libc::SIGHUP);
    lab.wait_for("resource change refused", Duration::from_secs(5), |l| {
        l.log("b")
            .contains("reload refused, keeping the running config: the resources changed")
    });
    std::fs::write(
        &cfg,
        good.replace("warntime-ms = 1500", "warntime-ms = 1200"),
    )
    .expect("write");
    lab.signal("b", libc::SIGHUP);
    lab.wait_for("timing change applied", Duration::from_secs(5), |l| {
        l.log("b").contains("reload: applied the new config")
    });
    assert_eq!(
        state(&lab, "b"),
        Some(NodeState::Active),
        "reloads left the service alone"
    );
    assert!(lab.has_vip("b"));

    // An unreachable daemon is an error (exit 1) naming the socket.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .args(["status", "--socket", "/nonexistent/twinbeat.sock"])
        .output()
        .expect("cli runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/twinbeat.sock"));
}
