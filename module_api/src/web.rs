//! A small web framework for HTTP modules: routes with path parameters,
//! request bodies (`Content-Length` or chunked, with a size limit), query
//! strings, forms, JSON, cookies, and HTML that escapes user text by
//! construction.
//!
//! The parts, in the order a request meets them:
//!
//! * [`frame`]: is a whole request buffered yet? The SDK's one set of
//!   strict HTTP/1.1 framing rules ([`crate::http::framing`]) over the
//!   connection's bytes: [`Framed::Partial`] (wait), [`Framed::Complete`]
//!   (the message length) or [`Framed::Refused`] (400, 413, 414, 431, 501:
//!   answer and close). The body limit is checked against the declared
//!   length, so an oversized upload is refused before it is received.
//!   [`frame_conn`] resumes where the previous call on the same message
//!   stopped, so a body arriving in many pieces is walked once.
//! * [`Request`]: one complete message, parsed: method, path, the route's
//!   parameters, query, headers, cookies, and the body (chunked bodies
//!   decoded), with [`Request::json`] and [`Request::form`].
//! * [`Router`]: method + path patterns (`/app/messages/:id`) to handlers;
//!   404 for no route, 405 (with `Allow`) for a wrong method, HEAD served by
//!   GET routes, OPTIONS answered from the routes. Its
//!   [`Router::on_message`] and [`Router::on_deferred`] are a module's whole
//!   [`crate::Handler`] for HTTP: by default every request is deferred to
//!   the host's worker pool, where handlers may block (databases, files).
//! * [`Response`]: status, headers, [`Cookie`]s and a body, with
//!   constructors for JSON, HTML, text, redirects and JSON errors.
//! * [`Html`], [`escape`] and [`render`]: the only ways to produce HTML.
//!   Static markup must be a `&'static str` (written by the module author);
//!   everything else passes through [`ToHtml`], which escapes text. User
//!   text therefore cannot reach a page unescaped.
//!
//! Errors the framework produces itself (bad framing, no route, a body that
//! is not JSON) are JSON objects `{"error": "<what is wrong>"}` with the
//! right status, the same shape as [`Response::error`].
//!
//! ```
//! use module_api::web::{self, Request, Response, Router};
//! use module_api::{ConnInfo, Handler, Manifest, RVec, StartContext, Verdict};
//!
//! struct Counter {
//!     hits: std::sync::atomic::AtomicU64,
//! }
//!
//! fn hello(state: &Counter, req: &Request<'_>) -> web::Result {
//!     let n = state.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     let name = req.param("name").unwrap_or("world");
//!     Ok(Response::json(200, &serde_json::json!({ "hello": name, "hits": n })))
//! }
//!
//! struct App {
//!     router: Router<Counter>,
//!     state: Counter,
//! }
//!
//! impl Handler for App {
//!     fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
//!         self.router.on_message(&self.state, conn, input, out)
//!     }
//!     fn on_deferred(&self, conn: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
//!         self.router.on_deferred(&self.state, conn, input, out)
//!     }
//! }
//!
//! fn manifest() -> Manifest {
//!     Manifest::new("hello", "1.0.0").bind("GET /hello/").defers(true)
//! }
//!
//! fn start(_ctx: StartContext<'_>) -> Result<App, String> {
//!     let router = Router::new().get("/hello/:name", hello);
//!     Ok(App { router, state: Counter { hits: 0.into() } })
//! }
//! # fn main() {}
//! ```
//!
//! Limits of this layer: `Expect: 100-continue` is not answered with an
//! interim `100` (a module cannot write before the message is complete);
//! clients send the body after their own timeout (curl: one second), and an
//! oversized declared body is refused at once. Bodies are buffered whole,
//! so [`Limits::max_body`] must stay below the host's `max_message_size`.

use std::borrow::Cow;
use std::fmt::Write as _;

use abi_stable::std_types::RVec;
use serde::{de::DeserializeOwned, Serialize};

use crate::http::{self, framing, Parsed};
use crate::{ConnInfo, Verdict};

/// What a handler returns: the response, or an error response (so that
/// `?` works on [`Request::json`], [`Request::form`] and friends).
pub type Result = std::result::Result<Response, Response>;

// ---------------------------------------------------------------------------
// Framing

/// Size limits for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers); beyond it, 431.
    pub max_head: usize,
    /// Largest request body after chunked decoding; beyond it, 413.
    pub max_body: usize,
}

impl Default for Limits {
    /// 16 KiB of head, 64 KiB of body.
    fn default() -> Limits {
        Limits {
            max_head: 16 * 1024,
            max_body: 64 * 1024,
        }
    }
}

impl Limits {
    /// The framing limits these stand for: the target may be as long as
    /// the head, and HTTP/1.1 requests need `Host`.
    pub fn framing(&self) -> framing::Limits {
        framing::Limits {
            max_head: self.max_head,
            max_target: self.max_head,
            max_body: self.max_body as u64,
            require_host: true,
        }
    }
}

/// A request the framework answers itself, before any handler: the status
/// and what is wrong. The connection is closed afterwards, since where the
/// next request would start is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 413, 414, 431 or 501.
    pub status: u16,
    /// Why, for the JSON error body.
    pub message: &'static str,
}

impl Refusal {
    const fn new(status: u16, message: &'static str) -> Refusal {
        Refusal { status, message }
    }

    /// The response: a JSON error, `Connection: close`.
    pub fn write(&self, out: &mut RVec<u8>, head_only: bool) {
        Response::error(self.status, self.message).write(out, false, false, head_only);
    }
}

impl From<framing::Refusal> for Refusal {
    fn from(r: framing::Refusal) -> Refusal {
        Refusal::new(r.status, r.reason)
    }
}

/// The outcome of [`frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// Not all of the request is here yet: wait for more bytes.
    Partial,
    /// The first `n` bytes are one whole request, body included.
    Complete(usize),
    /// The request breaks the protocol or a limit: answer and close.
    Refused(Refusal),
}

impl From<framing::Frame> for Framed {
    fn from(f: framing::Frame) -> Framed {
        match f {
            framing::Frame::Partial { .. } => Framed::Partial,
            framing::Frame::Complete { total_len, .. } => Framed::Complete(total_len),
            framing::Frame::Refused(r) => Framed::Refused(r.into()),
        }
    }
}

/// Finds where the request at the start of `input` ends, by the SDK's one
/// set of framing rules ([`crate::http::framing`]). Pure and from scratch:
/// a handler that sees a message grow over several calls should use
/// [`frame_conn`], which resumes where the last call stopped.
///
/// Refuses: malformed heads and framing (a `Content-Length` that is not
/// digits, both `Content-Length` and `Transfer-Encoding`, chunked
/// HTTP/1.0, broken chunks, a missing `Host` in HTTP/1.1) with 400, an
/// overlong target with 414, heads over [`Limits::max_head`] or with too
/// many headers with 431, transfer codings other than `chunked` with 501,
/// and bodies over [`Limits::max_body`] with 413 as soon as their declared
/// size is known.
pub fn frame(input: &[u8], limits: &Limits) -> Framed {
    framing::frame(
        input,
        &limits.framing(),
        &mut framing::FrameState::default(),
    )
    .into()
}

/// [`frame`] for the message buffered on connection `conn`, resuming
/// where the previous call on the same message stopped (see
/// [`framing::frame_conn`]): linear work however the bytes arrive.
pub fn frame_conn(conn: &ConnInfo, input: &[u8], limits: &Limits) -> Framed {
    framing::frame_conn(conn.id, input, &limits.framing()).into()
}

// ---------------------------------------------------------------------------
// Request

/// One complete request, parsed. Borrowed from the message bytes, except
/// a decoded chunked body and the route's parameters.
#[derive(Debug)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    minor_version: u8,
    headers: Vec<(&'a str, &'a [u8])>,
    body: Cow<'a, [u8]>,
    params: Vec<(String, String)>,
    len: usize,
}

impl<'a> Request<'a> {
    /// Parses one complete message (as [`frame`] delimited it; anything
    /// after the message is ignored).
    pub fn parse(msg: &'a [u8], limits: &Limits) -> std::result::Result<Request<'a>, Refusal> {
        let limits = limits.framing();
        let (head_len, body, len) =
            match framing::frame(msg, &limits, &mut framing::FrameState::default()) {
                framing::Frame::Complete {
                    head_len,
                    body,
                    total_len,
                } => (head_len, body, total_len),
                framing::Frame::Partial { .. } => {
                    return Err(Refusal::new(400, "incomplete request"))
                }
                framing::Frame::Refused(r) => return Err(r.into()),
            };
        let mut scratch = http::empty_headers();
        let Ok(Parsed::Complete(head)) = http::parse_request(&msg[..head_len], &mut scratch) else {
            return Err(Refusal::new(400, "malformed request"));
        };
        let raw_body = &msg[head_len..len];
        let body = match body {
            framing::Body::Chunked { .. } => {
                Cow::Owned(framing::decode_chunked(raw_body, &limits)?)
            }
            framing::Body::Length(_) => Cow::Borrowed(raw_body),
        };
        Ok(Request {
            method: head.method,
            target: head.target,
            minor_version: head.minor_version,
            headers: head.headers.iter().map(|h| (h.name, h.value)).collect(),
            body,
            params: Vec::new(),
            len,
        })
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target as sent (path and query, percent-encoded; for
    /// an absolute-form request, `http://host/path?q`).
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path part of the target, still percent-encoded. For an
    /// absolute-form target (`http://host/app/x`) it is the origin path
    /// (`/app/x`), which is what routes match.
    pub fn path(&self) -> &'a str {
        framing::origin_path(self.target)
    }

    /// The raw query string (after `?`), if any.
    pub fn query_string(&self) -> Option<&'a str> {
        framing::origin_query(self.target)
    }

    /// The query's `name=value` pairs, decoded (`+` is a space).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query_string()
            .map(|q| parse_urlencoded(q.as_bytes()))
            .unwrap_or_default()
    }

    /// The first query parameter called `name`, decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The query parameter `name` parsed as a `T` (`None` when absent). A
    /// value that does not parse is a 400 naming the parameter.
    pub fn query_as<T: std::str::FromStr>(
        &self,
        name: &str,
    ) -> std::result::Result<Option<T>, Response> {
        match self.query(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                Response::error(400, format!("query parameter {name}: invalid value {v:?}"))
            }),
        }
    }

    /// The value of route parameter `name` (`:name` in the pattern),
    /// percent-decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Route parameter `name` parsed as a `T`. Missing or unparsable is a
    /// 400 naming the parameter.
    pub fn param_as<T: std::str::FromStr>(&self, name: &str) -> std::result::Result<T, Response> {
        let v = self.param(name).unwrap_or("");
        v.parse()
            .map_err(|_| Response::error(400, format!("{name}: invalid value {v:?}")))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// All headers, in order.
    pub fn headers(&self) -> &[(&'a str, &'a [u8])] {
        &self.headers
    }

    /// The media type of the body, lower-cased, without parameters
    /// (`application/json` for `Application/JSON; charset=utf-8`).
    pub fn content_type(&self) -> Option<String> {
        let v = std::str::from_utf8(self.header("content-type")?).ok()?;
        let t = v.split(';').next().unwrap_or("").trim();
        (!t.is_empty()).then(|| t.to_ascii_lowercase())
    }

    /// The value of cookie `name`, percent-decoded (as [`Cookie::new`]
    /// encodes it).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Every cookie of every `Cookie` header, values percent-decoded.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| parse_cookie_header(v))
            .collect()
    }

    /// The body, de-chunked.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as JSON. The content type must be JSON (`application/json`
    /// or `…+json`) or absent: otherwise 415. A body that is not valid JSON
    /// or does not fit `T` is a 400 saying why.
    pub fn json<T: DeserializeOwned>(&self) -> std::result::Result<T, Response> {
        if let Some(t) = self.content_type() {
            if t != "application/json" && !t.ends_with("+json") {
                return Err(Response::error(
                    415,
                    format!("expected a JSON body (Content-Type: application/json), got {t}"),
                ));
            }
        }
        if self.body.is_empty() {
            return Err(Response::error(400, "empty body: expected JSON"));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| Response::error(400, format!("body is not valid JSON: {e}")))
    }

    /// The body as an `application/x-www-form-urlencoded` form (what an
    /// HTML form posts). Another content type is a 415; a name or value
    /// that is not UTF-8 once percent-decoded is a 400 (as a JSON body that
    /// is not UTF-8 is), rather than text with replacement characters.
    pub fn form(&self) -> std::result::Result<Form, Response> {
        match self.content_type().as_deref() {
            Some("application/x-www-form-urlencoded") => match parse_form(&self.body) {
                Some(pairs) => Ok(Form { pairs }),
                None => Err(Response::error(
                    400,
                    "form body is not valid UTF-8 (after percent-decoding)",
                )),
            },
            other => Err(Response::error(
                415,
                format!(
                    "expected a form body (Content-Type: application/x-www-form-urlencoded), got {}",
                    other.unwrap_or("none")
                ),
            )),
        }
    }

    /// Whether the connection stays open after this request.
    pub fn keep_alive(&self) -> bool {
        let has = |tok: &[u8]| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, v)| v.split(|&b| b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(tok))
        };
        if self.minor_version == 0 {
            has(b"keep-alive")
        } else {
            !has(b"close")
        }
    }

    /// Whether this is HTTP/1.0.
    pub fn is_http10(&self) -> bool {
        self.minor_version == 0
    }

    /// The length of the whole message in the input, body included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty (never, for a parsed request).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A decoded `application/x-www-form-urlencoded` body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// `name=value` pairs in order.
    pub pairs: Vec<(String, String)>,
}

impl Form {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes `a=1&b=x+y&c=%41` (a query string or a form body) as browsers
/// do: `+` is a space, `%XX` a byte, a bad escape stays as written, invalid
/// UTF-8 becomes U+FFFD, empty pairs are skipped.
pub fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (decode_component(k, true), decode_component(v, true))
        })
        .collect()
}

/// Decodes a form body like [`parse_urlencoded`], but `None` when a name
/// or value is not UTF-8 once decoded.
fn parse_form(input: &[u8]) -> Option<Vec<(String, String)>> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            let k = String::from_utf8(decode_bytes(k, true)).ok()?;
            let v = String::from_utf8(decode_bytes(v, true)).ok()?;
            Some((k, v))
        })
        .collect()
}

/// Percent-decodes `s` leniently (see [`parse_urlencoded`]); with
/// `plus_is_space`, `+` becomes a space.
pub fn decode_component(s: &[u8], plus_is_space: bool) -> String {
    match String::from_utf8(decode_bytes(s, plus_is_space)) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Percent-decodes `s` to bytes; a bad escape stays as written.
fn decode_bytes(s: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
        match b {
            b'%' => match (hex(s.get(i + 1)), hex(s.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// Percent-encodes every byte of `s` outside the RFC 3986 unreserved set.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Splits one `Cookie` header value into decoded `(name, value)` pairs.
fn parse_cookie_header(v: &[u8]) -> Vec<(String, String)> {
    v.split(|&b| b == b';')
        .filter_map(|part| {
            let part = part.trim_ascii();
            let i = part.iter().position(|&b| b == b'=')?;
            let name = std::str::from_utf8(part[..i].trim_ascii()).ok()?;
            let mut value = part[i + 1..].trim_ascii();
            if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                value = &value[1..value.len() - 1];
            }
            (!name.is_empty()).then(|| (name.to_string(), decode_component(value, false)))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Response

/// An HTTP response under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(Cow<'static, str>, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON response. Serialization of plain data cannot fail; if `value`
    /// refuses to serialize, the answer is a 500.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response::new(status)
                    .header("Content-Type", "application/json")
                    .body(body)
            }
            Err(e) => {
                log::error!("cannot serialize a JSON response: {e}");
                Response::error(500, "internal error")
            }
        }
    }

    /// A JSON error: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let msg = message.into();
        Response::json(status, &serde_json::json!({ "error": msg }))
    }

    /// An HTML page or fragment (`text/html; charset=utf-8`).
    pub fn html(status: u16, html: Html) -> Response {
        Response::new(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(html.into_string().into_bytes())
    }

    /// Plain text (`text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(text.into().into_bytes())
    }

    /// A redirect (301, 302, 303, 307 or 308) to `location`, with a short
    /// text body.
    pub fn redirect(status: u16, location: &str) -> Response {
        Response::text(status, format!("see {location}\n")).header("Location", location)
    }

    /// Adds a header. Control characters in `value` are removed, so a value
    /// built from user input cannot split the response. `name` must be a
    /// token (a module's constant); anything else panics.
    pub fn header(mut self, name: impl Into<Cow<'static, str>>, value: impl AsRef<str>) -> Self {
        let name = name.into();
        assert!(is_token(&name), "header name {name:?} is not an HTTP token");
        let value: String = value
            .as_ref()
            .chars()
            .filter(|&c| c == '\t' || !c.is_control())
            .collect();
        self.headers.push((name, value));
        self
    }

    /// Adds a `Set-Cookie` header.
    pub fn set_cookie(self, cookie: &Cookie) -> Self {
        self.header("Set-Cookie", cookie.to_string())
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header called `name` (case-insensitive).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Writes the response. `head_only` (HEAD) omits the body but keeps
    /// its `Content-Length`. 1xx, 204 and 304 responses never have a body.
    pub fn write(&self, out: &mut RVec<u8>, keep_alive: bool, http10: bool, head_only: bool) {
        http::start_response(out, self.status, keep_alive);
        if keep_alive && http10 {
            out.extend_from_copy_slice(b"Connection: keep-alive\r\n");
        }
        for (name, value) in &self.headers {
            http::push_header(out, name, value.as_bytes());
        }
        if self.status < 200 || self.status == 204 || self.status == 304 {
            out.extend_from_copy_slice(b"\r\n");
            return;
        }
        http::end_head(out, self.body.len() as u64);
        if !head_only {
            out.extend_from_copy_slice(&self.body);
        }
    }
}

/// Whether `s` is an RFC 9110 token (header and cookie names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `SameSite` attribute of a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// A cookie to set. The value is percent-encoded on the wire (and decoded
/// by [`Request::cookie`]), so it may hold any text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    name: String,
    value: String,
    path: Option<String>,
    max_age: Option<i64>,
    http_only: bool,
    secure: bool,
    same_site: Option<SameSite>,
}

impl Cookie {
    /// A session cookie. `name` must be a token (a module's constant):
    /// anything else panics.
    pub fn new(name: &str, value: &str) -> Cookie {
        assert!(is_token(name), "cookie name {name:?} is not a token");
        Cookie {
            name: name.to_string(),
            value: value.to_string(),
            path: None,
            max_age: None,
            http_only: false,
            secure: false,
            same_site: None,
        }
    }

    /// A cookie that deletes `name` (empty, `Max-Age=0`).
    pub fn removal(name: &str) -> Cookie {
        Cookie::new(name, "").max_age(0)
    }

    /// `Path=`. Control characters and `;` are removed.
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(
            path.chars()
                .filter(|&c| c != ';' && !c.is_control())
                .collect(),
        );
        self
    }

    /// `Max-Age=` in seconds (0 deletes the cookie).
    pub fn max_age(mut self, secs: i64) -> Self {
        self.max_age = Some(secs);
        self
    }

    /// `HttpOnly`: not readable from scripts.
    pub fn http_only(mut self) -> Self {
        self.http_only = true;
        self
    }

    /// `Secure`: only sent over HTTPS.
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// `SameSite=`.
    pub fn same_site(mut self, s: SameSite) -> Self {
        self.same_site = Some(s);
        self
    }
}

impl std::fmt::Display for Cookie {
    /// The `Set-Cookie` header value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, encode_component(&self.value))?;
        if let Some(p) = &self.path {
            write!(f, "; Path={p}")?;
        }
        if let Some(a) = self.max_age {
            write!(f, "; Max-Age={a}")?;
        }
        if self.http_only {
            f.write_str("; HttpOnly")?;
        }
        if self.secure {
            f.write_str("; Secure")?;
        }
        match self.same_site {
            Some(SameSite::Strict) => f.write_str("; SameSite=Strict")?,
            Some(SameSite::Lax) => f.write_str("; SameSite=Lax")?,
            Some(SameSite::None) => f.write_str("; SameSite=None")?,
            None => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and quoted attribute values:
/// `&`, `<`, `>`, `"` and `'`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    escape_into(&mut out, text);
    Cow::Owned(out)
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Something that can go into HTML. Text and numbers are escaped; an
/// [`Html`] value is already safe and goes in as is.
pub trait ToHtml {
    /// Appends `self` to `out` as HTML.
    fn write_html(&self, out: &mut String);
}

impl ToHtml for str {
    fn write_html(&self, out: &mut String) {
        escape_into(out, self);
    }
}

impl ToHtml for String {
    fn write_html(&self, out: &mut String) {
        escape_into(out, self);
    }
}

impl<T: ToHtml + ?Sized> ToHtml for &T {
    fn write_html(&self, out: &mut String) {
        (**self).write_html(out);
    }
}

macro_rules! to_html_display {
    ($($t:ty),*) => {$(
        impl ToHtml for $t {
            fn write_html(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
to_html_display!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl ToHtml for Html {
    fn write_html(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}

/// HTML that is safe to send: built only from static markup (written by the
/// module author) and escaped values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Html(String);

impl Html {
    /// Empty.
    pub fn new() -> Html {
        Html(String::new())
    }

    /// Appends trusted markup. Only `&'static str`: markup cannot come from
    /// a request.
    pub fn markup(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Appends a value: text escaped, [`Html`] as is.
    pub fn push(&mut self, value: impl ToHtml) -> &mut Html {
        value.write_html(&mut self.0);
        self
    }

    /// The markup.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The markup, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Fills a template: every `{{name}}` in `template` is replaced by the
/// value named `name` in `vars`, through [`ToHtml`] (text escaped, [`Html`]
/// inserted as is). Templates are `&'static str` (typically
/// `include_str!("page.html")`), so they are the module author's markup.
///
/// A placeholder without a value is a bug in the module: it panics (the
/// SDK answers 500 and counts a fault).
///
/// ```
/// use module_api::web::{render, ToHtml};
/// let page = render("<p>{{who}} said {{what}}</p>", &[("who", &"Ann"), ("what", &"<b>hi</b>")]);
/// assert_eq!(page.as_str(), "<p>Ann said &lt;b&gt;hi&lt;/b&gt;</p>");
/// ```
pub fn render(template: &'static str, vars: &[(&str, &dyn ToHtml)]) -> Html {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .unwrap_or_else(|| panic!("template: unclosed {{{{ in {:?}", &rest[open..]));
        let name = after[..close].trim();
        let (_, value) = vars
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("template: no value for {{{{{name}}}}}"));
        value.write_html(&mut out);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Html(out)
}

// ---------------------------------------------------------------------------
// Routing

/// A handler: the module's state and the request in, a response out.
pub type BoxHandler<S> = Box<dyn Fn(&S, &Request<'_>) -> Result + Send + Sync>;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the (decoded) path segment.
    Literal(String),
    /// `:name`: any one non-empty segment.
    Param(String),
    /// `*name` (last): the rest of the path, possibly empty.
    Rest(String),
}

/// A parsed path pattern such as `/app/messages/:id` or `/files/*path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses a pattern. It must start with `/`; `*rest` may only be last.
    /// A trailing `/` is significant (`/app/` and `/app` differ).
    pub fn parse(pattern: &str) -> std::result::Result<Pattern, String> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(format!("route pattern {pattern:?} must start with /"));
        };
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            segments.push(if let Some(name) = p.strip_prefix(':') {
                if name.is_empty() {
                    return Err(format!("route pattern {pattern:?}: unnamed parameter"));
                }
                Segment::Param(name.to_string())
            } else if let Some(name) = p.strip_prefix('*') {
                if i + 1 != parts.len() {
                    return Err(format!("route pattern {pattern:?}: *{name} must be last"));
                }
                Segment::Rest(name.to_string())
            } else {
                Segment::Literal(p.to_string())
            });
        }
        Ok(Pattern { segments })
    }

    /// Matches a raw (percent-encoded) path; returns the decoded
    /// parameters.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let body = path.strip_prefix('/')?;
        let mut parts = body.split('/');
        let mut params = Vec::new();
        for seg in &self.segments {
            match seg {
                Segment::Rest(name) => {
                    let rest: Vec<&str> = parts.by_ref().collect();
                    params.push((
                        name.clone(),
                        decode_component(rest.join("/").as_bytes(), false),
                    ));
                    return Some(params);
                }
                Segment::Literal(lit) => {
                    let p = parts.next()?;
                    if decode_component(p.as_bytes(), false) != *lit {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let p = parts.next()?;
                    if p.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), decode_component(p.as_bytes(), false)));
                }
            }
        }
        parts.next().is_none().then_some(params)
    }
}

struct Route<S> {
    method: String,
    pattern: Pattern,
    handler: BoxHandler<S>,
}

/// Routes requests to handlers by method and path pattern, and drives the
/// whole request/response cycle for a module.
///
/// Matching: routes are tried in the order they were added; the first
/// whose method and pattern match wins. `HEAD` uses the `GET` route and
/// sends no body. `OPTIONS` on a path some route matches gets 204 with
/// `Allow`. A path that matches a route of another method gets 405 with
/// `Allow`; no match at all, 404. Errors are JSON ([`Response::error`]).
pub struct Router<S> {
    routes: Vec<Route<S>>,
    limits: Limits,
    defer: bool,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router::new()
    }
}

impl<S> Router<S> {
    /// No routes, default [`Limits`], handlers deferred to the pool.
    pub fn new() -> Router<S> {
        Router {
            routes: Vec::new(),
            limits: Limits::default(),
            defer: true,
        }
    }

    /// Sets the size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The size limits in force.
    pub fn get_limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs handlers on the event loop instead of the worker pool. Only for
    /// handlers that never block (no files, no database, no locks held
    /// long).
    pub fn inline(mut self) -> Self {
        self.defer = false;
        self
    }

    /// Adds a route. `method` is upper-case (`GET`, `POST`, ...). Panics on
    /// a malformed pattern (a bug in the module, found at start).
    pub fn route<F>(mut self, method: &str, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        let pattern = Pattern::parse(pattern).unwrap_or_else(|e| panic!("{e}"));
        self.routes.push(Route {
            method: method.to_ascii_uppercase(),
            pattern,
            handler: Box::new(handler),
        });
        self
    }

    /// `GET` (and `HEAD`) route.
    pub fn get<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("GET", pattern, handler)
    }

    /// `POST` route.
    pub fn post<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("POST", pattern, handler)
    }

    /// `PUT` route.
    pub fn put<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("PUT", pattern, handler)
    }

    /// `PATCH` route.
    pub fn patch<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("PATCH", pattern, handler)
    }

    /// `DELETE` route.
    pub fn delete<F>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(&S, &Request<'_>) -> Result + Send + Sync + 'static,
    {
        self.route("DELETE", pattern, handler)
    }

    /// Finds the handler for a request and runs it (the route's parameters
    /// are stored in `req`). Pure routing, no I/O: the 404/405/OPTIONS
    /// answers come from here.
    pub fn dispatch(&self, state: &S, req: &mut Request<'_>) -> Response {
        let path = req.path();
        let method = if req.method == "HEAD" {
            "GET"
        } else {
            req.method
        };
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.pattern.matches(path) else {
                continue;
            };
            if route.method == method {
                req.params = params;
                return match (route.handler)(state, req) {
                    Ok(r) | Err(r) => r,
                };
            }
            if !allowed.contains(&route.method.as_str()) {
                allowed.push(&route.method);
            }
        }
        if allowed.is_empty() {
            return Response::error(404, "not found");
        }
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        allowed.push("OPTIONS");
        let allow = allowed.join(", ");
        if req.method == "OPTIONS" {
            Response::new(204).header("Allow", allow)
        } else {
            Response::error(405, format!("method {} not allowed here", req.method))
                .header("Allow", allow)
        }
    }

    /// The event-loop half of a module's HTTP handling: waits for a whole
    /// request, refuses bad ones, then defers it to the worker pool (or,
    /// with [`Router::inline`], handles it now). Never blocks.
    pub fn on_message(
        &self,
        state: &S,
        conn: &ConnInfo,
        input: &[u8],
        out: &mut RVec<u8>,
    ) -> Verdict {
        match frame_conn(conn, input, &self.limits) {
            Framed::Partial => Verdict::NEED_MORE,
            Framed::Refused(r) => {
                access_log(conn, input, r.status);
                r.write(out, input.starts_with(b"HEAD "));
                Verdict::close(input.len())
            }
            Framed::Complete(n) if self.defer => Verdict::defer(n),
            Framed::Complete(n) => self.handle(state, conn, &input[..n], out),
        }
    }

    /// The worker-pool half: handles the request [`Router::on_message`]
    /// deferred. May block (in the handler).
    pub fn on_deferred(
        &self,
        state: &S,
        conn: &ConnInfo,
        input: &[u8],
        out: &mut RVec<u8>,
    ) -> Verdict {
        self.handle(state, conn, input, out)
    }

    /// Parses the request at the start of `msg`, dispatches it and writes
    /// the response; the verdict keeps or closes the connection as the
    /// request asked.
    pub fn handle(&self, state: &S, conn: &ConnInfo, msg: &[u8], out: &mut RVec<u8>) -> Verdict {
        let mut req = match Request::parse(msg, &self.limits) {
            Ok(req) => req,
            Err(r) => {
                access_log(conn, msg, r.status);
                r.write(out, msg.starts_with(b"HEAD "));
                return Verdict::close(msg.len());
            }
        };
        let resp = self.dispatch(state, &mut req);
        let keep = req.keep_alive() && !conn.draining;
        resp.write(out, keep, req.is_http10(), req.method == "HEAD");
        if log::log_enabled!(target: "access", log::Level::Info) {
            log::info!(
                target: "access",
                "{} \"{} {}\" {} {}",
                conn.peer(),
                req.method,
                req.target.replace('"', "%22"),
                resp.status,
                resp.body.len()
            );
        }
        if keep {
            Verdict::done(req.len)
        } else {
            Verdict::close(req.len)
        }
    }
}

/// The access-log line for a request refused before parsing.
fn access_log(conn: &ConnInfo, input: &[u8], status: u16) {
    if log::log_enabled!(target: "access", log::Level::Info) {
        let line = input.split(|&b| b == b'\n').next().unwrap_or(b"");
        let line = String::from_utf8_lossy(&line[..line.len().min(200)]);
        log::info!(
            target: "access",
            "{} \"{}\" {status} -",
            conn.peer(),
            line.trim_end().replace('"', "%22")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 1024,
        max_body: 16,
    };

    fn text(out: RVec<u8>) -> String {
        String::from_utf8(out.into_vec()).unwrap()
    }

    fn conn() -> ConnInfo {
        ConnInfo::new(1, "127.0.0.1:9".parse().unwrap(), false)
    }

    #[test]
    fn frames_content_length() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET";
        let head = req.len() - 6;
        assert_eq!(frame(&req[..head + 2], &LIMITS), Framed::Partial);
        assert_eq!(frame(req, &LIMITS), Framed::Complete(head + 3));
        assert_eq!(frame(b"GET / HTTP/1.1\r\nHo", &LIMITS), Framed::Partial);
        let big = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n";
        assert!(matches!(
            frame(big, &LIMITS),
            Framed::Refused(Refusal { status: 413, .. })
        ));
    }

    #[test]
    fn refuses_bad_heads() {
        let status = |input: &[u8]| match frame(input, &LIMITS) {
            Framed::Refused(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400); // no Host
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET\0 / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(status(&long), 431);
        // HTTP/1.0 needs no Host.
        assert_eq!(
            frame(b"GET / HTTP/1.0\r\n\r\n", &LIMITS),
            Framed::Complete(18)
        );
    }

    #[test]
    fn frames_and_decodes_chunked() {
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let body = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n";
        let mut req = head.to_vec();
        req.extend_from_slice(body);
        let full = req.len();
        req.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for cut in [head.len(), head.len() + 4, full - 1] {
            assert_eq!(frame(&req[..cut], &LIMITS), Framed::Partial, "cut {cut}");
        }
        assert_eq!(frame(&req, &LIMITS), Framed::Complete(full));
        let parsed = Request::parse(&req, &LIMITS).unwrap();
        assert_eq!(parsed.body(), b"abcde");
        assert_eq!(parsed.len(), full);

        // Announced sizes over the limit are refused before the data comes.
        let mut big = head.to_vec();
        big.extend_from_slice(b"10\r\n");
        assert_eq!(frame(&big, &LIMITS), Framed::Partial); // exactly 16: fine so far
        big.extend_from_slice(&[b'x'; 16]);
        big.extend_from_slice(b"\r\n1\r\n");
        assert!(matches!(
            frame(&big, &LIMITS),
            Framed::Refused(Refusal { status: 413, .. })
        ));
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"3\r\nabcX\r\n");
        assert!(matches!(
            frame(&bad, &LIMITS),
            Framed::Refused(Refusal { status: 400, .. })
        ));
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"zz\r\n");
        assert!(matches!(
            frame(&bad, &LIMITS),
            Framed::Refused(Refusal { status: 400, .. })
        ));
    }

    #[test]
    fn strict_framing_statuses() {
        let status = |input: &[u8]| match frame(input, &Limits::default()) {
            Framed::Refused(r) => r.status,
            other => panic!("{other:?}"),
        };
        let post = |h: &str| format!("POST /a HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n");
        assert_eq!(status(post("Content-Length: +3").as_bytes()), 400);
        assert_eq!(
            status(post("Transfer-Encoding: gzip, chunked").as_bytes()),
            501
        );
        let mut empty_size = post("Transfer-Encoding: chunked").into_bytes();
        empty_size.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
        assert_eq!(status(&empty_size), 400);
        assert_eq!(status(b"GET\t/app/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn absolute_form_routes_by_its_path() {
        let msg = b"GET http://example.test/m/5?x=1 HTTP/1.1\r\nHost: example.test\r\n\r\n";
        let req = Request::parse(msg, &LIMITS).unwrap();
        assert_eq!(req.path(), "/m/5");
        assert_eq!(req.query("x").as_deref(), Some("1"));
        let (_, out) = run(&router(), std::str::from_utf8(msg).unwrap());
        assert!(out.ends_with("{\"id\":5,\"s\":7}\n"), "{out}");
    }

    #[test]
    fn chunked_body_in_pieces_through_the_router() {
        let r = router().inline().limits(Limits {
            max_head: 1024,
            max_body: 1 << 20,
        });
        let c = ConnInfo::new(0xabc0_0001, "127.0.0.1:9".parse().unwrap(), false);
        let mut msg =
            b"POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n"
                .to_vec();
        for _ in 0..3000 {
            msg.extend_from_slice(b"2\r\n,1\r\n");
        }
        msg.extend_from_slice(b"1\r\n]\r\n0\r\n\r\n");
        let mut out = RVec::new();
        for end in (1..msg.len()).step_by(5) {
            assert_eq!(
                r.on_message(&7, &c, &msg[..end], &mut out),
                Verdict::NEED_MORE
            );
        }
        let v = r.on_message(&7, &c, &msg, &mut out);
        assert_eq!(v, Verdict::done(msg.len()));
        let s = text(out);
        assert!(s.starts_with("HTTP/1.1 201 "), "{}", &s[..s.len().min(200)]);
        assert_eq!(s.matches(",1").count(), 3000);
    }

    #[test]
    fn form_refuses_invalid_utf8() {
        let parse = |body: &[u8]| {
            let mut msg = format!(
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            msg.extend_from_slice(body);
            let req = Request::parse(&msg, &Limits::default()).unwrap();
            req.form().map_err(|r| {
                (
                    r.status(),
                    String::from_utf8_lossy(r.body_bytes()).into_owned(),
                )
            })
        };
        assert_eq!(parse(b"a=%C3%A9").unwrap().get("a"), Some("\u{e9}"));
        assert_eq!(
            parse("a=\u{e9}".as_bytes()).unwrap().get("a"),
            Some("\u{e9}")
        );
        for bad in [&b"a=%ff"[..], b"a=\xff", b"%C3=1", b"a=%C3"] {
            let (status, body) = parse(bad).unwrap_err();
            assert_eq!(status, 400);
            assert!(body.contains("UTF-8"), "{body}");
        }
    }

    #[test]
    fn request_accessors() {
        let msg = b"POST /p/a%20b?limit=5&q=x+y%21&bad=%zz HTTP/1.1\r\nHost: x\r\n\
Cookie: a=1; author=Ann%20%3Cb%3E\r\nContent-Type: Application/JSON; charset=utf-8\r\n\
Content-Length: 13\r\n\r\n{\"n\": [1, 2]}";
        let req = Request::parse(msg, &Limits::default()).unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.path(), "/p/a%20b");
        assert_eq!(req.query("q").as_deref(), Some("x y!"));
        assert_eq!(req.query("bad").as_deref(), Some("%zz"));
        assert_eq!(req.query_as::<u32>("limit").unwrap(), Some(5));
        assert_eq!(req.query_as::<u32>("missing").unwrap(), None);
        assert_eq!(req.query_as::<u32>("q").unwrap_err().status(), 400);
        assert_eq!(req.cookie("author").as_deref(), Some("Ann <b>"));
        assert_eq!(req.cookie("nope"), None);
        assert_eq!(req.content_type().as_deref(), Some("application/json"));
        let v: serde_json::Value = req.json().unwrap();
        assert_eq!(v["n"][1], 2);
        assert!(req.keep_alive());
        assert_eq!(req.form().unwrap_err().status(), 415);
    }

    #[test]
    fn json_and_form_errors() {
        let parse = |ct: &str, body: &str| {
            let msg = format!(
                "POST / HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let req = Request::parse(msg.as_bytes(), &Limits::default()).unwrap();
            (
                req.json::<serde_json::Value>().map_err(|r| r.status()),
                req.form().map_err(|r| r.status()),
            )
        };
        assert_eq!(parse("", "{").0, Err(400));
        assert_eq!(parse("", "").0, Err(400));
        assert_eq!(parse("Content-Type: text/plain\r\n", "{}").0, Err(415));
        assert!(parse("Content-Type: application/problem+json\r\n", "{}")
            .0
            .is_ok());
        let (_, form) = parse(
            "Content-Type: application/x-www-form-urlencoded\r\n",
            "author=A+B&text=%3Cscript%3E&&empty=&flag",
        );
        let form = form.unwrap();
        assert_eq!(form.get("author"), Some("A B"));
        assert_eq!(form.get("text"), Some("<script>"));
        assert_eq!(form.get("empty"), Some(""));
        assert_eq!(form.get("flag"), Some(""));
        assert_eq!(form.get("none"), None);
    }

    #[test]
    fn decoding() {
        assert_eq!(decode_component(b"a%2Fb+c", true), "a/b c");
        assert_eq!(decode_component(b"a%2Fb+c", false), "a/b+c");
        assert_eq!(decode_component(b"%", true), "%");
        assert_eq!(decode_component(b"%4", true), "%4");
        assert_eq!(decode_component(b"%ff", true), "\u{fffd}");
        assert_eq!(decode_component("é".as_bytes(), true), "é");
        assert_eq!(encode_component("a b/é~"), "a%20b%2F%C3%A9~");
        assert_eq!(
            parse_urlencoded(b"a=1&b&=x"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("".into(), "x".into())
            ]
        );
    }

    #[test]
    fn patterns() {
        let p = Pattern::parse("/app/messages/:id").unwrap();
        assert_eq!(
            p.matches("/app/messages/42"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(
            p.matches("/app/messages/a%2Fb"),
            Some(vec![("id".into(), "a/b".into())])
        );
        assert_eq!(p.matches("/app/messages/"), None);
        assert_eq!(p.matches("/app/messages"), None);
        assert_eq!(p.matches("/app/messages/1/x"), None);
        let root = Pattern::parse("/app/").unwrap();
        assert!(root.matches("/app/").is_some());
        assert!(root.matches("/app").is_none());
        assert!(root.matches("/apple/").is_none());
        let rest = Pattern::parse("/files/*path").unwrap();
        assert_eq!(
            rest.matches("/files/a/b%20c"),
            Some(vec![("path".into(), "a/b c".into())])
        );
        assert_eq!(
            rest.matches("/files/"),
            Some(vec![("path".into(), "".into())])
        );
        assert!(Pattern::parse("app").is_err());
        assert!(Pattern::parse("/a/:").is_err());
        assert!(Pattern::parse("/*a/b").is_err());
    }

    fn router() -> Router<u32> {
        Router::new()
            .get("/m/:id", |s: &u32, r: &Request<'_>| {
                let id: u64 = r.param_as("id")?;
                Ok(Response::json(
                    200,
                    &serde_json::json!({ "id": id, "s": s }),
                ))
            })
            .delete("/m/:id", |_: &u32, _: &Request<'_>| Ok(Response::new(204)))
            .post("/m", |_: &u32, r: &Request<'_>| {
                let v: serde_json::Value = r.json()?;
                Ok(Response::json(201, &v))
            })
    }

    fn run(router: &Router<u32>, msg: &str) -> (Verdict, String) {
        let mut out = RVec::new();
        let v = router.handle(&7, &conn(), msg.as_bytes(), &mut out);
        (v, text(out))
    }

    #[test]
    fn dispatches() {
        let r = router();
        let (v, out) = run(&r, "GET /m/5 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("{\"id\":5,\"s\":7}\n"), "{out}");
        assert_eq!(v.action, crate::Action::Done);

        let (_, out) = run(&r, "HEAD /m/5 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("Content-Length: 15\r\n\r\n"), "{out}");

        let (_, out) = run(&r, "GET /m/x HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(
            out.contains("{\"error\":\"id: invalid value \\\"x\\\"\"}"),
            "{out}"
        );

        let (_, out) = run(
            &r,
            "PUT /m/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(
            out.contains("Allow: GET, DELETE, HEAD, OPTIONS\r\n"),
            "{out}"
        );

        let (_, out) = run(&r, "OPTIONS /m HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 204 "), "{out}");
        assert!(out.contains("Allow: POST, OPTIONS\r\n"), "{out}");
        assert!(!out.contains("Content-Length"), "{out}");

        let (v, out) = run(
            &r,
            "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert_eq!(v.action, crate::Action::Close);

        let (_, out) = run(
            &r,
            "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 201 "), "{out}");
        assert!(out.ends_with("\r\n\r\n{}\n"), "{out}");
    }

    #[test]
    fn message_cycle() {
        let r = router();
        let mut out = RVec::new();
        let full = b"GET /m/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /m/2";
        let v = r.on_message(&7, &conn(), &full[..10], &mut out);
        assert_eq!(v, Verdict::NEED_MORE);
        let v = r.on_message(&7, &conn(), full, &mut out);
        assert_eq!(v, Verdict::defer(full.len() - 8));
        assert!(out.is_empty());
        let small = router().limits(LIMITS);
        let v = small.on_message(
            &7,
            &conn(),
            b"POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n",
            &mut out,
        );
        assert_eq!(v.action, crate::Action::Close);
        let s = text(out);
        assert!(s.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
        assert!(
            s.ends_with("{\"error\":\"request body too large\"}\n"),
            "{s}"
        );

        let inline = router().inline();
        let mut out = RVec::new();
        let v = inline.on_message(&7, &conn(), full, &mut out);
        assert_eq!(v, Verdict::done(full.len() - 8));
        assert!(text(out).starts_with("HTTP/1.1 200 OK"));

        // A draining host: the answer is the connection's last.
        let mut draining = conn();
        draining.draining = true;
        let mut out = RVec::new();
        let v = inline.on_message(&7, &draining, full, &mut out);
        assert_eq!(v, Verdict::close(full.len() - 8));
        let s = text(out);
        assert!(s.starts_with("HTTP/1.1 200 OK"), "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
    }

    #[test]
    fn responses() {
        let mut out = RVec::new();
        Response::redirect(303, "/app/\r\nSet-Cookie: x=1")
            .set_cookie(
                &Cookie::new("author", "Ann; Max-Age=0")
                    .path("/app")
                    .max_age(60)
                    .http_only()
                    .same_site(SameSite::Lax),
            )
            .write(&mut out, true, true, false);
        let s = text(out);
        assert!(s.starts_with("HTTP/1.1 303 See Other\r\n"), "{s}");
        assert!(s.contains("Connection: keep-alive\r\n"), "{s}");
        assert!(s.contains("Location: /app/Set-Cookie: x=1\r\n"), "{s}");
        assert!(
            s.contains("Set-Cookie: author=Ann%3B%20Max-Age%3D0; Path=/app; Max-Age=60; HttpOnly; SameSite=Lax\r\n"),
            "{s}"
        );
        assert_eq!(Cookie::removal("a").to_string(), "a=; Max-Age=0");
    }

    #[test]
    #[should_panic(expected = "not an HTTP token")]
    fn header_names_are_checked() {
        let _ = Response::new(200).header("Bad Name", "x");
    }

    #[test]
    fn html_escapes() {
        assert_eq!(escape("plain"), Cow::Borrowed("plain"));
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
        let mut list = Html::new();
        for item in ["<a>", "b&c"] {
            list.markup("<li>").push(item).markup("</li>");
        }
        let page = render(
            "<title>{{title}}</title><ul>{{ items }}</ul><p>{{n}}</p>",
            &[("title", &"A \"board\""), ("items", &list), ("n", &42u64)],
        );
        assert_eq!(
            page.as_str(),
            "<title>A &quot;board&quot;</title><ul><li>&lt;a&gt;</li><li>b&amp;c</li></ul><p>42</p>"
        );
    }

    #[test]
    #[should_panic(expected = "no value for {{missing}}")]
    fn render_needs_every_value() {
        render("{{missing}}", &[]);
    }
}
