//! Access control: who may call what on the bus.
//!
//! * While no users are configured the bus is in **protected mode**: it
//!   serves loopback peers and in-process calls only ([`decide()`]).
//! * With users, every connection but in-process calls acts as a user
//!   ([`Who`]): logged in with `sys.auth` (raw TCP) or
//!   `Authorization: Bearer` (each HTTP request), by a verified client
//!   certificate, or as `no_auth_user`; otherwise it may call only the
//!   [`open`](crate::methods::Method::open) methods.
//! * Each user's permissions are compiled [`pattern::Rule`]s checked by
//!   the methods themselves ([`Who::check`]), with per-user limits
//!   ([`limit`]).
//!
//! * A browser page may call only from this host or an Origin in
//!   `ws_origins`, and in protected mode only from a loopback host name
//!   ([`browser`], for the WebSocket upgrade and `POST /rpc` alike).
//!
//! [`Access`] is one generation's table: the users, the raw TCP
//! connections' sessions ([`session`]) and the per-address brake on
//! failed logins ([`backoff`]). A reload hands the sessions to the next
//! generation, which resolves them against its own users at once
//! ([`Access::restore`]).

pub mod backoff;
pub mod browser;
pub mod decide;
pub mod limit;
pub mod pattern;
pub mod session;
pub mod users;

use std::sync::Arc;

use crate::config::Config;
use crate::conns::Conns;
use crate::host::HostApi;
use crate::jsonrpc::{code, RpcError};
use backoff::Backoff;
pub use decide::{decide, is_loopback, Base, Peer};
use session::{How, Login, Session, SessionSnap, Sessions};
use users::{User, Users};

/// What a call may do, decided per connection (raw TCP) or per request
/// (HTTP).
#[derive(Debug, Clone)]
pub enum Who {
    /// An in-process call from another module (connection id 0).
    Internal,
    /// Protected mode, a loopback peer: everything.
    Loopback,
    /// Protected mode, any other peer: nothing.
    Protected,
    /// Users are configured and this connection has not logged in.
    Anonymous,
    User(Arc<User>, How),
}

/// The rights a method needs on a key or subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    KvRead,
    KvWrite,
    Publish,
    Subscribe,
    /// Create and delete streams and delete consumers (a rule over
    /// stream names; users have none unless given).
    StreamAdmin,
}

/// The peer of a host connection, as access control sees it.
pub fn peer_of(info: &module_api::ConnInfo) -> Peer {
    Peer::new(info.peer().ip(), info.self_forwarded)
}

/// -32060 in protected mode.
pub fn protected_error() -> RpcError {
    RpcError::new(
        code::AUTH_REQUIRED,
        "the bus is in protected mode: with no users configured it serves loopback peers only. \
         Configure [[modules.rpc.users]] with a token_hash (switchyard --new-token prints a token \
         and its hash) and authenticate with sys.auth or Authorization: Bearer",
    )
}

/// -32060 before logging in.
pub fn auth_required(method: &str) -> RpcError {
    RpcError::new(
        code::AUTH_REQUIRED,
        format!(
            "authentication required for {method}: call sys.auth with your token first \
             (HTTP: send Authorization: Bearer <token>)"
        ),
    )
}

fn auth_failed() -> RpcError {
    RpcError::new(code::AUTH_FAILED, "authentication failed")
}

fn backing_off(ms: u64) -> RpcError {
    RpcError::new(
        code::AUTH_FAILED,
        format!("authentication failed: too many failures from this address; retry in {ms} ms"),
    )
}

impl Who {
    /// Whether every call but none is refused (no store access needed to
    /// answer any of them).
    pub fn refuses_all(&self) -> bool {
        matches!(self, Who::Protected)
    }

    /// Admits a call of `method` (`open`: callable before logging in),
    /// taking it from the user's rate bucket.
    pub fn admit(&self, method: &str, open: bool) -> Result<(), RpcError> {
        match self {
            Who::Internal | Who::Loopback => Ok(()),
            Who::Protected => Err(protected_error()),
            Who::Anonymous if open => Ok(()),
            Who::Anonymous => Err(auth_required(method)),
            Who::User(u, _) => {
                if u.admit_call() {
                    Ok(())
                } else {
                    Err(RpcError::new(
                        code::USER_LIMIT,
                        format!(
                            "user {:?} is over its requests_per_second ({}); slow down",
                            u.name, u.rate
                        ),
                    ))
                }
            }
        }
    }

    /// Whether the caller has `right` on `name` (a key, a topic, or for
    /// [`Right::Subscribe`] a subscription pattern).
    pub fn may(&self, right: Right, name: &str) -> bool {
        match self {
            Who::Internal | Who::Loopback => true,
            Who::Protected | Who::Anonymous => false,
            Who::User(u, _) => {
                let p = &u.perms;
                match right {
                    Right::KvRead => p.kv_read.allows(name),
                    Right::KvWrite => p.kv_write.allows(name),
                    Right::Publish => p.publish.allows(name),
                    Right::Subscribe => p.subscribe.allows_pattern(name),
                    Right::StreamAdmin => p.stream_admin.allows(name),
                }
            }
        }
    }

    /// The key ranges (prefixes) `kv.keys` under `prefix` scans for this
    /// caller: `prefix` itself, or for a user only where its `kv_read`
    /// allow patterns can match ([`pattern::ranges`]), so rows it could
    /// never see are not even read.
    pub fn read_ranges(&self, prefix: &str) -> Vec<String> {
        match self {
            Who::Internal | Who::Loopback => vec![prefix.to_string()],
            Who::Protected | Who::Anonymous => Vec::new(),
            Who::User(u, _) => pattern::ranges(&u.perms.kv_read.allow, prefix),
        }
    }

    /// [`Who::may`] as a -32061 naming the method, the key or subject and
    /// the user.
    pub fn check(&self, right: Right, method: &str, name: &str) -> Result<(), RpcError> {
        if self.may(right, name) {
            return Ok(());
        }
        let user = match self {
            Who::User(u, _) => format!("user {:?}", u.name),
            _ => "this connection".to_string(),
        };
        Err(RpcError::new(
            code::PERMISSION_DENIED,
            format!("permission denied: {user} may not {method} {name:?}"),
        ))
    }

    /// For the writes whose answer reveals what is stored (`kv.del`
    /// reports whether the key existed, `kv.incr` returns the value,
    /// `kv.cas` confirms a guess): `kv_write` and `kv_read` both, the
    /// denial naming the right that is missing.
    pub fn check_read_write(&self, method: &str, name: &str) -> Result<(), RpcError> {
        self.check(Right::KvWrite, method, name)?;
        if self.may(Right::KvRead, name) {
            return Ok(());
        }
        let user = match self {
            Who::User(u, _) => format!("user {:?}", u.name),
            _ => "this connection".to_string(),
        };
        Err(RpcError::new(
            code::PERMISSION_DENIED,
            format!(
                "permission denied: {user} may not {method} {name:?}: it needs kv_read as well \
                 as kv_write (the answer reveals the stored value or whether the key exists)"
            ),
        ))
    }

    /// `sys.whoami`'s result.
    pub fn whoami(&self) -> serde_json::Value {
        let all = serde_json::Value::String("all".into());
        match self {
            Who::Internal => {
                serde_json::json!({"user": null, "auth": "internal", "permissions": all})
            }
            Who::Loopback => {
                serde_json::json!({"user": null, "auth": "loopback", "permissions": all})
            }
            Who::Protected | Who::Anonymous => {
                serde_json::json!({"user": null, "auth": null, "permissions": null})
            }
            Who::User(u, how) => serde_json::json!({
                "user": &*u.name,
                "auth": how.name(),
                "permissions": users::perms_json(&u.perms),
            }),
        }
    }
}

/// Why an HTTP request is refused before its calls run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRefusal {
    /// Protected mode, not loopback: 403.
    Protected,
    /// No `Authorization` and no other way in: 401.
    Missing,
    /// A wrong token, another scheme, or a paused address: 401.
    Failed(Option<u64>),
}

impl HttpRefusal {
    pub fn status(&self) -> u16 {
        match self {
            HttpRefusal::Protected => 403,
            _ => 401,
        }
    }

    pub fn error(&self) -> RpcError {
        match self {
            HttpRefusal::Protected => protected_error(),
            HttpRefusal::Missing => auth_required("POST /rpc"),
            HttpRefusal::Failed(Some(ms)) => backing_off(*ms),
            HttpRefusal::Failed(None) => auth_failed(),
        }
    }
}

/// The `Authorization` header of an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    None,
    Bearer(&'a str),
    /// Another scheme, or not text.
    Other,
}

impl<'a> Credentials<'a> {
    pub fn from_header(value: Option<&'a [u8]>) -> Credentials<'a> {
        let Some(v) = value else {
            return Credentials::None;
        };
        let Ok(v) = std::str::from_utf8(v) else {
            return Credentials::Other;
        };
        let v = v.trim();
        match v.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Credentials::Bearer(token.trim())
            }
            _ => Credentials::Other,
        }
    }
}

/// The outcome of a `sys.auth`.
pub struct AuthOutcome {
    pub result: Result<Who, RpcError>,
    /// The connection reached `max_auth_failures`: answer, then close.
    pub close: bool,
}

/// Longest token `sys.auth` accepts (longer: -32602, not checked).
pub const MAX_TOKEN_BYTES: usize = 1024;

/// One generation's access table.
pub struct Access {
    pub users: Users,
    pub sessions: Sessions,
    pub backoff: Backoff,
    pub max_auth_failures: u32,
}

impl Access {
    pub fn new(cfg: &Config) -> Result<Access, String> {
        let users = Users::compile(&cfg.users, cfg.no_auth_user.as_deref())
            .map_err(|e| format!("[modules.rpc] users: {e}"))?;
        Ok(Access {
            users,
            sessions: Sessions::default(),
            backoff: Backoff::new(
                cfg.auth_backoff_ms,
                cfg.auth_backoff_max_ms,
                cfg.auth_backoff_peers,
            ),
            max_auth_failures: cfg.max_auth_failures,
        })
    }

    /// Who a raw TCP connection (or an in-process call, `conn` 0) acts
    /// as. While users are configured, the first call of a connection
    /// logs it in by certificate or as `no_auth_user` if it can, and
    /// remembers the session; later calls only look it up. A connection
    /// already closed (a deferred line run after the host's `on_close`)
    /// is not logged in and leaves no session: decided under the
    /// connection's lock in `conns`, as `sys.auth` is, so the session
    /// either is not made or is made before the close removes it.
    pub fn who(&self, host: &dyn HostApi, conns: &Conns, conn: u64, peer: Peer) -> Who {
        match decide(conn, peer, !self.users.is_empty()) {
            Base::Internal => Who::Internal,
            Base::Loopback => Who::Loopback,
            Base::Protected => Who::Protected,
            Base::Users => {
                let locked = conns.lock(conn);
                if locked.closed(conn) {
                    return Who::Anonymous;
                }
                let mut map = self.sessions.lock(conn);
                if let Some(s) = map.get(&conn) {
                    return session_who(s);
                }
                let login = self.implicit_login(host, conn, peer);
                let s = Session {
                    login,
                    failures: 0,
                    peer,
                };
                let who = session_who(&s);
                map.insert(conn, s);
                who
            }
        }
    }

    /// A login without a token: by the connection's client certificate,
    /// else as `no_auth_user`; `None` when neither applies or the user is
    /// at its `max_connections`.
    fn implicit_login(&self, host: &dyn HostApi, conn: u64, peer: Peer) -> Option<Login> {
        if self.users.has_certs() {
            let names = host.peer_identity(conn);
            if let Some(u) = self.users.by_certs(&names) {
                match Login::enter(u, How::Cert, false) {
                    Some(l) => return Some(l),
                    None => log::warn!(
                        "conn {conn} from {}: certificate user {:?} is at its max_connections ({}); \
                         the connection is not logged in",
                        show(peer),
                        u.name,
                        u.conns.max()
                    ),
                }
            }
        }
        let u = self.users.no_auth_user()?;
        let login = Login::enter(u, How::NoAuthUser, false);
        if login.is_none() {
            log::warn!(
                "conn {conn} from {}: no_auth_user {:?} is at its max_connections ({})",
                show(peer),
                u.name,
                u.conns.max()
            );
        }
        login
    }

    /// Who one HTTP request acts as, from its `Authorization` header (or
    /// the connection's certificate, or `no_auth_user`).
    pub fn who_http(
        &self,
        host: &dyn HostApi,
        conn: u64,
        peer: Peer,
        creds: &Credentials<'_>,
    ) -> Result<Who, HttpRefusal> {
        match decide(conn, peer, !self.users.is_empty()) {
            Base::Internal => return Ok(Who::Internal),
            Base::Loopback => return Ok(Who::Loopback),
            Base::Protected => return Err(HttpRefusal::Protected),
            Base::Users => {}
        }
        match creds {
            // Checked even while the address is paused: a guesser behind
            // the same address must not lock out a client with its token.
            Credentials::Bearer(token) => match self.users.by_token(token, None) {
                Some(u) => Ok(Who::User(u.clone(), How::Token)),
                None => Err(HttpRefusal::Failed(self.refused(
                    conn,
                    peer,
                    None,
                    "a wrong Bearer token",
                ))),
            },
            Credentials::Other => Err(HttpRefusal::Failed(self.refused(
                conn,
                peer,
                None,
                "an Authorization header that is not Bearer",
            ))),
            Credentials::None => {
                if self.users.has_certs() {
                    if let Some(u) = self.users.by_certs(&host.peer_identity(conn)) {
                        return Ok(Who::User(u.clone(), How::Cert));
                    }
                }
                match self.users.no_auth_user() {
                    Some(u) => Ok(Who::User(u.clone(), How::NoAuthUser)),
                    None => Err(HttpRefusal::Missing),
                }
            }
        }
    }

    /// A checked, failed authentication: outside a pause, [`Access::failed`]
    /// (logged at warn, the address paused) and `None`; during its
    /// address's pause, logged at debug only, the pause not extended, and
    /// `Some(ms left)` for the refusal's message.
    fn refused(&self, conn: u64, peer: Peer, user: Option<&str>, what: &str) -> Option<u64> {
        let paused = peer
            .ip
            .and_then(|ip| self.backoff.remaining_ms(ip, limit::now_ns()));
        match paused {
            Some(ms) => {
                // Not at warn: these come as fast as a client sends them,
                // while failures outside a pause are at most one per pause
                // per address.
                log::debug!(
                    "rpc: failed authentication from {peer} (conn {conn}): {what}, while the \
                     address is paused for {ms} ms (not extended)"
                );
            }
            None => self.failed(conn, peer, user, what),
        }
        paused
    }

    /// Logs a failed authentication (never the token) and pauses the
    /// address.
    fn failed(&self, conn: u64, peer: Peer, user: Option<&str>, what: &str) {
        let pause = peer
            .ip
            .map_or(0, |ip| self.backoff.fail(ip, limit::now_ns()));
        log::warn!(
            "rpc: failed authentication from {} (conn {conn}{}): {what}; address paused {pause} ms",
            show(peer),
            // The claimed name, cut short: it comes from the client.
            user.map(|u| format!(", user {:?}", u.chars().take(64).collect::<String>()))
                .unwrap_or_default(),
        );
    }

    /// `sys.auth`: checks `token` (and the name, when given) and, on a raw
    /// TCP connection, logs the connection in. Failures count per
    /// connection (closed at `max_auth_failures`) and pause the address.
    pub fn authenticate(
        &self,
        conn: u64,
        peer: Peer,
        token: &str,
        name: Option<&str>,
    ) -> AuthOutcome {
        let outcome = |result, close| AuthOutcome { result, close };
        match decide(conn, peer, !self.users.is_empty()) {
            Base::Protected => return outcome(Err(protected_error()), false),
            Base::Loopback | Base::Internal if self.users.is_empty() => {
                return outcome(
                    Err(RpcError::new(
                        code::AUTH_FAILED,
                        "authentication failed: no users are configured (protected mode)",
                    )),
                    false,
                )
            }
            _ => {}
        }
        // Checked even while the address is paused: a guesser behind the
        // same address must not lock out a client with its token.
        let Some(user) = self.users.by_token(token, name) else {
            let err = match self.refused(conn, peer, name, "a wrong token") {
                Some(ms) => backing_off(ms),
                None => auth_failed(),
            };
            return outcome(Err(err), self.count_failure(conn, peer));
        };
        if conn == 0 {
            // HTTP or in-process: the token is checked, nothing persists
            // (each request carries its own credentials).
            return outcome(Ok(Who::User(user.clone(), How::Token)), false);
        }
        let mut map = self.sessions.lock(conn);
        let s = map.entry(conn).or_insert_with(|| Session {
            peer,
            ..Session::default()
        });
        let same = s.login.as_ref().is_some_and(|l| Arc::ptr_eq(&l.user, user));
        if !same {
            let Some(login) = Login::enter(user, How::Token, false) else {
                log::warn!(
                    "conn {conn} from {}: user {:?} is at its max_connections ({})",
                    show(peer),
                    user.name,
                    user.conns.max()
                );
                return outcome(
                    Err(RpcError::new(
                        code::USER_LIMIT,
                        format!(
                            "user {:?} already has max_connections ({}) connections; \
                             this one stays as it was",
                            user.name,
                            user.conns.max()
                        ),
                    )),
                    false,
                );
            };
            s.login = Some(login);
        } else if let Some(l) = &mut s.login {
            l.how = How::Token;
        }
        s.failures = 0;
        log::info!(
            "conn {conn} from {}: logged in as {:?}",
            show(peer),
            user.name
        );
        outcome(Ok(Who::User(user.clone(), How::Token)), false)
    }

    /// Counts a failed `sys.auth` on a connection; `true` once it reached
    /// `max_auth_failures` (the connection is then closed).
    fn count_failure(&self, conn: u64, peer: Peer) -> bool {
        if conn == 0 || self.max_auth_failures == 0 {
            return false;
        }
        let mut map = self.sessions.lock(conn);
        let s = map.entry(conn).or_insert_with(|| Session {
            peer,
            ..Session::default()
        });
        s.failures += 1;
        if s.failures >= self.max_auth_failures {
            log::info!(
                "rpc: conn {conn} from {}: {} failed authentications (max_auth_failures); closing",
                show(peer),
                s.failures
            );
            return true;
        }
        false
    }

    /// Resolves the sessions a previous generation handed over against
    /// this generation's users: a token login survives if its user still
    /// exists with the same token hash; certificate and `no_auth_user`
    /// logins are made again; everything else is not logged in; sessions
    /// of connections that had already closed (`conns` holds the
    /// predecessor's tombstones) are dropped. Returns
    /// who each handed-over connection is now (for the subscription check).
    pub fn restore(
        &self,
        host: &dyn HostApi,
        conns: &Conns,
        snaps: Vec<SessionSnap>,
    ) -> Vec<(u64, Who)> {
        let mut out = Vec::with_capacity(snaps.len());
        let (mut kept, mut dropped) = (0, 0);
        for snap in snaps {
            // Closed before the hand-over (the tombstones came with it): a
            // session a late deferred line made there dies here.
            if conns.lock(snap.id).closed(snap.id) {
                continue;
            }
            let who = match decide(snap.id, snap.peer(), !self.users.is_empty()) {
                Base::Internal => Who::Internal,
                Base::Loopback => Who::Loopback,
                Base::Protected => Who::Protected,
                Base::Users => {
                    let token_login = match (&snap.user, snap.how) {
                        (Some(name), Some(How::Token)) => self
                            .users
                            .get(name)
                            .filter(|u| u.hash_text() == snap.token_hash)
                            .and_then(|u| Login::enter(u, How::Token, true)),
                        _ => None,
                    };
                    let login =
                        token_login.or_else(|| self.implicit_login(host, snap.id, snap.peer()));
                    match (&snap.user, &login) {
                        (Some(was), Some(now)) if *was == *now.user.name => kept += 1,
                        (Some(was), _) => {
                            dropped += 1;
                            log::info!(
                                "conn {}: was logged in as {was:?}, which the new configuration \
                                 removed or changed; now {}",
                                snap.id,
                                login
                                    .as_ref()
                                    .map_or("not logged in".to_string(), |l| format!(
                                        "{:?}",
                                        l.user.name
                                    ))
                            );
                        }
                        _ => {}
                    }
                    let s = Session {
                        login,
                        failures: 0,
                        peer: snap.peer(),
                    };
                    let who = session_who(&s);
                    self.sessions.lock(snap.id).insert(snap.id, s);
                    who
                }
            };
            out.push((snap.id, who));
        }
        if kept + dropped > 0 {
            log::info!("reload: {kept} logged-in connections kept, {dropped} lost their user");
        }
        out
    }
}

fn session_who(s: &Session) -> Who {
    match &s.login {
        Some(l) => Who::User(l.user.clone(), l.how),
        None => Who::Anonymous,
    }
}

fn show(peer: Peer) -> String {
    peer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Peer {
        Peer::new(s.parse().unwrap(), false)
    }

    /// A host whose connection 7 carries a certificate for `bot1.example.org`.
    struct CertHost;

    impl HostApi for CertHost {
        fn push_many(&self, conns: &[u64], _: &[u8], _: &[u8]) -> usize {
            conns.len()
        }
        fn call(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, module_api::CallStatus> {
            Err(module_api::CallStatus::NoSuchModule)
        }
        fn wait_begin(&self) -> u64 {
            0
        }
        fn wait_end(&self, _: u64) {}
        fn peer_identity(&self, conn: u64) -> Vec<String> {
            match conn {
                7 => vec!["Bot One".into(), "bot1.example.org".into()],
                _ => Vec::new(),
            }
        }
    }

    fn hash(token: &str) -> String {
        let h = users::hash_token(token);
        format!(
            "sha256:{}",
            h.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    fn access(users: serde_json::Value, extra: serde_json::Value) -> Access {
        let mut cfg = serde_json::json!({ "users": users });
        cfg.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let cfg = Config::from_json(&cfg, std::path::Path::new("/d")).unwrap();
        Access::new(&cfg).unwrap()
    }

    fn name(w: &Who) -> Option<(&str, How)> {
        match w {
            Who::User(u, how) => Some((&u.name, *how)),
            _ => None,
        }
    }

    #[test]
    fn certificates_tokens_and_the_default_user() {
        let a = access(
            serde_json::json!([
                {"name": "bot1", "token_hash": hash("t1"), "certs": ["bot1.example.org"],
                 "max_connections": 1},
                {"name": "guest", "permissions": {"kv_read": ["pub.>"]}}
            ]),
            serde_json::json!({"no_auth_user": "guest"}),
        );
        let lo = ip("127.0.0.1");
        // The certificate logs connection 7 in, once (cached).
        assert_eq!(
            name(&a.who(&CertHost, &Conns::default(), 7, lo)),
            Some(("bot1", How::Cert))
        );
        assert_eq!(
            name(&a.who(&CertHost, &Conns::default(), 7, lo)),
            Some(("bot1", How::Cert))
        );
        // Another connection without one acts as the default user.
        assert_eq!(
            name(&a.who(&CertHost, &Conns::default(), 8, lo)),
            Some(("guest", How::NoAuthUser))
        );
        // bot1 has max_connections = 1, held by connection 7.
        let o = a.authenticate(8, lo, "t1", None);
        assert_eq!(o.result.unwrap_err().code, code::USER_LIMIT);
        assert_eq!(
            name(&a.who(&CertHost, &Conns::default(), 8, lo)),
            Some(("guest", How::NoAuthUser)),
            "unchanged"
        );
        a.sessions.remove(7);
        let o = a.authenticate(8, lo, "t1", Some("bot1"));
        assert_eq!(name(&o.result.unwrap()), Some(("bot1", How::Token)));
        assert_eq!(
            name(&a.who(&CertHost, &Conns::default(), 8, lo)),
            Some(("bot1", How::Token))
        );
        // In-process calls are internal whatever the users.
        assert!(matches!(
            a.who(&CertHost, &Conns::default(), 0, Peer::UNKNOWN),
            Who::Internal
        ));
    }

    /// A deferred line run after the host closed its connection makes no
    /// session (which would hold a `max_connections` slot for ever), and
    /// a session the predecessor made that way does not survive a reload.
    #[test]
    fn closed_connections_leave_no_session() {
        let users = serde_json::json!([
            {"name": "bot1", "certs": ["bot1.example.org"], "max_connections": 1}
        ]);
        let a = access(users.clone(), serde_json::json!({}));
        let lo = ip("127.0.0.1");
        let conns = Conns::default();
        conns.close(7, || {});
        assert!(matches!(a.who(&CertHost, &conns, 7, lo), Who::Anonymous));
        assert!(a.sessions.is_empty(), "no session for a closed connection");
        assert_eq!(a.users.get("bot1").unwrap().conns.current(), 0);

        // A predecessor without the check left one behind.
        assert_eq!(
            name(&a.who(&CertHost, &Conns::default(), 7, lo)),
            Some(("bot1", How::Cert))
        );
        let snaps = a.sessions.snapshot();
        let next = access(users, serde_json::json!({}));
        let after = Conns::default();
        after.restore_closed(conns.closed_ids());
        assert!(next.restore(&CertHost, &after, snaps).is_empty());
        assert!(next.sessions.is_empty());
        assert_eq!(next.users.get("bot1").unwrap().conns.current(), 0);
    }

    #[test]
    fn failed_logins_close_the_connection_and_pause_the_address() {
        let a = access(
            serde_json::json!([{"name": "bot1", "token_hash": hash("t1")}]),
            serde_json::json!({"max_auth_failures": 3, "auth_backoff_ms": 60000}),
        );
        let peer = ip("10.0.0.9");
        assert!(matches!(
            a.who(&CertHost, &Conns::default(), 5, peer),
            Who::Anonymous
        ));
        let o = a.authenticate(5, peer, "wrong", None);
        assert_eq!(o.result.unwrap_err().message, "authentication failed");
        assert!(!o.close);
        let now = limit::now_ns();
        let left = a.backoff.remaining_ms(peer.ip.unwrap(), now).unwrap();
        // Paused: a wrong token gets the wait, does not extend the pause,
        // and counts toward the connection's max_auth_failures.
        let o = a.authenticate(5, peer, "wrong", None);
        let e = o.result.unwrap_err();
        assert_eq!(e.code, code::AUTH_FAILED);
        assert!(e.message.contains("retry in"), "{}", e.message);
        assert!(!o.close);
        assert!(a.backoff.remaining_ms(peer.ip.unwrap(), now).unwrap() <= left);
        // The right token is still checked and accepted, on another
        // connection from the same address (a shared NAT) ...
        let o = a.authenticate(6, peer, "t1", None);
        assert_eq!(name(&o.result.unwrap()), Some(("bot1", How::Token)));
        // ... and over HTTP.
        let http = a.who_http(&CertHost, 9, peer, &Credentials::Bearer("t1"));
        assert_eq!(name(&http.unwrap()), Some(("bot1", How::Token)));
        let http = a.who_http(&CertHost, 9, peer, &Credentials::Bearer("nope"));
        assert!(matches!(http, Err(HttpRefusal::Failed(Some(_)))));
        let o = a.authenticate(5, peer, "wrong again", None);
        assert!(o.close, "the third failure closes");
        assert!(a.backoff.remaining_ms(peer.ip.unwrap(), now).unwrap() <= left);
        // Another address is not paused; the same IPv6 /64 is.
        let o = a.authenticate(7, ip("10.0.0.10"), "wrong", None);
        assert_eq!(o.result.unwrap_err().message, "authentication failed");
        a.authenticate(8, ip("2001:db8::1"), "wrong", None);
        let o = a.authenticate(8, ip("2001:db8::2"), "wrong", None);
        assert!(o.result.unwrap_err().message.contains("retry in"));
    }

    #[test]
    fn reload_resolves_sessions_against_the_new_users() {
        let old = access(
            serde_json::json!([
                {"name": "bot1", "token_hash": hash("t1")},
                {"name": "bot2", "token_hash": hash("t2")},
                {"name": "bot3", "token_hash": hash("t3")}
            ]),
            serde_json::json!({}),
        );
        let lo = ip("127.0.0.1");
        for (conn, t) in [(1, "t1"), (2, "t2"), (3, "t3")] {
            assert!(old.authenticate(conn, lo, t, None).result.is_ok());
        }
        old.who(&CertHost, &Conns::default(), 4, lo);
        let snaps = old.sessions.snapshot();
        // bot2 removed, bot3's token rotated.
        let new = access(
            serde_json::json!([
                {"name": "bot1", "token_hash": hash("t1"), "permissions": {"kv_read": ["x"]}},
                {"name": "bot3", "token_hash": hash("t3-new")}
            ]),
            serde_json::json!({}),
        );
        let whos: std::collections::HashMap<u64, Who> = new
            .restore(&CertHost, &Conns::default(), snaps.clone())
            .into_iter()
            .collect();
        assert_eq!(name(&whos[&1]), Some(("bot1", How::Token)));
        assert!(whos[&1].may(Right::KvRead, "x"), "the new permissions");
        assert!(matches!(whos[&2], Who::Anonymous), "removed user");
        assert!(matches!(whos[&3], Who::Anonymous), "rotated token");
        assert!(matches!(whos[&4], Who::Anonymous));
        assert_eq!(new.users.get("bot1").unwrap().conns.current(), 1);
        // To protected mode: loopback sessions keep everything.
        let none = access(serde_json::json!([]), serde_json::json!({}));
        let whos = none.restore(&CertHost, &Conns::default(), snaps);
        assert!(whos.iter().all(|(_, w)| matches!(w, Who::Loopback)));
    }

    #[test]
    fn permission_errors_name_method_key_and_user() {
        let a = access(
            serde_json::json!([{"name": "bot1", "token_hash": hash("t1"),
                                "permissions": {"kv_read": ["bot1.*"], "subscribe": ["events.>"]}}]),
            serde_json::json!({}),
        );
        let who = a
            .authenticate(3, ip("127.0.0.1"), "t1", None)
            .result
            .unwrap();
        let e = who.check(Right::KvRead, "kv.get", "bot2.x").unwrap_err();
        assert_eq!(e.code, code::PERMISSION_DENIED);
        assert_eq!(
            e.message,
            r#"permission denied: user "bot1" may not kv.get "bot2.x""#
        );
        assert!(who.check(Right::KvRead, "kv.get", "bot1.x").is_ok());
        assert!(who
            .check(Right::Subscribe, "bus.subscribe", "events.a.*")
            .is_ok());
        assert!(who.check(Right::Subscribe, "bus.subscribe", ">").is_err());
        assert_eq!(who.whoami()["permissions"]["kv_read"]["allow"][0], "bot1.*");
        assert_eq!(
            Who::Protected.admit("sys.ping", true).unwrap_err().code,
            code::AUTH_REQUIRED
        );
        assert!(Who::Anonymous.admit("sys.auth", true).is_ok());
        assert_eq!(
            Who::Anonymous.admit("kv.get", false).unwrap_err().code,
            code::AUTH_REQUIRED
        );
    }

    #[test]
    fn writes_that_reveal_values_need_read_too() {
        let a = access(
            serde_json::json!([{"name": "w", "token_hash": hash("t1"),
                                "permissions": {"kv_write": ["k.>"], "kv_read": ["k.open"]}}]),
            serde_json::json!({}),
        );
        let who = a
            .authenticate(3, ip("127.0.0.1"), "t1", None)
            .result
            .unwrap();
        assert!(who.check(Right::KvWrite, "kv.set", "k.x").is_ok());
        for m in ["kv.incr", "kv.cas", "kv.del"] {
            let e = who.check_read_write(m, "k.x").unwrap_err();
            assert_eq!(e.code, code::PERMISSION_DENIED);
            assert!(
                e.message.contains(m) && e.message.contains("needs kv_read"),
                "{}",
                e.message
            );
            assert!(who.check_read_write(m, "k.open").is_ok());
            let e = who.check_read_write(m, "other").unwrap_err();
            assert!(!e.message.contains("kv_read"), "{}", e.message);
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(Credentials::from_header(None), Credentials::None);
        assert_eq!(
            Credentials::from_header(Some(b"Bearer abc")),
            Credentials::Bearer("abc")
        );
        assert_eq!(
            Credentials::from_header(Some(b"bearer  abc ")),
            Credentials::Bearer("abc")
        );
        assert_eq!(
            Credentials::from_header(Some(b"Basic eHk6eg==")),
            Credentials::Other
        );
        assert_eq!(
            Credentials::from_header(Some(b"\xff\xfe")),
            Credentials::Other
        );
    }
}
