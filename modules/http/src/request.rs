//! One request: its framing and limits, the method dispatch and the access
//! log line.
//!
//! A request is consumed whole (head and body) so that the next pipelined
//! request starts exactly where this one ends. Requests that break the
//! framing or a limit (400, 413, 414, 431) are answered and the connection
//! is closed, since where the next request would start is unknown or not
//! worth finding.

use std::borrow::Cow;

use module_api::http::{self, BodyFraming, ParseError, Parsed, Request};
use module_api::{ConnInfo, RVec, Verdict};

use crate::reply::{Reply, Sent, ALLOW_LINE};
use crate::serve;
use crate::Http;

/// Request-line bytes besides the target: method, spaces, version, CRLF.
const LINE_SLACK: usize = 32;

/// Handles the request at the start of `input`.
pub fn handle(http: &Http, conn: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let mut headers = http::empty_headers();
    let req = match http::parse_request(input, &mut headers) {
        Ok(Parsed::Complete(req)) => req,
        Ok(Parsed::Partial) => return partial(http, conn, input, out),
        Err(ParseError::TooManyHeaders) => return refuse(conn, None, 431, input.len(), out),
        Err(ParseError::Malformed) => return refuse(conn, None, 400, input.len(), out),
    };
    let cfg = &http.cfg;
    let refused = if req.head_len > cfg.max_header_size {
        Some(431)
    } else if req.target.len() > cfg.max_uri {
        Some(414)
    } else if !host_ok(&req) {
        Some(400)
    } else {
        None
    };
    if let Some(status) = refused {
        return refuse(conn, Some(&req), status, input.len(), out);
    }
    let body = match body_len(http, &req, &input[req.head_len..]) {
        Ok(body) => body,
        Err(status) => return refuse(conn, Some(&req), status, input.len(), out),
    };
    let (consumed, keep_alive) = match body {
        Some(n) => (req.head_len + n, req.keep_alive() && !conn.draining),
        // The client holds the body back until "100 Continue": answer
        // now instead and close, as the body may or may not follow.
        None if expects_continue(&req) => (input.len(), false),
        None => return Verdict::NEED_MORE,
    };
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

/// The head is incomplete: wait, unless it is already over a limit.
fn partial(http: &Http, conn: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let cfg = &http.cfg;
    let line = input.iter().position(|&b| b == b'\n');
    if line.unwrap_or(input.len()) > cfg.max_uri + LINE_SLACK {
        refuse(conn, None, 414, input.len(), out)
    } else if input.len() > cfg.max_header_size {
        refuse(conn, None, 431, input.len(), out)
    } else {
        Verdict::NEED_MORE
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

/// HTTP/1.1 requires exactly one `Host`; HTTP/1.0 allows at most one.
fn host_ok(req: &Request<'_, '_>) -> bool {
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    hosts == 1 || (hosts == 0 && req.minor_version == 0)
}

/// The length of the request body once it is all buffered (`None` until
/// then), or the status refusing it.
fn body_len(http: &Http, req: &Request<'_, '_>, rest: &[u8]) -> Result<Option<usize>, u16> {
    let max = http.cfg.max_body;
    match req.body_framing() {
        Err(_) => Err(400),
        Ok(BodyFraming::Length(n)) if n > max => Err(413),
        Ok(BodyFraming::Length(n)) => Ok((rest.len() as u64 >= n).then_some(n as usize)),
        // Chunked framing does not exist in HTTP/1.0.
        Ok(BodyFraming::Chunked) if req.minor_version == 0 => Err(400),
        Ok(BodyFraming::Chunked) => match http::chunked_body_len(rest) {
            Err(_) => Err(400),
            Ok(Some(n)) if n as u64 > max => Err(413),
            Ok(None) if rest.len() as u64 > max => Err(413),
            Ok(n) => Ok(n),
        },
    }
}

fn expects_continue(req: &Request<'_, '_>) -> bool {
    req.header("expect")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
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
