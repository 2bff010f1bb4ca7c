//! The PROXY protocol header (HAProxy's, versions 1 and 2), sent to an
//! upstream before the client's bytes so it sees the client's address.
//!
//! The destination is the local address the client connected to, as the
//! host reports it; when unknown it is the unspecified address of the
//! client's family with port 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use module_api::RVec;

use crate::config::ProxyProtocol;

/// The 12 bytes that start every v2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Appends the header for a connection from `src` to `dst` (nothing for
/// `Off`). IPv4-mapped IPv6 addresses are written as IPv4.
pub fn write(version: ProxyProtocol, src: SocketAddr, dst: Option<SocketAddr>, out: &mut RVec<u8>) {
    let src = SocketAddr::new(canonical(src.ip()), src.port());
    // Both addresses must be of one family; an unknown or mismatched
    // destination becomes the unspecified address, port 0.
    let dst = dst
        .map(|d| SocketAddr::new(canonical(d.ip()), d.port()))
        .filter(|d| d.is_ipv4() == src.is_ipv4())
        .unwrap_or_else(|| match src {
            SocketAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            SocketAddr::V6(_) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        });
    match version {
        ProxyProtocol::Off => {}
        ProxyProtocol::V1 => {
            let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let line = format!(
                "PROXY {fam} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            );
            out.extend_from_copy_slice(line.as_bytes());
        }
        ProxyProtocol::V2 => {
            out.extend_from_copy_slice(V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY command
            match (src.ip(), dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_copy_slice(&12u16.to_be_bytes());
                    out.extend_from_copy_slice(&s.octets());
                    out.extend_from_copy_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_copy_slice(&36u16.to_be_bytes());
                    out.extend_from_copy_slice(&v6(s).octets());
                    out.extend_from_copy_slice(&v6(d).octets());
                }
            }
            out.extend_from_copy_slice(&src.port().to_be_bytes());
            out.extend_from_copy_slice(&dst.port().to_be_bytes());
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: ProxyProtocol, src: &str, dst: Option<&str>) -> Vec<u8> {
        let mut out = RVec::new();
        write(
            v,
            src.parse().unwrap(),
            dst.map(|d| d.parse().unwrap()),
            &mut out,
        );
        out.into_vec()
    }

    #[test]
    fn v1() {
        assert_eq!(
            header(
                ProxyProtocol::V1,
                "192.0.2.7:51000",
                Some("198.51.100.1:443")
            ),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n"
        );
        assert_eq!(
            header(ProxyProtocol::V1, "127.0.0.1:5", None),
            b"PROXY TCP4 127.0.0.1 0.0.0.0 5 0\r\n"
        );
        assert_eq!(
            header(ProxyProtocol::V1, "[2001:db8::1]:5", None),
            b"PROXY TCP6 2001:db8::1 :: 5 0\r\n"
        );
        assert_eq!(
            header(ProxyProtocol::V1, "[::ffff:10.1.2.3]:9", None),
            b"PROXY TCP4 10.1.2.3 0.0.0.0 9 0\r\n"
        );
        assert!(header(ProxyProtocol::Off, "127.0.0.1:5", None).is_empty());
    }

    #[test]
    fn v2() {
        let h = header(
            ProxyProtocol::V2,
            "192.0.2.7:51000",
            Some("198.51.100.1:443"),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(h, want);
        let h = header(ProxyProtocol::V2, "[2001:db8::1]:5", None);
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &h[16..32],
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&h[32..48], &[0; 16]);
        assert_eq!(&h[48..], &[0, 5, 0, 0]);
    }
}
