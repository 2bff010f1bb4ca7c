//! The protected-mode decision, a pure function of the connection: an
//! in-process call, a connection that must log in (users are
//! configured), or, with no users, a loopback peer (served) or any other
//! (refused). It depends on nothing else in the crate, so the host's
//! end-to-end test of protected mode can check it directly where it
//! cannot make a non-loopback peer.

use std::net::IpAddr;

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
/// are served and any other peer (or one whose address is unknown) is
/// refused.
pub fn decide(conn: u64, peer: Option<IpAddr>, users_configured: bool) -> Base {
    if conn == 0 {
        Base::Internal
    } else if users_configured {
        Base::Users
    } else if peer.is_some_and(is_loopback) {
        Base::Loopback
    } else {
        Base::Protected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_protected_mode_decision() {
        assert_eq!(decide(0, None, false), Base::Internal);
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
        assert_eq!(decide(5, None, false), Base::Protected, "unknown address");
        assert_eq!(
            decide(5, ip("127.0.0.1"), true),
            Base::Users,
            "loopback logs in too"
        );
        assert_eq!(decide(5, ip("10.0.0.1"), true), Base::Users);
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!is_loopback(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }
}
