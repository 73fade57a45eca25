//! The replay window of one peer: decides whether an authenticated (generation, seq) is new.
//!
//! Owns: the highest (generation, seq) delivered, which recent seqs were delivered, and the
//! highest seq seen on each link. Must not touch: MACs or bytes (only authenticated headers reach
//! it), clocks, persistence.
//!
//! # Why it looks like this
//!
//! A sender sends the *same* datagram on every link. So the receiver sees each seq up to once per
//! link, and must (a) deliver each body at most once and never go backwards, since an older
//! body is an older view of the peer, and (b) still learn that every link the datagram came in on
//! is alive, because the core declares the peer dead only when it is silent on every link.
//!
//! For the peer's current generation:
//! - seq above the highest delivered: **Fresh**. The body is new and the link is alive.
//! - seq already delivered from another link, within the last [`RECENT`] seqs, and above this
//!   link's own highest seq: **LinkDuplicate**. The body is old news, but this copy proves the
//!   link carries the peer's current stream. "Above this link's highest" is what stops a replay:
//!   each link can vouch for a given seq at most once, and only moving forward.
//! - anything else: **Stale** (the same datagram again on the same link, a reorder behind a newer
//!   one, a seq that was never delivered because a newer one overtook it, or something older than
//!   the recent window). It is counted: on a healthy network it is rare, and a burst of it is
//!   either a bad link or someone replaying captured traffic.
//!
//! Generations: the sender persists its boot generation and increments it on every start, and
//! restarts seq from 0. An older generation is a **Replay** (the peer cannot go back in time); a
//! newer one means the peer restarted, so it is Fresh and the window starts over.
//!
//! Limitation: the window is in memory. After *this* daemon restarts it accepts the first
//! authentic datagram it sees, whatever its generation, so captured traffic can be replayed once
//! until the real peer's next heartbeat (a newer or equal generation with a higher seq) takes
//! over. The MAC still keeps anything that the peer never sent out.

use super::reject::Reject;

/// How many seqs behind the highest delivered one a link duplicate may be. One bit each in a
/// `u64`; a link lagging 64 heartbeats behind another is reported as stale instead.
pub const RECENT: u64 = 64;

/// What the window thinks of an authenticated (generation, seq) on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A body the receiver has not delivered before; deliver it.
    Fresh,
    /// The body was already delivered from another link; only the link's liveness is news.
    LinkDuplicate,
}

#[derive(Clone, Debug)]
pub struct Window {
    /// `None` until the first datagram is accepted.
    generation: Option<u64>,
    /// Highest seq delivered in `generation`.
    highest: u64,
    /// Bit i set: seq `highest - i` was delivered (from some link).
    delivered: u64,
    /// Highest seq accepted (fresh or duplicate) on each link in `generation`.
    links: Vec<Option<u64>>,
}

impl Window {
    /// A window for a receiver with `links` heartbeat links (indexes `0..links`).
    pub fn new(links: usize) -> Window {
        Window {
            generation: None,
            highest: 0,
            delivered: 0,
            links: vec![None; links],
        }
    }

    /// The peer's current generation, once one datagram has been accepted.
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Fails when `link` is not one of the links this window was built for.
    pub fn check_link(&self, link: usize) -> Result<(), Reject> {
        if link < self.links.len() {
            Ok(())
        } else {
            Err(Reject::UnknownLink {
                link,
                links: self.links.len(),
            })
        }
    }

    /// Classifies (generation, seq) arriving on `link` without changing anything, so the caller
    /// can still refuse the datagram (bad body) before [`Window::commit`].
    pub fn check(&self, link: usize, generation: u64, seq: u64) -> Result<Verdict, Reject> {
        let Some(link_highest) = self.links.get(link) else {
            return Err(Reject::UnknownLink {
                link,
                links: self.links.len(),
            });
        };
        let Some(current) = self.generation else {
            return Ok(Verdict::Fresh);
        };
        if generation < current {
            return Err(Reject::Replay {
                generation,
                current,
            });
        }
        if generation > current || seq > self.highest {
            return Ok(Verdict::Fresh);
        }
        let behind = self.highest - seq;
        let was_delivered = behind < RECENT && self.delivered & (1u64 << behind) != 0;
        let new_on_link = link_highest.is_none_or(|h| seq > h);
        if was_delivered && new_on_link {
            Ok(Verdict::LinkDuplicate)
        } else {
            // `highest` is always >= seq here, so the message is true for every stale cause.
            Err(Reject::Stale {
                seq,
                highest: self.highest,
            })
        }
    }

    /// Records a datagram that [`Window::check`] accepted with `verdict`.
    pub fn commit(&mut self, link: usize, generation: u64, seq: u64, verdict: Verdict) {
        if link >= self.links.len() {
            return;
        }
        match verdict {
            Verdict::Fresh if self.generation != Some(generation) => {
                // First datagram, or the peer restarted: forget the old generation entirely.
                self.generation = Some(generation);
                self.highest = seq;
                self.delivered = 1;
                self.links.iter_mut().for_each(|l| *l = None);
            }
            Verdict::Fresh => {
                let shift = seq - self.highest;
                self.delivered = if shift >= RECENT {
                    0
                } else {
                    self.delivered << shift
                };
                self.delivered |= 1;
                self.highest = seq;
            }
            Verdict::LinkDuplicate => {}
        }
        self.links[link] = Some(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut Window, link: usize, g: u64, s: u64) -> Result<Verdict, Reject> {
        let v = w.check(link, g, s)?;
        w.commit(link, g, s, v);
        Ok(v)
    }

    #[test]
    fn skipped_seq_arriving_late_on_another_link_is_stale_not_duplicate() {
        // seq 6 never delivered (7 overtook it on link 0): a late copy on link 1 must not be
        // reported as "already delivered".
        let mut w = Window::new(2);
        assert_eq!(accept(&mut w, 0, 1, 5), Ok(Verdict::Fresh));
        assert_eq!(accept(&mut w, 0, 1, 7), Ok(Verdict::Fresh));
        assert!(matches!(accept(&mut w, 1, 1, 6), Err(Reject::Stale { .. })));
        assert_eq!(accept(&mut w, 1, 1, 7), Ok(Verdict::LinkDuplicate));
    }

    #[test]
    fn duplicate_older_than_recent_window_is_stale() {
        let mut w = Window::new(2);
        accept(&mut w, 0, 1, 0).unwrap();
        accept(&mut w, 0, 1, RECENT).unwrap();
        assert!(matches!(accept(&mut w, 1, 1, 0), Err(Reject::Stale { .. })));
        assert_eq!(accept(&mut w, 1, 1, RECENT), Ok(Verdict::LinkDuplicate));
    }

    #[test]
    fn a_link_cannot_vouch_backwards() {
        let mut w = Window::new(2);
        for s in 1..=3 {
            accept(&mut w, 0, 1, s).unwrap();
        }
        assert_eq!(accept(&mut w, 1, 1, 3), Ok(Verdict::LinkDuplicate));
        assert!(matches!(accept(&mut w, 1, 1, 2), Err(Reject::Stale { .. })));
    }

    #[test]
    fn unknown_link_is_reported() {
        let w = Window::new(1);
        assert_eq!(
            w.check(1, 0, 0),
            Err(Reject::UnknownLink { link: 1, links: 1 })
        );
    }
}
