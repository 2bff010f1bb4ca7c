//! Who may run the admin commands on the public port: the settings in force
//! ([`AdminAccess`], swapped whole on `RELOAD` through [`LiveAccess`]), the
//! `admin_from` network list, and a connection's own admin standing
//! ([`ConnAuth`]: the token epoch it authenticated under and its failed
//! `AUTH` attempts).
//!
//! Rights are decided per command against the settings in force, never
//! once at accept: a `RELOAD` that narrows `admin_from` or rotates
//! `admin_token` applies to connections already open.
//!
//! Also here, as the other pieces of admin policy that the connection and
//! proxy layers consult: the per-address `AUTH` backoff ([`backoff`]) and
//! the local addresses of our own upstream sockets ([`self_forward`]).
//! This module sits low (it imports only config and token), so the layers
//! that hold connections can ask it without importing the admin commands.

pub mod backoff;
pub mod self_forward;

pub use backoff::AuthBackoff;
pub use self_forward::{OwnUpstream, OwnUpstreams};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use parking_lot::RwLock;

use crate::config::{parse_networks, ConfigError, Server};

/// The address a peer is matched as: an IPv4-mapped IPv6 peer
/// (`::ffff:127.0.0.1`, what a dual-stack listener reports for IPv4
/// clients) is its IPv4 address, so `127.0.0.0/8` covers it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The admin settings of one config generation. Immutable: a `RELOAD`
/// builds a new one and swaps it in ([`LiveAccess::apply`]).
#[derive(Debug, Clone)]
pub struct AdminAccess {
    token: Option<String>,
    from: Vec<IpNet>,
    /// `SHUTDOWN` is accepted on the public port.
    pub public_shutdown: bool,
    /// Failed `AUTH` attempts that close a connection.
    pub max_auth_failures: u32,
    /// The first backoff window after a failed `AUTH` (zero: none).
    pub auth_backoff: Duration,
    /// Changes whenever the token does: a connection keeps token rights
    /// only while the epoch it authenticated under is current.
    epoch: u64,
}

/// What a connection's peer is allowed, before looking at tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// `admin_from = []`: nothing privileged on the public port, `AUTH`
    /// included.
    Off,
    /// Inside `admin_from`, or authenticated with the current token.
    Admin,
    /// Inside `admin_from`, but the peer is the local end of an upstream
    /// socket this server opened (a proxy route pointing back at our own
    /// port): whoever is on the far side of that proxy is not trusted.
    SelfForwarded,
    /// Outside `admin_from` and not authenticated (or authenticated with
    /// a token that has since been rotated or removed).
    Stranger,
}

impl AdminAccess {
    /// The settings in `[server]`; `epoch` is the token epoch to use.
    pub fn new(s: &Server, epoch: u64) -> Result<AdminAccess, ConfigError> {
        Ok(AdminAccess {
            token: s.admin_token.clone(),
            from: parse_networks(&s.admin_from)?,
            public_shutdown: s.public_shutdown,
            max_auth_failures: s.max_auth_failures.max(1),
            auth_backoff: Duration::from_millis(s.auth_backoff_ms),
            epoch,
        })
    }

    /// Whether the public port has admin at all (`admin_from` not empty).
    pub fn enabled(&self) -> bool {
        !self.from.is_empty()
    }

    /// Whether a configured token exists (`AUTH` can succeed).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether `ip` lies inside `admin_from`.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.from.iter().any(|n| n.contains(&ip))
    }

    /// Whether `given` is the configured token (constant time in the
    /// token's bytes).
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| crate::token::token_matches(given, t))
    }

    /// A connection's standing now. `own_upstream` is asked only for a
    /// peer inside `admin_from` (it takes a lock).
    pub fn standing(
        &self,
        peer: SocketAddr,
        auth: &ConnAuth,
        own_upstream: impl FnOnce(SocketAddr) -> bool,
    ) -> Standing {
        if !self.enabled() {
            return Standing::Off;
        }
        if self.token.is_some() && auth.epoch == Some(self.epoch) {
            return Standing::Admin;
        }
        if !self.admits(peer.ip()) {
            return Standing::Stranger;
        }
        if own_upstream(peer) {
            return Standing::SelfForwarded;
        }
        Standing::Admin
    }
}

/// The admin settings in force, shared by the event loops and replaced by
/// the config hook on every `RELOAD` and SIGHUP.
#[derive(Debug)]
pub struct LiveAccess {
    current: RwLock<Arc<AdminAccess>>,
}

impl LiveAccess {
    pub fn new(first: AdminAccess) -> LiveAccess {
        LiveAccess {
            current: RwLock::new(Arc::new(first)),
        }
    }

    /// The settings in force (a cheap `Arc` clone).
    pub fn current(&self) -> Arc<AdminAccess> {
        self.current.read().clone()
    }

    /// Installs the settings of a re-read config. The token epoch moves on
    /// when the token changed or was removed, which takes the rights of
    /// connections that authenticated with the old one. Returns what
    /// changed, for the log (never the token itself).
    pub fn apply(&self, s: &Server) -> Result<Vec<String>, ConfigError> {
        let mut current = self.current.write();
        let old = current.clone();
        let token_changed = old.token != s.admin_token;
        let epoch = old.epoch + u64::from(token_changed);
        let new = AdminAccess::new(s, epoch)?;
        let mut changes = Vec::new();
        if token_changed {
            changes.push(
                match (&old.token, &new.token) {
                    (None, _) => "admin_token set",
                    (Some(_), Some(_)) => {
                        "admin_token changed: connections authenticated with the old token lose \
                         their admin rights"
                    }
                    (Some(_), None) => {
                        "admin_token removed: connections authenticated with it lose their \
                         admin rights; AUTH is refused"
                    }
                }
                .to_string(),
            );
        }
        if old.from != new.from {
            let list: Vec<String> = new.from.iter().map(IpNet::to_string).collect();
            changes.push(if list.is_empty() {
                "admin_from is now [] (no admin on the public port)".to_string()
            } else {
                format!("admin_from is now [{}]", list.join(", "))
            });
        }
        if old.public_shutdown != new.public_shutdown {
            changes.push(format!("public_shutdown is now {}", new.public_shutdown));
        }
        if (old.max_auth_failures, old.auth_backoff) != (new.max_auth_failures, new.auth_backoff) {
            changes.push(format!(
                "max_auth_failures = {}, auth_backoff_ms = {}",
                new.max_auth_failures,
                new.auth_backoff.as_millis()
            ));
        }
        *current = Arc::new(new);
        Ok(changes)
    }
}

/// One connection's admin standing on the public port. Private state with
/// named transitions; the decision itself is [`AdminAccess::standing`].
#[derive(Debug, Default, Clone)]
pub struct ConnAuth {
    /// The token epoch of the last successful `AUTH`.
    epoch: Option<u64>,
    failures: u32,
    self_forward_logged: bool,
}

impl ConnAuth {
    /// `AUTH` succeeded under this token epoch.
    pub fn authenticated(&mut self, epoch: u64) {
        self.epoch = Some(epoch);
    }

    /// `AUTH` failed (or was refused); returns the failures so far.
    pub fn failed(&mut self) -> u32 {
        self.failures += 1;
        self.failures
    }

    /// True the first time a self-forwarded connection is noticed (it is
    /// logged once per connection).
    pub fn first_self_forward(&mut self) -> bool {
        !std::mem::replace(&mut self.self_forward_logged, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(from: &[&str], token: Option<&str>) -> Server {
        Server {
            admin_from: from.iter().map(|s| s.to_string()).collect(),
            admin_token: token.map(str::to_string),
            ..Server::default()
        }
    }

    fn access(from: &[&str], token: Option<&str>) -> AdminAccess {
        AdminAccess::new(&server(from, token), 0).unwrap()
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_and_bare_addresses_match() {
        let a = access(&["10.0.0.0/8", "192.0.2.7", "fd00::/8", "::1"], None);
        for ip in ["10.0.0.1", "10.255.255.255", "192.0.2.7", "fd12::5", "::1"] {
            assert!(a.admits(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.0.0.1", "192.0.2.8", "fe80::1", "::2", "127.0.0.1"] {
            assert!(!a.admits(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn host_bits_in_a_cidr_mean_its_network() {
        let a = access(&["10.1.2.3/8"], None);
        assert!(a.admits("10.200.0.1".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_peers_match_as_ipv4() {
        let a = access(&["127.0.0.0/8"], None);
        assert!(a.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!a.admits("::ffff:10.0.0.1".parse().unwrap()));
        // ... and a v6 network does not swallow mapped v4 peers.
        let v6 = access(&["::/0"], None);
        assert!(!v6.admits("::ffff:10.0.0.1".parse().unwrap()));
        assert!(v6.admits("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn default_is_loopback_only() {
        let a = AdminAccess::new(&Server::default(), 0).unwrap();
        assert!(a.admits("127.0.0.1".parse().unwrap()));
        assert!(a.admits("127.9.9.9".parse().unwrap()));
        assert!(a.admits("::1".parse().unwrap()));
        assert!(!a.admits("192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn standing_follows_settings() {
        let mut auth = ConnAuth::default();
        let lo = peer("127.0.0.1:5000");
        let far = peer("192.0.2.1:5000");
        let never = |_| false;
        assert_eq!(
            access(&[], Some("t")).standing(lo, &auth, never),
            Standing::Off
        );
        let a = access(&["127.0.0.0/8"], Some("t"));
        assert_eq!(a.standing(lo, &auth, never), Standing::Admin);
        assert_eq!(a.standing(far, &auth, never), Standing::Stranger);
        assert_eq!(a.standing(lo, &auth, |p| p == lo), Standing::SelfForwarded);
        auth.authenticated(a.epoch());
        assert_eq!(a.standing(far, &auth, never), Standing::Admin);
        // A token authenticates even a self-forwarded connection.
        assert_eq!(a.standing(lo, &auth, |_| true), Standing::Admin);
    }

    #[test]
    fn rotating_the_token_revokes_and_keeping_it_does_not() {
        let live = LiveAccess::new(access(&["192.0.2.0/24"], Some("old")));
        let far = peer("198.51.100.1:1");
        let mut auth = ConnAuth::default();
        auth.authenticated(live.current().epoch());
        assert_eq!(
            live.current().standing(far, &auth, |_| false),
            Standing::Admin
        );
        // Same token, other settings changed: rights stay.
        let changes = live.apply(&server(&["192.0.2.0/25"], Some("old"))).unwrap();
        assert_eq!(changes, ["admin_from is now [192.0.2.0/25]"]);
        assert_eq!(
            live.current().standing(far, &auth, |_| false),
            Standing::Admin
        );
        // New token: gone.
        let changes = live.apply(&server(&["192.0.2.0/25"], Some("new"))).unwrap();
        assert!(changes[0].starts_with("admin_token changed"), "{changes:?}");
        assert!(!changes.iter().any(|c| c.contains("new")), "{changes:?}");
        let cur = live.current();
        assert_eq!(cur.standing(far, &auth, |_| false), Standing::Stranger);
        assert!(cur.token_matches("new") && !cur.token_matches("old"));
        // Removing it bumps the epoch too; setting it back does not bring
        // the old epoch back.
        auth.authenticated(cur.epoch());
        live.apply(&server(&["192.0.2.0/25"], None)).unwrap();
        live.apply(&server(&["192.0.2.0/25"], Some("new"))).unwrap();
        assert_eq!(
            live.current().standing(far, &auth, |_| false),
            Standing::Stranger
        );
    }

    #[test]
    fn conn_auth_counts_and_logs_once() {
        let mut auth = ConnAuth::default();
        assert_eq!((auth.failed(), auth.failed()), (1, 2));
        assert!(auth.first_self_forward());
        assert!(!auth.first_self_forward());
    }
}
