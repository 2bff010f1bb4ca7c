//! `stream.publish`: stores `{data}` on `{topic}` in the stream covering
//! it and answers `{stream, seq}` once durable (a JetStream PubAck);
//! live subscribers get it too, after the commit. -32034 when no stream
//! covers the topic. Needs Publish on the topic. Also [`store_covered`],
//! the hook that makes a `bus.publish` to a covered subject durable.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::Right;
use crate::bus::{self, Note};
use crate::jsonrpc::{code, Request, RpcError, Sink};
use crate::store::{stored_text, View};
use crate::streams::index::check_subject;

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

/// Appends `data` on `topic` to the stream covering it, in the writer's
/// batch: `Some((stream, seq))`, or `None` when no stream covers it (or
/// outside the writer, where nothing is stored). The caller checked the
/// topic and the Publish right.
pub(super) fn store_covered(
    env: &mut Env<'_>,
    topic: &str,
    data: &RawValue,
) -> Result<Option<(String, u64)>, RpcError> {
    let (core, now) = (env.core, env.now);
    let View::Write { overlay, .. } = &mut env.view else {
        return Ok(None);
    };
    let mut st = core.streams.lock(&core.cfg);
    let kv_bytes = core
        .store
        .totals()
        .bytes
        .saturating_add_signed(overlay.delta().1);
    let text = stored_text(data);
    st.append(&core.cfg, kv_bytes, topic, &text, now, &mut overlay.streams)
}

/// Runs `stream.publish`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: PublishP<'_> = params(req)?;
    check_subject(&p.topic, false)?;
    env.who.check(Right::Publish, &req.method, &p.topic)?;
    let Some((stream, seq)) = store_covered(env, &p.topic, p.data)? else {
        return Err(RpcError::new(
            code::NO_SUCH_STREAM,
            format!("no stream covers {:?}", p.topic),
        ));
    };
    let topic_conns = env.core.bus.recipients(&p.topic);
    if !topic_conns.is_empty() {
        let bytes = bus::message(&p.topic, &stored_text(p.data));
        let note = Note { topic_conns, bytes };
        match &mut env.later {
            Some(later) => later.push(note),
            None => {
                env.core.deliver(&note);
            }
        }
    }
    let reply = serde_json::json!({"stream": stream, "seq": seq});
    out.put(reply.to_string().as_bytes());
    Ok(())
}

/// Whether a `bus.publish` must go to the writer because a stream
/// covers its topic (for `needs_writer`).
pub(super) fn covers(req: &Request<'_>) -> bool {
    crate::streams::index::any()
        && params::<PublishP<'_>>(req).is_ok_and(|p| crate::streams::index::covered(&p.topic))
}
