//! Fuzzes the proxy module's PROXY protocol writer
//! (`proxy::proxy_protocol::write`) against a strict decoder written here.
//!
//! Switchyard only *sends* PROXY headers (to upstreams); it never parses
//! one from a client, so there is no product parser to attack. What can
//! go wrong is a header an upstream (HAProxy, nginx) refuses or misreads,
//! so the input picks a version, a source and a destination address
//! (IPv4, IPv6, IPv4-mapped IPv6, any port, destination maybe absent),
//! and every header written must decode, under the specification's
//! grammar, to the addresses the writer promises:
//! * the source, with an IPv4-mapped IPv6 address written as IPv4;
//! * the destination likewise when it is of the source's family, else the
//!   unspecified address of the source's family with port 0.
//!
//! v1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, at most 107
//! bytes, single spaces, addresses in the family's textual form, ports in
//! decimal without leading zeros. v2: the 12-byte signature, version 2 and
//! the PROXY command, TCP over IPv4 (12 address bytes) or IPv6 (36), a
//! length that is exactly the rest. Bytes already in the buffer stay.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use module_api::RVec;
use proxy::config::ProxyProtocol;
use proxy::proxy_protocol::{write, V2_SIGNATURE};

/// The longest v1 line the specification allows, CRLF included.
const V1_MAX: usize = 107;

/// An address drawn from the input: IPv4, IPv6, or IPv4-mapped IPv6
/// (which the writer must fold to IPv4).
fn addr(u: &mut Unstructured<'_>) -> Result<SocketAddr> {
    let ip = match u.int_in_range(0u8..=2)? {
        0 => IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?)),
        1 => IpAddr::V6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?)),
        _ => IpAddr::V6(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?).to_ipv6_mapped()),
    };
    Ok(SocketAddr::new(ip, u.arbitrary()?))
}

fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// What the header must say: source and destination.
fn expected(src: SocketAddr, dst: Option<SocketAddr>) -> (SocketAddr, SocketAddr) {
    let src = canonical(src);
    let unspecified = if src.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let dst = dst
        .map(canonical)
        .filter(|d| d.is_ipv4() == src.is_ipv4())
        .unwrap_or(SocketAddr::new(unspecified, 0));
    (src, dst)
}

/// A port as v1 writes it: decimal, no sign, no leading zero.
fn port(text: &str) -> u16 {
    assert!(
        !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0')),
        "port {text:?}"
    );
    text.parse().unwrap_or_else(|_| panic!("port {text:?}"))
}

fn decode_v1(h: &[u8]) -> (SocketAddr, SocketAddr) {
    assert!(h.len() <= V1_MAX, "v1 line of {} bytes", h.len());
    let line = std::str::from_utf8(h).expect("a v1 line is ASCII");
    assert!(line.is_ascii(), "{line:?}");
    let line = line.strip_suffix("\r\n").expect("a v1 line ends in CRLF");
    assert!(!line.contains(['\r', '\n']), "{line:?}");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 6, "{line:?}");
    assert_eq!(fields[0], "PROXY");
    let (s, d): (IpAddr, IpAddr) = match fields[1] {
        "TCP4" => (
            IpAddr::V4(fields[2].parse().expect("TCP4 source")),
            IpAddr::V4(fields[3].parse().expect("TCP4 destination")),
        ),
        "TCP6" => (
            IpAddr::V6(fields[2].parse().expect("TCP6 source")),
            IpAddr::V6(fields[3].parse().expect("TCP6 destination")),
        ),
        other => panic!("family {other:?}"),
    };
    (
        SocketAddr::new(s, port(fields[4])),
        SocketAddr::new(d, port(fields[5])),
    )
}

fn decode_v2(h: &[u8]) -> (SocketAddr, SocketAddr) {
    assert!(h.len() >= 16, "v2 header of {} bytes", h.len());
    assert_eq!(&h[..12], V2_SIGNATURE);
    assert_eq!(h[12], 0x21, "version 2, PROXY command");
    let len = u16::from_be_bytes([h[14], h[15]]) as usize;
    let body = &h[16..];
    assert_eq!(body.len(), len, "length field");
    let port_at = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
    match h[13] {
        0x11 => {
            assert_eq!(len, 12, "TCP over IPv4");
            let ip = |i: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[i],
                    body[i + 1],
                    body[i + 2],
                    body[i + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port_at(8)),
                SocketAddr::new(ip(4), port_at(10)),
            )
        }
        0x21 => {
            assert_eq!(len, 36, "TCP over IPv6");
            let ip = |i: usize| {
                let octets: [u8; 16] = body[i..i + 16].try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(0), port_at(32)),
                SocketAddr::new(ip(16), port_at(34)),
            )
        }
        other => panic!("family/transport byte {other:#04x}"),
    }
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let version = match u.int_in_range(0u8..=2)? {
        0 => ProxyProtocol::Off,
        1 => ProxyProtocol::V1,
        _ => ProxyProtocol::V2,
    };
    let src = addr(&mut u)?;
    let dst = if u.arbitrary()? {
        Some(addr(&mut u)?)
    } else {
        None
    };
    let before: Vec<u8> = u.arbitrary()?;

    let mut out: RVec<u8> = before.as_slice().into();
    write(version, src, dst, &mut out);
    assert_eq!(
        &out[..before.len()],
        &before[..],
        "bytes already queued changed"
    );
    let header = &out[before.len()..];
    let want = expected(src, dst);
    let got = match version {
        ProxyProtocol::Off => {
            assert!(header.is_empty(), "a header with the protocol off");
            return Ok(());
        }
        ProxyProtocol::V1 => decode_v1(header),
        ProxyProtocol::V2 => decode_v2(header),
    };
    assert_eq!(got, want, "{version:?} for {src} -> {dst:?}");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    // Too few bytes for a whole case: nothing to check.
    let _ = run(data);
});
