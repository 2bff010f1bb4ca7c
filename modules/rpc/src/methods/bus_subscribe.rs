//! `bus.subscribe`: adds `{topics}` (or `{topic}`, or a bare array) to
//! this raw TCP connection's subscriptions, as a member of the queue
//! group `{queue}` if given, and answers its count. Each pattern needs a
//! covering `subscribe` permission.

use crate::access::Right;
use crate::bus::check_topic;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::subject::check_queue;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::env::{stream_conn, Env};
use super::params::{params, topics};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueP {
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    queue: Option<String>,
}

/// The topics and queue of `bus.subscribe` and `bus.unsubscribe`:
/// `{topics | topic, queue?}`, `[topics, queue?]`, or a bare array of
/// topics (without a queue, exactly as before queue groups).
pub(super) fn topics_and_queue(
    req: &Request<'_>,
) -> Result<(Option<Vec<String>>, Option<String>), RpcError> {
    let bad = |e: serde_json::Error| RpcError::invalid_params(format!("invalid params: {e}"));
    let (topics, queue) = match req.params.map(|p| p.get().trim_start()) {
        None => (None, None),
        Some(text) if text.starts_with('[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(bad)?;
            match items.as_slice() {
                [first, rest @ ..] if first.get().trim_start().starts_with('[') => {
                    let t: Vec<String> = serde_json::from_str(first.get()).map_err(bad)?;
                    let q = match rest {
                        [] => None,
                        [q] => serde_json::from_str::<Option<String>>(q.get()).map_err(bad)?,
                        _ => return Err(RpcError::invalid_params("too many params")),
                    };
                    (Some(t), q)
                }
                _ => (topics(req)?, None),
            }
        }
        Some(_) => {
            let p: QueueP = params(req)?;
            let t = match (p.topics, p.topic) {
                (Some(_), Some(_)) => {
                    return Err(RpcError::invalid_params(
                        "give either topics or topic, not both",
                    ))
                }
                (t, None) => t,
                (None, Some(t)) => Some(vec![t]),
            };
            (t, p.queue)
        }
    };
    if let Some(q) = &queue {
        check_queue(q)?;
    }
    Ok((topics, queue))
}

/// Runs `bus.subscribe`: writes the connection's subscription count.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let conn = stream_conn(env)?;
    let (topics, queue) = topics_and_queue(req)?;
    let Some(topics) = topics else {
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
        match &queue {
            Some(q) => core.bus.subscribe_queue(conn, &topics, q)?,
            None => core.bus.subscribe(conn, &topics)?,
        }
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
        assert_eq!(on(8, r#"{"topics":["q.*"],"queue":"w"}"#)["result"], 1);
        assert_eq!(on(9, r#"[["q.*"], "w"]"#)["result"], 1);
        assert_eq!(on(9, r#"[["q.x", "q.y"]]"#)["result"], 3);
        let v = on(9, r#"{"topic":"q.z","queue":"a b"}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        let v = on(9, r#"{"topics":["a b"]}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        let got: Vec<u64> = (0..4).flat_map(|_| core.bus.recipients("q.1")).collect();
        assert_eq!(got.iter().filter(|&&c| c == 8).count(), 2, "{got:?}");
        assert_eq!(got.iter().filter(|&&c| c == 9).count(), 2, "{got:?}");
    }
}
