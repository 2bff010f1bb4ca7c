//! Writing responses: the status line and connection headers for one
//! request, and the short text bodies of error responses.

use module_api::http;
use module_api::{FileBody, RVec, SharedBody};

/// The `Allow` header: the methods this module answers.
pub const ALLOW_LINE: &[u8] = b"Allow: GET, HEAD, OPTIONS\r\n";

/// How the response to one request is framed.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// Keep the connection open afterwards.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (keep-alive must then be announced).
    pub http10: bool,
    /// HEAD: headers only, no body.
    pub head_only: bool,
}

impl Reply {
    /// Writes the status line and the standard headers.
    pub fn start(&self, out: &mut RVec<u8>, status: u16) {
        http::start_response(out, status, self.keep_alive);
        if self.keep_alive && self.http10 {
            out.extend_from_copy_slice(b"Connection: keep-alive\r\n");
        }
    }

    /// Writes a complete response whose body is `<status> <reason>\n`,
    /// with `extra` header lines (each ending in CRLF). Returns the body
    /// bytes sent.
    pub fn error(&self, out: &mut RVec<u8>, status: u16, extra: &[u8]) -> u64 {
        self.start(out, status);
        out.extend_from_copy_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
        out.extend_from_copy_slice(extra);
        let reason = http::reason(status).as_bytes();
        let len = 3 + 1 + reason.len() + 1;
        http::end_head(out, len as u64);
        if self.head_only {
            return 0;
        }
        http::push_u64(out, u64::from(status));
        out.push(b' ');
        out.extend_from_copy_slice(reason);
        out.push(b'\n');
        len as u64
    }
}

/// What was sent, for the access log and the verdict.
#[derive(Debug)]
pub struct Sent {
    /// The response status.
    pub status: u16,
    /// Body bytes, in `out` or in `file`.
    pub bytes: u64,
    /// Cached bytes for the host to send after `out` without a copy.
    pub body: SharedBody,
    /// A file range for the host to send after `out`.
    pub file: FileBody,
    /// Whether the connection may stay open.
    pub keep_alive: bool,
}

impl Sent {
    /// A response without a file body, keeping the connection as `reply`
    /// says.
    pub fn new(status: u16, bytes: u64, reply: &Reply) -> Sent {
        Sent {
            status,
            bytes,
            body: SharedBody::NONE,
            file: FileBody::NONE,
            keep_alive: reply.keep_alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: RVec<u8>) -> String {
        String::from_utf8(out.into_vec()).unwrap()
    }

    #[test]
    fn error_bodies() {
        let r = Reply {
            keep_alive: true,
            http10: false,
            head_only: false,
        };
        let mut out = RVec::new();
        assert_eq!(r.error(&mut out, 404, b""), 14);
        let s = text(out);
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.ends_with("Content-Length: 14\r\n\r\n404 Not Found\n"));
        assert!(!s.contains("Connection:"));
    }

    #[test]
    fn head_and_http10() {
        let r = Reply {
            keep_alive: true,
            http10: true,
            head_only: true,
        };
        let mut out = RVec::new();
        assert_eq!(r.error(&mut out, 405, b"Allow: GET\r\n"), 0);
        let s = text(out);
        assert!(s.contains("Connection: keep-alive\r\n"));
        assert!(s.contains("Allow: GET\r\n"));
        assert!(s.ends_with("Content-Length: 23\r\n\r\n"));
        let closing = Reply {
            keep_alive: false,
            ..r
        };
        let mut out = RVec::new();
        closing.error(&mut out, 400, b"");
        assert!(text(out).contains("Connection: close\r\n"));
    }
}
