//! The methods: their names, parameters and meaning, evaluated against an
//! [`Env`] — the committed data on an event loop or a pool thread, or the
//! writer's batch overlay.
//!
//! Parameters may be given by name (`{"key":"a","value":1}`) or by
//! position (`["a",1]`, in the order listed in [`METHODS`]); unknown names
//! are refused, so a typo (`ttl` for `ttl_ms`) is an error, not a silent
//! no-op.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::access::Peer;

use crate::access::{Right, Who, MAX_TOKEN_BYTES};
use crate::bus::{self, check_topic, Note};
use crate::core::Core;
use crate::entry::Entry;
use crate::jsonrpc::{self, code, Item, Message, Request, RpcError, Sink};
use crate::store::{json_eq, stored_text, Limit, View};

/// Every method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    SysPing,
    SysMethods,
    SysVersion,
    KvGet,
    KvSet,
    KvDel,
    KvIncr,
    KvCas,
    KvKeys,
    BusSubscribe,
    BusUnsubscribe,
    BusPublish,
    SysAuth,
    SysWhoami,
}

/// Name, method and one-line description (what `sys.methods` returns).
pub const METHODS: &[(&str, Method, &str)] = &[
    ("bus.publish", Method::BusPublish, "publish {topic, data} to the subscribers of topic; returns how many got it"),
    ("bus.subscribe", Method::BusSubscribe, "subscribe this raw TCP connection to {topics} (\"*\" matches one dot-separated segment); messages arrive as bus.message notifications; returns this connection's subscription count"),
    ("bus.unsubscribe", Method::BusUnsubscribe, "drop {topics} (all when omitted) from this connection; returns the subscriptions left"),
    ("kv.cas", Method::KvCas, "compare-and-set {key, expected, value, ttl_ms?}: set value if the current value equals expected (null: the key is absent; value null deletes); returns true if it did"),
    ("kv.del", Method::KvDel, "delete {key}; returns true if the key existed"),
    ("kv.get", Method::KvGet, "the value of {key}, or null when absent or expired"),
    ("kv.incr", Method::KvIncr, "atomically add {by} (default 1) to the 64-bit integer at {key} (absent: 0); returns the new value"),
    ("kv.keys", Method::KvKeys, "up to {limit} (default 100) keys starting with {prefix}, sorted, after the key {after} if given; a full page may have more (call again with after = its last key); when max_keys_scan rows were examined first, {keys, cursor} instead: call again with {cursor} to go on"),
    ("kv.set", Method::KvSet, "set {key} to the JSON {value} (not null), expiring after {ttl_ms} if given; returns true once durable"),
    ("sys.auth", Method::SysAuth, "log this raw TCP connection in: {token, user?}; returns {user}. Over HTTP it only checks the token (send Authorization: Bearer on each request)"),
    ("sys.methods", Method::SysMethods, "these method names with a one-line description each"),
    ("sys.ping", Method::SysPing, "returns \"pong\""),
    ("sys.version", Method::SysVersion, "the module's name and version and the protocol version"),
    ("sys.whoami", Method::SysWhoami, "{user, auth, permissions}: who this connection acts as, how it was authenticated (token, cert, no_auth_user, loopback, internal) and what it may do"),
];

impl Method {
    pub fn lookup(name: &str) -> Option<Method> {
        METHODS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, m, _)| *m)
    }

    /// Whether the method may be called before logging in.
    pub fn open(self) -> bool {
        matches!(
            self,
            Method::SysPing
                | Method::SysVersion
                | Method::SysMethods
                | Method::SysAuth
                | Method::SysWhoami
        )
    }

    /// Whether the method changes stored data (and so goes through the
    /// writer and waits for a commit).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Method::KvSet | Method::KvDel | Method::KvIncr | Method::KvCas
        )
    }
}

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

/// What a call is evaluated against.
pub struct Env<'a> {
    pub core: &'a Core,
    pub view: View<'a>,
    pub now: u64,
    /// The raw TCP connection the call came on; 0 for HTTP and in-process
    /// calls, which cannot subscribe.
    pub conn: u64,
    /// In the writer: notifications to deliver once the batch commits.
    pub later: Option<&'a mut Vec<Note>>,
    /// Set when the call added a subscription.
    pub subscribed: bool,
    /// Who the calls act as; `sys.auth` changes it for the calls after it.
    pub who: Who,
    /// The peer's address (`None` in-process), for logins.
    pub peer: Peer,
    /// Set when the connection must be closed after this reply (too many
    /// failed logins).
    pub close: bool,
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
        Message::Single(item) => eval_item(env, item, out),
        Message::Batch(items) => {
            let start = out.size();
            // A batch of reads of big values could build a huge reply:
            // past the cap, the remaining calls are answered with -32040.
            let cap = env.core.cfg.max_line_bytes.saturating_mul(8);
            let too_big = RpcError::new(code::TOO_LARGE, "reply too large: split the batch");
            out.put(b"[");
            let mut any = false;
            for item in items {
                let mark = out.size();
                if any {
                    out.put(b",");
                }
                let answered = if mark - start > cap {
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
                } else {
                    eval_item(env, item, out)
                };
                if answered {
                    any = true;
                } else {
                    out.cut(mark);
                }
            }
            if any {
                out.put(b"]");
            } else {
                out.cut(start);
            }
            any
        }
    }
}

fn eval_item<S: Sink>(env: &mut Env<'_>, item: &Item<'_>, out: &mut S) -> bool {
    match item {
        Item::Invalid { id, error } => {
            jsonrpc::write_error(out, *id, error);
            true
        }
        Item::Call(req) => {
            let start = out.size();
            jsonrpc::begin_result(out);
            let result = call(env, req, out);
            match (result, req.id) {
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

fn params<'a, T: Deserialize<'a>>(req: &Request<'a>) -> Result<T, RpcError> {
    let text = req.params.map_or("{}", RawValue::get);
    serde_json::from_str(text).map_err(|e| RpcError::invalid_params(format!("invalid params: {e}")))
}

fn no_params(req: &Request<'_>) -> Result<(), RpcError> {
    match req.params.map(RawValue::get) {
        None | Some("{}") | Some("[]") => Ok(()),
        Some(_) => Err(RpcError::invalid_params("this method takes no params")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

fn one() -> i64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default = "one")]
    by: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasP<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    expected: &'a RawValue,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysP<'a> {
    #[serde(borrow, default)]
    prefix: Cow<'a, str>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(borrow, default)]
    after: Option<Cow<'a, str>>,
    /// Where a listing stopped by `max_keys_scan` goes on (instead of
    /// `after`).
    #[serde(borrow, default)]
    cursor: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishP<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthP<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
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
fn topics(req: &Request<'_>) -> Result<Option<Vec<String>>, RpcError> {
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

fn check_key(key: &str, env: &Env<'_>) -> Result<(), RpcError> {
    let max = env.core.cfg.max_key_bytes;
    if key.is_empty() || key.len() > max {
        return Err(RpcError::invalid_params(format!(
            "key must be 1 to {max} bytes"
        )));
    }
    Ok(())
}

fn expiry(ttl_ms: Option<u64>, now: u64) -> Result<u64, RpcError> {
    match ttl_ms {
        None => Ok(0),
        Some(0) => Err(RpcError::invalid_params("ttl_ms must be at least 1")),
        Some(t) => Ok(now.saturating_add(t)),
    }
}

/// The error for a write that would pass a limit.
fn over(method: &str, limit: Limit) -> RpcError {
    RpcError::new(code::LIMIT, format!("{method}: {limit}"))
}

/// Sets or deletes `key` in the batch, or refuses with the limit it
/// would pass.
fn put(
    env: &mut Env<'_>,
    req: &Request<'_>,
    key: &str,
    row: Option<Entry>,
) -> Result<(), RpcError> {
    env.view.put(key, row)?.map_err(|l| over(&req.method, l))
}

fn put_bool<S: Sink>(out: &mut S, b: bool) {
    out.put(if b { b"true" } else { b"false" });
}

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

/// Runs one call and writes its result JSON.
fn call<S: Sink>(env: &mut Env<'_>, req: &Request<'_>, out: &mut S) -> Result<(), RpcError> {
    let Some(method) = Method::lookup(&req.method) else {
        return Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {}", req.method),
        ));
    };
    env.who.admit(&req.method, method.open())?;
    let now = env.now;
    match method {
        Method::SysAuth => {
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
        }
        Method::SysWhoami => {
            no_params(req)?;
            out.put(env.who.whoami().to_string().as_bytes());
        }
        Method::SysPing => {
            no_params(req)?;
            out.put(b"\"pong\"");
        }
        Method::SysVersion => {
            no_params(req)?;
            out.put(version_json());
        }
        Method::SysMethods => {
            no_params(req)?;
            out.put(methods_json());
        }
        Method::KvGet => {
            let p: KeyP<'_> = params(req)?;
            check_key(&p.key, env)?;
            env.who.check(Right::KvRead, &req.method, &p.key)?;
            match env.view.get(&p.key, now)? {
                Some(e) => out.put(e.value.as_bytes()),
                None => out.put(b"null"),
            }
        }
        Method::KvSet => {
            let p: SetP<'_> = params(req)?;
            check_key(&p.key, env)?;
            env.who.check(Right::KvWrite, &req.method, &p.key)?;
            if p.value.get() == "null" {
                return Err(RpcError::invalid_params(
                    "value must not be null (kv.del removes a key)",
                ));
            }
            let expires_at = expiry(p.ttl_ms, now)?;
            let entry = Entry {
                value: stored_text(p.value),
                expires_at,
            };
            put(env, req, &p.key, Some(entry))?;
            out.put(b"true");
        }
        Method::KvDel => {
            let p: KeyP<'_> = params(req)?;
            check_key(&p.key, env)?;
            env.who.check_read_write(&req.method, &p.key)?;
            let existed = env.view.get(&p.key, now)?.is_some();
            if existed {
                put(env, req, &p.key, None)?;
            }
            put_bool(out, existed);
        }
        Method::KvIncr => {
            let p: IncrP<'_> = params(req)?;
            check_key(&p.key, env)?;
            env.who.check_read_write(&req.method, &p.key)?;
            let (current, expires_at) = match env.view.get(&p.key, now)? {
                None => (0, 0),
                Some(e) => match serde_json::from_str::<i64>(&e.value) {
                    Ok(n) => (n, e.expires_at),
                    Err(_) => {
                        return Err(RpcError::new(
                            code::NOT_AN_INTEGER,
                            "the value is not a 64-bit integer",
                        ))
                    }
                },
            };
            let Some(n) = current.checked_add(p.by) else {
                return Err(RpcError::new(
                    code::OVERFLOW,
                    "the result would overflow a 64-bit integer",
                ));
            };
            let text = n.to_string();
            let entry = Entry {
                value: text.into_boxed_str(),
                expires_at,
            };
            put(env, req, &p.key, Some(entry.clone()))?;
            out.put(entry.value.as_bytes());
        }
        Method::KvCas => {
            let p: CasP<'_> = params(req)?;
            check_key(&p.key, env)?;
            env.who.check_read_write(&req.method, &p.key)?;
            let expires_at = expiry(p.ttl_ms, now)?;
            let current = env.view.get(&p.key, now)?;
            let matches = match (current, p.expected.get()) {
                (None, "null") => true,
                (Some(e), expected) => expected != "null" && json_eq(&e.value, expected),
                (None, _) => false,
            };
            if matches {
                let entry = (p.value.get() != "null").then(|| Entry {
                    value: stored_text(p.value),
                    expires_at,
                });
                put(env, req, &p.key, entry)?;
            }
            put_bool(out, matches);
        }
        Method::KvKeys => {
            let p: KeysP<'_> = params(req)?;
            let max = env.core.cfg.max_keys_limit;
            let limit = p.limit.unwrap_or(100.min(max));
            if limit > max {
                return Err(RpcError::invalid_params(format!(
                    "limit must be at most {max}"
                )));
            }
            let after = match (p.after, &p.cursor) {
                (Some(_), Some(_)) => {
                    return Err(RpcError::invalid_params("give after or cursor, not both"))
                }
                (_, Some(c)) => Some(Cow::Owned(crate::cursor::open(c)?)),
                (after, None) => after,
            };
            // Only the keys the caller may read, so a page is full of
            // them (hidden keys are skipped, not counted in the page), and
            // only where its kv_read patterns can match; the rows examined
            // are capped all the same (max_keys_scan).
            let who = &env.who;
            let visible = |k: &str| who.may(Right::KvRead, k);
            let ranges = who.read_ranges(&p.prefix);
            let (keys, stopped) = env.view.keys(
                &ranges,
                after.as_deref(),
                limit,
                env.core.cfg.max_keys_scan,
                now,
                &visible,
            )?;
            if stopped.is_some() {
                out.put(b"{\"keys\":");
            }
            out.put(b"[");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                jsonrpc::write_str(out, k);
            }
            out.put(b"]");
            if let Some(at) = stopped {
                out.put(b",\"cursor\":");
                jsonrpc::write_str(out, &crate::cursor::seal(&at));
                out.put(b"}");
            }
        }
        Method::BusSubscribe => {
            let conn = stream_conn(env)?;
            let Some(topics) = topics(req)? else {
                return Err(RpcError::invalid_params("topics is missing"));
            };
            for t in &topics {
                check_topic(t, true)?;
                env.who.check(Right::Subscribe, &req.method, t)?;
            }
            let core = env.core;
            let locked = core.conns.lock(conn);
            // A connection that closed while this call waited in the
            // writer's queue gets nothing (nobody reads the reply).
            let n = if locked.closed(conn) {
                0
            } else {
                core.bus.subscribe(conn, &topics)?
            };
            drop(locked);
            env.subscribed = true;
            out.put(n.to_string().as_bytes());
        }
        Method::BusUnsubscribe => {
            let conn = stream_conn(env)?;
            let topics = topics(req)?;
            let n = env.core.bus.unsubscribe(conn, topics.as_deref());
            out.put(n.to_string().as_bytes());
        }
        Method::BusPublish => {
            let p: PublishP<'_> = params(req)?;
            check_topic(&p.topic, false)?;
            env.who.check(Right::Publish, &req.method, &p.topic)?;
            let topic_conns = env.core.bus.recipients(&p.topic);
            // Built once for every recipient (nothing when there is none).
            let bytes = if topic_conns.is_empty() {
                Vec::new()
            } else if p.data.get().contains(['\n', '\r']) {
                bus::message(&p.topic, &stored_text(p.data))
            } else {
                bus::message(&p.topic, p.data.get())
            };
            let note = Note { topic_conns, bytes };
            let n = match &mut env.later {
                Some(later) => {
                    let n = note.topic_conns.len();
                    later.push(note);
                    n
                }
                None => env.core.deliver(&note),
            };
            out.put(n.to_string().as_bytes());
        }
    }
    Ok(())
}

fn stream_conn(env: &Env<'_>) -> Result<u64, RpcError> {
    match env.conn {
        0 => Err(RpcError::new(
            code::NOT_A_STREAM,
            "subscriptions need a raw TCP connection (they are pushed on it)",
        )),
        c => Ok(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::entry::Overlay;
    use crate::testing::core;

    /// The database of a test core.
    fn open(core: &Core) -> Db {
        Db::open(&core.cfg.db, core.cfg.sync).unwrap()
    }

    /// Evaluates `line` in the writer's view over the database + `overlay`.
    fn run(
        core: &Core,
        db: &Db,
        overlay: &mut Overlay,
        conn: u64,
        line: &str,
    ) -> serde_json::Value {
        run_as(core, db, overlay, conn, Who::Internal, line)
    }

    /// [`run`] as `who`.
    fn run_as(
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

    fn req(method: &str, params: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id":1}}"#)
    }

    /// A user who may write `k.>` but read only `k.open`: the writes
    /// whose answers reveal the stored value need `kv_read` as well.
    #[test]
    fn revealing_writes_need_read_too() {
        let (core, _dir) = core();
        let map = open(&core);
        let mut o = Overlay::default();
        let hash = format!(
            "sha256:{}",
            crate::access::users::hash_token("t1")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
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

    /// kv.keys for a user who may read few of the keys under a prefix:
    /// the scan stays inside its kv_read patterns' literal starts, is
    /// capped by max_keys_scan all the same, and a capped call returns a
    /// sealed cursor to go on from.
    #[test]
    fn kv_keys_scans_are_narrowed_and_capped() {
        let hash = format!(
            "sha256:{}",
            crate::access::users::hash_token("t1")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let users = serde_json::json!([{"name": "r", "token_hash": hash,
            "permissions": {"kv_read": {"allow": ["a.*", "m.>"], "deny": ["m.secret.>"]}}}]);
        let (core, _dir) =
            crate::testing::core_with(serde_json::json!({"max_keys_scan": 20, "users": users}));
        let mut map = open(&core);
        let mut o = Overlay::default();
        let who = core
            .access
            .authenticate(0, Peer::UNKNOWN, "t1", None)
            .result
            .unwrap();
        let mut keys: Vec<String> = (0..100).map(|i| format!("b.hidden{i:03}")).collect();
        keys.extend((0..30).map(|i| format!("m.secret.k{i:02}")));
        keys.extend(["a.x".to_string(), "m.z".to_string()]);
        for k in &keys {
            let v = run(
                &core,
                &map,
                &mut o,
                0,
                &req("kv.set", &format!(r#"["{k}", 1]"#)),
            );
            assert_eq!(v["result"], true, "{v}");
        }
        map.commit(&o).unwrap();
        core.store.apply(std::mem::take(&mut o));
        let mut r = |p: &str| run_as(&core, &map, &mut o, 0, who.clone(), &req("kv.keys", p));
        // The 100 b.* rows are outside every kv_read pattern: not scanned.
        let v = r(r#"{"prefix":"a"}"#);
        assert_eq!(v["result"], serde_json::json!(["a.x"]), "{v}");
        // The 30 denied m.secret.* rows are inside m.>: the cap stops the
        // scan and says where to go on, without naming a hidden key.
        let v = r(r#"{"prefix":"m."}"#);
        let res = &v["result"];
        assert_eq!(res["keys"], serde_json::json!([]), "{v}");
        let cursor = res["cursor"].as_str().unwrap().to_string();
        assert!(!v.to_string().contains("secret"), "{v}");
        let v = r(&format!(r#"{{"prefix":"m.","cursor":"{cursor}"}}"#));
        assert_eq!(v["result"], serde_json::json!(["m.z"]), "{v}");
        // Everything the user may read, over all its ranges.
        let v = r(r#"{}"#);
        assert_eq!(v["result"]["keys"], serde_json::json!(["a.x"]), "{v}");
        let v = r(r#"{"after":"a","cursor":"00"}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
        let v = r(r#"{"cursor":"00112233445566778899aabbccddeeff00112233"}"#);
        assert_eq!(v["error"]["code"], code::INVALID_PARAMS, "{v}");
    }

    #[test]
    fn kv_methods() {
        let (core, _dir) = core();
        let map = open(&core);
        let mut o = Overlay::default();
        let mut r = |m: &str, p: &str| run(&core, &map, &mut o, 0, &req(m, p))["result"].clone();
        assert_eq!(r("kv.get", r#"{"key":"a"}"#), serde_json::Value::Null);
        assert_eq!(r("kv.set", r#"{"key":"a","value":{"x":[1,2]}}"#), true);
        assert_eq!(r("kv.get", r#"["a"]"#), serde_json::json!({"x":[1,2]}));
        assert_eq!(r("kv.incr", r#"{"key":"n"}"#), 1);
        assert_eq!(r("kv.incr", r#"["n", 41]"#), 42);
        assert_eq!(r("kv.cas", r#"{"key":"n","expected":41,"value":0}"#), false);
        assert_eq!(
            r("kv.cas", r#"{"key":"n","expected":42,"value":"x"}"#),
            true
        );
        assert_eq!(r("kv.get", r#"{"key":"n"}"#), "x");
        assert_eq!(
            r("kv.cas", r#"{"key":"new","expected":null,"value":1}"#),
            true
        );
        assert_eq!(
            r("kv.cas", r#"{"key":"new","expected":null,"value":2}"#),
            false
        );
        assert_eq!(r("kv.keys", r#"{}"#), serde_json::json!(["a", "n", "new"]));
        assert_eq!(
            r("kv.keys", r#"{"prefix":"n","limit":1}"#),
            serde_json::json!(["n"])
        );
        assert_eq!(r("kv.del", r#"{"key":"a"}"#), true);
        assert_eq!(r("kv.del", r#"{"key":"a"}"#), false);
        assert_eq!(r("kv.set", r#"{"key":"t","value":1,"ttl_ms":5}"#), true);
        assert_eq!(r("kv.get", r#"{"key":"t"}"#), 1);
        assert_eq!(o.get("t").unwrap().as_ref().unwrap().expires_at, 1005);
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

    #[test]
    fn methods_json_is_valid() {
        let v: serde_json::Value = serde_json::from_slice(methods_json()).unwrap();
        assert_eq!(v.as_object().unwrap().len(), METHODS.len());
        let v: serde_json::Value = serde_json::from_slice(version_json()).unwrap();
        assert_eq!(v["module"], "rpc");
    }
}
