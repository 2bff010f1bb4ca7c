//! `consumer.delete`: deletes `{consumer}` of `{stream}` and its
//! position; `true` if it existed. Needs `stream_admin` on the stream.

use crate::access::Right;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::Op;

use super::env::{put_bool, Env};
use super::stream_common::{batch, consumer_key};

/// Runs `consumer.delete`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let key = consumer_key(req)?;
    env.who.check(Right::StreamAdmin, &req.method, &key.0)?;
    let (core, ops) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let done = st.drop_consumer(&core.streams, core, &key);
    if done {
        ops.push(Op::DeleteConsumer(key.0.clone(), key.1.clone()));
        log::info!("consumer {:?} of stream {:?} deleted", key.1, key.0);
    }
    put_bool(out, done);
    Ok(())
}
