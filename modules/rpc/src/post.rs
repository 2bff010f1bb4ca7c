//! JSON-RPC over HTTP: `POST /rpc` with the message (single or batch) as
//! the body. The answer is `200` with the reply as `application/json`, or
//! `204 No Content` when the message held only notifications. JSON-RPC
//! errors are `200` too (the error is in the body); HTTP-level problems
//! get their status: 400 malformed, 404 another path, 411 chunked body,
//! 413 body over `max_line_bytes`, 415 a content type other than JSON,
//! 431 request head too large.
//!
//! Messages that only read are answered on the event loop; one that
//! writes is deferred to the pool, which waits for its commit.

use module_api::http::{self, BodyFraming, Parsed};
use module_api::{RVec, Verdict};

use crate::conns::ConnState;
use crate::jsonrpc::{self, Sink};
use crate::methods::{eval_message, needs_writer, Env};
use crate::store::{now_ms, View};
use crate::writer::Kind;
use crate::Rpc;

/// Largest request head.
const MAX_HEAD: usize = 16 * 1024;

/// A complete request, or what to do instead.
pub enum Framed<'a> {
    NeedMore,
    /// An HTTP error was written.
    Answered(Verdict),
    Body {
        body: &'a [u8],
        total: usize,
        keep: bool,
    },
}

fn plain(out: &mut RVec<u8>, status: u16, text: &str, keep: bool) {
    let ct = "text/plain; charset=utf-8";
    http::write_simple(out, status, ct, text.as_bytes(), keep, false);
}

fn fail(out: &mut RVec<u8>, status: u16, text: &str, consumed: usize) -> Framed<'static> {
    plain(out, status, text, false);
    Framed::Answered(Verdict::close(consumed))
}

/// Reads one request from `input`. `draining`: the host is shutting down,
/// so the answer says `Connection: close`.
pub fn frame<'a>(rpc: &Rpc, input: &'a [u8], draining: bool, out: &mut RVec<u8>) -> Framed<'a> {
    let mut headers = http::empty_headers();
    let req = match http::parse_request(input, &mut headers) {
        Ok(Parsed::Partial) if input.len() > MAX_HEAD => {
            return fail(out, 431, "request head too large\n", input.len())
        }
        Ok(Parsed::Partial) => return Framed::NeedMore,
        Ok(Parsed::Complete(r)) => r,
        Err(_) => return fail(out, 400, "bad request\n", input.len()),
    };
    let len = match req.body_framing() {
        Ok(BodyFraming::Length(n)) => n,
        Ok(BodyFraming::Chunked) => return fail(out, 411, "length required\n", input.len()),
        Err(_) => return fail(out, 400, "bad request\n", input.len()),
    };
    if req.method != "POST" || req.path() != "/rpc" {
        return fail(out, 404, "not found: JSON-RPC is POST /rpc\n", input.len());
    }
    let max = rpc.core.cfg.max_line_bytes;
    if len > max as u64 {
        return fail(out, 413, "request body too large\n", input.len());
    }
    let total = req.head_len + len as usize;
    if input.len() < total {
        return Framed::NeedMore;
    }
    let json = req.header("content-type").map_or(true, |v| {
        let v = String::from_utf8_lossy(v).to_ascii_lowercase();
        let mime = v.split(';').next().unwrap_or("").trim().to_string();
        mime == "application/json" || mime == "application/json-rpc" || mime.is_empty()
    });
    let keep = req.keep_alive() && !draining;
    if !json {
        plain(out, 415, "use Content-Type: application/json\n", keep);
        return Framed::Answered(done(total, keep));
    }
    Framed::Body {
        body: &input[req.head_len..total],
        total,
        keep,
    }
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
/// and the rest of a request whose start was kept are deferred. An
/// incomplete request is kept in the connection's state (the connection
/// stays with this module until it is complete).
pub fn on_message(
    rpc: &Rpc,
    conn: u64,
    draining: bool,
    continuing: bool,
    input: &[u8],
    out: &mut RVec<u8>,
) -> Verdict {
    if continuing {
        return Verdict::defer(input.len());
    }
    let (body, total, keep) = match frame(rpc, input, draining, out) {
        Framed::NeedMore => {
            keep_start(rpc, conn, input.to_vec());
            return Verdict::keep(input.len()).watch_close();
        }
        Framed::Answered(v) => return v,
        Framed::Body { body, total, keep } => (body, total, keep),
    };
    let core = &*rpc.core;
    let msg = jsonrpc::parse(body, core.cfg.max_batch);
    if needs_writer(&msg) {
        return Verdict::defer(total);
    }
    respond(out, &answer_reads(core, &msg), total, keep)
}

/// Handles requests on a pool thread, waiting for the commit of writes:
/// the kept start of a request (if any) joined with `input`, then every
/// complete request in it, in order. `conn` is 0 for an in-process call.
pub fn on_deferred(
    rpc: &Rpc,
    conn: u64,
    draining: bool,
    input: &[u8],
    out: &mut RVec<u8>,
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
    let joined;
    let data = if kept.is_empty() {
        input
    } else {
        joined = [&kept[..], input].concat();
        &joined[..]
    };
    let mut pos = 0;
    while pos < data.len() {
        let (body, total, keep) = match frame(rpc, &data[pos..], draining, out) {
            Framed::NeedMore if conn == 0 => return fail_verdict(out, input.len()),
            Framed::NeedMore => {
                keep_start(rpc, conn, data[pos..].to_vec());
                return Verdict::keep(input.len()).watch_close();
            }
            Framed::Answered(v) if v.action == module_api::Action::Close => {
                return Verdict::close(input.len())
            }
            Framed::Answered(v) => {
                pos += v.consumed as usize;
                continue;
            }
            Framed::Body { body, total, keep } => (body, total, keep),
        };
        let reply = answer(rpc, body);
        respond(out, &reply, total, keep);
        if !keep {
            return Verdict::close(input.len());
        }
        pos += total;
    }
    Verdict::done(input.len())
}

/// Keeps the start of a request until the rest arrives (the connection
/// stays with this module meanwhile).
fn keep_start(rpc: &Rpc, conn: u64, partial: Vec<u8>) {
    let st = ConnState {
        partial,
        partial_http: true,
        ..ConnState::default()
    };
    rpc.core.conns.put_back(conn, st);
}

/// The JSON-RPC reply to one body, waiting for the writer if it writes.
fn answer(rpc: &Rpc, body: &[u8]) -> Vec<u8> {
    let core = &*rpc.core;
    let msg = jsonrpc::parse(body, core.cfg.max_batch);
    if needs_writer(&msg) {
        return rpc
            .writer
            .call(0, Kind::Body, body.to_vec())
            .unwrap_or_else(|e| {
                let mut v = Vec::new();
                jsonrpc::write_all_errors(&mut v, &msg, &e);
                v
            });
    }
    answer_reads(core, &msg)
}

/// The reply to a message that only reads, under the store's read lock.
fn answer_reads(core: &crate::Core, msg: &jsonrpc::Message<'_>) -> Vec<u8> {
    let mut reply = Vec::new();
    let map = core.store.read();
    let mut env = Env {
        core,
        view: View::Read(&map),
        now: now_ms(),
        conn: 0,
        later: None,
        subscribed: false,
    };
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
