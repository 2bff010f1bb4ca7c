//! `POST /rpc` and browser pages, against the real server: a cross-site
//! page's simple `POST` (no preflight: no content type, or `text/plain`)
//! is refused 403 with a JSON-RPC error body and writes nothing; this
//! host's own page, an Origin listed in `ws_origins` and requests without
//! `Origin` (curl, bots) are served; in protected mode a page on a name
//! that is not loopback (DNS rebinding) is refused, with users it is not.
//! Each refused request is checked to have written nothing, by reading the
//! key back without an Origin.

use crate::common;

use common::*;
use serde_json::{json, Value};

/// Listed in `ws_origins` for every server here.
const LISTED: &str = "http://app.test:3000";
/// `printf origin-token | sha256sum`.
const TOKEN_HASH: &str = "sha256:38d30032f972c1127fe42b65de79518614b8f706f41842b36c20492fce599032";

fn server(tag: &str, extra: &str) -> Server {
    ServerBuilder::new(&["rpc"])
        .tag(tag)
        .toml(&format!(
            "[modules.rpc]\nws_origins = [\"{LISTED}\"]\n{extra}"
        ))
        .start()
}

/// The request bytes of a `POST /rpc` with `body` and the header lines
/// `headers` (each without CRLF; no `Host` unless given).
fn request(body: &str, headers: &[&str]) -> String {
    let mut req = format!("POST /rpc HTTP/1.1\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    req
}

/// One request on a connection of its own.
fn post(s: &Server, body: &str, headers: &[&str]) -> Response {
    let mut all = headers.to_vec();
    all.push("Connection: close");
    s.request(request(body, &all))
}

fn set_body(key: &str, value: i64) -> String {
    json!({"jsonrpc": "2.0", "method": "kv.set", "params": [key, value], "id": 1}).to_string()
}

/// The result of a 200 reply.
fn result(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v.get("error").is_none(), "{v}");
    v["result"].clone()
}

/// A 403 with a JSON-RPC error -32061 whose message contains `says`.
fn assert_refused(r: &Response, says: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    assert_eq!(v["error"]["code"], -32061, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(says), "{msg}");
}

/// A key's value read by a request without `Origin` (null: absent).
fn read_key(s: &Server, key: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": "kv.get", "params": [key], "id": 1});
    result(&post(s, &body.to_string(), &["Host: 127.0.0.1"]))
}

#[test]
fn protected_mode_serves_only_pages_that_may_call() {
    let s = server("origin", "");
    let host = format!("Host: {}", s.addr);
    let own = format!("Origin: http://{}", s.addr);

    // Cross-site simple requests: no content type, text/plain, a write
    // and a read; another port of this host; a sandboxed page ("null").
    let evil = "Origin: http://evil.test";
    assert_refused(&post(&s, &set_body("o.evil", 1), &[&host, evil]), "Origin");
    let plain = "Content-Type: text/plain";
    assert_refused(
        &post(&s, &set_body("o.evil", 2), &[&host, evil, plain]),
        "ws_origins",
    );
    let get = json!({"jsonrpc": "2.0", "method": "sys.whoami", "id": 1}).to_string();
    assert_refused(&post(&s, &get, &[&host, evil]), "Origin");
    let port = format!("Origin: http://127.0.0.1:{}", s.addr.port() ^ 1);
    assert_refused(&post(&s, &set_body("o.evil", 3), &[&host, &port]), "Origin");
    assert_refused(
        &post(&s, &set_body("o.evil", 4), &[&host, "Origin: null"]),
        "Origin",
    );
    assert_eq!(read_key(&s, "o.evil"), Value::Null, "nothing was written");
    assert!(s.log().contains("evil.test"), "the refusal is logged");

    // This host's own page, on its address and on localhost; a listed
    // Origin (here from a Host that is not loopback at all).
    assert_eq!(
        result(&post(&s, &set_body("o.own", 1), &[&host, &own])),
        true
    );
    let local = format!("Host: localhost:{}", s.addr.port());
    let local_origin = format!("Origin: http://localhost:{}", s.addr.port());
    assert_eq!(
        result(&post(&s, &set_body("o.own", 2), &[&local, &local_origin])),
        true
    );
    let listed = format!("Origin: {LISTED}");
    let r = post(
        &s,
        &set_body("o.listed", 1),
        &["Host: app.test:3000", &listed],
    );
    assert_eq!(result(&r), true);
    assert_eq!(read_key(&s, "o.own"), 2);
    assert_eq!(read_key(&s, "o.listed"), 1);

    // No Origin: curl, bots, hand-written clients, whatever their Host.
    assert_eq!(result(&post(&s, &set_body("o.curl", 1), &[])), true);
    let odd = "Host: some-name.test:1";
    assert_eq!(result(&post(&s, &set_body("o.curl", 2), &[odd])), true);
    assert_eq!(read_key(&s, "o.curl"), 2);

    // DNS rebinding: a page whose Origin agrees with its Host, on a name
    // that is not loopback, reaching a loopback-trusted peer.
    let rebind = ["Host: rebind.test:8080", "Origin: http://rebind.test:8080"];
    assert_refused(&post(&s, &set_body("o.rebind", 1), &rebind), "loopback");
    let r = post(&s, &get, &rebind);
    assert_refused(&r, "protected mode");
    assert_eq!(read_key(&s, "o.rebind"), Value::Null);
}

/// Hostile requests: a refusal consumes exactly its request (the next one
/// on the connection is answered), and an oversized, a non-UTF-8 or an
/// empty Origin is a foreign one.
#[test]
fn refusals_keep_the_connection_and_odd_origins_are_foreign() {
    let s = server("originh", "");
    let host = format!("Host: {}", s.addr);
    let mut c = s.connect();
    let mut both = request(&set_body("h.a", 1), &[&host, "Origin: http://evil.test"]);
    both.push_str(&request(&set_body("h.b", 1), &[&host]));
    c.send(both.as_bytes());
    assert_refused(&c.read_response(false), "Origin");
    assert_eq!(result(&c.read_response(false)), true);
    assert_eq!(read_key(&s, "h.a"), Value::Null);
    assert_eq!(read_key(&s, "h.b"), 1);

    let long = format!("Origin: http://{}.test", "a".repeat(8000));
    assert_refused(&post(&s, &set_body("h.c", 1), &[&host, &long]), "Origin");
    let mut bad = request(&set_body("h.c", 2), &[&host, "Connection: close"]).into_bytes();
    let at = bad.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    bad.splice(at..at, b"Origin: http://\xff\xfe.test\r\n".iter().copied());
    let mut c = s.connect();
    c.send(&bad);
    assert_refused(&c.read_response(false), "Origin");
    assert_refused(
        &post(&s, &set_body("h.c", 3), &[&host, "Origin: "]),
        "Origin",
    );
    assert_eq!(read_key(&s, "h.c"), Value::Null);
}

/// With users the Origin still counts (a cross-site page could otherwise
/// ride on a client certificate or `no_auth_user`), while a page on any
/// host name may call with its token: it is not trusted for loopback.
#[test]
fn with_users_a_foreign_origin_is_refused_before_the_token() {
    let users = format!(
        "[[modules.rpc.users]]\nname = \"bot\"\ntoken_hash = \"{TOKEN_HASH}\"\n\
         [modules.rpc.users.permissions]\nkv_read = [\">\"]\nkv_write = [\">\"]\n"
    );
    let s = server("originu", &users);
    let bearer = "Authorization: Bearer origin-token";
    let evil = "Origin: http://evil.test";
    let r = post(&s, &set_body("u.k", 1), &["Host: 127.0.0.1", evil, bearer]);
    assert_refused(&r, "Origin");
    // Refused before the credentials are looked at: 403, not 401.
    let r = post(
        &s,
        &set_body("u.k", 1),
        &["Host: 127.0.0.1", evil, "Authorization: Bearer x"],
    );
    assert_refused(&r, "Origin");
    let rebind = [
        "Host: rebind.test:8080",
        "Origin: http://rebind.test:8080",
        bearer,
    ];
    assert_eq!(result(&post(&s, &set_body("u.k", 2), &rebind)), true);
    let get = json!({"jsonrpc": "2.0", "method": "kv.get", "params": ["u.k"], "id": 1});
    let r = post(&s, &get.to_string(), &["Host: 127.0.0.1", bearer]);
    assert_eq!(result(&r), 2);
}
