//! `mysql` against a real MariaDB server in a throwaway datadir (needs root and `mariadbd`:
//! `apt-get install -y mariadb-server mariadb-client`), plus failure paths with stand-in
//! processes and a recorded `Runner` for `control = unit` (no systemd here).
//!
//! Every server a test starts is found again by its unique `--defaults-file` path and killed by
//! pid in a guard, so a failed assertion leaves no mariadbd behind.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{rt, wait_until, ChildGuard, TempDir};
use twinbeat::config::{
    Mysql as MysqlConfig, MysqlControl, MysqlEndpoint, Resource as ResourceConfig, ResourceKind,
};
use twinbeat::exec::{BoxFuture, ExecError, Output, Runner};
use twinbeat::resources::mysql::Mysql;
use twinbeat::resources::{Context, Resource};

const MARIADBD: &str = "/usr/sbin/mariadbd";

fn resource(cfg: MysqlConfig, start_ms: u64, stop_ms: u64) -> ResourceConfig {
    ResourceConfig {
        name: "db".into(),
        start_timeout_ms: start_ms,
        stop_timeout_ms: stop_ms,
        kind: ResourceKind::Mysql(cfg),
    }
}

fn mysql(cfg: MysqlConfig, start_ms: u64, stop_ms: u64) -> Mysql {
    Mysql::new(&resource(cfg, start_ms, stop_ms), &Context::system()).expect("new")
}

/// A datadir made by mariadb-install-db, a defaults file, a password file; the server it
/// describes is killed on drop if still running.
struct Server {
    dir: TempDir,
    defaults: PathBuf,
    socket: PathBuf,
    pid_file: PathBuf,
    port: u16,
    password_file: PathBuf,
}

impl Server {
    fn install() -> Server {
        let dir = TempDir::new("mysql");
        let d = dir.path().to_path_buf();
        let data = d.join("data");
        let run = d.join("run");
        std::fs::create_dir_all(&data).expect("mkdir data");
        std::fs::create_dir_all(&run).expect("mkdir run");
        support::sh(&[
            "chown",
            "-R",
            "mysql:mysql",
            data.to_str().unwrap(),
            run.to_str().unwrap(),
        ]);
        let t = Instant::now();
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
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("mariadb-install-db took {} ms", t.elapsed().as_millis());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let init = d.join("init.sql");
        std::fs::write(
            &init,
            "CREATE USER IF NOT EXISTS 'probe'@'localhost' IDENTIFIED BY 'pw1';\n\
             CREATE USER IF NOT EXISTS 'probe'@'127.0.0.1' IDENTIFIED BY 'pw1';\n",
        )
        .expect("init.sql");
        let socket = run.join("mysqld.sock");
        let pid_file = run.join("mysqld.pid");
        let defaults = d.join("my.cnf");
        // log-basename first: it silently overrides log-bin/log-error set before it (LAB.md).
        std::fs::write(
            &defaults,
            format!(
                "[mysqld]\nlog-basename=tbtest\nuser=mysql\ndatadir={}\nsocket={}\n\
                 pid-file={}\nlog-error={}\nlog-bin\nskip-name-resolve\nbind-address=127.0.0.1\n\
                 port={port}\nsync_binlog=1\ninnodb_flush_log_at_trx_commit=1\n\
                 innodb_buffer_pool_size=16M\ninit-file={}\n",
                data.display(),
                socket.display(),
                pid_file.display(),
                run.join("error.log").display(),
                init.display()
            ),
        )
        .expect("my.cnf");
        let password_file = d.join("password");
        std::fs::write(&password_file, "pw1\n").expect("password");
        Server {
            dir,
            defaults,
            socket,
            pid_file,
            port,
            password_file,
        }
    }

    fn start_argv(&self) -> Vec<String> {
        vec![
            MARIADBD.to_string(),
            format!("--defaults-file={}", self.defaults.display()),
        ]
    }

    fn admin_shutdown(&self) -> Vec<String> {
        vec![
            "mariadb-admin".into(),
            "--no-defaults".into(),
            format!("--socket={}", self.socket.display()),
            "--user=root".into(),
            "shutdown".into(),
        ]
    }

    fn config(&self, stop: Vec<String>, endpoint: MysqlEndpoint, password: &Path) -> MysqlConfig {
        MysqlConfig {
            control: MysqlControl::Commands {
                start: self.start_argv(),
                stop,
                pid_file: Some(self.pid_file.clone()),
            },
            endpoint,
            user: "probe".into(),
            password_file: Some(password.to_path_buf()),
            probe_interval_ms: 1000,
            probe_timeout_ms: 1000,
        }
    }

    /// Pids of the servers started from this defaults file (unique temp path: only ours).
    fn pids(&self) -> Vec<i32> {
        pids_with_arg(&format!("--defaults-file={}", self.defaults.display()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for pid in self.pids() {
            eprintln!("killing leftover mariadbd pid {pid}");
            // SAFETY: plain kill(2) on a pid whose command line names our own temp dir.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        wait_until(Duration::from_secs(5), || self.pids().is_empty());
        let _ = &self.dir;
    }
}

/// Live (non-zombie) processes with `arg` among their arguments.
fn pids_with_arg(arg: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes())
            && twinbeat::resources::filesystem::alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

fn have_mariadbd(test: &str) -> bool {
    if !support::is_root() {
        eprintln!("SKIPPED {test}: needs root");
        return false;
    }
    if !Path::new(MARIADBD).exists() {
        eprintln!(
            "SKIPPED {test}: {MARIADBD} missing; apt-get install -y mariadb-server mariadb-client"
        );
        return false;
    }
    true
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn start_answer_stop_with_a_stop_command() {
    if !have_mariadbd("start_answer_stop_with_a_stop_command") {
        return;
    }
    let s = Server::install();
    let db = mysql(
        s.config(
            s.admin_shutdown(),
            MysqlEndpoint::Socket(s.socket.clone()),
            &s.password_file,
        ),
        30_000,
        30_000,
    );
    let rt = rt();
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for round in 0..3 {
        assert!(!rt.block_on(db.probe()).expect("probe before start"));
        let t = Instant::now();
        rt.block_on(db.acquire())
            .expect("acquire starts the server");
        starts.push(t.elapsed().as_millis());
        assert_eq!(s.pids().len(), 1, "one server running");
        assert!(rt.block_on(db.probe()).expect("probe"));
        let t = Instant::now();
        rt.block_on(db.acquire()).expect("acquire again is a no-op");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(s.pids().len(), 1, "still one server");

        if round == 0 {
            // The same server over TCP.
            let tcp = mysql(
                s.config(
                    vec![],
                    MysqlEndpoint::Tcp {
                        host: "127.0.0.1".into(),
                        port: s.port,
                    },
                    &s.password_file,
                ),
                5_000,
                5_000,
            );
            assert!(rt.block_on(tcp.probe()).expect("tcp probe"));

            // A wrong password is an error naming the file, never "down" (which would start
            // a second server on the same datadir).
            let wrong = s.dir.path().join("wrong-password");
            std::fs::write(&wrong, "nope\n").unwrap();
            let bad = mysql(
                s.config(vec![], MysqlEndpoint::Socket(s.socket.clone()), &wrong),
                5_000,
                5_000,
            );
            let msg = rt
                .block_on(bad.probe())
                .expect_err("wrong password")
                .to_string();
            assert!(msg.contains(wrong.to_str().unwrap()), "{msg}");
            assert!(msg.contains("refused user probe"), "{msg}");
            let msg = rt
                .block_on(bad.acquire())
                .expect_err("wrong password")
                .to_string();
            assert!(msg.contains(wrong.to_str().unwrap()), "{msg}");
            assert_eq!(s.pids().len(), 1, "no second server started");

            let missing = s.dir.path().join("no-such-password-file");
            let none = mysql(
                s.config(vec![], MysqlEndpoint::Socket(s.socket.clone()), &missing),
                5_000,
                5_000,
            );
            let msg = rt.block_on(none.probe()).expect_err("no file").to_string();
            assert!(
                msg.contains("cannot read the password file")
                    && msg.contains(missing.to_str().unwrap()),
                "{msg}"
            );
        }

        let pid = s.pids()[0];
        let t = Instant::now();
        rt.block_on(db.release()).expect("release stops the server");
        stops.push(t.elapsed().as_millis());
        assert!(
            !twinbeat::resources::filesystem::alive(pid),
            "server process gone"
        );
        assert!(s.pids().is_empty());
        assert!(!s.socket.exists(), "socket removed");
        assert!(!rt.block_on(db.probe()).expect("probe after stop"));
        rt.block_on(db.release()).expect("release again is a no-op");
    }
    eprintln!(
        "mariadbd start to SELECT 1: {starts:?} ms (median {}); stop: {stops:?} ms (median {})",
        median(starts.clone()),
        median(stops.clone())
    );
}

#[test]
fn release_without_a_stop_command_sigterms_the_pid_file_pid() {
    if !have_mariadbd("release_without_a_stop_command_sigterms_the_pid_file_pid") {
        return;
    }
    let s = Server::install();
    let cfg = s.config(
        vec![],
        MysqlEndpoint::Socket(s.socket.clone()),
        &s.password_file,
    );
    let rt = rt();

    // A real mariadbd that refuses its config: the error quotes its error log.
    let mut broken = cfg.clone();
    if let MysqlControl::Commands { start, .. } = &mut broken.control {
        start.push("--no-such-option-twinbeat".into());
    }
    let t = Instant::now();
    let msg = rt
        .block_on(mysql(broken, 30_000, 30_000).acquire())
        .expect_err("bad option")
        .to_string();
    eprintln!("{msg}");
    assert!(msg.contains("exited with status"), "{msg}");
    assert!(
        msg.contains("error.log") && msg.contains("no-such-option-twinbeat"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));

    let starter = mysql(cfg.clone(), 30_000, 30_000);
    rt.block_on(starter.acquire()).expect("start");
    let pid = s.pids()[0];
    // A fresh executor, as after a twinbeat restart: it knows the server only by its pid file.
    let fresh = mysql(cfg, 30_000, 30_000);
    assert!(rt.block_on(fresh.probe()).expect("probe"));
    let t = Instant::now();
    rt.block_on(fresh.release()).expect("SIGTERM stop");
    eprintln!("SIGTERM stop took {} ms", t.elapsed().as_millis());
    assert!(!twinbeat::resources::filesystem::alive(pid));
    assert!(!s.socket.exists());
    rt.block_on(fresh.release()).expect("no-op");
    rt.block_on(starter.release())
        .expect("no-op for the starter too");
}

fn standalone(start: Vec<String>, pid_file: Option<PathBuf>, dir: &Path) -> MysqlConfig {
    MysqlConfig {
        control: MysqlControl::Commands {
            start,
            stop: vec![],
            pid_file,
        },
        endpoint: MysqlEndpoint::Socket(dir.join("no-server.sock")),
        user: "probe".into(),
        password_file: None,
        probe_interval_ms: 1000,
        probe_timeout_ms: 500,
    }
}

#[test]
fn a_start_command_that_exits_early_reports_its_status_and_output() {
    let tmp = TempDir::new("mysql-early");
    let start = twinbeat::exec::argv(&[
        "/bin/sh",
        "-c",
        // The message is computed, so finding it proves the output (not the argv) was quoted.
        "echo \"[ERROR] mariadbd: $((40 + 2)) cannot find datadir\" >&2; exit 3",
    ]);
    let db = mysql(
        standalone(start, Some(tmp.path().join("db.pid")), tmp.path()),
        10_000,
        5_000,
    );
    let t = Instant::now();
    let msg = rt().block_on(db.acquire()).expect_err("exits").to_string();
    eprintln!("{msg}");
    assert!(msg.contains("exited with status 3"), "{msg}");
    assert!(
        msg.contains("[ERROR] mariadbd: 42 cannot find datadir"),
        "{msg}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "reported at once, not at the timeout"
    );
}

#[test]
fn a_start_that_never_answers_times_out_and_is_stopped() {
    let tmp = TempDir::new("mysql-hang");
    let marker = "31.4159";
    let db = mysql(
        // A pid file location (never written here) puts the server's output log in `tmp`.
        standalone(
            twinbeat::exec::argv(&["sleep", marker]),
            Some(tmp.path().join("db.pid")),
            tmp.path(),
        ),
        2_000,
        2_000,
    );
    let t = Instant::now();
    let msg = rt()
        .block_on(db.acquire())
        .expect_err("never answers")
        .to_string();
    assert!(msg.contains("did not answer SELECT 1"), "{msg}");
    assert!(msg.contains("was stopped"), "{msg}");
    assert!(
        t.elapsed() < Duration::from_millis(2_500),
        "within the start timeout"
    );
    assert!(
        pids_with_arg(marker).is_empty(),
        "the started process is gone"
    );
}

#[test]
fn a_live_server_that_does_not_answer_yet_is_waited_for_not_started_twice() {
    let tmp = TempDir::new("mysql-recovering");
    // Stands for a mariadbd still in crash recovery, started before a twinbeat restart.
    let _recovering = ChildGuard(
        Command::new("sleep")
            .arg("55.5")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let pid_file = tmp.path().join("db.pid");
    std::fs::write(&pid_file, format!("{}\n", _recovering.0.id())).unwrap();
    let db = mysql(
        standalone(
            twinbeat::exec::argv(&["sleep", "44.4"]),
            Some(pid_file),
            tmp.path(),
        ),
        1_500,
        1_500,
    );
    let msg = rt()
        .block_on(db.acquire())
        .expect_err("never answers")
        .to_string();
    assert!(msg.contains("did not answer SELECT 1"), "{msg}");
    assert!(!msg.contains("was stopped"), "not ours to stop: {msg}");
    assert!(
        pids_with_arg("44.4").is_empty(),
        "no second server was started"
    );
}

#[test]
fn a_server_ignoring_sigterm_is_sigkilled_at_the_stop_timeout() {
    let tmp = TempDir::new("mysql-stubborn");
    let mut child = ChildGuard(
        Command::new("/bin/sh")
            .args(["-c", "trap '' TERM; exec sleep 77.7"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let pid_file = tmp.path().join("db.pid");
    std::fs::write(&pid_file, format!("{}\n", child.0.id())).unwrap();
    assert!(wait_until(Duration::from_secs(2), || {
        twinbeat::resources::filesystem::comm(child.0.id() as i32) == "sleep"
    }));
    // The pid file must name the server's program (here `sleep`), or release will not signal it.
    let db = mysql(
        standalone(
            twinbeat::exec::argv(&["sleep", "1"]),
            Some(pid_file),
            tmp.path(),
        ),
        2_000,
        2_000,
    );
    let t = Instant::now();
    rt().block_on(db.release()).expect("SIGKILL ends it");
    let took = t.elapsed();
    let st = child.0.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_millis(2_500),
        "SIGKILL at the stop timeout minus the margin: {took:?}"
    );
}

#[test]
fn a_stale_pid_file_naming_another_program_is_not_signalled() {
    let tmp = TempDir::new("mysql-stale");
    let mut child = ChildGuard(
        Command::new("sleep")
            .arg("66.6")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let pid_file = tmp.path().join("db.pid");
    std::fs::write(&pid_file, format!("{}\n", child.0.id())).unwrap();
    let db = mysql(
        standalone(
            twinbeat::exec::argv(&[MARIADBD]),
            Some(pid_file),
            tmp.path(),
        ),
        2_000,
        2_000,
    );
    rt().block_on(db.release()).expect("nothing of ours runs");
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the unrelated process lives on"
    );
}

/// Records argv and answers with a fixed status.
struct Recorder {
    calls: Mutex<Vec<Vec<String>>>,
    code: i32,
    stderr: String,
}

impl Runner for Recorder {
    fn output<'a>(
        &'a self,
        argv: &'a [String],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        self.calls.lock().unwrap().push(argv.to_vec());
        let o = Output {
            code: Some(self.code),
            stdout: String::new(),
            stderr: self.stderr.clone(),
            elapsed: Duration::ZERO,
        };
        Box::pin(async move { Ok(o) })
    }
}

#[test]
fn unit_control_runs_systemctl_start_and_stop() {
    let tmp = TempDir::new("mysql-unit");
    let cfg = MysqlConfig {
        control: MysqlControl::Unit("mariadb.service".into()),
        ..standalone(vec![], None, tmp.path())
    };
    let rec = Arc::new(Recorder {
        calls: Mutex::new(vec![]),
        code: 0,
        stderr: String::new(),
    });
    let ctx = Context {
        runner: rec.clone(),
    };
    let db = Mysql::new(&resource(cfg.clone(), 1_500, 1_500), &ctx).expect("new");
    let rt = rt();
    // systemctl "succeeds" but nothing answers: the start times out with the probe's reason.
    let msg = rt
        .block_on(db.acquire())
        .expect_err("no server")
        .to_string();
    assert!(msg.contains("did not answer SELECT 1"), "{msg}");
    rt.block_on(db.release()).expect("stop");
    assert_eq!(
        *rec.calls.lock().unwrap(),
        vec![
            twinbeat::exec::argv(&["systemctl", "start", "mariadb.service"]),
            twinbeat::exec::argv(&["systemctl", "stop", "mariadb.service"]),
        ]
    );

    let failing = Arc::new(Recorder {
        calls: Mutex::new(vec![]),
        code: 5,
        stderr: "Failed to start mariadb.service: Unit mariadb.service not found.".into(),
    });
    let db = Mysql::new(&resource(cfg, 1_500, 1_500), &Context { runner: failing }).expect("new");
    let msg = rt
        .block_on(db.acquire())
        .expect_err("systemctl fails")
        .to_string();
    assert!(msg.contains("systemctl start mariadb.service"), "{msg}");
    assert!(
        msg.contains("status 5") && msg.contains("not found"),
        "{msg}"
    );
}
