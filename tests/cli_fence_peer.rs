//! `twinbeat fence-peer` when it cannot even ask: DRBD must get exit 1 ("helper broken", it
//! changes nothing), never a code that claims something about the peer, and the reason.
//! The answers from a real daemon are in tests/fence_peer_netns.rs.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_twinbeat");

fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("fence-peer").args(args).env_remove("DRBD_RESOURCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("twinbeat runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_a_resource_it_says_where_the_name_comes_from() {
    let (code, stderr) = run(&[], &["--socket", "/nonexistent/twinbeat.sock"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("DRBD sets DRBD_RESOURCE") && stderr.contains("--resource NAME"),
        "{stderr}"
    );
    let (code, _) = run(
        &[("DRBD_RESOURCE", " ")],
        &["--socket", "/nonexistent/x.sock"],
    );
    assert_eq!(code, 1, "a blank name is no name");
}

#[test]
fn without_a_daemon_it_exits_1_and_says_why() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("twinbeat-fp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("control.sock");
    let (code, stderr) = run(
        &[("DRBD_RESOURCE", "r0"), ("DRBD_PEER_ADDRESS", "192.0.2.2")],
        &["--socket", sock.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("twinbeat fence-peer r0")
            && stderr.contains("cannot reach the daemon")
            && stderr.contains("DRBD changes nothing"),
        "{stderr}"
    );
}
