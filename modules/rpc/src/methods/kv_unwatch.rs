//! `kv.unwatch`: drops this connection's watch `{watch}`; answers whether
//! it had it.

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::{put_bool, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnwatchP {
    watch: u64,
}

/// Runs `kv.unwatch`: writes whether the watch existed.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: UnwatchP = params(req)?;
    // Connection 0 (HTTP, in-process) holds no watches.
    let gone = env.conn != 0 && env.core.watches.remove(env.conn, p.watch);
    put_bool(out, gone);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn drops_only_its_own_watch() {
        let (core, _dir) = crate::testing::core();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut call = |conn: u64, m: &str, p: &str| run(&core, &db, &mut o, conn, &req(m, p));
        assert_eq!(call(5, "kv.watch", r#"{"prefix":""}"#)["result"], 1);
        assert_eq!(call(6, "kv.unwatch", r#"{"watch":1}"#)["result"], false);
        assert_eq!(call(0, "kv.unwatch", r#"[1]"#)["result"], false);
        assert_eq!(call(5, "kv.unwatch", r#"[1]"#)["result"], true);
        assert_eq!(call(5, "kv.unwatch", r#"{"watch":1}"#)["result"], false);
        for bad in ["{}", r#"{"watch":"1"}"#, r#"{"watch":-1}"#, r#"{"id":1}"#] {
            let v = call(5, "kv.unwatch", bad);
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{bad}: {v}");
        }
    }
}
