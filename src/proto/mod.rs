//! The heartbeat wire protocol, as pure functions and small state machines.
//!
//! Owns: the datagram layout (`wire`), keys and MACs (`auth`), the per-peer replay window
//! (`replay`), numbering outgoing beats (`sender`), the receive check pipeline and its counters
//! (`receiver`, `reject`). Must not touch: sockets, clocks, randomness, files, logging, or the
//! failover decisions of `core/` — the shell moves bytes, the core interprets beats.
//!
//! One heartbeat is one UDP datagram (default port [`DEFAULT_PORT`]) carrying the sender's
//! header and a [`Beat`](crate::core::types::Beat), signed with HMAC-SHA256 (112 bytes in all,
//! 87 in the version-1 layout) or HMAC-SHA1 (100 bytes, 75). The byte layout, and when a sender
//! uses which version, is documented in [`wire`].
//!
//! ```
//! use twinbeat::core::types::{Beat, DiskState, NodeState};
//! use twinbeat::proto::{Algorithm, Keyring, Receiver, Sender};
//!
//! let keys = Keyring::new(Algorithm::HmacSha256, [(1u8, b"at-least-16-bytes-of-key")]).unwrap();
//! // Node 2, cluster 7, boot generation 3 (persisted and incremented on every start).
//! let mut sender = Sender::new(keys.clone(), 1, 7, 2, 3).unwrap();
//! // Node 1 hears node 2 on two links.
//! let mut receiver = Receiver::new(keys, 7, 1, 2, 2);
//!
//! let beat = Beat { state: NodeState::Active, term: 1, held: 0b111, disk: DiskState::UpToDate,
//!                   handoff: None, outdate: None, stamp: None, echo: None };
//! // Version 1 until node 1's beats show that it reads version 2 (`set_peer_reads_v2`).
//! let datagram = sender.next(&beat); // the same bytes go out on every link
//! assert_eq!(datagram.len(), 87);
//! assert!(receiver.accept(0, &datagram).unwrap().fresh); // new body: deliver it
//! assert!(!receiver.accept(1, &datagram).unwrap().fresh); // link 1 is alive too
//! assert!(receiver.accept(1, &datagram).is_err()); // a third copy is stale
//! ```

pub mod announce;
pub mod auth;
pub mod lease;
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
pub use wire::{
    datagram_len, datagram_len_v1, decode, encode, encode_v1, EncodeError, Header, MAX_DATAGRAM,
};

/// Heartbeat's `ha-cluster` port, the default for every link.
pub const DEFAULT_PORT: u16 = 694;
