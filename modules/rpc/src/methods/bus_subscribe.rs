//! `bus.subscribe`: adds `{topics}` (or `{topic}`, or a bare array) to
//! this raw TCP connection's subscriptions and answers its count. Each
//! pattern needs a covering `subscribe` permission.

use crate::access::Right;
use crate::bus::check_topic;
use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::{stream_conn, Env};
use super::params::topics;

/// Runs `bus.subscribe`: writes the connection's subscription count.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let conn = stream_conn(env)?;
    let Some(topics) = topics(req)? else {
        return Err(RpcError::invalid_params("topics is missing"));
    };
    for t in &topics {
        check_topic(t, true)?;
        env.who.check(Right::Subscribe, &req.method, t)?;
    }
    let core = env.core;
    let locked = core.conns.lock(conn);
    // A connection that closed while this call waited in the
    // writer's queue gets nothing (nobody reads the reply).
    let n = if locked.closed(conn) {
        0
    } else {
        core.bus.subscribe(conn, &topics)?
    };
    drop(locked);
    env.subscribed = true;
    out.put(n.to_string().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn subscribes_a_raw_connection_only() {
        let (core, _dir) = crate::testing::core();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut on = |conn: u64, p: &str| run(&core, &db, &mut o, conn, &req("bus.subscribe", p));
        assert_eq!(on(7, r#"{"topics":["a.*","b.>"]}"#)["result"], 2);
        assert_eq!(on(7, r#"{"topic":"c"}"#)["result"], 3);
        assert_eq!(on(7, r#"["d"]"#)["result"], 4);
        assert_eq!(on(0, r#"["a"]"#)["error"]["code"], code::NOT_A_STREAM);
        let v = on(7, "{}");
        assert_eq!(v["error"]["message"], "topics is missing", "{v}");
        let v = on(7, r#"{"topics":["a"],"topic":"b"}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        assert_eq!(core.bus.recipients("a.x"), [7]);
    }
}
