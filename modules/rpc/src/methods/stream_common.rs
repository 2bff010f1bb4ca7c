//! What the `stream.*` and `consumer.*` methods share: the batch they
//! record their SQLite changes in (they all run in the writer), the
//! params naming a consumer, and the Subscribe checks on a stream's
//! subjects.

use std::borrow::Cow;

use serde::Deserialize;

use crate::access::{Right, Who};
use crate::core::Core;
use crate::jsonrpc::{code, RpcError};
use crate::store::View;
use crate::streams::index::check_name;
use crate::streams::{Key, Op, Stream};

use super::env::Env;

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

/// The key of a consumer, its names checked.
pub(super) fn key(stream: &str, consumer: &str) -> Result<Key, RpcError> {
    check_name("stream", stream)?;
    check_name("consumer", consumer)?;
    Ok((stream.to_string(), consumer.to_string()))
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
