//! `stream.consume`: not built yet (issue #15 fills this file in).

use crate::jsonrpc::{code, Request, RpcError, Sink};

use super::env::Env;

/// Runs `stream.consume`.
pub(super) fn run<S: Sink>(
    _env: &mut Env<'_>,
    _req: &Request<'_>,
    _out: &mut S,
) -> Result<(), RpcError> {
    Err(RpcError::new(
        code::METHOD_NOT_FOUND,
        "stream.consume is not built yet",
    ))
}
