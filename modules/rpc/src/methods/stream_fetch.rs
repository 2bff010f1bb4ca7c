//! `stream.fetch`: the pull form (for `POST /rpc`): up to `{batch}`
//! messages of `{consumer}` on `{stream}` available now (due
//! redeliveries first), as an array of `stream.message` params; they are
//! pending until acknowledged or ack_wait passes. Needs Subscribe as
//! `stream.consume`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::{no_consumer, no_stream};

use super::env::Env;
use super::params::params;
use super::stream_common::{batch, check_read, key};

/// Most messages one fetch returns.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchP<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Cow<'a, str>,
    #[serde(default)]
    batch: Option<usize>,
}

/// Runs `stream.fetch`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: FetchP<'_> = params(req)?;
    let key = key(&p.stream, &p.consumer)?;
    let n = p.batch.unwrap_or(1);
    if !(1..=MAX_BATCH).contains(&n) {
        return Err(RpcError::invalid_params(format!(
            "batch must be 1 to {MAX_BATCH}"
        )));
    }
    let who = env.who.clone();
    let (core, _) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let stream = st.streams.get(&key.0).ok_or_else(|| no_stream(&key.0))?;
    let c = st.consumers.get(&key).ok_or_else(|| no_consumer(&key))?;
    check_read(&who, &req.method, stream, c.cfg.filter.as_deref())?;
    let mut got = Vec::new();
    st.pump(core, &core.streams, &key, Some((&mut got, n)));
    out.put(b"[");
    for (i, m) in got.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        out.put(m.as_bytes());
    }
    out.put(b"]");
    Ok(())
}
