//! The rpc module's WebSocket transport (`GET /rpc/ws`) against the real
//! server: the handshake and its refusals, JSON-RPC calls (reads, a
//! deferred write), pushes from the bus, fragmentation with an
//! interleaved ping, every protocol error's close code, a subscriber that
//! survives `RELOAD rpc`, and a third-party client (Python `websockets`).
//! The frames are built here by hand (not with `module_api::ws`), so a bug
//! shared by the module's encoder and decoder cannot hide.

use crate::common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// base64(SHA-1(KEY + GUID)), RFC 6455 section 1.3.
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MAX_LINE: usize = 4096;

fn ws_server(tag: &str) -> Server {
    ServerBuilder::new(&["http", "rpc"])
        .tag(tag)
        .toml(&format!(
            "[modules.rpc]\nmax_line_bytes = {MAX_LINE}\nws_max_fragments = 16\n"
        ))
        .start()
}

/// The upgrade request, with `extra` header lines (each without CRLF).
fn upgrade_request(s: &Server, extra: &[&str]) -> String {
    let mut req = format!(
        "GET /rpc/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        s.addr
    );
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !extra.iter().any(|h| h.starts_with("Sec-WebSocket-Key")) {
        req.push_str(&format!("Sec-WebSocket-Key: {KEY}\r\n"));
    }
    if !extra.iter().any(|h| h.starts_with("Sec-WebSocket-Version")) {
        req.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut v = vec![(u8::from(fin) << 7) | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => v.push(m | n as u8),
        n @ 126..=0xffff => {
            v.push(m | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(m | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x5a, 0x13, 0xc7, 0x81];
    if mask {
        v.extend_from_slice(&key);
    }
    v.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| if mask { b ^ key[i % 4] } else { *b }),
    );
    v
}

struct Ws {
    c: Client,
    next_id: u64,
}

impl Ws {
    /// Opens a WebSocket (asserting the 101 and its accept value).
    fn open(s: &Server) -> Ws {
        let mut c = s.connect();
        c.send(upgrade_request(s, &[]).as_bytes());
        let status = c.read_line();
        assert!(status.starts_with("HTTP/1.1 101 "), "{status}");
        let mut accept = None;
        loop {
            let line = c.read_line();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Sec-WebSocket-Accept: ") {
                accept = Some(v.to_string());
            }
        }
        assert_eq!(accept.as_deref(), Some(ACCEPT));
        Ws { c, next_id: 0 }
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.c.send(&frame(true, opcode, payload, true));
    }

    /// Reads one server frame: (fin, opcode, payload). Server frames are
    /// never masked.
    fn read(&mut self) -> (bool, u8, Vec<u8>) {
        let h = self.c.read_bytes(2);
        assert_eq!(h[1] & 0x80, 0, "a server frame is masked");
        assert_eq!(h[0] & 0x70, 0, "reserved bits");
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes(self.c.read_bytes(2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(self.c.read_bytes(8).try_into().unwrap()) as usize,
            n => n as usize,
        };
        (h[0] & 0x80 != 0, h[0] & 0x0f, self.c.read_bytes(len))
    }

    /// The next text frame, as JSON.
    fn json(&mut self) -> Value {
        let (fin, op, p) = self.read();
        assert!(fin && op == TEXT, "expected a text frame, got {op} {p:?}");
        serde_json::from_slice(&p)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&p)))
    }

    fn request(&mut self, method: &str, params: Value) -> (u64, String) {
        self.next_id += 1;
        let id = self.next_id;
        (
            id,
            json!({"jsonrpc":"2.0","method":method,"params":params,"id":id}).to_string(),
        )
    }

    /// A call's result (it must succeed).
    fn ok(&mut self, method: &str, params: Value) -> Value {
        let (id, req) = self.request(method, params);
        self.send(TEXT, req.as_bytes());
        let r = self.json();
        assert_eq!(r["id"], id, "{req}: {r}");
        assert!(r.get("error").is_none(), "{req}: {r}");
        r["result"].clone()
    }

    /// Expects a close frame with `code`, then the end of the connection.
    fn expect_close(&mut self, code: u16) {
        let (_, op, p) = self.read();
        assert_eq!(op, CLOSE, "{:?}", String::from_utf8_lossy(&p));
        assert_eq!(
            u16::from_be_bytes([p[0], p[1]]),
            code,
            "{:?}",
            String::from_utf8_lossy(&p[2..])
        );
        self.c.expect_closed(Duration::from_secs(5)).unwrap();
    }
}

fn handshake_status(s: &Server, extra: &[&str]) -> Response {
    let mut c = s.connect();
    c.send(upgrade_request(s, extra).as_bytes());
    c.read_response(false)
}

#[test]
fn websocket_transport() {
    let s = ws_server("rpcws");

    // The handshake's refusals.
    let r = handshake_status(&s, &["Sec-WebSocket-Key: c2hvcnQ="]);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = handshake_status(&s, &["Sec-WebSocket-Version: 8"]);
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    let r = handshake_status(&s, &["Origin: http://evil.example"]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(s.log().contains("evil.example"), "the refusal is logged");
    // DNS rebinding: a page on a foreign name that resolves to loopback
    // agrees with itself (Origin = Host), but in protected mode the host
    // must be a loopback name.
    let mut c = s.connect();
    c.send(
        format!(
            "GET /rpc/ws HTTP/1.1\r\nHost: rebind.example:80\r\nOrigin: http://rebind.example:80\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = c.read_line();
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let same = format!("Origin: http://{}", s.addr);
    let mut c = s.connect();
    c.send(upgrade_request(&s, &[&same]).as_bytes());
    assert!(c.read_line().starts_with("HTTP/1.1 101 "));

    // Calls: a read, a write (deferred to the writer), a read of it.
    let mut ws = Ws::open(&s);
    assert_eq!(ws.ok("sys.ping", json!({})), "pong");
    assert_eq!(ws.ok("kv.set", json!(["ws.k", {"a": [1, 2]}])), true);
    assert_eq!(ws.ok("kv.get", json!(["ws.k"])), json!({"a": [1, 2]}));
    // A read, a write and a read in one packet: replies in order.
    let batch: Vec<u8> = [
        ws.request("kv.get", json!(["ws.k"])),
        ws.request("kv.incr", json!(["ws.n", 5])),
        ws.request("kv.get", json!(["ws.n"])),
    ]
    .iter()
    .flat_map(|(_, r)| frame(true, TEXT, r.as_bytes(), true))
    .collect();
    ws.c.send(&batch);
    let replies: Vec<Value> = (0..3).map(|_| ws.json()).collect();
    assert_eq!(replies[0]["result"], json!({"a": [1, 2]}));
    assert_eq!(replies[1]["result"], 5, "{}", replies[1]);
    assert_eq!(replies[2]["result"], 5);
    assert_eq!(
        replies
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5, 6]
    );
    // A pretty-printed request (newlines in the text) that writes.
    let (id, _) = ws.request("x", json!(null));
    let pretty = format!("{{\n \"jsonrpc\": \"2.0\",\n \"method\": \"kv.set\",\n \"params\": [\"ws.p\", 1],\n \"id\": {id}\n}}");
    ws.send(TEXT, pretty.as_bytes());
    assert_eq!(ws.json(), json!({"jsonrpc":"2.0","result":true,"id":id}));

    // Subscribe; a publish from raw TCP arrives as a text frame.
    assert_eq!(ws.ok("bus.subscribe", json!({"topics": ["demo.>"]})), 1);
    let r = Rpc::connect(s.addr).call(
        "bus.publish",
        json!({"topic": "demo.tick", "data": {"n": 1}}),
    );
    assert_eq!(r["result"], 1, "{r}");
    let m = ws.json();
    assert_eq!(m["method"], "bus.message");
    assert_eq!(m["params"], json!({"topic": "demo.tick", "data": {"n": 1}}));

    // A fragmented message with a ping between its fragments: the pong
    // comes first, then the reply.
    let (id, req) = ws.request("kv.get", json!(["ws.k"]));
    let (a, b) = req.as_bytes().split_at(10);
    let (b, c) = b.split_at(5);
    let mut bytes = frame(false, TEXT, a, true);
    bytes.extend(frame(true, PING, b"hi", true));
    bytes.extend(frame(false, 0, b, true));
    bytes.extend(frame(true, 0, c, true));
    ws.c.send(&bytes);
    assert_eq!(ws.read(), (true, PONG, b"hi".to_vec()));
    let r = ws.json();
    assert_eq!(
        (r["id"].as_u64(), &r["result"]),
        (Some(id), &json!({"a": [1, 2]}))
    );
    // A frame sent a byte at a time.
    let (id, req) = ws.request("sys.ping", json!([]));
    for b in frame(true, TEXT, req.as_bytes(), true) {
        ws.c.send(&[b]);
    }
    assert_eq!(ws.json()["id"], id);
    // Close: the code is echoed, then the connection ends.
    ws.send(CLOSE, &[0x0f, 0xa0, b'b', b'y', b'e']);
    ws.expect_close(4000);

    // Protocol errors: each closes with its code.
    let mut ws = Ws::open(&s);
    ws.c.send(&frame(true, TEXT, b"{}", false));
    ws.expect_close(1002);
    let mut ws = Ws::open(&s);
    ws.send(
        BINARY,
        b"{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\",\"id\":1}",
    );
    ws.expect_close(1003);
    let mut ws = Ws::open(&s);
    ws.send(TEXT, &vec![b' '; MAX_LINE + 1]);
    ws.expect_close(1009);
    let mut ws = Ws::open(&s);
    // Fragments that add up to more than a message may hold.
    for _ in 0..3 {
        ws.c.send(&frame(
            false,
            if ws.next_id == 0 { TEXT } else { 0 },
            &vec![b' '; MAX_LINE / 2],
            true,
        ));
        ws.next_id += 1;
    }
    ws.expect_close(1009);
    let mut ws = Ws::open(&s);
    ws.send(TEXT, b"{\"a\":\"\xc3\x28\"}");
    ws.expect_close(1007);
    let mut ws = Ws::open(&s);
    ws.c.send(&frame(false, TEXT, b"[", true));
    for _ in 0..16 {
        ws.c.send(&frame(false, 0, b"", true));
    }
    ws.expect_close(1008);
    let mut ws = Ws::open(&s);
    ws.c.send(&frame(true, 0, b"x", true));
    ws.expect_close(1002);
    // A frame header announcing 2^62 bytes is refused at once.
    let mut ws = Ws::open(&s);
    ws.c.send(&[0x81, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0]);
    ws.expect_close(1009);

    python_client_subscribes(&s);

    let st = s.status();
    assert_eq!(st.expect("rpc").faults, 0);
}

/// A third-party client: Python's `websockets` subscribes, and a publish
/// from raw TCP reaches it.
fn python_client_subscribes(s: &Server) {
    let script = workspace().join("tests/ws/subscribe.py");
    // The first python3 that has the module (a pyenv shim on PATH may not
    // see the distribution's python3-websockets).
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import websockets"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or("python3");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(s.addr.port().to_string())
        .arg("py.*")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if line.is_empty() {
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        if status.code() == Some(2) && std::env::var_os("CI").is_none() {
            println!(
                "skipped: the python3 websockets module is missing ({})",
                err.trim()
            );
            return;
        }
        panic!("subscribe.py failed ({status}): {err}");
    }
    assert_eq!(line.trim(), "subscribed");
    let r = Rpc::connect(s.addr).call("bus.publish", json!({"topic": "py.x", "data": [1, "two"]}));
    assert_eq!(r["result"], 1, "{r}");
    line.clear();
    out.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(v, json!({"topic": "py.x", "data": [1, "two"]}));
    assert!(child.wait().unwrap().success());
}

/// A WebSocket subscriber, and a message whose first fragment arrived
/// before the reload, survive `RELOAD rpc`.
#[test]
fn a_ws_subscriber_survives_reload() {
    let s = ws_server("rpcwsreload");
    let mut ws = Ws::open(&s);
    assert_eq!(ws.ok("bus.subscribe", json!(["r.*"])), 1);
    let (id, req) = ws.request("kv.set", json!(["r.k", 7]));
    let (a, b) = req.as_bytes().split_at(12);
    ws.c.send(&frame(false, TEXT, a, true));
    // The fragment is taken before the reload (a ping behind it answers).
    ws.send(PING, b"");
    assert_eq!(ws.read().1, PONG);
    for gen in 2..=3 {
        let reply = s.admin("RELOAD rpc");
        assert!(reply.starts_with(&format!("OK rpc gen={gen}")), "{reply}");
    }
    ws.c.send(&frame(true, 0, b, true));
    assert_eq!(ws.json(), json!({"jsonrpc":"2.0","result":true,"id":id}));
    let r = Rpc::connect(s.addr).call("bus.publish", json!({"topic": "r.x", "data": 1}));
    assert_eq!(r["result"], 1, "{r}");
    assert_eq!(ws.json()["params"], json!({"topic": "r.x", "data": 1}));
    assert_eq!(ws.ok("kv.get", json!(["r.k"])), 7);
    assert_eq!(s.status().expect("rpc").faults, 0);
}

/// Headless Chromium runs the bus page (tests/browser/bus.sh) against this
/// server: its WebSocket opens and published messages show. Skipped when
/// Chromium is not installed (`make browser-check` runs the script by
/// itself).
#[test]
fn browser_shows_bus_messages() {
    let has_chromium = ["chromium", "chromium-browser"].iter().any(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !has_chromium {
        eprintln!("browser_shows_bus_messages: skipped, no chromium installed");
        return;
    }
    let page = |f: &str| std::fs::read(workspace().join("static_html/bus").join(f)).unwrap();
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("rpcwsbrowser")
        .file("bus/index.html", page("index.html"))
        .file("bus/bus.js", page("bus.js"))
        .file("bus/bus.css", page("bus.css"))
        .start();
    let shot = s.dir.join("bus.png");
    let out = Command::new(workspace().join("tests/browser/bus.sh"))
        .arg(format!("http://{}", s.addr))
        .env("SCREENSHOT", &shot)
        .output()
        .expect("run tests/browser/bus.sh");
    assert!(
        out.status.success(),
        "browser check failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
}
