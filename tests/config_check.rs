//! `twinbeat check` end to end: the real binary against the reference config and a broken copy.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_twinbeat");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fresh directory per test; no tempfile crate needed for this.
fn temp_dir(name: &str) -> PathBuf {
    let dir = support::scratch_path(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_key(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join("authkey");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn check(args: &[&str]) -> Output {
    Command::new(BIN).arg("check").args(args).output().unwrap()
}

/// The reference config with its key file pointed at a key file in `dir`.
fn example_copy(dir: &Path) -> PathBuf {
    let key = write_key(dir, "1 0123456789abcdef0123456789abcdef\n", 0o600);
    let text = std::fs::read_to_string(Path::new(ROOT).join("etc/twinbeat.toml")).unwrap();
    assert!(text.contains("\"/etc/twinbeat/authkey\""));
    let text = text.replace(
        "\"/etc/twinbeat/authkey\"",
        &format!("\"{}\"", key.display()),
    );
    let path = dir.join("twinbeat.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn reference_config_is_valid_for_both_nodes() {
    let dir = temp_dir("example");
    let path = example_copy(&dir);
    for node in ["db-a", "db-b"] {
        let out = check(&[path.to_str().unwrap(), "--node", node]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stderr.is_empty(),
            "the reference config has warnings:\n{stderr}"
        );
        assert!(stdout.contains(&format!("{node} id")), "{stdout}");
        assert!(
            stdout.contains(
                "r0 (drbd) -> data (filesystem) -> mysql (mysql) -> vip (vip 203.0.113.10/24)"
            ),
            "{stdout}"
        );
        assert!(stdout
            .contains("keepalive 200 ms, warntime 500 ms, deadtime 1000 ms, initdead 10000 ms"));
    }
}

#[test]
fn broken_config_reports_every_problem_with_position() {
    let dir = temp_dir("broken");
    let key = write_key(&dir, "1 short\n", 0o644);
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/config/broken.toml")).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(&path, text.replace("@KEYFILE@", key.to_str().unwrap())).unwrap();

    let out = check(&[path.to_str().unwrap(), "--node", "db-a"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    let expected = [
        // unknown node on a link, and the node left without an address
        (
            "17:33",
            "link[0].address.db-c: unknown node `db-c`; did you mean `db-b`?",
        ),
        ("17:11", "link[0].address: no address for node `db-b`"),
        (
            "21:15",
            "timing.warntime-ms: warntime 1500 ms is not less than deadtime 1000 ms",
        ),
        (
            "22:1",
            "timing.deadtime_ms: unknown key `deadtime_ms`; did you mean `deadtime-ms`?",
        ),
        (
            "24:15",
            "timing.initdead-ms: wrong type or value: invalid type: string \"10s\"",
        ),
        ("27:12", "auth.key-file: key file"),
        (
            "27:12",
            "has mode 0644, readable or writable by group or others; run `chmod 600",
        ),
        ("27:12", "line 1: key 1 is 5 bytes, shorter than 16"),
        (
            "34:13",
            "resource[0].directory: `var/lib/mysql` is a relative path",
        ),
        (
            "39:8",
            "warning: resource[1].kind: a `drbd` resource comes after a `filesystem` resource",
        ),
        (
            "42:8",
            "resource[2].name: resource name `data` is used twice",
        ),
        (
            "45:1",
            "resource[2].devise: unknown key `devise`; allowed keys for a `mysql` resource are",
        ),
        (
            "50:11",
            "resource[3].address: `203.0.113.10` has no prefix length",
        ),
        ("56:9", "resource[4].start: empty command"),
        ("60:18", "failover.preferred-node: unknown node `db-x`"),
    ];
    for (pos, text) in expected {
        let prefix = format!("{file}:{pos}: ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(text)),
            "missing `{prefix}... {text}` in:\n{stderr}"
        );
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "duplicate reports:\n{stderr}");
    // 13 errors, a warning for the single link and one for the order, and the total.
    assert_eq!(lines.len(), 16, "unexpected reports:\n{stderr}");
    assert!(stderr.ends_with("13 error(s); not valid\n"), "{stderr}");
}

#[test]
fn unknown_this_node_names_the_fix() {
    let dir = temp_dir("node");
    let path = example_copy(&dir);
    let out = check(&[path.to_str().unwrap(), "--node", "db-z"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("`db-z`") && stderr.contains("--node NAME"),
        "{stderr}"
    );
}

#[test]
fn missing_file_and_usage_errors() {
    let out = check(&["/nonexistent/twinbeat.toml", "--node", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let out = check(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

// ---- what DRBD itself says (`drbdadm dump` through the stand-in in tests/standin/drbd) ----

/// The reference config without its tie-breaker and [fencing] (nothing but DRBD left to stop a
/// split brain), or unchanged.
fn example_variant(dir: &Path, unguarded: bool) -> PathBuf {
    let path = example_copy(dir);
    if unguarded {
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("ping = [\"198.51.100.1\", \"203.0.113.1\"]", "")
            .replace("\nfall = 3\n", "\n")
            .replace(
                "command = [\"/usr/local/sbin/twinbeat-fence\", \"--peer\", \"db-b-ipmi\"]\nrequired = true\ntimeout-ms = 30000\nretry-ms = 5000\n",
                "",
            )
            .replace("[fencing]\n", "");
        assert!(!text.contains("[fencing]") && !text.contains("ping = ["));
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// `twinbeat check` with the drbdadm stand-in first in PATH, printing `dump` (None: the
/// stand-in's "No such resource"), or with no drbdadm at all (`standin == false`).
fn check_with_drbd(config: &Path, standin: bool, dump: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg(config).args(["--node", "db-a"]);
    let system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    if standin {
        cmd.env("PATH", format!("{ROOT}/tests/standin/drbd:{system}"));
    } else {
        cmd.env("PATH", system);
    }
    match dump {
        Some(f) => cmd.env(
            "STANDIN_DRBD_DUMP",
            format!("{ROOT}/tests/fixtures/drbd-conf/{f}"),
        ),
        None => cmd.env_remove("STANDIN_DRBD_DUMP"),
    };
    cmd.env_remove("STANDIN_DRBD_DIR");
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(": warning: "))
        .collect()
}

#[test]
fn drbd_slower_than_deadtime_is_a_warning_that_says_what_to_change() {
    let dir = temp_dir("drbd-slow");
    let path = example_variant(&dir, false);
    // The reference deadtime is 1000 ms; DRBD with ping-int 1 + ping-timeout 5 needs 1.5 s.
    let (code, stdout, stderr) = check_with_drbd(&path, true, Some("dump-fenced.txt"));
    assert_eq!(code, 0, "warnings never fail check:\n{stderr}");
    let w = warnings(&stderr);
    assert_eq!(w.len(), 1, "{stderr}");
    // Located at the drbd resource's line in the config, in the usual FILE:LINE:COL style.
    let at = format!("{}:", path.display());
    assert!(w[0].starts_with(&at), "{}", w[0]);
    let line: usize = w[0][at.len()..].split(':').next().unwrap().parse().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.lines()
            .nth(line - 1)
            .unwrap()
            .starts_with("drbd-resource"),
        "line {line}"
    );
    assert!(
        w[0].contains(": warning: resource[0].drbd-resource: "),
        "{}",
        w[0]
    );
    assert!(
        w[0].contains("up to 1.5 s") && w[0].contains("deadtime 1000 ms"),
        "{}",
        w[0]
    );
    assert!(w[0].contains("still sees the peer as Primary"), "{}", w[0]);
    assert!(
        w[0].contains("ping-int 1; ping-timeout 5; timeout 5;"),
        "{}",
        w[0]
    );
    assert!(
        w[0].contains("raise timing.deadtime-ms above 1500"),
        "{}",
        w[0]
    );
    assert!(stdout.contains(": valid"), "{stdout}");
    assert!(
        stdout.contains("drbd:      r0: notices a dead peer within 1.5 s (ping-int 1 s, ping-timeout 5/10 s, timeout 5/10 s); fencing resource-only, fence-peer /usr/sbin/twinbeat fence-peer"),
        "{stdout}"
    );
}

#[test]
fn nothing_against_a_split_brain_is_a_warning() {
    let dir = temp_dir("drbd-split");
    let path = example_variant(&dir, true);
    // The lab's real resource file: tuned timings, no DRBD fencing.
    let (code, _, stderr) = check_with_drbd(&path, true, Some("lab-r0.res"));
    assert_eq!(code, 0, "{stderr}");
    let w = warnings(&stderr);
    let split: Vec<_> = w.iter().filter(|l| l.contains("no DRBD fencing")).collect();
    assert_eq!(split.len(), 1, "{stderr}");
    assert!(split[0].contains("both nodes promote"), "{}", split[0]);
    assert!(
        split[0].contains("fence-peer \"/usr/sbin/twinbeat fence-peer\"")
            && split[0].contains("fencing resource-only")
            && split[0].contains("[tiebreaker]")
            && split[0].contains("[fencing]"),
        "{}",
        split[0]
    );
    // DRBD fencing through twinbeat is enough.
    let (code, _, stderr) = check_with_drbd(&path, true, Some("dump-fenced.txt"));
    assert_eq!(code, 0);
    assert!(!stderr.contains("no DRBD fencing"), "{stderr}");
    // Without drbdadm it says it could not look, and still warns.
    let (code, stdout, stderr) = check_with_drbd(&path, false, None);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("r0: not checked: drbdadm is not installed here"),
        "{stdout}"
    );
    assert!(
        stderr.contains("could not be checked (no drbdadm here)"),
        "{stderr}"
    );
    // With the tie-breaker and [fencing] of the reference config, no drbdadm: nothing to warn.
    let guarded = example_variant(&temp_dir("drbd-guarded"), false);
    let (code, stdout, stderr) = check_with_drbd(&guarded, false, None);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
}

#[test]
fn drbd_fencing_half_configured_is_a_warning() {
    let dir = temp_dir("drbd-half");
    let path = example_variant(&dir, false);
    let dump = dir.join("dump.txt");
    let fixture =
        std::fs::read_to_string(format!("{ROOT}/tests/fixtures/drbd-conf/dump-fenced.txt"))
            .unwrap();
    let run = |text: &str| {
        std::fs::write(&dump, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("check").arg(&path).args(["--node", "db-a"]);
        cmd.env("PATH", format!("{ROOT}/tests/standin/drbd:/usr/bin:/bin"));
        cmd.env("STANDIN_DRBD_DUMP", &dump);
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&fixture.replace("fencing            resource-only;", ""));
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("so DRBD never calls it")
            && stderr.contains("add `disk { fencing resource-only; }`"),
        "{stderr}"
    );
    let no_handler = fixture.replace("fence-peer       \"/usr/sbin/twinbeat fence-peer\";", "");
    let (code, stderr) = run(&no_handler);
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("there is no fence-peer handler, so DRBD refuses every promote"),
        "{stderr}"
    );
    // An unreadable dump is said plainly, and is still only a warning.
    let (code, stderr) = run("resource r0 {\n net {\n");
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("cannot parse `drbdadm dump r0`: line 2: section `net` is not closed"),
        "{stderr}"
    );
    let dir2 = temp_dir("drbd-missing");
    let p2 = example_variant(&dir2, false);
    let (code, _, stderr) = check_with_drbd(&p2, true, None);
    assert_eq!(code, 0);
    assert!(
        stderr.contains("r0: No such resource")
            && stderr.contains("check that /etc/drbd.d defines `resource r0`"),
        "{stderr}"
    );
}

#[test]
fn drbd_warnings_do_not_hide_errors() {
    let dir = temp_dir("drbd-error");
    let path = example_variant(&dir, true);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("deadtime-ms = 1000", "deadtime-ms = 0");
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = check_with_drbd(&path, true, Some("lab-r0.res"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not valid"), "{stderr}");
}
