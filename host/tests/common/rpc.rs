//! The one JSON-RPC test client of the rpc module's line transport (raw
//! TCP, one JSON text per line), and the `POST /rpc` helpers beside it.
//!
//! [`Rpc`] keeps every message it reads but nobody has asked for yet, in
//! arrival order: a call waits for the reply with its id while the
//! notifications that come meanwhile are kept, and a wait for a
//! notification keeps the replies and other notifications it passes. So a
//! test asks for what it expects, in the order it cares about, and nothing
//! pushed is lost on the way. Every wait is bounded (a reply's by
//! [`IO_TIMEOUT`], a notification's by the caller), and a failed
//! expectation panics with what was received instead.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{Client, Response, IO_TIMEOUT};

/// A raw TCP JSON-RPC connection with the messages read ahead.
pub struct Rpc {
    c: Client,
    next_id: u64,
    /// Read but not yet taken, in arrival order: notifications (they have a
    /// `method`) and replies (everything else: objects with an `id`, batch
    /// arrays).
    unclaimed: VecDeque<Value>,
}

/// Whether `v` is a notification (a push from the server) rather than a
/// reply.
fn is_notification(v: &Value) -> bool {
    v.get("method").is_some()
}

/// `params` as text for a failure message, cut at 300 characters (the
/// hostile tests send values of megabytes).
fn shown(params: &Value) -> String {
    let text = params.to_string();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
        None => text,
    }
}

impl Rpc {
    /// Connects to the rpc module's raw TCP transport at `addr`.
    pub fn connect(addr: SocketAddr) -> Rpc {
        Rpc {
            c: Client::connect(addr),
            next_id: 0,
            unclaimed: VecDeque::new(),
        }
    }

    /// A connection logged in with `token` (`sys.auth` must succeed).
    pub fn login(addr: SocketAddr, token: &str) -> Rpc {
        let mut r = Rpc::connect(addr);
        r.auth(token);
        r
    }

    /// The local address of the connection (the peer the server sees).
    pub fn local_addr(&self) -> SocketAddr {
        self.c.stream.local_addr().unwrap()
    }

    /// The connection underneath, for byte-level checks (a write that may
    /// fail, the close that must follow). Messages kept here are not in it.
    pub fn raw(&mut self) -> &mut Client {
        &mut self.c
    }

    /// Whether anything is unread: kept here, or already arrived on the
    /// socket (does not wait).
    pub fn has_unread(&self) -> bool {
        !self.unclaimed.is_empty() || self.c.has_data()
    }

    /// Writes `bytes` as they are (no newline added).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.c.send(bytes);
    }

    /// Writes `text` and a newline: one message of the line transport.
    pub fn send_line(&mut self, text: &str) {
        self.c.send(format!("{text}\n").as_bytes());
    }

    /// A request with the next id, rendered but not sent: (id, text).
    pub fn request(&mut self, method: &str, params: Value) -> (u64, String) {
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": self.next_id});
        (self.next_id, req.to_string())
    }

    /// Sends a request without waiting for its reply; returns its id.
    pub fn start(&mut self, method: &str, params: Value) -> u64 {
        let (id, req) = self.request(method, params);
        self.send_line(&req);
        id
    }

    /// The reply to request `id`. Notifications that arrive first are kept
    /// for [`Rpc::notification`]; the first reply not yet taken must be
    /// this one (a reply with another id fails the test).
    pub fn reply_to(&mut self, id: u64) -> Value {
        let v = match self.unclaimed.iter().position(|v| !is_notification(v)) {
            Some(i) => self.unclaimed.remove(i).unwrap(),
            None => {
                let deadline = Instant::now() + IO_TIMEOUT;
                loop {
                    let v = self.next_from_socket(deadline, || format!("the reply to {id}"));
                    if !is_notification(&v) {
                        break v;
                    }
                    self.unclaimed.push_back(v);
                }
            }
        };
        assert_eq!(v["jsonrpc"], "2.0", "the reply to {id}: {v}");
        assert_eq!(v["id"], id, "expected the reply to {id}: {v}");
        v
    }

    /// Calls a method; returns the whole reply (its id checked).
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.start(method, params);
        self.reply_to(id)
    }

    /// The result of a call that must succeed.
    pub fn ok(&mut self, method: &str, params: Value) -> Value {
        let shown = shown(&params);
        let r = self.call(method, params);
        assert!(r.get("error").is_none(), "{method} {shown}: {r}");
        r["result"].clone()
    }

    /// The error of a call that must fail: (code, message).
    pub fn err(&mut self, method: &str, params: Value) -> (i64, String) {
        let shown = shown(&params);
        let r = self.call(method, params);
        let code = r["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("{method} {shown}: expected an error, got {r}"));
        let message = r["error"]["message"].as_str().unwrap_or("").to_string();
        (code, message)
    }

    /// Logs in with `token`; returns the `sys.auth` result.
    pub fn auth(&mut self, token: &str) -> Value {
        self.ok("sys.auth", json!({ "token": token }))
    }

    /// The next message not yet taken, whatever it is (a reply, a batch's
    /// array, a notification), in arrival order.
    pub fn read(&mut self) -> Value {
        if let Some(v) = self.unclaimed.pop_front() {
            return v;
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        self.next_from_socket(deadline, || "a message".to_string())
    }

    /// The params of the next notification of `method`, kept or arriving
    /// within `wait`; `None` when none comes in time. What arrives
    /// meanwhile is kept.
    pub fn try_notification(&mut self, method: &str, wait: Duration) -> Option<Value> {
        let v = match self.unclaimed.iter().position(|v| v["method"] == method) {
            Some(i) => self.unclaimed.remove(i).unwrap(),
            None => {
                let deadline = Instant::now() + wait;
                loop {
                    let v = self.next_before(deadline)?;
                    if v["method"] == method {
                        break v;
                    }
                    self.unclaimed.push_back(v);
                }
            }
        };
        assert!(v.get("id").is_none(), "a notification has no id: {v}");
        Some(v["params"].clone())
    }

    /// Like [`Rpc::try_notification`], for a notification that must come.
    pub fn notification(&mut self, method: &str, wait: Duration) -> Value {
        self.try_notification(method, wait).unwrap_or_else(|| {
            panic!(
                "no {method} notification within {wait:?}; kept meanwhile: {:?}",
                self.unclaimed
            )
        })
    }

    /// The params of every notification of `method` until none comes for
    /// `quiet`.
    pub fn notifications(&mut self, method: &str, quiet: Duration) -> Vec<Value> {
        std::iter::from_fn(|| self.try_notification(method, quiet)).collect()
    }

    /// Takes every message kept (read ahead and not yet taken), without
    /// reading more.
    pub fn kept(&mut self) -> Vec<Value> {
        self.unclaimed.drain(..).collect()
    }

    /// Takes every message not yet taken: those kept and those already
    /// arrived on the socket (does not wait for more).
    pub fn arrived(&mut self) -> Vec<Value> {
        while self.c.has_data() {
            let deadline = Instant::now() + IO_TIMEOUT;
            let v = self.next_from_socket(deadline, || "the rest of a message".to_string());
            self.unclaimed.push_back(v);
        }
        self.kept()
    }

    /// A `sys.ping` answered, then every message kept. Pushes from other
    /// connections may still be on their way (a ping only orders this
    /// connection's own messages).
    pub fn drain(&mut self) -> Vec<Value> {
        assert_eq!(self.ok("sys.ping", json!([])), "pong");
        self.kept()
    }

    /// Asserts that nothing was pushed: after a ping's reply, nothing is
    /// kept unread.
    pub fn quiet(&mut self) {
        let pushed = self.drain();
        assert!(pushed.is_empty(), "expected nothing pushed, got {pushed:?}");
    }

    /// The next raw line from the socket within `wait`, past anything kept
    /// (for replies that are not JSON, or a server that must not answer):
    /// `Err` says what came instead (a timeout, the end of the connection).
    pub fn raw_line(&mut self, wait: Duration) -> Result<String, String> {
        match self.c.read_line_within(wait)? {
            Some(line) => Ok(line),
            None => Err(format!("no line within {wait:?}")),
        }
    }

    /// The next message from the socket, or `None` at `deadline`; the
    /// end of the connection or a line that is not JSON fails the test.
    fn next_before(&mut self, deadline: Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = self
            .c
            .read_line_within(left)
            .unwrap_or_else(|e| panic!("{e}; kept unread: {:?}", self.unclaimed))?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("line {line:?} is not JSON: {e}")),
        )
    }

    /// Like [`Rpc::next_before`], failing the test when nothing comes;
    /// `what` names what was awaited.
    fn next_from_socket(&mut self, deadline: Instant, what: impl Fn() -> String) -> Value {
        self.next_before(deadline).unwrap_or_else(|| {
            panic!(
                "waited {IO_TIMEOUT:?} for {}; kept unread: {:?}",
                what(),
                self.unclaimed
            )
        })
    }
}

/// POSTs a JSON-RPC `body` to `/rpc` at `addr` on a new connection, with
/// extra header lines (each without CRLF).
pub fn post_rpc(addr: SocketAddr, body: &str, headers: &[&str]) -> Response {
    let mut req = format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut c = Client::connect(addr);
    c.send(req.as_bytes());
    c.read_response(false)
}

/// Calls a method over `POST /rpc` (id `"h"`); returns the whole reply,
/// checked to be a 200 of JSON answering that id.
pub fn http_call(addr: SocketAddr, method: &str, params: Value) -> Value {
    let req = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": "h"});
    let resp = post_rpc(addr, &req.to_string(), &[]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("body {:?} is not JSON: {e}", resp.text()));
    assert_eq!(v["id"], "h", "{v}");
    v
}
