//! Strict, incremental HTTP/1.1 request framing (RFC 9112): where does the
//! request at the start of a buffer end, and is it acceptable at all?
//!
//! [`frame`] is the one place every HTTP reader of the SDK (and of the
//! shipped modules) asks. It is pure, bytes in and a [`Frame`] out, like
//! httparse: [`Frame::Partial`] (wait for more), [`Frame::Complete`] (head
//! length, body framing, total length) or [`Frame::Refused`] (the status
//! to answer before closing). The caller keeps a small [`FrameState`]
//! between calls on the same message, so each call resumes where the last
//! one stopped: a chunked body that arrives in ten thousand pieces is
//! walked once, not ten thousand times. [`frame_conn`] keeps that state
//! for a connection id, so a module handler (which only sees the buffered
//! bytes) gets the same linear cost.
//!
//! The rules, each a request-smuggling lever when two parsers disagree:
//!
//! * The head is parsed by httparse with its strict defaults: one space
//!   between the parts of the request line (tabs or runs of spaces: 400),
//!   header names are tokens with no whitespace before the colon (400),
//!   no obs-fold continuation lines (400), no control bytes in values.
//! * `Content-Length` is `1*DIGIT` after optional spaces/tabs: a sign, a
//!   list, NBSP or any other byte, an empty value or a value that does not
//!   fit 64 bits is 400; two different values are 400.
//! * `Transfer-Encoding` must be exactly one `chunked` coding: any other
//!   coding (`gzip, chunked`) is 501, `chunked` twice is 400, and
//!   `Transfer-Encoding` in HTTP/1.0 or together with `Content-Length` is
//!   400 (RFC 9112 6.1 lets a server refuse it; it is how smuggling works).
//! * Chunks: the size is `1*HEXDIG` (an empty size line is 400, never the
//!   last chunk), extensions are well-formed and the whole size line is at
//!   most [`MAX_CHUNK_LINE`] bytes, lines end in CRLF (a bare LF is 400),
//!   chunk data is followed by CRLF, and the trailer section is at most
//!   `max_head` bytes of well-formed field lines (431 beyond).
//! * The target is origin-form (`/path?q`), absolute-form
//!   (`http://host/path`, whose path [`origin`] returns), `*` for OPTIONS
//!   or authority-form for CONNECT; anything else is 400, a target over
//!   `max_target` bytes 414.
//! * More than one `Host` is 400; none in HTTP/1.1 is 400 when
//!   [`Limits::require_host`] is set.
//! * Head over `max_head` (or over [`MAX_HEADERS`](super::MAX_HEADERS)
//!   headers): 431. Body over `max_body` (declared, or announced by the
//!   chunk sizes so far): 413, before the data arrives.

use std::sync::Mutex;

/// Request-line bytes besides the target (method, spaces, version, CRLF)
/// allowed before an incomplete request line counts as an overlong target.
const LINE_SLACK: usize = 32;

/// Longest chunk-size line, extensions included.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Empty lines (CRLF or LF) ignored before a request line (RFC 9112 2.2
/// asks for at least one; more is a client that is not speaking HTTP).
const MAX_LEADING_EMPTY: usize = 2;

/// Limits and policy for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and fields), and largest trailer
    /// section: beyond it, 431.
    pub max_head: usize,
    /// Longest request target: beyond it, 414.
    pub max_target: usize,
    /// Largest body after chunked decoding: beyond it, 413.
    pub max_body: u64,
    /// Refuse an HTTP/1.1 request without `Host` (RFC 9112 3.2). Off for
    /// endpoints that hand-written clients call (`POST /rpc`).
    pub require_host: bool,
}

impl Default for Limits {
    /// 16 KiB of head, 8 KiB of target, 64 KiB of body, `Host` required.
    fn default() -> Limits {
        Limits {
            max_head: 16 * 1024,
            max_target: 8 * 1024,
            max_body: 64 * 1024,
            require_host: true,
        }
    }
}

/// A request refused before any handler: the status and why. The
/// connection must be closed after the answer (where the next request
/// would start is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 413, 414, 431 or 501.
    pub status: u16,
    /// What is wrong, for the error body and the log.
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

const BAD_CHUNK: Refusal = refuse(400, "malformed chunked body");
const TOO_LARGE: Refusal = refuse(413, "request body too large");

/// How the body of a complete request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `Content-Length` (0 without one): the body is the bytes between the
    /// head and the total length.
    Length(u64),
    /// `Transfer-Encoding: chunked`, `data_len` bytes once decoded.
    Chunked {
        /// Sum of the chunk sizes.
        data_len: u64,
    },
}

/// The outcome of [`frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The request is not all here yet. `head_len` is known once the head
    /// is complete (the body is still arriving): a server may act on it,
    /// e.g. answer an `Expect: 100-continue` at once.
    Partial {
        /// Length of the complete head, if it is complete.
        head_len: Option<usize>,
    },
    /// The first `total_len` bytes are one whole request.
    Complete {
        /// Length of the head, blank line included.
        head_len: usize,
        /// How its body is framed.
        body: Body,
        /// Length of the whole message (head, body, trailers).
        total_len: usize,
    },
    /// The request breaks the protocol or a limit: answer and close.
    Refused(Refusal),
}

/// Where [`frame`] stopped on a message, so that the next call resumes
/// there. Start each message with `FrameState::default()`; the state is
/// meaningless for other bytes than the ones it was built on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameState {
    phase: Phase,
    /// Bytes of input examined so far (a measure of the work done).
    work: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Nothing seen yet.
    #[default]
    Start,
    /// No end of head starts at an LF before `scanned`; the request line
    /// was checked once `line_checked`.
    Head { scanned: usize, line_checked: bool },
    /// Everything up to `end` is the message.
    Length { head_len: usize, end: u64 },
    /// A chunk-size line starts at `pos`; `scanned` bytes of it have no LF.
    ChunkSize {
        head_len: usize,
        pos: usize,
        scanned: usize,
        decoded: u64,
    },
    /// Chunk data runs to `end`, then CRLF.
    ChunkData {
        head_len: usize,
        end: usize,
        decoded: u64,
    },
    /// A trailer line starts at `pos`; the trailer section began at
    /// `start`.
    Trailer {
        head_len: usize,
        start: usize,
        pos: usize,
        scanned: usize,
        decoded: u64,
    },
}

impl FrameState {
    /// Bytes examined so far on this message, counting every rescan: with
    /// resumption it stays within a small multiple of the message length.
    pub fn work(&self) -> u64 {
        self.work
    }
}

/// Frames the request at the start of `input`, resuming from `state` (see
/// [`FrameState`]). `input` must begin with the same bytes as on the
/// previous call for this state, and may only have grown.
pub fn frame(input: &[u8], limits: &Limits, state: &mut FrameState) -> Frame {
    loop {
        let step = match state.phase {
            Phase::Start => {
                // The common case: the whole head is already here, and one
                // httparse pass finds it.
                state.work += input.len() as u64;
                match finish_head(input, input.len(), limits, state) {
                    HeadStep::NotYet => {
                        state.phase = Phase::Head {
                            scanned: 0,
                            line_checked: false,
                        };
                        continue;
                    }
                    HeadStep::Done(f) => f,
                }
            }
            Phase::Head {
                scanned,
                line_checked,
            } => head(input, limits, state, scanned, line_checked),
            Phase::Length { head_len, end } => {
                return if input.len() as u64 >= end {
                    Frame::Complete {
                        head_len,
                        body: Body::Length(end - head_len as u64),
                        total_len: end as usize,
                    }
                } else {
                    Frame::Partial {
                        head_len: Some(head_len),
                    }
                };
            }
            _ => chunked(input, limits, state),
        };
        if let Some(f) = step {
            return f;
        }
    }
}

/// The outcome of parsing a head that may be complete.
enum HeadStep {
    /// httparse wants more bytes.
    NotYet,
    /// `Some`: the answer; `None`: the head is complete and the body phase
    /// is set.
    Done(Option<Frame>),
}

/// The head phase while the head is incomplete: looks for its end only in
/// the bytes that arrived since the last call. `None` when the head is
/// complete and the body phase is set.
fn head(
    input: &[u8],
    limits: &Limits,
    state: &mut FrameState,
    scanned: usize,
    line_checked: bool,
) -> Option<Frame> {
    // The end of the head is an empty line: "\n\n" or "\n\r\n". `from`
    // is where the LFs not yet known to start no such line begin (the
    // last 2 bytes of the previous call lacked the bytes after them).
    let from = scanned;
    let (empty, lead) = leading_empty_lines(input);
    if empty > MAX_LEADING_EMPTY {
        return Some(Frame::Refused(refuse(400, "malformed request")));
    }
    let mut first_lf = None;
    let mut end = None;
    let mut i = from;
    while let Some(off) = memchr(b'\n', &input[i..]) {
        let lf = i + off;
        if lf >= lead {
            // An LF after the leading empty lines ends the request line.
            first_lf.get_or_insert(lf);
        }
        match (input.get(lf + 1), input.get(lf + 2)) {
            (Some(b'\n'), _) => end = Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => end = Some(lf + 3),
            _ => {}
        }
        if end.is_some() {
            break;
        }
        i = lf + 1;
    }
    let seen = end.unwrap_or(input.len());
    state.work += (seen - from.min(seen)) as u64;
    // The request line is complete once any LF has arrived.
    let line_done = line_checked || first_lf.is_some();
    if !line_done && input.len() > limits.max_target + LINE_SLACK {
        return Some(Frame::Refused(refuse(414, "request target too long")));
    }
    if let Some(end) = end {
        state.work += end as u64;
        match finish_head(input, end, limits, state) {
            HeadStep::Done(f) => return f,
            // An empty line before the request line, not the end of the
            // head: look further, from its last LF (`end - 1` is past
            // `from`, so each round makes progress).
            HeadStep::NotYet => {
                state.phase = Phase::Head {
                    scanned: end - 1,
                    line_checked: line_done,
                };
                return None;
            }
        }
    }
    if input.len() > limits.max_head {
        return Some(Frame::Refused(refuse(431, "request head too large")));
    }
    // Check the request line once, as soon as it is whole, so that a
    // malformed one is refused now rather than at the header timeout.
    if !line_checked && line_done {
        state.work += input.len() as u64;
        let mut headers = super::empty_headers();
        if let Err(e) = httparse::Request::new(&mut headers).parse(input) {
            return Some(Frame::Refused(parse_error(e)));
        }
    }
    state.phase = Phase::Head {
        scanned: input.len().saturating_sub(2).max(from),
        line_checked: line_done,
    };
    Some(Frame::Partial { head_len: None })
}

/// Parses `input[..end]` as a head and, when it is complete and valid,
/// moves `state` to the body phase.
fn finish_head(input: &[u8], end: usize, limits: &Limits, state: &mut FrameState) -> HeadStep {
    let mut headers = super::empty_headers();
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(&input[..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return HeadStep::NotYet,
        Err(e) => return HeadStep::Done(Some(Frame::Refused(parse_error(e)))),
    };
    let refused = |r| HeadStep::Done(Some(Frame::Refused(r)));
    if head_len > limits.max_head {
        return refused(refuse(431, "request head too large"));
    }
    if leading_empty_lines(input).0 > MAX_LEADING_EMPTY {
        return refused(refuse(400, "malformed request"));
    }
    let head = super::Request {
        method: req.method.unwrap_or(""),
        target: req.path.unwrap_or(""),
        minor_version: req.version.unwrap_or(1),
        headers: req.headers,
        head_len,
    };
    match check_head(&head, limits) {
        Err(r) => refused(r),
        Ok(Framing::Length(n)) if n > limits.max_body => refused(TOO_LARGE),
        Ok(Framing::Length(n)) => {
            state.phase = Phase::Length {
                head_len,
                end: head_len as u64 + n,
            };
            HeadStep::Done(None)
        }
        Ok(Framing::Chunked) => {
            state.phase = Phase::ChunkSize {
                head_len,
                pos: head_len,
                scanned: head_len,
                decoded: 0,
            };
            HeadStep::Done(None)
        }
    }
}

/// Empty lines before the request line, counted up to one more than
/// allowed, and the bytes they take.
fn leading_empty_lines(input: &[u8]) -> (usize, usize) {
    let mut n = 0;
    let mut i = 0;
    while n <= MAX_LEADING_EMPTY {
        match input.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => break,
        }
        n += 1;
    }
    (n, i)
}

fn parse_error(e: httparse::Error) -> Refusal {
    match e {
        httparse::Error::TooManyHeaders => refuse(431, "too many request headers"),
        httparse::Error::Version => refuse(400, "malformed request: bad HTTP version"),
        httparse::Error::HeaderName => refuse(400, "malformed request: bad header name"),
        httparse::Error::HeaderValue => refuse(400, "malformed request: bad header value"),
        _ => refuse(400, "malformed request"),
    }
}

/// The body framing a valid head announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
}

/// Every check on a parsed head beyond its syntax; the body framing.
pub(crate) fn check_head(
    req: &super::Request<'_, '_>,
    limits: &Limits,
) -> Result<Framing, Refusal> {
    if req.target.len() > limits.max_target {
        return Err(refuse(414, "request target too long"));
    }
    if !target_ok(req.method, req.target) {
        return Err(refuse(400, "malformed request target"));
    }
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 || (hosts == 0 && req.minor_version == 1 && limits.require_host) {
        return Err(refuse(400, "exactly one Host header is required"));
    }
    body_framing(req)
}

/// The body framing from `Content-Length` and `Transfer-Encoding`, with
/// the rules in the module documentation.
pub(crate) fn body_framing(req: &super::Request<'_, '_>) -> Result<Framing, Refusal> {
    let mut length: Option<u64> = None;
    let mut chunked = 0;
    let mut coded = false;
    for h in req.headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)
                .ok_or(refuse(400, "bad body framing: invalid Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(refuse(400, "bad body framing: conflicting Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = trim_ows(coding);
                if coding.is_empty() {
                    continue; // an empty list element (RFC 9110 5.6.1)
                }
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(refuse(501, "unsupported transfer coding"));
                }
                chunked += 1;
            }
        }
    }
    if !coded {
        return Ok(Framing::Length(length.unwrap_or(0)));
    }
    if req.minor_version == 0 {
        return Err(refuse(
            400,
            "bad body framing: chunked bodies need HTTP/1.1",
        ));
    }
    if length.is_some() {
        return Err(refuse(
            400,
            "bad body framing: Content-Length with Transfer-Encoding",
        ));
    }
    if chunked != 1 {
        return Err(refuse(
            400,
            "bad body framing: Transfer-Encoding must be chunked once",
        ));
    }
    Ok(Framing::Chunked)
}

/// `1*DIGIT` with optional surrounding spaces and tabs, in 64 bits.
fn content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether `target` is a request-target form that `method` may use.
fn target_ok(method: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    if target == "*" {
        return method == "OPTIONS";
    }
    if method == "CONNECT" {
        // authority-form: host:port
        return target.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        });
    }
    absolute_parts(target).is_some()
}

/// An absolute-form target split into authority and the rest (path and
/// query, `""` when neither was given): `http://h:1/a?q` → `("h:1",
/// "/a?q")`. `None` for anything else.
fn absolute_parts(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    if authority.is_empty() || authority.contains('@') {
        return None; // no host, or userinfo (RFC 9110 4.2.4 forbids it)
    }
    Some((authority, tail))
}

/// The origin-form of a target: itself for `/path?q`, the path and query
/// of an absolute-form target (`http://host/a?q` → `/a?q`,
/// `http://host?q` → `/?q`, `http://host` → `/`), and the target as is
/// for `*` and authority-form.
pub fn origin(target: &str) -> std::borrow::Cow<'_, str> {
    if target.starts_with('/') {
        return target.into();
    }
    match absolute_parts(target) {
        Some((_, tail)) if tail.starts_with('/') => tail.into(),
        Some((_, tail)) => format!("/{tail}").into(),
        None => target.into(),
    }
}

/// The path of a target (origin or absolute form), still percent-encoded,
/// without the query: `/a` for both `/a?q` and `http://h/a?q`; `/` for
/// `http://h?q`.
pub fn origin_path(target: &str) -> &str {
    let tail = if target.starts_with('/') {
        target
    } else {
        match absolute_parts(target) {
            Some((_, tail)) if tail.starts_with('/') => tail,
            Some(_) => "/",
            None => target,
        }
    };
    tail.split('?').next().unwrap_or("")
}

/// The query of a target (origin or absolute form), if any.
pub fn origin_query(target: &str) -> Option<&str> {
    target.split_once('?').map(|(_, q)| q)
}

/// The chunked phases: size line, data and its CRLF, trailer lines.
fn chunked(input: &[u8], limits: &Limits, state: &mut FrameState) -> Option<Frame> {
    loop {
        match state.phase {
            Phase::ChunkSize {
                head_len,
                pos,
                scanned,
                decoded,
            } => {
                let lf = match line_end(input, pos, scanned, MAX_CHUNK_LINE, state) {
                    Ok(Some(lf)) => lf,
                    Ok(None) => {
                        state.phase = Phase::ChunkSize {
                            head_len,
                            pos,
                            scanned: input.len(),
                            decoded,
                        };
                        return Some(Frame::Partial {
                            head_len: Some(head_len),
                        });
                    }
                    Err(_) => return Some(Frame::Refused(BAD_CHUNK)),
                };
                let size = match chunk_size(&input[pos..lf - 1]) {
                    Some(s) => s,
                    None => return Some(Frame::Refused(BAD_CHUNK)),
                };
                if size == 0 {
                    state.phase = Phase::Trailer {
                        head_len,
                        start: lf + 1,
                        pos: lf + 1,
                        scanned: lf + 1,
                        decoded,
                    };
                    continue;
                }
                let decoded = match decoded.checked_add(size) {
                    Some(d) if d <= limits.max_body => d,
                    _ => return Some(Frame::Refused(TOO_LARGE)),
                };
                let Some(end) = usize::try_from(size)
                    .ok()
                    .and_then(|s| (lf + 1).checked_add(s))
                else {
                    return Some(Frame::Refused(TOO_LARGE));
                };
                state.phase = Phase::ChunkData {
                    head_len,
                    end,
                    decoded,
                };
            }
            Phase::ChunkData {
                head_len,
                end,
                decoded,
            } => {
                let partial = Some(Frame::Partial {
                    head_len: Some(head_len),
                });
                match input.get(end..end + 2) {
                    Some(b"\r\n") => {}
                    Some(_) => return Some(Frame::Refused(BAD_CHUNK)),
                    None if input.get(end).is_some_and(|&b| b != b'\r') => {
                        return Some(Frame::Refused(BAD_CHUNK))
                    }
                    None => return partial,
                }
                state.work += 2;
                state.phase = Phase::ChunkSize {
                    head_len,
                    pos: end + 2,
                    scanned: end + 2,
                    decoded,
                };
            }
            Phase::Trailer {
                head_len,
                start,
                pos,
                scanned,
                decoded,
            } => {
                let room = limits.max_head.saturating_sub(pos - start);
                let lf = match line_end(input, pos, scanned, room, state) {
                    Ok(Some(lf)) => lf,
                    Ok(None) => {
                        state.phase = Phase::Trailer {
                            head_len,
                            start,
                            pos,
                            scanned: input.len(),
                            decoded,
                        };
                        return Some(Frame::Partial {
                            head_len: Some(head_len),
                        });
                    }
                    Err(LineError::TooLong) => {
                        return Some(Frame::Refused(refuse(431, "trailer section too large")))
                    }
                    Err(LineError::BareLf) => return Some(Frame::Refused(BAD_CHUNK)),
                };
                if lf == pos + 1 {
                    return Some(Frame::Complete {
                        head_len,
                        body: Body::Chunked { data_len: decoded },
                        total_len: lf + 1,
                    });
                }
                if !field_line(&input[pos..lf - 1]) {
                    return Some(Frame::Refused(refuse(400, "malformed trailer field")));
                }
                state.phase = Phase::Trailer {
                    head_len,
                    start,
                    pos: lf + 1,
                    scanned: lf + 1,
                    decoded,
                };
            }
            _ => return None,
        }
    }
}

/// Why a line is refused by [`line_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineError {
    /// A LF without its CR (or an empty line where one is not allowed).
    BareLf,
    /// No line end within the line's limit.
    TooLong,
}

/// The LF ending the line that starts at `pos` (no LF in
/// `input[pos..scanned]`), which must be preceded by CR: `Ok(None)` while
/// it has not arrived. The error says which rule broke, so that the same
/// bytes get the same answer whether they arrive at once or in pieces.
fn line_end(
    input: &[u8],
    pos: usize,
    scanned: usize,
    max: usize,
    state: &mut FrameState,
) -> Result<Option<usize>, LineError> {
    let from = scanned.max(pos);
    let limit = input.len().min(pos.saturating_add(max).saturating_add(2));
    if from >= limit {
        return if input.len() - pos > max {
            Err(LineError::TooLong)
        } else {
            Ok(None)
        };
    }
    match memchr(b'\n', &input[from..limit]) {
        Some(i) => {
            let lf = from + i;
            state.work += (i + 1) as u64;
            if lf == pos || input[lf - 1] != b'\r' {
                return Err(LineError::BareLf);
            }
            Ok(Some(lf))
        }
        None => {
            state.work += (limit - from) as u64;
            if input.len() - pos > max.saturating_add(1) {
                Err(LineError::TooLong)
            } else {
                Ok(None)
            }
        }
    }
}

/// `chunk-size [ chunk-ext ]` (the line without its CRLF): the size.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let size = line[..digits].iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)? as u64;
        n.checked_mul(16)?.checked_add(v)
    })?;
    chunk_ext(&line[digits..]).then_some(size)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`, ext-val a token or
/// a quoted string.
fn chunk_ext(mut s: &[u8]) -> bool {
    fn bws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> usize {
        s.iter().take_while(|&&b| is_tchar(b)).count()
    }
    loop {
        s = bws(s);
        let Some(rest) = s.strip_prefix(b";") else {
            return s.is_empty();
        };
        s = bws(rest);
        let n = token(s);
        if n == 0 {
            return false;
        }
        s = &s[n..];
        let after = bws(s);
        let Some(rest) = after.strip_prefix(b"=") else {
            continue;
        };
        s = bws(rest);
        if let Some(q) = s.strip_prefix(b"\"") {
            let mut i = 0;
            loop {
                match q.get(i) {
                    None => return false,
                    Some(b'"') => break,
                    Some(b'\\') if q.get(i + 1).is_some_and(|&c| qd_ok(c)) => i += 2,
                    Some(&c) if qd_ok(c) && c != b'\\' => i += 1,
                    Some(_) => return false,
                }
            }
            s = &q[i + 1..];
        } else {
            let n = token(s);
            if n == 0 {
                return false;
            }
            s = &s[n..];
        }
    }
}

/// A byte allowed in a quoted string (qdtext or quoted-pair's second byte).
fn qd_ok(c: u8) -> bool {
    c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80
}

/// An RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `field-name ":" OWS field-value OWS` (a trailer line without CRLF).
fn field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Decodes the chunked body of a request that [`frame`] found complete:
/// `body` is the message from the end of its head (trailers included, and
/// anything after the message is ignored). Returns the data, or the
/// refusal `frame` would have given.
pub fn decode_chunked(body: &[u8], limits: &Limits) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut total: u64 = 0;
    loop {
        let lf = match memchr(b'\n', &body[pos..body.len().min(pos + MAX_CHUNK_LINE + 2)]) {
            Some(i) if i > 0 && body[pos + i - 1] == b'\r' => pos + i,
            _ => return Err(BAD_CHUNK),
        };
        let size = chunk_size(&body[pos..lf - 1]).ok_or(BAD_CHUNK)?;
        if size == 0 {
            // The trailer section, which `frame` validated; check again.
            let mut state = FrameState {
                phase: Phase::Trailer {
                    head_len: 0,
                    start: lf + 1,
                    pos: lf + 1,
                    scanned: lf + 1,
                    decoded: total,
                },
                work: 0,
            };
            return match chunked(body, limits, &mut state) {
                Some(Frame::Complete { .. }) => Ok(out),
                Some(Frame::Refused(r)) => Err(r),
                _ => Err(refuse(400, "incomplete chunked body")),
            };
        }
        total = total
            .checked_add(size)
            .filter(|&t| t <= limits.max_body)
            .ok_or(TOO_LARGE)?;
        let start = lf + 1;
        let end = start + size as usize;
        match body.get(end..end + 2) {
            Some(b"\r\n") => {}
            Some(_) => return Err(BAD_CHUNK),
            None => return Err(refuse(400, "incomplete chunked body")),
        }
        out.extend_from_slice(&body[start..end]);
        pos = end + 2;
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

// ---------------------------------------------------------------------------
// Resumption per connection

/// Messages shorter than this are framed from scratch on every call: the
/// rescan is cheap, and the common request never touches the table.
pub const RESUME_MIN: usize = 4096;

const SHARDS: usize = 16;
/// Saved states per shard; the oldest is dropped when a shard is full (its
/// connection's next call then rescans once).
const PER_SHARD: usize = 64;

/// Bytes of the message kept with a state (its first ones, and the last
/// ones the state saw), to check that a call continues the same message.
/// Connection ids are never reused, so this is defence in depth.
const PRINT: usize = 16;

struct Saved {
    conn: u64,
    print: [u8; PRINT],
    tail: [u8; PRINT],
    /// How many bytes the state has seen.
    len: usize,
    state: FrameState,
}

static SAVED: [Mutex<Vec<Saved>>; SHARDS] = [const { Mutex::new(Vec::new()) }; SHARDS];

fn shard(conn: u64) -> &'static Mutex<Vec<Saved>> {
    &SAVED[((conn ^ (conn >> 17)) as usize) % SHARDS]
}

fn print(bytes: &[u8]) -> [u8; PRINT] {
    let mut p = [0; PRINT];
    let n = bytes.len().min(PRINT);
    p[..n].copy_from_slice(&bytes[..n]);
    p
}

/// The `PRINT` bytes that end at `len`.
fn tail(input: &[u8], len: usize) -> [u8; PRINT] {
    print(&input[len.saturating_sub(PRINT)..len])
}

/// [`frame`] for the message buffered on connection `conn`, resuming from
/// the state its previous call on the same message left (kept in a small
/// table of this library copy). Id 0 (an in-process call) and messages
/// under [`RESUME_MIN`] bytes are framed from scratch. A state is dropped
/// once its message is complete or refused; states of connections that
/// closed mid-message are dropped oldest-first when the table is full.
pub fn frame_conn(conn: u64, input: &[u8], limits: &Limits) -> Frame {
    let mut state = FrameState::default();
    if conn == 0 || input.len() < RESUME_MIN {
        return frame(input, limits, &mut state);
    }
    let p = print(input);
    {
        let mut saved = shard(conn).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = saved.iter().position(|s| s.conn == conn) {
            // `remove`, not `swap_remove`: the order is the age.
            let s = saved.remove(i);
            if s.print == p && s.len <= input.len() && s.tail == tail(input, s.len) {
                state = s.state;
            }
        }
    }
    let f = frame(input, limits, &mut state);
    if let Frame::Partial { .. } = f {
        let mut saved = shard(conn).lock().unwrap_or_else(|e| e.into_inner());
        if saved.len() >= PER_SHARD {
            saved.remove(0);
        }
        saved.push(Saved {
            conn,
            print: p,
            tail: tail(input, input.len()),
            len: input.len(),
            state,
        });
    }
    f
}

#[cfg(test)]
mod tests;
