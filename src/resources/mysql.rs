//! The `mysql` resource kind: start the MySQL/MariaDB server, stop it, and tell whether it answers.
//!
//! Owns: starting and stopping one server (a systemd unit, or a start argv plus a stop argv or a
//! pid file), and the health probe. "Running" means a `mysql_async` connection made within the
//! probe timeout answers `SELECT 1`; a live process that does not answer is not running for
//! acquire, but is still stopped by release. Must not touch: the datadir, replication, users or
//! the filesystem below (the `filesystem` resource owns the mount; stopping the server is what
//! frees it).
//!
//! Start with `control = commands`: the server is spawned *detached* (own session via setsid,
//! stdin from /dev/null, stdout/stderr appended to `twinbeat-mysql-NAME.log` next to the pid file,
//! or in the temp dir without one). A foreground `mariadbd --defaults-file=...` is the expected
//! start argv; it must outlive the step future and twinbeat's own restarts, so it is not run
//! through `exec` (which kills on drop). A start argv that daemonizes by itself (`mysqld_safe`,
//! `--daemonize`) works too: its early exit with status 0 is then fine, and readiness alone
//! decides. Under systemd, run twinbeat with `KillMode=process` or use `control = unit`, or
//! stopping twinbeat takes the server down with it.
//!
//! Stop: the stop argv (e.g. `mariadb-admin shutdown`) or SIGTERM to the server's pid, then
//! wait for the process to exit; SIGKILL after the stop timeout minus a margin, logged as an
//! ERROR because the next start then runs crash recovery. SIGTERM is a clean shutdown for
//! mariadbd, and the quicker one: `mariadb-admin shutdown` polls for the pid file once a second,
//! so it measured ~1.0 s where SIGTERM measured ~65 ms on the same small server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::filesystem::{alive, comm};
use super::{Context, Resource, StepError, StepResult};
use crate::config::{self, MysqlControl, MysqlEndpoint};
use crate::exec::{self, BoxFuture, Runner};

/// Pause between readiness / exit polls.
const POLL: Duration = Duration::from_millis(100);
/// Bytes of a log file quoted in an error.
const LOG_TAIL_BYTES: u64 = 600;
/// Server error codes meaning "these credentials are wrong" (retrying will not help).
const ACCESS_DENIED: [u16; 2] = [1045, 1698];

pub struct Mysql {
    name: String,
    cfg: config::Mysql,
    start_timeout: Duration,
    stop_timeout: Duration,
    runner: Arc<dyn Runner>,
    /// The server this executor spawned: its exit status explains an early death, and waiting
    /// on it reaps the zombie.
    child: Mutex<Option<std::process::Child>>,
}

/// What one `SELECT 1` attempt found.
enum Answer {
    Up,
    /// Not answering (refused, no socket, timeout...): the reason, for the error if it lasts.
    Down(String),
    /// Answering, but this config cannot use it (bad credentials, unreadable password file).
    Unusable(StepError),
}

impl Mysql {
    pub fn new(r: &config::Resource, ctx: &Context) -> StepResult<Mysql> {
        let config::ResourceKind::Mysql(cfg) = &r.kind else {
            return Err(StepError::Failed(format!(
                "resource {} is a {} resource, not mysql",
                r.name,
                r.kind.name()
            )));
        };
        if let MysqlControl::Commands { start, .. } = &cfg.control {
            if start.is_empty() {
                return Err(StepError::Failed(format!(
                    "mysql {}: the start command is empty; set `start` to the server's argv",
                    r.name
                )));
            }
        }
        Ok(Mysql {
            name: r.name.clone(),
            cfg: cfg.clone(),
            start_timeout: Duration::from_millis(r.start_timeout_ms),
            stop_timeout: Duration::from_millis(r.stop_timeout_ms),
            runner: ctx.runner.clone(),
            child: Mutex::new(None),
        })
    }

    fn endpoint(&self) -> String {
        match &self.cfg.endpoint {
            MysqlEndpoint::Socket(p) => format!("socket {}", p.display()),
            MysqlEndpoint::Tcp { host, port } => format!("{host}:{port}"),
        }
    }

    /// The password, read at each use so a rotated file takes effect without a reload.
    fn password(&self) -> StepResult<Option<String>> {
        let Some(file) = &self.cfg.password_file else {
            return Ok(None);
        };
        let mut text = std::fs::read_to_string(file).map_err(|e| {
            StepError::Failed(format!(
                "mysql {}: cannot read the password file {}: {e}; check `password-file` and \
                 that the file is readable by root",
                self.name,
                file.display()
            ))
        })?;
        // Editors and `echo` add a final newline; it is not part of the password.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(Some(text))
    }

    async fn select1(&self, timeout: Duration) -> Answer {
        let pass = match self.password() {
            Ok(p) => p,
            Err(e) => return Answer::Unusable(e),
        };
        let mut b = mysql_async::OptsBuilder::default()
            .user(Some(self.cfg.user.clone()))
            .pass(pass)
            // Otherwise a TCP connection to localhost silently switches to the socket.
            .prefer_socket(false)
            .stmt_cache_size(0);
        b = match &self.cfg.endpoint {
            MysqlEndpoint::Socket(p) => b.socket(Some(p.to_string_lossy().into_owned())),
            MysqlEndpoint::Tcp { host, port } => b.ip_or_hostname(host.clone()).tcp_port(*port),
        };
        let attempt = async {
            let mut conn = mysql_async::Conn::new(b).await?;
            let v: Option<i64> = conn.query_first("SELECT 1").await?;
            conn.disconnect().await?;
            Ok::<_, mysql_async::Error>(v)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(Some(1))) => Answer::Up,
            Ok(Ok(v)) => Answer::Down(format!("SELECT 1 returned {v:?}")),
            Ok(Err(mysql_async::Error::Server(e))) if ACCESS_DENIED.contains(&e.code) => {
                let how = match &self.cfg.password_file {
                    Some(f) => format!("the password from {}", f.display()),
                    None => "no password (no password-file configured)".to_string(),
                };
                Answer::Unusable(StepError::Failed(format!(
                    "mysql {}: the server at {} refused user {} with {how}: {}; fix the \
                     password file or the user's grants",
                    self.name,
                    self.endpoint(),
                    self.cfg.user,
                    e.message
                )))
            }
            Ok(Err(e)) => Answer::Down(e.to_string()),
            Err(_) => Answer::Down(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.probe_timeout_ms.max(1))
    }

    /// Where a detached server's stdout/stderr go.
    fn out_log(&self) -> PathBuf {
        let dir = match &self.cfg.control {
            MysqlControl::Commands {
                pid_file: Some(p), ..
            } => p.parent().map(Path::to_path_buf),
            _ => None,
        };
        dir.filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("twinbeat-mysql-{}.log", self.name))
    }

    fn spawn_detached(&self, argv: &[String]) -> StepResult<u32> {
        use std::os::unix::process::CommandExt;
        let log = self.out_log();
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
        };
        // Appended, with a header per start: an earlier crash's output stays for the operator,
        // and the tail quoted in an error is this start's.
        if let Ok(mut f) = open() {
            use std::io::Write;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let _ = writeln!(
                f,
                "--- twinbeat: starting `{}` (unix time {now})",
                exec::show(argv)
            );
        }
        let (out, err) = match (open(), open()) {
            (Ok(o), Ok(e)) => (Stdio::from(o), Stdio::from(e)),
            (Err(e), _) | (_, Err(e)) => {
                return Err(StepError::Failed(format!(
                    "mysql {}: cannot open {} for the server's output: {e}; check the directory",
                    self.name,
                    log.display()
                )))
            }
        };
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: setsid is async-signal-safe; this runs in the forked child before exec. A new
        // session keeps the server out of twinbeat's process group and terminal signals.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = exec::show(argv);
        let child = cmd.spawn().map_err(|e| {
            StepError::Exec(exec::ExecError::Spawn {
                argv: shown.clone(),
                source: e,
            })
        })?;
        let pid = child.id();
        tracing::info!(resource = %self.name, argv = %shown, pid, output = %log.display(), "started server detached");
        *self.lock_child() = Some(child);
        Ok(pid)
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<std::process::Child>> {
        // A panic elsewhere while holding the lock leaves a usable Option behind.
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exit status of the server we spawned, if it has exited (reaping it).
    fn child_exit(&self) -> Option<(u32, std::process::ExitStatus)> {
        let mut g = self.lock_child();
        let child = g.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => {
                let pid = child.id();
                *g = None;
                Some((pid, st))
            }
            _ => None,
        }
    }

    /// The server's pid: the one we spawned while it runs, else the pid file's if it names a
    /// live server process (a stale file may name a pid reused by something else: never signal
    /// that).
    fn server_pid(&self) -> Option<i32> {
        if let Some(c) = self.lock_child().as_ref() {
            let pid = c.id() as i32;
            if alive(pid) {
                return Some(pid);
            }
        }
        let MysqlControl::Commands {
            pid_file: Some(f),
            start,
            ..
        } = &self.cfg.control
        else {
            return None;
        };
        let text = std::fs::read_to_string(f).ok()?;
        let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1)?;
        if !alive(pid) {
            return None;
        }
        let c = comm(pid);
        let program = start
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().chars().take(15).collect::<String>())
            .unwrap_or_default();
        if c.contains("mysqld") || c.contains("mariadbd") || (!program.is_empty() && c == program) {
            Some(pid)
        } else {
            tracing::warn!(resource = %self.name, pid, comm = %c, pid_file = %f.display(), "pid file names a process that is not the server; ignoring it");
            None
        }
    }

    /// The last bytes of the server's output and error log, for an error message.
    fn logs_tail(&self) -> String {
        let mut files = vec![self.out_log()];
        if let MysqlControl::Commands { start, .. } = &self.cfg.control {
            files.extend(error_log(start));
        }
        let mut parts = Vec::new();
        for f in files {
            if let Some(t) = tail(&f) {
                parts.push(format!("{}: {}", f.display(), t));
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("; log tail: {}", parts.join(" || "))
        }
    }

    async fn do_acquire(&self) -> StepResult {
        let started = Instant::now();
        match self.select1(self.probe_timeout()).await {
            Answer::Up => {
                tracing::info!(resource = %self.name, endpoint = %self.endpoint(), "server already answers SELECT 1");
                return Ok(());
            }
            Answer::Unusable(e) => return Err(e),
            Answer::Down(_) => {}
        }
        // Stop polling before the core's own step timeout, leaving time to clean up.
        let margin = (self.start_timeout / 5).min(Duration::from_secs(2));
        let deadline = started + self.start_timeout - margin;
        let spawned = match &self.cfg.control {
            MysqlControl::Unit(unit) => {
                let argv = exec::argv(&["systemctl", "start", unit]);
                tracing::info!(resource = %self.name, argv = %exec::show(&argv), "starting server unit");
                let left = deadline.saturating_duration_since(Instant::now());
                exec::run_with(self.runner.as_ref(), &argv, left).await?;
                None
            }
            MysqlControl::Commands { start, .. } => match self.server_pid() {
                // A second server on the same datadir would only wait on InnoDB's lock (and
                // then fail): a live server that does not answer yet (crash recovery, or
                // started before a twinbeat restart) is waited for instead.
                Some(pid) => {
                    tracing::warn!(resource = %self.name, pid, "a server process is already running but does not answer yet; waiting for it instead of starting another");
                    None
                }
                None => Some(self.spawn_detached(start)?),
            },
        };
        let mut last: String;
        loop {
            if let Some((pid, st)) = self.child_exit() {
                // A self-daemonizing start argv exits 0 while its server goes on starting.
                if !st.success() {
                    return Err(StepError::Failed(format!(
                        "mysql {}: the server (pid {pid}) exited with {} before answering \
                         SELECT 1{}; fix the start command or the server config",
                        self.name,
                        describe_status(st),
                        self.logs_tail()
                    )));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.select1(self.probe_timeout().min(left.max(POLL))).await {
                Answer::Up => {
                    tracing::info!(resource = %self.name, endpoint = %self.endpoint(), elapsed_ms = started.elapsed().as_millis() as u64, "server answers SELECT 1");
                    return Ok(());
                }
                Answer::Unusable(e) => return Err(e),
                Answer::Down(why) => last = why,
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // A server still starting when the step gives up must not come up later behind the
        // core's back: take it down again.
        let mut cleanup = String::new();
        if let Some(pid) = spawned.map(|p| p as i32).filter(|p| alive(*p)) {
            tracing::warn!(resource = %self.name, pid, "server did not answer in time; sending SIGTERM to the server it started");
            signal(-pid, libc::SIGTERM);
            if !wait_exit(pid, margin / 2).await {
                tracing::error!(resource = %self.name, pid, "server ignored SIGTERM; sending SIGKILL");
                signal(-pid, libc::SIGKILL);
                wait_exit(pid, margin / 2).await;
            }
            self.child_exit();
            cleanup = format!(" (the server it started, pid {pid}, was stopped)");
        }
        Err(StepError::Failed(format!(
            "mysql {}: the server did not answer SELECT 1 at {} within {} ms{cleanup}; last \
             error: {last}{}; check the server's log, or raise start-timeout-ms if crash \
             recovery needs longer",
            self.name,
            self.endpoint(),
            self.start_timeout.as_millis(),
            self.logs_tail()
        )))
    }

    async fn do_release(&self) -> StepResult {
        let started = Instant::now();
        let (stop, pid_file) = match &self.cfg.control {
            MysqlControl::Unit(unit) => {
                // systemctl stop is idempotent and owns its own escalation (TimeoutStopSec).
                let argv = exec::argv(&["systemctl", "stop", unit]);
                tracing::info!(resource = %self.name, argv = %exec::show(&argv), "stopping server unit");
                exec::run_with(self.runner.as_ref(), &argv, self.stop_timeout).await?;
                return Ok(());
            }
            MysqlControl::Commands { stop, pid_file, .. } => (stop, pid_file),
        };
        let pid = self.server_pid();
        let answers = !matches!(self.select1(self.probe_timeout()).await, Answer::Down(_));
        if pid.is_none() && !answers {
            tracing::info!(resource = %self.name, "server is not running");
            self.child_exit();
            return Ok(());
        }
        let margin = (self.stop_timeout / 5).min(Duration::from_secs(2));
        let kill_at = started + self.stop_timeout - margin;
        if !stop.is_empty() {
            tracing::info!(resource = %self.name, argv = %exec::show(stop), "stopping server");
            let left = kill_at.saturating_duration_since(Instant::now());
            if let Err(e) = exec::run_with(self.runner.as_ref(), stop, left).await {
                match pid {
                    Some(pid) => {
                        tracing::warn!(resource = %self.name, error = %e, pid, "stop command failed; sending SIGTERM instead");
                        signal(pid, libc::SIGTERM);
                    }
                    None => return Err(e.into()),
                }
            }
        } else if let Some(pid) = pid {
            tracing::info!(resource = %self.name, pid, "sending SIGTERM to the server");
            signal(pid, libc::SIGTERM);
        } else {
            return Err(StepError::Failed(format!(
                "mysql {}: the server answers at {} but there is no stop command and no live \
                 pid in {}; set `stop` or `pid-file`",
                self.name,
                self.endpoint(),
                pid_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(no pid-file)".into())
            )));
        }
        let Some(pid) = pid else {
            // Nothing to watch but the endpoint: wait until it stops answering.
            while Instant::now() < started + self.stop_timeout {
                if let Answer::Down(_) = self.select1(self.probe_timeout()).await {
                    tracing::info!(resource = %self.name, elapsed_ms = started.elapsed().as_millis() as u64, "server stopped answering");
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
            return Err(StepError::Failed(format!(
                "mysql {}: the server still answers at {} {} ms after the stop command; stop it \
                 by hand, and set `pid-file` so twinbeat can escalate",
                self.name,
                self.endpoint(),
                self.stop_timeout.as_millis()
            )));
        };
        if wait_exit(pid, kill_at.saturating_duration_since(Instant::now())).await {
            self.child_exit();
            tracing::info!(resource = %self.name, pid, elapsed_ms = started.elapsed().as_millis() as u64, "server stopped");
            return Ok(());
        }
        tracing::error!(
            resource = %self.name,
            pid,
            waited_ms = started.elapsed().as_millis() as u64,
            "server did not stop within the stop timeout; sending SIGKILL: the next start will run crash recovery"
        );
        signal(pid, libc::SIGKILL);
        if wait_exit(pid, margin.max(Duration::from_millis(500))).await {
            self.child_exit();
            return Ok(());
        }
        Err(StepError::Failed(format!(
            "mysql {}: the server (pid {pid}) survived SIGKILL for {} ms (stuck in I/O?); the \
             data filesystem cannot be released safely until it is gone",
            self.name,
            margin.as_millis()
        )))
    }

    async fn do_probe(&self) -> StepResult<bool> {
        match self.select1(self.probe_timeout()).await {
            Answer::Up => Ok(true),
            Answer::Down(why) => {
                tracing::debug!(resource = %self.name, reason = %why, "probe: server not answering");
                Ok(false)
            }
            Answer::Unusable(e) => Err(e),
        }
    }
}

impl Resource for Mysql {
    fn acquire(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(self.do_acquire())
    }
    fn release(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(self.do_release())
    }
    fn probe(&self) -> BoxFuture<'_, StepResult<bool>> {
        Box::pin(self.do_probe())
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; ESRCH for a process already gone is harmless.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        tracing::debug!(pid, sig, error = %std::io::Error::last_os_error(), "kill failed");
    }
}

/// Polls until `pid` has exited (or is a zombie); false when `limit` passes first.
async fn wait_exit(pid: i32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn describe_status(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => st.to_string(),
    }
}

/// The server's error log, when the start argv names it: `--log-error=PATH`, or `log-error` /
/// `log_error` in the `--defaults-file` (relative paths are under `datadir`).
pub fn error_log(start: &[String]) -> Option<PathBuf> {
    let flag = |name: &str| {
        start.iter().find_map(|a| {
            a.strip_prefix("--")
                .map(|a| a.replace('_', "-"))
                .and_then(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        })
    };
    let mut log = flag("log-error");
    let mut datadir = flag("datadir");
    if let Some(defaults) = flag("defaults-file") {
        if let Ok(text) = std::fs::read_to_string(defaults) {
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else {
                    continue;
                };
                let k = k.trim().replace('_', "-");
                let v = v.trim().trim_matches('"').to_string();
                if k == "log-error" && log.is_none() {
                    log = Some(v);
                } else if k == "datadir" && datadir.is_none() {
                    datadir = Some(v);
                }
            }
        }
    }
    let log = PathBuf::from(log.filter(|l| !l.is_empty())?);
    if log.is_absolute() {
        Some(log)
    } else {
        datadir.map(|d| Path::new(&d).join(log))
    }
}

/// The last few hundred bytes of a file on one line, or `None` if unreadable or empty.
fn tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let t = String::from_utf8_lossy(&buf).trim().replace('\n', " | ");
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_log_from_flag_or_defaults_file() {
        let argv = exec::argv(&["mariadbd", "--log-error=/var/log/e.err"]);
        assert_eq!(error_log(&argv), Some(PathBuf::from("/var/log/e.err")));
        let argv = exec::argv(&["mariadbd", "--log_error=e.err", "--datadir=/d"]);
        assert_eq!(error_log(&argv), Some(PathBuf::from("/d/e.err")));
        assert_eq!(error_log(&exec::argv(&["mariadbd"])), None);
        let dir = std::env::temp_dir().join(format!("twinbeat-elog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("my.cnf");
        std::fs::write(
            &f,
            "[mysqld]\nlog-basename=x\ndatadir = /srv/db\nlog_error = db.err\n",
        )
        .unwrap();
        let argv = vec![
            "mariadbd".to_string(),
            format!("--defaults-file={}", f.display()),
        ];
        assert_eq!(error_log(&argv), Some(PathBuf::from("/srv/db/db.err")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
