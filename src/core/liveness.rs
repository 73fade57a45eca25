//! Peer liveness per link: when each link last carried a valid heartbeat, and what that means
//! for the peer as a whole (alive, late, dead). Pure bookkeeping; decisions live in `node`.

use serde::{Deserialize, Serialize};

use super::types::{Beat, Echo, Millis};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerView {
    /// Never heard since this node started.
    Unknown,
    Alive,
    /// Silent on every link for longer than `warntime`.
    Late,
    /// Silent on every link for `deadtime` or longer.
    Dead,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct LinkState {
    pub last_rx: Option<Millis>,
    pub beats: u64,
    pub rejected: u64,
    pub late: u64,
    /// Whether we have already warned about this link being down (edge-triggered alerts).
    pub reported_down: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct PeerTracker {
    pub links: Vec<LinkState>,
    /// The newest beat's content (fresh datagrams only).
    pub beat: Option<Beat>,
    pub beat_at: Option<Millis>,
    /// When this node first heard the peer on any link.
    pub first_rx: Option<Millis>,
    pub generation: Option<u64>,
    pub restarts_seen: u64,
    pub max_gap_ms: Millis,
    /// What this node's beats echo: the peer's generation and the stamp of its newest fresh
    /// beat (none when that beat carried no stamp).
    pub echo: Option<Echo>,
}

impl PeerTracker {
    pub fn new(links: usize) -> PeerTracker {
        PeerTracker {
            links: vec![LinkState::default(); links],
            beat: None,
            beat_at: None,
            first_rx: None,
            generation: None,
            restarts_seen: 0,
            max_gap_ms: 0,
            echo: None,
        }
    }

    pub fn last_rx(&self) -> Option<Millis> {
        self.links.iter().filter_map(|l| l.last_rx).max()
    }

    pub fn view(&self, now: Millis, warntime: Millis, deadtime: Millis) -> PeerView {
        match self.last_rx() {
            None => PeerView::Unknown,
            Some(t) if now.saturating_sub(t) >= deadtime => PeerView::Dead,
            Some(t) if now.saturating_sub(t) > warntime => PeerView::Late,
            Some(_) => PeerView::Alive,
        }
    }

    /// The peer's last beat, if the peer is currently reachable (alive or late).
    pub fn live_beat(&self, now: Millis, warntime: Millis, deadtime: Millis) -> Option<Beat> {
        match self.view(now, warntime, deadtime) {
            PeerView::Alive | PeerView::Late => self.beat,
            PeerView::Unknown | PeerView::Dead => None,
        }
    }

    /// Records a heartbeat; returns the gap since the previous one on any link (for late
    /// detection) and whether the peer restarted (new boot generation).
    pub fn record(
        &mut self,
        now: Millis,
        link: usize,
        generation: u64,
        beat: Beat,
        fresh: bool,
    ) -> Received {
        let gap = self.last_rx().map(|t| now.saturating_sub(t));
        let restarted = self.generation.is_some_and(|g| g != generation);
        self.first_rx.get_or_insert(now);
        if let Some(l) = self.links.get_mut(link) {
            l.last_rx = Some(now);
            l.beats += 1;
            l.reported_down = false;
        }
        if fresh {
            self.beat = Some(beat);
            self.beat_at = Some(now);
            if restarted {
                self.restarts_seen += 1;
            }
            self.generation = Some(generation);
            self.echo = beat.stamp.map(|stamp| Echo { generation, stamp });
        }
        if let Some(g) = gap {
            self.max_gap_ms = self.max_gap_ms.max(g);
        }
        Received {
            gap,
            restarted: restarted && fresh,
        }
    }
}

pub(crate) struct Received {
    pub gap: Option<Millis>,
    pub restarted: bool,
}
