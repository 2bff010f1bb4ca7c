//! `kv.cas`: compare-and-set. Sets `{key}` to `{value}` (`null` deletes)
//! when its current value equals `{expected}` (`null`: the key is absent);
//! answers whether it did. Needs `kv_write` and `kv_read` (the answer
//! reveals whether the guess was right).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::entry::Entry;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::store::{json_eq, stored_text};

use super::env::{check_key, expiry, put, put_bool, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    expected: &'a RawValue,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    ttl_ms: Option<u64>,
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
    let matches = guessed(current.as_deref().map(|e| &*e.value), p.expected.get());
    if matches {
        let entry = (p.value.get() != "null").then(|| Entry {
            value: stored_text(p.value),
            expires_at,
        });
        put(env, req, &p.key, entry)?;
    }
    put_bool(out, matches);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
            assert_eq!(
                call("kv.get", r#"["new"]"#)["result"],
                serde_json::Value::Null
            );
        });
    }
}
