//! Running external commands: the only way twinbeat starts a process.
//!
//! Every command is an argv (never `sh -c` on config strings), runs with stdin from /dev/null in
//! its own process group, is logged with its argv, result and elapsed time, and is killed (the
//! whole group) when it outlives its timeout or when the future running it is dropped. A failure
//! carries the tail of stdout/stderr, so the error names what the command itself said.
//!
//! `Runner` abstracts "run this argv" so executors can be tested against recorded output.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// Bytes of stdout/stderr kept for errors and parsing; a chatty command cannot eat memory.
const KEEP_BYTES: usize = 64 * 1024;
/// Bytes of output quoted in an error message.
const TAIL_BYTES: usize = 400;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty command: nothing to run")]
    EmptyArgv,
    #[error("cannot run `{argv}`: {source}; check that the program is installed and executable")]
    Spawn {
        argv: String,
        source: std::io::Error,
    },
    #[error("`{argv}` timed out after {timeout_ms} ms and was killed with its process group")]
    Timeout { argv: String, timeout_ms: u128 },
    #[error("`{argv}` {how}{tail}")]
    Failed {
        argv: String,
        how: String,
        output: Box<Output>,
        tail: String,
    },
    #[error("cannot read the output of `{argv}`: {source}")]
    Io {
        argv: String,
        source: std::io::Error,
    },
}

impl ExecError {
    /// The command's output when it ran to completion with a failure status.
    pub fn output(&self) -> Option<&Output> {
        match self {
            ExecError::Failed { output, .. } => Some(output.as_ref()),
            _ => None,
        }
    }
}

/// Runs `argv` with a timeout; `Ok` for any exit status (callers that care use `run`).
pub async fn output(argv: &[String], timeout: Duration) -> Result<Output, ExecError> {
    output_logged(argv, timeout, false).await
}

/// `output` for commands repeated every second or so (probes, tie-breaker pings): logged at
/// debug level, so the log keeps the actions that change something.
pub async fn output_quiet(argv: &[String], timeout: Duration) -> Result<Output, ExecError> {
    output_logged(argv, timeout, true).await
}

async fn output_logged(
    argv: &[String],
    timeout: Duration,
    quiet: bool,
) -> Result<Output, ExecError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ExecError::EmptyArgv);
    };
    let shown = show(argv);
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| {
        tracing::warn!(argv = %shown, error = %source, "cannot start command");
        ExecError::Spawn {
            argv: shown.clone(),
            source,
        }
    })?;
    let pgid = child.id();
    // Whatever happens to this future, the process group goes with it.
    let _group = KillGroup(pgid);
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let work = async {
        let (o, e, status) =
            tokio::join!(read_capped(&mut out), read_capped(&mut err), child.wait());
        Ok::<_, std::io::Error>((o?, e?, status?))
    };
    let result = tokio::time::timeout(timeout, work).await;
    let elapsed = started.elapsed();
    match result {
        Err(_) => {
            tracing::warn!(argv = %shown, timeout_ms = timeout.as_millis(), "command timed out; killed");
            Err(ExecError::Timeout {
                argv: shown,
                timeout_ms: timeout.as_millis(),
            })
        }
        Ok(Err(source)) => Err(ExecError::Io {
            argv: shown,
            source,
        }),
        Ok(Ok((stdout, stderr, status))) => {
            let o = Output {
                code: status.code(),
                stdout,
                stderr,
                elapsed,
            };
            let elapsed_ms = elapsed.as_millis() as u64;
            if quiet {
                tracing::debug!(argv = %shown, code = ?o.code, elapsed_ms, "ran command");
            } else {
                tracing::info!(argv = %shown, code = ?o.code, elapsed_ms, "ran command");
            }
            Ok(o)
        }
    }
}

/// Runs `argv` with a timeout; a non-zero exit is an error carrying the output's tail.
pub async fn run(argv: &[String], timeout: Duration) -> Result<Output, ExecError> {
    let o = output(argv, timeout).await?;
    if o.success() {
        return Ok(o);
    }
    Err(failed(argv, o))
}

/// The error for a command that ran and reported failure.
pub fn failed(argv: &[String], o: Output) -> ExecError {
    let how = match o.code {
        Some(c) => format!("exited with status {c}"),
        None => "was killed by a signal".to_string(),
    };
    let tail = tail_of(&o);
    ExecError::Failed {
        argv: show(argv),
        how,
        output: Box::new(o),
        tail,
    }
}

fn tail_of(o: &Output) -> String {
    let pick = if o.stderr.trim().is_empty() {
        &o.stdout
    } else {
        &o.stderr
    };
    let t = pick.trim();
    if t.is_empty() {
        return String::new();
    }
    let start = t.len().saturating_sub(TAIL_BYTES);
    let start = (start..=t.len())
        .find(|&i| t.is_char_boundary(i))
        .unwrap_or(t.len());
    format!(": {}", t[start..].replace('\n', " | "))
}

/// An argv as a person would type it, for logs and errors.
pub fn show(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        // Keep the newest bytes: the end of the output is where the error usually is.
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > KEEP_BYTES {
            kept.drain(..kept.len() - KEEP_BYTES);
        }
    }
    Ok(String::from_utf8_lossy(&kept).into_owned())
}

struct KillGroup(Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals the process group we created with
            // process_group(0); a group that already exited makes it fail with ESRCH, harmlessly.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs commands. The real one is `SystemRunner`; tests substitute recorded answers.
pub trait Runner: Send + Sync {
    fn output<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Output, ExecError>>;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn output<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(output(argv, timeout))
    }
}

/// `run` through a `Runner`: a non-zero exit is an error.
pub async fn run_with(
    runner: &dyn Runner,
    argv: &[String],
    timeout: Duration,
) -> Result<Output, ExecError> {
    let o = runner.output(argv, timeout).await?;
    if o.success() {
        Ok(o)
    } else {
        Err(failed(argv, o))
    }
}

/// Builds an argv from string slices.
pub fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}
