//! HTTP/1.x helpers shared by modules: request parsing (httparse, no
//! allocation), strict incremental message framing ([`framing`]: where a
//! request ends and whether it is acceptable, the one implementation every
//! HTTP reader uses), and response writing with a cached `Date`.

pub mod framing;

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use abi_stable::std_types::RVec;

/// Most headers a request may carry before it is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head borrowing from the input buffer.
#[derive(Debug)]
pub struct Request<'b, 'h> {
    /// Method, e.g. `GET`.
    pub method: &'b str,
    /// Request target as sent (path and query, still percent-encoded).
    pub target: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Headers in order.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the request head including the blank line.
    pub head_len: usize,
}

/// Why a request head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed syntax: answer 400.
    Malformed,
    /// More than [`MAX_HEADERS`] headers: answer 431.
    TooManyHeaders,
}

/// The outcome of [`parse_request`]. `Partial` is normal: wait for more.
#[derive(Debug)]
pub enum Parsed<'b, 'h> {
    /// A complete head.
    Complete(Request<'b, 'h>),
    /// The head is not complete yet.
    Partial,
}

/// Parses a request head from `input` using `headers` as scratch space.
pub fn parse_request<'b, 'h>(
    input: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<Parsed<'b, 'h>, ParseError> {
    let mut req = httparse::Request::new(headers);
    match req.parse(input) {
        Ok(httparse::Status::Complete(head_len)) => Ok(Parsed::Complete(Request {
            method: req.method.unwrap_or(""),
            target: req.path.unwrap_or(""),
            minor_version: req.version.unwrap_or(1),
            headers: req.headers,
            head_len,
        })),
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooManyHeaders),
        Err(_) => Err(ParseError::Malformed),
    }
}

/// An empty scratch array for [`parse_request`].
pub fn empty_headers<'b>() -> [httparse::Header<'b>; MAX_HEADERS] {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

impl<'b> Request<'b, '_> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether the connection stays open after this request, from the
    /// version and the `Connection` header.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection");
        let has = |tok: &str| {
            conn.is_some_and(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(tok.as_bytes()))
            })
        };
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// The path part of the target (before `?`), still percent-encoded.
    /// For an absolute-form target (`http://host/a?q`) it is the origin
    /// path, `/a`.
    pub fn path(&self) -> &'b str {
        framing::origin_path(self.target)
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&'b str> {
        framing::origin_query(self.target)
    }

    /// How the request body is framed, by the strict rules of
    /// [`framing`] (which also tells the status to refuse with: prefer
    /// [`framing::frame`] to find where a request ends).
    pub fn body_framing(&self) -> Result<BodyFraming, ParseError> {
        match framing::body_framing(self) {
            Ok(framing::Framing::Length(n)) => Ok(BodyFraming::Length(n)),
            Ok(framing::Framing::Chunked) => Ok(BodyFraming::Chunked),
            Err(_) => Err(ParseError::Malformed),
        }
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The length of a complete chunked body at the start of `body` (every
/// chunk, the last chunk and the trailer section), or `Ok(None)` while it
/// is still incomplete, by the rules of [`framing`] (no size limit). Use
/// it to find where the next pipelined request starts after a
/// `Transfer-Encoding: chunked` body; a handler that sees the same body
/// grow should use [`framing::frame`], which resumes instead of rescanning.
pub fn chunked_body_len(body: &[u8]) -> Result<Option<usize>, ParseError> {
    // A synthetic head so that the one framing function walks the body.
    const HEAD: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let limits = framing::Limits {
        max_head: usize::MAX,
        max_target: usize::MAX,
        max_body: u64::MAX,
        require_host: false,
    };
    let mut msg = Vec::with_capacity(HEAD.len() + body.len());
    msg.extend_from_slice(HEAD);
    msg.extend_from_slice(body);
    match framing::frame(&msg, &limits, &mut framing::FrameState::default()) {
        framing::Frame::Complete { total_len, .. } => Ok(Some(total_len - HEAD.len())),
        framing::Frame::Partial { .. } => Ok(None),
        framing::Frame::Refused(_) => Err(ParseError::Malformed),
    }
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

thread_local! {
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current `Date` header value (IMF-fixdate), formatted at most
/// once a second per thread.
pub fn push_date(out: &mut RVec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs {
            let s = httpdate::fmt_http_date(now);
            c.1.copy_from_slice(&s.as_bytes()[..29]);
            c.0 = secs;
        }
        out.extend_from_copy_slice(&c.1);
    });
}

/// Appends a decimal number without allocating.
pub fn push_u64(out: &mut RVec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_copy_slice(&buf[i..]);
}

/// Writes a status line plus the standard headers (`Server`, `Date`,
/// `Connection` when closing). Follow with more headers via
/// [`push_header`], then [`end_head`].
pub fn start_response(out: &mut RVec<u8>, status: u16, keep_alive: bool) {
    out.extend_from_copy_slice(b"HTTP/1.1 ");
    push_u64(out, status as u64);
    out.push(b' ');
    out.extend_from_copy_slice(reason(status).as_bytes());
    out.extend_from_copy_slice(b"\r\nServer: switchyard\r\nDate: ");
    push_date(out);
    out.extend_from_copy_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_copy_slice(b"Connection: close\r\n");
    }
}

/// Appends one header line.
pub fn push_header(out: &mut RVec<u8>, name: &str, value: &[u8]) {
    out.extend_from_copy_slice(name.as_bytes());
    out.extend_from_copy_slice(b": ");
    out.extend_from_copy_slice(value);
    out.extend_from_copy_slice(b"\r\n");
}

/// Appends `Content-Length` and the blank line that ends the head.
pub fn end_head(out: &mut RVec<u8>, content_length: u64) {
    out.extend_from_copy_slice(b"Content-Length: ");
    push_u64(out, content_length);
    out.extend_from_copy_slice(b"\r\n\r\n");
}

/// Writes a complete response with a body (omitted for HEAD).
pub fn write_simple(
    out: &mut RVec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) {
    start_response(out, status, keep_alive);
    push_header(out, "Content-Type", content_type.as_bytes());
    end_head(out, body.len() as u64);
    if !head_only {
        out.extend_from_copy_slice(body);
    }
}

/// The limits [`handle_simple`] frames requests with: 16 KiB of head,
/// 8 KiB of target, 1 MiB of body (the host's default
/// `max_message_size`), `Host` not required (small handlers are called by
/// hand-written clients).
pub const SIMPLE_LIMITS: framing::Limits = framing::Limits {
    max_head: 16 * 1024,
    max_target: 8 * 1024,
    max_body: 1 << 20,
    require_host: false,
};

/// The whole request/response cycle of a small HTTP handler: waits for a
/// complete request (framed by [`framing::frame_conn`] with
/// [`SIMPLE_LIMITS`]: `Content-Length` or chunked bodies), answers a
/// refused one with its status (400, 413, 414, 431, 501) and closes, calls
/// `f` with the request and its body (chunked bodies decoded), and writes
/// its `(status, content type, body)` with keep-alive handled. HEAD
/// requests get the head only. The connection closes after the answer when
/// the request asks for it or the host is draining (`conn.draining`). One
/// request per call: the host calls again for the next pipelined one.
pub fn handle_simple<F>(
    conn: &crate::ConnInfo,
    input: &[u8],
    out: &mut crate::Out,
    f: F,
) -> crate::Verdict
where
    F: FnOnce(&Request<'_, '_>, &[u8]) -> (u16, &'static str, Vec<u8>),
{
    let refuse = |out: &mut RVec<u8>, status: u16, reason: &str| {
        let body = format!("{reason}\n");
        write_simple(
            out,
            status,
            "text/plain; charset=utf-8",
            body.as_bytes(),
            false,
            false,
        );
        crate::Verdict::close(input.len())
    };
    let (head_len, body, total) = match framing::frame_conn(conn.id, input, &SIMPLE_LIMITS) {
        framing::Frame::Partial { .. } => return crate::Verdict::NEED_MORE,
        framing::Frame::Refused(r) => return refuse(out, r.status, r.reason),
        framing::Frame::Complete {
            head_len,
            body,
            total_len,
        } => (head_len, body, total_len),
    };
    let mut headers = empty_headers();
    let Ok(Parsed::Complete(req)) = parse_request(&input[..head_len], &mut headers) else {
        return refuse(out, 400, "malformed request");
    };
    let decoded;
    let body = match body {
        framing::Body::Length(_) => &input[head_len..total],
        framing::Body::Chunked { .. } => {
            match framing::decode_chunked(&input[head_len..total], &SIMPLE_LIMITS) {
                Ok(d) => {
                    decoded = d;
                    &decoded[..]
                }
                Err(r) => return refuse(out, r.status, r.reason),
            }
        }
    };
    let keep = req.keep_alive() && !conn.draining;
    let (status, content_type, body) = f(&req, body);
    write_simple(out, status, content_type, &body, keep, req.method == "HEAD");
    if keep {
        crate::Verdict::done(total)
    } else {
        crate::Verdict::close(total)
    }
}

/// Decodes `%XX` escapes in a path. Returns `None` for a bad escape or an
/// encoded NUL.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            let v = (hi * 16 + lo) as u8;
            if v == 0 {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_frames() {
        let mut h = empty_headers();
        let input = b"POST /a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let Parsed::Complete(r) = parse_request(input, &mut h).unwrap() else {
            panic!("partial")
        };
        assert_eq!(r.method, "POST");
        assert_eq!(r.path(), "/a");
        assert_eq!(r.query(), Some("x=1"));
        assert_eq!(r.body_framing(), Ok(BodyFraming::Length(3)));
        assert!(r.keep_alive());
        assert_eq!(r.head_len, input.len() - 3);
    }

    #[test]
    fn partial_and_smuggling() {
        let mut h = empty_headers();
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHo", &mut h),
            Ok(Parsed::Partial)
        ));
        let mut h = empty_headers();
        let input = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let Parsed::Complete(r) = parse_request(input, &mut h).unwrap() else {
            panic!()
        };
        assert_eq!(r.body_framing(), Err(ParseError::Malformed));
    }

    #[test]
    fn writes_response() {
        let mut out = RVec::new();
        write_simple(&mut out, 404, "text/plain", b"nope", true, false);
        let s = String::from_utf8(out.into_vec()).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 4\r\n\r\nnope"));
        assert!(s.contains("Date: "));
    }

    #[test]
    fn chunked_lengths() {
        let body = b"3\r\nabc\r\n1;ext=1\r\nd\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(chunked_body_len(body), Ok(Some(25)));
        let trailer = b"0\r\nX-T: 1\r\n\r\nnext";
        assert_eq!(chunked_body_len(trailer), Ok(Some(trailer.len() - 4)));
        for cut in [0, 1, 3, 6, 9, 19, 24] {
            assert_eq!(chunked_body_len(&body[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            chunked_body_len(b"3\r\nabcX\r\n"),
            Err(ParseError::Malformed)
        );
        assert_eq!(chunked_body_len(b"zz\r\n"), Err(ParseError::Malformed));
        assert_eq!(
            chunked_body_len(b"ffffffffffffffff\r\n"),
            Err(ParseError::Malformed)
        );
    }

    #[test]
    fn simple_handler_cycle() {
        let mut out = crate::Out::new();
        let mut conn = crate::ConnInfo::new(1, "127.0.0.1:9".parse().unwrap(), false);
        let full = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET";
        let v = handle_simple(
            &conn,
            &full[..full.len() - 4],
            &mut out,
            |_, _| unreachable!(),
        );
        assert_eq!(v, crate::Verdict::NEED_MORE);
        let v = handle_simple(&conn, full, &mut out, |req, body| {
            assert_eq!(req.path(), "/x");
            (200, "text/plain", body.to_vec())
        });
        assert_eq!(v, crate::Verdict::done(full.len() - 3));
        assert!(out.as_slice().ends_with(b"\r\n\r\nhi"));
        assert!(!String::from_utf8_lossy(&out).contains("Connection: close"));

        // A draining host: the same request is answered and closed.
        conn.draining = true;
        out.clear();
        let v = handle_simple(&conn, full, &mut out, |_, body| {
            (200, "text/plain", body.to_vec())
        });
        assert_eq!(v, crate::Verdict::close(full.len() - 3));
        assert!(String::from_utf8_lossy(&out).contains("Connection: close\r\n"));
    }

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("/%2e%2E/a").unwrap(), b"/../a");
        assert!(percent_decode("/%2").is_none());
        assert!(percent_decode("/%00").is_none());
    }
}
