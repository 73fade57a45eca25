//! Heartbeat sockets: one UDP socket per configured link, bound to the link's interface
//! (SO_BINDTODEVICE) and to this node's address on it, sending to and accepting only the peer's
//! address on that link.
//!
//! Owns: opening, sending, receiving and source filtering. Must not touch: the wire format
//! (`proto`) or any decision (`core`).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::config;

/// Largest datagram read; anything longer is truncated and then rejected by `proto`.
const RECV_BUF: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error(
        "cannot open the heartbeat socket for link {link} ({local} on {interface}): {source}; \
         check that {interface} exists in this network namespace and carries {local}, and that \
         nothing else uses UDP port {port}"
    )]
    Bind {
        link: String,
        interface: String,
        local: SocketAddr,
        port: u16,
        source: io::Error,
    },
}

pub struct LinkSocket {
    pub name: String,
    pub peer: SocketAddr,
    socket: UdpSocket,
}

/// Every heartbeat link of this node.
pub struct Links {
    links: Vec<LinkSocket>,
}

/// A datagram received on a link, with where it came from.
pub struct Datagram {
    pub link: usize,
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Links {
    /// Opens one socket per link. Must run inside a tokio runtime.
    pub fn open(cfg: &config::Config) -> Result<Links, HeartbeatError> {
        let me = cfg.this_node;
        let peer = 1 - me.min(1);
        let mut links = Vec::with_capacity(cfg.links.len());
        for l in &cfg.links {
            let local = l.endpoint(me);
            let err = |source| HeartbeatError::Bind {
                link: l.name.clone(),
                interface: l.interface.clone(),
                local,
                port: l.port,
                source,
            };
            let socket = open_socket(&l.interface, local).map_err(err)?;
            links.push(LinkSocket {
                name: l.name.clone(),
                peer: l.endpoint(peer),
                socket,
            });
        }
        Ok(Links { links })
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name.clone()).collect()
    }

    /// Sends the same datagram on every link; returns the links where sending failed (a down
    /// interface is routine for a backup link, so this is not an error for the caller).
    pub fn send_all(&self, bytes: &[u8]) -> Vec<(usize, io::Error)> {
        let mut failed = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            // try_send_to never waits: a full socket buffer drops this heartbeat rather than
            // delaying the next one, which is what a liveness signal wants.
            if let Err(e) = l.socket.try_send_to(bytes, l.peer) {
                failed.push((i, e));
            }
        }
        failed
    }

    /// Waits for the next datagram on any link. Datagrams from anyone but the configured peer
    /// address of that link are returned too, so the caller can count them; `from_peer` tells.
    pub async fn recv(&self) -> io::Result<Datagram> {
        let futs = self.links.iter().enumerate().map(|(i, l)| {
            Box::pin(async move {
                let mut buf = vec![0u8; RECV_BUF];
                let (n, from) = l.socket.recv_from(&mut buf).await?;
                buf.truncate(n);
                Ok::<_, io::Error>(Datagram {
                    link: i,
                    from,
                    bytes: buf,
                })
            })
        });
        let (first, _, _) = futures::future::select_all(futs).await;
        first
    }

    pub fn from_peer(&self, d: &Datagram) -> bool {
        self.links
            .get(d.link)
            .is_some_and(|l| l.peer.ip() == d.from.ip())
    }
}

fn open_socket(interface: &str, local: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if local.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    // Heartbeats must leave through the link they test, never through a route via another one.
    s.bind_device(Some(interface.as_bytes()))?;
    if local.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Interactive-class priority: under load, heartbeats go out before bulk traffic.
    let _ = s.set_tos_v4(0x10);
    s.bind(&local.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}
