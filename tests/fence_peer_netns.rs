//! `twinbeat fence-peer` end to end: two real daemons in network namespaces, heartbeating over
//! real UDP, each with a drbd resource served by the drbdadm/drbdsetup stand-in
//! (tests/standin/drbd: not DRBD, it keeps role and disk in files and logs every call). The
//! handler is run the way DRBD runs it (DRBD_RESOURCE and friends in the environment) and its
//! exit code and the peer's stand-in log are checked.
//! Needs root (network namespaces); CI runs it as root.

mod netns;

use std::path::{Path, PathBuf};
use std::time::Duration;

use netns::{Lab, HB};
use twinbeat::core::{DiskState, NodeState};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn state(lab: &Lab, who: &str) -> Option<NodeState> {
    lab.status(who).map(|s| s.core.state)
}

fn drbd_dir(lab: &Lab, who: &str) -> PathBuf {
    lab.dir.join(format!("drbd-{who}"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Runs the handler as DRBD 8.4 does on node `who`: `drbdadm fence-peer minor-0` runs the
/// configured command with the resource and the peer in the environment.
fn fence_peer(lab: &Lab, who: &str, resource: &str) -> (i32, String, String) {
    let peer = if who == "a" { HB[1] } else { HB[0] };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .arg("fence-peer")
        .arg("--socket")
        .arg(lab.socket(who))
        .env("DRBD_RESOURCE", resource)
        .env("DRBD_MINOR", "0")
        .env("DRBD_PEER_AF", "ipv4")
        .env("DRBD_PEER_ADDRESS", peer)
        .output()
        .expect("twinbeat fence-peer runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fence_peer_outdates_a_standby_peer_refuses_on_an_active_one_and_reports_a_dead_one() {
    if !netns::is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let mut lab = Lab::new("fp");
    lab.write_configs_with(
        1_000,
        "[[resource]]\nname = \"r0\"\nkind = \"drbd\"\ndrbd-resource = \"r0\"\nstart-timeout-ms = 10000\nstop-timeout-ms = 10000\n",
        "",
    );
    let path = format!(
        "{ROOT}/tests/standin/drbd:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    for who in ["a", "b"] {
        let env = [
            ("PATH", path.clone()),
            (
                "STANDIN_DRBD_DIR",
                drbd_dir(&lab, who).display().to_string(),
            ),
        ];
        lab.start_with_env(who, &env);
    }
    lab.wait_for("a active, b standby", Duration::from_secs(20), |l| {
        state(l, "a") == Some(NodeState::Active) && state(l, "b") == Some(NodeState::Standby)
    });
    assert_eq!(read(&drbd_dir(&lab, "a").join("role")).trim(), "Primary");
    assert_eq!(read(&drbd_dir(&lab, "b").join("disk")).trim(), "UpToDate");

    // 1. a (Primary) lost its replication link: DRBD asks for b to be outdated.
    let (code, stdout, stderr) = fence_peer(&lab, "a", "r0");
    assert_eq!(
        code,
        4,
        "stdout: {stdout}\nstderr: {stderr}\nlog a:\n{}",
        lab.log("a")
    );
    assert!(
        stdout.contains("outdated its disk") && stdout.contains(HB[1]),
        "{stdout}"
    );
    let calls_b = read(&drbd_dir(&lab, "b").join("calls.log"));
    assert_eq!(
        calls_b
            .lines()
            .filter(|l| *l == "drbdadm outdate r0")
            .count(),
        1,
        "b's stand-in was told to outdate once:\n{calls_b}"
    );
    assert_eq!(read(&drbd_dir(&lab, "b").join("disk")).trim(), "Outdated");
    assert_eq!(
        state(&lab, "a"),
        Some(NodeState::Active),
        "a keeps writing alone"
    );
    lab.wait_for("b reports its disk Outdated", Duration::from_secs(5), |l| {
        l.status("b")
            .is_some_and(|s| s.core.disk == DiskState::Outdated)
    });

    // 2. b's DRBD asks about a, which holds the service: refused, a's disk untouched.
    let (code, stdout, stderr) = fence_peer(&lab, "b", "r0");
    assert_eq!(code, 6, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("holds the service"), "{stdout}");
    let calls_a = read(&drbd_dir(&lab, "a").join("calls.log"));
    assert!(
        !calls_a.contains("outdate"),
        "the active node never outdates itself:\n{calls_a}"
    );
    assert_eq!(read(&drbd_dir(&lab, "a").join("disk")).trim(), "UpToDate");

    // 3. A resource this daemon does not manage: exit 1 (DRBD acts on nothing), and why.
    let (code, _, stderr) = fence_peer(&lab, "a", "r9");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("drbd resource r9 is not managed here") && stderr.contains("manages r0"),
        "{stderr}"
    );

    // 4. a's daemon dies: b cannot ask it. The answer comes once b declares a dead (deadtime
    // 1 s), and b does not take over with its Outdated disk.
    lab.kill9("a");
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = fence_peer(&lab, "b", "r0");
    let took = started.elapsed();
    assert_eq!(code, 5, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("could not be asked"), "{stdout}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let st = lab.status("b").expect("b answers");
    assert_eq!(st.core.state, NodeState::Standby);
    assert!(
        st.core.blockers.iter().any(|b| b.contains("Outdated")),
        "b says why it does not take over: {:?}",
        st.core.blockers
    );
    let calls_b = read(&drbd_dir(&lab, "b").join("calls.log"));
    assert!(
        !calls_b.contains("drbdadm primary"),
        "b never promoted:\n{calls_b}"
    );
}
