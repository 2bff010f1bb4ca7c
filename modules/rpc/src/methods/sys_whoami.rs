//! `sys.whoami`: who the connection acts as, how it was authenticated
//! and what it may do ([`crate::access::Who::whoami`]).

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::Env;
use super::params::no_params;

/// Runs `sys.whoami`: writes `{user, auth, permissions}`.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    no_params(req)?;
    out.put(env.who.whoami().to_string().as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::methods::testkit::with_calls;

    #[test]
    fn an_in_process_call_is_internal() {
        with_calls(|call| {
            let v = call("sys.whoami", "[]")["result"].clone();
            assert_eq!(
                v,
                serde_json::json!({"user": null, "auth": "internal", "permissions": "all"})
            );
        });
    }
}
