//! JSON-RPC over HTTP: `POST /rpc` with the message (single or batch) as
//! the body, `Content-Length` or chunked. The answer is `200` with the
//! reply as `application/json`, or `204 No Content` when the message held
//! only notifications. JSON-RPC errors are `200` too (the error is in the
//! body); HTTP-level problems get their status, by the SDK's strict
//! framing rules ([`module_api::http::framing`], the same as every other
//! HTTP reader): 400 malformed (including a `Content-Length` that is not
//! digits), 404 another path, 413 body over `max_line_bytes`, 415 a
//! content type other than JSON, 414/431 request target/head too large,
//! 501 a transfer coding other than `chunked`. `Host` is not required:
//! hand-written clients call this.
//!
//! An incomplete request stays with the host (`NeedMore`): it is buffered
//! there under the host's `header_timeout_ms` and `max_message_size`, and
//! each arrival resumes the framing where the last one stopped, so a body
//! that trickles in costs linear work and no copy in the module.
//!
//! Messages that only read are answered on the event loop; one that
//! writes is deferred to the pool, which waits for its commit. So is a
//! `bus.request`: the pool thread waits for its answer (at most
//! `max_http_waiters` at once, see [`crate::methods::request_over_http`]).
//!
//! Each request is authorized on its own ([`crate::access`]): in
//! protected mode a peer that is not loopback gets 403; with users, the
//! `Authorization: Bearer` token (or the connection's client certificate,
//! or `no_auth_user`) decides, and without any the answer is 401 with
//! `WWW-Authenticate: Bearer realm="switchyard"`. A browser page gets 403
//! before that when its `Origin` is neither this host nor listed in
//! `ws_origins`, and after it when the peer is trusted for being on
//! loopback (protected mode) and the page is not on a loopback host name
//! (DNS rebinding): the same checks as the WebSocket upgrade
//! ([`crate::access::browser`]), since any page may send a simple `POST`
//! without a preflight. Requests without `Origin` (curl, bots) are not
//! pages. Every refusal carries a JSON-RPC error body. A deferred request
//! is authorized again on the pool.

use std::borrow::Cow;

use module_api::http::framing::{self, Frame};
use module_api::http::{self, Parsed};
use module_api::{ConnInfo, RVec, Verdict};

use crate::access::browser::Page;
use crate::access::{Credentials, HttpRefusal, Peer, Who};
use crate::conns::ConnState;
use crate::core::Core;
use crate::generation::Rpc;
use crate::jsonrpc::{self, Sink};
use crate::methods::{eval_message, later_call, needs_writer, request_over_http, Env};
use crate::store::View;
use crate::types::Kind;

/// Largest request head (and request target).
const MAX_HEAD: usize = 16 * 1024;

/// A complete request, or what to do instead.
pub enum Framed<'a> {
    NeedMore,
    /// An HTTP error was written.
    Answered(Verdict),
    Body {
        /// The body, de-chunked.
        body: Cow<'a, [u8]>,
        total: usize,
        keep: bool,
        sender: Sender<'a>,
    },
}

/// Who sent a request, as its headers say.
#[derive(Clone, Copy)]
pub struct Sender<'a> {
    /// The `Authorization` header's value.
    auth: Option<&'a [u8]>,
    /// The browser page it comes from, if any.
    page: Page,
}

fn plain(out: &mut RVec<u8>, status: u16, text: &str, keep: bool) {
    let ct = "text/plain; charset=utf-8";
    http::write_simple(out, status, ct, text.as_bytes(), keep, false);
}

fn fail(out: &mut RVec<u8>, status: u16, text: &str, consumed: usize) -> Framed<'static> {
    plain(out, status, text, false);
    Framed::Answered(Verdict::close(consumed))
}

/// The framing limits: the body is one JSON-RPC message, at most
/// `max_line_bytes` like a raw line.
fn limits(rpc: &Rpc) -> framing::Limits {
    framing::Limits {
        max_head: MAX_HEAD,
        max_target: MAX_HEAD,
        max_body: rpc.core.cfg.max_line_bytes as u64,
        require_host: false,
    }
}

/// Reads one request from `input`, the bytes buffered on connection
/// `conn` (0: not a connection's buffer; framed from scratch). `draining`:
/// the host is shutting down, so the answer says `Connection: close`.
/// `internal`: an in-process call, whose `Origin` (if any) is its
/// caller's business; any other request from a cross-site page is
/// answered 403 here, before its content type or credentials are looked
/// at (so that it counts no failed login against its address either).
pub fn frame<'a>(
    rpc: &Rpc,
    conn: u64,
    input: &'a [u8],
    draining: bool,
    internal: bool,
    out: &mut RVec<u8>,
) -> Framed<'a> {
    let limits = limits(rpc);
    let (head_len, body, total) = match framing::frame_conn(conn, input, &limits) {
        Frame::Partial { .. } => return Framed::NeedMore,
        Frame::Refused(r) => return fail(out, r.status, &format!("{}\n", r.reason), input.len()),
        Frame::Complete {
            head_len,
            body,
            total_len,
        } => (head_len, body, total_len),
    };
    let mut headers = http::empty_headers();
    let Ok(Parsed::Complete(req)) = http::parse_request(&input[..head_len], &mut headers) else {
        return fail(out, 400, "bad request\n", input.len());
    };
    if req.method != "POST" || req.path() != "/rpc" {
        return fail(out, 404, "not found: JSON-RPC is POST /rpc\n", input.len());
    }
    let keep = req.keep_alive() && !draining;
    let page = Page::of(&req, &rpc.core.cfg.ws_origins);
    if let Some(r) = page.refusal(false).filter(|_| !internal) {
        log::warn!(
            "rpc: POST /rpc refused: a browser page from Origin {:?}",
            String::from_utf8_lossy(req.header("origin").unwrap_or_default())
        );
        return Framed::Answered(refuse(out, 403, &r.error(), None, total, keep));
    }
    let json = req.header("content-type").map_or(true, |v| {
        let v = String::from_utf8_lossy(v).to_ascii_lowercase();
        let mime = v.split(';').next().unwrap_or("").trim().to_string();
        mime == "application/json" || mime == "application/json-rpc" || mime.is_empty()
    });
    if !json {
        plain(out, 415, "use Content-Type: application/json\n", keep);
        return Framed::Answered(done(total, keep));
    }
    let sender = Sender {
        auth: req.header("authorization"),
        page,
    };
    let raw = &input[head_len..total];
    let body = match body {
        framing::Body::Length(_) => Cow::Borrowed(raw),
        framing::Body::Chunked { .. } => match framing::decode_chunked(raw, &limits) {
            Ok(decoded) => Cow::Owned(decoded),
            Err(r) => return fail(out, r.status, &format!("{}\n", r.reason), input.len()),
        },
    };
    Framed::Body {
        body,
        total,
        keep,
        sender,
    }
}

/// Who the request acts as, or its refusal written out (401 with
/// `WWW-Authenticate`, or 403 in protected mode or for a browser page
/// that may not call; a JSON-RPC error body).
fn authorize(
    rpc: &Rpc,
    conn: u64,
    peer: Peer,
    sender: Sender<'_>,
    out: &mut RVec<u8>,
    total: usize,
    keep: bool,
) -> Result<Who, Verdict> {
    let core = &*rpc.core;
    let creds = Credentials::from_header(sender.auth);
    let who = core
        .access
        .who_http(core.host, conn, peer, &creds)
        .map_err(|refusal| {
            let challenge: Option<&[u8]> = match refusal {
                HttpRefusal::Protected => None,
                HttpRefusal::Missing => Some(br#"Bearer realm="switchyard""#),
                _ => Some(br#"Bearer realm="switchyard", error="invalid_token""#),
            };
            refuse(
                out,
                refusal.status(),
                &refusal.error(),
                challenge,
                total,
                keep,
            )
        })?;
    // Cross-site pages were refused by `frame`; a same-origin page on a
    // name that is not loopback is refused once the peer turns out to be
    // trusted for being on loopback.
    if let Some(r) = sender.page.refusal(matches!(who, Who::Loopback)) {
        log::warn!(
            "rpc: POST /rpc from {peer} refused: protected mode and a browser page not on a \
             loopback host name (DNS rebinding?)"
        );
        return Err(refuse(out, 403, &r.error(), None, total, keep));
    }
    Ok(who)
}

/// Writes an HTTP refusal with a JSON-RPC error body (and, for a 401, the
/// `WWW-Authenticate` challenge).
fn refuse(
    out: &mut RVec<u8>,
    status: u16,
    error: &jsonrpc::RpcError,
    challenge: Option<&[u8]>,
    total: usize,
    keep: bool,
) -> Verdict {
    let mut body = Vec::new();
    jsonrpc::write_error(&mut body, None, error);
    http::start_response(out, status, keep);
    if let Some(c) = challenge {
        http::push_header(out, "WWW-Authenticate", c);
    }
    http::push_header(out, "Content-Type", b"application/json");
    http::end_head(out, body.len() as u64);
    out.put(&body);
    done(total, keep)
}

fn done(total: usize, keep: bool) -> Verdict {
    if keep {
        Verdict::done(total)
    } else {
        Verdict::close(total)
    }
}

/// Writes the HTTP response for a JSON-RPC reply (empty: 204).
fn respond(out: &mut RVec<u8>, reply: &[u8], total: usize, keep: bool) -> Verdict {
    if reply.is_empty() {
        http::start_response(out, 204, keep);
        out.put(b"\r\n");
    } else {
        http::start_response(out, 200, keep);
        http::push_header(out, "Content-Type", b"application/json");
        http::end_head(out, reply.len() as u64);
        out.put(reply);
    }
    done(total, keep)
}

/// Handles a request on an event loop: reads are answered here, writes
/// are deferred (exactly the request, so the pool answers one request per
/// call). An incomplete request is left with the host. `continuing`: the
/// connection has the start of a request kept by a generation before this
/// version (restored state); the pool joins it with the rest.
pub fn on_message(
    rpc: &Rpc,
    info: &ConnInfo,
    continuing: bool,
    input: &[u8],
    out: &mut RVec<u8>,
) -> Verdict {
    if continuing {
        return Verdict::defer(input.len());
    }
    let (conn, peer) = (info.id, crate::access::peer_of(info));
    let (body, total, keep, sender) = match frame(rpc, conn, input, info.draining, false, out) {
        Framed::NeedMore => return Verdict::NEED_MORE,
        Framed::Answered(v) => return v,
        Framed::Body {
            body,
            total,
            keep,
            sender,
        } => (body, total, keep, sender),
    };
    let who = match authorize(rpc, conn, peer, sender, out, total, keep) {
        Ok(who) => who,
        Err(v) => return v,
    };
    let core = &*rpc.core;
    let msg = jsonrpc::parse(&body, core.cfg.max_batch);
    if later_call(&msg).is_some() || needs_writer(&View::Read(&core.store.read()), &who, &msg) {
        // The pool authorizes it again from the same header.
        return Verdict::defer(total);
    }
    respond(out, &answer_reads(core, &msg, who, peer), total, keep)
}

/// Handles one request on a pool thread, waiting for the commit of
/// writes. `input` is one complete request (what `on_message` deferred, or
/// an in-process call's message; `conn` is 0 for the latter). A start of a
/// request that a generation before this version kept in the connection's
/// state (restored after a reload) is joined with `input` first; only that
/// path can still find the request incomplete, and keeps it as it was
/// kept.
///
/// `release` lets go of the caller's hold on the generation's gate: a
/// `bus.request` calls it once its message is out, before it waits for
/// the answer, so that a reload is not held up by a wait of up to
/// `max_request_timeout_ms` (the answer reaches the waiting slot from
/// whichever generation gets it).
pub fn on_deferred(
    rpc: &Rpc,
    conn: u64,
    peer: Peer,
    draining: bool,
    input: &[u8],
    out: &mut RVec<u8>,
    release: &mut dyn FnMut(),
) -> Verdict {
    let core = &*rpc.core;
    let kept = if conn == 0 {
        Vec::new()
    } else {
        let st = core.conns.take(conn);
        if st.partial_http {
            st.partial
        } else {
            // Not ours: hand it back untouched.
            core.conns.put_back(conn, st);
            Vec::new()
        }
    };
    let data: Cow<'_, [u8]> = if kept.is_empty() {
        Cow::Borrowed(input)
    } else {
        Cow::Owned([&kept[..], input].concat())
    };
    // Framed from scratch (id 0): the request is whole, one pass.
    let (body, total, keep, sender) = match frame(rpc, 0, &data, draining, conn == 0, out) {
        Framed::NeedMore if kept.is_empty() => return fail_verdict(out, input.len()),
        Framed::NeedMore => {
            keep_start(rpc, conn, data.into_owned());
            return Verdict::keep(input.len()).watch_close();
        }
        Framed::Answered(v) if v.action == module_api::Action::Close => {
            return Verdict::close(input.len())
        }
        Framed::Answered(v) => {
            return Verdict::done((v.consumed as usize).saturating_sub(kept.len()).max(1))
        }
        Framed::Body {
            body,
            total,
            keep,
            sender,
        } => (body, total, keep, sender),
    };
    let consumed = total.saturating_sub(kept.len()).max(1);
    let who = match authorize(rpc, conn, peer, sender, out, consumed, keep) {
        Ok(who) => who,
        Err(v) => return v,
    };
    let reply = answer(rpc, &body, who, peer, release);
    respond(out, &reply, consumed, keep)
}

/// Keeps the start of a request until the rest arrives (the connection
/// stays with this module meanwhile). Only for a start kept by a
/// generation before this version: this one leaves incomplete requests
/// with the host.
fn keep_start(rpc: &Rpc, conn: u64, partial: Vec<u8>) {
    let st = ConnState {
        partial,
        partial_http: true,
        ..ConnState::default()
    };
    rpc.core.conns.put_back(conn, st);
}

/// The JSON-RPC reply to one body, waiting for the writer if it writes.
fn answer(rpc: &Rpc, body: &[u8], who: Who, peer: Peer, release: &mut dyn FnMut()) -> Vec<u8> {
    let core = &*rpc.core;
    let msg = jsonrpc::parse(body, core.cfg.max_batch);
    if let Some(req) = later_call(&msg) {
        return request_over_http(core, req, who, peer, release);
    }
    if needs_writer(&View::Read(&core.store.read()), &who, &msg) {
        return rpc
            .writer
            .call(0, who, peer, Kind::Body, body.to_vec(), usize::MAX)
            .map(|r| r.out)
            .unwrap_or_else(|e| {
                let mut v = Vec::new();
                jsonrpc::write_all_errors(&mut v, &msg, &e);
                v
            });
    }
    answer_reads(core, &msg, who, peer)
}

/// The reply to a message that only reads, under the store's read lock.
fn answer_reads(core: &Core, msg: &jsonrpc::Message<'_>, who: Who, peer: Peer) -> Vec<u8> {
    let mut reply = Vec::new();
    let map = core.store.read();
    let mut env = Env::reading(core, &map, 0, who, peer);
    eval_message(&mut env, msg, &mut reply);
    reply
}

fn fail_verdict(out: &mut RVec<u8>, len: usize) -> Verdict {
    match fail(out, 400, "incomplete request\n", len) {
        Framed::Answered(v) => v,
        _ => Verdict::close(len),
    }
}

/// The 503 a retiring generation answers when it cannot hand a request
/// over.
pub fn unavailable(out: &mut RVec<u8>, len: usize) -> Verdict {
    let body = b"503 Service Unavailable: the rpc module is reloading, retry\n";
    http::start_response(out, 503, false);
    http::push_header(out, "Retry-After", b"1");
    http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
    http::end_head(out, body.len() as u64);
    out.put(body);
    Verdict::close(len)
}
