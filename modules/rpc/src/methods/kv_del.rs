//! `kv.del`: deletes `{key}`; answers whether it existed. Needs
//! `kv_write` and `kv_read` (the answer reveals what is stored).

use crate::jsonrpc::{Request, RpcError, Sink};

use super::env::{check_key, put, put_bool, Env};
use super::params::{params, KeyP};

/// Runs `kv.del`: writes whether the key existed.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let now = env.now;
    let p: KeyP<'_> = params(req)?;
    if p.meta {
        return Err(RpcError::invalid_params("kv.del takes no meta"));
    }
    check_key(&p.key, env)?;
    env.who.check_read_write(&req.method, &p.key)?;
    let existed = env.view.get(&p.key, now)?.is_some();
    if existed {
        put(env, req, &p.key, None)?;
    }
    put_bool(out, existed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::methods::testkit::with_calls;

    #[test]
    fn answers_whether_the_key_existed() {
        with_calls(|call| {
            call("kv.set", r#"["a", 1]"#);
            assert_eq!(call("kv.del", r#"{"key":"a"}"#)["result"], true);
            assert_eq!(call("kv.del", r#"{"key":"a"}"#)["result"], false);
            assert_eq!(
                call("kv.get", r#"["a"]"#)["result"],
                serde_json::Value::Null
            );
        });
    }
}
