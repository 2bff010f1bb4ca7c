//! The built-in commands: `RELOAD`, `RELOAD <name>`, `STATUS`, `CLOSE`,
//! `SHUTDOWN`, `UPGRADE`, `AUTH <token>` and `RUN <module> <job>`. Each is one text
//! line; each reply is a [`Reply`], whose text (lines beginning with `OK`
//! or `ERR`) only [`render`] writes. Parsing is pure; the commands that
//! touch the registry run on the control thread, `RUN` on a job thread.
//! [`status`], [`reload`] and [`run`] take only the shared state, so any
//! front end (the public port, an admin socket) can call them.
//!
//! Who may run them on the public port is decided per command, against the
//! settings in force ([`access`]): a peer inside `admin_from` (default:
//! loopback) is an admin unless it is the local end of one of our own
//! upstream sockets ([`self_forward`]); any other peer must first `AUTH`
//! with `admin_token`, and keeps its rights only while that token is the
//! configured one. `admin_from = []` turns admin off on the public port,
//! `AUTH` included; `CLOSE` works for everyone. Failed `AUTH` attempts are
//! logged with the peer, close the connection after `max_auth_failures`,
//! and lock the peer out for a doubling window ([`backoff`]).
//! `public_shutdown = false` refuses `SHUTDOWN` on the public port.
//! All of these settings are re-read on `RELOAD` and SIGHUP.

pub mod render;
pub mod socket;

use crate::access::{AdminAccess, AuthBackoff, ConnAuth};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use crate::registry::{ReloadOutcome, ReloadReport};
use crate::state::Shared;

/// Longest command line accepted.
pub const MAX_LINE: usize = crate::config::ADMIN_MAX_LINE;

/// Every reply a built-in command gives, on the public port or the admin
/// socket. [`render`] turns it into its bytes ([`Reply::text`]).
#[derive(Debug)]
pub enum Reply {
    /// `CLOSE`.
    Bye,
    /// `SHUTDOWN` accepted: the server drains.
    ShuttingDown,
    /// `SHUTDOWN` on the public port with `public_shutdown = false`.
    ShutdownDisabled,
    /// A privileged command from a peer without admin standing.
    Forbidden,
    Unknown,
    /// A command line over [`MAX_LINE`]; the connection closes.
    LineTooLong,
    /// The admin socket already serves its maximum of clients.
    Busy,
    /// The command's reply path closed without an answer.
    NoReply,
    Auth(AuthReply),
    Status(StatusPage),
    /// `RELOAD`.
    Reload(ReloadReport),
    /// `RELOAD <name>`.
    ReloadOne(ReloadOutcome),
    /// `RUN <module> <job>`: `label` is `<module>/<job>`; the job's
    /// summary, or why it failed or did not start.
    Job {
        label: String,
        result: Result<String, String>,
    },
    /// `UPGRADE`: the new worker's pid, or why there is none.
    Upgrade(crate::process::upgrade::Replaced),
}

impl Reply {
    /// Whether the reply reports success (its text starts with `OK`).
    pub fn is_ok(&self) -> bool {
        match self {
            Reply::Bye | Reply::ShuttingDown | Reply::Status(_) => true,
            Reply::Auth(a) => *a == AuthReply::Ok,
            Reply::Reload(r) => r.is_ok(),
            Reply::ReloadOne(o) => o.is_ok(),
            Reply::Job { result, .. } => result.is_ok(),
            Reply::Upgrade(r) => r.is_ok(),
            _ => false,
        }
    }
}

/// The `STATUS` page: one line per module and per job, the host's
/// counters, then the worker's lines (see `process::worker::status_lines`).
#[derive(Debug)]
pub struct StatusPage {
    pub modules: Vec<String>,
    pub jobs: Vec<String>,
    pub host: HostStats,
    /// Whole lines, each ending in `\n`.
    pub worker: String,
}

/// The `host` line of `STATUS`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostStats {
    pub conns: usize,
    pub accepted: u64,
    pub requests: u64,
    pub faults: u64,
    pub loops: usize,
    pub threads: usize,
    pub uptime_s: u64,
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Reload(Option<&'a str>),
    Status,
    Close,
    Shutdown,
    /// Replace the worker process (leader/worker mode).
    Upgrade,
    Auth(&'a str),
    /// Run a module's job now.
    Run(&'a str, &'a str),
    Unknown,
}

impl Command<'_> {
    /// Whether the command is restricted to trusted peers.
    pub fn privileged(&self) -> bool {
        matches!(
            self,
            Command::Reload(_)
                | Command::Status
                | Command::Shutdown
                | Command::Upgrade
                | Command::Run(..)
        )
    }
}

/// Parses one line (without its terminator). Runs on the event loop that
/// read the line, which is where the test hook of [`crate::panics`] makes
/// a loop panic when armed.
pub fn parse(line: &[u8]) -> Command<'_> {
    crate::panics::inject(crate::panics::Site::Loop, line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Command::Unknown;
    };
    let mut words = line.split_ascii_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next();
    let arg2 = words.next();
    let extra = words.next().is_some();
    match (cmd, arg, arg2, extra) {
        ("RELOAD", name, None, false) => Command::Reload(name),
        ("STATUS", None, ..) => Command::Status,
        ("CLOSE", None, ..) => Command::Close,
        ("SHUTDOWN", None, ..) => Command::Shutdown,
        ("UPGRADE", None, ..) => Command::Upgrade,
        ("AUTH", Some(token), None, false) => Command::Auth(token),
        ("RUN", Some(module), Some(job), false) => Command::Run(module, job),
        _ => Command::Unknown,
    }
}

/// What an `AUTH` line came to (its text is in [`render`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthReply {
    Ok,
    /// `admin_from = []`: no admin on this port.
    Forbidden,
    NoToken,
    BadToken,
    /// Refused unchecked: the peer failed recently.
    Locked(Duration),
    /// The connection reached `max_auth_failures`: it is closed.
    TooMany,
}

impl AuthReply {
    /// Whether the connection must close once the reply is out.
    pub fn closes(&self) -> bool {
        *self == AuthReply::TooMany
    }
}

/// `AUTH <token>` from `peer` on a connection whose standing is `conn`.
/// A peer locked out by [`AuthBackoff`] is refused without the token being
/// looked at; either failure counts against `max_auth_failures`, and each
/// is logged at warn with the peer (never with the token).
pub fn auth(
    access: &AdminAccess,
    backoff: &AuthBackoff,
    conn: &mut ConnAuth,
    peer: SocketAddr,
    token: &str,
    now: Instant,
) -> AuthReply {
    if !access.enabled() {
        return AuthReply::Forbidden;
    }
    if !access.has_token() {
        return AuthReply::NoToken;
    }
    let failure = if let Some(left) = backoff.locked(peer.ip(), now) {
        AuthReply::Locked(left)
    } else if access.token_matches(token) {
        backoff.succeeded(peer.ip());
        conn.authenticated(access.epoch());
        log::info!("AUTH from {peer}: ok");
        return AuthReply::Ok;
    } else {
        backoff.failed(peer.ip(), access.auth_backoff, now);
        AuthReply::BadToken
    };
    let failures = conn.failed();
    let max = access.max_auth_failures;
    let why = match failure {
        AuthReply::Locked(_) => "refused, peer locked out after recent failures",
        _ => "bad token",
    };
    log::warn!("AUTH from {peer} failed ({why}): {failures} of {max} on this connection");
    if failures >= max {
        log::warn!("AUTH from {peer}: {failures} failed attempts, closing the connection");
        return AuthReply::TooMany;
    }
    failure
}

/// The `STATUS` reply.
pub fn status(shared: &Shared) -> Reply {
    // Read in the order the page shows them, as before replies were typed.
    let modules = shared.registry.status_lines();
    let jobs = shared.scheduler.status_lines();
    let (requests, faults) = shared.registry.totals();
    Reply::Status(StatusPage {
        modules,
        jobs,
        host: HostStats {
            conns: shared.conns.load(Ordering::Relaxed),
            accepted: shared.accepted.load(Ordering::Relaxed),
            requests,
            faults,
            loops: shared.loops,
            threads: shared.threads,
            uptime_s: shared.started.elapsed().as_secs(),
        },
        worker: crate::process::worker::status_lines(shared.started),
    })
}

/// The `RELOAD` / `RELOAD <name>` reply.
pub fn reload(shared: &Shared, name: Option<&str>) -> Reply {
    match name {
        Some(n) => {
            crate::panics::inject(
                crate::panics::Site::Control,
                format!("RELOAD {n}").as_bytes(),
            );
            // An explicit reload is the operator's word: lift a quarantine.
            crate::quarantine::unquarantine(n);
            Reply::ReloadOne(shared.registry.reload_one(n))
        }
        None => Reply::Reload(shared.registry.reload_all()),
    }
}

/// `RUN <module> <job>`: starts the job on a job thread; its reply, `OK
/// <module>/<job> <summary>` or `ERR <module>/<job>: <reason>`, goes to
/// `reply` once the job has finished (or at once, when it cannot start).
pub fn run<F>(shared: &Shared, module: &str, job: &str, reply: F)
where
    F: Fn(Reply) + Clone + Send + 'static,
{
    let label = format!("{module}/{job}");
    let (done, done_label) = (reply.clone(), label.clone());
    let started = shared.scheduler.run_now(
        module,
        job,
        Box::new(move |result| {
            done(Reply::Job {
                label: done_label,
                result,
            })
        }),
    );
    if let Err(why) = started {
        reply(Reply::Job {
            label,
            result: Err(why.to_string()),
        });
    }
}

/// `UPGRADE`: replaces the worker (see `process::upgrade::replace`) and gives
/// the [`Reply::Upgrade`] to `reply` once the new worker is ready (or
/// why there is none).
pub fn upgrade<F>(shared: std::sync::Arc<Shared>, reply: F)
where
    F: FnOnce(Reply) + Send + 'static,
{
    crate::process::upgrade::replace(
        shared,
        crate::process::upgrade::Replace::Upgrade,
        Box::new(move |r| reply(Reply::Upgrade(r))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Standing;

    #[test]
    fn parses_commands() {
        assert_eq!(parse(b"RELOAD"), Command::Reload(None));
        assert_eq!(parse(b"RELOAD http"), Command::Reload(Some("http")));
        assert_eq!(parse(b"RELOAD a b"), Command::Unknown);
        assert_eq!(parse(b"STATUS"), Command::Status);
        assert_eq!(parse(b"STATUSX"), Command::Unknown);
        assert_eq!(parse(b"UPGRADE"), Command::Upgrade);
        assert!(Command::Upgrade.privileged());
        assert_eq!(parse(b"AUTH s3cret"), Command::Auth("s3cret"));
        assert_eq!(parse(b"AUTH"), Command::Unknown);
        assert_eq!(parse(b"RUN cron tick"), Command::Run("cron", "tick"));
        assert_eq!(parse(b"RUN cron"), Command::Unknown);
        assert_eq!(parse(b"RUN cron tick x"), Command::Unknown);
        assert!(Command::Run("a", "b").privileged());
        assert!(Command::Shutdown.privileged());
        assert!(!Command::Close.privileged());
    }

    fn access(toml: &str) -> AdminAccess {
        let cfg = crate::config::Config::parse(toml).unwrap();
        AdminAccess::new(&cfg.server, 0).unwrap()
    }

    #[test]
    fn auth_fails_locks_and_closes() {
        let a = access(
            "[server]\nadmin_token = \"t\"\nadmin_from = [\"192.0.2.0/24\"]\n\
             max_auth_failures = 3\nauth_backoff_ms = 100",
        );
        let backoff = AuthBackoff::default();
        let peer: SocketAddr = "198.51.100.9:4000".parse().unwrap();
        let now = Instant::now();
        let mut conn = ConnAuth::default();
        assert_eq!(
            auth(&a, &backoff, &mut conn, peer, "x", now),
            AuthReply::BadToken
        );
        let locked = auth(&a, &backoff, &mut conn, peer, "t", now);
        assert_eq!(locked, AuthReply::Locked(Duration::from_millis(100)));
        let last = auth(&a, &backoff, &mut conn, peer, "t", now);
        assert_eq!(last, AuthReply::TooMany);
        assert!(last.closes());
        // Another connection from the same peer after the window: the
        // right token works and clears the peer.
        let mut other = ConnAuth::default();
        let later = now + Duration::from_millis(100);
        assert_eq!(
            auth(&a, &backoff, &mut other, peer, "t", later),
            AuthReply::Ok
        );
        assert!(backoff.is_empty());
        assert_eq!(a.standing(peer, &other, |_| false), Standing::Admin);
    }

    #[test]
    fn auth_when_admin_is_off_or_tokenless() {
        let backoff = AuthBackoff::default();
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut conn = ConnAuth::default();
        let off = access("[server]\nadmin_token = \"t\"\nadmin_from = []");
        let now = Instant::now();
        assert_eq!(
            auth(&off, &backoff, &mut conn, peer, "t", now),
            AuthReply::Forbidden
        );
        let none = access("[server]");
        assert_eq!(
            auth(&none, &backoff, &mut conn, peer, "t", now),
            AuthReply::NoToken
        );
        assert!(backoff.is_empty());
    }
}
