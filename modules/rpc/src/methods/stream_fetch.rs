//! `stream.fetch`: the pull form (for `POST /rpc`): up to `{batch}`
//! messages of `{consumer}` on `{stream}` available now (due
//! redeliveries first), as an array of `stream.message` params; they are
//! pending until acknowledged or ack_wait passes. Needs Subscribe as
//! `stream.consume`.

use std::borrow::Cow;

use serde::Deserialize;

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::Env;
use super::stream_common::{consumer, ConsumerParams, Opened};

/// Most messages one fetch returns.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchP<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Cow<'a, str>,
    #[serde(default)]
    batch: Option<usize>,
}

impl ConsumerParams for FetchP<'_> {
    fn names(&self) -> (&str, &str) {
        (&self.stream, &self.consumer)
    }

    fn check(&self) -> Result<(), RpcError> {
        if !(1..=MAX_BATCH).contains(&self.batch.unwrap_or(1)) {
            return Err(RpcError::invalid_params(format!(
                "batch must be 1 to {MAX_BATCH}"
            )));
        }
        Ok(())
    }
}

/// Runs `stream.fetch`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let Opened {
        p,
        key,
        core,
        mut st,
        ..
    } = consumer::<FetchP<'_>>(env, req)?;
    let n = p.batch.unwrap_or(1);
    let mut got = Vec::new();
    st.pump(core, &core.streams, &key, Some((&mut got, n)));
    out.put(b"[");
    for (i, m) in got.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        out.put(m.as_bytes());
    }
    out.put(b"]");
    Ok(())
}
