//! `stream.ack`: acknowledges `{seq}` (or each of `{seqs}`) for
//! `{consumer}` of `{stream}`: never delivered again. Answers how many
//! were newly acknowledged (pending, not yet acknowledged). The new
//! floor is written in the batch, so an ack is durable before its reply.
//! Needs Subscribe as `stream.consume`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::{no_consumer, no_stream, Op};

use super::env::Env;
use super::params::params;
use super::stream_common::{batch, check_read, key};

/// Most sequences one call acknowledges.
const MAX_SEQS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckP<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    seqs: Option<Vec<u64>>,
}

/// Runs `stream.ack`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: AckP<'_> = params(req)?;
    let key = key(&p.stream, &p.consumer)?;
    let seqs = match (p.seq, p.seqs) {
        (Some(s), None) => vec![s],
        (None, Some(v)) if v.len() <= MAX_SEQS => v,
        (None, Some(_)) => {
            return Err(RpcError::invalid_params(format!(
                "seqs holds at most {MAX_SEQS} sequences"
            )))
        }
        _ => return Err(RpcError::invalid_params("give either seq or seqs")),
    };
    let who = env.who.clone();
    let (core, ops) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let stream = st.streams.get(&key.0).ok_or_else(|| no_stream(&key.0))?;
    let c = st.consumers.get(&key).ok_or_else(|| no_consumer(&key))?;
    check_read(&who, &req.method, stream, c.cfg.filter.as_deref())?;
    let c = st.consumers.get_mut(&key).expect("found above");
    let n = seqs.into_iter().filter(|s| c.ack(*s)).count();
    if n > 0 {
        ops.push(Op::Acks {
            stream: key.0.clone(),
            consumer: key.1.clone(),
            floor: c.floor,
            above: c.acked.iter().copied().collect(),
        });
        // Room under max_ack_pending: deliver more after the commit.
        st.touch(&key);
    }
    out.put(n.to_string().as_bytes());
    Ok(())
}
