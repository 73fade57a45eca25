//! `twinbeat witness`: the third-party arbiter that grants the "active" lease to at most one
//! node of a pair at a time (see `table.rs` for the rule, `core/node/lease.rs` for why it is
//! safe, `proto/lease.rs` for the datagrams).
//!
//! Owns: the witness's config, its UDP socket loop and its log. Must not touch: anything of the
//! nodes' daemon (`shell/`); it shares only the key file format and the wire code.

pub mod config;
pub mod server;
pub mod table;
