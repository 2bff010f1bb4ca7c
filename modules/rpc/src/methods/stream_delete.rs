//! `stream.delete`: deletes the stream `{name}`, its messages and its
//! consumers; `true` if it existed. Needs `stream_admin` on the name.

use serde::Deserialize;

use crate::access::Right;
use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::index::check_name;

use super::env::{put_bool, Env};
use super::params::params;
use super::stream_common::batch;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameP {
    name: String,
}

/// Runs `stream.delete`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: NameP = params(req)?;
    check_name("stream", &p.name)?;
    env.who.check(Right::StreamAdmin, &req.method, &p.name)?;
    let (core, ops) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let done = st.delete(&core.streams, core, &p.name, ops);
    if done {
        core.streams.reindex(&st);
    }
    put_bool(out, done);
    Ok(())
}
