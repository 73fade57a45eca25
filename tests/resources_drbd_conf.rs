//! The drbd.conf parser and the settings `twinbeat check` reads from `drbdadm dump`, against
//! the lab's real resource file and dump-shaped texts (tests/fixtures/drbd-conf/README.md says
//! which is which).

use std::path::Path;

use twinbeat::resources::drbd::conf::{self, Item, Value};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/drbd-conf")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn set(value: u64) -> Value {
    Value { value, set: true }
}

fn default(value: u64) -> Value {
    Value { value, set: false }
}

#[test]
fn the_lab_resource_file_parses_with_its_timings_and_no_fencing() {
    let items = conf::parse(&fixture("lab-r0.res")).expect("parses");
    let Item::Section(r) = &items[0] else {
        panic!("{items:?}")
    };
    assert_eq!(
        (r.keyword.as_str(), r.args.as_slice()),
        ("resource", &["r0".to_string()][..])
    );
    // Comments, `on` sections on one line and options with units all come through.
    let on: Vec<_> = r
        .body
        .iter()
        .filter_map(|i| match i {
            Item::Section(s) if s.keyword == "on" => Some(s.args[0].as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(on, ["node-a", "node-b"]);
    let s = conf::resource_settings(&items, "r0").expect("r0");
    assert_eq!(s.ping_int_s, set(1));
    assert_eq!(s.ping_timeout_ds, set(5));
    assert_eq!(s.timeout_ds, set(5));
    assert_eq!(s.fencing, None);
    assert_eq!(s.fence_peer, None);
    // ping-int 1 s + ping-timeout 0.5 s; LAB.md measured 1.9 s with these.
    assert_eq!(s.detection_ms(), 1_500);
    assert!(!s.fences_through_twinbeat());
}

#[test]
fn a_dump_with_fencing_through_twinbeat() {
    let items = conf::parse(&fixture("dump-fenced.txt")).expect("parses");
    let s = conf::resource_settings(&items, "r0").expect("r0");
    assert_eq!(s.fencing.as_deref(), Some("resource-only"));
    assert_eq!(
        s.fence_peer.as_deref(),
        Some("/usr/sbin/twinbeat fence-peer")
    );
    assert!(s.fencing_on() && s.handler_is_twinbeat() && s.fences_through_twinbeat());
    assert_eq!(s.detection_ms(), 1_500);
}

#[test]
fn defaults_common_and_drbd9_placement() {
    let items = conf::parse(&fixture("dump-common-defaults.txt")).expect("parses");
    let s = conf::resource_settings(&items, "data").expect("data");
    assert_eq!(s.ping_int_s, default(10));
    assert_eq!(s.ping_timeout_ds, set(10), "from common");
    assert_eq!(s.timeout_ds, default(60));
    assert_eq!(s.detection_ms(), 11_000, "ping-int 10 s + ping-timeout 1 s");
    assert_eq!(
        s.fencing.as_deref(),
        Some("resource-and-stonith"),
        "net section (DRBD 9)"
    );
    assert_eq!(
        s.fence_peer.as_deref(),
        Some("/usr/lib/drbd/crm-fence-peer.9.sh")
    );
    assert!(s.fencing_on() && !s.handler_is_twinbeat());
    let e = conf::resource_settings(&items, "r0").unwrap_err();
    assert!(e.contains("no `resource r0` section (found: data)"), "{e}");
}

#[test]
fn a_bare_default_resource_uses_drbd_defaults() {
    let items = conf::parse("resource r1 { on a { address 192.0.2.1:7789; } }").unwrap();
    let s = conf::resource_settings(&items, "r1").unwrap();
    assert_eq!(
        (s.ping_int_s, s.ping_timeout_ds, s.timeout_ds),
        (default(10), default(5), default(60))
    );
    assert_eq!(s.detection_ms(), 10_500);
}

#[test]
fn broken_text_is_an_error_with_a_line_never_a_panic() {
    let e = conf::parse(&fixture("broken-unclosed.res")).unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(
        e.message.contains("net") && e.message.contains("not closed"),
        "{e}"
    );
    for (text, line, what) in [
        (
            "resource r0 {\n  net { ping-int 1 }\n}\n",
            2,
            "not ended by `;`",
        ),
        ("}\n", 1, "without an open section"),
        (
            "resource r0 {\n handlers { fence-peer \"/x\n",
            2,
            "not closed",
        ),
        ("{ }", 1, "without a section keyword"),
        (
            "resource r0 { net { ping-int 1; } } ping-int",
            1,
            "not ended",
        ),
    ] {
        let e = conf::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(what), "{text:?}: {e}");
    }
    let items = conf::parse("resource r0 { net { ping-int ten; } }").unwrap();
    let e = conf::resource_settings(&items, "r0").unwrap_err();
    assert!(e.contains("`ping-int ten` is not a whole number"), "{e}");
    // Arbitrary bytes: an answer, never a panic.
    for text in ["\"", "\\", "{{{{", "}}}", ";;;", "a b c", "#", "\u{0}"] {
        let _ = conf::parse(text);
    }
}

#[test]
fn handler_recognition() {
    let items = |h: &str| {
        conf::parse(&format!(
            "resource r0 {{ disk {{ fencing resource-only; }} handlers {{ fence-peer \"{h}\"; }} }}"
        ))
        .unwrap()
    };
    for (h, ours) in [
        ("/usr/sbin/twinbeat fence-peer", true),
        ("twinbeat fence-peer --socket /run/x.sock", true),
        ("/usr/lib/drbd/crm-fence-peer.9.sh", false),
        ("/usr/sbin/twinbeat status", false),
        ("/usr/lib/heartbeat/drbd-peer-outdater -t 5", false),
    ] {
        let s = conf::resource_settings(&items(h), "r0").unwrap();
        assert_eq!(s.handler_is_twinbeat(), ours, "{h}");
    }
}
