//! `stream.ack`: acknowledges `{seq}` (or each of `{seqs}`) for
//! `{consumer}` of `{stream}`: never delivered again. Answers how many
//! were newly acknowledged (pending, not yet acknowledged). The new
//! floor is written in the batch, so an ack is durable before its reply.
//! Needs Subscribe as `stream.consume`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::Op;

use super::env::Env;
use super::stream_common::{consumer, ConsumerParams, Opened};

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

impl ConsumerParams for AckP<'_> {
    fn names(&self) -> (&str, &str) {
        (&self.stream, &self.consumer)
    }

    fn check(&self) -> Result<(), RpcError> {
        match (&self.seq, &self.seqs) {
            (Some(_), None) => Ok(()),
            (None, Some(v)) if v.len() <= MAX_SEQS => Ok(()),
            (None, Some(_)) => Err(RpcError::invalid_params(format!(
                "seqs holds at most {MAX_SEQS} sequences"
            ))),
            _ => Err(RpcError::invalid_params("give either seq or seqs")),
        }
    }
}

/// Runs `stream.ack`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let Opened {
        p,
        key,
        ops,
        mut st,
        ..
    } = consumer::<AckP<'_>>(env, req)?;
    let seqs = p.seqs.unwrap_or_default().into_iter().chain(p.seq);
    let c = st.consumers.get_mut(&key).expect("opened");
    let n = seqs.filter(|s| c.ack(*s)).count();
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
