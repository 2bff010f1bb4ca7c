//! `bus.unsubscribe`: drops `{topics}` (all when omitted) from this raw
//! TCP connection and answers the subscriptions left. With `{queue}` it
//! leaves that queue group (on `topics`, or on every pattern); without,
//! named topics drop plain subscriptions and no topics drop everything.

use crate::jsonrpc::{Request, RpcError, Sink};

use super::bus_subscribe::topics_and_queue;
use super::env::{stream_conn, Env};

/// Runs `bus.unsubscribe`: writes the subscriptions left.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let conn = stream_conn(env)?;
    let (topics, queue) = topics_and_queue(req)?;
    let bus = &env.core.bus;
    let n = match &queue {
        Some(q) => bus.unsubscribe_queue(conn, topics.as_deref(), q),
        None => bus.unsubscribe(conn, topics.as_deref()),
    };
    out.put(n.to_string().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn drops_some_or_all_patterns() {
        let (core, _dir) = crate::testing::core();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut call = |conn: u64, m: &str, p: &str| run(&core, &db, &mut o, conn, &req(m, p));
        call(7, "bus.subscribe", r#"["a", "b", "c"]"#);
        assert_eq!(call(7, "bus.unsubscribe", r#"["a"]"#)["result"], 2);
        assert_eq!(call(7, "bus.unsubscribe", "[]")["result"], 2, "none named");
        let v = call(7, "bus.unsubscribe", r#"{"topics":["b"]}"#);
        assert_eq!(v["result"], 1, "{v}");
        let v = call(0, "bus.unsubscribe", "[]");
        assert_eq!(v["error"]["code"], code::NOT_A_STREAM, "{v}");
        let all = r#"{"jsonrpc":"2.0","method":"bus.unsubscribe","id":1}"#;
        assert_eq!(
            run(&core, &db, &mut o, 7, all)["result"],
            0,
            "no params: all"
        );
        let mut call = |conn: u64, m: &str, p: &str| run(&core, &db, &mut o, conn, &req(m, p));
        call(8, "bus.subscribe", r#"["p"]"#);
        call(8, "bus.subscribe", r#"{"topics":["q", "r"],"queue":"w"}"#);
        let v = call(8, "bus.unsubscribe", r#"{"topics":["q"],"queue":"w"}"#);
        assert_eq!(v["result"], 2, "{v}");
        assert_eq!(call(8, "bus.unsubscribe", r#"{"queue":"w"}"#)["result"], 1);
        assert_eq!(core.bus.recipients("p"), [8]);
    }
}
