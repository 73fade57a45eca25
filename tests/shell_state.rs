//! The state dir: generations advance on every start, terms survive restarts, corruption is
//! reported instead of silently resetting the term.

mod support;

use twinbeat::shell::state::{StateDir, StateError};

fn tempdir(tag: &str) -> std::path::PathBuf {
    support::scratch_path(&format!("state-{tag}"))
}

#[test]
fn every_start_gets_a_new_generation_and_the_term_survives() {
    let dir = tempdir("gen");
    let first = StateDir::open_and_boot(&dir).expect("fresh dir");
    assert_eq!(first.get().generation, 1);
    assert_eq!(first.get().term, 0);
    drop(first);
    let mut second = StateDir::open_and_boot(&dir).expect("reopen");
    assert_eq!(second.get().generation, 2);
    second.set_term(7).expect("persist term");
    drop(second);
    let third = StateDir::open_and_boot(&dir).expect("reopen");
    assert_eq!(third.get().generation, 3);
    assert_eq!(third.get().term, 7);
    assert!(
        !dir.join("state.json.tmp").exists(),
        "no temporary file left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_state_file_is_an_error_that_names_it() {
    let dir = tempdir("corrupt");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("state.json"), b"{\"generation\": 3, \"te").expect("write");
    let e = match StateDir::open_and_boot(&dir) {
        Err(e) => e,
        Ok(_) => panic!("a truncated state file must not be accepted"),
    };
    assert!(matches!(e, StateError::Corrupt { .. }));
    let msg = e.to_string();
    assert!(msg.contains("state.json") && msg.contains("term"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
