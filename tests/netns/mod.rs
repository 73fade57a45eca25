//! A throwaway network-namespace lab for end-to-end tests of the daemon.
//!
//! Topology (documentation ranges only):
//!   a ──hb0── b            dedicated heartbeat link, 192.0.2.1 / 192.0.2.2
//!   a, b, c ──lan0── br0   a LAN bridge in its own namespace, 198.51.100.11 / .12 / .20
//! Everything it creates (namespaces, the daemons it started, the temp dir) is removed when it
//! is dropped, also when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use twinbeat::shell::control::{self, DaemonStatus, Request, Response};

pub const VIP: &str = "198.51.100.100";
pub const LAN: [&str; 3] = ["198.51.100.11", "198.51.100.12", "198.51.100.20"];
pub const HB: [&str; 2] = ["192.0.2.1", "192.0.2.2"];

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    namespaces: Vec<String>,
    daemons: [Option<Child>; 2],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let prefix = format!("tb{tag}{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("twinbeat-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut lab = Lab {
            namespaces: Vec::new(),
            prefix,
            dir,
            daemons: [None, None],
        };
        lab.build();
        lab
    }

    pub fn ns(&self, who: &str) -> String {
        format!("{}-{who}", self.prefix)
    }

    fn build(&mut self) {
        for who in ["a", "b", "c", "br"] {
            let n = self.ns(who);
            ip(&["netns", "add", &n]);
            self.namespaces.push(n.clone());
            ip(&["-n", &n, "link", "set", "lo", "up"]);
        }
        let br = self.ns("br");
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, who) in ["a", "b", "c"].iter().enumerate() {
            let n = self.ns(who);
            let port = format!("{who}-lan");
            ip(&[
                "link", "add", "lan0", "netns", &n, "type", "veth", "peer", "name", &port, "netns",
                &br,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &n,
                "addr",
                "add",
                &format!("{}/24", LAN[i]),
                "dev",
                "lan0",
            ]);
            ip(&["-n", &n, "link", "set", "lan0", "up"]);
        }
        let (a, b) = (self.ns("a"), self.ns("b"));
        ip(&[
            "link", "add", "hb0", "netns", &a, "type", "veth", "peer", "name", "hb0", "netns", &b,
        ]);
        for (i, n) in [&a, &b].iter().enumerate() {
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", HB[i]),
                "dev",
                "hb0",
            ]);
            ip(&["-n", n, "link", "set", "hb0", "up"]);
        }
    }

    /// Writes a key file and one config per node (they differ only in local paths).
    pub fn write_configs(&self, extra: &str) {
        self.write_configs_timed(1_000, extra);
    }

    /// As `write_configs`, with this deadtime (warntime is half of it).
    pub fn write_configs_timed(&self, deadtime_ms: u64, extra: &str) {
        self.write_configs_with(deadtime_ms, "", extra);
    }

    /// As `write_configs_timed`, with `[[resource]]` tables (`before_vip`, per node: `{who}`
    /// is replaced by a or b) taken over before the VIP.
    pub fn write_configs_with(&self, deadtime_ms: u64, before_vip: &str, extra: &str) {
        let key = self.dir.join("authkey");
        std::fs::write(&key, "1 0123456789abcdef0123456789abcdef\n").expect("key");
        set_mode(&key, 0o600);
        for (i, who) in ["a", "b"].iter().enumerate() {
            let _ = i;
            let cfg = format!(
                r#"
[cluster]
name = "lab"
id = 7

[[node]]
name = "tb-a"
id = 1

[[node]]
name = "tb-b"
id = 2

[[link]]
name = "hb"
interface = "hb0"
address = {{ tb-a = "{hb_a}", tb-b = "{hb_b}" }}

[[link]]
name = "lan"
interface = "lan0"
address = {{ tb-a = "{lan_a}", tb-b = "{lan_b}" }}

[timing]
keepalive-ms = 200
warntime-ms = {warn}
deadtime-ms = {deadtime_ms}
initdead-ms = {initdead}

[auth]
key-file = "{key}"
keys = [1]

{before}
[[resource]]
name = "vip"
kind = "vip"
address = "{VIP}/24"
interface = "lan0"

[daemon]
state-dir = "{dir}/state-{who}"
control-socket = "{dir}/control-{who}.sock"
{extra}
"#,
                hb_a = HB[0],
                hb_b = HB[1],
                lan_a = LAN[0],
                lan_b = LAN[1],
                key = key.display(),
                dir = self.dir.display(),
                warn = deadtime_ms / 2,
                initdead = deadtime_ms.max(2_000),
                before = before_vip.replace("{who}", who),
            );
            std::fs::write(self.config(who), cfg).expect("config");
        }
    }

    pub fn config(&self, who: &str) -> PathBuf {
        self.dir.join(format!("twinbeat-{who}.toml"))
    }

    pub fn socket(&self, who: &str) -> PathBuf {
        self.dir.join(format!("control-{who}.sock"))
    }

    fn index(who: &str) -> usize {
        if who == "a" {
            0
        } else {
            1
        }
    }

    /// Starts `twinbeat run` for node `who` inside its network namespace.
    pub fn start(&mut self, who: &str) {
        self.start_with_env(who, &[]);
    }

    /// As `start`, with extra environment for the daemon (e.g. a PATH with stand-ins first).
    pub fn start_with_env(&mut self, who: &str, env: &[(&str, String)]) {
        let i = Lab::index(who);
        assert!(self.daemons[i].is_none(), "daemon {who} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("daemon-{who}.log")))
            .expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(who)))
            .arg(env!("CARGO_BIN_EXE_twinbeat"))
            .args(["run", "--config"])
            .arg(self.config(who))
            .args(["--node", &format!("tb-{who}")])
            .env("TWINBEAT_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nsenter starts the daemon");
        self.daemons[i] = Some(child);
        self.wait_for(
            &format!("daemon {who} answering"),
            Duration::from_secs(10),
            |l| l.status(who).is_some(),
        );
    }

    /// Sends `sig` to node `who`'s daemon.
    pub fn signal(&self, who: &str, sig: i32) {
        let c = self.daemons[Lab::index(who)]
            .as_ref()
            .expect("daemon running");
        // SAFETY: kill(2) on the pid of a child this lab started and has not reaped yet.
        unsafe {
            libc::kill(c.id() as i32, sig);
        }
    }

    /// kill -9 of the daemon only: whatever it configured stays in place.
    pub fn kill9(&mut self, who: &str) {
        if let Some(mut c) = self.daemons[Lab::index(who)].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns the exit code.
    pub fn stop(&mut self, who: &str, within: Duration) -> Option<i32> {
        let mut c = self.daemons[Lab::index(who)].take()?;
        // SAFETY: kill(2) on the pid of a child this lab started and has not reaped yet.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!(
            "daemon {who} did not exit within {within:?} of SIGTERM; log:\n{}",
            self.log(who)
        );
    }

    pub fn log(&self, who: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("daemon-{who}.log"))).unwrap_or_default()
    }

    pub fn status(&self, who: &str) -> Option<DaemonStatus> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        match rt.block_on(control::request(
            &self.socket(who),
            Request::Status,
            Duration::from_secs(2),
        )) {
            Ok(Response::Status(s)) => Some(*s),
            _ => None,
        }
    }

    /// Polls `cond` every 50 ms until it holds; panics with `what` otherwise (and the lab's
    /// drop prints both logs).
    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl Fn(&Lab) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out after {limit:?} waiting for: {what} (the daemons' logs follow)");
    }

    /// Runs a command inside a namespace (network only).
    pub fn run_in(&self, who: &str, argv: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(who)))
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs")
    }

    pub fn has_vip(&self, who: &str) -> bool {
        let out = self.run_in(who, &["ip", "-o", "-4", "addr", "show", "dev", "lan0"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/24"))
    }

    pub fn mac(&self, who: &str) -> String {
        // Not /sys: nsenter --net keeps the host's sysfs mount, which shows the host's links.
        let out = self.run_in(who, &["ip", "-o", "link", "show", "dev", "lan0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "link/ether" {
                return words.next().unwrap_or_default().to_string();
            }
        }
        String::new()
    }

    /// The MAC that node c's neighbour table holds for the VIP, if any.
    pub fn c_neighbour_for_vip(&self) -> Option<String> {
        let out = self.run_in("c", &["ip", "neigh", "show", VIP, "dev", "lan0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_string);
            }
        }
        None
    }

    pub fn c_can_ping_vip(&self) -> bool {
        self.run_in("c", &["ping", "-n", "-q", "-c", "1", "-W", "1", VIP])
            .status
            .success()
    }

    /// Runs `f` on a thread that has entered `who`'s network namespace.
    pub fn in_netns<T: Send + 'static>(
        &self,
        who: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.ns(who));
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("netns file");
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failed assertion elsewhere than wait_for would otherwise lose the daemons' own
        // account of what happened with the lab's folder.
        if std::thread::panicking() {
            for who in ["a", "b"] {
                eprintln!("---- daemon {who} log ----\n{}", self.log(who));
            }
        }
        for n in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
