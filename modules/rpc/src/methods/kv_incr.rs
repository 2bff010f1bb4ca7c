//! `kv.incr`: adds `{by}` (default 1) to the 64-bit integer at `{key}`
//! (absent: 0), keeping its expiry, and answers the new value. Needs
//! `kv_write` and `kv_read` (the answer reveals the value).

use std::borrow::Cow;

use serde::Deserialize;

use crate::entry::Entry;
use crate::jsonrpc::{code, Request, RpcError, Sink};

use super::env::{check_key, put, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default = "one")]
    by: i64,
}

fn one() -> i64 {
    1
}

/// `by` added to the stored JSON text `value`: -32010 when it is not a
/// 64-bit integer, -32011 when the sum would overflow.
fn add(value: &str, by: i64) -> Result<i64, RpcError> {
    let n = serde_json::from_str::<i64>(value)
        .map_err(|_| RpcError::new(code::NOT_AN_INTEGER, "the value is not a 64-bit integer"))?;
    n.checked_add(by).ok_or_else(overflow)
}

fn overflow() -> RpcError {
    RpcError::new(code::OVERFLOW, "the result would overflow a 64-bit integer")
}

/// Runs `kv.incr`: writes the new value.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let now = env.now;
    let p: IncrP<'_> = params(req)?;
    check_key(&p.key, env)?;
    env.who.check_read_write(&req.method, &p.key)?;
    // An absent key counts as 0; a present one keeps its expiry.
    let (n, expires_at) = match env.view.get(&p.key, now)? {
        None => (p.by, 0),
        Some(e) => (add(&e.value, p.by)?, e.expires_at),
    };
    let text = n.to_string();
    let entry = Entry {
        rev: 0,
        value: text.into_boxed_str(),
        expires_at,
    };
    put(env, req, &p.key, Some(entry.clone()))?;
    out.put(entry.value.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::testkit::with_calls;

    #[test]
    fn adds_to_64_bit_integers_only() {
        assert_eq!(add("41", 1).unwrap(), 42);
        assert_eq!(add("-5", -5).unwrap(), -10);
        for text in ["\"s\"", "1.5", "{}", "true", "18446744073709551616"] {
            assert_eq!(
                add(text, 1).unwrap_err().code,
                code::NOT_AN_INTEGER,
                "{text}"
            );
        }
        let e = add(&i64::MAX.to_string(), 1).unwrap_err();
        assert_eq!(e.code, code::OVERFLOW);
        assert_eq!(e.message, "the result would overflow a 64-bit integer");
    }

    #[test]
    fn counts_from_zero_and_keeps_the_value_an_integer() {
        with_calls(|call| {
            assert_eq!(call("kv.incr", r#"{"key":"n"}"#)["result"], 1);
            assert_eq!(call("kv.incr", r#"["n", 41]"#)["result"], 42);
            assert_eq!(call("kv.incr", r#"{"key":"n","by":-2}"#)["result"], 40);
            assert_eq!(call("kv.get", r#"["n"]"#)["result"], 40);
            assert_eq!(call("kv.incr", r#"{"key":"m","by":-3}"#)["result"], -3);
            let v = call("kv.incr", r#"{"key":"n","step":1}"#);
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        });
    }
}
