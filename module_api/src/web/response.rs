//! Responses under construction ([`Response`]) and the cookies they set
//! ([`Cookie`]): header values cannot split a response, names must be
//! tokens.

use std::borrow::Cow;

use abi_stable::std_types::RVec;
use serde::Serialize;

use super::{encode_component, Html};
use crate::http;

/// An HTTP response under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(super) status: u16,
    pub(super) headers: Vec<(Cow<'static, str>, String)>,
    pub(super) body: Vec<u8>,
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
/// by [`super::Request::cookie`]), so it may hold any text.
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
