//! `stream.list`: the info of every stream the caller may see (Subscribe
//! on one of its subjects), by name.

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::Env;
use super::params::no_params;
use super::stream_common::{batch, may_see};

/// Runs `stream.list`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    no_params(req)?;
    let who = env.who.clone();
    let (core, _) = batch(env)?;
    let st = core.streams.lock(&core.cfg);
    let list: Vec<serde_json::Value> = st
        .streams
        .values()
        .filter(|s| may_see(&who, s))
        .map(|s| s.info(st.consumers_of(&s.cfg.name)))
        .collect();
    out.put(serde_json::Value::Array(list).to_string().as_bytes());
    Ok(())
}
