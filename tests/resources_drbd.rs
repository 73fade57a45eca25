//! The `drbd` resource kind: parsers on every recorded DRBD 8.4 fixture, and the executor's
//! command sequences against a `Runner` double on paused tokio time (no DRBD module here).
//!
//! Fixtures in `tests/fixtures/drbd-8.4/` are verbatim recordings (see their README). Texts
//! marked "constructed" are not recordings: they follow DRBD's formats for cases the recordings
//! do not cover (a failed `drbdadm primary`, Outdated/Diskless disks, DRBD 9 lines).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use twinbeat::config::{self, ResourceKind};
use twinbeat::core::DiskState;
use twinbeat::exec::{BoxFuture, ExecError, Output, Runner};
use twinbeat::resources::drbd::{
    parse_events2_now, parse_status, Drbd, DrbdState, Events2, Line, Role, Timing,
};
use twinbeat::resources::{self, Context, Resource, StepError};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/drbd-8.4/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The `drbdsetup events2 --now` part of a fixture that holds several commands' output.
fn events_part(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("exists "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The first `drbdadm status` block of a fixture (up to the first blank line).
fn status_part(text: &str) -> String {
    text.lines()
        .skip_while(|l| l.starts_with("=="))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

fn st(
    role: Role,
    disk: DiskState,
    connection: Option<&str>,
    peer_role: Role,
    peer_disk: DiskState,
    replication: Option<&str>,
) -> DrbdState {
    DrbdState {
        exists: true,
        role,
        disk,
        connection: connection.map(str::to_string),
        peer_role,
        peer_disk,
        replication: replication.map(str::to_string),
    }
}

use DiskState::{Inconsistent, Unknown as DUnknown, UpToDate};
use Role::{Primary, Secondary, Unknown as RUnknown};

// ---------------------------------------------------------------- parsers on every fixture

#[test]
fn events2_now_connected_inconsistent_all_three_outputs() {
    let text = fixture("events2-now-connected-inconsistent.txt");
    let parts: Vec<&str> = text.split("---\n").collect();
    assert_eq!(parts.len(), 3);
    let want = st(
        Secondary,
        Inconsistent,
        Some("Connected"),
        Secondary,
        Inconsistent,
        Some("Established"),
    );
    for p in parts {
        assert_eq!(parse_events2_now("r0", p), Ok(want.clone()), "{p}");
    }
}

#[test]
fn events2_stream_peer_killed_then_promote() {
    let text = fixture("events2-stream-peer-killed-then-promote.txt");
    let mut ev = Events2::new("r0");
    let mut after = Vec::new();
    for line in text.lines() {
        let l = ev.apply(line);
        after.push((line.to_string(), l, ev.state()));
    }
    // The header line is not events2.
    assert_eq!(after[0].1, Line::Unrecognized);
    // The initial dump: Secondary with the peer Primary, all UpToDate.
    assert_eq!(after[5].1, Line::EndOfInitial);
    assert_eq!(
        after[5].2,
        st(
            Secondary,
            UpToDate,
            Some("Connected"),
            Primary,
            UpToDate,
            Some("Established")
        )
    );
    // DRBD notices the dead peer: NetworkFailure, peer role and disk unknown.
    assert_eq!(
        after[7].2,
        st(
            Secondary,
            UpToDate,
            Some("NetworkFailure"),
            RUnknown,
            DUnknown,
            Some("Off")
        )
    );
    // `change` lines without state fields change nothing.
    assert_eq!(after[9].2, after[7].2);
    // Connecting, then promoted.
    let last = &after.last().expect("lines").2;
    assert_eq!(
        *last,
        st(
            Primary,
            UpToDate,
            Some("Connecting"),
            RUnknown,
            DUnknown,
            Some("Off")
        )
    );
}

#[test]
fn events2_stream_rejoin_and_its_status_tail() {
    let text = fixture("events2-stream-rejoin.txt");
    let (stream, status): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|l| l.starts_with("20") || l.starts_with("=="));
    let mut ev = Events2::new("r0");
    let mut sync_seen = false;
    for line in &stream {
        let l = ev.apply(line);
        if line.contains(" call helper ") || line.contains(" response helper ") {
            assert_eq!(l, Line::Ignored, "{line}");
        }
        if line.contains("replication:SyncSource") {
            let s = ev.state();
            assert_eq!(s.replication.as_deref(), Some("SyncSource"));
            assert_eq!(s.peer_disk, Inconsistent);
            assert_eq!(s.peer_role, Secondary);
            sync_seen = true;
        }
    }
    assert!(sync_seen);
    let back = st(
        Primary,
        UpToDate,
        Some("Connected"),
        Secondary,
        UpToDate,
        Some("Established"),
    );
    assert_eq!(ev.state(), back);
    assert_eq!(parse_status("r0", &status.join("\n")), Ok(back));
}

#[test]
fn primary_after_sync_and_after_planned_switch() {
    let want = st(
        Primary,
        UpToDate,
        Some("Connected"),
        Secondary,
        UpToDate,
        Some("Established"),
    );
    for f in [
        "primary-uptodate-after-sync.txt",
        "node2-primary-after-planned-switch.txt",
    ] {
        let text = fixture(f);
        assert_eq!(
            parse_events2_now("r0", &events_part(&text)),
            Ok(want.clone()),
            "{f}"
        );
        assert_eq!(
            parse_status("r0", &status_part(&text)),
            Ok(want.clone()),
            "{f}"
        );
    }
}

#[test]
fn piped_status_and_verbose_status() {
    // `cat -A` marks line ends with `$`: that is the recording, not drbdadm's output.
    let text: String = fixture("piped-status-verbose-statistics-sh-status.txt")
        .lines()
        .map(|l| format!("{}\n", l.strip_suffix('$').unwrap_or(l)))
        .collect();
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let want = st(
        Secondary,
        Inconsistent,
        Some("Connected"),
        Secondary,
        Inconsistent,
        Some("Established"),
    );
    // Plain status (after the `== piped` header), then `--verbose --statistics`.
    assert_eq!(parse_status("r0", blocks[0]), Ok(want.clone()));
    assert_eq!(parse_status("r0", blocks[1]), Ok(want));
    // `sh-status` is a different format: an error, not a wrong answer.
    assert!(parse_status("r0", blocks[2]).is_err());
}

#[test]
fn rejoin_node1_syncing_status() {
    let text = fixture("rejoin-node1-syncing.txt");
    assert_eq!(
        parse_status("r0", &status_part(&text)),
        Ok(st(
            Secondary,
            Inconsistent,
            Some("Connected"),
            Primary,
            UpToDate,
            Some("SyncTarget")
        ))
    );
}

#[test]
fn resource_not_up() {
    let text = fixture("resource-not-up.txt");
    // `drbdadm status r0` says `r0: No such resource`.
    let status: String = text.lines().skip(1).take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(parse_status("r0", &status), Ok(DrbdState::absent()));
    // `drbdsetup events2 --now all` prints only the end marker.
    assert_eq!(
        parse_events2_now("r0", &events_part(&text)),
        Ok(DrbdState::absent())
    );
    assert!(!DrbdState::absent().exists);
}

#[test]
fn role_cstate_dstate_and_json_error_are_not_mistaken_for_state() {
    let text = fixture("role-cstate-dstate-and-json-unsupported.txt");
    assert!(parse_events2_now("r0", &text).is_err());
    assert!(parse_status("r0", &text).is_err());
}

#[test]
fn coloured_status_on_a_tty() {
    let text = fixture("status-connected-both-inconsistent.tty-colour.txt");
    let parts: Vec<&str> = text.split("---\n").collect();
    assert_eq!(
        parse_status("r0", parts[0]),
        Ok(st(
            Secondary,
            Inconsistent,
            Some("Connected"),
            Secondary,
            Inconsistent,
            Some("Established")
        ))
    );
    // drbdadm's option error and /proc/drbd: errors naming what was seen.
    let e = parse_status("r0", parts[1]).expect_err("option error");
    assert!(e.to_string().contains("unrecognized option"), "{e}");
    assert!(parse_status("r0", parts[2]).is_err());
    assert!(parse_events2_now("r0", parts[2]).is_err());
}

#[test]
fn survivor_before_and_after_promote() {
    let before = fixture("survivor-after-peer-killed-before-promote.txt");
    assert_eq!(
        parse_status("r0", &status_part(&before)),
        Ok(st(
            Secondary,
            UpToDate,
            Some("Connecting"),
            RUnknown,
            DUnknown,
            None
        ))
    );
    let after = fixture("survivor-after-promote.txt");
    assert_eq!(
        parse_status("r0", &status_part(&after)),
        Ok(st(
            Primary,
            UpToDate,
            Some("Connecting"),
            RUnknown,
            DUnknown,
            None
        ))
    );
    assert_eq!(
        parse_events2_now("r0", &events_part(&after)),
        Ok(st(
            Primary,
            UpToDate,
            Some("Connecting"),
            RUnknown,
            DUnknown,
            Some("Off")
        ))
    );
}

#[test]
fn initial_sync_source_and_target() {
    let source = fixture("syncsource-during-initial-sync.txt");
    let want = st(
        Primary,
        UpToDate,
        Some("Connected"),
        Secondary,
        Inconsistent,
        Some("SyncSource"),
    );
    assert_eq!(parse_status("r0", &status_part(&source)), Ok(want.clone()));
    assert_eq!(parse_events2_now("r0", &events_part(&source)), Ok(want));
    let target = fixture("synctarget-during-initial-sync.txt");
    let want = st(
        Secondary,
        Inconsistent,
        Some("Connected"),
        Primary,
        UpToDate,
        Some("SyncTarget"),
    );
    assert_eq!(parse_status("r0", &status_part(&target)), Ok(want.clone()));
    assert_eq!(parse_events2_now("r0", &events_part(&target)), Ok(want));
}

#[test]
fn every_fixture_file_goes_through_both_parsers_without_panicking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drbd-8.4");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("fixture");
        let _ = parse_events2_now("r0", &text);
        let _ = parse_status("r0", &text);
        let mut ev = Events2::new("r0");
        for l in text.lines() {
            ev.apply(l);
        }
        let _ = ev.state();
        n += 1;
    }
    assert!(n >= 15, "{n} fixture files");
}

#[test]
fn drbd9_events2_lines_constructed() {
    // Constructed in DRBD 9's events2 format: real peer-node-id and host name, a path object,
    // quorum keys, two volumes (the worse disk speaks), another resource, a destroyed peer.
    let text = "\
exists resource name:r0 role:Secondary suspended:no force-io-failures:no may_promote:yes promotion_score:10101
exists connection name:r0 peer-node-id:1 conn-name:node2 connection:Connected role:Primary
exists path name:r0 peer-node-id:1 conn-name:node2 local:ipv4:192.0.2.1:7789 peer:ipv4:192.0.2.2:7789 established:yes
exists device name:r0 volume:0 minor:0 backing_dev:/dev/vdb disk:UpToDate client:no quorum:yes
exists device name:r0 volume:1 minor:1 backing_dev:/dev/vdc disk:Outdated client:no quorum:yes
exists peer-device name:r0 peer-node-id:1 conn-name:node2 volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
exists peer-device name:r0 peer-node-id:1 conn-name:node2 volume:1 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
exists resource name:r1 role:Primary suspended:no
exists -
";
    let s = parse_events2_now("r0", text).expect("parses");
    assert_eq!(
        s,
        st(
            Secondary,
            DiskState::Outdated,
            Some("Connected"),
            Primary,
            UpToDate,
            Some("Established")
        )
    );
    let mut ev = Events2::new("r0");
    for l in text.lines() {
        ev.apply(l);
    }
    assert_eq!(
        ev.apply("destroy connection name:r0 peer-node-id:1 conn-name:node2"),
        Line::Applied
    );
    assert_eq!(ev.state().connection, None);
    assert_eq!(ev.state().peer_role, RUnknown);
    assert_eq!(ev.apply("destroy resource name:r0"), Line::Applied);
    assert!(!ev.state().exists);
}

#[test]
fn truncated_and_garbage_events2_are_errors() {
    let e = parse_events2_now("r0", "exists resource name:r0 role:Primary\n").expect_err("cut");
    assert!(e.to_string().contains("exists -"), "{e}");
    let e = parse_events2_now("r0", "").expect_err("empty");
    assert!(e.to_string().contains("empty"), "{e}");
    let e = parse_events2_now("r0", "Segmentation fault\n").expect_err("garbage");
    assert!(e.to_string().contains("Segmentation fault"), "{e}");
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("exists".to_string()),
        Just("change".to_string()),
        Just("destroy".to_string()),
        Just("call".to_string()),
        Just("-".to_string()),
        Just("resource".to_string()),
        Just("device".to_string()),
        Just("connection".to_string()),
        Just("peer-device".to_string()),
        Just("name:r0".to_string()),
        Just("volume:".to_string()),
        Just("volume:99999999999".to_string()),
        Just("role:Primary".to_string()),
        Just("disk:UpToDate".to_string()),
        Just("peer-disk:".to_string()),
        Just("r0".to_string()),
        Just("  ".to_string()),
        Just("\u{1b}[1;3".to_string()),
        "[ -~]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn random_lines_never_panic(lines in prop::collection::vec(
        prop::collection::vec(token(), 0..8).prop_map(|t| t.join(" ")), 0..12)) {
        let text = lines.join("\n");
        let _ = parse_events2_now("r0", &text);
        let _ = parse_status("r0", &text);
        let mut ev = Events2::new("r0");
        for l in &lines {
            ev.apply(l);
        }
        let _ = ev.state().summary();
    }
}

// ---------------------------------------------------------------- executor with a double

enum Answer {
    Out(Output),
    Missing,
}

/// Answers argv with recorded output, in the order queued per argv; records every call.
#[derive(Default)]
struct Double {
    answers: Mutex<Vec<(Vec<String>, Answer)>>,
    calls: Mutex<Vec<(String, Duration)>>,
}

impl Double {
    fn on(&self, argv: &str, a: Answer) -> &Double {
        self.on_n(argv, 1, || match &a {
            Answer::Out(o) => Answer::Out(o.clone()),
            Answer::Missing => Answer::Missing,
        })
    }
    fn on_n(&self, argv: &str, n: usize, a: impl Fn() -> Answer) -> &Double {
        let argv: Vec<String> = argv.split(' ').map(str::to_string).collect();
        let mut q = self.answers.lock().expect("lock");
        for _ in 0..n {
            q.push((argv.clone(), a()));
        }
        drop(q);
        self
    }
    fn calls(&self) -> Vec<String> {
        let c = self.calls.lock().expect("lock");
        c.iter().map(|(a, _)| a.clone()).collect()
    }
    fn timeouts(&self) -> Vec<Duration> {
        let c = self.calls.lock().expect("lock");
        c.iter().map(|(_, t)| *t).collect()
    }
}

impl Runner for Double {
    fn output<'a>(
        &'a self,
        argv: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        let shown = argv.join(" ");
        self.calls
            .lock()
            .expect("lock")
            .push((shown.clone(), timeout));
        let mut q = self.answers.lock().expect("lock");
        let answer = q.iter().position(|(a, _)| a == argv).map(|i| q.remove(i).1);
        drop(q);
        Box::pin(async move {
            match answer {
                Some(Answer::Out(o)) => Ok(o),
                Some(Answer::Missing) => Err(ExecError::Spawn {
                    argv: shown,
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                }),
                None => Ok(fail(127, &format!("test double: no answer for `{shown}`"))),
            }
        })
    }
}

fn ok(stdout: &str) -> Answer {
    Answer::Out(Output {
        code: Some(0),
        stdout: stdout.to_string(),
        stderr: String::new(),
        elapsed: Duration::from_millis(300),
    })
}

fn fail(code: i32, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: String::new(),
        stderr: stderr.to_string(),
        elapsed: Duration::from_millis(300),
    }
}

fn failing(code: i32, stderr: &str) -> Answer {
    Answer::Out(fail(code, stderr))
}

/// Constructed in the format drbd-utils 9 prints on an 8.4 kernel (not in the recordings).
const PEER_PRIMARY_STDERR: &str = "0: State change failed: (-1) Multiple primaries not allowed by config\nCommand 'drbdsetup-84 primary 0' terminated with exit code 11\n";
const HELD_OPEN_STDERR: &str = "0: State change failed: (-12) Device is held open by someone\nCommand 'drbdsetup-84 secondary 0' terminated with exit code 11\n";

const EVENTS: &str = "drbdsetup events2 --now r0";
const PRIMARY: &str = "drbdadm primary r0";
const SECONDARY: &str = "drbdadm secondary r0";
const FORCE: &str = "drbdadm secondary --force r0";

/// Secondary, UpToDate, peer still Primary and Connected: node2 just before node1 died
/// (the first lines of the recorded stream, timestamps included).
fn secondary_uptodate() -> String {
    fixture("events2-stream-peer-killed-then-promote.txt")
        .lines()
        .skip(1)
        .take(5)
        .map(|l| format!("{l}\n"))
        .collect()
}

fn primary_uptodate() -> String {
    events_part(&fixture("primary-uptodate-after-sync.txt"))
}

fn drbd(double: &Arc<Double>, start_ms: u64) -> Drbd {
    let r = config::Resource {
        name: "data-disk".to_string(),
        start_timeout_ms: start_ms,
        stop_timeout_ms: 20_000,
        kind: ResourceKind::Drbd {
            resource: "r0".to_string(),
        },
    };
    let ctx = Context {
        runner: double.clone(),
    };
    Drbd::new(&r, &ctx).expect("drbd executor")
}

#[tokio::test(start_paused = true)]
async fn promote_from_secondary_uptodate() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate())).on(PRIMARY, ok(""));
    drbd(&d, 30_000).acquire().await.expect("promoted");
    assert_eq!(d.calls(), [EVENTS, PRIMARY]);
    // A short bound for the query, the resource's start timeout for the promotion.
    assert_eq!(
        d.timeouts(),
        [Duration::from_secs(5), Duration::from_secs(30)]
    );
}

#[tokio::test(start_paused = true)]
async fn promote_when_already_primary_runs_no_primary() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&primary_uptodate()));
    drbd(&d, 30_000).acquire().await.expect("idempotent");
    assert_eq!(d.calls(), [EVENTS]);
}

#[tokio::test(start_paused = true)]
async fn promote_refuses_outdated_inconsistent_diskless() {
    // Outdated and Diskless are constructed from the recording by changing the disk field.
    let inconsistent = events_part(&fixture("synctarget-during-initial-sync.txt"));
    let outdated = secondary_uptodate().replace(" disk:UpToDate", " disk:Outdated");
    let diskless = secondary_uptodate().replace(" disk:UpToDate", " disk:Diskless");
    for (text, name) in [
        (inconsistent, "Inconsistent"),
        (outdated, "Outdated"),
        (diskless, "Diskless"),
    ] {
        let d = Arc::new(Double::default());
        d.on(EVENTS, ok(&text));
        let e = drbd(&d, 30_000).acquire().await.expect_err(name);
        assert!(matches!(e, StepError::Refused(_)), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("refusing to promote drbd resource r0")
                && msg.contains(&format!("local disk is {name}"))
                && msg.contains("primary --force"),
            "{msg}"
        );
        assert_eq!(d.calls(), [EVENTS], "{name}: no primary call");
    }
}

#[tokio::test(start_paused = true)]
async fn promote_refuses_a_resource_that_is_not_up() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok("exists -\n"));
    let e = drbd(&d, 30_000).acquire().await.expect_err("not up");
    assert!(e.to_string().contains("drbdadm up r0"), "{e}");
    assert_eq!(d.calls(), [EVENTS]);
}

#[tokio::test(start_paused = true)]
async fn promote_retries_while_drbd_still_sees_the_peer_primary_then_succeeds() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate()))
        .on(PRIMARY, failing(11, PEER_PRIMARY_STDERR))
        .on(PRIMARY, failing(11, PEER_PRIMARY_STDERR))
        .on(PRIMARY, ok(""));
    let t0 = tokio::time::Instant::now();
    drbd(&d, 30_000).acquire().await.expect("third try");
    assert_eq!(d.calls(), [EVENTS, PRIMARY, PRIMARY, PRIMARY]);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn promote_gives_up_after_the_retry_window_with_the_fix() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate()))
        .on_n(PRIMARY, 100, || failing(11, PEER_PRIMARY_STDERR));
    let t0 = tokio::time::Instant::now();
    let e = drbd(&d, 30_000).acquire().await.expect_err("window");
    assert!(matches!(e, StepError::Refused(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("peer still Primary according to DRBD after 10.0 s")
            && msg.contains("21 attempts")
            && msg.contains("ping-int")
            && msg.contains("fencing")
            && msg.contains("Multiple primaries not allowed by config"),
        "{msg}"
    );
    assert_eq!(d.calls().iter().filter(|c| *c == PRIMARY).count(), 21);
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn the_retry_window_stays_inside_the_start_timeout_and_is_tunable() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate()))
        .on_n(PRIMARY, 100, || failing(11, PEER_PRIMARY_STDERR));
    // 3/4 of a 4 s start timeout.
    let e = drbd(&d, 4_000).acquire().await.expect_err("window");
    assert!(e.to_string().contains("after 3.0 s"), "{e}");

    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate()))
        .on_n(PRIMARY, 100, || failing(11, PEER_PRIMARY_STDERR));
    let timing = Timing {
        promote_retry_interval: Duration::from_millis(100),
        promote_retry_window: Duration::from_secs(1),
        ..Timing::default()
    };
    let e = drbd(&d, 30_000)
        .with_timing(timing)
        .acquire()
        .await
        .expect_err("window");
    assert!(e.to_string().contains("after 1.0 s (11 attempts"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn promote_reports_other_failures_at_once_with_stderr() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate())).on(
        PRIMARY,
        failing(
            11,
            "0: State change failed: (-12) Device is held open by someone\n",
        ),
    );
    let e = drbd(&d, 30_000).acquire().await.expect_err("held open");
    assert!(matches!(e, StepError::Failed(_)), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot promote drbd resource r0")
            && msg.contains("exited with status 11")
            && msg.contains("Device is held open by someone"),
        "{msg}"
    );
    assert_eq!(d.calls(), [EVENTS, PRIMARY]);

    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate())).on(
        PRIMARY,
        failing(
            17,
            "0: State change failed: (-2) Need access to UpToDate data\n",
        ),
    );
    let e = drbd(&d, 30_000).acquire().await.expect_err("not uptodate");
    assert!(matches!(e, StepError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("no longer UpToDate"), "{e}");

    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate())).on(
        PRIMARY,
        failing(
            11,
            "r0: State change failed: (-7) Refusing to be Primary while peer is not outdated\n",
        ),
    );
    let e = drbd(&d, 30_000).acquire().await.expect_err("fencing");
    assert!(matches!(e, StepError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("fence-peer handler"), "{e}");
    assert_eq!(d.calls(), [EVENTS, PRIMARY]);
}

#[tokio::test(start_paused = true)]
async fn demote_retries_then_forces() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&primary_uptodate()))
        .on_n(SECONDARY, 3, || failing(11, HELD_OPEN_STDERR))
        .on(FORCE, ok(""));
    let t0 = tokio::time::Instant::now();
    drbd(&d, 30_000).release().await.expect("forced");
    assert_eq!(d.calls(), [EVENTS, SECONDARY, SECONDARY, SECONDARY, FORCE]);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(d.timeouts()[1], Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn demote_succeeding_on_a_retry_does_not_force() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&primary_uptodate()))
        .on(SECONDARY, failing(11, HELD_OPEN_STDERR))
        .on(SECONDARY, ok(""));
    drbd(&d, 30_000).release().await.expect("second try");
    assert_eq!(d.calls(), [EVENTS, SECONDARY, SECONDARY]);
}

#[tokio::test(start_paused = true)]
async fn demote_failing_everything_tells_the_whole_story() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&primary_uptodate()))
        .on_n(SECONDARY, 3, || failing(11, HELD_OPEN_STDERR))
        .on(
            FORCE,
            failing(
                20,
                "drbdsetup-84 secondary: unrecognized option '--force'\n",
            ),
        );
    let e = drbd(&d, 30_000).release().await.expect_err("stuck");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot demote drbd resource r0")
            && msg.contains("failed 3 times")
            && msg.contains("Device is held open by someone")
            && msg.contains("has no `secondary --force`")
            && msg.contains("fuser"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn demote_is_idempotent() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate()));
    drbd(&d, 30_000).release().await.expect("already secondary");
    assert_eq!(d.calls(), [EVENTS]);

    let d = Arc::new(Double::default());
    d.on(EVENTS, ok("exists -\n"));
    drbd(&d, 30_000).release().await.expect("not up");
    assert_eq!(d.calls(), [EVENTS]);
}

#[tokio::test(start_paused = true)]
async fn missing_drbd_utils_is_named() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, Answer::Missing);
    let e = drbd(&d, 30_000).acquire().await.expect_err("no drbdsetup");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot read the state of drbd resource r0") && msg.contains("drbd-utils"),
        "{msg}"
    );
    assert_eq!(d.calls(), [EVENTS]);

    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&secondary_uptodate()))
        .on(PRIMARY, Answer::Missing);
    let e = drbd(&d, 30_000).acquire().await.expect_err("no drbdadm");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot promote drbd resource r0") && msg.contains("drbd-utils"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn unparseable_state_is_an_error_not_a_panic() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok("\u{1b}[1;31mgarbage\nmore garbage\n"))
        .on("drbdadm status r0", ok("also garbage\n"));
    let e = drbd(&d, 30_000).acquire().await.expect_err("garbage");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot read the state of drbd resource r0")
            && msg.contains("cannot parse the output of `drbdsetup events2 --now r0`")
            && msg.contains("drbdadm status r0"),
        "{msg}"
    );
    assert_eq!(d.calls(), [EVENTS, "drbdadm status r0"]);
}

#[tokio::test(start_paused = true)]
async fn status_is_the_fallback_when_events2_fails() {
    let d = Arc::new(Double::default());
    d.on(
        EVENTS,
        failing(20, "events2: unrecognized option '--now'\n"),
    )
    .on(
        "drbdadm status r0",
        ok(&status_part(&fixture("survivor-after-promote.txt"))),
    );
    assert!(drbd(&d, 30_000).probe().await.expect("probe"));
    assert_eq!(d.calls(), [EVENTS, "drbdadm status r0"]);
}

#[tokio::test(start_paused = true)]
async fn probe_and_disk_state() {
    let d = Arc::new(Double::default());
    d.on(EVENTS, ok(&primary_uptodate()))
        .on(EVENTS, ok(&secondary_uptodate()))
        .on(EVENTS, ok("exists -\n"))
        .on(
            EVENTS,
            ok(&events_part(&fixture("synctarget-during-initial-sync.txt"))),
        );
    let r = drbd(&d, 30_000);
    assert!(r.probe().await.expect("primary"));
    assert!(!r.probe().await.expect("secondary"));
    assert!(!r.probe().await.expect("not up"));
    let rep = r
        .disk_state()
        .expect("drbd reports a disk state")
        .await
        .expect("disk");
    assert_eq!(rep.disk, Inconsistent);
    assert_eq!(rep.resource, "r0");
    assert_eq!(rep.connection.as_deref(), Some("Connected"));
    assert_eq!(rep.replication.as_deref(), Some("SyncTarget"));
    assert!(rep.replicating());
}

/// The survivor after its peer was killed (recorded on real DRBD 8.4): the local disk is still
/// UpToDate, which alone looks healthy; the report says nothing reaches the peer.
#[tokio::test(start_paused = true)]
async fn the_disk_report_of_a_survivor_says_it_is_not_replicating() {
    let d = Arc::new(Double::default());
    d.on(
        EVENTS,
        ok(&events_part(&fixture("survivor-after-promote.txt"))),
    );
    let rep = drbd(&d, 30_000)
        .disk_state()
        .expect("drbd reports a disk state")
        .await
        .expect("disk");
    assert_eq!(rep.disk, twinbeat::core::DiskState::UpToDate);
    assert_eq!(rep.connection.as_deref(), Some("Connecting"));
    assert!(!rep.replicating());
}

#[test]
fn build_makes_a_drbd_executor_and_new_checks_the_kind() {
    let ctx = Context::system();
    let r = config::Resource {
        name: "data-disk".to_string(),
        start_timeout_ms: 30_000,
        stop_timeout_ms: 30_000,
        kind: ResourceKind::Drbd {
            resource: "r0".to_string(),
        },
    };
    assert!(resources::build(&r, &ctx).is_ok());
    let wrong = config::Resource {
        kind: ResourceKind::Systemd {
            unit: "mariadb.service".to_string(),
        },
        ..r
    };
    let e = Drbd::new(&wrong, &ctx).err().expect("wrong kind");
    assert!(e.to_string().contains("not drbd"), "{e}");
}

// ---- outdate at the peer's request (fence-peer through the daemons) ----

const OUTDATE: &str = "drbdadm outdate r0";

#[tokio::test(start_paused = true)]
async fn outdate_runs_drbdadm_outdate_once_and_names_the_failure() {
    let d = Arc::new(Double::default());
    d.on(OUTDATE, ok("")).on(EVENTS, ok(&secondary_outdated()));
    let r = drbd(&d, 30_000);
    r.outdate()
        .expect("drbd can outdate")
        .await
        .expect("outdated");
    assert_eq!(
        d.calls(),
        [OUTDATE, EVENTS],
        "one outdate, checked by one state read"
    );
    assert_eq!(
        d.timeouts()[0],
        Duration::from_secs(20),
        "bounded like a demote"
    );

    // Constructed: DRBD refuses to outdate a disk while connected or Primary; the wording is
    // not in the recordings, so only "the stderr lands in the error" is checked.
    let d = Arc::new(Double::default());
    d.on(
        OUTDATE,
        failing(17, "0: State change failed: (-2) Refusing\n"),
    );
    let e = drbd(&d, 30_000)
        .outdate()
        .expect("drbd can outdate")
        .await
        .expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("cannot outdate drbd resource r0")
            && msg.contains("State change failed")
            && msg.contains("drbdadm status r0"),
        "{msg}"
    );
}

fn secondary_outdated() -> String {
    let st = secondary_uptodate().replace(" disk:UpToDate", " disk:Outdated");
    assert!(st.contains("disk:Outdated"), "fixture changed: {st}");
    st
}

#[tokio::test(start_paused = true)]
async fn outdate_that_did_not_take_is_run_again_until_drbd_says_outdated() {
    // QEMU lab: `drbdadm outdate` just after the connection broke exited 0 and DRBD went on
    // reporting the disk UpToDate; answering "outdated" then lets the peer write alone.
    let d = Arc::new(Double::default());
    d.on(OUTDATE, ok(""))
        .on(EVENTS, ok(&secondary_uptodate()))
        .on(OUTDATE, ok(""))
        .on(EVENTS, ok(&secondary_outdated()));
    drbd(&d, 30_000)
        .outdate()
        .expect("drbd can outdate")
        .await
        .expect("outdated on the second attempt");
    assert_eq!(d.calls(), [OUTDATE, EVENTS, OUTDATE, EVENTS]);
}

#[tokio::test(start_paused = true)]
async fn outdate_that_never_takes_fails_within_its_window_and_says_why() {
    let d = Arc::new(Double::default());
    d.on_n(OUTDATE, 100, || ok(""))
        .on_n(EVENTS, 100, || ok(&secondary_uptodate()));
    let started = tokio::time::Instant::now();
    let e = drbd(&d, 30_000)
        .outdate()
        .expect("drbd can outdate")
        .await
        .expect_err("never Outdated");
    let msg = e.to_string();
    assert!(
        msg.contains("exited 0") && msg.contains("UpToDate") && msg.contains("drbdadm status r0"),
        "{msg}"
    );
    let outdates = d.calls().iter().filter(|c| *c == OUTDATE).count();
    assert!((2..=25).contains(&outdates), "{outdates} attempts");
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "bounded by the retry window: {:?}",
        started.elapsed()
    );
}
