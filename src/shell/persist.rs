//! Writes the term off the event loop. An fsync on a busy disk can take seconds (a database
//! flushing, a resync, a build); done in the loop it stopped the heartbeats, and the peer took
//! the node for dead in the middle of its own takeover. The loop keeps sending heartbeats while
//! a write is in flight and holds back every other action until the term is durable, so no
//! resource, lease or answer ever acts on a term a restart could forget.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::state::StateDir;

/// A finished write: the term, how long it took, and the error if it failed.
pub struct Written {
    pub term: u64,
    pub took: Duration,
    pub error: Option<String>,
}

pub struct Persister {
    terms: std::sync::mpsc::Sender<u64>,
    pub written: mpsc::UnboundedReceiver<Written>,
}

impl Persister {
    /// Moves the state directory to its own thread.
    pub fn start(mut state: StateDir) -> Persister {
        let (terms, rx) = std::sync::mpsc::channel::<u64>();
        let (tx, written) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("twinbeat-persist".into())
            .spawn(move || {
                for term in rx {
                    let t0 = Instant::now();
                    let error = state.set_term(term).err().map(|e| e.to_string());
                    let done = Written {
                        term,
                        took: t0.elapsed(),
                        error,
                    };
                    if tx.send(done).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the persist thread");
        Persister { terms, written }
    }

    /// Starts writing `term`; its `Written` arrives on `written`.
    pub fn write(&self, term: u64) {
        // The thread ends only when this sender is dropped, so the send cannot fail while the
        // daemon runs.
        let _ = self.terms.send(term);
    }
}
