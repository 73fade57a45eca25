//! Puts announcement frames on the wire: gratuitous ARP (both forms) for IPv4, unsolicited
//! neighbour advertisements for IPv6, through an AF_PACKET socket bound to the interface.
//!
//! Owns: the packet socket and the pacing of a burst. Must not touch: addresses (that is
//! `net::netlink`), frame bytes (that is `proto::announce`), or deciding when to announce (the
//! core asks; `resources::vip` schedules the second burst).
//!
//! A burst is `count` rounds `spacing` apart, the first round immediately. One round is, for
//! IPv4, one ARP request and one ARP reply; for IPv6, one NA. Sends never block: the socket is
//! non-blocking and a full queue drops that frame with a warning (the next round repeats it),
//! so a burst's duration is bounded by `(count - 1) * spacing` plus one netlink lookup.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::netlink::{self, NetlinkError};
use crate::proto::announce::{ArpFrame, Mac, NaFrame};

/// The first burst: 3 rounds, 100 ms apart (the first at once).
pub const FIRST_BURST: Burst = Burst {
    count: 3,
    spacing: Duration::from_millis(100),
};
/// The second burst, sent [`SECOND_BURST_DELAY`] after the first: catches switches and hosts
/// that were busy or had their port flapping while the first went out.
pub const SECOND_BURST: Burst = Burst {
    count: 3,
    spacing: Duration::from_millis(100),
};
pub const SECOND_BURST_DELAY: Duration = Duration::from_secs(3);

/// Frames put on the wire by this process, and periodic refresh rounds among them. Process-wide
/// because the announcing tasks live on the worker thread and the metrics endpoint on the
/// driver's: plain atomics are the one thing both can read without a lock or a channel.
static FRAMES_SENT: AtomicU64 = AtomicU64::new(0);
static REFRESH_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// (frames sent, refresh rounds sent) since the daemon started, for `/metrics`.
pub fn sent_totals() -> (u64, u64) {
    (
        FRAMES_SENT.load(Ordering::Relaxed),
        REFRESH_ROUNDS.load(Ordering::Relaxed),
    )
}

/// How many rounds, how far apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub count: u32,
    pub spacing: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Link(#[from] NetlinkError),
    #[error("interface {0} has no Ethernet address, so there is nothing to announce on it; use an Ethernet-like interface for the vip")]
    NoMac(String),
    #[error(
        "cannot open a packet socket on {ifname}: {source} (twinbeat needs root or CAP_NET_RAW)"
    )]
    Socket {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot send on {ifname}: {source}; check that the interface is up")]
    Send {
        ifname: String,
        #[source]
        source: io::Error,
    },
}

/// What a burst sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub frames: u32,
    pub dropped: u32,
}

/// A send-only AF_PACKET socket on one interface.
pub struct PacketSender {
    socket: Socket,
    ifname: String,
}

impl PacketSender {
    /// Opens a raw packet socket bound to `ifindex`. Protocol 0 means the kernel never queues
    /// received frames to it, so an idle sender costs nothing.
    pub fn open(ifname: &str, ifindex: u32) -> Result<PacketSender, AnnounceError> {
        let fail = |source| AnnounceError::Socket {
            ifname: ifname.to_string(),
            source,
        };
        let socket = Socket::new(Domain::PACKET, Type::RAW.cloexec(), None).map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        socket.bind(&link_addr(ifindex)?).map_err(fail)?;
        Ok(PacketSender {
            socket,
            ifname: ifname.to_string(),
        })
    }

    /// Sends one complete Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> Result<(), AnnounceError> {
        match self.socket.send(frame) {
            Ok(_) => Ok(()),
            Err(source) => Err(AnnounceError::Send {
                ifname: self.ifname.clone(),
                source,
            }),
        }
    }
}

/// A `sockaddr_ll` for `ifindex` (protocol 0: send-only).
fn link_addr(ifindex: u32) -> Result<SockAddr, AnnounceError> {
    let index = i32::try_from(ifindex).map_err(|_| AnnounceError::Socket {
        ifname: format!("#{ifindex}"),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: try_init hands us zeroed storage large enough for any sockaddr (sockaddr_ll
    // included, and all-zero is a valid sockaddr_ll); we set the family to AF_PACKET and the
    // length to exactly sizeof(sockaddr_ll), so the two agree.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = &mut *storage.cast::<libc::sockaddr_ll>();
            ll.sll_family = libc::AF_PACKET as u16;
            ll.sll_ifindex = index;
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }
    .map_err(|source| AnnounceError::Socket {
        ifname: format!("#{ifindex}"),
        source,
    })?;
    Ok(addr)
}

/// The frames of one round for `address` owned by `mac`.
pub fn round_frames(address: IpAddr, mac: Mac) -> Vec<Vec<u8>> {
    match address {
        IpAddr::V4(ip) => vec![
            ArpFrame::garp_request(mac, ip).encode().to_vec(),
            ArpFrame::garp_reply(mac, ip).encode().to_vec(),
        ],
        IpAddr::V6(ip) => vec![NaFrame::unsolicited(mac, ip).encode()],
    }
}

/// Announces `address` on `ifname`: `burst.count` rounds, the first at once.
///
/// Fails if the interface or its MAC cannot be found, the socket cannot be opened, or the
/// *first* round cannot be sent (nothing reached the wire: the caller should hear about it).
/// Later send failures are counted as dropped and logged, since the earlier rounds went out.
pub async fn announce_burst(
    ifname: &str,
    address: IpAddr,
    burst: Burst,
) -> Result<Sent, AnnounceError> {
    send_rounds(ifname, address, burst, false).await
}

/// One round of a periodic refresh (`garp-refresh-ms`): logged at debug, since an INFO line
/// every few seconds would bury the transitions an operator reads the log for.
pub async fn refresh_round(ifname: &str, address: IpAddr) -> Result<Sent, AnnounceError> {
    let once = Burst {
        count: 1,
        spacing: Duration::ZERO,
    };
    let sent = send_rounds(ifname, address, once, true).await?;
    REFRESH_ROUNDS.fetch_add(1, Ordering::Relaxed);
    Ok(sent)
}

async fn send_rounds(
    ifname: &str,
    address: IpAddr,
    burst: Burst,
    quiet: bool,
) -> Result<Sent, AnnounceError> {
    let started = Instant::now();
    let link = netlink::link_info(ifname).await?;
    let mac = link
        .mac
        .ok_or_else(|| AnnounceError::NoMac(ifname.to_string()))?;
    let sender = PacketSender::open(ifname, link.index)?;
    let frames = round_frames(address, mac);
    let mut sent = Sent::default();
    for round in 0..burst.count {
        if round > 0 {
            tokio::time::sleep(burst.spacing).await;
        }
        for frame in &frames {
            match sender.send(frame) {
                Ok(()) => {
                    sent.frames += 1;
                    FRAMES_SENT.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if round == 0 => return Err(e),
                Err(e) => {
                    sent.dropped += 1;
                    tracing::warn!(%address, interface = ifname, error = %e, "announce frame dropped");
                }
            }
        }
    }
    let kind = if address.is_ipv4() {
        "gratuitous arp"
    } else {
        "unsolicited na"
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if quiet {
        tracing::debug!(%address, interface = ifname, kind, frames = sent.frames, elapsed_ms, "refreshed address");
    } else {
        tracing::info!(
            %address,
            interface = ifname,
            kind,
            frames = sent.frames,
            dropped = sent.dropped,
            elapsed_ms,
            "announced address"
        );
    }
    Ok(sent)
}
