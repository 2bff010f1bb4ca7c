//! `stream.nak`: gives the pending message `{seq}` of `{consumer}` on
//! `{stream}` back, to be delivered again (preferably to another member)
//! after `{delay_ms}` (default at once). `true` if it was pending. Needs
//! Subscribe as `stream.consume`.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::{put_bool, Env};
use super::stream_common::{consumer, ConsumerParams, Opened};

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

impl ConsumerParams for NakP<'_> {
    fn names(&self) -> (&str, &str) {
        (&self.stream, &self.consumer)
    }

    fn check(&self) -> Result<(), RpcError> {
        if self.delay_ms.unwrap_or(0) > MAX_DELAY_MS {
            return Err(RpcError::invalid_params(format!(
                "delay_ms must be at most {MAX_DELAY_MS}"
            )));
        }
        Ok(())
    }
}

/// Runs `stream.nak`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let Opened { p, key, mut st, .. } = consumer::<NakP<'_>>(env, req)?;
    let delay = p.delay_ms.unwrap_or(0);
    let c = st.consumers.get_mut(&key).expect("opened");
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
