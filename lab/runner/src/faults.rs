//! The faults the scenarios inject, each touching only what the lab started (pids from the
//! lab's pid files, the lab's namespaces and links).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::lab::{
    now_ms, pid_from, run_in_netns, run_ok, wait_until, Lab, Node, RUN, VIP, WITNESS,
};

/// EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32), the same number as XFS_IOC_GOINGDOWN.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
/// EXT4_GOING_FLAGS_NOLOGFLUSH: stop at once, without writing the journal out.
const NOLOGFLUSH: u32 = 2;

pub fn fs_shutdown(dir: &Path) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let flags = NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flags as *const u32) };
    if rc != 0 {
        bail!(
            "EXT4_IOC_SHUTDOWN on {}: {}; is it an ext4 mount in this mount namespace?",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(true)
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we read from the lab's own pid files (comm checked).
    unsafe {
        libc::kill(pid, sig);
    }
}

fn gone(pid: i32) -> bool {
    !crate::lab::alive_with_comm(pid, "twinbeat") && !crate::lab::alive_with_comm(pid, "mariadbd")
}

/// The whole node loses power (LAB.md): its filesystem stops taking writes without flushing
/// the journal, its processes die, and its disk, VIP and links vanish. Returns the moment the
/// heartbeats stopped (epoch ms). Works on an active or a standby node.
pub fn power_cut(lab: &Lab, n: Node) -> Result<i64> {
    let data = format!("{RUN}/data");
    let link = n.dir().join("disk");
    let dev = std::fs::read_link(&link).ok();
    let mounted_here = dev
        .as_ref()
        .is_some_and(|d| mount_source(&data).as_deref() == Some(d));
    let daemon = lab.daemon_pid(n);
    let mysqld = lab.mysqld_pid(n);
    // The CPU stops with the disk: freeze the node's processes before its filesystem goes, or
    // mariadbd runs on for the moment between the two against a failing disk, and may hand the
    // replica a binlog event it can never make durable (seen once in 100 nemesis runs: the
    // replica held one row more than the new primary).
    let t = now_ms();
    if let Some(p) = daemon {
        signal(-p, libc::SIGSTOP);
    }
    if let Some(p) = mysqld {
        signal(p, libc::SIGSTOP);
    }
    if mounted_here {
        let me = std::env::current_exe()?;
        let out = lab.in_node(n, &[me.to_str().context("path")?, "fs-shutdown", &data])?;
        if !out.status.success() {
            for p in [daemon.map(|p| -p), mysqld].into_iter().flatten() {
                signal(p, libc::SIGCONT);
            }
            bail!(
                "power cut of {n}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    // The daemon's process group: commands it was running die with it.
    if let Some(p) = daemon {
        signal(-p, libc::SIGKILL);
    }
    if let Some(p) = mysqld {
        signal(p, libc::SIGKILL);
    }
    wait_until(
        Duration::from_secs(10),
        "the power-cut node's processes to die",
        || daemon.is_none_or(gone) && mysqld.is_none_or(gone),
    )?;
    // What vanishes with the machine: the mount, the disk, the address, the cables.
    if mounted_here {
        let mnt = format!("--mount={RUN}/mnt-ns");
        // The dead mariadbd's in-flight asynchronous I/O lets go of its files a moment after
        // the process is gone, so the unmount may be refused as busy for a little while.
        // With the lab's fence agent armed, the peer may power this node off at the same time
        // (the campaign's power cut of a node the peer is fencing): whoever comes second finds
        // the mount, the disk or the VIP already gone, which is what it wanted.
        let mut last = None;
        wait_until(
            Duration::from_secs(10),
            "the power-cut node's mount to let go",
            || {
                last = run_ok(&["nsenter", &mnt, "umount", &data], 30).err();
                last.is_none() || mount_source(&data) != dev
            },
        )
        .map_err(|e| e.context(format!("{last:?}")))?;
    }
    if let Some(dev) = dev {
        if let Some(dev) = dev.to_str().filter(|d| d.starts_with("/dev/loop")) {
            // A rolled-back attempt may already have detached it.
            let _ = run_ok(&["losetup", "-d", dev], 10);
        }
        match std::fs::remove_file(&link) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let ns = n.ns();
    if lab.holds_vip(n) {
        let del = run_ok(
            &[
                "ip",
                "-n",
                &ns,
                "addr",
                "del",
                &format!("{VIP}/24"),
                "dev",
                "lan0",
            ],
            5,
        );
        if lab.holds_vip(n) {
            del?;
        }
    }
    set_link(n, "hb0", false)?;
    set_link(n, "lan0", false)?;
    Ok(t)
}

/// The device mounted on `dir` in the lab's mount namespace, if any.
fn mount_source(dir: &str) -> Option<std::path::PathBuf> {
    let mnt = format!("--mount={RUN}/mnt-ns");
    let out = crate::lab::run_quiet(
        &[
            "nsenter",
            &mnt,
            "findmnt",
            "-n",
            "-o",
            "SOURCE",
            "--mountpoint",
            dir,
        ],
        10,
    )
    .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then(|| s.into())
}

/// Drops the node's outgoing heartbeats (UDP 694) on one interface: all of them, or about
/// `percent` of them at random. One direction only; `name` is the nftables table to undo.
pub fn drop_heartbeats(n: Node, iface: &str, percent: u8, name: &str) -> Result<()> {
    let nft = |args: &[&str]| nft(n, args);
    nft(&["add", "table", "inet", name])?;
    nft(&[
        "add",
        "chain",
        "inet",
        name,
        "out",
        "{ type filter hook output priority 0; }",
    ])?;
    let mut rule = vec![
        "add", "rule", "inet", name, "out", "oifname", iface, "udp", "dport", "694",
    ];
    let pct = percent.to_string();
    if percent < 100 {
        rule.extend_from_slice(&["numgen", "random", "mod", "100", "<", &pct]);
    }
    rule.push("drop");
    nft(&rule)
}

pub fn undo_drop(n: Node, name: &str) -> Result<()> {
    nft(n, &["delete", "table", "inet", name])
}

/// One `nft` command in node `n`'s namespace.
fn nft(n: Node, args: &[&str]) -> Result<()> {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    run_in_netns(n, &argv, 5)
}

pub fn pause_mysqld(lab: &Lab, n: Node, stop: bool) -> Result<()> {
    let pid = lab.mysqld_pid(n).context("no mariadbd pid")?;
    signal(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT });
    Ok(())
}

/// Takes the node's switch port down or up (the bridge side of its LAN veth).
pub fn set_port(n: Node, up: bool) -> Result<()> {
    set_bridge_port(&format!("{n}-lan"), up)
}

fn set_bridge_port(port: &str, up: bool) -> Result<()> {
    run_ok(
        &[
            "ip",
            "-n",
            "tblab-br",
            "link",
            "set",
            port,
            if up { "up" } else { "down" },
        ],
        5,
    )
}

/// Power back on: cables in, daemon started (it finds nothing held and joins as standby).
pub fn power_on(lab: &Lab, n: Node) -> Result<()> {
    set_link(n, "hb0", true)?;
    set_link(n, "lan0", true)?;
    lab.ctl(&["start-daemon", n.letter()])?;
    Ok(())
}

pub fn set_link(n: Node, dev: &str, up: bool) -> Result<()> {
    run_ok(
        &[
            "ip",
            "-n",
            &n.ns(),
            "link",
            "set",
            dev,
            if up { "up" } else { "down" },
        ],
        5,
    )
}

/// Cuts the node off from everything: the heartbeat cable and its switch port. Both daemons
/// keep running.
pub fn isolate(n: Node, cut: bool) -> Result<()> {
    set_link(n, "hb0", !cut)?;
    set_port(n, !cut)
}

pub fn kill_daemon(lab: &Lab, n: Node) -> Result<i64> {
    let pid = lab.daemon_pid(n).context("no daemon pid")?;
    let t = now_ms();
    signal(pid, libc::SIGKILL);
    wait_until(Duration::from_secs(5), "the daemon to die", || gone(pid))?;
    Ok(t)
}

pub fn kill_mysqld(lab: &Lab, n: Node) -> Result<i64> {
    let pid = lab.mysqld_pid(n).context("no mariadbd pid")?;
    let t = now_ms();
    signal(pid, libc::SIGKILL);
    wait_until(Duration::from_secs(5), "mariadbd to die", || gone(pid))?;
    Ok(t)
}

pub fn pause_daemon(lab: &Lab, n: Node, stop: bool) -> Result<i64> {
    let pid = lab.daemon_pid(n).context("no daemon pid")?;
    let t = now_ms();
    signal(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT });
    Ok(t)
}

/// The witness's pid (lab/lib.sh WITNESS_PID), if it runs.
fn witness_pid() -> Option<i32> {
    pid_from(&Path::new(RUN).join("witness.pid"), "twinbeat")
}

/// kill -9 of the witness (`lab/ctl.sh start-witness` brings it back).
pub fn kill_witness() -> Result<()> {
    let pid = witness_pid().context("no witness running (lab/build/logs/witness.log)")?;
    signal(pid, libc::SIGKILL);
    wait_until(Duration::from_secs(5), "the witness to die", || {
        !crate::lab::alive_with_comm(pid, "twinbeat")
    })
}

/// SIGSTOP / SIGCONT of the witness.
pub fn pause_witness(stop: bool) -> Result<()> {
    let pid = witness_pid().context("no witness running (lab/build/logs/witness.log)")?;
    signal(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT });
    Ok(())
}

/// The witness's switch port (the bridge side of its LAN veth) down or up.
pub fn set_witness_port(up: bool) -> Result<()> {
    set_bridge_port("w-lan", up)
}

/// Drops everything between node `n` and the witness, both ways, in the node's namespace (the
/// nftables table `tblab_witness`): the node cannot reach the witness, everything else works.
pub fn cut_witness_from(n: Node, cut: bool) -> Result<()> {
    let nft = |args: &[&str]| nft(n, args);
    let t = "tblab_witness";
    if !cut {
        return nft(&["delete", "table", "inet", t]);
    }
    nft(&["add", "table", "inet", t])?;
    nft(&[
        "add",
        "chain",
        "inet",
        t,
        "out",
        "{ type filter hook output priority 0; }",
    ])?;
    nft(&[
        "add",
        "chain",
        "inet",
        t,
        "in",
        "{ type filter hook input priority 0; }",
    ])?;
    nft(&[
        "add", "rule", "inet", t, "out", "ip", "daddr", WITNESS, "drop",
    ])?;
    nft(&[
        "add", "rule", "inet", t, "in", "ip", "saddr", WITNESS, "drop",
    ])
}
