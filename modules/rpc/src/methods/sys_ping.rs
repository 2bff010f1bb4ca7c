//! `sys.ping`: answers `"pong"`; takes no params.

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::Env;
use super::params::no_params;

/// Runs `sys.ping`: writes `"pong"`.
pub(super) fn run<S: Sink>(
    _env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    no_params(req)?;
    out.put(b"\"pong\"");
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::jsonrpc::code;
    use crate::methods::testkit::with_calls;

    #[test]
    fn pongs_and_takes_no_params() {
        with_calls(|call| {
            for p in ["[]", "{}"] {
                assert_eq!(call("sys.ping", p)["result"], "pong");
            }
            let v = call("sys.ping", r#"{"x":1}"#);
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS);
            assert_eq!(v["error"]["message"], "this method takes no params");
        });
    }
}
