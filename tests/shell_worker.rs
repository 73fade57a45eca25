//! The worker's start-up handshake with the driver loop.

use tokio::sync::mpsc;
use twinbeat::core::DiskState;
use twinbeat::shell::worker::{await_probe, Report};

#[tokio::test]
async fn reports_that_arrive_before_the_probe_answer_are_kept_for_the_core() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The disk watcher reports only changes: its first reading often beats the probe.
    tx.send(Report::Disk(DiskState::UpToDate)).unwrap();
    tx.send(Report::TieBreaker(true)).unwrap();
    tx.send(Report::Probed { held: 0b101 }).unwrap();
    tx.send(Report::Disk(DiskState::Outdated)).unwrap();
    let (held, early) = await_probe(&mut rx).await.expect("worker alive");
    assert_eq!(held, 0b101);
    assert!(
        matches!(
            early.as_slice(),
            [Report::Disk(DiskState::UpToDate), Report::TieBreaker(true)]
        ),
        "{early:?}"
    );
    // What came after the probe is left for the driver loop.
    assert!(matches!(
        rx.recv().await,
        Some(Report::Disk(DiskState::Outdated))
    ));
}

#[tokio::test]
async fn a_worker_gone_before_the_probe_answer_is_reported() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    tx.send(Report::TieBreaker(false)).unwrap();
    drop(tx);
    assert!(await_probe(&mut rx).await.is_none());
}
