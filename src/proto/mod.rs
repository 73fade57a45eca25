//! Heartbeat wire format (stub).
