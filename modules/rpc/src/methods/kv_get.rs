//! `kv.get`: the value of `{key}`, or `null` when it is absent or
//! expired; with `{meta: true}`, `{"value", "revision", "expires_in_ms"}`
//! (or `null`). Needs `kv_read` on the key.

use crate::access::Right;
use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::{check_key, Env};
use super::params::{params, KeyP};

/// Runs `kv.get`: writes the value, or `null`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let now = env.now;
    let p: KeyP<'_> = params(req)?;
    check_key(&p.key, env)?;
    env.who.check(Right::KvRead, &req.method, &p.key)?;
    match env.view.get(&p.key, now)? {
        Some(e) if p.meta => {
            out.put(b"{\"value\":");
            out.put(e.value.as_bytes());
            out.put(b",\"revision\":");
            out.put(e.rev.to_string().as_bytes());
            out.put(b",\"expires_in_ms\":");
            match e.expires_at {
                0 => out.put(b"null"),
                at => out.put(at.saturating_sub(now).to_string().as_bytes()),
            }
            out.put(b"}");
        }
        Some(e) => out.put(e.value.as_bytes()),
        None => out.put(b"null"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::jsonrpc::code;
    use crate::methods::testkit::with_calls;

    #[test]
    fn answers_the_value_or_null() {
        with_calls(|call| {
            let get = r#"{"key":"a"}"#;
            assert_eq!(call("kv.get", get)["result"], serde_json::Value::Null);
            call("kv.set", r#"{"key":"a","value":{"x":[1,2]}}"#);
            assert_eq!(
                call("kv.get", get)["result"],
                serde_json::json!({"x":[1,2]})
            );
            assert_eq!(
                call("kv.get", r#"["a"]"#)["result"],
                serde_json::json!({"x":[1,2]})
            );
            let v = call("kv.get", r#"{"key":"a","meta":true}"#);
            assert_eq!(
                v["result"],
                serde_json::json!({"value":{"x":[1,2]},"revision":1,"expires_in_ms":null})
            );
            call("kv.set", r#"{"key":"t","value":2,"ttl_ms":500}"#);
            let v = call("kv.get", r#"["t", true]"#);
            assert_eq!(
                v["result"],
                serde_json::json!({"value":2,"revision":2,"expires_in_ms":500})
            );
            let v = call("kv.get", r#"{"key":"none","meta":true}"#);
            assert_eq!(v["result"], serde_json::Value::Null);
            for bad in [
                r#"{"kee":"a"}"#,
                r#"{"key":""}"#,
                "[]",
                r#"{"key":"a","meta":1}"#,
            ] {
                let v = call("kv.get", bad);
                assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{bad}: {v}");
            }
        });
    }
}
