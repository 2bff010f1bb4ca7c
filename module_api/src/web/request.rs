//! One complete request, parsed: method, path (the origin path of an
//! absolute-form target), query, headers, cookies, the de-chunked body,
//! JSON and form bodies; and the `application/x-www-form-urlencoded`
//! decoding shared by queries, forms and cookies.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::DeserializeOwned;

use super::{Limits, Refusal, Response};
use crate::http::{self, framing, Parsed};

/// One complete request, parsed. Borrowed from the message bytes, except
/// a decoded chunked body and the route's parameters.
#[derive(Debug)]
pub struct Request<'a> {
    pub(super) method: &'a str,
    pub(super) target: &'a str,
    pub(super) minor_version: u8,
    pub(super) headers: Vec<(&'a str, &'a [u8])>,
    pub(super) body: Cow<'a, [u8]>,
    pub(super) params: Vec<(String, String)>,
    pub(super) len: usize,
}

impl<'a> Request<'a> {
    /// Parses one complete message (as [`super::frame`] delimited it; anything
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

    /// The value of cookie `name`, percent-decoded (as [`super::Cookie::new`]
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
    raw_pairs(input)
        .map(|(k, v)| (decode_component(k, true), decode_component(v, true)))
        .collect()
}

/// The `name=value` pairs of `a=1&b&c=`, still encoded; empty pairs
/// skipped, a pair without `=` has an empty value.
fn raw_pairs(input: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        })
}

/// Decodes a form body like [`parse_urlencoded`], but `None` when a name
/// or value is not UTF-8 once decoded.
fn parse_form(input: &[u8]) -> Option<Vec<(String, String)>> {
    raw_pairs(input)
        .map(|(k, v)| {
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
