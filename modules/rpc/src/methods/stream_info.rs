//! `stream.info`: the config and state of the stream `{name}`. Needs
//! Subscribe on one of its subjects.

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::index::check_name;
use crate::streams::no_stream;

use super::env::Env;
use super::params::params;
use super::stream_common::{batch, check_see};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameP {
    name: String,
}

/// Runs `stream.info`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: NameP = params(req)?;
    check_name("stream", &p.name)?;
    let who = env.who.clone();
    let (core, _) = batch(env)?;
    let st = core.streams.lock(&core.cfg);
    let s = st.streams.get(&p.name).ok_or_else(|| no_stream(&p.name))?;
    check_see(&who, &req.method, s)?;
    out.put(s.info(st.consumers_of(&p.name)).to_string().as_bytes());
    Ok(())
}
