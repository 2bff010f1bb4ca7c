//! Fuzzes the rpc module's JSON-RPC 2.0 framing (`rpc::jsonrpc::parse`,
//! one raw TCP line or HTTP body in, requests out) and the replies written
//! for what it parsed.
//!
//! The rpc crate is used as a library: it is built as `cdylib` and `rlib`,
//! and `jsonrpc` is a public module, so the fuzz crate depends on it like
//! any other crate (no `#[path]` include, which would break as soon as the
//! file imports something from its crate).
//!
//! Checked, for the module's default batch limit and a small one:
//! * `Empty` exactly when the input is all ASCII whitespace.
//! * A single call or a batch comes only from valid JSON; a batch has
//!   between 1 and `max_batch` items, as many as the input array.
//! * A call's `params` is an object or an array, its `id` a string, a
//!   number or null.
//! * Every reply written for the message (errors for all of it, or a
//!   result for a single call) is valid JSON, says `"jsonrpc":"2.0"`, and
//!   echoes the request's `id` byte for byte; notifications get none.
//!
//! Valid JSON means UTF-8 (RFC 8259) and well-formed. Known gap, not
//! asserted: `parse` judges a single request's text with serde_json, which
//! does not check the UTF-8 of strings it skips, so an object with invalid
//! UTF-8 in an ignored member is taken as a request, and a non-UTF-8
//! object or scalar is answered -32600 (invalid request) where -32700
//! (parse error) is due. Batches are checked (each item is read as
//! `RawValue`, which validates UTF-8). For non-UTF-8 input this target
//! checks only the replies.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rpc::jsonrpc::{self, code, Item, Message, RpcError};
use serde_json::value::RawValue;

/// `[modules.rpc] max_batch` by default.
const DEFAULT_MAX_BATCH: usize = 1000;

/// Well-formed JSON text in UTF-8.
fn is_json(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok() && serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}

/// One reply object: valid JSON, version 2.0, the given id echoed byte for
/// byte, an error with an integer code and a string message. Members are
/// read as raw text: an id such as `1e400` is valid JSON that a
/// `serde_json::Value` would refuse.
fn check_reply(reply: &[u8], id: Option<&RawValue>) {
    let text = std::str::from_utf8(reply).expect("a reply is UTF-8");
    let members: BTreeMap<String, &RawValue> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("reply {text:?} is not a JSON object: {e}"));
    let member = |name: &str| members.get(name).map(|v| v.get());
    assert_eq!(member("jsonrpc"), Some("\"2.0\""), "{text}");
    assert_eq!(
        member("id"),
        Some(id.map_or("null", RawValue::get)),
        "{text}"
    );
    assert!(
        members.contains_key("result") != members.contains_key("error"),
        "{text}"
    );
    if let Some(e) = member("error") {
        let e: BTreeMap<String, &RawValue> = serde_json::from_str(e).expect("error object");
        let code = e.get("code").map(|c| c.get().parse::<i64>());
        assert!(matches!(code, Some(Ok(_))), "{text}");
        let message = e
            .get("message")
            .map(|m| serde_json::from_str::<String>(m.get()));
        assert!(matches!(message, Some(Ok(_))), "{text}");
    }
}

fn check_call(item: &Item<'_>) {
    if let Item::Call(r) = item {
        if let Some(p) = r.params {
            assert!(
                matches!(p.get().as_bytes()[0], b'{' | b'['),
                "params {}",
                p.get()
            );
        }
        if let Some(id) = r.id {
            let id = id.get();
            let scalar = id == "null" || matches!(id.as_bytes()[0], b'"' | b'-' | b'0'..=b'9');
            assert!(scalar, "id {id}");
        }
    }
}

fn wants_reply(item: &Item<'_>) -> bool {
    !matches!(item, Item::Call(r) if r.id.is_none())
}

fn reply_id<'a>(item: &Item<'a>) -> Option<&'a RawValue> {
    match item {
        Item::Call(r) => r.id,
        Item::Invalid { id, .. } => *id,
    }
}

fn check(data: &[u8], max_batch: usize) {
    let msg = jsonrpc::parse(data, max_batch);
    let blank = data.iter().all(u8::is_ascii_whitespace);
    assert_eq!(matches!(msg, Message::Empty), blank);

    let mut out: Vec<u8> = Vec::new();
    let e = RpcError::new(code::STORAGE, "fuzz \"error\"\n\u{1}");
    jsonrpc::write_all_errors(&mut out, &msg, &e);
    match &msg {
        Message::Empty => assert!(out.is_empty()),
        Message::Error(err) => {
            let want_parse_error = !is_json(data);
            assert_eq!(err.code == code::PARSE_ERROR, want_parse_error, "{err:?}");
            assert!(want_parse_error || err.code == code::INVALID_REQUEST);
            check_reply(&out, None);
        }
        Message::Single(item) => {
            // The known gap (see the top): only UTF-8 input is held to it.
            let utf8 = std::str::from_utf8(data).is_ok();
            assert!(is_json(data) || !utf8, "a single request from invalid JSON");
            check_call(item);
            if wants_reply(item) {
                check_reply(&out, reply_id(item));
            } else {
                assert!(out.is_empty(), "a notification was answered");
            }
            if let Item::Call(r) = item {
                if r.id.is_some() {
                    let mut ok: Vec<u8> = Vec::new();
                    jsonrpc::begin_result(&mut ok);
                    ok.extend_from_slice(b"null");
                    jsonrpc::end_reply(&mut ok, r.id);
                    check_reply(&ok, r.id);
                }
            }
        }
        Message::Batch(items) => {
            let array: Vec<&RawValue> =
                serde_json::from_slice(data).expect("a batch from a JSON array");
            assert_eq!(array.len(), items.len());
            assert!(!items.is_empty() && items.len() <= max_batch);
            items.iter().for_each(check_call);
            let answered: Vec<_> = items.iter().filter(|i| wants_reply(i)).collect();
            if answered.is_empty() {
                assert!(out.is_empty(), "a batch of notifications was answered");
            } else {
                let replies: Vec<&RawValue> =
                    serde_json::from_slice(&out).expect("batch reply is a JSON array");
                assert_eq!(replies.len(), answered.len());
                for (reply, item) in replies.iter().zip(answered) {
                    check_reply(reply.get().as_bytes(), reply_id(item));
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, DEFAULT_MAX_BATCH);
    check(data, 2);
});
