//! `kv.cas`: compare-and-set. Sets `{key}` to `{value}` (`null` deletes)
//! when its current value equals `{expected}` (`null`: the key is absent),
//! or when its current revision is `{revision}` (0: the key is absent, as
//! NATS KV `create`); exactly one of the two. Answers whether it did
//! (with `{meta: true}`: `{"revision"}` of the write, or `false`). Needs
//! `kv_write` and `kv_read` (the answer reveals whether the guess was
//! right).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::entry::Entry;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::store::{json_eq, stored_text};

use super::env::{check_key, expiry, put, put_bool, put_revision, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    /// Present (even as `null`) or absent: see [`Given`].
    #[serde(borrow, default)]
    expected: Given<'a>,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    meta: bool,
}

/// A param that may be absent, where `null` is a value (`Option` would
/// read `null` as absent).
#[derive(Default)]
struct Given<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Given<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|v| Given(Some(v)))
    }
}

/// Whether `expected` (JSON text; `null`: absent) is the current value
/// (stored JSON text, `None` when absent), compared as JSON values.
fn guessed(current: Option<&str>, expected: &str) -> bool {
    match (current, expected) {
        (None, "null") => true,
        (Some(value), expected) => expected != "null" && json_eq(value, expected),
        (None, _) => false,
    }
}

/// Runs `kv.cas`: writes whether it set (or deleted) the key.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let now = env.now;
    let p: CasP<'_> = params(req)?;
    check_key(&p.key, env)?;
    env.who.check_read_write(&req.method, &p.key)?;
    let expires_at = expiry(p.ttl_ms, now)?;
    let current = env.view.get(&p.key, now)?;
    let matches = match (p.expected.0, p.revision) {
        (Some(expected), None) => guessed(current.as_deref().map(|e| &*e.value), expected.get()),
        (None, Some(rev)) => current.as_deref().map_or(0, |e| e.rev) == rev,
        _ => {
            return Err(RpcError::invalid_params(
                "give exactly one of expected and revision",
            ))
        }
    };
    if !matches {
        put_bool(out, false);
        return Ok(());
    }
    let entry = (p.value.get() != "null").then(|| Entry {
        value: stored_text(p.value),
        expires_at,
        rev: 0,
    });
    let rev = put(env, req, &p.key, entry)?;
    if p.meta {
        put_revision(out, rev);
    } else {
        put_bool(out, true);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::code;
    use crate::methods::testkit::with_calls;

    #[test]
    fn a_guess_is_compared_as_json() {
        assert!(guessed(None, "null"), "null: absent");
        assert!(!guessed(None, "1"));
        assert!(!guessed(Some("1"), "null"), "present is not absent");
        assert!(guessed(Some("42"), "42"));
        assert!(!guessed(Some("42"), "41"));
        assert!(guessed(
            Some(r#"{"a":1,"b":[2]}"#),
            r#"{ "b": [2], "a": 1 }"#
        ));
    }

    #[test]
    fn sets_deletes_or_leaves_the_key() {
        with_calls(|call| {
            call("kv.set", r#"["n", 42]"#);
            let cas = |call: &mut dyn FnMut(&str, &str) -> serde_json::Value, p: &str| {
                call("kv.cas", p)["result"].clone()
            };
            assert_eq!(cas(call, r#"{"key":"n","expected":41,"value":0}"#), false);
            assert_eq!(call("kv.get", r#"["n"]"#)["result"], 42, "left as it was");
            assert_eq!(cas(call, r#"{"key":"n","expected":42,"value":"x"}"#), true);
            assert_eq!(call("kv.get", r#"["n"]"#)["result"], "x");
            assert_eq!(
                cas(call, r#"{"key":"new","expected":null,"value":1}"#),
                true
            );
            assert_eq!(
                cas(call, r#"{"key":"new","expected":null,"value":2}"#),
                false
            );
            assert_eq!(cas(call, r#"["new", 1, null]"#), true, "value null deletes");
            // By revision: 0 creates, the current one replaces, a stale
            // one fails.
            let by_rev = r#"{"key":"r","revision":0,"value":1,"meta":true}"#;
            let first = call("kv.cas", by_rev)["result"]["revision"]
                .as_u64()
                .unwrap();
            assert_eq!(cas(call, by_rev), false, "exists now");
            let next = format!(r#"{{"key":"r","revision":{first},"value":2,"meta":true}}"#);
            let second = call("kv.cas", &next)["result"]["revision"]
                .as_u64()
                .unwrap();
            assert!(second > first);
            assert_eq!(cas(call, &next), false, "stale");
            assert_eq!(call("kv.get", r#"["r"]"#)["result"], 2);
            for bad in [
                r#"{"key":"r","value":1}"#,
                r#"{"key":"r","expected":1,"revision":3,"value":1}"#,
                r#"{"key":"r","revision":-1,"value":1}"#,
            ] {
                let v = call("kv.cas", bad);
                assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{bad}: {v}");
            }
            assert_eq!(
                call("kv.get", r#"["new"]"#)["result"],
                serde_json::Value::Null
            );
        });
    }
}
