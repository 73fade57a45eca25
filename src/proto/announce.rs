//! Frames that announce a service address: gratuitous ARP (IPv4) and unsolicited neighbour
//! advertisement (IPv6), as complete Ethernet frames, built and parsed as pure functions.
//!
//! Owns: the byte layout of these frames and the ICMPv6 checksum. Must not touch: sockets,
//! interfaces, clocks or logging — `net::announce` puts these bytes on the wire, tests parse
//! what they capture with the same code.
//!
//! # Gratuitous ARP (RFC 5227 §3, RFC 826), 42 bytes
//!
//! ```text
//!  0  dst MAC   ff:ff:ff:ff:ff:ff         (broadcast: every host on the segment must see it)
//!  6  src MAC   own MAC
//! 12  ethertype 0x0806
//! 14  htype 1 (Ethernet) · ptype 0x0800 · hlen 6 · plen 4
//! 20  oper      1 = request, 2 = reply
//! 22  sha       own MAC
//! 28  spa       VIP
//! 32  tha       00:00:00:00:00:00 (request) / own MAC (reply)
//! 38  tpa       VIP
//! ```
//!
//! Both forms are sent because receivers differ: most stacks update an existing cache entry
//! from either, but some (older switches, some embedded stacks) only honour one of them.
//! Frames are not padded to 60 bytes; the NIC driver pads on real hardware, as for keepalived.
//!
//! # Unsolicited neighbour advertisement (RFC 4861 §4.4, §7.2.6), 86 bytes
//!
//! ```text
//!  0  dst MAC   33:33:00:00:00:01         (RFC 2464 §7 mapping of ff02::1)
//!  6  src MAC   own MAC
//! 12  ethertype 0x86dd
//! 14  IPv6      version 6, traffic class 0, flow 0 · payload length 32 · next header 58
//!               · hop limit 255 · src = VIP · dst = ff02::1
//! 54  ICMPv6    type 136 · code 0 · checksum (over the pseudo-header) · flags R=0 S=0 O=1
//!               · reserved · target = VIP
//! 78  option    type 2 (target link-layer address) · length 1 (8 bytes) · own MAC
//! ```
//!
//! The full frame is built (rather than letting a raw ICMPv6 socket build the IPv6 header)
//! so that one AF_PACKET socket serves both families, the hop limit is 255 by construction,
//! and the frame can be sent the moment the address is added, before the kernel would
//! consider it usable as a source. The source address is the VIP itself, as keepalived does:
//! RFC 4861 only asks for an address assigned to the sending interface.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ZERO_MAC: Mac = [0; 6];
/// `ff02::1` (all nodes) mapped to Ethernet (RFC 2464 §7).
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0, 0, 0, 1];
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ARP_FRAME_LEN: usize = 42;
pub const NA_FRAME_LEN: usize = 86;
const ETH_LEN: usize = 14;
const IPV6_LEN: usize = 40;
/// ICMPv6 NA header (8) + target (16) + target link-layer address option (8).
const NA_PAYLOAD_LEN: usize = 32;
const ICMPV6: u8 = 58;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OPT_TARGET_LLADDR: u8 = 2;
const NA_FLAG_ROUTER: u8 = 0x80;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;

/// Why bytes are not the frame the caller looked for. Tests use these to say what they saw.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short: {len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    #[error("not the expected ethertype: 0x{found:04x}, expected 0x{expected:04x}")]
    Ethertype { found: u16, expected: u16 },
    #[error("not an Ethernet/IPv4 ARP packet (htype {htype}, ptype 0x{ptype:04x}, hlen {hlen}, plen {plen})")]
    ArpFormat {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
    #[error("unknown ARP operation {0}, expected 1 (request) or 2 (reply)")]
    ArpOperation(u16),
    #[error("not an ICMPv6 packet in a plain IPv6 header (version {version}, next header {next})")]
    NotIcmpv6 { version: u8, next: u8 },
    #[error("IPv6 payload length {payload} does not fit the {available} bytes captured")]
    Truncated { payload: usize, available: usize },
    #[error("not a neighbour advertisement (ICMPv6 type {kind}, code {code})")]
    NotNeighborAdvertisement { kind: u8, code: u8 },
    #[error("bad ICMPv6 checksum 0x{found:04x}, computed 0x{computed:04x}")]
    Checksum { found: u16, computed: u16 },
    #[error("malformed neighbour discovery option at offset {0} (zero or overlong length)")]
    BadOption(usize),
}

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    Request,
    Reply,
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
        }
    }
}

/// An Ethernet/IPv4 ARP frame, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub op: ArpOp,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_mac: Mac,
    pub target_ip: Ipv4Addr,
}

impl ArpFrame {
    /// Gratuitous ARP, request form (RFC 5227 "ARP Announcement"): sender IP = target IP =
    /// the address, target MAC zero, broadcast.
    pub fn garp_request(mac: Mac, ip: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            eth_dst: BROADCAST,
            eth_src: mac,
            op: ArpOp::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: ZERO_MAC,
            target_ip: ip,
        }
    }

    /// Gratuitous ARP, reply form: as the request but operation 2 and target MAC = own MAC,
    /// still broadcast.
    pub fn garp_reply(mac: Mac, ip: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            op: ArpOp::Reply,
            target_mac: mac,
            ..ArpFrame::garp_request(mac, ip)
        }
    }

    /// Whether this frame announces `ip` as owned by its sender (either form).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip && self.eth_dst == BROADCAST
    }

    pub fn encode(&self) -> [u8; ARP_FRAME_LEN] {
        let mut f = [0u8; ARP_FRAME_LEN];
        f[0..6].copy_from_slice(&self.eth_dst);
        f[6..12].copy_from_slice(&self.eth_src);
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f[14..16].copy_from_slice(&1u16.to_be_bytes());
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
        f[18] = 6;
        f[19] = 4;
        f[20..22].copy_from_slice(&self.op.code().to_be_bytes());
        f[22..28].copy_from_slice(&self.sender_mac);
        f[28..32].copy_from_slice(&self.sender_ip.octets());
        f[32..38].copy_from_slice(&self.target_mac);
        f[38..42].copy_from_slice(&self.target_ip.octets());
        f
    }

    /// Parses a captured frame; trailing bytes (Ethernet padding) are ignored.
    pub fn parse(f: &[u8]) -> Result<ArpFrame, FrameError> {
        need(f, ARP_FRAME_LEN)?;
        ethertype(f, ETHERTYPE_ARP)?;
        let (htype, ptype, hlen, plen) = (be16(f, 14), be16(f, 16), f[18], f[19]);
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) {
            return Err(FrameError::ArpFormat {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        let op = match be16(f, 20) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => return Err(FrameError::ArpOperation(other)),
        };
        Ok(ArpFrame {
            eth_dst: mac_at(f, 0),
            eth_src: mac_at(f, 6),
            op,
            sender_mac: mac_at(f, 22),
            sender_ip: ipv4_at(f, 28),
            target_mac: mac_at(f, 32),
            target_ip: ipv4_at(f, 38),
        })
    }
}

/// An Ethernet/IPv6 neighbour advertisement, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaFrame {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The target link-layer address option, if present.
    pub target_mac: Option<Mac>,
}

impl NaFrame {
    /// Unsolicited NA for `ip` owned by `mac`: to all nodes, hop limit 255 (receivers drop
    /// ND packets with any other value, RFC 4861 §7.1.2), Override set so caches replace the
    /// old owner's MAC, Solicited clear (it answers nobody), Router clear (a database server
    /// is not a router).
    pub fn unsolicited(mac: Mac, ip: Ipv6Addr) -> NaFrame {
        NaFrame {
            eth_dst: ALL_NODES_MAC,
            eth_src: mac,
            src: ip,
            dst: ALL_NODES,
            hop_limit: 255,
            router: false,
            solicited: false,
            override_flag: true,
            target: ip,
            target_mac: Some(mac),
        }
    }

    /// Encodes the frame; without a target MAC option the frame is 8 bytes shorter.
    pub fn encode(&self) -> Vec<u8> {
        let payload_len = if self.target_mac.is_some() {
            NA_PAYLOAD_LEN
        } else {
            NA_PAYLOAD_LEN - 8
        };
        let mut f = vec![0u8; ETH_LEN + IPV6_LEN + payload_len];
        f[0..6].copy_from_slice(&self.eth_dst);
        f[6..12].copy_from_slice(&self.eth_src);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let ip = ETH_LEN;
        f[ip] = 0x60; // version 6, traffic class and flow label 0
        f[ip + 4..ip + 6].copy_from_slice(&(payload_len as u16).to_be_bytes());
        f[ip + 6] = ICMPV6;
        f[ip + 7] = self.hop_limit;
        f[ip + 8..ip + 24].copy_from_slice(&self.src.octets());
        f[ip + 24..ip + 40].copy_from_slice(&self.dst.octets());
        let icmp = ip + IPV6_LEN;
        f[icmp] = NEIGHBOR_ADVERTISEMENT;
        f[icmp + 4] = (u8::from(self.router) * NA_FLAG_ROUTER)
            | (u8::from(self.solicited) * NA_FLAG_SOLICITED)
            | (u8::from(self.override_flag) * NA_FLAG_OVERRIDE);
        f[icmp + 8..icmp + 24].copy_from_slice(&self.target.octets());
        if let Some(mac) = self.target_mac {
            f[icmp + 24] = OPT_TARGET_LLADDR;
            f[icmp + 25] = 1; // in units of 8 bytes
            f[icmp + 26..icmp + 32].copy_from_slice(&mac);
        }
        let sum = icmpv6_checksum(&self.src, &self.dst, &f[icmp..]);
        f[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// Parses a captured frame and verifies its checksum; trailing padding is ignored.
    pub fn parse(f: &[u8]) -> Result<NaFrame, FrameError> {
        need(f, ETH_LEN + IPV6_LEN + 24)?;
        ethertype(f, ETHERTYPE_IPV6)?;
        let ip = ETH_LEN;
        let (version, next) = (f[ip] >> 4, f[ip + 6]);
        if version != 6 || next != ICMPV6 {
            return Err(FrameError::NotIcmpv6 { version, next });
        }
        let payload = usize::from(be16(f, ip + 4));
        let icmp = ip + IPV6_LEN;
        let available = f.len() - icmp;
        if payload > available {
            return Err(FrameError::Truncated { payload, available });
        }
        let msg = &f[icmp..icmp + payload];
        if msg.len() < 24 || msg[0] != NEIGHBOR_ADVERTISEMENT || msg[1] != 0 {
            return Err(FrameError::NotNeighborAdvertisement {
                kind: msg.first().copied().unwrap_or(0),
                code: msg.get(1).copied().unwrap_or(0),
            });
        }
        let src = ipv6_at(f, ip + 8);
        let dst = ipv6_at(f, ip + 24);
        // A correct checksum sums (with the stored value included) to 0xffff, i.e. the
        // checksum over the message with the field zeroed equals the stored value.
        let found = be16(msg, 2);
        let mut zeroed = msg.to_vec();
        zeroed[2] = 0;
        zeroed[3] = 0;
        let computed = icmpv6_checksum(&src, &dst, &zeroed);
        if found != computed {
            return Err(FrameError::Checksum { found, computed });
        }
        let mut target_mac = None;
        let mut at = 24;
        while at + 2 <= msg.len() {
            let len = usize::from(msg[at + 1]) * 8;
            if len == 0 || at + len > msg.len() {
                return Err(FrameError::BadOption(at));
            }
            if msg[at] == OPT_TARGET_LLADDR && len >= 8 {
                target_mac = Some(mac_at(msg, at + 2));
            }
            at += len;
        }
        Ok(NaFrame {
            eth_dst: mac_at(f, 0),
            eth_src: mac_at(f, 6),
            src,
            dst,
            hop_limit: f[ip + 7],
            router: msg[4] & NA_FLAG_ROUTER != 0,
            solicited: msg[4] & NA_FLAG_SOLICITED != 0,
            override_flag: msg[4] & NA_FLAG_OVERRIDE != 0,
            target: ipv6_at(msg, 8),
            target_mac,
        })
    }
}

/// The ICMPv6 checksum (RFC 4443 §2.3): one's complement of the one's-complement sum of the
/// pseudo-header (src, dst, upper-layer length, next header 58) and the message, with the
/// message's checksum field zero.
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn need(f: &[u8], need: usize) -> Result<(), FrameError> {
    if f.len() < need {
        return Err(FrameError::TooShort { len: f.len(), need });
    }
    Ok(())
}

fn ethertype(f: &[u8], expected: u16) -> Result<(), FrameError> {
    let found = be16(f, 12);
    if found != expected {
        return Err(FrameError::Ethertype { found, expected });
    }
    Ok(())
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn mac_at(f: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&f[at..at + 6]);
    m
}

fn ipv4_at(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

fn ipv6_at(f: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&f[at..at + 16]);
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
    const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

    #[test]
    fn garp_request_bytes() {
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,     // dst: broadcast
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,     // src: own MAC
            0x08, 0x06,                             // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,           // Ethernet, IPv4, 6, 4
            0x00, 0x01,                             // request
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,     // sha
            192, 0, 2, 10,                          // spa = VIP
            0, 0, 0, 0, 0, 0,                       // tha = zero
            192, 0, 2, 10,                          // tpa = VIP
        ];
        assert_eq!(ArpFrame::garp_request(MAC, VIP4).encode(), expected);
    }

    #[test]
    fn garp_reply_bytes() {
        let f = ArpFrame::garp_reply(MAC, VIP4).encode();
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[32..38], &MAC, "reply form: target MAC is our own");
        assert_eq!(&f[28..32], &f[38..42], "sender IP = target IP");
    }

    #[test]
    fn arp_round_trip_and_padding() {
        for x in [
            ArpFrame::garp_request(MAC, VIP4),
            ArpFrame::garp_reply(MAC, VIP4),
        ] {
            assert_eq!(ArpFrame::parse(&x.encode()), Ok(x));
            assert!(x.is_gratuitous());
            let mut padded = x.encode().to_vec();
            padded.resize(60, 0);
            assert_eq!(ArpFrame::parse(&padded), Ok(x));
        }
    }

    #[test]
    fn arp_parse_rejects_bad_input() {
        let f = ArpFrame::garp_request(MAC, VIP4).encode();
        assert_eq!(
            ArpFrame::parse(&f[..41]),
            Err(FrameError::TooShort { len: 41, need: 42 })
        );
        let mut g = f;
        g[13] = 0x00;
        assert!(matches!(
            ArpFrame::parse(&g),
            Err(FrameError::Ethertype { found: 0x0800, .. })
        ));
        let mut g = f;
        g[21] = 9;
        assert_eq!(ArpFrame::parse(&g), Err(FrameError::ArpOperation(9)));
        let mut g = f;
        g[18] = 8;
        assert!(matches!(
            ArpFrame::parse(&g),
            Err(FrameError::ArpFormat { .. })
        ));
        for n in 0..f.len() {
            let _ = ArpFrame::parse(&f[..n]); // never panics
        }
    }

    #[test]
    fn na_bytes() {
        let f = NaFrame::unsolicited(MAC, VIP6).encode();
        assert_eq!(f.len(), NA_FRAME_LEN);
        #[rustfmt::skip]
        let head: [u8; 22] = [
            0x33, 0x33, 0, 0, 0, 1,                 // dst: ff02::1 mapped
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30,     // src: own MAC
            0x86, 0xdd,                             // IPv6
            0x60, 0, 0, 0,                          // version 6
            0, 32,                                  // payload length
            58,                                     // ICMPv6
            255,                                    // hop limit
        ];
        assert_eq!(&f[..22], &head);
        assert_eq!(&f[22..38], &VIP6.octets(), "source = VIP");
        assert_eq!(
            &f[38..54],
            &[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(&f[54..56], &[136, 0], "type 136, code 0");
        assert_eq!(&f[58..62], &[0x20, 0, 0, 0], "O=1, R=0, S=0");
        assert_eq!(&f[62..78], &VIP6.octets(), "target = VIP");
        assert_eq!(&f[78..80], &[2, 1], "target link-layer address, 8 bytes");
        assert_eq!(&f[80..86], &MAC);
        // Checksum worked by hand (16-bit words, end-around carry):
        //   pseudo-header: src 2001+0db8+0010 = 2dc9, dst ff02+0001 = ff03, length 0020,
        //                  next header 003a                      running sum 0x1_2d26
        //   message: type/code 8800, flags 2000, target 2dc9, option 0201,
        //            MAC 0200+5e10+2030                          running sum 0x2_8530
        //   fold 0x8530 + 2 = 0x8532, complement 0x7acd
        assert_eq!(&f[56..58], &[0x7a, 0xcd]);
    }

    #[test]
    fn checksum_verifies_to_all_ones() {
        let f = NaFrame::unsolicited(MAC, VIP6).encode();
        // Summing the message with its checksum in place gives 0xffff, whose complement is 0.
        assert_eq!(icmpv6_checksum(&VIP6, &ALL_NODES, &f[54..]), 0);
    }

    #[test]
    fn na_round_trip() {
        let x = NaFrame::unsolicited(MAC, VIP6);
        assert_eq!(NaFrame::parse(&x.encode()), Ok(x));
        let y = NaFrame {
            router: true,
            solicited: true,
            override_flag: false,
            target_mac: None,
            ..x
        };
        assert_eq!(NaFrame::parse(&y.encode()), Ok(y));
    }

    #[test]
    fn na_parse_rejects_bad_input() {
        let f = NaFrame::unsolicited(MAC, VIP6).encode();
        let mut g = f.clone();
        g[85] ^= 1;
        assert!(matches!(
            NaFrame::parse(&g),
            Err(FrameError::Checksum { .. })
        ));
        let mut g = f.clone();
        g[54] = 135;
        assert!(matches!(
            NaFrame::parse(&g),
            Err(FrameError::NotNeighborAdvertisement { kind: 135, .. })
        ));
        assert!(matches!(
            NaFrame::parse(&f[..80]),
            Err(FrameError::Truncated { .. })
        ));
        for n in 0..f.len() {
            let _ = NaFrame::parse(&f[..n]); // never panics
        }
        // An option of length 0 would loop forever in a naive parser.
        let mut g = f.clone();
        g[79] = 0;
        let sum = icmpv6_checksum(&VIP6, &ALL_NODES, &{
            let mut m = g[54..].to_vec();
            m[2] = 0;
            m[3] = 0;
            m
        });
        g[56..58].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(NaFrame::parse(&g), Err(FrameError::BadOption(24)));
    }
}
