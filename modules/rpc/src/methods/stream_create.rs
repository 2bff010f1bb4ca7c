//! `stream.create`: creates the durable stream `{name}` over `{subjects}`
//! with its limits, or accepts the same config again; -32036 for another
//! config or subjects overlapping another stream's. Needs `stream_admin`
//! on the name, and Publish and Subscribe on every subject.

use serde::Deserialize;

use crate::access::Right;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::index::{check_name, check_subject};
use crate::streams::{Discard, StreamConfig};

use super::env::Env;
use super::params::params;
use super::stream_common::batch;

/// Most subjects one stream may have.
const MAX_SUBJECTS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateP {
    name: String,
    subjects: Vec<String>,
    #[serde(default)]
    max_msgs: Option<i64>,
    #[serde(default)]
    max_bytes: Option<i64>,
    #[serde(default)]
    max_age_ms: Option<u64>,
    #[serde(default)]
    max_msg_bytes: Option<u64>,
    #[serde(default)]
    discard: Option<String>,
}

/// Runs `stream.create`: writes the stream's info.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: CreateP = params(req)?;
    check_name("stream", &p.name)?;
    if p.subjects.is_empty() || p.subjects.len() > MAX_SUBJECTS {
        return Err(RpcError::invalid_params(format!(
            "subjects must hold 1 to {MAX_SUBJECTS} subjects"
        )));
    }
    for s in &p.subjects {
        check_subject(s, true)?;
    }
    let max_value = env.core.cfg.max_value_bytes as u64;
    let limit = |name: &str, v: Option<i64>| match v {
        None => Ok(-1),
        Some(n) if n >= -1 => Ok(n),
        Some(_) => Err(RpcError::invalid_params(format!(
            "{name} must be -1 (no limit) or more"
        ))),
    };
    let cfg = StreamConfig {
        name: p.name,
        subjects: p.subjects,
        max_msgs: limit("max_msgs", p.max_msgs)?,
        max_bytes: limit("max_bytes", p.max_bytes)?,
        max_age_ms: p.max_age_ms.unwrap_or(0),
        max_msg_bytes: match p.max_msg_bytes {
            None => max_value,
            Some(n) if (1..=max_value).contains(&n) => n,
            Some(_) => {
                return Err(RpcError::invalid_params(format!(
                    "max_msg_bytes must be 1 to max_value_bytes ({max_value})"
                )))
            }
        },
        discard: match p.discard.as_deref() {
            None | Some("old") => Discard::Old,
            Some("new") => Discard::New,
            Some(d) => {
                return Err(RpcError::invalid_params(format!(
                    "discard must be \"old\" or \"new\", not {d:?}"
                )))
            }
        },
    };
    env.who.check(Right::StreamAdmin, &req.method, &cfg.name)?;
    for s in &cfg.subjects {
        env.who.check(Right::Publish, &req.method, s)?;
        env.who.check(Right::Subscribe, &req.method, s)?;
    }
    let now = env.now;
    let (core, ops) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let name = cfg.name.clone();
    if st.create(cfg, core.cfg.max_streams, now, ops)? {
        core.streams.reindex(&st);
    }
    let info = st.streams[&name].info(st.consumers_of(&name));
    out.put(info.to_string().as_bytes());
    Ok(())
}
