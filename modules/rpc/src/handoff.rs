//! Reload in `overlap` mode: how a retiring generation hands over to its
//! successor without failing a request or losing a subscription.
//!
//! Each generation keeps the committed data in memory and is the only
//! writer of it, so two generations must never serve at the same time.
//! The host calls `save_state` on the old generation just before it
//! starts the new one; from that moment the old one is *frozen*:
//!
//! 1. `save_state` waits for the calls in progress, waits for the writer
//!    to commit and answer everything queued, and returns the subscription
//!    table, the starts of HTTP requests connections have sent (a raw
//!    line still arriving stays in the host's buffer and reaches the
//!    successor as it is), the ownership lock (see [`crate::owner`]) and a
//!    shared secret token.
//! 2. The new generation loads the database (which now holds every
//!    acknowledged write) and restores that state.
//! 3. Until the route table points at the new generation (and for the
//!    in-flight messages that still reach the old one afterwards), the
//!    frozen generation answers nothing itself: it defers each message (one
//!    raw line or HTTP request at a time) to the pool and forwards it with
//!    [`module_api::Host::call`] to whatever
//!    generation is current, retrying while that is still itself. The
//!    forwarded message runs on the new generation as if it had arrived
//!    there, for the same connection id; the reply comes back and goes out
//!    in order. Connection closes are forwarded the same way.
//! 4. The new generation *claims* the handover first thing in its start;
//!    if it then fails to start, it tells the old one to resume before
//!    returning its error. If no successor claims it within
//!    `handoff_timeout_ms` (the host gave up on the reload before starting
//!    one), the old generation resumes by itself; a claim that comes after
//!    that is refused, and that start fails. So exactly one generation
//!    serves at any time.
//!
//! Internal calls are framed as `\0rpc <token> <cmd> <conn> <kind>\n` +
//! payload; only in-process calls (connection id 0) carrying the token are
//! accepted, so no client can forge them.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use module_api::{CallStatus, RVec, Verdict};
use serde::{Deserialize, Serialize};

use crate::access::Peer;

use crate::access::session::SessionSnap;
use crate::generation::Rpc;
use crate::host::{wait, HostApi};
use crate::jsonrpc::{self, code, RpcError, Sink};
use crate::types::Mode;
use crate::{post, raw};

/// Every internal call starts with this.
pub const PREFIX: &[u8] = b"\0rpc ";

/// What a generation hands to the next one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub token: String,
    /// Connection id and its topic patterns.
    pub subs: Vec<(u64, Vec<String>)>,
    pub conns: Vec<ConnSnap>,
    /// The descriptor of the held ownership lock (see [`crate::owner`]).
    #[serde(default)]
    pub lock_fd: Option<i32>,
    /// Who each raw TCP connection was logged in as; the successor
    /// resolves these against its own users ([`crate::access::Access::restore`]).
    #[serde(default)]
    pub sessions: Vec<SessionSnap>,
    /// Connections this generation saw close (its tombstones): the
    /// successor keeps them closed and restores no session for them.
    #[serde(default)]
    pub closed: Vec<u64>,
    /// Consumers' in-memory state: deliveries, members ([`crate::streams`]).
    #[serde(default)]
    pub consumers: Vec<crate::streams::consumer::ConsumerSnap>,
    /// `kv.watch` watches ([`crate::watch`]).
    #[serde(default)]
    pub watches: Vec<crate::watch::WatchSnap>,
    /// Queue subscriptions: (connection, pattern, queue name).
    #[serde(default)]
    pub qsubs: Vec<(u64, String, String)>,
    /// Raw connections' `bus.request` calls still waiting
    /// ([`crate::inbox::Inbox::snapshot`]).
    #[serde(default)]
    pub inbox: Vec<crate::inbox::PendingSnap>,
    /// The WebSocket connections ([`crate::ws`]) and their unfinished
    /// messages.
    #[serde(default)]
    pub ws: Vec<crate::conns::WsSnap>,
}

/// The start of a message a connection has sent, as handed over.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnSnap {
    pub id: u64,
    /// Hex of the bytes.
    pub partial: String,
    /// They start an HTTP request (else a line).
    pub http: bool,
}

impl State {
    /// The state from the previous generation, `None` on a first start.
    pub fn parse(bytes: &[u8]) -> Result<Option<State>, String> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let s: State = serde_json::from_slice(bytes)
            .map_err(|e| format!("cannot read the previous generation's state: {e}"))?;
        if s.version != 1 {
            return Err(format!("unknown state version {}", s.version));
        }
        Ok(Some(s))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A fresh secret for internal calls.
pub fn new_token() -> String {
    let s = RandomState::new();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:016x}{:016x}",
        s.hash_one(t),
        s.hash_one(std::process::id())
    )
}

/// A parsed internal call.
#[derive(Debug, PartialEq, Eq)]
pub enum Internal<'a> {
    /// Handle `payload` as if it had arrived on connection `conn` from
    /// `peer` (authorized as that connection, never as in-process).
    Forward {
        conn: u64,
        http: bool,
        peer: Peer,
        payload: &'a [u8],
    },
    /// Connection `conn` closed.
    Close { conn: u64 },
    /// A successor is starting from this generation's state.
    Claim,
    /// The successor failed to start: serve again.
    Resume,
}

/// A frozen generation that nobody claimed went back to serving.
#[derive(Debug)]
pub struct Resumed;

/// Frames an internal call. `peer`, the connection's address, travels
/// with forwarded messages so that the successor decides protected mode
/// as the old generation would have (a generation before this version
/// sent none: such a peer is unknown, and so not loopback). A
/// self-forwarded peer (a proxy route of ours back at our own port) goes
/// as `self:<ip>`, so the flag is not lost across the hand-over; a
/// generation that does not know the form reads it as an unknown peer,
/// which is not loopback either.
pub fn envelope(
    token: &str,
    cmd: &str,
    conn: u64,
    http: bool,
    peer: Peer,
    payload: &[u8],
) -> Vec<u8> {
    let kind = if http { "http" } else { "raw" };
    let peer = match peer.ip {
        None => String::new(),
        Some(ip) if peer.self_forwarded => format!(" self:{ip}"),
        Some(ip) => format!(" {ip}"),
    };
    let mut v = format!("\0rpc {token} {cmd} {conn} {kind}{peer}\n").into_bytes();
    v.extend_from_slice(payload);
    v
}

/// Parses an internal call; `None` if it is not one or the token is wrong.
pub fn parse<'a>(input: &'a [u8], token: &str) -> Option<Internal<'a>> {
    let rest = input.strip_prefix(PREFIX)?;
    let nl = memchr::memchr(b'\n', rest)?;
    let head = std::str::from_utf8(&rest[..nl]).ok()?;
    let payload = &rest[nl + 1..];
    let mut f = head.split(' ');
    if f.next()? != token {
        return None;
    }
    let cmd = f.next()?;
    let conn: u64 = f.next()?.parse().ok()?;
    let http = f.next()? == "http";
    let peer = match f.next() {
        None => Peer::UNKNOWN,
        Some(p) => match p.strip_prefix("self:") {
            Some(ip) => ip.parse().map_or(Peer::UNKNOWN, |ip| Peer::new(ip, true)),
            None => p.parse().map_or(Peer::UNKNOWN, |ip| Peer::new(ip, false)),
        },
    };
    match cmd {
        "fwd" => Some(Internal::Forward {
            conn,
            http,
            peer,
            payload,
        }),
        "close" => Some(Internal::Close { conn }),
        "claim" => Some(Internal::Claim),
        "resume" => Some(Internal::Resume),
        _ => None,
    }
}

fn action_name(v: &Verdict) -> &'static str {
    match v.action {
        module_api::Action::Close => "close",
        module_api::Action::Keep => "keep",
        _ => "done",
    }
}

/// Receiver side: runs a forwarded message (on a pool thread, inside the
/// sender's `call`). The reply is `ok <action>\n` + output, or `retry\n`
/// when this generation is frozen too.
pub fn serve(rpc: &Rpc, conn: u64, http: bool, peer: Peer, payload: &[u8], out: &mut RVec<u8>) {
    let gate = rpc.core.gate.read().unwrap_or_else(|e| e.into_inner());
    if *gate != Mode::Live {
        out.put(b"retry\n");
        return;
    }
    let mut reply = RVec::new();
    let mut gate = Some(gate);
    let v = if http {
        post::on_deferred(rpc, conn, peer, false, payload, &mut reply, &mut || {
            gate.take();
        })
    } else if rpc.core.ws.contains(conn) {
        crate::ws::serve(rpc, conn, peer, payload, &mut reply)
    } else {
        raw::on_deferred(rpc, conn, peer, payload, &mut reply)
    };
    out.put(format!("ok {}\n", action_name(&v)).as_bytes());
    out.put(&reply);
}

/// Sender side: a frozen generation hands one message (the whole input of
/// a deferred call) to the current generation, waiting for it to be
/// installed, and returns its reply and verdict — or `Err(Resumed)` when
/// nobody claimed the handover and this generation serves again.
pub fn forward(
    rpc: &Rpc,
    conn: u64,
    http: bool,
    peer: Peer,
    input: &[u8],
    out: &mut RVec<u8>,
) -> Result<Verdict, Resumed> {
    let msg = envelope(&rpc.token, "fwd", conn, http, peer, input);
    rpc.core
        .stats
        .forwarded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + rpc.core.cfg.handoff_timeout();
    let mut pause = Duration::from_millis(1);
    loop {
        match rpc.core.host.call("rpc", &msg) {
            Ok(reply) => {
                if let Some(rest) = reply.strip_prefix(b"ok ") {
                    let nl = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    out.put(&rest[(nl + 1).min(rest.len())..]);
                    let len = input.len();
                    return Ok(match &rest[..nl] {
                        b"close" => Verdict::close(len),
                        b"keep" => Verdict::keep(len).watch_close(),
                        _ => Verdict::done(len),
                    });
                }
                if reply != b"retry\n" {
                    log::error!(
                        "handing a message over failed: {}",
                        String::from_utf8_lossy(&reply)
                    );
                    break;
                }
            }
            Err(CallStatus::Unavailable) => {}
            Err(status) => {
                log::error!("handing a message over failed: {status:?}");
                break;
            }
        }
        if rpc.resume_if_abandoned() {
            return Err(Resumed);
        }
        if Instant::now() >= deadline {
            log::error!(
                "conn {conn}: no live rpc generation after {:?}; answering -32001",
                rpc.core.cfg.handoff_timeout()
            );
            break;
        }
        // Waiting for the successor to be installed is not a hang.
        wait(rpc.core.host, || std::thread::sleep(pause));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    Ok(unavailable(http, input.len(), out))
}

/// Answers a message that no generation can serve in time: -32001 (or
/// 503) and close.
pub fn unavailable(http: bool, len: usize, out: &mut RVec<u8>) -> Verdict {
    if http {
        return post::unavailable(out, len);
    }
    jsonrpc::write_error(
        out,
        None,
        &RpcError::new(code::UNAVAILABLE, "service unavailable, retry"),
    );
    out.put(b"\n");
    Verdict::close(len)
}

/// A successor's first step: claims the predecessor's state. `Err` when
/// the predecessor gave up waiting and serves again.
pub fn claim(host: &dyn HostApi, token: &str) -> Result<(), String> {
    match host.call(
        "rpc",
        &envelope(token, "claim", 0, false, Peer::UNKNOWN, b""),
    ) {
        Ok(reply) if reply.starts_with(b"refused") => Err(
            "the previous generation waited too long for this one and serves again; reload again"
                .into(),
        ),
        // Claimed, or no predecessor left to claim from.
        _ => Ok(()),
    }
}

/// Tells the current generation that `conn` closed (on the writer thread
/// of a frozen generation).
pub fn forward_close(host: &dyn HostApi, token: &str, conn: u64, timeout: Duration) {
    let msg = envelope(token, "close", conn, false, Peer::UNKNOWN, b"");
    let deadline = Instant::now() + timeout;
    loop {
        match host.call("rpc", &msg) {
            Ok(reply) if reply.starts_with(b"ok") => return,
            Ok(_) | Err(CallStatus::Unavailable) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => return,
        }
    }
}

/// Dropped on a failed start after the previous generation froze: tells
/// it to serve again.
pub struct ResumeGuard {
    pub host: &'static dyn HostApi,
    pub token: Option<String>,
}

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            log::warn!("start failed after the handover; the previous generation resumes");
            let _ = self.host.call(
                "rpc",
                &envelope(&token, "resume", 0, false, Peer::UNKNOWN, b""),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let peer = Peer::new("10.77.0.1".parse().unwrap(), false);
        let e = envelope("t0k", "fwd", 42, true, peer, b"POST /rpc ...");
        assert_eq!(
            parse(&e, "t0k"),
            Some(Internal::Forward {
                conn: 42,
                http: true,
                peer,
                payload: b"POST /rpc ..."
            })
        );
        // From a generation that sent no address: unknown.
        let old = b"\0rpc t0k fwd 42 raw\n{}";
        assert!(matches!(
            parse(old, "t0k"),
            Some(Internal::Forward {
                peer: Peer::UNKNOWN,
                ..
            })
        ));
        // A self-forwarded peer keeps its flag across the hand-over, so a
        // frozen generation's forward does not launder it into loopback.
        let fwd = Peer::new("127.0.0.1".parse().unwrap(), true);
        let e = envelope("t0k", "fwd", 43, false, fwd, b"{}");
        assert!(e.starts_with(b"\0rpc t0k fwd 43 raw self:127.0.0.1\n"));
        match parse(&e, "t0k") {
            Some(Internal::Forward { peer, .. }) => {
                assert_eq!(peer, fwd);
                assert!(!peer.is_loopback());
            }
            other => panic!("{other:?}"),
        }
        // A generation that does not know the form: unknown, not loopback.
        let unknown: Option<std::net::IpAddr> = "self:127.0.0.1".parse().ok();
        assert_eq!(unknown, None);
        assert_eq!(parse(&e, "other"), None);
        assert_eq!(parse(b"{\"jsonrpc\":\"2.0\"}", "t0k"), None);
        let e = envelope("t0k", "close", 7, false, Peer::UNKNOWN, b"");
        assert_eq!(parse(&e, "t0k"), Some(Internal::Close { conn: 7 }));
        let s = State {
            version: 1,
            token: "x".into(),
            subs: vec![(1, vec!["a.*".into()])],
            conns: vec![ConnSnap {
                id: 2,
                partial: "7b".into(),
                http: false,
            }],
            lock_fd: Some(9),
            sessions: vec![SessionSnap {
                id: 2,
                user: Some("bot1".into()),
                how: Some(crate::access::session::How::Token),
                token_hash: None,
                peer: peer.ip,
                self_forwarded: true,
            }],
            closed: vec![3],
            consumers: vec![crate::streams::consumer::ConsumerSnap {
                stream: "S".into(),
                consumer: "c".into(),
                next_seq: 5,
                pending: vec![(4, 2, 1, 300)],
                members: vec![2],
                acked: vec![],
                terminated: 0,
            }],
            watches: vec![crate::watch::WatchSnap {
                id: 4,
                conn: 2,
                prefix: Some("a.".into()),
                ..Default::default()
            }],
            qsubs: vec![(4, "q.*".into(), "w".into())],
            inbox: Vec::new(),
            ws: vec![crate::conns::WsSnap {
                id: 4,
                opcode: 1,
                fragments: 2,
                partial: "7b22".into(),
            }],
        };
        let back = State::parse(&s.encode()).unwrap().unwrap();
        assert_eq!(back.consumers, s.consumers);
        assert_eq!(back.qsubs, s.qsubs);
        assert_eq!(back.subs, s.subs);
        assert_eq!(back.lock_fd, Some(9));
        assert_eq!(back.sessions, s.sessions);
        assert!(back.sessions[0].peer().self_forwarded);
        assert_eq!(back.closed, [3]);
        assert_eq!(back.watches, s.watches);
        assert_eq!(back.ws, s.ws);
        assert!(State::parse(b"").unwrap().is_none());
        assert!(State::parse(b"{\"version\":9,\"token\":\"\",\"subs\":[],\"conns\":[]}").is_err());
    }
}
