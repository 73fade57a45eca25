//! Helpers for the resource tests that touch the real system: temp dirs, loop devices, a private
//! mount namespace per test thread. Every helper is a guard that cleans up in `Drop`, so a failing
//! assertion still leaves the host as it was.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A path under cargo's scratch folder for integration tests that nothing else uses: unique per
/// call, not per process, because the tests of one binary are threads of one process and two of
/// them sharing a folder read each other's half-written files. The folder does not exist yet.
pub fn scratch_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "twinbeat-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A key file (mode 0600, as `twinbeat check` demands) holding `text`, in a folder of its own.
pub fn key_file(tag: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_path(tag);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join("authkey");
    std::fs::write(&path, text).expect("write key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// A fresh directory under the system temp dir, removed (recursively) on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "twinbeat-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Moves the calling thread (each libtest test runs on its own thread) into a private mount
/// namespace with private propagation, so any mount the test makes, or leaves behind on
/// failure, is invisible to the host and disappears with the thread.
pub fn private_mount_namespace() {
    // SAFETY: unshare/mount with constant, valid arguments; CLONE_NEWNS on one thread of a
    // multi-threaded process is allowed (it unshares that thread's fs_struct too).
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "unshare(CLONE_NEWNS): {}",
            std::io::Error::last_os_error()
        );
        let root = c"/";
        let none = c"none";
        assert_eq!(
            libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0,
            "make / rprivate: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// An ext4 image attached to a fresh loop device; detached on drop (after unmounting anything
/// still mounted from it in this namespace).
pub struct LoopDevice {
    pub device: PathBuf,
    pub image: PathBuf,
}

impl LoopDevice {
    pub fn ext4(dir: &Path, name: &str) -> LoopDevice {
        let image = dir.join(format!("{name}.img"));
        sh(&["truncate", "-s", "64M", image.to_str().expect("utf-8")]);
        sh(&["mkfs.ext4", "-q", "-F", image.to_str().expect("utf-8")]);
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup -f --show {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        LoopDevice { device, image }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // A mount left by a failed test would keep the loop device busy: unmount first. In the
        // private namespace this only affects the test's own view.
        if let Ok(text) = std::fs::read_to_string("/proc/thread-self/mountinfo") {
            for m in twinbeat::resources::filesystem::parse_mountinfo(&text)
                .into_iter()
                .rev()
            {
                if Path::new(&m.source) == self.device {
                    let _ = Command::new("umount").arg(&m.mount_point).status();
                }
            }
        }
        // If still busy, -d marks it autoclear: the kernel detaches it at the last close.
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A child process killed and reaped on drop (if still running).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sh(argv: &[&str]) {
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(st.success(), "{argv:?} failed: {st}");
}

/// Polls `f` until it is true or `limit` passes; false on timeout.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
