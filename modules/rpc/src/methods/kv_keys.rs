//! `kv.keys`: a page of the keys starting with `{prefix}` that the caller
//! may read, sorted, after `{after}` (or a sealed `{cursor}`,
//! [`crate::cursor`]). The rows examined are capped by `max_keys_scan`;
//! a call the cap stops before its page is full answers
//! `{"keys": [...], "cursor": "..."}` to go on from.

use std::borrow::Cow;

use serde::Deserialize;

use crate::access::Right;
use crate::cursor;
use crate::jsonrpc::{self, Request, RpcError, Sink};

use super::env::Env;
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysP<'a> {
    #[serde(borrow, default)]
    prefix: Cow<'a, str>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(borrow, default)]
    after: Option<Cow<'a, str>>,
    /// Where a listing stopped by `max_keys_scan` goes on (instead of
    /// `after`).
    #[serde(borrow, default)]
    cursor: Option<Cow<'a, str>>,
}

/// The page size: `asked`, or 100 (at most `max`) when not given; -32602
/// over `max`.
fn page_limit(asked: Option<usize>, max: usize) -> Result<usize, RpcError> {
    let limit = asked.unwrap_or(100.min(max));
    if limit > max {
        return Err(RpcError::invalid_params(format!(
            "limit must be at most {max}"
        )));
    }
    Ok(limit)
}

/// Runs `kv.keys`: writes the page, or `{keys, cursor}` when the scan cap
/// stopped it first.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let now = env.now;
    let p: KeysP<'_> = params(req)?;
    let limit = page_limit(p.limit, env.core.cfg.max_keys_limit)?;
    let after = match (p.after, &p.cursor) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params("give after or cursor, not both"))
        }
        (_, Some(c)) => Some(Cow::Owned(cursor::open(c)?)),
        (after, None) => after,
    };
    // Only the keys the caller may read, so a page is full of
    // them (hidden keys are skipped, not counted in the page), and
    // only where its kv_read patterns can match; the rows examined
    // are capped all the same (max_keys_scan).
    let who = &env.who;
    let visible = |k: &str| who.may(Right::KvRead, k);
    let ranges = who.read_ranges(&p.prefix);
    let (keys, stopped) = env.view.keys(
        &ranges,
        after.as_deref(),
        limit,
        env.core.cfg.max_keys_scan,
        now,
        &visible,
    )?;
    if stopped.is_some() {
        out.put(b"{\"keys\":");
    }
    out.put(b"[");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        jsonrpc::write_str(out, k);
    }
    out.put(b"]");
    if let Some(at) = stopped {
        out.put(b",\"cursor\":");
        jsonrpc::write_str(out, &cursor::seal(&at));
        out.put(b"}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Peer;
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run, run_as, token_hash, with_calls};

    #[test]
    fn the_page_size_defaults_to_100_within_the_limit() {
        assert_eq!(page_limit(None, 10_000).unwrap(), 100);
        assert_eq!(page_limit(None, 20).unwrap(), 20);
        assert_eq!(page_limit(Some(7), 20).unwrap(), 7);
        let e = page_limit(Some(21), 20).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert_eq!(e.message, "limit must be at most 20");
    }

    #[test]
    fn lists_sorted_pages_by_prefix() {
        with_calls(|call| {
            for k in ["n", "a", "new"] {
                call("kv.set", &format!(r#"["{k}", 1]"#));
            }
            let keys = |call: &mut dyn FnMut(&str, &str) -> serde_json::Value, p: &str| {
                call("kv.keys", p)["result"].clone()
            };
            assert_eq!(keys(call, "{}"), serde_json::json!(["a", "n", "new"]));
            let page = keys(call, r#"{"prefix":"n","limit":1}"#);
            assert_eq!(page, serde_json::json!(["n"]));
            let next = keys(call, r#"{"prefix":"n","limit":1,"after":"n"}"#);
            assert_eq!(next, serde_json::json!(["new"]));
            let v = call("kv.keys", r#"{"limit":100000}"#);
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        });
    }

    /// kv.keys for a user who may read few of the keys under a prefix:
    /// the scan stays inside its kv_read patterns' literal starts, is
    /// capped by max_keys_scan all the same, and a capped call returns a
    /// sealed cursor to go on from.
    #[test]
    fn kv_keys_scans_are_narrowed_and_capped() {
        let hash = token_hash("t1");
        let users = serde_json::json!([{"name": "r", "token_hash": hash,
            "permissions": {"kv_read": {"allow": ["a.*", "m.>"], "deny": ["m.secret.>"]}}}]);
        let (core, _dir) =
            crate::testing::core_with(serde_json::json!({"max_keys_scan": 20, "users": users}));
        let mut map = open(&core);
        let mut o = Overlay::default();
        let who = core
            .access
            .authenticate(0, Peer::UNKNOWN, "t1", None)
            .result
            .unwrap();
        let mut keys: Vec<String> = (0..100).map(|i| format!("b.hidden{i:03}")).collect();
        keys.extend((0..30).map(|i| format!("m.secret.k{i:02}")));
        keys.extend(["a.x".to_string(), "m.z".to_string()]);
        for k in &keys {
            let v = run(
                &core,
                &map,
                &mut o,
                0,
                &req("kv.set", &format!(r#"["{k}", 1]"#)),
            );
            assert_eq!(v["result"], true, "{v}");
        }
        map.commit(&o).unwrap();
        core.store.apply(std::mem::take(&mut o));
        let mut r = |p: &str| run_as(&core, &map, &mut o, 0, who.clone(), &req("kv.keys", p));
        // The 100 b.* rows are outside every kv_read pattern: not scanned.
        let v = r(r#"{"prefix":"a"}"#);
        assert_eq!(v["result"], serde_json::json!(["a.x"]), "{v}");
        // The 30 denied m.secret.* rows are inside m.>: the cap stops the
        // scan and says where to go on, without naming a hidden key.
        let v = r(r#"{"prefix":"m."}"#);
        let res = &v["result"];
        assert_eq!(res["keys"], serde_json::json!([]), "{v}");
        let cursor = res["cursor"].as_str().unwrap().to_string();
        assert!(!v.to_string().contains("secret"), "{v}");
        let v = r(&format!(r#"{{"prefix":"m.","cursor":"{cursor}"}}"#));
        assert_eq!(v["result"], serde_json::json!(["m.z"]), "{v}");
        // Everything the user may read, over all its ranges.
        let v = r(r#"{}"#);
        assert_eq!(v["result"]["keys"], serde_json::json!(["a.x"]), "{v}");
        let v = r(r#"{"after":"a","cursor":"00"}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        let v = r(r#"{"cursor":"00112233445566778899aabbccddeeff00112233"}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
    }
}
