//! Reading a call's parameters: by name (`{"key":"a"}`) or by position
//! (`["a"]`, in the order of the fields), unknown names refused. The
//! params shared by several methods live here; a method's own params
//! struct lives in its file.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{Request, RpcError};

/// The params of `req` as `T` (by name or by position); -32602 when
/// they do not fit.
pub(super) fn params<'a, T: Deserialize<'a>>(req: &Request<'a>) -> Result<T, RpcError> {
    let text = req.params.map_or("{}", RawValue::get);
    serde_json::from_str(text).map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

/// -32602 unless `req` has no params (absent, `{}` or `[]`).
pub(super) fn no_params(req: &Request<'_>) -> Result<(), RpcError> {
    match req.params.map(RawValue::get) {
        None | Some("{}") | Some("[]") => Ok(()),
        Some(_) => Err(RpcError::invalid_params("this method takes no params")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
/// `{key, meta?}`: the params of `kv.get` and `kv.del` (`meta`: for
/// `kv.get` only).
pub(super) struct KeyP<'a> {
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    #[serde(default)]
    pub meta: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsP {
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    topic: Option<String>,
}

/// `{"topics":[..]}`, `{"topic":".."}` or `[..]`; `None` when absent.
pub(super) fn topics(req: &Request<'_>) -> Result<Option<Vec<String>>, RpcError> {
    match req.params.map(RawValue::get) {
        None => Ok(None),
        Some(text) if text.starts_with('[') => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| RpcError::invalid_params(format!("invalid params: {e}"))),
        Some(_) => {
            let p: TopicsP = params(req)?;
            match (p.topics, p.topic) {
                (Some(_), Some(_)) => Err(RpcError::invalid_params(
                    "give either topics or topic, not both",
                )),
                (Some(t), None) => Ok(Some(t)),
                (None, Some(t)) => Ok(Some(vec![t])),
                (None, None) => Ok(None),
            }
        }
    }
}
