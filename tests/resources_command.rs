//! The `exec` resource kind with real processes: `/bin/true`, `/bin/false`, and a small shell
//! script that keeps a marker file in a per-test temporary directory.

mod support;

use std::path::PathBuf;

use twinbeat::config::{self, Probe, ResourceKind};
use twinbeat::resources::command::Command;
use twinbeat::resources::{self, Context, Resource, StepError};

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn exec(
    start: Vec<String>,
    stop: Vec<String>,
    probe: Option<(Vec<String>, u64)>,
) -> Box<dyn Resource> {
    let r = config::Resource {
        name: "app".to_string(),
        start_timeout_ms: 5_000,
        stop_timeout_ms: 5_000,
        kind: ResourceKind::Exec {
            start,
            stop,
            probe: probe.map(|(argv, timeout_ms)| Probe {
                argv,
                interval_ms: 1_000,
                timeout_ms,
            }),
        },
    };
    resources::build(&r, &Context::system()).expect("exec executor")
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = support::scratch_path(&format!("exec-res-{test}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn start_probe_stop_with_a_marker_file() {
    let dir = temp_dir("marker");
    let marker = dir.join("running");
    let m = marker.to_str().expect("utf-8 temp path");
    let script = dir.join("app.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\n start) touch \"$2\" ;;\n stop) rm -f \"$2\" ;;\n status) test -e \"$2\" ;;\nesac\n",
    )
    .expect("script");
    let s = script.to_str().expect("utf-8 temp path");
    let r = exec(
        argv(&["/bin/sh", s, "start", m]),
        argv(&["/bin/sh", s, "stop", m]),
        Some((argv(&["/bin/sh", s, "status", m]), 2_000)),
    );
    assert!(!r.probe().await.expect("probe"));
    r.acquire().await.expect("start");
    assert!(marker.exists());
    assert!(r.probe().await.expect("probe"));
    // Idempotent under the start/stop contract.
    r.acquire().await.expect("start again");
    r.release().await.expect("stop");
    assert!(!marker.exists());
    assert!(!r.probe().await.expect("probe"));
    r.release().await.expect("stop again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn true_and_false() {
    let r = exec(
        argv(&["/bin/true"]),
        argv(&["/bin/false"]),
        Some((argv(&["/bin/false"]), 2_000)),
    );
    r.acquire().await.expect("true");
    let e = r.release().await.expect_err("false");
    assert!(matches!(e, StepError::Failed(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot stop resource app: `/bin/false` exited with status 1"),
        "{msg}"
    );
    assert!(!r.probe().await.expect("a failing probe is a no"));
}

#[tokio::test]
async fn a_failure_quotes_the_commands_stderr() {
    let r = exec(
        argv(&[
            "/bin/sh",
            "-c",
            "echo 'app: port 8080 already in use' >&2; exit 3",
        ]),
        argv(&["/bin/true"]),
        None,
    );
    let msg = r.acquire().await.expect_err("exit 3").to_string();
    assert!(
        msg.contains("cannot start resource app")
            && msg.contains("exited with status 3")
            && msg.contains("port 8080 already in use"),
        "{msg}"
    );
}

#[tokio::test]
async fn without_a_probe_the_answer_is_no() {
    let r = exec(argv(&["/bin/true"]), argv(&["/bin/true"]), None);
    assert!(!r.probe().await.expect("no probe"));
}

#[tokio::test]
async fn a_hanging_probe_is_a_no_and_a_missing_one_is_an_error() {
    let r = exec(
        argv(&["/bin/true"]),
        argv(&["/bin/true"]),
        Some((argv(&["/bin/sleep", "5"]), 200)),
    );
    assert!(!r.probe().await.expect("timeout counts as not in place"));
    let r = exec(
        argv(&["/bin/true"]),
        argv(&["/bin/true"]),
        Some((argv(&["/nonexistent/app-check"]), 1_000)),
    );
    let msg = r.probe().await.expect_err("missing").to_string();
    assert!(
        msg.contains("cannot probe resource app") && msg.contains("/nonexistent/app-check"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_start_that_outlives_its_timeout_is_killed_and_reported() {
    let cfg = config::Resource {
        name: "app".to_string(),
        start_timeout_ms: 200,
        stop_timeout_ms: 200,
        kind: ResourceKind::Exec {
            start: argv(&["/bin/sleep", "5"]),
            stop: argv(&["/nonexistent/stop-app"]),
            probe: None,
        },
    };
    let r = Command::new(&cfg, &Context::system()).expect("exec executor");
    let started = std::time::Instant::now();
    let msg = r.acquire().await.expect_err("timeout").to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(
        msg.contains("cannot start resource app") && msg.contains("timed out after 200 ms"),
        "{msg}"
    );
    let msg = r.release().await.expect_err("missing").to_string();
    assert!(
        msg.contains("cannot stop resource app") && msg.contains("installed"),
        "{msg}"
    );
}

#[test]
fn new_checks_the_kind() {
    let r = config::Resource {
        name: "db".to_string(),
        start_timeout_ms: 1_000,
        stop_timeout_ms: 1_000,
        kind: ResourceKind::Systemd {
            unit: "x.service".to_string(),
        },
    };
    let e = Command::new(&r, &Context::system())
        .err()
        .expect("wrong kind");
    assert!(e.to_string().contains("not exec"), "{e}");
}
