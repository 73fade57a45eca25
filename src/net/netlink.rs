//! Netlink address management (being written).
