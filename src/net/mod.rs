//! Network I/O at the edge: heartbeat sockets, netlink address management, and announcing a
//! service address (gratuitous ARP / unsolicited neighbour advertisement).

pub mod announce;
pub mod heartbeat;
pub mod netlink;
