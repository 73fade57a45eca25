//! The running lab as `lab/lib.sh` lays it out: names, paths, and small probes of its state.
//! Every command runs under `timeout`, so a hung tool cannot hang a scenario.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const RUN: &str = "/run/twinbeat-lab";
pub const VIP: &str = "198.51.100.100";
pub const WRITER_PASS: &str = "writer-lab-secret";
pub const NODES: [Node; 2] = [Node::A, Node::B];
/// The witness's address (lab/lib.sh LAN_W), in namespace tblab-w, when the lab has one.
pub const WITNESS: &str = "198.51.100.40";

/// The lab was brought up with a witness (LAB_WITNESS=1): demo.sh wrote its config.
pub fn has_witness() -> bool {
    Path::new(RUN).join("conf/witness.toml").exists()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    pub fn letter(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }
    pub fn other(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }
    pub fn ns(self) -> String {
        format!("tblab-{}", self.letter())
    }
    pub fn dir(self) -> PathBuf {
        Path::new(RUN).join(format!("node-{}", self.letter()))
    }
    pub fn socket(self) -> PathBuf {
        self.dir().join("control.sock")
    }
    pub fn mysqld_socket(self) -> PathBuf {
        self.dir().join("mysqld.sock")
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.letter())
    }
}

#[derive(Clone)]
pub struct Lab {
    pub lab: PathBuf,
    pub logs: PathBuf,
    pub twinbeat: PathBuf,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        // Built in place (lab/runner), so the lab directory is known at compile time.
        let lab = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("lab/runner has no parent")?
            .to_path_buf();
        let repo = lab.parent().context("lab has no parent")?;
        let l = Lab {
            logs: lab.join("build/logs"),
            twinbeat: repo.join("target/release/twinbeat"),
            lab,
        };
        if !Path::new(RUN).is_dir() {
            bail!("the lab is not up ({RUN} missing); bring it up with: sudo lab/demo.sh");
        }
        Ok(l)
    }

    pub fn daemon_log(&self, n: Node) -> PathBuf {
        self.logs.join(format!("twinbeat-{n}.log"))
    }

    /// `twinbeat status --json` of that node; None when it does not answer.
    pub fn status(&self, n: Node) -> Option<Value> {
        let sock = n.socket();
        let out = run_quiet(
            &[
                self.twinbeat.to_str()?,
                "status",
                "--json",
                "--socket",
                sock.to_str()?,
            ],
            5,
        )
        .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn state(&self, n: Node) -> Option<String> {
        self.status(n)
            .and_then(|s| s["core"]["state"].as_str().map(str::to_string))
    }

    /// The operator commands, as an operator types them.
    pub fn twinbeat_cmd(&self, n: Node, verb: &str) -> Result<Output> {
        let sock = n.socket();
        run_quiet(
            &[
                self.twinbeat.to_str().context("path")?,
                verb,
                "--socket",
                sock.to_str().context("path")?,
            ],
            120,
        )
    }

    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
        let ctl = self.lab.join("ctl.sh");
        let mut argv = vec![ctl.to_str().context("path")?];
        argv.extend_from_slice(args);
        let out = run_quiet(&argv, 60)?;
        if !out.status.success() {
            bail!(
                "lab/ctl.sh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    pub fn holds_vip(&self, n: Node) -> bool {
        let ns = n.ns();
        run_quiet(
            &["ip", "-n", &ns, "-o", "-4", "addr", "show", "dev", "lan0"],
            5,
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {VIP}/")))
        .unwrap_or(false)
    }

    pub fn daemon_pid(&self, n: Node) -> Option<i32> {
        pid_from(&n.dir().join("twinbeat.pid"), "twinbeat")
    }
    pub fn mysqld_pid(&self, n: Node) -> Option<i32> {
        pid_from(&n.dir().join("mysqld.pid"), "mariadbd")
    }

    /// A command inside a node's network namespace and the lab's shared mount namespace.
    pub fn in_node(&self, n: Node, argv: &[&str]) -> Result<Output> {
        let net = format!("--net=/run/netns/{}", n.ns());
        let mnt = format!("--mount={RUN}/mnt-ns");
        let mut full = vec!["nsenter", &net, &mnt];
        full.extend_from_slice(argv);
        run_quiet(&full, 30)
    }

    /// A query through the VIP from the client namespace, as the client's user.
    pub fn sql_vip(&self, sql: &str) -> Result<String> {
        let pw = format!("-p{WRITER_PASS}");
        let out = run_quiet(
            &[
                "nsenter",
                "--net=/run/netns/tblab-c",
                "mariadb",
                "-h",
                VIP,
                "-u",
                "writer",
                &pw,
                "--connect-timeout=2",
                "-N",
                "-B",
                "-e",
                sql,
            ],
            30,
        )?;
        ok_stdout(out, "query through the VIP")
    }

    /// A query on the replica over its local socket, as root.
    pub fn sql_replica(&self, sql: &str) -> Result<String> {
        ok_stdout(
            replica_query(&["-N", "-B", "-e", sql])?,
            "query on the replica",
        )
    }
}

/// The mariadb client on the replica's local socket, as root, with these arguments.
pub fn replica_query(args: &[&str]) -> Result<Output> {
    let sock = format!("{RUN}/replica/mysqld.sock");
    let mut argv = vec!["mariadb", "-S", &sock, "-u", "root", "--connect-timeout=2"];
    argv.extend_from_slice(args);
    run_quiet(&argv, 30)
}

fn ok_stdout(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid in a pid file, if it names a live (non-zombie) process with that comm: a stale pid
/// may have been reused by an unrelated process, which we must never signal.
pub fn pid_from(file: &Path, comm: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    alive_with_comm(pid, comm).then_some(pid)
}

pub fn alive_with_comm(pid: i32, comm: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": comm may hold spaces, so split at the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    &stat[open + 1..close] == comm && state != "Z"
}

/// Runs argv bounded by `timeout SECS` (SIGKILL 2 s later), stdin closed, output captured.
pub fn run_quiet(argv: &[&str], secs: u64) -> Result<Output> {
    let s = secs.to_string();
    Command::new("timeout")
        .args(["-k", "2", &s])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", argv.join(" ")))
}

/// Like run_quiet, but a non-zero exit is an error that quotes stderr.
pub fn run_ok(argv: &[&str], secs: u64) -> Result<()> {
    let out = run_quiet(argv, secs)?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// run_ok inside node `n`'s network namespace.
pub fn run_in_netns(n: Node, argv: &[&str], secs: u64) -> Result<()> {
    let net = format!("--net=/run/netns/{}", n.ns());
    let mut full = vec!["nsenter", &net];
    full.extend_from_slice(argv);
    run_ok(&full, secs)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls `f` every 50 ms until it holds; after `limit` fails with what was awaited.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!(
                "timed out after {:.1} s waiting for: {what}",
                limit.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
