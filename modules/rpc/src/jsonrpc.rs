//! JSON-RPC 2.0 framing, as a pure function: the text of one message (a
//! raw TCP line or an HTTP body) in, requests out; and the writers for
//! replies. Nothing here knows about connections, storage or threads.
//!
//! Request fields borrow from the input: the `id` and `params` stay raw JSON
//! text ([`RawValue`]), so an `id` is echoed byte for byte and a reply is
//! written without building a `serde_json::Value`.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The error codes this server answers with. The standard ones come from
/// the JSON-RPC 2.0 specification; the server-defined ones (-32000 to
/// -32099) are documented in the crate doc.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON, but not a request object (or an empty batch).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No method of that name.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method exists but its parameters are wrong.
    pub const INVALID_PARAMS: i64 = -32602;
    /// A bug in the server (a caught panic).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The module is reloading or removed: retry shortly.
    pub const UNAVAILABLE: i64 = -32001;
    /// `kv.incr` on a value that is not a 64-bit integer.
    pub const NOT_AN_INTEGER: i64 = -32010;
    /// `kv.incr` would leave the 64-bit range.
    pub const OVERFLOW: i64 = -32011;
    /// The write could not be made durable; nothing was changed.
    pub const STORAGE: i64 = -32020;
    /// `bus.subscribe` needs a raw TCP connection to push messages on.
    pub const NOT_A_STREAM: i64 = -32030;
    /// The connection has too many subscriptions.
    pub const TOO_MANY_SUBSCRIPTIONS: i64 = -32031;
    /// `bus.request`: nobody is subscribed to the subject (answered at once).
    pub const NO_RESPONDERS: i64 = -32032;
    /// `bus.request`: no answer came within its `timeout_ms`.
    pub const TIMEOUT: i64 = -32033;
    /// No stream of that name.
    pub const NO_SUCH_STREAM: i64 = -32034;
    /// No consumer of that name on the stream.
    pub const NO_SUCH_CONSUMER: i64 = -32035;
    /// A stream's subjects overlap another stream's, or a stream or
    /// consumer exists with a different config.
    pub const STREAM_CONFLICT: i64 = -32036;
    /// A line beyond the size limit; the connection is closed after it.
    pub const TOO_LARGE: i64 = -32040;
    /// A write would pass a kv limit (`max_value_bytes`, `max_keys`,
    /// `max_total_bytes`); nothing was written.
    pub const LIMIT: i64 = -32050;
    /// Authentication required: the call needs a logged-in user, or the
    /// bus is in protected mode and the peer is not loopback.
    pub const AUTH_REQUIRED: i64 = -32060;
    /// The user may not do this to that key or subject.
    pub const PERMISSION_DENIED: i64 = -32061;
    /// `sys.auth` (or a Bearer token) was wrong, or the address is paused
    /// after failures.
    pub const AUTH_FAILED: i64 = -32062;
    /// A per-user limit: `max_connections` or `requests_per_second`.
    pub const USER_LIMIT: i64 = -32063;
}

/// An error answer: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: Cow<'static, str>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<Cow<'static, str>>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_params(message: impl Into<Cow<'static, str>>) -> RpcError {
        RpcError::new(code::INVALID_PARAMS, message)
    }

    fn invalid_request(message: &'static str) -> RpcError {
        RpcError::new(code::INVALID_REQUEST, message)
    }

    fn parse_error() -> RpcError {
        RpcError::new(code::PARSE_ERROR, "parse error")
    }
}

/// Where replies are written: a `Vec<u8>` or the host's `RVec<u8>`.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn size(&self) -> usize;
    fn cut(&mut self, len: usize);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn size(&self) -> usize {
        self.len()
    }
    fn cut(&mut self, len: usize) {
        self.truncate(len);
    }
}

impl Sink for abi_stable::std_types::RVec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        // `extend_from_slice` on an RVec copies byte by byte.
        self.extend_from_copy_slice(bytes);
    }
    fn size(&self) -> usize {
        self.len()
    }
    fn cut(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// One call: a request (with an `id`) or a notification (without).
#[derive(Debug)]
pub struct Request<'a> {
    /// `None` for a notification, which gets no reply.
    pub id: Option<&'a RawValue>,
    pub method: Cow<'a, str>,
    /// An object or an array; `None` when absent or `null`.
    pub params: Option<&'a RawValue>,
}

/// One element of a message.
#[derive(Debug)]
pub enum Item<'a> {
    Call(Request<'a>),
    /// Not a valid request object: always answered, with `id` when it
    /// could be read.
    Invalid {
        id: Option<&'a RawValue>,
        error: RpcError,
    },
}

/// A parsed message.
#[derive(Debug)]
pub enum Message<'a> {
    /// A blank line: ignored.
    Empty,
    Single(Item<'a>),
    Batch(Vec<Item<'a>>),
    /// The whole message is answered with one error and `"id": null`
    /// (parse error, empty or oversized batch).
    Error(RpcError),
}

impl Message<'_> {
    /// Whether any call in the message is to a method that `pred` accepts.
    pub fn any_call(&self, pred: impl Fn(&str) -> bool) -> bool {
        let item = |i: &Item<'_>| matches!(i, Item::Call(r) if pred(&r.method));
        match self {
            Message::Single(i) => item(i),
            Message::Batch(items) => items.iter().any(item),
            Message::Empty | Message::Error(_) => false,
        }
    }
}

/// The request object as sent; every field is checked by hand afterwards
/// so each mistake gets the right error.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    /// `Some("null")` for `"id": null` (a request), `None` when absent
    /// (a notification): plain `Option` would confuse the two.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

fn first_byte(text: &[u8]) -> Option<u8> {
    text.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Parses one message (a line without its newline, or an HTTP body).
/// Batches longer than `max_batch` are refused whole.
pub fn parse(text: &[u8], max_batch: usize) -> Message<'_> {
    // JSON text is UTF-8 (RFC 8259 8.1). serde_json checks it only in the
    // strings it keeps, so a bad byte in a skipped member would pass.
    let Ok(text) = std::str::from_utf8(text) else {
        return Message::Error(RpcError::parse_error());
    };
    // Parsed as `str` from here on: from a byte slice serde_json would
    // check the UTF-8 of every kept string and raw value (`params`, most
    // of a line) a second time.
    match first_byte(text.as_bytes()) {
        None => Message::Empty,
        Some(b'{') => match serde_json::from_str::<Envelope<'_>>(text) {
            Ok(env) => Message::Single(check(env)),
            Err(_) if is_json(text) => Message::Single(Item::Invalid {
                id: None,
                error: RpcError::invalid_request("invalid request object"),
            }),
            Err(_) => Message::Error(RpcError::parse_error()),
        },
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) if items.is_empty() => {
                Message::Error(RpcError::invalid_request("empty batch"))
            }
            Ok(items) if items.len() > max_batch => Message::Error(RpcError::new(
                code::INVALID_REQUEST,
                format!("batch too large: at most {max_batch} requests"),
            )),
            Ok(items) => Message::Batch(items.into_iter().map(item).collect()),
            Err(_) => Message::Error(RpcError::parse_error()),
        },
        Some(_) if is_json(text) => Message::Single(Item::Invalid {
            id: None,
            error: RpcError::invalid_request("a request must be an object or an array"),
        }),
        Some(_) => Message::Error(RpcError::parse_error()),
    }
}

/// One element of a batch (already known to be valid JSON).
fn item(raw: &RawValue) -> Item<'_> {
    match serde_json::from_str::<Envelope<'_>>(raw.get()) {
        Ok(env) => check(env),
        Err(_) => Item::Invalid {
            id: None,
            error: RpcError::invalid_request("invalid request object"),
        },
    }
}

/// Checks the members of a request object.
fn check(env: Envelope<'_>) -> Item<'_> {
    let id = match env.id {
        Some(raw) if !matches!(raw.get().as_bytes()[0], b'"' | b'-' | b'0'..=b'9' | b'n') => {
            return Item::Invalid {
                id: None,
                error: RpcError::invalid_request("id must be a string, a number or null"),
            };
        }
        other => other,
    };
    let bad = |message: &'static str| Item::Invalid {
        id,
        error: RpcError::invalid_request(message),
    };
    if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return bad("jsonrpc must be \"2.0\"");
    }
    let method = match env.method {
        Some(raw) if raw.get().starts_with('"') => match serde_json::from_str::<&str>(raw.get()) {
            Ok(s) => Cow::Borrowed(s),
            // Escapes inside the name: decode into a String.
            Err(_) => match serde_json::from_str::<String>(raw.get()) {
                Ok(s) => Cow::Owned(s),
                Err(_) => return bad("method must be a string"),
            },
        },
        Some(_) => return bad("method must be a string"),
        None => return bad("method is missing"),
    };
    let params = match env.params {
        Some(raw) if raw.get() == "null" => None,
        Some(raw) if matches!(raw.get().as_bytes()[0], b'{' | b'[') => Some(raw),
        Some(_) => return bad("params must be an object or an array"),
        None => None,
    };
    Item::Call(Request { id, method, params })
}

const RESULT_HEAD: &[u8] = br#"{"jsonrpc":"2.0","result":"#;

/// Starts a success reply; the caller writes the result JSON, then
/// [`end_reply`].
pub fn begin_result<S: Sink + ?Sized>(out: &mut S) {
    out.put(RESULT_HEAD);
}

/// Ends a reply with its id (`null` when unknown).
pub fn end_reply<S: Sink + ?Sized>(out: &mut S, id: Option<&RawValue>) {
    out.put(b",\"id\":");
    out.put(id.map_or("null", RawValue::get).as_bytes());
    out.put(b"}");
}

/// Writes a whole error reply.
pub fn write_error<S: Sink + ?Sized>(out: &mut S, id: Option<&RawValue>, e: &RpcError) {
    out.put(br#"{"jsonrpc":"2.0","error":{"code":"#);
    out.put(e.code.to_string().as_bytes());
    out.put(br#","message":"#);
    write_str(out, &e.message);
    out.put(b"}");
    end_reply(out, id);
}

/// Writes `s` as a JSON string.
pub fn write_str<S: Sink + ?Sized>(out: &mut S, s: &str) {
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.put(&bytes[start..i]);
        if esc.is_empty() {
            out.put(format!("\\u{b:04x}").as_bytes());
        } else {
            out.put(esc);
        }
        start = i + 1;
    }
    out.put(&bytes[start..]);
    out.put(b"\"");
}

/// Writes the answers to every request of a message that has already been
/// evaluated, all with the same error (used when a batch of writes could
/// not be committed, or a reload could not hand a message over).
pub fn write_all_errors<S: Sink + ?Sized>(out: &mut S, msg: &Message<'_>, e: &RpcError) {
    let one = |out: &mut S, item: &Item<'_>| match item {
        Item::Call(r) if r.id.is_none() => false,
        Item::Call(r) => {
            write_error(out, r.id, e);
            true
        }
        Item::Invalid { id, error } => {
            write_error(out, *id, error);
            true
        }
    };
    match msg {
        Message::Empty => {}
        Message::Error(err) => write_error(out, None, err),
        Message::Single(item) => {
            one(out, item);
        }
        Message::Batch(items) => {
            write_batch(out, items, |out, item, _| one(out, item));
        }
    }
}

/// Writes the answers to a batch as one JSON array. `one` writes an
/// item's answer and says whether it wrote one (a notification gets
/// none); it is told how many bytes of the array are written so far. A
/// batch of notifications only gets nothing at all, not `[]`. Returns
/// whether anything was written.
pub fn write_batch<S: Sink + ?Sized>(
    out: &mut S,
    items: &[Item<'_>],
    mut one: impl FnMut(&mut S, &Item<'_>, usize) -> bool,
) -> bool {
    let start = out.size();
    out.put(b"[");
    let mut any = false;
    for item in items {
        let mark = out.size();
        if any {
            out.put(b",");
        }
        if one(out, item, mark - start) {
            any = true;
        } else {
            out.cut(mark);
        }
    }
    if any {
        out.put(b"]");
    } else {
        out.cut(start);
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Item<'_> {
        match parse(text.as_bytes(), 10) {
            Message::Single(i) => i,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn invalid_code(text: &str) -> i64 {
        match single(text) {
            Item::Invalid { error, .. } => error.code,
            Item::Call(r) => panic!("{text}: accepted as {r:?}"),
        }
    }

    #[test]
    fn requests_and_notifications() {
        let Item::Call(r) =
            single(r#"{"jsonrpc":"2.0","method":"kv.get","params":{"key":"a"},"id":7}"#)
        else {
            panic!()
        };
        assert_eq!(r.method, "kv.get");
        assert_eq!(r.id.unwrap().get(), "7");
        assert_eq!(r.params.unwrap().get(), r#"{"key":"a"}"#);

        let Item::Call(r) = single(r#"{"jsonrpc":"2.0","method":"sys.ping"}"#) else {
            panic!()
        };
        assert!(r.id.is_none(), "no id: a notification");

        let Item::Call(r) = single(r#"{"jsonrpc":"2.0","method":"sys.ping","id":null}"#) else {
            panic!()
        };
        assert_eq!(r.id.unwrap().get(), "null", "id null is still a request");

        let Item::Call(r) =
            single(r#"{"jsonrpc":"2.0","method":"a\u002eb","id":"x","params":null}"#)
        else {
            panic!()
        };
        assert_eq!(r.method, "a.b");
        assert!(r.params.is_none());
    }

    #[test]
    fn invalid_requests() {
        assert_eq!(
            invalid_code(r#"{"method":"sys.ping","id":1}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            invalid_code(r#"{"jsonrpc":"1.0","method":"x","id":1}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            invalid_code(r#"{"jsonrpc":"2.0","method":1,"id":1}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            invalid_code(r#"{"jsonrpc":"2.0","id":1}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            invalid_code(r#"{"jsonrpc":"2.0","method":"x","params":3,"id":1}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            invalid_code(r#"{"jsonrpc":"2.0","method":"x","id":{}}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(
            invalid_code(r#"{"jsonrpc":"2.0","method":"x","id":1,"id":2}"#),
            code::INVALID_REQUEST
        );
        assert_eq!(invalid_code("42"), code::INVALID_REQUEST);
        // The id of an otherwise invalid request is echoed.
        match single(r#"{"jsonrpc":"2.0","method":5,"id":"q"}"#) {
            Item::Invalid { id, .. } => assert_eq!(id.unwrap().get(), "\"q\""),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_errors_and_batches() {
        for bad in [
            r#"{"jsonrpc":"2.0","method""#,
            "[1,",
            "nope",
            "{\"a\":\u{1}}",
        ] {
            match parse(bad.as_bytes(), 10) {
                Message::Error(e) => assert_eq!(e.code, code::PARSE_ERROR, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // Not UTF-8, also where serde_json would skip over it (found by
        // the jsonrpc fuzz target).
        for bad in [
            &b"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"x\":\"\xff\",\"id\":1}"[..],
            b"\"\xff\"",
            b"[{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"x\":\"\xc3\"}]",
        ] {
            match parse(bad, 10) {
                Message::Error(e) => assert_eq!(e.code, code::PARSE_ERROR, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(parse(b"  \t", 10), Message::Empty));
        assert!(matches!(parse(b"[]", 10), Message::Error(e) if e.code == code::INVALID_REQUEST));
        assert!(
            matches!(parse(b"[1,2,3]", 2), Message::Error(e) if e.code == code::INVALID_REQUEST)
        );
        match parse(br#"[1,{"jsonrpc":"2.0","method":"m","id":2}]"#, 10) {
            Message::Batch(items) => {
                assert!(matches!(items[0], Item::Invalid { .. }));
                assert!(matches!(&items[1], Item::Call(r) if r.method == "m"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_replies() {
        let mut out = Vec::new();
        begin_result(&mut out);
        out.put(b"true");
        let id = RawValue::from_string("\"a\"".into()).unwrap();
        end_reply(&mut out, Some(&id));
        assert_eq!(out, br#"{"jsonrpc":"2.0","result":true,"id":"a"}"#);

        let mut out = Vec::new();
        write_error(&mut out, None, &RpcError::new(-32601, "no \"x\"\n"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"no \"x\"\n"},"id":null}"#
        );

        let mut out = Vec::new();
        write_str(&mut out, "a\u{1}b");
        assert_eq!(out, br#""a\u0001b""#);
    }

    #[test]
    fn all_errors_skip_notifications() {
        let text = br#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"b","id":1},2]"#;
        let msg = parse(text, 10);
        let mut out = Vec::new();
        write_all_errors(&mut out, &msg, &RpcError::new(code::STORAGE, "disk"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["error"]["code"], code::STORAGE);
        assert_eq!(v[1]["error"]["code"], code::INVALID_REQUEST);

        let msg = parse(br#"[{"jsonrpc":"2.0","method":"a"}]"#, 10);
        let mut out = Vec::new();
        write_all_errors(&mut out, &msg, &RpcError::new(code::STORAGE, "disk"));
        assert!(out.is_empty());
    }
}
