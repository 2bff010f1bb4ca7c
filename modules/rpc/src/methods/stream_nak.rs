//! `stream.nak`: gives the pending message `{seq}` of `{consumer}` on
//! `{stream}` back, to be delivered again (preferably to another member)
//! after `{delay_ms}` (default at once). `true` if it was pending. Needs
//! Subscribe as `stream.consume`.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::streams::{no_consumer, no_stream};

use super::env::{put_bool, Env};
use super::params::params;
use super::stream_common::{batch, check_read, key};

/// Longest `delay_ms` (a day).
const MAX_DELAY_MS: u64 = 86_400_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NakP<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Cow<'a, str>,
    seq: u64,
    #[serde(default)]
    delay_ms: Option<u64>,
}

/// Runs `stream.nak`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: NakP<'_> = params(req)?;
    let key = key(&p.stream, &p.consumer)?;
    let delay = p.delay_ms.unwrap_or(0);
    if delay > MAX_DELAY_MS {
        return Err(RpcError::invalid_params(format!(
            "delay_ms must be at most {MAX_DELAY_MS}"
        )));
    }
    let who = env.who.clone();
    let (core, _) = batch(env)?;
    let mut st = core.streams.lock(&core.cfg);
    let stream = st.streams.get(&key.0).ok_or_else(|| no_stream(&key.0))?;
    let c = st.consumers.get(&key).ok_or_else(|| no_consumer(&key))?;
    check_read(&who, &req.method, stream, c.cfg.filter.as_deref())?;
    let c = st.consumers.get_mut(&key).expect("found above");
    let done = match c.pending.get_mut(&p.seq) {
        Some(pending) => {
            pending.deadline = Instant::now() + Duration::from_millis(delay);
            true
        }
        None => false,
    };
    if done {
        st.touch(&key);
    }
    put_bool(out, done);
    Ok(())
}
