//! `exec`: real processes, timeouts, process-group kills and error messages.

use std::time::{Duration, Instant};

use twinbeat::exec::{self, argv, ExecError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn success_and_output() {
    let o = rt()
        .block_on(exec::run(
            &argv(&["/bin/echo", "hello"]),
            Duration::from_secs(5),
        ))
        .expect("echo runs");
    assert_eq!(o.stdout, "hello\n");
    assert_eq!(o.code, Some(0));
}

#[test]
fn a_failure_carries_the_status_and_the_stderr_tail() {
    let e = rt()
        .block_on(exec::run(
            &argv(&[
                "/bin/sh",
                "-c",
                "echo noise; echo 'drbd: State change failed' >&2; exit 11",
            ]),
            Duration::from_secs(5),
        ))
        .expect_err("exit 11 is a failure");
    let msg = e.to_string();
    assert!(msg.contains("exited with status 11"), "{msg}");
    assert!(msg.contains("State change failed"), "{msg}");
    assert_eq!(e.output().and_then(|o| o.code), Some(11));
}

#[test]
fn a_missing_program_is_named_with_the_fix() {
    let e = rt()
        .block_on(exec::run(
            &argv(&["/nonexistent/drbdadm", "primary"]),
            Duration::from_secs(5),
        ))
        .expect_err("no such program");
    assert!(matches!(e, ExecError::Spawn { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/drbdadm") && msg.contains("installed"),
        "{msg}"
    );
}

#[test]
fn an_empty_argv_is_refused() {
    let e = rt()
        .block_on(exec::run(&[], Duration::from_secs(1)))
        .expect_err("empty");
    assert!(matches!(e, ExecError::EmptyArgv));
}

#[test]
fn stdin_is_null_so_a_reader_does_not_hang() {
    let o = rt()
        .block_on(exec::run(&argv(&["/bin/cat"]), Duration::from_secs(5)))
        .expect("cat sees end of input at once");
    assert_eq!(o.stdout, "");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("twinbeat-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pidfile = dir.join("grandchild.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let started = Instant::now();
    let e = rt()
        .block_on(exec::run(
            &argv(&["/bin/sh", "-c", &script]),
            Duration::from_millis(300),
        ))
        .expect_err("times out");
    assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "returned promptly"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("grandchild pid written")
        .trim()
        .parse()
        .expect("a pid");
    // The grandchild was in the same process group: it must be gone (or a zombie being reaped).
    let mut gone = false;
    for _ in 0..100 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if status.is_empty() || status.contains(") Z ") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "grandchild {pid} survived the timeout");
}

#[test]
fn argv_is_shown_as_typed() {
    assert_eq!(
        exec::show(&argv(&[
            "mount",
            "-o",
            "noatime,data=ordered",
            "/dev/loop0",
            "/srv/my data"
        ])),
        "mount -o noatime,data=ordered /dev/loop0 '/srv/my data'"
    );
}
