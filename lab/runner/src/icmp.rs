//! ICMP echo over a raw socket: does the VIP answer at the IP level right now? (A TCP connect
//! to mariadbd would also do, but MariaDB counts aborted handshakes and blocks the host.)

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

pub struct Pinger {
    sock: Socket,
    to: SocketAddrV4,
    ident: u16,
    seq: u16,
}

impl Pinger {
    pub fn new(to: Ipv4Addr) -> io::Result<Pinger> {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        Ok(Pinger {
            sock,
            to: SocketAddrV4::new(to, 0),
            ident: (std::process::id() & 0xffff) as u16,
            seq: 0,
        })
    }

    /// One echo request; true when its reply arrives within `wait`.
    pub fn ping(&mut self, wait: Duration) -> bool {
        self.seq = self.seq.wrapping_add(1);
        let mut pkt = [0u8; 16];
        pkt[0] = 8; // echo request
        pkt[4..6].copy_from_slice(&self.ident.to_be_bytes());
        pkt[6..8].copy_from_slice(&self.seq.to_be_bytes());
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        if self.sock.send_to(&pkt, &self.to.into()).is_err() {
            return false;
        }
        let end = Instant::now() + wait;
        let mut buf = [MaybeUninit::<u8>::uninit(); 256];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || self.sock.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            let n = match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(_) => return false,
            };
            // SAFETY: recv_from initialised the first n bytes.
            let b: Vec<u8> = buf[..n]
                .iter()
                .map(|x| unsafe { x.assume_init() })
                .collect();
            if self.is_our_reply(&b) {
                return true;
            }
        }
    }

    fn is_our_reply(&self, b: &[u8]) -> bool {
        // A raw IPv4 socket hands us the IP header too.
        let Some(&vihl) = b.first() else { return false };
        let ihl = usize::from(vihl & 0x0f) * 4;
        let Some(icmp) = b.get(ihl..ihl + 8) else {
            return false;
        };
        b.get(12..16) == Some(&self.to.ip().octets()[..])
            && icmp[0] == 0
            && icmp[4..6] == self.ident.to_be_bytes()
            && icmp[6..8] == self.seq.to_be_bytes()
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_a_known_echo_request() {
        // type 8, code 0, id 0x1234, seq 1: the checksum makes the whole sum 0xffff.
        let mut p = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        let c = super::checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(super::checksum(&p), 0);
        assert_eq!(c, 0xe5ca);
    }
}
