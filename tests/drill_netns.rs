//! `twinbeat drill` against two real daemons in network namespaces serving one real mariadbd
//! datadir (each node starts its own mariadbd on it when it takes over, like a shared disk):
//! pre-check refusals (exit 3), a passing drill there and back whose canary writes go through
//! the VIP from the client namespace, its JSON report, its history line, and the minimum
//! interval. Needs root and mariadbd; skipped with a printed reason otherwise.

mod netns;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use netns::{Lab, VIP};
use twinbeat::core::NodeState;

const MARIADBD: &str = "/usr/sbin/mariadbd";

fn state(lab: &Lab, who: &str) -> Option<NodeState> {
    lab.status(who).map(|s| s.core.state)
}

/// `twinbeat drill` as node a, run from the client namespace (its writes reach the VIP as an
/// application's would); the control socket is a file, reachable from any namespace.
fn drill(lab: &Lab, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.ns("c")))
        .arg(env!("CARGO_BIN_EXE_twinbeat"))
        .arg("drill")
        .arg("--config")
        .arg(lab.config("a"))
        .args(["--node", "tb-a"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("twinbeat drill runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// mariadbd processes started from this lab's defaults files.
fn our_mariadbds(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.starts_with(MARIADBD) && cmd.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

/// Kills what the daemons left running (a failed test), before the lab's dir goes.
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in our_mariadbds(&self.0) {
            // SAFETY: kill(2) on a mariadbd whose command line names this test's temp dir.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn install_datadir(dir: &Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("datadir");
    for who in ["a", "b"] {
        let run = dir.join(format!("run-{who}"));
        std::fs::create_dir_all(&run).expect("run dir");
        support::sh(&["chown", "-R", "mysql:mysql", run.to_str().unwrap()]);
    }
    support::sh(&["chown", "-R", "mysql:mysql", data.to_str().unwrap()]);
    let out = Command::new("mariadb-install-db")
        .args([
            "--no-defaults",
            "--user=mysql",
            &format!("--datadir={}", data.display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = dir.join("init.sql");
    std::fs::write(
        &init,
        "CREATE USER IF NOT EXISTS 'drill'@'%' IDENTIFIED BY 'drillpw';\n\
         GRANT ALL ON *.* TO 'drill'@'%';\n",
    )
    .expect("init.sql");
    for who in ["a", "b"] {
        let run = dir.join(format!("run-{who}"));
        std::fs::write(
            dir.join(format!("my-{who}.cnf")),
            format!(
                "[mysqld]\nlog-basename=tbdrill\nuser=mysql\ndatadir={data}\nsocket={run}/mysqld.sock\n\
                 pid-file={run}/mysqld.pid\nlog-error={run}/error.log\nlog-bin\nskip-name-resolve\n\
                 bind-address=0.0.0.0\nport=3306\nsync_binlog=1\ninnodb_flush_log_at_trx_commit=1\n\
                 innodb_buffer_pool_size=16M\ninit-file={init}\n",
                data = data.display(),
                run = run.display(),
                init = init.display(),
            ),
        )
        .expect("my.cnf");
    }
    std::fs::write(dir.join("drillpw"), "drillpw\n").expect("password file");
}

#[test]
fn drill_refuses_on_failed_prechecks_and_passes_there_and_back() {
    if !netns::is_root() {
        eprintln!("SKIPPED: needs root for network namespaces (run ./test.sh as root)");
        return;
    }
    if !Path::new(MARIADBD).exists() {
        eprintln!("SKIPPED: {MARIADBD} missing; apt-get install -y mariadb-server mariadb-client");
        return;
    }
    let mut lab = Lab::new("dr");
    let _reaper = Reaper(lab.dir.clone());
    install_datadir(&lab.dir);
    let dir = lab.dir.display().to_string();
    let mysql = format!(
        r#"
[[resource]]
name = "mysql"
kind = "mysql"
start = ["{MARIADBD}", "--defaults-file={dir}/my-{{who}}.cnf"]
stop = ["/usr/bin/mariadb-admin", "--no-defaults", "--socket={dir}/run-{{who}}/mysqld.sock", "--user=root", "shutdown"]
pid-file = "{dir}/run-{{who}}/mysqld.pid"
socket = "{dir}/run-{{who}}/mysqld.sock"
user = "root"
start-timeout-ms = 60000
stop-timeout-ms = 60000
"#
    );
    let drill_cfg = format!(
        r#"
[drill]
host = "{VIP}"
user = "drill"
password-file = "{dir}/drillpw"
min-interval-ms = 3600000
max-service-gap-ms = 20000
max-write-gap-ms = 30000
"#
    );
    lab.write_configs_with(1_000, &mysql, &drill_cfg);
    let check = Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .arg("check")
        .arg(lab.config("a"))
        .args(["--node", "tb-a"])
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Only a runs: it takes the service after initdead, but with no peer a drill is refused.
    lab.start("a");
    lab.wait_for("a active", Duration::from_secs(60), |l| {
        state(l, "a") == Some(NodeState::Active)
    });
    let report = lab.dir.join("refused.json");
    let (code, out, err) = drill(&lab, &["--json", report.to_str().unwrap()]);
    assert_eq!(code, 3, "refused without a peer: {out}{err}");
    assert!(
        out.contains("REFUSED") && out.contains("peer alive"),
        "{out}"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    assert_eq!(j["verdict"], "refused");

    lab.start("b");
    lab.wait_for(
        "b standby, heard on every link",
        Duration::from_secs(15),
        |l| {
            l.status("b").is_some_and(|s| {
                s.core.state == NodeState::Standby && s.core.links.iter().all(|l| l.up)
            }) && l
                .status("a")
                .is_some_and(|s| s.core.links.iter().all(|l| l.up))
        },
    );

    // There and back: a -> b -> a, canary writes through the VIP from the client namespace.
    let report = lab.dir.join("drill.json");
    let (code, out, err) = drill(&lab, &["--and-back", "--json", report.to_str().unwrap()]);
    eprintln!("{out}{err}");
    assert_eq!(
        code,
        0,
        "drill passes: {out}{err}\n--- a ---\n{}\n--- b ---\n{}",
        lab.log("a"),
        lab.log("b")
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    assert_eq!(j["verdict"], "pass");
    let sw = j["switches"].as_array().expect("switches");
    assert_eq!(sw.len(), 2, "{j}");
    assert_eq!(sw[0]["to_node"], "tb-b");
    assert_eq!(sw[1]["to_node"], "tb-a");
    for s in sw {
        assert_eq!(s["canary_missing"], 0, "{s}");
        assert!(s["writes_acked"].as_u64().unwrap() > 2, "{s}");
        assert!(s["service_gap_ms"].as_u64().is_some(), "{s}");
        assert!(
            s["write_gap_ms"].as_u64().unwrap() >= s["service_gap_ms"].as_u64().unwrap() / 2,
            "the client sees at least part of the service gap: {s}"
        );
    }
    assert_eq!(j["service_on"], "tb-a");
    assert_eq!(state(&lab, "a"), Some(NodeState::Active));
    assert!(lab.has_vip("a") && !lab.has_vip("b"));

    // One drill line in a's history, shown by status and history.
    let hist = lab.dir.join("state-a").join("history.jsonl");
    lab.wait_for(
        "the drill is in a's history",
        Duration::from_secs(3),
        |_| std::fs::read_to_string(&hist).is_ok_and(|t| t.contains(r#""kind":"drill""#)),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_twinbeat"))
        .args(["history", "--state-dir"])
        .arg(lab.dir.join("state-a"))
        .output()
        .expect("history");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" drill PASS tb-a -> tb-b and back"), "{text}");

    // Again at once: refused by the minimum interval, nothing moves.
    let (code, out, _) = drill(&lab, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("minimum interval"), "{out}");
    assert_eq!(state(&lab, "a"), Some(NodeState::Active));

    // Clean stop: both daemons release (a stops mariadbd), nothing left running.
    assert_eq!(lab.stop("b", Duration::from_secs(30)), Some(0));
    assert_eq!(lab.stop("a", Duration::from_secs(60)), Some(0));
    assert!(our_mariadbds(&lab.dir).is_empty());
}
