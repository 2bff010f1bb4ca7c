//! `consumer.info`: the config and state of `{consumer}` on `{stream}`
//! (acknowledged floor, pending, members, last delivered sequence).
//! Needs Subscribe on one of the stream's subjects.

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::{consumer_info, no_consumer, no_stream};

use super::env::Env;
use super::stream_common::{batch, check_see, consumer_key};

/// Runs `consumer.info`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let key = consumer_key(req)?;
    let who = env.who.clone();
    let (core, _) = batch(env)?;
    let st = core.streams.lock(&core.cfg);
    let stream = st.streams.get(&key.0).ok_or_else(|| no_stream(&key.0))?;
    check_see(&who, &req.method, stream)?;
    let c = st.consumers.get(&key).ok_or_else(|| no_consumer(&key))?;
    out.put(consumer_info(c).to_string().as_bytes());
    Ok(())
}
