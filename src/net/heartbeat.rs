//! Heartbeat sockets (being written).
