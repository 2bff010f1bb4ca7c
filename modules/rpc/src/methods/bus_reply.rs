//! `bus.reply`: answers a `bus.request` with `{data}` through its
//! `{reply}` subject; `true` if the requester still waited. The reply
//! subject is the capability (random, single use): no `publish` right is
//! needed.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{Request, RpcError, Sink};
use crate::store::stored_text;

use super::env::{put_bool, Env};
use super::params::params;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyP<'a> {
    #[serde(borrow)]
    reply: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Runs `bus.reply`: writes whether the answer reached a waiting requester.
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    out: &mut S,
) -> Result<(), RpcError> {
    let p: ReplyP<'_> = params(req)?;
    let core = env.core;
    let answered = if p.data.get().contains(['\n', '\r']) {
        core.inbox.answer(core, &p.reply, &stored_text(p.data))
    } else {
        core.inbox.answer(core, &p.reply, p.data.get())
    };
    if !answered {
        core.inbox.late_replies.fetch_add(1, Ordering::Relaxed);
    }
    put_bool(out, answered);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn answers_once() {
        let (core, _dir) = crate::testing::core();
        core.inbox.bind(&core);
        let db = open(&core);
        let mut o = Overlay::default();
        let reply = core
            .inbox
            .register(&*core, 5, "1", "t", 10_000, crate::inbox::Wait::Timer)
            .unwrap();
        let mut call = |p: String| run(&core, &db, &mut o, 9, &req("bus.reply", &p));
        let p = format!(r#"{{"reply":"{reply}","data":{{"x":1}}}}"#);
        assert_eq!(call(p.clone())["result"], true);
        assert_eq!(call(p)["result"], false, "the first answer wins");
        assert_eq!(call(r#"["x.y", 1]"#.into())["result"], false, "no inbox");
        let v = call(r#"{"reply":"x"}"#.into());
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
    }
}
