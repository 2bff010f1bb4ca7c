//! `sys.methods`: every method name with its one-line description from
//! [`super::METHODS`], built once.

use std::sync::OnceLock;

use crate::jsonrpc::{self, Request, RpcError, Sink};

use super::env::Env;
use super::params::no_params;
use super::table::METHODS;

fn methods_json() -> &'static [u8] {
    static M: OnceLock<Vec<u8>> = OnceLock::new();
    M.get_or_init(|| {
        let mut out = b"{".to_vec();
        for (i, (name, _, doc)) in METHODS.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            jsonrpc::write_str(&mut out, name);
            out.push(b':');
            jsonrpc::write_str(&mut out, doc);
        }
        out.push(b'}');
        out
    })
}

/// Runs `sys.methods`: writes the name-to-description object.
pub(super) fn run<S: Sink>(
    _env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    no_params(req)?;
    out.put(methods_json());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_method_of_the_table() {
        let v: serde_json::Value = serde_json::from_slice(methods_json()).unwrap();
        let v = v.as_object().unwrap();
        assert_eq!(v.len(), METHODS.len());
        for (name, _, doc) in METHODS {
            assert_eq!(v[*name], *doc, "{name}");
        }
    }
}
