//! `kv.set`: sets `{key}` to the JSON `{value}` (never `null`: `kv.del`
//! removes a key), expiring after `{ttl_ms}` if given; `true` once the
//! batch holding it has committed (with `{meta: true}`: `{"revision"}`).
//! Needs `kv_write`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::Right;
use crate::entry::Entry;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::store::stored_text;

use super::env::{check_key, expiry, put, put_revision, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    ttl_ms: Option<u64>,
    #[serde(default)]
    meta: bool,
}

/// Runs `kv.set`: writes `true` (the writer acknowledges it once the
/// batch has committed).
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let now = env.now;
    let p: SetP<'_> = params(req)?;
    check_key(&p.key, env)?;
    env.who.check(Right::KvWrite, &req.method, &p.key)?;
    if p.value.get() == "null" {
        return Err(RpcError::invalid_params(
            "value must not be null (kv.del removes a key)",
        ));
    }
    let expires_at = expiry(p.ttl_ms, now)?;
    let entry = Entry {
        value: stored_text(p.value),
        expires_at,
        rev: 0,
    };
    let rev = put(env, req, &p.key, Some(entry))?;
    if p.meta {
        put_revision(out, rev);
    } else {
        out.put(b"true");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn sets_with_an_expiry_and_refuses_null() {
        let (core, _dir) = crate::testing::core();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut call = |m: &str, p: &str| run(&core, &db, &mut o, 0, &req(m, p));
        assert_eq!(
            call("kv.set", r#"{"key":"t","value":1,"ttl_ms":5}"#)["result"],
            true
        );
        assert_eq!(call("kv.get", r#"{"key":"t"}"#)["result"], 1);
        let v = call("kv.set", r#"{"key":"u","value":2,"meta":true}"#);
        assert_eq!(v["result"], serde_json::json!({"revision": 2}));
        for bad in [
            r#"{"key":"a","value":null}"#,
            r#"{"key":"a","value":1,"ttl":5}"#,
            r#"{"key":"a","value":1,"ttl_ms":0}"#,
        ] {
            let v = call("kv.set", bad);
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{bad}: {v}");
        }
        let row = o.get("t").unwrap().as_ref().unwrap();
        assert_eq!(row.expires_at, 1005, "now (1000) + ttl_ms");
        assert!(o.get("a").is_none(), "nothing written by the refusals");
    }
}
