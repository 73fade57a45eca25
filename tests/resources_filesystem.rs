//! `filesystem` against real ext4 images on real loop devices (needs root).
//!
//! Each test moves its own thread into a private mount namespace first (`unshare(CLONE_NEWNS)`,
//! then `/` made rprivate), so nothing it mounts is visible on the host, and a failed test
//! cannot leave a mount behind: the namespace dies with the thread. Loop devices and temp dirs are
//! global, so guards detach and remove them on drop.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{private_mount_namespace, rt, wait_until, ChildGuard, LoopDevice, TempDir};
use twinbeat::config::{Resource as ResourceConfig, ResourceKind};
use twinbeat::resources::filesystem::{self, Filesystem};
use twinbeat::resources::{Context, Resource, StepError};

fn config(device: &Path, directory: &Path, options: &str) -> ResourceConfig {
    ResourceConfig {
        name: "data".into(),
        start_timeout_ms: 10_000,
        stop_timeout_ms: 10_000,
        kind: ResourceKind::Filesystem {
            device: device.to_path_buf(),
            directory: directory.to_path_buf(),
            fstype: "ext4".into(),
            options: options.into(),
        },
    }
}

fn fs(device: &Path, directory: &Path) -> Filesystem {
    Filesystem::new(&config(device, directory, "noatime"), &Context::system()).expect("new")
}

/// Skips (loudly) when not root: loop devices and mounts need CAP_SYS_ADMIN.
fn root_or_skip(test: &str) -> bool {
    if support::is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (loop devices, mount namespaces)");
    false
}

fn mounted_source(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    let dir = std::fs::canonicalize(dir).ok()?;
    filesystem::parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == dir)
        .map(|m| m.source)
}

#[test]
fn mount_is_idempotent_probed_and_unmounted() {
    if !root_or_skip("mount_is_idempotent_probed_and_unmounted") {
        return;
    }
    private_mount_namespace();
    let tmp = TempDir::new("fs");
    let lo = LoopDevice::ext4(tmp.path(), "a");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mkdir");
    let r = fs(&lo.device, &dir);
    let rt = rt();

    assert!(!rt.block_on(r.probe()).expect("probe"));
    let t = Instant::now();
    rt.block_on(r.acquire()).expect("mount");
    eprintln!("mount took {} ms", t.elapsed().as_millis());
    assert_eq!(mounted_source(&dir).as_deref(), lo.device.to_str());
    assert!(rt.block_on(r.probe()).expect("probe"));
    // Again: already mounted with the same device is success, and mounts nothing more.
    rt.block_on(r.acquire()).expect("second acquire is a no-op");
    let text = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
    let canon = std::fs::canonicalize(&dir).expect("canon");
    let n = filesystem::parse_mountinfo(&text)
        .iter()
        .filter(|m| m.mount_point == canon)
        .count();
    assert_eq!(n, 1, "exactly one mount on the directory");

    std::fs::write(dir.join("file"), b"data").expect("write into the mount");
    let t = Instant::now();
    rt.block_on(r.release()).expect("umount");
    eprintln!("umount took {} ms", t.elapsed().as_millis());
    assert_eq!(mounted_source(&dir), None);
    assert!(
        !dir.join("file").exists(),
        "the file lives on the fs, not the dir"
    );
    assert!(!rt.block_on(r.probe()).expect("probe"));
    rt.block_on(r.release()).expect("second release is a no-op");
}

#[test]
fn a_symlinked_device_counts_as_the_same_device() {
    if !root_or_skip("a_symlinked_device_counts_as_the_same_device") {
        return;
    }
    private_mount_namespace();
    let tmp = TempDir::new("fs");
    let lo = LoopDevice::ext4(tmp.path(), "a");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mkdir");
    // Like /dev/drbd/by-res/r0/0 -> ../../drbd0: the config names a symlink, mountinfo the node.
    let link = tmp.path().join("by-res-r0-0");
    std::os::unix::fs::symlink(&lo.device, &link).expect("symlink");
    let r = fs(&link, &dir);
    let rt = rt();
    rt.block_on(r.acquire()).expect("mount through the symlink");
    assert!(rt.block_on(r.probe()).expect("probe"));
    rt.block_on(r.acquire())
        .expect("idempotent through the symlink");
    rt.block_on(r.release()).expect("umount");
    assert_eq!(mounted_source(&dir), None);
}

#[test]
fn another_filesystem_on_the_directory_is_refused() {
    if !root_or_skip("another_filesystem_on_the_directory_is_refused") {
        return;
    }
    private_mount_namespace();
    let tmp = TempDir::new("fs");
    let a = LoopDevice::ext4(tmp.path(), "a");
    let b = LoopDevice::ext4(tmp.path(), "b");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mkdir");
    let rt = rt();
    let other = fs(&b.device, &dir);
    rt.block_on(other.acquire()).expect("mount b");

    let r = fs(&a.device, &dir);
    let e = rt
        .block_on(r.acquire())
        .expect_err("a cannot go on top of b");
    let msg = e.to_string();
    assert!(matches!(e, StepError::Refused(_)), "{msg}");
    assert!(msg.contains(a.device.to_str().unwrap()), "{msg}");
    assert!(msg.contains(b.device.to_str().unwrap()), "{msg}");
    assert!(!rt.block_on(r.probe()).expect("probe"));
    // Releasing `a` must leave `b` alone.
    rt.block_on(r.release())
        .expect("release of what is not mounted");
    assert_eq!(mounted_source(&dir).as_deref(), b.device.to_str());
    rt.block_on(other.release()).expect("umount b");
}

#[test]
fn a_missing_device_or_directory_gives_a_clear_error() {
    if !root_or_skip("a_missing_device_or_directory_gives_a_clear_error") {
        return;
    }
    private_mount_namespace();
    let tmp = TempDir::new("fs");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mkdir");
    let rt = rt();
    let r = fs(Path::new("/dev/twinbeat-no-such-device"), &dir);
    let msg = rt.block_on(r.acquire()).expect_err("no device").to_string();
    assert!(msg.contains("/dev/twinbeat-no-such-device"), "{msg}");
    assert!(msg.contains("check `device`"), "{msg}");
    assert!(!rt.block_on(r.probe()).expect("probe"));

    let lo = LoopDevice::ext4(tmp.path(), "a");
    let r = fs(&lo.device, &tmp.path().join("nowhere"));
    let msg = rt
        .block_on(r.acquire())
        .expect_err("no directory")
        .to_string();
    assert!(
        msg.contains("nowhere") && msg.contains("does not exist"),
        "{msg}"
    );
}

#[test]
fn a_mount_failure_carries_mounts_own_words() {
    if !root_or_skip("a_mount_failure_carries_mounts_own_words") {
        return;
    }
    private_mount_namespace();
    let tmp = TempDir::new("fs");
    let lo = LoopDevice::ext4(tmp.path(), "a");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mkdir");
    let r = Filesystem::new(
        &config(&lo.device, &dir, "no_such_option_xyz"),
        &Context::system(),
    )
    .expect("new");
    let msg = rt()
        .block_on(r.acquire())
        .expect_err("bad option")
        .to_string();
    assert!(msg.contains("mount -t ext4 -o no_such_option_xyz"), "{msg}");
    assert!(msg.contains("exited with status"), "{msg}");
}

#[test]
fn a_busy_filesystem_is_freed_by_stopping_its_holders() {
    if !root_or_skip("a_busy_filesystem_is_freed_by_stopping_its_holders") {
        return;
    }
    private_mount_namespace();
    let tmp = TempDir::new("fs");
    let lo = LoopDevice::ext4(tmp.path(), "a");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mkdir");
    let r = fs(&lo.device, &dir);
    let rt = rt();
    rt.block_on(r.acquire()).expect("mount");
    std::fs::write(dir.join("log"), b"x\n").expect("write");

    // One holder by its working directory, one by an open file, one that ignores SIGTERM
    // (so the SIGKILL escalation runs too).
    let spawn = |argv: &[&str]| {
        ChildGuard(
            Command::new(argv[0])
                .args(&argv[1..])
                .current_dir(if argv[0] == "sleep" {
                    &dir
                } else {
                    Path::new("/")
                })
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn holder"),
        )
    };
    let log = dir.join("log");
    let mut cwd = spawn(&["sleep", "60"]);
    let mut tail = spawn(&["tail", "-f", log.to_str().unwrap()]);
    let stubborn_script = format!(
        "trap '' TERM; exec 3<{}; while :; do sleep 0.1; done",
        log.display()
    );
    let mut stubborn = spawn(&["/bin/sh", "-c", &stubborn_script]);
    // Wait until all three hold the filesystem.
    let canon = std::fs::canonicalize(&dir).expect("canon");
    let pids = [
        cwd.0.id() as i32,
        tail.0.id() as i32,
        stubborn.0.id() as i32,
    ];
    assert!(
        wait_until(Duration::from_secs(5), || {
            let h = filesystem::holders_under(&canon);
            pids.iter().all(|p| h.iter().any(|x| x.pid == *p))
        }),
        "holders not seen: {:?}",
        filesystem::holders_under(&canon)
    );

    let t = Instant::now();
    rt.block_on(r.release())
        .expect("release frees the busy filesystem");
    eprintln!("busy umount took {} ms", t.elapsed().as_millis());
    assert_eq!(mounted_source(&dir), None, "unmounted");
    for c in [&mut cwd, &mut tail, &mut stubborn] {
        let st =
            c.0.try_wait()
                .expect("try_wait")
                .expect("holder has exited");
        assert!(!st.success(), "killed by a signal: {st}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "bounded by the stop timeout"
    );
}
