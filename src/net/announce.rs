//! Gratuitous ARP / unsolicited NA senders (being written).
