//! Hostile clients against the bus's access control: a stream of wrong
//! tokens on one connection (closed after `max_auth_failures`, logged),
//! guessing from one address (paused, on raw TCP and HTTP alike), and
//! oversized or malformed `sys.auth` params (refused without hashing,
//! the connection unharmed).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// `printf bot1-token | sha256sum`.
const BOT1: &str = "sha256:214f5ce4185c54dcc78671b5fa27de9eb9f1b486e332624f92ea001eab0a6310";

fn server(tag: &str, settings: &str) -> Server {
    ServerBuilder::new(&["http", "rpc"])
        .tag(tag)
        .toml(&format!(
            "[modules.rpc]\n{settings}\n\n[[modules.rpc.users]]\nname = \"bot1\"\n\
             token_hash = \"{BOT1}\"\n[modules.rpc.users.permissions]\nkv_read = [\">\"]\n"
        ))
        .start()
}

fn auth_line(token: &str, id: usize) -> String {
    json!({"jsonrpc": "2.0", "method": "sys.auth", "params": {"token": token}, "id": id})
        .to_string()
        + "\n"
}

fn read(c: &mut Client) -> Value {
    let line = c.read_line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

fn post(s: &Server, token: &str) -> Response {
    let body = r#"{"jsonrpc":"2.0","method":"kv.get","params":["k"],"id":1}"#;
    s.request(format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// 20 wrong `sys.auth` pipelined in one write: five answers (the first
/// checked, the rest refused while the address is paused), then the
/// connection is closed; the log names the peer.
#[test]
fn twenty_wrong_auths_on_one_stream_close_it() {
    let s = server("authflood", "");
    let mut c = s.connect();
    let flood: String = (1..=20)
        .map(|i| auth_line(&format!("guess-{i}"), i))
        .collect();
    c.send_lenient(flood.as_bytes());
    let mut answered = Vec::new();
    while let Ok(line) = c.try_read_line() {
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"]["code"], -32062, "{v}");
        answered.push(v["id"].as_u64().unwrap());
    }
    println!(
        "20 wrong sys.auth pipelined: {} answered, then closed",
        answered.len()
    );
    assert_eq!(
        answered,
        [1, 2, 3, 4, 5],
        "max_auth_failures = 5 by default"
    );
    c.expect_closed(Duration::from_secs(5)).unwrap();
    let log = s.log();
    assert!(
        log.contains("failed authentication from 127.0.0.1"),
        "{log}"
    );
    assert!(
        log.contains("5 failed authentications (max_auth_failures); closing"),
        "{log}"
    );
    assert!(!log.contains("guess-1"), "tokens are never logged");
}

/// One wrong token pauses its address: during the pause a wrong token
/// (raw TCP or HTTP) is refused with a retry hint, logged at debug only
/// and without extending the pause, while the right token is still
/// checked and accepted (one guesser behind a shared address must not
/// lock everybody out); after the pause a wrong token is plainly wrong.
#[test]
fn a_guessing_address_is_paused() {
    let s = server("authpause", "auth_backoff_ms = 800");
    let mut c = s.connect();
    c.send(auth_line("wrong", 1).as_bytes());
    assert_eq!(read(&mut c)["error"]["message"], "authentication failed");
    let t = Instant::now();
    let mut other = s.connect();
    other.send(auth_line("wrong-again", 2).as_bytes());
    let v = read(&mut other);
    assert_eq!(v["error"]["code"], -32062, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("retry in"),
        "{v}"
    );
    let r = post(&s, "not-it");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("retry in"), "{}", r.text());
    // The right token, from the same address, within the pause.
    other.send(auth_line("bot1-token", 3).as_bytes());
    assert_eq!(read(&mut other)["result"], json!({"user": "bot1"}));
    assert_eq!(post(&s, "bot1-token").status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "checked within the pause"
    );
    let warned = s
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("failed authentication from"))
        .count();
    assert_eq!(
        warned,
        1,
        "only the failure that opened the pause: {}",
        s.log()
    );
    // The refusals did not extend the pause.
    std::thread::sleep(Duration::from_millis(900).saturating_sub(t.elapsed()));
    let mut third = s.connect();
    third.send(auth_line("wrong", 4).as_bytes());
    assert_eq!(
        read(&mut third)["error"]["message"],
        "authentication failed"
    );
}

/// Oversized and malformed params: -32602 each, nothing hashed or
/// counted, and the connection then logs in normally.
#[test]
fn oversized_and_malformed_auth_params() {
    let s = server("authparams", "max_auth_failures = 2");
    let mut c = s.connect();
    let huge = "x".repeat(900_000);
    let cases = [
        json!({"token": "y".repeat(1025)}),
        json!({"token": huge}),
        json!({"token": ""}),
        json!({"token": 5}),
        json!({"tokn": "bot1-token"}),
        json!({"token": "bot1-token", "user": ["bot1"]}),
        json!({"token": "bot1-token", "extra": 1}),
        json!(["bot1-token", "bot1", "more"]),
        json!([]),
    ];
    let t = Instant::now();
    for (i, params) in cases.iter().enumerate() {
        let line =
            json!({"jsonrpc": "2.0", "method": "sys.auth", "params": params, "id": i}).to_string();
        c.send(format!("{line}\n").as_bytes());
        let v = read(&mut c);
        assert_eq!(v["error"]["code"], -32602, "case {i}: {v}");
        assert_eq!(v["id"], i, "{v}");
    }
    // Not JSON at all.
    c.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"sys.auth\",\"params\":{\"token\":\n");
    assert_eq!(read(&mut c)["error"]["code"], -32700);
    println!("9 malformed sys.auth answered in {:?}", t.elapsed());
    // None of that counted as a failed login (max_auth_failures = 2).
    c.send(auth_line("bot1-token", 99).as_bytes());
    assert_eq!(read(&mut c)["result"], json!({"user": "bot1"}));
    assert!(!s.log().contains("failed authentication"), "{}", s.log());
}

/// Protected mode (no users) behind a proxy route back at our own port:
/// the connection the server accepts from its own upstream socket comes
/// from 127.0.0.1 but carries a remote client's bytes, so it is refused
/// (-32060), while a direct loopback client is served.
#[test]
fn a_proxy_route_back_at_our_own_port_is_not_loopback() {
    let port = free_port();
    let s = ServerBuilder::new(&["http", "rpc", "fx_proxy"])
        .tag("hostile-rpc-selffwd")
        .cli(&[
            "-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "-threads",
            "2",
        ])
        // Several event loops: the upstream socket is marked before its
        // connect starts, so whichever loop accepts it sees the mark.
        .server("event_loops = 4")
        .toml(&format!(
            "[modules.fx_proxy]\nupstreams = [\"127.0.0.1:{port}\"]\n"
        ))
        .start();
    let whoami = "{\"jsonrpc\":\"2.0\",\"method\":\"sys.whoami\",\"id\":1}\n";
    let mut c = s.connect();
    c.send(b"PROXY-ME KEEP\n");
    assert_eq!(c.read_line(), "KEPT");
    // Relayed to our own port as the first bytes of a new connection.
    c.send(whoami.as_bytes());
    let v = read(&mut c);
    assert_eq!(v["error"]["code"], -32060, "{v}");
    // A direct loopback client is served.
    let mut d = s.connect();
    d.send(whoami.as_bytes());
    assert_eq!(read(&mut d)["result"]["auth"], "loopback");
}
