//! The witness's lease table: who holds the "active" lease and until when, on the witness's own
//! clock. Pure: time comes in as `Millis`, nothing is persisted.
//!
//! Owns: the grant rule. Must not touch: sockets, the wire format, clocks.
//!
//! Rules (the argument is in `core/node/lease.rs`):
//! - grant (or renew) to a node only when no *other* node holds an unexpired lease;
//! - an expiry is `grant time + lease`, on this clock, and only ever moves forward for the holder;
//! - for the first `lease` after start, grant nothing: a previous run of the witness may have
//!   granted a lease that is still trusted, and it left no record. So no state needs to survive a
//!   restart, and a restart cannot hand out a second lease;
//! - a release from the holder ends its lease at once: the holder promises to have forgotten it
//!   (the node's core drops its lease before its shell sends the release).

use serde::{Deserialize, Serialize};

pub type Millis = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "answer")]
pub enum Answer {
    /// The requester holds the lease for `lease_ms` from now (witness clock).
    Granted { lease_ms: Millis },
    /// Not granted; `holder` (if any) has `remaining_ms` left.
    Denied {
        holder: Option<u16>,
        remaining_ms: Millis,
    },
    /// The current holder and its time left (answer to a query or a release).
    Status {
        holder: Option<u16>,
        remaining_ms: Millis,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    node: u16,
    expiry: Millis,
}

#[derive(Clone, Debug)]
pub struct Table {
    lease_ms: Millis,
    /// Nothing is granted before this moment (start + lease).
    quiet_until: Millis,
    holder: Option<Holder>,
    pub grants: u64,
    pub denials: u64,
    /// How often the lease went from one node to the other.
    pub changes: u64,
}

impl Table {
    pub fn new(now: Millis, lease_ms: Millis) -> Table {
        Table {
            lease_ms,
            quiet_until: now + lease_ms,
            holder: None,
            grants: 0,
            denials: 0,
            changes: 0,
        }
    }

    pub fn lease_ms(&self) -> Millis {
        self.lease_ms
    }

    /// The holder of an unexpired lease and its time left.
    pub fn holder(&self, now: Millis) -> Option<(u16, Millis)> {
        self.holder
            .filter(|h| h.expiry > now)
            .map(|h| (h.node, h.expiry - now))
    }

    /// Time left in the start-up quiet period.
    pub fn quiet_ms(&self, now: Millis) -> Millis {
        self.quiet_until.saturating_sub(now)
    }

    fn status(&self, now: Millis) -> (Option<u16>, Millis) {
        match self.holder(now) {
            Some((n, left)) => (Some(n), left),
            None => (None, 0),
        }
    }

    pub fn request(&mut self, now: Millis, node: u16) -> Answer {
        let (holder, remaining_ms) = self.status(now);
        let other = holder.is_some_and(|h| h != node);
        if other || now < self.quiet_until {
            self.denials += 1;
            return Answer::Denied {
                holder,
                // During the quiet period nobody holds anything this run knows of: say how long
                // until a grant is possible.
                remaining_ms: if other {
                    remaining_ms
                } else {
                    self.quiet_ms(now)
                },
            };
        }
        if self.holder.is_some_and(|h| h.node != node) {
            self.changes += 1;
        }
        let expiry = now + self.lease_ms;
        let expiry = match self.holder {
            Some(h) if h.node == node => h.expiry.max(expiry),
            _ => expiry,
        };
        self.holder = Some(Holder { node, expiry });
        self.grants += 1;
        Answer::Granted {
            lease_ms: self.lease_ms,
        }
    }

    pub fn query(&self, now: Millis) -> Answer {
        let (holder, remaining_ms) = self.status(now);
        Answer::Status {
            holder,
            remaining_ms,
        }
    }

    pub fn release(&mut self, now: Millis, node: u16) -> Answer {
        if self.holder.is_some_and(|h| h.node == node) {
            self.holder = None;
        }
        self.query(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_a_quiet_start() {
        let mut t = Table::new(0, 3_000);
        assert!(matches!(
            t.request(100, 1),
            Answer::Denied {
                holder: None,
                remaining_ms: 2_900
            }
        ));
        assert_eq!(t.request(3_000, 1), Answer::Granted { lease_ms: 3_000 });
        assert!(matches!(
            t.request(3_500, 2),
            Answer::Denied {
                holder: Some(1),
                remaining_ms: 2_500
            }
        ));
        assert_eq!(t.request(4_000, 1), Answer::Granted { lease_ms: 3_000 });
        // Expired only at 7000 on this clock.
        assert!(matches!(t.request(6_999, 2), Answer::Denied { .. }));
        assert_eq!(t.request(7_000, 2), Answer::Granted { lease_ms: 3_000 });
        assert_eq!(t.changes, 1);
    }

    #[test]
    fn release_frees_only_the_holders_lease() {
        let mut t = Table::new(0, 1_000);
        t.request(1_000, 1);
        assert!(matches!(
            t.release(1_100, 2),
            Answer::Status {
                holder: Some(1),
                ..
            }
        ));
        assert!(matches!(
            t.release(1_100, 1),
            Answer::Status { holder: None, .. }
        ));
        assert_eq!(t.request(1_101, 2), Answer::Granted { lease_ms: 1_000 });
    }
}
