//! `sys.auth`: logs a raw TCP connection in with `{token, user?}` and
//! answers `{"user": name}`; over HTTP and in-process it only checks the
//! token. A failed login counts toward the connection's
//! `max_auth_failures` ([`crate::access::Access::authenticate`]).

use std::borrow::Cow;

use serde::Deserialize;

use crate::access::{Who, MAX_TOKEN_BYTES};
use crate::jsonrpc::{self, code, Request, RpcError, Sink};

use super::env::Env;
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthP<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
}

/// Runs `sys.auth`: writes `{"user": name}` and, on a raw connection,
/// makes the calls after it act as that user.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: AuthP<'_> = params(req)?;
    if p.token.is_empty() || p.token.len() > MAX_TOKEN_BYTES {
        return Err(RpcError::invalid_params(format!(
            "token must be 1 to {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let core = env.core;
    // Under the connection's lock: a login evaluated in the
    // writer after its connection closed must not leave a session
    // (and a user's connection slot) behind.
    let locked = (env.conn != 0).then(|| core.conns.lock(env.conn));
    if locked.as_ref().is_some_and(|l| l.closed(env.conn)) {
        return Err(RpcError::new(
            code::AUTH_FAILED,
            "the connection has closed",
        ));
    }
    let outcome = core
        .access
        .authenticate(env.conn, env.peer, &p.token, p.user.as_deref());
    drop(locked);
    env.close |= outcome.close;
    let who = outcome.result?;
    if let Who::User(u, _) = &who {
        out.put(b"{\"user\":");
        jsonrpc::write_str(out, &u.name);
        out.put(b"}");
    }
    if env.conn != 0 {
        env.who = who;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::access::Who;
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run_as, token_hash};

    #[test]
    fn checks_the_token_and_names_the_user() {
        let users = serde_json::json!([{"name": "bot1", "token_hash": token_hash("t1")}]);
        let (core, _dir) = crate::testing::core_with(serde_json::json!({"users": users}));
        let db = open(&core);
        let mut o = Overlay::default();
        let mut auth = |p: &str| run_as(&core, &db, &mut o, 0, Who::Anonymous, &req("sys.auth", p));
        assert_eq!(
            auth(r#"["t1"]"#)["result"],
            serde_json::json!({"user": "bot1"})
        );
        let v = auth(r#"{"token":"t1","user":"bot1"}"#);
        assert_eq!(v["result"]["user"], "bot1", "{v}");
        assert_eq!(auth(r#"["t2"]"#)["error"]["code"], code::AUTH_FAILED);
        let v = auth(r#"{"token":""}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("token must be 1 to "));
    }
}
