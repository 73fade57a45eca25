//! The heartbeat key file: format, permissions and ownership.
//!
//! Format (like Heartbeat's `authkeys`): one key per line, `ID SECRET`, where ID is 1..=255
//! (the key id on the wire) and SECRET is at least 16 bytes without whitespace; blank lines and
//! lines starting with `#` are ignored. The config lists which ids are accepted and which one
//! signs, so a key can be rotated without downtime (add, accept, switch, retire).
//!
//! Permissions: mode 0600 or stricter (no group/other bits), as Heartbeat demanded. Owner: root,
//! or the user running twinbeat. The daemon runs as root, so in production this means root;
//! accepting the running user lets an unprivileged `twinbeat check` validate a copy in a
//! home directory, which is harmless because an unprivileged process cannot run the daemon.
//!
//! Owns: reading and checking the key file. Must not touch: the config's TOML or spans.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Shorter secrets are guessable offline from captured heartbeats.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLine {
    pub id: u8,
    pub secret: Vec<u8>,
    pub line: usize,
}

/// One thing wrong with the key file: what, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProblem {
    pub message: String,
    pub fix: String,
}

fn problem(message: String, fix: String) -> KeyProblem {
    KeyProblem { message, fix }
}

/// Reads and checks the key file. Returns the keys it could parse and every problem found;
/// the caller decides which ids it needs.
pub fn read(path: &Path) -> (Vec<KeyLine>, Vec<KeyProblem>) {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let fix = if e.kind() == ErrorKind::NotFound {
                format!(
                    "create it with lines `ID SECRET`, e.g. `(umask 077; echo \"1 $(openssl rand -hex 32)\" > {shown})`"
                )
            } else {
                "check the path and that twinbeat runs as root".to_string()
            };
            return (
                Vec::new(),
                vec![problem(format!("cannot read key file {shown}: {e}"), fix)],
            );
        }
    };
    let mut problems = Vec::new();
    if !meta.is_file() {
        problems.push(problem(
            format!("key file {shown} is not a regular file"),
            "point key-file at a regular file".to_string(),
        ));
        return (Vec::new(), problems);
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        problems.push(problem(
            format!(
                "key file {shown} has mode {mode:04o}, readable or writable by group or others"
            ),
            format!("run `chmod 600 {shown}`"),
        ));
    }
    if let Some(euid) = effective_uid() {
        if meta.uid() != 0 && meta.uid() != euid {
            problems.push(problem(
                format!(
                    "key file {shown} is owned by uid {}, not by root",
                    meta.uid()
                ),
                format!("run `chown root:root {shown}`"),
            ));
        }
    }
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(problem(
                format!("cannot read key file {shown}: {e}"),
                "check that twinbeat runs as root".to_string(),
            ));
            return (Vec::new(), problems);
        }
    };
    let (keys, mut parse_problems) = parse(&text, path);
    problems.append(&mut parse_problems);
    (keys, problems)
}

/// Parses key file contents; never panics, whatever the bytes.
pub fn parse(bytes: &[u8], path: &Path) -> (Vec<KeyLine>, Vec<KeyProblem>) {
    let shown = path.display();
    let mut keys: Vec<KeyLine> = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let mut words = text.split_whitespace();
        let (id, secret) = (words.next().unwrap_or(""), words.next());
        let extra = words.next().is_some();
        let Ok(id) = id.parse::<u8>() else {
            problems.push(problem(
                format!("key file {shown} line {line}: `{id}` is not a key id"),
                "start each line with a key id from 1 to 255, then one space, then the secret"
                    .to_string(),
            ));
            continue;
        };
        if id == 0 {
            problems.push(problem(
                format!("key file {shown} line {line}: key id 0 is reserved"),
                "use a key id from 1 to 255".to_string(),
            ));
            continue;
        }
        let Some(secret) = secret.filter(|_| !extra) else {
            problems.push(problem(
                format!("key file {shown} line {line}: expected `ID SECRET`"),
                "write exactly one secret without spaces after the id".to_string(),
            ));
            continue;
        };
        if secret.len() < MIN_SECRET_LEN {
            problems.push(problem(
                format!(
                    "key file {shown} line {line}: key {id} is {} bytes, shorter than {MIN_SECRET_LEN}",
                    secret.len()
                ),
                "generate a longer secret, e.g. `openssl rand -hex 32`".to_string(),
            ));
            continue;
        }
        if let Some(first) = keys.iter().find(|k| k.id == id) {
            problems.push(problem(
                format!(
                    "key file {shown} line {line}: key id {id} already defined on line {}",
                    first.line
                ),
                "give each key its own id".to_string(),
            ));
            continue;
        }
        keys.push(KeyLine {
            id,
            secret: secret.as_bytes().to_vec(),
            line,
        });
    }
    (keys, problems)
}

/// The effective uid of this process, from /proc (no libc dependency for one number).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_secrets_and_reports_every_bad_line() {
        let text = b"# comment\n\n1 0123456789abcdef0123\n2 short\nx 0123456789abcdef\n1 fedcba9876543210fedc\n3 a b\n0 0123456789abcdef\n";
        let (keys, problems) = parse(text, Path::new("/k"));
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].id, 1);
        assert_eq!(keys[0].line, 3);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].message.contains("key 2 is 5 bytes"));
    }

    #[test]
    fn garbage_never_panics() {
        for input in [&b"\xff\xfe\x00"[..], b"   ", b"999 x", b"\n\n\n1", b"1\t\t"] {
            let _ = parse(input, Path::new("/k"));
        }
    }
}
