//! `bus.publish`: hands `{data}` to the subscribers of `{topic}` and
//! answers how many there are. The `bus.message` line is built once for
//! all of them; in the writer it is delivered once the batch commits.
//! Needs `publish` on the topic.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::Right;
use crate::bus::{self, check_topic, Note};
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::store::stored_text;

use super::env::Env;
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishP<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Runs `bus.publish`: writes the number of recipients.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: PublishP<'_> = params(req)?;
    check_topic(&p.topic, false)?;
    env.who.check(Right::Publish, &req.method, &p.topic)?;
    let topic_conns = env.core.bus.recipients(&p.topic);
    // Built once for every recipient (nothing when there is none).
    let bytes = if topic_conns.is_empty() {
        Vec::new()
    } else if p.data.get().contains(['\n', '\r']) {
        bus::message(&p.topic, &stored_text(p.data))
    } else {
        bus::message(&p.topic, p.data.get())
    };
    let note = Note { topic_conns, bytes };
    let n = match &mut env.later {
        Some(later) => {
            let n = note.topic_conns.len();
            later.push(note);
            n
        }
        None => env.core.deliver(&note),
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
    fn counts_the_recipients_of_a_concrete_topic() {
        let (core, _dir) = crate::testing::core();
        core.bus.subscribe(7, &["a.*".to_string()]).unwrap();
        core.bus
            .subscribe(8, &["a.>".to_string(), "a.b".to_string()])
            .unwrap();
        let db = open(&core);
        let mut o = Overlay::default();
        let mut publish = |p: &str| run(&core, &db, &mut o, 0, &req("bus.publish", p));
        assert_eq!(
            publish(r#"{"topic":"a.b","data":{"x":1}}"#)["result"],
            2,
            "each once"
        );
        assert_eq!(publish(r#"["a.b.c", 1]"#)["result"], 1);
        assert_eq!(publish(r#"["z", 1]"#)["result"], 0);
        let v = publish(r#"{"topic":"a.*","data":1}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "a pattern: {v}");
    }
}
