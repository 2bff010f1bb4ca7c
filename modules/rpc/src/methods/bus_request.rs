//! `bus.request`: sends `{data}` on `{topic}` with a fresh reply subject
//! and answers with the responder's `data`, later: the call writes no
//! reply now ([`super::answers_later`]); [`crate::inbox`] pushes the
//! result (or -32033 after `{timeout_ms}`) when it comes. No recipient at
//! all: -32032 at once. Needs `publish` on the topic.
//!
//! Over `POST /rpc` ([`over_http`]) the pool thread waits for the answer
//! instead, at most `max_http_waiters` at once.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::Right;
use crate::access::{Peer, Who};
use crate::bus::{self, check_topic, Note};
use crate::core::Core;
use crate::inbox::{timed_out, Slot, Wait};
use crate::jsonrpc::{self, code, Request, RpcError, Sink};
use crate::store::stored_text;

use super::env::Env;
use super::params::params;
use super::table::Method;

/// The timeout when the call gives none.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestP<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Runs `bus.request` on a connection: registers it and sends it out;
/// writes nothing (the answer is pushed).
pub(super) fn run<S: Sink>(
    env: &mut Env<'_>,
    req: &Request<'_>,
    _out: &mut S,
) -> Result<(), RpcError> {
    if env.conn == 0 {
        return Err(RpcError::new(
            code::NOT_A_STREAM,
            "bus.request needs a connection to answer on (raw TCP, WebSocket or POST /rpc)",
        ));
    }
    send(env, req, None).map(|_| ())
}

/// Checks the call, registers it in the inbox (for `env.conn`, or for
/// `slot`) and delivers the request; returns its reply subject and
/// timeout.
fn send(
    env: &mut Env<'_>,
    req: &Request<'_>,
    slot: Option<Arc<Slot>>,
) -> Result<(Box<str>, u64), RpcError> {
    let p: RequestP<'_> = params(req)?;
    check_topic(&p.topic, false)?;
    env.who.check(Right::Publish, &req.method, &p.topic)?;
    let core = env.core;
    let max = core.cfg.max_request_timeout_ms;
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS.min(max));
    if timeout_ms == 0 || timeout_ms > max {
        return Err(RpcError::invalid_params(format!(
            "timeout_ms must be 1 to {max} (max_request_timeout_ms)"
        )));
    }
    let id = req
        .id
        .ok_or_else(|| RpcError::invalid_params("bus.request needs an id"))?;
    let topic_conns = core.bus.recipients(&p.topic);
    if topic_conns.is_empty() {
        return Err(RpcError::new(
            code::NO_RESPONDERS,
            format!("no responders for {:?}", p.topic),
        ));
    }
    let reply = {
        // A connection that closed meanwhile registers nothing (its
        // close already dropped its entries).
        let locked = core.conns.lock(env.conn);
        if env.conn != 0 && locked.closed(env.conn) {
            return Err(RpcError::invalid_params("the connection closed"));
        }
        drop(locked);
        // In the writer the message goes out only if the batch commits:
        // until then no timer may answer the call (see `Wait`).
        let wait = match (slot, &env.later) {
            (Some(slot), _) => Wait::Slot(slot),
            (None, Some(_)) => Wait::AfterCommit,
            (None, None) => Wait::Timer,
        };
        core.inbox
            .register(core, env.conn, id.get(), &p.topic, timeout_ms, wait)?
    };
    let data: Cow<'_, str> = if p.data.get().contains(['\n', '\r']) {
        Cow::Owned(stored_text(p.data).into())
    } else {
        Cow::Borrowed(p.data.get())
    };
    let note = Note {
        bytes: bus::message_with_reply(&p.topic, &data, Some(&reply)),
        topic_conns,
    };
    match &mut env.later {
        Some(later) => later.push(note),
        None => {
            core.deliver(&note);
        }
    }
    Ok((reply, timeout_ms))
}

/// Answers a single `bus.request` call over `POST /rpc` on a pool thread:
/// waits (as a host wait) for the answer or the timeout. Returns the
/// reply (without a newline). `release` is called once the message is
/// out, before the wait (see [`crate::post::on_deferred`]).
pub fn over_http(
    core: &Core,
    req: &Request<'_>,
    who: Who,
    peer: Peer,
    release: &mut dyn FnMut(),
) -> Vec<u8> {
    let mut out = Vec::new();
    let fail = |out: &mut Vec<u8>, e: &RpcError| {
        if req.id.is_some() {
            jsonrpc::write_error(out, req.id, e);
        }
    };
    if let Err(e) = who.admit(&req.method, Method::BusRequest.open()) {
        fail(&mut out, &e);
        return out;
    }
    if req.id.is_none() {
        // A notification: nobody could get the answer.
        return out;
    }
    let waiters = &core.inbox.http_waiters;
    let max = core.cfg.max_http_waiters;
    if waiters.fetch_add(1, Ordering::AcqRel) >= max {
        waiters.fetch_sub(1, Ordering::AcqRel);
        log::warn!("bus.request over HTTP refused: {max} already wait (max_http_waiters)");
        let e = RpcError::new(
            code::LIMIT,
            format!(
                "too many bus.request calls waiting over HTTP: at most {max} (max_http_waiters); \
                 use a raw TCP or WebSocket connection"
            ),
        );
        fail(&mut out, &e);
        return out;
    }
    struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _leave = Leave(waiters);
    let slot = Arc::new(Slot::default());
    let sent = {
        let map = core.store.read();
        let mut env = Env::reading(core, &map, 0, who, peer);
        send(&mut env, req, Some(slot.clone()))
    };
    let (reply, timeout_ms) = match sent {
        Ok(s) => s,
        Err(e) => {
            fail(&mut out, &e);
            return out;
        }
    };
    release();
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let line = crate::host::wait(core.host, || slot.wait(deadline)).or_else(|| {
        if core.inbox.abandon(&reply) {
            None
        } else {
            // An answer took the entry just now: it is on its way.
            slot.wait(Instant::now() + Duration::from_secs(1))
        }
    });
    match line {
        Some(mut line) => {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            line
        }
        None => {
            let topic = params::<RequestP<'_>>(req).map_or(String::new(), |p| p.topic.into());
            fail(&mut out, &timed_out(&topic, timeout_ms));
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::entry::Overlay;
    use crate::jsonrpc::code;
    use crate::methods::testkit::{open, req, run};

    #[test]
    fn refusals() {
        let (core, _dir) = crate::testing::core();
        core.inbox.bind(&core);
        let db = open(&core);
        let mut o = Overlay::default();
        let mut on = |conn: u64, line: &str| run(&core, &db, &mut o, conn, line);
        let r = |p: &str| req("bus.request", p);
        let v = on(7, &r(r#"{"topic":"svc","data":1}"#));
        assert_eq!(v["error"]["code"], code::NO_RESPONDERS, "{v}");
        assert_eq!(v["error"]["message"], "no responders for \"svc\"");
        let v = on(7, &r(r#"{"topic":"a b","data":1}"#));
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        let v = on(7, &r(r#"{"topic":"s.*","data":1}"#));
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        core.bus.subscribe(8, &["svc".to_string()]).unwrap();
        for t in ["0", "60001"] {
            let v = on(
                7,
                &r(&format!(r#"{{"topic":"svc","data":1,"timeout_ms":{t}}}"#)),
            );
            assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        }
        let v = on(0, &r(r#"["svc", 1]"#));
        assert_eq!(v["error"]["code"], code::NOT_A_STREAM, "{v}");
        let batch = format!("[{}]", r(r#"["svc", 1]"#));
        let v = on(7, &batch);
        assert_eq!(v[0]["error"]["code"], code::INVALID_PARAMS, "{v}");
        assert_eq!(
            v[0]["error"]["message"],
            "bus.request cannot be part of a batch"
        );
        let note = r#"{"jsonrpc":"2.0","method":"bus.request","params":["svc",1]}"#;
        assert!(on(7, note).is_null());
        assert!(core.inbox.is_empty(), "nothing registered so far");
        // Accepted: no reply line now, one waiting entry.
        assert!(on(7, &r(r#"["svc", 1, 1000]"#)).is_null());
        assert_eq!(core.inbox.len(), 1);
    }
}
