//! The `filesystem` resource kind: mount the replicated device on its directory, unmount it.
//!
//! Owns: `mount` / `umount` of exactly one device on exactly one directory, the check that what
//! is mounted there is that device (read from mountinfo, never from `mount`'s text output), and
//! stopping the processes that keep the filesystem busy on release. Must not touch: the device
//! itself (DRBD role, fsck), the directory's contents, or any other mount. It never unmounts
//! lazily (`umount -l`): a lazily detached filesystem stays open and writable by whoever held it,
//! and the peer then mounts a second live copy of the same disk — silent corruption.
//!
//! Mount state is read from `/proc/thread-self/mountinfo`: the mount namespace that matters is
//! the calling thread's (the one that spawns `mount`), which is the process's in the daemon and a
//! private per-thread namespace in the tests. Everything here runs on the calling thread for the
//! same reason (no `spawn_blocking`): another thread may live in another mount namespace.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Context, Resource, StepError, StepResult};
use crate::config;
use crate::exec::{self, BoxFuture, Runner};

/// Longest time release waits for SIGTERMed holders before it SIGKILLs them.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How often exits and mount state are polled while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Kill-and-retry rounds before release gives up on a busy filesystem.
const MAX_ROUNDS: u32 = 5;

pub struct Filesystem {
    name: String,
    device: PathBuf,
    directory: PathBuf,
    fstype: String,
    options: String,
    start_timeout: Duration,
    stop_timeout: Duration,
    runner: Arc<dyn Runner>,
}

impl Filesystem {
    pub fn new(r: &config::Resource, ctx: &Context) -> StepResult<Filesystem> {
        let config::ResourceKind::Filesystem {
            device,
            directory,
            fstype,
            options,
        } = &r.kind
        else {
            return Err(StepError::Failed(format!(
                "resource {} is a {} resource, not a filesystem",
                r.name,
                r.kind.name()
            )));
        };
        Ok(Filesystem {
            name: r.name.clone(),
            device: device.clone(),
            directory: directory.clone(),
            fstype: fstype.clone(),
            options: options.clone(),
            start_timeout: Duration::from_millis(r.start_timeout_ms),
            stop_timeout: Duration::from_millis(r.stop_timeout_ms),
            runner: ctx.runner.clone(),
        })
    }

    /// The directory as the kernel reports mount points (symlinks resolved); as configured if it
    /// does not exist (then nothing can be mounted on it either).
    fn mount_point(&self) -> PathBuf {
        std::fs::canonicalize(&self.directory).unwrap_or_else(|_| self.directory.clone())
    }

    /// What is mounted on the directory now (the top of the stack), if anything.
    fn current(&self) -> StepResult<Option<MountEntry>> {
        let text = read_mountinfo().map_err(|e| {
            StepError::Failed(format!(
                "filesystem {}: cannot read the mount table (/proc/thread-self/mountinfo): {e}; \
                 is /proc mounted?",
                self.name
            ))
        })?;
        let at = self.mount_point();
        Ok(parse_mountinfo(&text)
            .into_iter()
            .rev()
            .find(|m| m.mount_point == at))
    }

    /// Whether `m` is our device: same major:minor as the device node (robust to the symlinks
    /// DRBD and udev hand out), or failing that the same canonical path.
    fn is_ours(&self, m: &MountEntry) -> bool {
        if let Some((major, minor)) = device_number(&self.device) {
            if (m.major, m.minor) == (major, minor) {
                return true;
            }
        }
        let dev = std::fs::canonicalize(&self.device).unwrap_or_else(|_| self.device.clone());
        let src = std::fs::canonicalize(&m.source).unwrap_or_else(|_| PathBuf::from(&m.source));
        dev == src
    }

    fn mount_argv(&self) -> Vec<String> {
        let mut argv = vec!["mount".to_string(), "-t".to_string(), self.fstype.clone()];
        if !self.options.is_empty() {
            argv.push("-o".into());
            argv.push(self.options.clone());
        }
        argv.push(self.device.to_string_lossy().into_owned());
        argv.push(self.directory.to_string_lossy().into_owned());
        argv
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.device.display(), self.directory.display())
    }

    async fn do_acquire(&self) -> StepResult {
        if let Some(m) = self.current()? {
            if self.is_ours(&m) {
                tracing::info!(resource = %self.name, "{} is already mounted", self.describe());
                return Ok(());
            }
            return Err(StepError::Refused(format!(
                "filesystem {}: cannot mount {} on {}: {} ({}) is already mounted there; \
                 unmount it first or choose another directory",
                self.name,
                self.device.display(),
                self.directory.display(),
                m.source,
                m.fstype
            )));
        }
        // Clear messages for the two common config mistakes, before mount's own wording.
        match std::fs::metadata(&self.device) {
            Err(e) => {
                return Err(StepError::Failed(format!(
                    "filesystem {}: cannot mount {}: the device {}: {e}; check `device` \
                     (is the DRBD resource up and this node Primary?)",
                    self.name,
                    self.describe(),
                    self.device.display()
                )))
            }
            Ok(md) if !md.file_type().is_block_device() => {
                return Err(StepError::Failed(format!(
                    "filesystem {}: cannot mount {}: {} is not a block device; check `device`",
                    self.name,
                    self.describe(),
                    self.device.display()
                )))
            }
            Ok(_) => {}
        }
        if !self.directory.is_dir() {
            return Err(StepError::Failed(format!(
                "filesystem {}: cannot mount {}: the directory {} does not exist or is not a \
                 directory; create it on both nodes",
                self.name,
                self.describe(),
                self.directory.display()
            )));
        }
        let argv = self.mount_argv();
        tracing::info!(resource = %self.name, argv = %exec::show(&argv), "mounting");
        exec::run_with(self.runner.as_ref(), &argv, self.start_timeout).await?;
        // Trust the kernel's table, not mount's exit status alone.
        match self.current()? {
            Some(m) if self.is_ours(&m) => Ok(()),
            Some(m) => Err(StepError::Failed(format!(
                "filesystem {}: `{}` succeeded but {} shows {} mounted there; \
                 check for a concurrent mount",
                self.name,
                exec::show(&argv),
                self.directory.display(),
                m.source
            ))),
            None => Err(StepError::Failed(format!(
                "filesystem {}: `{}` succeeded but nothing is mounted on {} in this mount \
                 namespace; check that twinbeat and mount run in the same mount namespace",
                self.name,
                exec::show(&argv),
                self.directory.display()
            ))),
        }
    }

    async fn do_release(&self) -> StepResult {
        let deadline = Instant::now() + self.stop_timeout;
        match self.current()? {
            None => {
                tracing::info!(resource = %self.name, "{} is not mounted", self.describe());
                return Ok(());
            }
            Some(m) if !self.is_ours(&m) => {
                // Not ours to take away: someone else's filesystem stays put.
                tracing::warn!(
                    resource = %self.name,
                    "{} is not mounted; {} is mounted on the directory instead and is left alone",
                    self.describe(),
                    m.source
                );
                return Ok(());
            }
            Some(_) => {}
        }
        let argv = exec::argv(&["umount", &self.directory.to_string_lossy()]);
        let dir = self.mount_point();
        // Rounds, because a holder may have children that inherited its open files and only
        // show up once the parent is gone (a shell running `sleep`, a forking daemon).
        let mut round = 0u32;
        loop {
            let err = match self.umount(&argv, deadline).await {
                Ok(()) => return Ok(()),
                Err(e) if is_busy(&e) => e,
                Err(e) => return Err(e.into()),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let holders = holders_under(&dir);
            if left.is_zero() || round >= MAX_ROUNDS {
                return Err(self.still_busy(&err, &holders));
            }
            tracing::warn!(resource = %self.name, error = %err, holders = holders.len(), round, "filesystem busy; stopping the processes that hold it");
            if holders.is_empty() {
                // Nothing visible to stop: give whoever held it (an exiting process) a moment.
                tokio::time::sleep(POLL.max(left / 10).min(Duration::from_millis(500))).await;
            } else {
                // The first round gets the full grace; later rounds catch stragglers quickly.
                // Leave a third of what is left for SIGKILL and the next umount.
                let cap = if round == 0 {
                    TERM_GRACE
                } else {
                    Duration::from_secs(1)
                };
                stop_processes(&self.name, &holders, cap.min(left * 2 / 3)).await;
            }
            round += 1;
        }
    }

    fn still_busy(&self, err: &exec::ExecError, still: &[Holder]) -> StepError {
        StepError::Failed(format!(
            "filesystem {}: cannot unmount {}: {err}; still held by {}; stop them and \
             retry (twinbeat never unmounts lazily)",
            self.name,
            self.directory.display(),
            if still.is_empty() {
                "no process visible from here (another mount namespace, a bind mount, \
                 swap or a loop device?)"
                    .to_string()
            } else {
                still
                    .iter()
                    .map(|h| format!("{} ({}, {})", h.pid, h.comm, h.what))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    }

    async fn umount(&self, argv: &[String], deadline: Instant) -> Result<(), exec::ExecError> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        tracing::info!(resource = %self.name, argv = %exec::show(argv), "unmounting");
        exec::run_with(self.runner.as_ref(), argv, left).await?;
        Ok(())
    }

    async fn do_probe(&self) -> StepResult<bool> {
        Ok(matches!(self.current()?, Some(m) if self.is_ours(&m)))
    }
}

impl Resource for Filesystem {
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

fn is_busy(e: &exec::ExecError) -> bool {
    e.output().is_some_and(|o| {
        let text = format!("{}{}", o.stderr, o.stdout).to_ascii_lowercase();
        text.contains("busy")
    })
}

fn read_mountinfo() -> std::io::Result<String> {
    match std::fs::read_to_string("/proc/thread-self/mountinfo") {
        Ok(t) => Ok(t),
        // Kernels before 3.17 have no thread-self; there, threads share the namespace anyway.
        Err(_) => std::fs::read_to_string("/proc/self/mountinfo"),
    }
}

/// `st_rdev` of a device node as (major, minor); `None` when it is not a device node.
fn device_number(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    let ft = md.file_type();
    if !ft.is_block_device() && !ft.is_char_device() {
        return None;
    }
    let rdev = md.rdev();
    Some((libc::major(rdev), libc::minor(rdev)))
}

/// One line of `/proc/PID/mountinfo` (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u32,
    pub parent_id: u32,
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that forms this mount's root (`/` unless a bind mount).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: String,
    /// Tagged fields such as `shared:1`, `master:2`.
    pub optional: Vec<String>,
    pub fstype: String,
    /// The mount source as the kernel shows it (`/dev/loop3`, `tmpfs`, ...).
    pub source: String,
    pub super_options: String,
}

/// Parses a mountinfo table; lines that do not parse are skipped (the kernel writes this file,
/// so a bad line means a format this code does not know, not an attack).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// Parses one mountinfo line:
/// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
pub fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mut f = line.split(' ');
    let mount_id = f.next()?.parse().ok()?;
    let parent_id = f.next()?.parse().ok()?;
    let (major, minor) = f.next()?.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    let root = PathBuf::from(unescape(f.next()?));
    let mount_point = PathBuf::from(unescape(f.next()?));
    let mount_options = f.next()?.to_string();
    let mut optional = Vec::new();
    loop {
        match f.next()? {
            "-" => break,
            tag => optional.push(tag.to_string()),
        }
    }
    let fstype = unescape(f.next()?).to_string_lossy().into_owned();
    let source = unescape(f.next()?).to_string_lossy().into_owned();
    let super_options = f.next().unwrap_or("").to_string();
    Some(MountEntry {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional,
        fstype,
        source,
        super_options,
    })
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
fn unescape(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: &u8| (b'0'..=b'7').contains(c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(octal) {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

/// A process that keeps a path under a mount point in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub comm: String,
    /// What it holds, e.g. `cwd /srv/db/data`.
    pub what: String,
}

/// Processes whose cwd, root, open files or mapped files are under `dir`, found by walking
/// `/proc` (no `fuser`/`lsof` dependency). Never lists this process or PID 1: killing either to
/// free a mount would be worse than failing the release.
pub fn holders_under(dir: &Path) -> Vec<Holder> {
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == 1 || pid == me {
            continue;
        }
        if let Some(what) = holds(pid, dir) {
            found.push(Holder {
                pid,
                comm: comm(pid),
                what,
            });
        }
    }
    found
}

fn holds(pid: i32, dir: &Path) -> Option<String> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let under = |p: &Path| p.starts_with(dir);
    for link in ["cwd", "root"] {
        if let Ok(p) = std::fs::read_link(base.join(link)) {
            if under(&p) {
                return Some(format!("{link} {}", p.display()));
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
        for fd in fds.flatten() {
            if let Ok(p) = std::fs::read_link(fd.path()) {
                if under(&p) {
                    return Some(format!("open file {}", p.display()));
                }
            }
        }
    }
    if let Ok(maps) = std::fs::read(base.join("maps")) {
        for line in maps.split(|&c| c == b'\n') {
            // The path is the sixth field and starts with '/'; it may contain spaces.
            if let Some(pos) = line.iter().position(|&c| c == b'/') {
                let p = Path::new(std::ffi::OsStr::from_bytes(&line[pos..]));
                if under(p) {
                    return Some(format!("mapped file {}", p.display()));
                }
            }
        }
    }
    None
}

/// The process's command name (`/proc/PID/comm`), or `?` once it is gone.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Whether `pid` still runs. A zombie has released its files and counts as gone.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the ")" that closes the command name (which may contain spaces).
        Ok(s) => match s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => true,
        },
        Err(_) => false,
    }
}

fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) takes plain integers; a pid that has exited makes it fail with ESRCH.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// SIGTERM each holder, wait up to `grace` for them to exit, SIGKILL the rest and wait briefly.
async fn stop_processes(resource: &str, holders: &[Holder], grace: Duration) {
    for h in holders {
        tracing::warn!(resource, pid = h.pid, comm = %h.comm, holds = %h.what, "sending SIGTERM to a process holding the filesystem");
        signal(h.pid, libc::SIGTERM);
    }
    let gone = |hs: &[Holder]| hs.iter().all(|h| !alive(h.pid));
    let until = Instant::now() + grace;
    while !gone(holders) && Instant::now() < until {
        tokio::time::sleep(POLL).await;
    }
    let survivors: Vec<&Holder> = holders.iter().filter(|h| alive(h.pid)).collect();
    for h in &survivors {
        tracing::warn!(resource, pid = h.pid, comm = %h.comm, grace_ms = grace.as_millis() as u64, "still running after SIGTERM; sending SIGKILL");
        signal(h.pid, libc::SIGKILL);
    }
    // SIGKILL cannot be ignored, but a process in uninterruptible I/O takes a moment to die.
    let until = Instant::now() + Duration::from_secs(2);
    while survivors.iter().any(|h| alive(h.pid)) && Instant::now() < until {
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_plain_line() {
        let m = parse_mountinfo_line(
            "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .expect("parses");
        assert_eq!(m.mount_id, 36);
        assert_eq!(m.parent_id, 35);
        assert_eq!((m.major, m.minor), (98, 0));
        assert_eq!(m.root, PathBuf::from("/mnt1"));
        assert_eq!(m.mount_point, PathBuf::from("/mnt/parent"));
        assert_eq!(m.mount_options, "rw,noatime");
        assert_eq!(m.optional, vec!["master:1".to_string()]);
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_options, "rw,errors=continue");
    }

    #[test]
    fn no_and_many_optional_fields() {
        let m = parse_mountinfo_line("22 1 0:21 / /proc rw - proc proc rw").expect("parses");
        assert!(m.optional.is_empty());
        assert_eq!(m.fstype, "proc");
        let m = parse_mountinfo_line(
            "40 22 7:3 / /srv/db rw shared:5 master:2 propagate_from:1 unbindable - ext4 /dev/loop3 rw",
        )
        .expect("parses");
        assert_eq!(m.optional.len(), 4);
        assert_eq!(m.source, "/dev/loop3");
        assert_eq!((m.major, m.minor), (7, 3));
    }

    #[test]
    fn unescapes_spaces_tabs_and_backslashes() {
        let m = parse_mountinfo_line(
            r"50 22 7:1 / /mnt/my\040disk\011x\134y rw - ext4 /dev/disk/by-label/a\040b rw",
        )
        .expect("parses");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my disk\tx\\y"));
        assert_eq!(m.source, "/dev/disk/by-label/a b");
    }

    #[test]
    fn bad_lines_are_skipped_not_fatal() {
        let text = "garbage\n\n1 2 x:y / / rw - a b c\n3 4 8:1 / /a rw no-separator\n\
                    5 6 8:1 / /b rw - ext4 /dev/sda1 rw\n";
        let all = parse_mountinfo(text);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].mount_point, PathBuf::from("/b"));
        // A trailing backslash or a short escape is kept as it is.
        assert_eq!(unescape(r"a\04"), OsString::from(r"a\04"));
        assert_eq!(unescape("a\\"), OsString::from("a\\"));
        // \777 does not fit a byte: kept verbatim.
        assert_eq!(unescape(r"\777"), OsString::from(r"\777"));
    }

    #[test]
    fn our_own_mount_table_parses() {
        let text = read_mountinfo().expect("mountinfo");
        let all = parse_mountinfo(&text);
        assert_eq!(all.len(), text.lines().count());
        assert!(all.iter().any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn this_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX));
    }
}
