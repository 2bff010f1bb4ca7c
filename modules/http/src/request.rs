//! One request: its framing and limits, the method dispatch and the access
//! log line.
//!
//! Framing is the SDK's ([`module_api::http::framing`], the same strict
//! rules as every other HTTP reader, resumed per connection), with this
//! module's limits. A request is consumed whole (head and body, chunked
//! or not) so that the next pipelined request starts exactly where this
//! one ends; one request per call, the host calls again for the next.
//! Requests that break the framing or a limit (400, 413, 414, 431, 501)
//! are answered and the connection is closed, since where the next
//! request would start is unknown or not worth finding.

use std::borrow::Cow;

use module_api::http::framing::{self, Frame};
use module_api::http::{self, Parsed, Request};
use module_api::{ConnInfo, RVec, Verdict};

use crate::reply::{Reply, Sent, ALLOW_LINE};
use crate::serve;
use crate::site::Http;

/// Handles the request at the start of `input`.
pub fn handle(http: &Http, conn: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let (head_len, consumed, complete) = match framing::frame_conn(conn.id, input, &limits(http)) {
        Frame::Complete {
            head_len,
            total_len,
            ..
        } => (head_len, total_len, true),
        // The client holds the body back until "100 Continue": answer
        // now instead and close, as the body may or may not follow.
        Frame::Partial {
            head_len: Some(head_len),
        } if expects_continue(&input[..head_len]) => (head_len, input.len(), false),
        Frame::Partial { .. } => return Verdict::NEED_MORE,
        Frame::Refused(r) => {
            let mut headers = http::empty_headers();
            let req = match http::parse_request(input, &mut headers) {
                Ok(Parsed::Complete(req)) => Some(req),
                _ => None,
            };
            return refuse(conn, req.as_ref(), r.status, input.len(), out);
        }
    };
    let mut headers = http::empty_headers();
    let Ok(Parsed::Complete(req)) = http::parse_request(&input[..head_len], &mut headers) else {
        return refuse(conn, None, 400, input.len(), out);
    };
    let keep_alive = complete && req.keep_alive() && !conn.draining;
    let reply = Reply {
        keep_alive,
        http10: req.minor_version == 0,
        head_only: req.method == "HEAD",
    };
    let sent = match req.method {
        "GET" | "HEAD" => serve::serve(http, &req, reply, out),
        "OPTIONS" => {
            reply.start(out, 204);
            out.extend_from_copy_slice(ALLOW_LINE);
            out.extend_from_copy_slice(b"\r\n");
            Sent::new(204, 0, &reply)
        }
        _ => Sent::new(405, reply.error(out, 405, ALLOW_LINE), &reply),
    };
    access_log(conn, req.method, req.target, sent.status, sent.bytes);
    let verdict = if sent.keep_alive {
        Verdict::done(consumed)
    } else {
        Verdict::close(consumed)
    };
    verdict.with_file(sent.file).with_body(sent.body)
}

/// The framing limits from the `[modules.http]` table.
fn limits(http: &Http) -> framing::Limits {
    let cfg = &http.cfg;
    framing::Limits {
        max_head: cfg.max_header_size,
        max_target: cfg.max_uri,
        max_body: cfg.max_body,
        require_host: true,
    }
}

/// Answers with an error and closes the connection.
fn refuse(
    conn: &ConnInfo,
    req: Option<&Request<'_, '_>>,
    status: u16,
    consumed: usize,
    out: &mut RVec<u8>,
) -> Verdict {
    let reply = Reply {
        keep_alive: false,
        http10: false,
        head_only: req.is_some_and(|r| r.method == "HEAD"),
    };
    let bytes = reply.error(out, status, b"");
    let (method, target) = req.map_or(("-", "-"), |r| (r.method, r.target));
    access_log(conn, method, target, status, bytes);
    Verdict::close(consumed)
}

/// Whether a complete head asks for `100 Continue`.
fn expects_continue(head: &[u8]) -> bool {
    let mut headers = http::empty_headers();
    match http::parse_request(head, &mut headers) {
        Ok(Parsed::Complete(req)) => req
            .header("expect")
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue")),
        _ => false,
    }
}

/// One access-log line per request, at info level under target `access`:
/// `<peer> "<method> <target>" <status> <body bytes>`.
fn access_log(conn: &ConnInfo, method: &str, target: &str, status: u16, bytes: u64) {
    if log::log_enabled!(target: "access", log::Level::Info) {
        let target: Cow<'_, str> = if target.contains('"') {
            target.replace('"', "%22").into()
        } else {
            target.into()
        };
        log::info!(target: "access", "{} \"{method} {target}\" {status} {bytes}", conn.peer());
    }
}
