//! twinbeat: a failover daemon for a pair of database servers.
//!
//! # Layout
//!
//! ```text
//! core/     PURE failover state machine: Node::handle(now, Input), handle_timeout(now),
//!           poll_timeout(), poll_action(), status(). No I/O, no clock, no randomness.
//! proto/    PURE heartbeat wire format: encode/decode, HMAC, replay window.
//! config/   TOML config: raw serde types -> validate() (every problem, FILE:LINE:COL) -> Config.
//! resources/ executors for the core's steps: drbd, filesystem, mysql, vip, exec, systemd.
//! net/      heartbeat sockets (socket2), netlink (rtnetlink), announce (GARP / NA).
//! exec.rs   run(argv, timeout): null stdin, logged argv, output tail in errors, group kill.
//! shell/    the daemon: driver loop, worker thread, control socket, state dir, signals.
//! cli/      one file per subcommand (`check`, `run`, `status`, `standby`, ...).
//! ```
//!
//! Dependencies flow one way: `cli -> shell -> {core, proto, resources, net, config}`, and
//! `core` depends on nothing but `std` and plain data types.
//!
//! # Determinism contract of `core/`
//!
//! The same `CoreParams`, the same start arguments and the same sequence of
//! `(now, Input)` / `handle_timeout(now)` calls always produce the same actions in the same
//! order. The core therefore never reads a clock, never draws random numbers and never iterates
//! a hash map; the simulator in `tests/` relies on this to replay any failing run from its seed.

pub mod cli;
pub mod config;
pub mod core;
pub mod exec;
pub mod net;
pub mod proto;
pub mod resources;
pub mod shell;
pub mod witness;
