//! `kv.watch`: watches the keys starting with `{prefix}` (`""`: every
//! key) or matching the subject `{pattern}` for this connection, which
//! then gets a `kv.event` notification for every set, delete and expiry
//! the caller may read; with `{initial: true}` first the current values
//! and `{"op":"ready"}`. Answers the watch id. Needs `kv_read` somewhere
//! under the prefix (each event is checked on its key). Evaluated in the
//! writer, so that the watch starts exactly after the writes before it.

use std::borrow::Cow;

use serde::Deserialize;

use crate::access::pattern::Pattern;
use crate::jsonrpc::{code, Request, RpcError, Sink};
use crate::watch::Filter;

use super::env::{stream_conn, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchP<'a> {
    #[serde(borrow, default)]
    prefix: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pattern: Option<Cow<'a, str>>,
    #[serde(default)]
    initial: bool,
}

/// Runs `kv.watch`: writes the new watch's id.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: WatchP<'_> = params(req)?;
    let conn = stream_conn(env)?;
    let max = env.core.cfg.max_key_bytes;
    let filter = match (p.prefix, p.pattern) {
        (Some(prefix), None) => {
            if prefix.len() > max {
                return Err(RpcError::invalid_params(format!(
                    "prefix must be at most {max} bytes"
                )));
            }
            Filter::Prefix(prefix.into_owned())
        }
        (None, Some(pattern)) => Filter::Pattern(
            Pattern::parse(&pattern)
                .map_err(|e| RpcError::invalid_params(format!("invalid pattern: {e}")))?,
        ),
        _ => {
            return Err(RpcError::invalid_params(
                "give exactly one of prefix and pattern",
            ))
        }
    };
    // Refused at once when the caller may read nothing under it; the
    // events are checked one by one (a prefix can span allowed and
    // denied keys).
    let prefix = filter.prefix();
    if env.who.read_ranges(&prefix).is_empty() {
        let shown = match &filter {
            Filter::Prefix(p) => p.as_str(),
            Filter::Pattern(p) => p.as_str(),
        };
        return Err(RpcError::new(
            code::PERMISSION_DENIED,
            format!(
                "permission denied: this connection may not {} {shown:?} (it may read no key there)",
                req.method
            ),
        ));
    }
    let from_rev = env.view.revision();
    let id = {
        // Under the connection's lock: a close either comes first (no
        // watch) or drops this one with the others.
        let locked = env.core.conns.lock(conn);
        if locked.closed(conn) {
            return Err(RpcError::new(code::NOT_A_STREAM, "the connection closed"));
        }
        env.core
            .watches
            .add(conn, filter, env.who.clone(), from_rev, p.initial)?
    };
    env.view.watch_made(id);
    out.put(id.to_string().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn makes_watches_and_refuses_bad_params() {
        let (core, _dir) = crate::testing::core();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut call = |conn: u64, p: &str| run(&core, &db, &mut o, conn, &req("kv.watch", p));
        assert_eq!(call(5, r#"{"prefix":"a."}"#)["result"], 1);
        assert_eq!(call(5, r#"{"pattern":"a.*","initial":true}"#)["result"], 2);
        assert_eq!(call(5, r#"["", null, false]"#)["result"], 3);
        let v = call(0, r#"{"prefix":"a."}"#);
        assert_eq!(v["error"]["code"], code::NOT_A_STREAM, "{v}");
        for bad in [
            "{}",
            r#"{"prefix":"a","pattern":"a"}"#,
            r#"{"pattern":"a.>.b"}"#,
            r#"{"prefix":1}"#,
            r#"{"prefix":"a","initial":"yes"}"#,
            r#"{"prefix":"a","values":true}"#,
        ] {
            let v = call(5, bad);
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{bad}: {v}");
        }
        let long = format!(r#"{{"prefix":"{}"}}"#, "k".repeat(2000));
        assert_eq!(call(5, &long)["error"]["code"], code::INVALID_PARAMS);
        assert_eq!(o.take_watches(), [1, 2, 3]);
        // The batch that made the first watch keeps its later events.
        let v = run(&core, &db, &mut o, 5, &req("kv.set", r#"["a.k", 1]"#));
        assert_eq!(v["result"], true);
        let events = o.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!((&*events[0].key, events[0].rev), ("a.k", 1));
        assert_eq!(core.watches.len(), 3);
    }
}
