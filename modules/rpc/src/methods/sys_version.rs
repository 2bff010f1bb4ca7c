//! `sys.version`: the module's name and version and the protocol version,
//! built once.

use std::sync::OnceLock;

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::Env;
use super::params::no_params;

fn version_json() -> &'static [u8] {
    static V: OnceLock<Vec<u8>> = OnceLock::new();
    V.get_or_init(|| {
        format!(
            r#"{{"module":"rpc","version":"{}","jsonrpc":"2.0"}}"#,
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes()
    })
}

/// Runs `sys.version`: writes `{module, version, jsonrpc}`.
pub(super) fn run<S: Sink>(
    _env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    no_params(req)?;
    out.put(version_json());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_module_and_the_protocol() {
        let v: serde_json::Value = serde_json::from_slice(version_json()).unwrap();
        assert_eq!(v["module"], "rpc");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["jsonrpc"], "2.0");
    }
}
