//! Renders one scrape: the snapshot-derived metrics (state, term, links, rejections) built
//! fresh from a `DaemonStatus`, plus the long-lived ones from the `Recorder`, as OpenMetrics
//! text. Pure: no I/O, so the whole output is unit-tested.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::core::{DiskState, NodeState, PeerView};
use crate::proto::Counters;
use crate::shell::control::DaemonStatus;

use super::health::Verdict;
use super::recorder::{Labels, Recorder};

type SecondsGauge = Gauge<f64, AtomicU64>;

/// Process-wide totals that live outside the snapshot (the worker's announcing tasks).
#[derive(Clone, Copy, Debug, Default)]
pub struct Extra {
    pub announce_frames: u64,
    pub refresh_rounds: u64,
}

/// Rejection counters by reason, and the class an alert would group them in: `forged` (bad
/// MAC or unknown key: someone without the key, or a key mismatch), `replayed`, `malformed`,
/// `misdirected` (another cluster or node, or our own packets looped back).
pub fn rejections(c: &Counters) -> [(&'static str, &'static str, u64); 14] {
    [
        ("bad-mac", "forged", c.bad_mac),
        ("unknown-key-id", "forged", c.unknown_key_id),
        ("replay", "replayed", c.replay),
        ("stale", "replayed", c.stale),
        ("too-short", "malformed", c.too_short),
        ("too-long", "malformed", c.too_long),
        ("bad-magic", "malformed", c.bad_magic),
        ("bad-body", "malformed", c.bad_body),
        ("unsupported-version", "malformed", c.unsupported_version),
        ("unknown-flags", "malformed", c.unknown_flags),
        ("wrong-cluster", "misdirected", c.wrong_cluster),
        ("unknown-sender", "misdirected", c.unknown_sender),
        ("from-self", "misdirected", c.from_self),
        ("unknown-link", "misdirected", c.unknown_link),
    ]
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn seconds(ms: u64) -> SecondsGauge {
    let g = SecondsGauge::default();
    g.set(ms as f64 / 1000.0);
    g
}

fn one_hot<T: PartialEq + Copy>(
    all: &[T],
    current: Option<T>,
    label: &'static str,
    name: impl Fn(T) -> String,
) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    for &s in all {
        f.get_or_create(&vec![(label, name(s))])
            .set(i64::from(Some(s) == current));
    }
    f
}

fn peer_view_name(v: PeerView) -> String {
    match v {
        PeerView::Unknown => "unknown",
        PeerView::Alive => "alive",
        PeerView::Late => "late",
        PeerView::Dead => "dead",
    }
    .to_string()
}

fn disk_name(d: DiskState) -> String {
    // The names DRBD itself prints, so a dashboard reads like `drbdadm status`.
    format!("{d:?}")
}

pub fn render(st: &DaemonStatus, rec: &Recorder, extra: Extra) -> String {
    let core = &st.core;
    let mut r = Registry::with_prefix("twinbeat");
    r.register(
        "node_state",
        "1 for the state this node is in, 0 for the others",
        one_hot(&NodeState::ALL, Some(core.state), "state", |s| {
            s.as_str().to_string()
        }),
    );
    r.register(
        "term",
        "The term this node holds (increments on every takeover)",
        gauge(core.term as i64),
    );
    r.register(
        "service_serving",
        "1 when this node answers 200 on /health (active, every resource held, nothing running)",
        gauge(i64::from(Verdict::of(core) == Verdict::Serving)),
    );
    r.register(
        "maintenance",
        "1 while maintenance mode is on",
        gauge(i64::from(core.maintenance)),
    );
    r.register(
        "generation",
        "Boot generation of this daemon",
        gauge(st.generation as i64),
    );
    r.register_with_unit(
        "uptime",
        "Time since this daemon started",
        Unit::Seconds,
        seconds(st.uptime_ms),
    );
    r.register_with_unit(
        "state_age",
        "Time since the last state change",
        Unit::Seconds,
        seconds(core.since_ms),
    );
    r.register(
        "disk_state",
        "1 for the local DRBD disk state, 0 for the others",
        one_hot(&DiskState::ALL, Some(core.disk), "disk", disk_name),
    );
    r.register(
        "peer_view",
        "1 for how this node sees the peer, 0 for the others",
        one_hot(
            &[
                PeerView::Unknown,
                PeerView::Alive,
                PeerView::Late,
                PeerView::Dead,
            ],
            Some(core.peer.view),
            "view",
            peer_view_name,
        ),
    );
    r.register(
        "peer_state",
        "1 for the state the peer last reported, 0 for the others (all 0 before the first heartbeat)",
        one_hot(&NodeState::ALL, core.peer.state, "state", |s| {
            s.as_str().to_string()
        }),
    );
    if let Some(t) = core.peer.term {
        r.register(
            "peer_term",
            "The term the peer last reported",
            gauge(t as i64),
        );
    }
    if let Some(ok) = core.tiebreaker {
        r.register(
            "tiebreaker_reachable",
            "1 when the tie-breaker last answered",
            gauge(i64::from(ok)),
        );
    }
    if let Some(rep) = &st.replication {
        let f = Family::<Labels, Gauge>::default();
        f.get_or_create(&vec![("drbd_resource", rep.resource.clone())])
            .set(i64::from(rep.replicating()));
        r.register(
            "drbd_replicating",
            "1 while DRBD is connected to the peer (writes reach both disks), 0 otherwise",
            f,
        );
    }
    r.register(
        "takeovers",
        "Takeovers by this node since the daemon started",
        counter(core.takeovers),
    );
    r.register(
        "resource_restarts",
        "In-place resource restarts since the daemon started",
        counter(core.restarts),
    );
    r.register(
        "split_brains",
        "Split brains detected (both nodes active) since the daemon started",
        counter(core.split_brains),
    );

    let held = Family::<Labels, Gauge>::default();
    for res in &core.resources {
        held.get_or_create(&vec![
            ("resource", res.name.clone()),
            ("kind", res.kind.clone()),
        ])
        .set(i64::from(res.held));
    }
    r.register(
        "resource_held",
        "1 when the resource is in place here",
        held,
    );

    let (up, age, beats, late, rejected) = (
        Family::<Labels, Gauge>::default(),
        Family::<Labels, SecondsGauge>::default(),
        Family::<Labels, Counter>::default(),
        Family::<Labels, Counter>::default(),
        Family::<Labels, Counter>::default(),
    );
    for l in &core.links {
        let k = vec![("link", l.name.clone())];
        up.get_or_create(&k).set(i64::from(l.up));
        if let Some(ms) = l.last_heard_ms_ago {
            age.get_or_create(&k).set(ms as f64 / 1000.0);
        }
        beats.get_or_create(&k).inc_by(l.beats);
        late.get_or_create(&k).inc_by(l.late);
        rejected.get_or_create(&k).inc_by(l.rejected);
    }
    r.register("link_up", "1 while the peer is heard on this link", up);
    r.register_with_unit(
        "link_heartbeat_age",
        "Time since the last valid heartbeat on this link (absent before the first)",
        Unit::Seconds,
        age,
    );
    r.register(
        "link_heartbeats_received",
        "Valid heartbeats received on this link",
        beats,
    );
    r.register(
        "link_heartbeats_late",
        "Times this link went past warntime without a heartbeat",
        late,
    );
    r.register(
        "link_heartbeats_rejected",
        "Datagrams rejected on this link (see heartbeats_rejected for why)",
        rejected,
    );

    let hb = &st.heartbeat;
    r.register(
        "heartbeats_sent",
        "Heartbeats sent (one per round, on every link)",
        counter(hb.sent),
    );
    r.register(
        "heartbeat_send_errors",
        "Heartbeat sends that failed on a link",
        counter(hb.send_errors),
    );
    let reasons = Family::<Labels, Counter>::default();
    for (reason, class, n) in rejections(&hb.counters) {
        reasons
            .get_or_create(&vec![
                ("reason", reason.to_string()),
                ("class", class.to_string()),
            ])
            .inc_by(n);
    }
    reasons
        .get_or_create(&vec![
            ("reason", "foreign-source".to_string()),
            ("class", "misdirected".to_string()),
        ])
        .inc_by(hb.foreign_source);
    r.register(
        "heartbeats_rejected",
        "Datagrams dropped before the core saw them, by reason",
        reasons,
    );
    let gaps = Family::<Labels, Counter>::default();
    for (i, name) in ["keepalive", "warntime", "deadtime", "beyond-deadtime"]
        .iter()
        .enumerate()
    {
        gaps.get_or_create(&vec![("within", name.to_string())])
            .inc_by(hb.gap_buckets[i]);
    }
    r.register(
        "heartbeat_gaps",
        "Gaps between fresh heartbeats: within 1.5 keepalives, warntime, deadtime, or beyond (lost heartbeats show up in the last three)",
        gaps,
    );
    r.register_with_unit(
        "heartbeat_max_gap",
        "Longest gap between fresh heartbeats since the daemon started",
        Unit::Seconds,
        seconds(hb.max_gap_ms),
    );
    r.register_with_unit(
        "loop_max_lag",
        "Longest time the driver loop was late for its own timer",
        Unit::Seconds,
        seconds(hb.max_loop_lag_ms),
    );
    r.register(
        "announce_frames",
        "Gratuitous ARP / unsolicited NA frames sent",
        counter(extra.announce_frames),
    );
    r.register(
        "garp_refresh_rounds",
        "Periodic refresh rounds sent (garp-refresh-ms)",
        counter(extra.refresh_rounds),
    );
    rec.register(&mut r);

    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label, and a
    // scrape must still answer rather than take the task down.
    if let Err(e) = encode(&mut out, &r) {
        out = format!("# cannot encode metrics: {e}\n# EOF\n");
    }
    out
}
