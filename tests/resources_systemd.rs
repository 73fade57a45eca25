//! The `systemd` resource kind against a `Runner` double: this machine has no systemd as PID 1,
//! so the double answers with systemctl's real messages and records the argv it was asked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use twinbeat::config::{self, ResourceKind};
use twinbeat::exec::{BoxFuture, ExecError, Output, Runner};
use twinbeat::resources::systemd::{self, Unit};
use twinbeat::resources::{self, Context, Resource, StepError};

/// Answers every argv with the next queued output; records argv and timeout.
#[derive(Default)]
struct Double {
    answers: Mutex<Vec<Output>>,
    calls: Mutex<Vec<(String, Duration)>>,
}

impl Double {
    fn answer(&self, code: i32, stderr: &str) -> &Double {
        self.answers.lock().expect("lock").push(Output {
            code: Some(code),
            stdout: String::new(),
            stderr: stderr.to_string(),
            elapsed: Duration::from_millis(10),
        });
        self
    }
    fn calls(&self) -> Vec<(String, Duration)> {
        self.calls.lock().expect("lock").clone()
    }
}

impl Runner for Double {
    fn output<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        self.calls
            .lock()
            .expect("lock")
            .push((argv.join(" "), timeout));
        let mut q = self.answers.lock().expect("lock");
        let o = if q.is_empty() {
            None
        } else {
            Some(q.remove(0))
        };
        drop(q);
        Box::pin(async move {
            o.ok_or_else(|| ExecError::Timeout {
                argv: "test double: no answer queued".to_string(),
                timeout_ms: timeout.as_millis(),
            })
        })
    }
}

fn unit(d: &Arc<Double>) -> Box<dyn Resource> {
    let r = config::Resource {
        name: "db".to_string(),
        start_timeout_ms: 120_000,
        stop_timeout_ms: 90_000,
        kind: ResourceKind::Systemd {
            unit: "mariadb.service".to_string(),
        },
    };
    resources::build(&r, &Context { runner: d.clone() }).expect("systemd executor")
}

const JOB_FAILED: &str = "Job for mariadb.service failed because the control process exited with error code.\nSee \"systemctl status mariadb.service\" and \"journalctl -xeu mariadb.service\" for details.\n";
const NO_SYSTEMD: &str = "System has not been booted with systemd as init system (PID 1). Can't operate.\nFailed to connect to bus: Host is down\n";

#[tokio::test]
async fn start_and_stop_run_systemctl_with_the_resource_timeouts() {
    let d = Arc::new(Double::default());
    d.answer(0, "").answer(0, "");
    let u = unit(&d);
    u.acquire().await.expect("start");
    u.release().await.expect("stop");
    assert_eq!(
        d.calls(),
        [
            (
                "systemctl start mariadb.service".to_string(),
                Duration::from_secs(120)
            ),
            (
                "systemctl stop mariadb.service".to_string(),
                Duration::from_secs(90)
            ),
        ]
    );
}

#[tokio::test]
async fn a_failed_start_carries_systemctls_stderr_and_where_to_look() {
    let d = Arc::new(Double::default());
    d.answer(1, JOB_FAILED);
    let e = unit(&d).acquire().await.expect_err("job failed");
    assert!(matches!(e, StepError::Failed(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "cannot start mariadb.service: `systemctl start mariadb.service` exited with status 1"
        ) && msg.contains(
            "Job for mariadb.service failed because the control process exited with error code"
        ) && msg.contains("journalctl -u mariadb.service"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_failed_stop_is_reported() {
    let d = Arc::new(Double::default());
    d.answer(1, NO_SYSTEMD);
    let e = unit(&d).release().await.expect_err("no systemd");
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot stop mariadb.service")
            && msg.contains("not been booted with systemd"),
        "{msg}"
    );
}

#[tokio::test]
async fn probe_is_is_active_quiet() {
    let d = Arc::new(Double::default());
    d.answer(0, "").answer(3, "");
    let u = unit(&d);
    assert!(u.probe().await.expect("active"));
    assert!(!u.probe().await.expect("inactive"));
    let calls = d.calls();
    assert_eq!(calls[0].0, "systemctl is-active --quiet mariadb.service");
    assert_eq!(calls[0].1, Duration::from_secs(5));
}

#[tokio::test]
async fn a_probe_that_cannot_ask_systemd_is_an_error_not_a_no() {
    let d = Arc::new(Double::default());
    d.answer(1, NO_SYSTEMD);
    let e = unit(&d).probe().await.expect_err("no bus");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot ask systemd whether mariadb.service is active")
            && msg.contains("Failed to connect to bus"),
        "{msg}"
    );
}

#[tokio::test]
async fn helpers_for_other_executors() {
    let d = Arc::new(Double::default());
    d.answer(0, "").answer(0, "").answer(3, "");
    let t = Duration::from_secs(7);
    systemd::start_unit(d.as_ref(), "mysql.service", t)
        .await
        .expect("start");
    systemd::stop_unit(d.as_ref(), "mysql.service", t)
        .await
        .expect("stop");
    assert!(!systemd::is_active(d.as_ref(), "mysql.service", t)
        .await
        .expect("probe"));
    let argv: Vec<String> = d.calls().into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        argv,
        [
            "systemctl start mysql.service",
            "systemctl stop mysql.service",
            "systemctl is-active --quiet mysql.service"
        ]
    );
}

#[test]
fn new_checks_the_kind() {
    let r = config::Resource {
        name: "db".to_string(),
        start_timeout_ms: 1_000,
        stop_timeout_ms: 1_000,
        kind: ResourceKind::Drbd {
            resource: "r0".to_string(),
        },
    };
    let e = Unit::new(&r, &Context::system()).err().expect("wrong kind");
    assert!(e.to_string().contains("not systemd"), "{e}");
}
