//! What a call runs against ([`Env`]: the data view, the caller, the
//! connection) and the checks and writes several methods share: key
//! length, expiry, a write refused at a limit, the connection that can
//! hold subscriptions.

use crate::access::{Peer, Who};
use crate::bus::Note;
use crate::core::Core;
use crate::entry::{now_ms, Entry};
use crate::jsonrpc::{code, Request, RpcError, Sink};
use crate::store::{Limit, Reader, View};

/// What a call is evaluated against.
pub struct Env<'a> {
    pub core: &'a Core,
    pub view: View<'a>,
    pub now: u64,
    /// The raw TCP connection the call came on; 0 for HTTP and in-process
    /// calls, which cannot subscribe.
    pub conn: u64,
    /// In the writer: notifications to deliver once the batch commits.
    pub later: Option<&'a mut Vec<Note>>,
    /// Set when the call added a subscription.
    pub subscribed: bool,
    /// Who the calls act as; `sys.auth` changes it for the calls after it.
    pub who: Who,
    /// The peer's address (`None` in-process), for logins.
    pub peer: Peer,
    /// Set when the connection must be closed after this reply (too many
    /// failed logins).
    pub close: bool,
}

impl<'a> Env<'a> {
    /// A call that only reads, on an event loop or a pool thread (not
    /// the writer): against the store's read view `map`, at the current
    /// time, with no notifications to hold back. `conn` 0 for HTTP and
    /// in-process calls.
    pub fn reading(core: &'a Core, map: &'a Reader<'a>, conn: u64, who: Who, peer: Peer) -> Self {
        Env {
            core,
            view: View::Read(map),
            now: now_ms(),
            conn,
            later: None,
            subscribed: false,
            who,
            peer,
            close: false,
        }
    }
}

/// -32602 unless `key` is 1 to `max_key_bytes` bytes.
pub(super) fn check_key(key: &str, env: &Env<'_>) -> Result<(), RpcError> {
    let max = env.core.cfg.max_key_bytes;
    if key.is_empty() || key.len() > max {
        return Err(RpcError::invalid_params(format!(
            "key must be 1 to {max} bytes"
        )));
    }
    Ok(())
}

/// The expiry of a write with `ttl_ms` at `now` (0: none); -32602 for a
/// ttl of 0.
pub(super) fn expiry(ttl_ms: Option<u64>, now: u64) -> Result<u64, RpcError> {
    match ttl_ms {
        None => Ok(0),
        Some(0) => Err(RpcError::invalid_params("ttl_ms must be at least 1")),
        Some(t) => Ok(now.saturating_add(t)),
    }
}

/// The error for a write that would pass a limit.
fn over(method: &str, limit: Limit) -> RpcError {
    RpcError::new(code::LIMIT, format!("{method}: {limit}"))
}

/// Sets or deletes `key` in the batch, or refuses with the limit it
/// would pass; returns the revision the change took.
pub(super) fn put(
    env: &mut Env<'_>,
    req: &Request<'_>,
    key: &str,
    row: Option<Entry>,
) -> Result<u64, RpcError> {
    // `max_total_bytes` is one limit for the whole store: a set counts
    // the stream messages as a stream append counts the keys and values
    // (a delete never grows the store, so it need not look).
    let streams = match row {
        Some(_) => env.core.streams.lock(&env.core.cfg).bytes(),
        None => 0,
    };
    env.view
        .put_counting(key, row, streams)?
        .map_err(|l| over(&req.method, l))
}

pub(super) fn put_bool<S: Sink>(out: &mut S, b: bool) {
    out.put(if b { b"true" } else { b"false" });
}

/// `{"revision":R}`: a write's reply with `meta`.
pub(super) fn put_revision<S: Sink>(out: &mut S, rev: u64) {
    out.put(b"{\"revision\":");
    out.put(rev.to_string().as_bytes());
    out.put(b"}");
}

/// The raw TCP connection the call came on; -32030 for HTTP and
/// in-process calls, which cannot hold subscriptions.
pub(super) fn stream_conn(env: &Env<'_>) -> Result<u64, RpcError> {
    match env.conn {
        0 => Err(RpcError::new(
            code::NOT_A_STREAM,
            "subscriptions need a raw TCP connection (they are pushed on it)",
        )),
        c => Ok(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_from_now() {
        assert_eq!(expiry(None, 1000).unwrap(), 0, "no ttl: never");
        assert_eq!(expiry(Some(5), 1000).unwrap(), 1005);
        assert_eq!(expiry(Some(u64::MAX), 1000).unwrap(), u64::MAX);
        let e = expiry(Some(0), 1000).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert_eq!(e.message, "ttl_ms must be at least 1");
    }
}
