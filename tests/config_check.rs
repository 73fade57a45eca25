//! `twinbeat check` end to end: the real binary against the reference config and a broken copy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_twinbeat");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A fresh directory per test; no tempfile crate needed for this.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("twinbeat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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
