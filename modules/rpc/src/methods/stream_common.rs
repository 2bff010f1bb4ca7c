//! What the `stream.*` and `consumer.*` methods share: the batch they
//! record their SQLite changes in (they all run in the writer), the
//! params naming a consumer and the opening of the methods that work on
//! one ([`consumer`]), and the Subscribe checks on a stream's subjects.

use std::borrow::Cow;
use std::sync::MutexGuard;

use serde::Deserialize;

use crate::access::{Right, Who};
use crate::core::Core;
use crate::jsonrpc::{code, Request, RpcError};
use crate::store::View;
use crate::streams::index::check_name;
use crate::streams::{no_consumer, no_stream, Key, Op, State, Stream};

use super::env::Env;
use super::params::params;

/// The core and the batch's stream changes; -32603 outside the writer
/// (every stream method is routed there, see `table.rs`).
pub(super) fn batch<'e>(env: &'e mut Env<'_>) -> Result<(&'e Core, &'e mut Vec<Op>), RpcError> {
    let core = env.core;
    match &mut env.view {
        View::Write { overlay, .. } => Ok((core, &mut overlay.streams)),
        View::Read(_) => Err(RpcError::new(
            code::INTERNAL_ERROR,
            "stream methods run in the writer",
        )),
    }
}

/// `{stream, consumer}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConsumerP<'a> {
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    #[serde(borrow)]
    pub consumer: Cow<'a, str>,
}

/// Params that name a consumer: `{stream, consumer}` and whatever else
/// the method takes.
pub(super) trait ConsumerParams {
    /// The stream's and the consumer's names.
    fn names(&self) -> (&str, &str);
    /// -32602 unless the method's other params are in range (checked
    /// before the consumer is looked up).
    fn check(&self) -> Result<(), RpcError> {
        Ok(())
    }
}

impl ConsumerParams for ConsumerP<'_> {
    fn names(&self) -> (&str, &str) {
        (&self.stream, &self.consumer)
    }
}

/// The key of a consumer, its names checked.
pub(super) fn key(stream: &str, consumer: &str) -> Result<Key, RpcError> {
    check_name("stream", stream)?;
    check_name("consumer", consumer)?;
    Ok((stream.to_string(), consumer.to_string()))
}

/// The key `{stream, consumer}` names (the whole params), its names
/// checked.
pub(super) fn consumer_key(req: &Request<'_>) -> Result<Key, RpcError> {
    let p: ConsumerP<'_> = params(req)?;
    key(&p.stream, &p.consumer)
}

/// A consumer method's start, from [`consumer`].
pub(super) struct Opened<'e, P> {
    /// The method's params.
    pub p: P,
    pub key: Key,
    pub core: &'e Core,
    /// The batch's stream changes.
    pub ops: &'e mut Vec<Op>,
    /// The stream table, locked; it holds the consumer `key`.
    pub st: MutexGuard<'e, State>,
}

/// How `stream.ack`, `stream.nak` and `stream.fetch` start: their params
/// read and checked (the names, then [`ConsumerParams::check`]), the
/// stream table locked, the stream and the
/// consumer found (-32034, -32035), and the caller's right to read what
/// the consumer delivers checked ([`check_read`], -32061).
pub(super) fn consumer<'e, 'r, P>(
    env: &'e mut Env<'_>,
    req: &Request<'r>,
) -> Result<Opened<'e, P>, RpcError>
where
    P: Deserialize<'r> + ConsumerParams,
{
    let p: P = params(req)?;
    let (stream, consumer) = p.names();
    let key = key(stream, consumer)?;
    p.check()?;
    let who = env.who.clone();
    let (core, ops) = batch(env)?;
    let st = core.streams.lock(&core.cfg);
    let stream = st.streams.get(&key.0).ok_or_else(|| no_stream(&key.0))?;
    let c = st.consumers.get(&key).ok_or_else(|| no_consumer(&key))?;
    check_read(&who, &req.method, stream, c.cfg.filter.as_deref())?;
    Ok(Opened {
        p,
        key,
        core,
        ops,
        st,
    })
}

/// Whether `who` may see `stream` at all: Subscribe on one of its
/// subjects.
pub(super) fn may_see(who: &Who, stream: &Stream) -> bool {
    stream
        .cfg
        .subjects
        .iter()
        .any(|s| who.may(Right::Subscribe, s))
}

/// -32061 unless `who` may see `stream`.
pub(super) fn check_see(who: &Who, method: &str, stream: &Stream) -> Result<(), RpcError> {
    if may_see(who, stream) {
        return Ok(());
    }
    let first = stream.cfg.subjects.first().map_or("", String::as_str);
    who.check(Right::Subscribe, method, first)
}

/// -32061 unless `who` may read what a consumer with `filter` gets:
/// Subscribe on the filter, or on every subject of the stream.
pub(super) fn check_read(
    who: &Who,
    method: &str,
    stream: &Stream,
    filter: Option<&str>,
) -> Result<(), RpcError> {
    match filter {
        Some(f) => who.check(Right::Subscribe, method, f),
        None => stream
            .cfg
            .subjects
            .iter()
            .try_for_each(|s| who.check(Right::Subscribe, method, s)),
    }
}
