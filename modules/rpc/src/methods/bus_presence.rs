//! `bus.presence`: how many connections could receive a message on
//! `{topic}` (a subject or a pattern): `{"subscribers":N,"queues":{..}}`,
//! plain subscribers and the members of each queue group, each
//! connection counted once per kind. A pattern walks the subscription
//! trie, at most [`MAX_SCAN`] nodes; past it the answer has
//! `"partial":true`. Needs `subscribe` on the topic.

use std::borrow::Cow;

use serde::Deserialize;

use crate::access::Right;
use crate::bus::check_topic;
use crate::jsonrpc::{self, Request, RpcError, Sink};

use super::env::Env;
use super::params::params;

/// Most trie nodes one call visits.
pub const MAX_SCAN: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceP<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
}

/// Runs `bus.presence`: writes the counts.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: PresenceP<'_> = params(req)?;
    check_topic(&p.topic, true)?;
    env.who.check(Right::Subscribe, &req.method, &p.topic)?;
    let found = env.core.bus.presence(&p.topic, MAX_SCAN);
    out.put(format!("{{\"subscribers\":{},\"queues\":{{", found.subscribers).as_bytes());
    for (i, (name, n)) in found.queues.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        jsonrpc::write_str(out, name);
        out.put(format!(":{n}").as_bytes());
    }
    out.put(b"}");
    if found.partial {
        out.put(b",\"partial\":true");
    }
    out.put(b"}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn counts_plain_and_queue_subscribers() {
        let (core, _dir) = crate::testing::core();
        core.bus.subscribe(1, &["a.*".into()]).unwrap();
        core.bus.subscribe_queue(2, &["a.b".into()], "w").unwrap();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut call = |p: &str| run(&core, &db, &mut o, 0, &req("bus.presence", p));
        assert_eq!(
            call(r#"{"topic":"a.b"}"#)["result"],
            serde_json::json!({"subscribers":1,"queues":{"w":1}})
        );
        assert_eq!(
            call(r#"["x"]"#)["result"],
            serde_json::json!({"subscribers":0,"queues":{}})
        );
        let v = call(r#"["a b"]"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
    }
}
