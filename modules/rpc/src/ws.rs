//! JSON-RPC over WebSocket at `GET /rpc/ws`: the upgrade, then one
//! JSON-RPC message per text frame each way, built on [`module_api::ws`].
//!
//! # The upgrade
//!
//! [`module_api::ws::handshake::check`] judges the request (400, 405, 426
//! with `Sec-WebSocket-Version: 13`). Then: a browser's `Origin` must name
//! the request's own `Host` or be listed in `ws_origins` (403 otherwise:
//! in protected mode every page the user opens could otherwise reach the
//! loopback-trusted bus); in protected mode a peer that is not loopback
//! gets 403, and a browser page must be on a loopback host name (DNS
//! rebinding; both checks are [`access::browser`]'s, shared with
//! `POST /rpc`); with users, an `Authorization: Bearer` token logs the
//! connection in at once (401 when wrong), a client certificate or
//! `no_auth_user` on its first message as on raw TCP, and a browser (which
//! cannot set headers) sends `sys.auth` first. Tokens are never read from
//! the URL, which ends up in logs. The answer is 101 and the connection is
//! kept ([`Verdict::keep`] with `watch_close`).
//!
//! # Messages
//!
//! Each complete text message is evaluated by the same code as a raw line
//! ([`raw::evaluate`]); its reply (if any) goes out as one text frame.
//! A message that writes goes to the writer and the connection is
//! deferred exactly like a raw line: [`collect`] gets the reply on
//! the pool and frames it. Pushes (`bus.message` and every other
//! notification) are framed in [`crate::core::Core::push_line`] and
//! [`crate::core::Core::deliver`], which look the connection up in
//! [`crate::conns::WsConns`] (an atomic count first, so raw-only servers pay nothing).
//!
//! A ping is answered with a pong, a close frame with the same code and
//! the end of the connection; a protocol error with a close frame carrying
//! its code (1002, 1007 text not UTF-8, 1008 too many fragments, 1009 too
//! big), then the end; a binary message with 1003. A frame still arriving
//! stays in the host's buffer (bounded by `[server] max_message_size`); a
//! frame, and a message reassembled from fragments, may be at most
//! `max_line_bytes`, and a message at most `ws_max_fragments` frames.
//! Every `ws_ping_ms` the server pings every WebSocket connection, whose
//! pong counts as activity for the host's `idle_timeout_ms`.
//!
//! # Reload
//!
//! Which connections speak WebSocket and the fragments of a message still
//! arriving are handed over ([`crate::handoff::State::ws`]). While frozen,
//! a generation defers one whole frame at a time and forwards it; the
//! successor reassembles it with the handed-over state. An upgrade that
//! arrives during that short window is answered 503 (clients reconnect).

use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

use module_api::http::{self, Parsed};
use module_api::ws::frame::{self, Decoded, Header, Opcode};
use module_api::ws::{close, handshake, Event, Fail, Reassembler};
use module_api::{ConnInfo, RVec, Verdict};

use crate::access::browser::Page;
use crate::access::{self, Credentials, Peer};
use crate::conns::{WsSnap, WsState};
use crate::core::{ws_overflow_notice, Core};
use crate::generation::Rpc;
use crate::host::wait;
use crate::jsonrpc::{RpcError, Sink};
use crate::methods::Env;
use crate::raw::{self, Evaluated};
use crate::types::{Kind, Mode};
use crate::writer::Submission;

/// The path the upgrade must ask for.
pub const PATH: &str = "/rpc/ws";
/// Largest upgrade request head.
const MAX_HEAD: usize = 16 * 1024;

fn limits(core: &Core) -> module_api::ws::Limits {
    module_api::ws::Limits {
        max_frame: core.cfg.max_line_bytes as u64,
        max_message: core.cfg.max_line_bytes,
        max_fragments: core.cfg.ws_max_fragments,
    }
}

/// A whole unmasked frame.
fn put_frame<S: Sink>(out: &mut S, opcode: Opcode, payload: &[u8]) {
    out.put(Header::new(true, opcode, payload.len(), None).as_bytes());
    out.put(payload);
}

/// One text frame per line of `lines` (each ending with `\n`, which the
/// frame leaves out).
pub fn put_lines<S: Sink>(out: &mut S, lines: &[u8]) {
    for line in raw::lines(lines) {
        put_frame(out, Opcode::Text, line);
    }
}

fn put_close<S: Sink>(out: &mut S, code: u16, reason: &str) {
    put_frame(out, Opcode::Close, &frame::close_payload(code, reason));
}

fn fail_with<S: Sink>(conn: u64, out: &mut S, f: Fail, len: usize) -> Verdict {
    log::info!("rpc: ws conn {conn}: closing with {}: {}", f.code, f.why);
    put_close(out, f.code, f.why);
    Verdict::close(len)
}

/// Input on an event loop: `None` when it is neither a WebSocket
/// connection's nor an upgrade request (raw lines or `POST /rpc`).
pub fn on_message(rpc: &Rpc, info: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Option<Verdict> {
    let core = &*rpc.core;
    if !core.ws.contains(info.id) {
        return input
            .starts_with(b"GET ")
            .then(|| upgrade(rpc, info, input, out));
    }
    let gate = core.gate.try_read();
    Some(match gate.as_deref() {
        Ok(Mode::Live) => run(
            rpc,
            info.id,
            access::peer_of(info),
            input,
            out,
            Some(raw::out_budget(info)),
        ),
        // Frozen or in standby: the pool forwards one frame at a time, or
        // waits.
        _ => match frame::decode(input, &frame_limits(core)) {
            Ok(Decoded::Partial) => Verdict::NEED_MORE,
            Ok(Decoded::Frame(f)) => Verdict::defer(f.len),
            Err(f) => fail_with(info.id, out, f, input.len()),
        },
    })
}

fn frame_limits(core: &Core) -> frame::Limits {
    frame::Limits {
        max_payload: core.cfg.max_line_bytes as u64,
        masked: true,
    }
}

fn refuse(out: &mut RVec<u8>, status: u16, why: &'static str, len: usize) -> Verdict {
    handshake::Refusal::new(status, why).write(out);
    Verdict::close(len)
}

/// The upgrade request (see the module doc).
fn upgrade(rpc: &Rpc, info: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let core = &*rpc.core;
    let conn = info.id;
    let mut headers = http::empty_headers();
    let req = match http::parse_request(input, &mut headers) {
        Ok(Parsed::Complete(req)) => req,
        Ok(Parsed::Partial) if input.len() > MAX_HEAD => {
            return refuse(out, 431, "request head too large", input.len())
        }
        Ok(Parsed::Partial) => return Verdict::NEED_MORE,
        Err(http::ParseError::TooManyHeaders) => {
            return refuse(out, 431, "too many headers", input.len())
        }
        Err(http::ParseError::Malformed) => return refuse(out, 400, "bad request", input.len()),
    };
    if req.path() != PATH {
        return refuse(
            out,
            404,
            "not found: the WebSocket endpoint is GET /rpc/ws",
            input.len(),
        );
    }
    let accept = match handshake::check(&req) {
        Ok(a) => a,
        Err(r) => {
            r.write(out);
            return Verdict::close(input.len());
        }
    };
    let peer = access::peer_of(info);
    let users = !core.access.users.is_empty();
    let page = Page::of(&req, &core.cfg.ws_origins);
    // The Origin first (any peer), then the peer, then rebinding: a
    // remote browser hears about its Origin, not about loopback names.
    if let Some(r) = page.refusal(false) {
        log::warn!(
            "rpc: ws upgrade from {peer} refused: Origin {:?} is neither this host nor in ws_origins",
            String::from_utf8_lossy(req.header("origin").unwrap_or_default())
        );
        return refuse(out, 403, r.why(), input.len());
    }
    if !users && !peer.is_loopback() {
        return refuse(
            out,
            403,
            "protected mode: only loopback peers are served",
            input.len(),
        );
    }
    if let Some(r) = page.refusal(!users) {
        log::warn!(
            "rpc: ws upgrade from {peer} refused: protected mode and a browser page at Host {:?} \
             (not a loopback name; DNS rebinding?)",
            String::from_utf8_lossy(req.header("host").unwrap_or_default())
        );
        return refuse(out, 403, r.why(), input.len());
    }
    let gate = core.gate.try_read();
    if !matches!(gate.as_deref(), Ok(Mode::Live)) {
        return refuse(out, 503, "reloading; connect again", input.len());
    }
    match Credentials::from_header(req.header("authorization")) {
        Credentials::None => {}
        Credentials::Bearer(token) if users => {
            if let Err(e) = core.access.authenticate(conn, peer, token, None).result {
                log::info!("rpc: ws upgrade from {peer} refused: {}", e.message);
                return refuse(out, 401, "authentication failed", input.len());
            }
        }
        _ if users => return refuse(out, 401, "use Authorization: Bearer <token>", input.len()),
        // Protected mode: loopback, nothing to log in as.
        _ => {}
    }
    let mut st = core.conns.take(conn);
    st.ws = Some(Box::new(WsState {
        reasm: Reassembler::new(limits(core)),
    }));
    if !core.conns.put_back(conn, st) {
        return Verdict::close(input.len());
    }
    core.ws.add(conn);
    drop(gate);
    handshake::write_accept(out, &accept);
    log::debug!("rpc: conn {conn} from {peer} speaks WebSocket");
    Verdict::keep(req.head_len).watch_close()
}

/// A text message as a line for the writer: a raw newline in JSON text
/// can only be white space (newlines in strings are escaped), so it
/// becomes a space and the message stays one line.
fn as_line(text: &str) -> Vec<u8> {
    let mut q: Vec<u8> = text
        .bytes()
        .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect();
    q.push(b'\n');
    q
}

/// Reads frames from `input` (the generation is live). On an event loop
/// (`budget` set) it stops at the output budget and defers a message that
/// needs the writer; on the pool (`None`) it waits for the writer itself.
fn run(
    rpc: &Rpc,
    conn: u64,
    peer: Peer,
    input: &[u8],
    out: &mut RVec<u8>,
    budget: Option<usize>,
) -> Verdict {
    let core = &*rpc.core;
    let mut st = core.conns.take(conn);
    let mut ws = st.ws.take().unwrap_or_else(|| {
        Box::new(WsState {
            reasm: Reassembler::new(limits(core)),
        })
    });
    let mut who = core.access.who(core.host, &core.conns, conn, peer);
    let mut scratch = Vec::new();
    let mut pos = 0;
    let flimits = frame_limits(core);
    let more = |pos: usize| {
        if pos == 0 {
            Verdict::NEED_MORE
        } else {
            Verdict::keep(pos).watch_close()
        }
    };
    // The host's buffer may still hold output of earlier calls.
    let base = out.len();
    let verdict = loop {
        if budget.is_some_and(|b| out.len() >= b) {
            break more(pos);
        }
        let f = match frame::decode(&input[pos..], &flimits) {
            Ok(Decoded::Partial) => break more(pos),
            Ok(Decoded::Frame(f)) => f,
            Err(f) => break fail_with(conn, out, f, input.len()),
        };
        // A message that completes here may have to wait for the next
        // call (see below): keep the reader as it was before it.
        let data_end = f.fin && !f.opcode.is_control();
        let saved = (budget.is_some() && data_end && out.len() > base).then(|| ws.reasm.clone());
        let event = match ws.reasm.push(&f) {
            Ok(e) => e,
            Err(f) => break fail_with(conn, out, f, input.len()),
        };
        let start = pos;
        pos += f.len;
        let text = match event {
            None | Some(Event::Pong(_)) => continue,
            Some(Event::Ping(p)) => {
                put_frame(out, Opcode::Pong, &p);
                continue;
            }
            Some(Event::Close(code, _)) => {
                put_close(out, code.unwrap_or(close::NORMAL), "");
                break Verdict::close(pos);
            }
            Some(Event::Binary(_)) => {
                let f = Fail::new(close::UNSUPPORTED, "send JSON-RPC as text frames");
                break fail_with(conn, out, f, input.len());
            }
            Some(Event::Text(t)) => t,
        };
        scratch.clear();
        let (writes, close) = {
            let map = core.store.read();
            let mut env = Env::reading(core, &map, conn, who.clone(), peer);
            let writes = matches!(
                raw::evaluate(&mut env, text.as_bytes(), &mut scratch),
                Evaluated::Writer(_)
            );
            who = env.who;
            (writes, env.close)
        };
        if !writes {
            put_lines(out, &scratch);
            if close {
                break Verdict::close(pos);
            }
            continue;
        }
        if budget.is_none() {
            // On the pool: wait for the writer here.
            let call = || {
                rpc.writer.call(
                    conn,
                    who.clone(),
                    peer,
                    Kind::Lines,
                    as_line(&text),
                    usize::MAX,
                )
            };
            match wait(core.host, call) {
                Ok(reply) => {
                    put_lines(out, &reply.out);
                    if reply.close {
                        break Verdict::close(pos);
                    }
                }
                Err(e) => break writer_failed(core, out, &text, &e, pos),
            }
            continue;
        }
        if let Some(saved) = saved {
            // Replies are in `out`, and a deferred call may write nothing:
            // send them first; the next call takes this frame again.
            ws.reasm = saved;
            break Verdict::keep(start).watch_close();
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let sub = Submission {
            conn,
            who: who.clone(),
            peer,
            kind: Kind::Lines,
            input: as_line(&text),
            budget: usize::MAX,
            reply: tx,
        };
        if !rpc.writer.submit(sub) {
            // Answered here as the pool would: deferred without a reply
            // to collect, the frames up to `pos` would be evaluated again
            // on the pool (those that made no output too).
            break writer_failed(core, out, &text, &raw::writer_stopped(), pos);
        }
        st.pending = Some(rx);
        break Verdict::defer(pos);
    };
    st.ws = Some(ws);
    core.conns.put_back(conn, st);
    verdict
}

/// A message the writer could not take: the error for each of its calls
/// as one text frame, then the end of the connection.
fn writer_failed<S: Sink>(
    core: &Core,
    out: &mut S,
    text: &str,
    e: &RpcError,
    consumed: usize,
) -> Verdict {
    let mut reply = Vec::new();
    let msg = crate::jsonrpc::parse(text.as_bytes(), core.cfg.max_batch);
    crate::jsonrpc::write_all_errors(&mut reply, &msg, e);
    if !reply.is_empty() {
        put_frame(out, Opcode::Text, &reply);
    }
    Verdict::close(consumed)
}

/// The writer's reply to a message [`on_message`] deferred, framed (on
/// the pool).
pub fn collect(rpc: &Rpc, conn: u64, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let core = &*rpc.core;
    let mut st = core.conns.take(conn);
    let close = match st.pending.take() {
        Some(rx) => match wait(core.host, || rx.recv()) {
            Ok(reply) => {
                put_lines(out, &reply.out);
                reply.close
            }
            Err(_) => {
                put_close(out, close::INTERNAL, "the writer has stopped");
                true
            }
        },
        None => false,
    };
    core.conns.put_back(conn, st);
    if close {
        Verdict::close(input.len())
    } else {
        Verdict::keep(input.len()).watch_close()
    }
}

/// No generation serves in time: a close frame (1001) and the end.
pub fn unavailable(len: usize, out: &mut RVec<u8>) -> Verdict {
    put_close(out, close::GOING_AWAY, "service unavailable, retry");
    Verdict::close(len)
}

/// Frames deferred while this generation did not serve, or forwarded by
/// a frozen predecessor (on the pool, live): handled in order, waiting for
/// the writer where needed.
pub fn serve(rpc: &Rpc, conn: u64, peer: Peer, payload: &[u8], out: &mut RVec<u8>) -> Verdict {
    run(rpc, conn, peer, payload, out, None)
}

/// The WebSocket connections and their unfinished messages, for the next
/// generation.
pub fn snapshot(core: &Core) -> Vec<WsSnap> {
    core.ws
        .all()
        .into_iter()
        .map(|id| {
            let st = core.conns.take(id);
            let snap = match st.ws.as_ref().and_then(|w| w.reasm.unfinished()) {
                Some((kind, bytes, n)) => WsSnap {
                    id,
                    opcode: kind as u8,
                    fragments: n,
                    partial: crate::hex::to_hex(bytes),
                },
                None => WsSnap {
                    id,
                    ..WsSnap::default()
                },
            };
            core.conns.put_back(id, st);
            snap
        })
        .collect()
}

/// Restores the WebSocket connections a predecessor handed over.
pub fn restore(core: &Core, snaps: Vec<WsSnap>) {
    for s in snaps {
        let mut st = core.conns.take(s.id);
        let reasm = match Opcode::from_u8(s.opcode) {
            Some(kind @ (Opcode::Text | Opcode::Binary)) => Reassembler::resume(
                limits(core),
                kind,
                crate::hex::from_hex(&s.partial),
                s.fragments,
            ),
            _ => Reassembler::new(limits(core)),
        };
        st.ws = Some(Box::new(WsState { reasm }));
        // A connection that closed before the handover stays closed.
        if core.conns.put_back(s.id, st) {
            core.ws.add(s.id);
        }
    }
}

/// Pings every WebSocket connection every `ws_ping_ms` (0: never), so
/// that proxies keep the connections open and the client's pong counts as
/// activity for the host's idle timeout.
pub fn start_pings(core: &Arc<Core>) {
    if core.cfg.ws_ping_ms > 0 {
        schedule_ping(
            Arc::downgrade(core),
            Duration::from_millis(core.cfg.ws_ping_ms),
        );
    }
}

fn schedule_ping(weak: Weak<Core>, every: Duration) {
    let Some(core) = weak.upgrade() else {
        return;
    };
    let again = weak.clone();
    core.clock.after(
        every,
        Box::new(move || {
            if let Some(core) = again.upgrade() {
                let live = matches!(core.gate.try_read().as_deref(), Ok(Mode::Live));
                if live && core.ws.any() {
                    let mut ping = Vec::new();
                    put_frame(&mut ping, Opcode::Ping, b"");
                    core.host
                        .push_many(&core.ws.all(), &ping, ws_overflow_notice());
                }
            }
            schedule_ping(again, every);
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use module_api::Handler;

    fn upgrade_as(rpc: &Rpc, id: u64, peer: &str, extra: &str) -> (String, Verdict) {
        let req = format!(
            "GET /rpc/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        let info = ConnInfo::new(id, peer.parse().unwrap(), false);
        let mut out = RVec::new();
        let v = rpc.on_message(&info, req.as_bytes(), module_api::Out::from_mut(&mut out));
        (String::from_utf8_lossy(&out).into_owned(), v)
    }

    /// Protected mode refuses a peer that is not loopback; with users, a
    /// Bearer token logs the connection in at the upgrade and a wrong one
    /// is refused.
    #[test]
    fn upgrade_checks_the_peer_and_the_token() {
        use crate::testing::NullHost;
        let dir = crate::testdir::TestDir::new("wsup");
        let rpc = Rpc::start(&serde_json::json!({}), dir.path(), b"", &NullHost).unwrap();
        let (text, v) = upgrade_as(&rpc, 3, "10.0.0.5:1", "");
        assert!(text.starts_with("HTTP/1.1 403 "), "{text}");
        assert_eq!(v.action, module_api::Action::Close);
        assert!(!rpc.core.ws.contains(3));
        let (text, v) = upgrade_as(&rpc, 4, "127.0.0.1:1", "");
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert_eq!(v.action, module_api::Action::Keep);
        assert!(rpc.core.ws.contains(4));
        let (text, _) = upgrade_as(&rpc, 5, "127.0.0.1:1", "");
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        rpc.on_close(&ConnInfo::new(4, "127.0.0.1:1".parse().unwrap(), false));
        assert!(!rpc.core.ws.contains(4) && rpc.core.ws.contains(5));
        rpc.stop();

        let dir = crate::testdir::TestDir::new("wsauth");
        let hash: String = access::users::hash_token("t1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cfg = serde_json::json!({"users": [{"name": "bot1", "token_hash": format!("sha256:{hash}"),
            "permissions": {"kv_read": ["bot1.*"]}}]});
        let rpc = Rpc::start(&cfg, dir.path(), b"", &NullHost).unwrap();
        let (text, _) = upgrade_as(&rpc, 6, "10.0.0.5:1", "Authorization: Bearer nope\r\n");
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        let (text, _) = upgrade_as(&rpc, 7, "10.0.0.5:1", "Authorization: Basic eDp5\r\n");
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        let (text, _) = upgrade_as(&rpc, 8, "10.0.0.5:1", "Authorization: Bearer t1\r\n");
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        let who = rpc.core.access.who(
            rpc.core.host,
            &rpc.core.conns,
            8,
            Peer::new("10.0.0.5".parse().unwrap(), false),
        );
        assert_eq!(who.whoami()["user"], "bot1", "{}", who.whoami());
        rpc.stop();
    }

    /// Records the connections of every push.
    #[derive(Default)]
    struct Pushes(std::sync::Mutex<Vec<Vec<u64>>>);

    impl crate::host::HostApi for Pushes {
        fn push_many(&self, conns: &[u64], _data: &[u8], _notice: &[u8]) -> usize {
            self.0.lock().unwrap().push(conns.to_vec());
            conns.len()
        }
        fn call(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, module_api::CallStatus> {
            Err(module_api::CallStatus::NoSuchModule)
        }
        fn wait_begin(&self) -> u64 {
            0
        }
        fn wait_end(&self, _token: u64) {}
        fn peer_identity(&self, _conn: u64) -> Vec<String> {
            Vec::new()
        }
    }

    /// A client's text frame (masked with a zero key, so the payload
    /// stays as it is).
    fn client_text(text: &str) -> Vec<u8> {
        let mut f = Header::new(true, Opcode::Text, text.len(), Some([0; 4]))
            .as_bytes()
            .to_vec();
        f.extend_from_slice(text.as_bytes());
        f
    }

    /// A frame that made no output (a notification), then one that needs
    /// the writer, which has stopped: the writer's error is answered at
    /// once and the connection closed. Deferring instead gave the pool a
    /// frame with no reply to collect, and it evaluated both frames again:
    /// the notification published twice.
    #[test]
    fn a_stopped_writer_evaluates_no_frame_twice() {
        let host: &'static Pushes = Box::leak(Box::default());
        let dir = crate::testdir::TestDir::new("wsstop");
        let rpc = Rpc::start(&serde_json::json!({}), dir.path(), b"", host).unwrap();
        let (text, _) = upgrade_as(&rpc, 4, "127.0.0.1:1", "");
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        rpc.core.bus.subscribe(9, &["t.x".to_string()]).unwrap();
        rpc.writer.stop();
        let mut input =
            client_text(r#"{"jsonrpc":"2.0","method":"bus.publish","params":["t.x",1]}"#);
        input.extend(client_text(
            r#"{"jsonrpc":"2.0","method":"kv.set","params":["k",1],"id":1}"#,
        ));
        let info = ConnInfo::new(4, "127.0.0.1:1".parse().unwrap(), false);
        let mut out = RVec::new();
        let mut v = rpc.on_message(&info, &input, module_api::Out::from_mut(&mut out));
        if v.action == module_api::Action::Defer {
            // What the host does with a deferral.
            let deferred = &input[..v.consumed as usize];
            v = rpc.on_deferred(&info, deferred, module_api::Out::from_mut(&mut out));
        }
        assert_eq!(v.action, module_api::Action::Close);
        let published: Vec<_> = host.0.lock().unwrap().clone();
        assert_eq!(published, [vec![9]], "the notification ran once");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("the writer has stopped"), "{text}");
        assert!(text.contains("\"id\":1"), "the call is answered: {text}");
        rpc.stop();
    }

    #[test]
    fn lines_become_one_text_frame_each() {
        let mut out = Vec::new();
        put_lines(&mut out, b"a\nbc\n");
        assert_eq!(out, [0x81, 1, b'a', 0x81, 2, b'b', b'c']);
        assert_eq!(as_line("{\n\"a\"\r\n:1}"), b"{ \"a\"  :1}\n");
    }
}
