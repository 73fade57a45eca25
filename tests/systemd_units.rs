//! `systemd-analyze verify` on every unit in `systemd/` (twinbeat.service, the drill service
//! and its timer). The units name /usr/sbin/twinbeat, which verify requires to exist: the test
//! points them at the freshly built binary in a temp dir. `--man=no`: no man page is installed.
//! Skipped, with the reason printed, where systemd-analyze is missing or cannot run.

use std::path::Path;
use std::process::Command;

#[test]
fn systemd_analyze_verify_passes_on_every_unit() {
    let Ok(v) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze not found (apt-get install -y systemd)");
        return;
    };
    if !v.status.success() {
        eprintln!(
            "SKIPPED: systemd-analyze cannot run here: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("twinbeat-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path())
            .unwrap()
            .replace("/usr/sbin/twinbeat", env!("CARGO_BIN_EXE_twinbeat"));
        std::fs::write(dir.join(&name), text).unwrap();
        units.push(dir.join(&name));
    }
    units.sort();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "twinbeat-drill.service",
            "twinbeat-drill.timer",
            "twinbeat-witness.service",
            "twinbeat.service"
        ]
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    // The timer runs what the lab runs: the drill there and back, with the JSON report.
    let svc = std::fs::read_to_string(src.join("twinbeat-drill.service")).unwrap();
    assert!(svc.contains(
        "ExecStart=/usr/sbin/twinbeat drill --and-back --json /var/lib/twinbeat/last-drill.json"
    ));
}
