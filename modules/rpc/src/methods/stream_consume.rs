//! `stream.consume`: attaches this connection to the durable consumer
//! `{consumer}` of `{stream}`, creating it if absent (from `{deliver}`:
//! all, new, last or `{"seq":N}`, over `{filter}` if given); what it
//! delivers arrives as `stream.message` notifications, split round robin
//! between the attached connections. The params given must match an
//! existing consumer's config (-32036). Needs Subscribe on the filter,
//! or on every subject of the stream; creating the consumer also needs
//! `stream_admin` on the stream (a durable consumer is server state that
//! only `stream_admin` may delete, so a mere subscriber may not use up
//! `max_consumers`).

use std::borrow::Cow;

use serde::Deserialize;

use crate::access::Right;
use crate::jsonrpc::{code, Request, RpcError, Sink};
use crate::streams::consumer::ConsumerConfig;
use crate::streams::index::check_subject;
use crate::streams::{consumer_info, index, no_stream, Deliver};

use super::env::{stream_conn, Env};
use super::params::params;
use super::stream_common::{batch, check_read, key};

/// Most `max_ack_pending` a consumer may have.
const MAX_ACK_PENDING: usize = 10_000;
/// Longest `ack_wait_ms` (a day).
const MAX_ACK_WAIT_MS: u64 = 86_400_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeP<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Cow<'a, str>,
    #[serde(default)]
    deliver: Option<serde_json::Value>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    ack_wait_ms: Option<u64>,
    #[serde(default)]
    max_deliver: Option<i64>,
    #[serde(default)]
    max_ack_pending: Option<usize>,
}

/// The deliver policy and its stored text.
fn deliver(v: &serde_json::Value) -> Result<(Deliver, String), RpcError> {
    let d = match v {
        serde_json::Value::String(s) if s == "all" => Deliver::All,
        serde_json::Value::String(s) if s == "new" => Deliver::New,
        serde_json::Value::String(s) if s == "last" => Deliver::Last,
        serde_json::Value::Object(o) if o.len() == 1 => {
            match o.get("seq").and_then(serde_json::Value::as_u64) {
                Some(n) if n >= 1 => Deliver::Seq(n),
                _ => return Err(bad_deliver()),
            }
        }
        _ => return Err(bad_deliver()),
    };
    let text = match d {
        Deliver::All => "\"all\"".to_string(),
        Deliver::New => "\"new\"".to_string(),
        Deliver::Last => "\"last\"".to_string(),
        Deliver::Seq(n) => format!("{{\"seq\":{n}}}"),
    };
    Ok((d, text))
}

fn bad_deliver() -> RpcError {
    RpcError::invalid_params(r#"deliver must be "all", "new", "last" or {"seq":N} (N >= 1)"#)
}

fn conflict(key: &(String, String), what: &str) -> RpcError {
    RpcError::new(
        code::STREAM_CONFLICT,
        format!(
            "consumer {:?} of stream {:?} exists with another {what}",
            key.1, key.0
        ),
    )
}

/// Runs `stream.consume`: writes the consumer's info.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: ConsumeP<'_> = params(req)?;
    let key = key(&p.stream, &p.consumer)?;
    if let Some(f) = &p.filter {
        check_subject(f, true)?;
    }
    let (policy, deliver_text) = deliver(p.deliver.as_ref().unwrap_or(&"all".into()))?;
    if p.ack_wait_ms
        .is_some_and(|w| !(1..=MAX_ACK_WAIT_MS).contains(&w))
    {
        return Err(RpcError::invalid_params(format!(
            "ack_wait_ms must be 1 to {MAX_ACK_WAIT_MS}"
        )));
    }
    if p.max_deliver.is_some_and(|m| m == 0 || m < -1) {
        return Err(RpcError::invalid_params(
            "max_deliver must be -1 (no limit) or at least 1",
        ));
    }
    if p.max_ack_pending
        .is_some_and(|m| !(1..=MAX_ACK_PENDING).contains(&m))
    {
        return Err(RpcError::invalid_params(format!(
            "max_ack_pending must be 1 to {MAX_ACK_PENDING}"
        )));
    }
    let conn = stream_conn(env)?;
    let (who, now) = (env.who.clone(), env.now);
    let (core, ops) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let stream = st
        .streams
        .get(&key.0)
        .cloned()
        .ok_or_else(|| no_stream(&key.0))?;
    if let Some(f) = &p.filter {
        if !stream.cfg.subjects.iter().any(|s| index::overlap(s, f)) {
            return Err(RpcError::invalid_params(format!(
                "filter {f:?} is outside the subjects of stream {:?}",
                key.0
            )));
        }
    }
    match st.consumers.get(&key) {
        Some(c) => {
            check_read(&who, &req.method, &stream, c.cfg.filter.as_deref())?;
            if p.filter.is_some() && p.filter != c.cfg.filter {
                return Err(conflict(&key, "filter"));
            }
            if p.deliver.is_some() && deliver_text != c.cfg.deliver {
                return Err(conflict(&key, "deliver"));
            }
            if p.ack_wait_ms.is_some_and(|w| w != c.cfg.ack_wait_ms) {
                return Err(conflict(&key, "ack_wait_ms"));
            }
            if p.max_deliver.is_some_and(|m| m != c.cfg.max_deliver) {
                return Err(conflict(&key, "max_deliver"));
            }
            if p.max_ack_pending
                .is_some_and(|m| m != c.cfg.max_ack_pending)
            {
                return Err(conflict(&key, "max_ack_pending"));
            }
        }
        None => {
            check_read(&who, &req.method, &stream, p.filter.as_deref())?;
            who.check(Right::StreamAdmin, &req.method, &key.0)?;
            let floor = st.start_floor(&stream, &policy, p.filter.as_deref());
            let cfg = ConsumerConfig {
                stream: key.0.clone(),
                name: key.1.clone(),
                filter: p.filter.clone(),
                deliver: deliver_text,
                ack_wait_ms: p.ack_wait_ms.unwrap_or(30_000),
                max_deliver: p.max_deliver.unwrap_or(-1),
                max_ack_pending: p.max_ack_pending.unwrap_or(1000),
            };
            st.create_consumer(cfg, floor, core.cfg.max_consumers, now, ops)?;
        }
    }
    let max_members = core.cfg.max_consumer_members;
    let c = st.consumers.get_mut(&key).expect("found or created above");
    if !c.members.contains(&conn) && c.members.len() >= max_members {
        return Err(RpcError::new(
            code::LIMIT,
            format!(
                "stream.consume: consumer {:?} has max_consumer_members ({max_members}) members",
                key.1
            ),
        ));
    }
    if c.attach(conn) {
        core.streams.attached_delta(true);
    }
    let info = consumer_info(c);
    st.touch(&key);
    out.put(info.to_string().as_bytes());
    Ok(())
}
