//! The heartbeat wire protocol, as pure functions and small state machines.
//!
//! Owns: the datagram layout (`wire`), keys and MACs (`auth`), the per-peer replay window
//! (`replay`), numbering outgoing beats (`sender`), the receive check pipeline and its counters
//! (`receiver`, `reject`). Must not touch: sockets, clocks, randomness, files, logging, or the
//! failover decisions of `core/` — the shell moves bytes, the core interprets beats.
//!
//! One heartbeat is one UDP datagram (default port [`DEFAULT_PORT`]) carrying the sender's
//! header and a [`Beat`](crate::core::types::Beat), signed with HMAC-SHA256 (87 bytes in all) or
//! HMAC-SHA1 (75 bytes). The byte layout is documented in [`wire`].

pub mod auth;
pub mod receiver;
pub mod reject;
pub mod replay;
pub mod sender;
pub mod wire;

pub use auth::{Algorithm, Keyring, KeyringError, MIN_KEY_LEN};
pub use receiver::{Accepted, Receiver};
pub use reject::{Counters, Reject};
pub use replay::{Verdict, Window};
pub use sender::Sender;
pub use wire::{datagram_len, decode, encode, EncodeError, Header, MAX_DATAGRAM};

/// Heartbeat's `ha-cluster` port, the default for every link.
pub const DEFAULT_PORT: u16 = 694;
