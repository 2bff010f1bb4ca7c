//! The methods: their names, parameters and meaning, evaluated against an
//! [`Env`] — the committed data on an event loop or a pool thread, or the
//! writer's batch overlay.
//!
//! Parameters may be given by name (`{"key":"a","value":1}`) or by
//! position (`["a",1]`, in the order listed in [`METHODS`]); unknown names
//! are refused, so a typo (`ttl` for `ttl_ms`) is an error, not a silent
//! no-op.
//!
//! The parts, leaves first (a method's file imports `env`, `params` and
//! `table`, never this file; this file dispatches to the methods):
//!
//! * `table.rs`: the method table ([`METHODS`], [`Method`]);
//! * `params.rs`: reading params, and the params several methods share;
//! * `env.rs`: what a call runs against ([`Env`]) and the shared checks
//!   (key length, expiry, limits, the subscribing connection);
//! * one file per method, `sys_*`, `kv_*` and `bus_*`, each with one
//!   `run(env, req, out)` that writes its result JSON or returns the
//!   JSON-RPC error, and its unit tests;
//! * this file: which messages go to the writer ([`needs_writer`]),
//!   evaluation of a message or a batch ([`eval_message`]), and the
//!   dispatch of one call to its method's `run`.

mod env;
mod params;
mod table;

mod bus_presence;
mod bus_publish;
mod bus_reply;
mod bus_request;
mod bus_subscribe;
mod bus_unsubscribe;
mod consumer_delete;
mod consumer_info;
mod kv_cas;
mod kv_del;
mod kv_get;
mod kv_incr;
mod kv_keys;
mod kv_set;
mod kv_unwatch;
mod kv_watch;
mod stream_ack;
mod stream_common;
mod stream_consume;
mod stream_create;
mod stream_delete;
mod stream_fetch;
mod stream_info;
mod stream_list;
mod stream_nak;
mod stream_publish;
mod stream_unconsume;
mod sys_auth;
mod sys_methods;
mod sys_ping;
mod sys_version;
mod sys_whoami;

use crate::access::Who;
use crate::jsonrpc::{self, code, Item, Message, Request, RpcError, Sink};
use crate::store::View;

use params::{params, KeyP};

pub use bus_request::over_http as request_over_http;
pub use env::Env;
pub use table::{Method, METHODS};

/// Whether a message must be evaluated by the writer: it calls a method
/// that writes, lists keys (`kv.keys` reads SQLite), or reads a key whose
/// value `view` (the cache) does not hold. Everything else is answered
/// from memory on the calling thread (so is everything from a caller
/// whose every call is refused). Pass the view the message will then
/// be evaluated with, so that nothing is evicted in between.
pub fn needs_writer(view: &View<'_>, who: &Who, msg: &Message<'_>) -> bool {
    if who.refuses_all() {
        // Every call is answered with its refusal, from memory.
        return false;
    }
    let calls = |m: Method| match msg {
        Message::Single(Item::Call(r)) => Method::lookup(&r.method) == Some(m),
        Message::Batch(items) => items
            .iter()
            .any(|i| matches!(i, Item::Call(r) if Method::lookup(&r.method) == Some(m))),
        _ => false,
    };
    // A caller that has not logged in is refused everything but the open
    // methods, from memory, so it cannot keep the writer busy; unless the
    // message logs in first (a batch with `sys.auth`), which may make the
    // calls after it valid writes.
    let refused_unless_open = matches!(who, Who::Anonymous) && !calls(Method::SysAuth);
    let item = |i: &Item<'_>| {
        let Item::Call(req) = i else {
            return false;
        };
        match Method::lookup(&req.method) {
            Some(m) if refused_unless_open && !m.open() => false,
            Some(Method::KvGet) => match params::<KeyP<'_>>(req) {
                Ok(p) => !view.cached(&p.key),
                // Answered with its error from memory.
                Err(_) => false,
            },
            Some(Method::BusPublish) => stream_publish::covers(req),
            Some(m) => m.writes() || m == Method::KvKeys,
            None => false,
        }
    };
    match msg {
        Message::Single(i) => item(i),
        Message::Batch(items) => items.iter().any(item),
        Message::Empty | Message::Error(_) => false,
    }
}

/// Whether a message is one call of a method that writes (its reply is
/// small, whatever the value: the raw transport lets such lines join a
/// run for the writer).
pub fn only_writes(msg: &Message<'_>) -> bool {
    match msg {
        Message::Single(Item::Call(req)) => Method::lookup(&req.method).is_some_and(|m| m.writes()),
        _ => false,
    }
}

/// Evaluates a message and writes its reply (without a newline). Returns
/// whether anything was written (notifications get nothing).
pub fn eval_message<S: Sink>(env: &mut Env<'_>, msg: &Message<'_>, out: &mut S) -> bool {
    match msg {
        Message::Empty => false,
        Message::Error(e) => {
            jsonrpc::write_error(out, None, e);
            true
        }
        Message::Single(item) => eval_item(env, item, out, false),
        Message::Batch(items) => {
            // A batch of reads of big values could build a huge reply:
            // past the cap, the remaining calls are answered with -32040.
            let cap = env.core.cfg.max_line_bytes.saturating_mul(8);
            let too_big = RpcError::new(code::TOO_LARGE, "reply too large: split the batch");
            jsonrpc::write_batch(out, items, |out, item, written| {
                if written <= cap {
                    return eval_item(env, item, out, true);
                }
                match item {
                    Item::Call(r) if r.id.is_some() => {
                        jsonrpc::write_error(out, r.id, &too_big);
                        true
                    }
                    Item::Call(_) => false,
                    Item::Invalid { id, error } => {
                        jsonrpc::write_error(out, *id, error);
                        true
                    }
                }
            })
        }
    }
}

/// Evaluates one item (`in_batch`: an element of a batch). A method
/// answered later ([`answers_later`]) writes nothing now: its reply is
/// pushed when it comes.
fn eval_item<S: Sink>(env: &mut Env<'_>, item: &Item<'_>, out: &mut S, in_batch: bool) -> bool {
    match item {
        Item::Invalid { id, error } => {
            jsonrpc::write_error(out, *id, error);
            true
        }
        Item::Call(req) => {
            let later = Method::lookup(&req.method).is_some_and(answers_later);
            let start = out.size();
            jsonrpc::begin_result(out);
            let result = if later && in_batch {
                // Its reply would have no place in the batch's array.
                Err(RpcError::invalid_params(format!(
                    "{} cannot be part of a batch",
                    req.method
                )))
            } else if later && req.id.is_none() {
                // Nobody could get its answer.
                Err(RpcError::invalid_params(format!(
                    "{} needs an id",
                    req.method
                )))
            } else {
                call(env, req, out)
            };
            match (result, req.id) {
                (Ok(()), Some(_)) if later => {
                    out.cut(start);
                    false
                }
                (Ok(()), Some(id)) => {
                    jsonrpc::end_reply(out, Some(id));
                    true
                }
                (Err(e), Some(id)) => {
                    out.cut(start);
                    jsonrpc::write_error(out, Some(id), &e);
                    true
                }
                (_, None) => {
                    out.cut(start);
                    false
                }
            }
        }
    }
}

/// Whether a method's reply is pushed later, by whoever answers it
/// (`bus.request`): it may come after the replies to later lines, so
/// clients match replies by id.
pub fn answers_later(m: Method) -> bool {
    m == Method::BusRequest
}

/// The call of a message that is one call answered later (`bus.request`),
/// which `POST /rpc` answers by waiting on a pool thread.
pub fn later_call<'a>(msg: &'a Message<'a>) -> Option<&'a Request<'a>> {
    match msg {
        Message::Single(Item::Call(r)) if Method::lookup(&r.method).is_some_and(answers_later) => {
            Some(r)
        }
        _ => None,
    }
}

/// Runs one call and writes its result JSON: checks that the method
/// exists and that the caller may call it at all, then hands the call to
/// its file.
fn call<S: Sink>(env: &mut Env<'_>, req: &Request<'_>, out: &mut S) -> Result<(), RpcError> {
    let Some(method) = Method::lookup(&req.method) else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {}", req.method),
        ));
    };
    env.who.admit(&req.method, method.open())?;
    match method {
        Method::SysAuth => sys_auth::run(env, req, out),
        Method::SysWhoami => sys_whoami::run(env, req, out),
        Method::SysPing => sys_ping::run(env, req, out),
        Method::SysVersion => sys_version::run(env, req, out),
        Method::SysMethods => sys_methods::run(env, req, out),
        Method::KvGet => kv_get::run(env, req, out),
        Method::KvSet => kv_set::run(env, req, out),
        Method::KvDel => kv_del::run(env, req, out),
        Method::KvIncr => kv_incr::run(env, req, out),
        Method::KvCas => kv_cas::run(env, req, out),
        Method::KvKeys => kv_keys::run(env, req, out),
        Method::BusSubscribe => bus_subscribe::run(env, req, out),
        Method::BusUnsubscribe => bus_unsubscribe::run(env, req, out),
        Method::BusPublish => bus_publish::run(env, req, out),
        Method::BusRequest => bus_request::run(env, req, out),
        Method::BusReply => bus_reply::run(env, req, out),
        Method::BusPresence => bus_presence::run(env, req, out),
        Method::KvWatch => kv_watch::run(env, req, out),
        Method::KvUnwatch => kv_unwatch::run(env, req, out),
        Method::StreamCreate => stream_create::run(env, req, out),
        Method::StreamDelete => stream_delete::run(env, req, out),
        Method::StreamInfo => stream_info::run(env, req, out),
        Method::StreamList => stream_list::run(env, req, out),
        Method::StreamPublish => stream_publish::run(env, req, out),
        Method::StreamConsume => stream_consume::run(env, req, out),
        Method::StreamUnconsume => stream_unconsume::run(env, req, out),
        Method::StreamAck => stream_ack::run(env, req, out),
        Method::StreamNak => stream_nak::run(env, req, out),
        Method::StreamFetch => stream_fetch::run(env, req, out),
        Method::ConsumerInfo => consumer_info::run(env, req, out),
        Method::ConsumerDelete => consumer_delete::run(env, req, out),
    }
}

/// What the tests of every method share: a core with its database, and
/// a line evaluated in the writer's view over the database and a batch
/// overlay, as the writer evaluates it.
#[cfg(test)]
mod testkit {
    use super::{eval_message, Env};
    use crate::access::{Peer, Who};
    use crate::core::Core;
    use crate::db::Db;
    use crate::entry::Overlay;
    use crate::jsonrpc;
    use crate::store::View;

    /// The database of a test core.
    pub fn open(core: &Core) -> Db {
        Db::open(&core.cfg.db, core.cfg.sync).unwrap()
    }

    /// Evaluates `line` in the writer's view over the database + `overlay`.
    pub fn run(
        core: &Core,
        db: &Db,
        overlay: &mut Overlay,
        conn: u64,
        line: &str,
    ) -> serde_json::Value {
        run_as(core, db, overlay, conn, Who::Internal, line)
    }

    /// [`run`] as `who`.
    pub fn run_as(
        core: &Core,
        db: &Db,
        overlay: &mut Overlay,
        conn: u64,
        who: Who,
        line: &str,
    ) -> serde_json::Value {
        let msg = jsonrpc::parse(line.as_bytes(), 100);
        let mut notes = Vec::new();
        let reader = core.store.read();
        let mut env = Env {
            core,
            view: View::Write {
                reader: &reader,
                db: Some(db),
                overlay,
                cfg: &core.cfg,
            },
            now: 1000,
            conn,
            later: Some(&mut notes),
            subscribed: false,
            who,
            peer: Peer::UNKNOWN,
            close: false,
        };
        let mut out = Vec::new();
        if !eval_message(&mut env, &msg, &mut out) {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{line}: bad reply {e}: {}", String::from_utf8_lossy(&out)))
    }

    /// A request line calling `method` with `params` (JSON text), id 1.
    pub fn req(method: &str, params: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id":1}}"#)
    }

    /// The `token_hash` config text of `token`.
    pub fn token_hash(token: &str) -> String {
        let hex: String = crate::access::users::hash_token(token)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }

    /// `run` with a fresh core, database and overlay: `call(method,
    /// params)` answers the whole reply.
    pub fn with_calls(f: impl FnOnce(&mut dyn FnMut(&str, &str) -> serde_json::Value)) {
        let (core, _dir) = crate::testing::core();
        let db = open(&core);
        let mut o = Overlay::default();
        f(&mut |m, p| run(&core, &db, &mut o, 0, &req(m, p)));
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{open, req, run, run_as, token_hash};
    use super::*;
    use crate::access::Peer;
    use crate::entry::Overlay;
    use crate::testing::core;

    /// A user who may write `k.>` but read only `k.open`: the writes
    /// whose answers reveal the stored value need `kv_read` as well.
    #[test]
    fn revealing_writes_need_read_too() {
        let (core, _dir) = core();
        let map = open(&core);
        let mut o = Overlay::default();
        let hash = token_hash("t1");
        let cfg = serde_json::json!({"users": [{"name": "w", "token_hash": hash,
            "permissions": {"kv_write": ["k.>"], "kv_read": ["k.open"]}}]});
        let cfg = crate::config::Config::from_json(&cfg, std::path::Path::new("/d")).unwrap();
        let access = crate::access::Access::new(&cfg).unwrap();
        let who = access
            .authenticate(0, Peer::UNKNOWN, "t1", None)
            .result
            .unwrap();
        run(&core, &map, &mut o, 0, &req("kv.set", r#"["k.x", 41]"#));
        let mut r = |m: &str, p: &str| run_as(&core, &map, &mut o, 0, who.clone(), &req(m, p));
        assert_eq!(r("kv.set", r#"["k.y", 1]"#)["result"], true, "write only");
        for (m, p) in [
            ("kv.incr", r#"["k.x", 0]"#),
            ("kv.cas", r#"["k.x", 41, 41]"#),
            ("kv.del", r#"["k.x"]"#),
        ] {
            let v = r(m, p);
            assert_eq!(v["error"]["code"], code::PERMISSION_DENIED, "{m}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(m) && msg.contains("kv_read"), "{msg}");
        }
        assert_eq!(r("kv.incr", r#"["k.open", 2]"#)["result"], 2);
        assert_eq!(r("kv.cas", r#"["k.open", 2, 3]"#)["result"], true);
        assert_eq!(r("kv.del", r#"["k.open"]"#)["result"], true);
        assert_eq!(
            run(&core, &map, &mut o, 0, &req("kv.get", r#"["k.x"]"#))["result"],
            41,
            "untouched"
        );
    }

    #[test]
    fn errors() {
        let (core, _dir) = core();
        let map = open(&core);
        let mut o = Overlay::default();
        let mut call = |m: &str, p: &str| run(&core, &map, &mut o, 0, &req(m, p));
        let cases = [
            ("kv.nope", "{}", code::METHOD_NOT_FOUND),
            ("kv.get", r#"{"kee":"a"}"#, code::INVALID_PARAMS),
            ("kv.get", r#"{"key":""}"#, code::INVALID_PARAMS),
            (
                "kv.set",
                r#"{"key":"a","value":null}"#,
                code::INVALID_PARAMS,
            ),
            (
                "kv.set",
                r#"{"key":"a","value":1,"ttl":5}"#,
                code::INVALID_PARAMS,
            ),
            (
                "kv.set",
                r#"{"key":"a","value":1,"ttl_ms":0}"#,
                code::INVALID_PARAMS,
            ),
            ("sys.ping", r#"{"x":1}"#, code::INVALID_PARAMS),
            ("bus.subscribe", r#"{"topics":["a"]}"#, code::NOT_A_STREAM),
            (
                "bus.publish",
                r#"{"topic":"a.*","data":1}"#,
                code::INVALID_PARAMS,
            ),
            ("kv.keys", r#"{"limit":100000}"#, code::INVALID_PARAMS),
        ];
        for (m, p, want) in cases {
            assert_eq!(call(m, p)["error"]["code"], want, "{m} {p}");
        }
        assert_eq!(
            call("kv.set", r#"{"key":"s","value":"str"}"#)["result"],
            true
        );
        assert_eq!(
            call("kv.incr", r#"{"key":"s"}"#)["error"]["code"],
            code::NOT_AN_INTEGER
        );
        assert_eq!(
            call("kv.set", r#"{"key":"m","value":9223372036854775807}"#)["result"],
            true
        );
        assert_eq!(
            call("kv.incr", r#"{"key":"m"}"#)["error"]["code"],
            code::OVERFLOW
        );
    }

    #[test]
    fn batches_and_notifications() {
        let (core, _dir) = core();
        let map = open(&core);
        let mut o = Overlay::default();
        let v = run(
            &core,
            &map,
            &mut o,
            0,
            r#"[{"jsonrpc":"2.0","method":"kv.set","params":["k",1]},{"jsonrpc":"2.0","method":"kv.get","params":["k"],"id":"g"},{"jsonrpc":"2.0","method":"nope","id":3},5]"#,
        );
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0]["result"], 1);
        assert_eq!(a[0]["id"], "g");
        assert_eq!(a[1]["error"]["code"], code::METHOD_NOT_FOUND);
        assert_eq!(a[2]["error"]["code"], code::INVALID_REQUEST);
        assert_eq!(
            run(
                &core,
                &map,
                &mut o,
                0,
                r#"{"jsonrpc":"2.0","method":"nope"}"#
            ),
            serde_json::Value::Null,
            "a notification never gets a reply, not even an error"
        );
    }

    #[test]
    fn batch_replies_are_capped() {
        let (core, _dir) = crate::testing::core_with(serde_json::json!({"max_line_bytes": 100}));
        let map = open(&core);
        let mut o = Overlay::default();
        let big = format!("\"{}\"", "v".repeat(90));
        run(
            &core,
            &map,
            &mut o,
            0,
            &req("kv.set", &format!(r#"["b",{big}]"#)),
        );
        let gets: Vec<String> = (0..20)
            .map(|i| req("kv.get", r#"["b"]"#).replace("\"id\":1", &format!("\"id\":{i}")))
            .collect();
        let v = run(&core, &map, &mut o, 0, &format!("[{}]", gets.join(",")));
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(a[0]["result"], serde_json::Value::String("v".repeat(90)));
        assert_eq!(a[19]["error"]["code"], code::TOO_LARGE);
        assert_eq!(a[19]["id"], 19);
    }

    #[test]
    fn limits_answer_with_the_limit_and_write_nothing() {
        let (core, _dir) = crate::testing::core_with(serde_json::json!({
            "max_line_bytes": 1000, "max_value_bytes": 100, "max_keys": 2, "max_total_bytes": 150
        }));
        let db = open(&core);
        let mut o = Overlay::default();
        let big = format!("\"{}\"", "v".repeat(200));
        let v = run(
            &core,
            &db,
            &mut o,
            0,
            &req("kv.set", &format!(r#"["a",{big}]"#)),
        );
        assert_eq!(v["error"]["code"], code::LIMIT);
        assert_eq!(
            v["error"]["message"],
            "kv.set: value of 202 bytes exceeds max_value_bytes (100)"
        );
        assert!(o.is_empty(), "nothing written");
        let mid = format!("\"{}\"", "v".repeat(78));
        for k in ["a", "b"] {
            let v = run(
                &core,
                &db,
                &mut o,
                0,
                &req("kv.set", &format!(r#"["{k}",1]"#)),
            );
            assert_eq!(v["result"], true);
        }
        let v = run(&core, &db, &mut o, 0, &req("kv.incr", r#"["c"]"#));
        assert_eq!(v["error"]["code"], code::LIMIT);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_keys (2)"));
        let v = run(
            &core,
            &db,
            &mut o,
            0,
            &req("kv.set", &format!(r#"["a",{mid}]"#)),
        );
        assert_eq!(v["result"], true);
        let v = run(
            &core,
            &db,
            &mut o,
            0,
            &req("kv.cas", &format!(r#"["b",1,{mid}]"#)),
        );
        assert_eq!(v["error"]["code"], code::LIMIT);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("kv.cas: the store would hold 162 bytes"));
        assert_eq!(o.delta(), (2, 1 + 80 + 2));
    }

    /// `max_total_bytes` is one limit: a kv write counts the stream
    /// messages too (as an append counts the keys and values), while a
    /// write that does not grow the keys and values, and a delete, pass.
    #[test]
    fn kv_writes_count_stream_messages_against_max_total_bytes() {
        let (core, _dir) = crate::testing::core_with(serde_json::json!({
            "max_line_bytes": 1000, "max_total_bytes": 400
        }));
        let db = open(&core);
        let mut o = Overlay::default();
        let mut call = |m: &str, p: &str| run(&core, &db, &mut o, 0, &req(m, p));
        let v = call("stream.create", r#"{"name":"S","subjects":["s.>"]}"#);
        assert!(v.get("error").is_none(), "{v}");
        let msg = format!("\"{}\"", "m".repeat(98));
        for _ in 0..3 {
            let v = call(
                "stream.publish",
                &format!(r#"{{"topic":"s.a","data":{msg}}}"#),
            );
            assert!(v.get("error").is_none(), "{v}");
        }
        let streams = core.streams.lock(&core.cfg).bytes();
        assert_eq!(streams, 3 * (3 + 100));
        // 1 + 102 bytes of kv alone fit 400 by far; with the streams'
        // 309 they do not.
        let value = format!("\"{}\"", "v".repeat(100));
        let v = call("kv.set", &format!(r#"["k",{value}]"#));
        assert_eq!(v["error"]["code"], code::LIMIT, "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("stream messages, over max_total_bytes (400)"),
            "{m}"
        );
        assert_eq!(
            call("kv.get", r#"["k"]"#)["result"],
            serde_json::Value::Null
        );
        assert_eq!(call("kv.set", r#"["k",1]"#)["result"], true, "still fits");
        assert_eq!(
            call("kv.set", r#"["k",2]"#)["result"],
            true,
            "does not grow"
        );
        assert_eq!(call("kv.del", r#"["k"]"#)["result"], true);
    }

    #[test]
    fn reads_that_miss_the_cache_go_to_the_writer() {
        let (core, _dir) = core();
        let reader = core.store.read();
        let view = View::Read(&reader);
        let needs = |line: &str| {
            needs_writer(
                &view,
                &crate::access::Who::Internal,
                &jsonrpc::parse(line.as_bytes(), 10),
            )
        };
        assert!(needs(&req("kv.get", r#"["a"]"#)), "not cached");
        assert!(needs(&req("kv.keys", "{}")));
        assert!(needs(&req("kv.set", r#"["a",1]"#)));
        assert!(
            !needs(&req("kv.get", r#"{"kee":"a"}"#)),
            "an error is answered at once"
        );
        assert!(!needs(&req("sys.ping", "[]")));
        drop(reader);
        core.store.fill(vec![("a".into(), None)]);
        let reader = core.store.read();
        let view = View::Read(&reader);
        let (get, set) = (req("kv.get", r#"["a"]"#), req("kv.set", r#"["a",1]"#));
        let get = jsonrpc::parse(get.as_bytes(), 10);
        assert!(!needs_writer(&view, &crate::access::Who::Internal, &get));
        let set = jsonrpc::parse(set.as_bytes(), 10);
        assert!(
            !needs_writer(&view, &crate::access::Who::Protected, &set),
            "refused from memory"
        );
        assert!(!needs_writer(&view, &crate::access::Who::Anonymous, &set));
        let auth_then_set = format!(
            "[{},{}]",
            req("sys.auth", r#"["t"]"#),
            req("kv.set", r#"["a",1]"#)
        );
        assert!(
            needs_writer(
                &view,
                &crate::access::Who::Anonymous,
                &jsonrpc::parse(auth_then_set.as_bytes(), 10)
            ),
            "a batch that logs in first may write after it"
        );
    }

    #[test]
    fn lookup_matches_the_table() {
        for (name, m, _) in METHODS {
            assert_eq!(Method::lookup(name), Some(*m), "{name}");
        }
        assert_eq!(Method::lookup("kv.GET"), None);
    }
}
