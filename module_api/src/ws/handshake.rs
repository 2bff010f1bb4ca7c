//! The opening handshake (RFC 6455 section 4.2): checks a client's
//! upgrade request and writes the `101 Switching Protocols` answer, or the
//! refusal.

use abi_stable::std_types::RVec;

use super::{base64, sha1};
use crate::http::{self, Request};

/// Appended to the client's key before hashing (RFC 6455 section 1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused: answer `status` and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: &'static str,
}

impl Refusal {
    pub const fn new(status: u16, why: &'static str) -> Refusal {
        Refusal { status, why }
    }

    /// Writes the answer (plain text, `Connection: close`; a 426 says
    /// which version the server speaks).
    pub fn write(&self, out: &mut RVec<u8>) {
        http::start_response(out, self.status, false);
        if self.status == 426 {
            http::push_header(out, "Sec-WebSocket-Version", b"13");
            http::push_header(out, "Upgrade", b"websocket");
        }
        http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
        let body = format!("{}\n", self.why);
        http::end_head(out, body.len() as u64);
        out.extend_from_copy_slice(body.as_bytes());
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut text = key.to_vec();
    text.extend_from_slice(GUID.as_bytes());
    base64::encode(&sha1::sha1(&text))
}

/// Whether the comma-separated token list `value` holds `token`
/// (case-insensitive).
fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value.is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Checks an upgrade request: `GET`, HTTP/1.1 or later, no body,
/// `Upgrade: websocket`, `Connection` listing `upgrade`,
/// `Sec-WebSocket-Version: 13` (426 otherwise) and a
/// `Sec-WebSocket-Key` that is the base64 of 16 bytes (400 otherwise).
/// Returns the `Sec-WebSocket-Accept` value. The path, the `Origin` (see
/// [`origin_allowed`]) and credentials are the caller's to check.
pub fn check(req: &Request<'_, '_>) -> Result<String, Refusal> {
    if req.method != "GET" {
        return Err(Refusal::new(405, "a WebSocket upgrade is a GET request"));
    }
    if req.minor_version < 1 {
        return Err(Refusal::new(400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    let body = req
        .header("content-length")
        .is_some_and(|v| v.trim_ascii() != b"0")
        || req.header("transfer-encoding").is_some();
    if body {
        return Err(Refusal::new(400, "an upgrade request has no body"));
    }
    if !has_token(req.header("upgrade"), "websocket") {
        return Err(Refusal::new(400, "expected Upgrade: websocket"));
    }
    if !has_token(req.header("connection"), "upgrade") {
        return Err(Refusal::new(400, "expected Connection: Upgrade"));
    }
    if req.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Refusal::new(426, "this server speaks WebSocket version 13"));
    }
    let key = req
        .header("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .unwrap_or_default();
    match base64::decode(key) {
        Some(k) if k.len() == 16 => Ok(accept_key(key)),
        _ => Err(Refusal::new(
            400,
            "Sec-WebSocket-Key must be the base64 of 16 bytes",
        )),
    }
}

/// Writes the `101 Switching Protocols` answer for an accepted key.
pub fn write_accept(out: &mut RVec<u8>, accept: &str) {
    out.extend_from_copy_slice(b"HTTP/1.1 101 Switching Protocols\r\nServer: switchyard\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_copy_slice(accept.as_bytes());
    out.extend_from_copy_slice(b"\r\n\r\n");
}

/// Whether the request's `Origin` may open a WebSocket here: a request
/// without one (not from a browser) may; a browser's must name the same
/// host and port as its `Host` header (the page came from this server) or
/// be listed in `allowed` exactly (`https://app.example.com`). Browsers
/// send `Origin` on every WebSocket request and scripts cannot forge it,
/// so this stops any page the user visits from reaching the server with
/// the user's network position or cookies (cross-site WebSocket
/// hijacking).
pub fn origin_allowed(req: &Request<'_, '_>, allowed: &[String]) -> bool {
    let Some(origin) = req.header("origin") else {
        return true;
    };
    let Ok(origin) = std::str::from_utf8(origin.trim_ascii()) else {
        return false;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = req.header("host").map(<[u8]>::trim_ascii);
    match (authority, host) {
        (Some(a), Some(h)) => !a.is_empty() && a.as_bytes().eq_ignore_ascii_case(h),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<T>(head: &str, f: impl FnOnce(&Request<'_, '_>) -> T) -> T {
        let mut headers = http::empty_headers();
        match http::parse_request(head.as_bytes(), &mut headers) {
            Ok(http::Parsed::Complete(req)) => f(&req),
            other => panic!("{other:?}"),
        }
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// The example of RFC 6455 section 1.3.
    #[test]
    fn rfc_6455_example_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(with(GOOD, check).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut out = RVec::new();
        write_accept(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(text.ends_with("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
    }

    #[test]
    fn refusals() {
        let status = |head: String| with(&head, check).unwrap_err().status;
        assert_eq!(status(GOOD.replace("GET", "POST")), 405);
        assert_eq!(status(GOOD.replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(status(GOOD.replace("websocket", "h2c")), 400);
        assert_eq!(
            status(GOOD.replace("keep-alive, Upgrade", "keep-alive")),
            400
        );
        assert_eq!(status(GOOD.replace("Version: 13", "Version: 8")), 426);
        assert_eq!(
            status(GOOD.replace("Sec-WebSocket-Version: 13\r\n", "")),
            426
        );
        // 15 bytes, 17 bytes, not base64, missing.
        assert_eq!(
            status(GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j")),
            400
        );
        assert_eq!(
            status(GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ0=")),
            400
        );
        assert_eq!(
            status(GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!!!!!")),
            400
        );
        assert_eq!(status(GOOD.replace("Sec-WebSocket-Key", "X-Key")), 400);
        assert_eq!(
            status(GOOD.replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\n")),
            400
        );
        let mut out = RVec::new();
        Refusal::new(426, "v13").write(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 "), "{text}");
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"), "{text}");
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        let ok = |origin: &str| {
            let head = GOOD.replace("\r\n\r\n", &format!("\r\nOrigin: {origin}\r\n\r\n"));
            with(&head, |r| origin_allowed(r, &allowed))
        };
        assert!(
            with(GOOD, |r| origin_allowed(r, &allowed)),
            "no Origin: not a browser"
        );
        assert!(ok("http://server.example.com"));
        assert!(ok("https://SERVER.example.com"));
        assert!(ok("https://app.example.com"));
        assert!(!ok("http://evil.example.com"));
        assert!(!ok("http://server.example.com:8080"));
        assert!(!ok("null"));
        assert!(!ok("http://"));
    }
}
