//! The protected-mode decision, a pure function of the connection: an
//! in-process call, a connection that must log in (users are
//! configured), or, with no users, a loopback peer (served) or any other
//! (refused). It depends on nothing else in the crate, so the host's
//! end-to-end test of protected mode can check it directly where it
//! cannot make a non-loopback peer.
//!
//! A *self-forwarded* peer (the host's `ConnInfo::self_forwarded`: an
//! upstream socket this same server opened for a proxy route pointing
//! back at its own port) has a loopback address, but the client behind it
//! is whoever reached the proxy route: it is never loopback here.

use std::fmt;
use std::net::IpAddr;

/// The peer of a connection as access control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peer {
    /// Its address; `None` when unknown (an in-process call, or a message
    /// forwarded by a generation that sent none).
    pub ip: Option<IpAddr>,
    /// The connection comes from a proxy route of this same server back
    /// at its own port: its address hides a remote client.
    pub self_forwarded: bool,
}

impl Peer {
    /// An unknown peer (never loopback).
    pub const UNKNOWN: Peer = Peer {
        ip: None,
        self_forwarded: false,
    };

    pub fn new(ip: IpAddr, self_forwarded: bool) -> Peer {
        Peer {
            ip: Some(ip),
            self_forwarded,
        }
    }

    /// Whether the peer is a genuine loopback client: a loopback address
    /// that is not a proxy route of ours back at our own port.
    pub fn is_loopback(&self) -> bool {
        !self.self_forwarded && self.ip.is_some_and(is_loopback)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            None => f.write_str("an unknown address"),
            Some(ip) if self.self_forwarded => {
                write!(f, "{ip} (a proxy route of this server back to itself)")
            }
            Some(ip) => write!(f, "{ip}"),
        }
    }
}

/// The first cut of who a call acts as, from the connection alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Internal,
    Loopback,
    Protected,
    /// Users are configured: the connection must log in.
    Users,
}

/// Whether an address is loopback: 127.0.0.0/8, `::1`, or an IPv4-mapped
/// loopback address (`::ffff:127.0.0.1`, what a dual-stack listener sees).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The protected-mode decision: connection id 0 is an in-process call;
/// with users configured everybody else logs in; without, loopback peers
/// are served and any other peer (one whose address is unknown, or a
/// self-forwarded one: [`Peer::is_loopback`]) is refused.
pub fn decide(conn: u64, peer: Peer, users_configured: bool) -> Base {
    if conn == 0 {
        Base::Internal
    } else if users_configured {
        Base::Users
    } else if peer.is_loopback() {
        Base::Loopback
    } else {
        Base::Protected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> Peer {
        Peer::new(s.parse().unwrap(), false)
    }

    #[test]
    fn the_protected_mode_decision() {
        assert_eq!(decide(0, Peer::UNKNOWN, false), Base::Internal);
        assert_eq!(decide(0, ip("10.0.0.1"), true), Base::Internal);
        for lo in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(decide(5, ip(lo), false), Base::Loopback, "{lo}");
        }
        for remote in [
            "10.77.0.1",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "fe80::1",
            "0.0.0.0",
            "::",
        ] {
            assert_eq!(decide(5, ip(remote), false), Base::Protected, "{remote}");
        }
        assert_eq!(
            decide(5, Peer::UNKNOWN, false),
            Base::Protected,
            "unknown address"
        );
        assert_eq!(
            decide(5, ip("127.0.0.1"), true),
            Base::Users,
            "loopback logs in too"
        );
        assert_eq!(decide(5, ip("10.0.0.1"), true), Base::Users);
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // A proxy route of ours back at our own port: its loopback address
        // hides a remote client.
        for lo in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let fwd = Peer::new(lo.parse().unwrap(), true);
            assert!(!fwd.is_loopback(), "{lo}");
            assert_eq!(decide(5, fwd, false), Base::Protected, "{lo}");
            assert_eq!(decide(5, fwd, true), Base::Users, "{lo}");
            assert!(fwd.to_string().contains("proxy route"), "{fwd}");
        }
        assert!(!is_loopback(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }
}
