//! `stream.unconsume`: detaches this connection from `{consumer}` of
//! `{stream}`; its unacknowledged messages go to the other members at
//! once. `true` if it was attached. Needs no right (it acts on the
//! caller's own attachment).

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::{put_bool, Env};
use super::stream_common::{batch, consumer_key};

/// Runs `stream.unconsume`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let key = consumer_key(req)?;
    let conn = env.conn;
    let (core, _) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let done = conn != 0 && st.detach(&core.streams, &key, conn);
    put_bool(out, done);
    Ok(())
}
