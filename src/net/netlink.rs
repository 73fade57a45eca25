//! Address management on one interface through rtnetlink: add, delete, list, and look up a
//! link's index and MAC.
//!
//! Owns: the netlink requests and the translation of kernel errors into messages that name
//! the fix. Must not touch: routes, links' state (up/down), other addresses than the one asked
//! for, and any decision about *whether* to add or remove — that is the core's, via
//! `resources::vip`.
//!
//! Every function opens its own netlink socket and drives the connection inside the same
//! future (no spawned task), so it works on the daemon's current-thread runtime, leaves nothing
//! running when it returns or is dropped (a step timeout drops it), and always acts in the
//! network namespace of the calling thread at the time of the call. The cost, one socket per
//! call, is a few microseconds; these calls happen on takeovers and probes, not per packet.
//! They must be polled inside a tokio runtime (the socket registers with its reactor).

use std::future::Future;
use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::LinkAttribute;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAMSIZ_MAX: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("no interface {0} in this network namespace; check `interface` in the vip resource")]
    NoInterface(String),
    #[error("cannot open a netlink socket: {0}; twinbeat must run on Linux with netlink access")]
    Socket(#[source] io::Error),
    #[error("the kernel refused to {op}: {source}{}", hint(.source))]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink failed during {op}: {detail}")]
    Protocol { op: String, detail: String },
    #[error("an address label ({0}) is IPv4 only; remove `label` from this IPv6 vip")]
    LabelOnIpv6(String),
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (run twinbeat as root or give it CAP_NET_ADMIN)"
        }
        _ => "",
    }
}

/// One address on an interface, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressEntry {
    pub address: IpAddr,
    pub prefix: u8,
    /// IPv4 label (`lan0:db`); the kernel reports the interface name when none was given.
    pub label: Option<String>,
}

/// A link's index and hardware address (None for links without one, e.g. tun devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
}

/// Runs `work` with a fresh handle while driving that handle's connection in the same future.
async fn with_handle<T, F, Fut>(op: &str, work: F) -> Result<T, NetlinkError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let (connection, handle, _unsolicited) =
        rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
    let work = work(handle);
    tokio::select! {
        biased;
        result = work => result,
        // The connection only ends on its own if the socket fails.
        () = connection => Err(NetlinkError::Protocol {
            op: op.to_string(),
            detail: "the netlink connection closed before the reply".into(),
        }),
    }
}

/// The kernel's errno for a failed request, if the failure was a netlink error reply.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn kernel(op: &str, e: rtnetlink::Error) -> NetlinkError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => NetlinkError::Kernel {
            op: op.to_string(),
            source: msg.to_io(),
        },
        other => NetlinkError::Protocol {
            op: op.to_string(),
            detail: other.to_string(),
        },
    }
}

async fn resolve(handle: &rtnetlink::Handle, ifname: &str) -> Result<LinkInfo, NetlinkError> {
    // The kernel answers EINVAL, not ENODEV, for names that cannot exist; both mean the same
    // thing to the operator.
    if ifname.is_empty() || ifname.len() > IFNAMSIZ_MAX || ifname.contains(['/', ' ', '\0']) {
        return Err(NetlinkError::NoInterface(ifname.to_string()));
    }
    let mut links = handle.link().get().match_name(ifname).execute();
    let link = match links.try_next().await {
        Ok(Some(link)) => link,
        Ok(None) => return Err(NetlinkError::NoInterface(ifname.to_string())),
        Err(e) if errno(&e) == Some(libc::ENODEV) => {
            return Err(NetlinkError::NoInterface(ifname.to_string()))
        }
        Err(e) => return Err(kernel(&format!("look up interface {ifname}"), e)),
    };
    let mac = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) if bytes.len() == 6 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(bytes);
            Some(m)
        }
        _ => None,
    });
    Ok(LinkInfo {
        index: link.header.index,
        mac,
    })
}

/// Index and MAC of `ifname`.
pub async fn link_info(ifname: &str) -> Result<LinkInfo, NetlinkError> {
    with_handle("link lookup", |h| async move { resolve(&h, ifname).await }).await
}

fn entry(msg: &AddressMessage) -> Option<AddressEntry> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
    // links and equal to IFA_LOCAL otherwise. IPv6 only sends IFA_ADDRESS.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    let label = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Label(l) => Some(l.clone()),
        _ => None,
    });
    Some(AddressEntry {
        address,
        prefix: msg.header.prefix_len,
        label,
    })
}

async fn dump(
    handle: &rtnetlink::Handle,
    index: u32,
    op: &str,
) -> Result<Vec<(AddressEntry, AddressMessage)>, NetlinkError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| kernel(op, e))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| entry(&m).map(|e| (e, m)))
        .collect())
}

/// Every address on `ifname`.
pub async fn list_addresses(ifname: &str) -> Result<Vec<AddressEntry>, NetlinkError> {
    with_handle("address list", |h| async move {
        let link = resolve(&h, ifname).await?;
        let op = format!("list the addresses of {ifname}");
        Ok(dump(&h, link.index, &op)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    })
    .await
}

/// Whether `addr` (with any prefix) is on `ifname`.
pub async fn has_address(ifname: &str, addr: IpAddr) -> Result<bool, NetlinkError> {
    Ok(list_addresses(ifname)
        .await?
        .iter()
        .any(|e| e.address == addr))
}

/// Adds `addr/prefix` to `ifname`. Returns `true` if it was added, `false` if it was already
/// there (EEXIST counts as done, so acquiring twice is harmless).
///
/// IPv6 addresses are added with `nodad`: duplicate address detection would keep a VIP
/// "tentative" (unusable) for a second or more after a takeover, and the address is supposed
/// to move between the nodes; the core, not DAD, guarantees one holder.
pub async fn add_address(
    ifname: &str,
    addr: IpAddr,
    prefix: u8,
    label: Option<&str>,
) -> Result<bool, NetlinkError> {
    if let (IpAddr::V6(_), Some(l)) = (addr, label) {
        return Err(NetlinkError::LabelOnIpv6(l.to_string()));
    }
    with_handle("address add", |h| async move {
        let link = resolve(&h, ifname).await?;
        let mut req = h.address().add(link.index, addr, prefix);
        let msg = req.message_mut();
        if let Some(l) = label {
            msg.attributes.push(AddressAttribute::Label(l.to_string()));
        }
        if addr.is_ipv6() {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(kernel(&format!("add {addr}/{prefix} to {ifname}"), e)),
        }
    })
    .await
}

/// Removes `addr` from `ifname`, whatever its prefix. Returns `true` if something was removed,
/// `false` if it was not there (EADDRNOTAVAIL counts as done, so releasing twice is harmless).
pub async fn del_address(ifname: &str, addr: IpAddr) -> Result<bool, NetlinkError> {
    with_handle("address delete", |h| async move {
        let link = resolve(&h, ifname).await?;
        let op = format!("remove {addr} from {ifname}");
        let mut removed = false;
        // Delete by the kernel's own record so a prefix that differs from the config (an
        // operator's manual `ip addr add`) does not leave the address behind.
        for (e, msg) in dump(&h, link.index, &op).await? {
            if e.address != addr {
                continue;
            }
            match h.address().del(msg).execute().await {
                Ok(()) => removed = true,
                Err(err) if errno(&err) == Some(libc::EADDRNOTAVAIL) => {}
                Err(err) => return Err(kernel(&op, err)),
            }
        }
        Ok(removed)
    })
    .await
}
