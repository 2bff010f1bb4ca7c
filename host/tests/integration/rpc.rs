//! The `rpc` module (JSON-RPC 2.0 service bus) against the real server:
//! every method on raw TCP and on HTTP, batches, notifications, every error
//! code, pipelining, pub/sub with wildcards, slow subscribers, TTLs,
//! durability across `kill -9`, reloads under load, and the Python example.

use crate::common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::supervision::alive;
use common::*;
use serde_json::{json, Value};

fn rpc_server() -> Server {
    ServerBuilder::new(&["http", "rpc"]).tag("rpc").start()
}

/// Every method on both transports, with the same expectations.
#[test]
fn every_method_on_raw_tcp_and_http() {
    let s = rpc_server();
    let mut line = Rpc::connect(s.addr);
    for transport in ["raw", "http"] {
        let mut call = |method: &str, params: Value| -> Value {
            if transport == "raw" {
                line.call(method, params)
            } else {
                http_call(s.addr, method, params)
            }
        };
        let mut ok = |method: &str, params: Value| -> Value {
            let r = call(method, params.clone());
            assert!(
                r.get("error").is_none(),
                "{transport} {method} {params}: {r}"
            );
            r["result"].clone()
        };
        let p = |k: &str| format!("{transport}:{k}");
        assert_eq!(ok("sys.ping", json!(null)), "pong");
        assert_eq!(ok("sys.version", json!({}))["module"], "rpc");
        let methods = ok("sys.methods", json!([]));
        for m in [
            "sys.ping",
            "sys.methods",
            "sys.version",
            "kv.get",
            "kv.set",
            "kv.del",
            "kv.incr",
            "kv.cas",
            "kv.keys",
            "bus.subscribe",
            "bus.unsubscribe",
            "bus.publish",
        ] {
            let doc = methods[m]
                .as_str()
                .unwrap_or_else(|| panic!("{m} missing: {methods}"));
            assert!(!doc.is_empty() && !doc.contains('\n'), "{m}: {doc:?}");
        }

        assert_eq!(ok("kv.get", json!({"key": p("a")})), Value::Null);
        assert_eq!(
            ok("kv.set", json!({"key": p("a"), "value": {"n": [1, "x"]}})),
            true
        );
        assert_eq!(ok("kv.get", json!({"key": p("a")})), json!({"n": [1, "x"]}));
        assert_eq!(
            ok("kv.set", json!([p("b"), "text"])),
            true,
            "positional params"
        );
        assert_eq!(ok("kv.get", json!([p("b")])), "text");
        assert_eq!(ok("kv.incr", json!({"key": p("n")})), 1);
        assert_eq!(ok("kv.incr", json!({"key": p("n"), "by": 10})), 11);
        assert_eq!(ok("kv.incr", json!([p("n"), -12])), -1);
        assert_eq!(
            ok("kv.cas", json!({"key": p("n"), "expected": 5, "value": 6})),
            false
        );
        assert_eq!(
            ok(
                "kv.cas",
                json!({"key": p("n"), "expected": -1, "value": "swapped"})
            ),
            true
        );
        assert_eq!(ok("kv.get", json!({"key": p("n")})), "swapped");
        assert_eq!(
            ok(
                "kv.cas",
                json!({"key": p("c"), "expected": null, "value": 1})
            ),
            true
        );
        assert_eq!(
            ok(
                "kv.cas",
                json!({"key": p("c"), "expected": null, "value": 2})
            ),
            false
        );
        assert_eq!(
            ok(
                "kv.cas",
                json!({"key": p("c"), "expected": 1, "value": null})
            ),
            true
        );
        assert_eq!(
            ok("kv.get", json!({"key": p("c")})),
            Value::Null,
            "cas to null deletes"
        );
        assert_eq!(
            ok("kv.keys", json!({"prefix": p("")})),
            json!([p("a"), p("b"), p("n")])
        );
        assert_eq!(
            ok("kv.keys", json!({"prefix": p(""), "limit": 2})),
            json!([p("a"), p("b")])
        );
        assert_eq!(
            ok("kv.keys", json!({"prefix": p(""), "after": p("a")})),
            json!([p("b"), p("n")])
        );
        assert_eq!(ok("kv.del", json!({"key": p("a")})), true);
        assert_eq!(ok("kv.del", json!({"key": p("a")})), false);
        assert_eq!(
            ok(
                "kv.set",
                json!({"key": p("t"), "value": 1, "ttl_ms": 60000})
            ),
            true
        );
        assert_eq!(ok("kv.get", json!({"key": p("t")})), 1);
        assert_eq!(
            ok("bus.publish", json!({"topic": "nobody.here", "data": 1})),
            0
        );
    }
    // Subscriptions need the raw transport; HTTP gets -32030.
    assert_eq!(line.ok("bus.subscribe", json!({"topics": ["x.*"]})), 1);
    assert_eq!(line.ok("bus.subscribe", json!(["y", "x.*"])), 2);
    assert_eq!(line.ok("bus.unsubscribe", json!({"topics": ["y"]})), 1);
    assert_eq!(line.ok("bus.unsubscribe", json!({})), 0);
    assert_eq!(
        http_call(s.addr, "bus.subscribe", json!({"topics": ["x"]}))["error"]["code"],
        -32030
    );
    // Both transports see the same data.
    assert_eq!(line.ok("kv.get", json!(["http:b"])), "text");
}

#[test]
fn batches_and_notifications() {
    let s = rpc_server();
    let mut l = Rpc::connect(s.addr);
    let batch = r#"[{"jsonrpc":"2.0","method":"kv.set","params":["bk",1]},{"jsonrpc":"2.0","method":"kv.incr","params":["bk"],"id":"a"},{"jsonrpc":"2.0","method":"nope","id":2},7,{"jsonrpc":"2.0","method":"kv.get","params":["bk"],"id":3}]"#;
    for transport in ["raw", "http"] {
        let v: Value = if transport == "raw" {
            l.send_line(batch);
            l.read()
        } else {
            let r = post_rpc(s.addr, batch, &[]);
            assert_eq!(r.status, 200);
            serde_json::from_slice(&r.body).unwrap()
        };
        let a = v.as_array().unwrap_or_else(|| panic!("{transport}: {v}"));
        assert_eq!(
            a.len(),
            4,
            "{transport}: the notification gets no reply: {v}"
        );
        assert_eq!(a[0]["id"], "a");
        assert_eq!(a[0]["result"], 2);
        assert_eq!(a[1]["error"]["code"], -32601);
        assert_eq!(a[2]["error"]["code"], -32600);
        assert_eq!(a[2]["id"], Value::Null);
        assert_eq!(a[3]["result"], 2);
    }
    // Notifications only: nothing on raw TCP (the next reply is the
    // ping's), 204 on HTTP; their effects happen all the same.
    let notes = r#"[{"jsonrpc":"2.0","method":"kv.set","params":["nk",1]},{"jsonrpc":"2.0","method":"kv.incr","params":["nk"]}]"#;
    l.send_line(notes);
    l.send_line(r#"{"jsonrpc":"2.0","method":"kv.incr","params":["nk"]}"#);
    l.send_line(r#"{"jsonrpc":"2.0","method":"no.such.method"}"#);
    assert_eq!(l.ok("kv.get", json!(["nk"])), 3);
    let r = post_rpc(s.addr, notes, &[]);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(l.ok("kv.get", json!(["nk"])), 2);
    assert!(!l.has_unread());
}

#[test]
fn every_error_code() {
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("rpc-errors")
        .toml("[modules.rpc]\nmax_subscriptions = 2\nmax_line_bytes = 4096\nmax_batch = 3")
        .start();
    let mut l = Rpc::connect(s.addr);
    let raw = |l: &mut Rpc, text: &str| -> Value {
        l.send_line(text);
        l.read()
    };
    let code = |v: &Value| v["error"]["code"].as_i64().unwrap_or_else(|| panic!("{v}"));
    // -32700: not JSON, anywhere on the connection; the id is null.
    for bad in [
        r#"{"jsonrpc":"2.0","method""#,
        "hello",
        "[1,",
        "{\"a\":\u{1}}",
    ] {
        let v = raw(&mut l, bad);
        assert_eq!(code(&v), -32700, "{bad}: {v}");
        assert_eq!(v["id"], Value::Null);
    }
    // -32600: JSON but not a request.
    for bad in [
        r#"{"method":"sys.ping","id":1}"#,
        r#"{"jsonrpc":"1.0","method":"sys.ping","id":1}"#,
        r#"{"jsonrpc":"2.0","method":5,"id":1}"#,
        r#"{"jsonrpc":"2.0","method":"sys.ping","params":"x","id":1}"#,
        r#"{"jsonrpc":"2.0","method":"sys.ping","id":[1]}"#,
        "[]",
        "42",
        r#"[1,2,3,4]"#,
    ] {
        assert_eq!(code(&raw(&mut l, bad)), -32600, "{bad}");
    }
    // -32601, -32602.
    assert_eq!(l.err("kv.frobnicate", json!({})).0, -32601);
    assert_eq!(l.err("kv.get", json!({"kee": "a"})).0, -32602);
    assert_eq!(
        l.err("kv.set", json!({"key": "a", "value": 1, "ttl": 5})).0,
        -32602
    );
    assert_eq!(
        l.err("kv.set", json!({"key": "a", "value": null})).0,
        -32602
    );
    assert_eq!(l.err("kv.set", json!({"key": "", "value": 1})).0, -32602);
    assert_eq!(
        l.err("bus.publish", json!({"topic": "a.*", "data": 1})).0,
        -32602
    );
    assert_eq!(
        l.err("bus.subscribe", json!({"topics": ["a..b"]})).0,
        -32602
    );
    // Server codes.
    assert_eq!(l.ok("kv.set", json!(["s", "not a number"])), true);
    assert_eq!(l.err("kv.incr", json!(["s"])).0, -32010);
    assert_eq!(l.ok("kv.set", json!(["big", i64::MAX])), true);
    assert_eq!(l.err("kv.incr", json!(["big"])).0, -32011);
    assert_eq!(
        http_call(s.addr, "bus.unsubscribe", json!({}))["error"]["code"],
        -32030
    );
    assert_eq!(l.ok("bus.subscribe", json!(["a", "b"])), 2);
    assert_eq!(l.err("bus.subscribe", json!(["c"])).0, -32031);
    // None of that closed the connection.
    assert_eq!(l.ok("sys.ping", json!([])), "pong");
    // HTTP: the same codes in a 200 body; HTTP-level problems as statuses.
    let r = post_rpc(s.addr, "{nope", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["error"]["code"],
        -32700
    );
    let r = s.request("POST /rpc HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert_eq!(r.status, 415);
    let r = s.request("POST /rpcx HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert_eq!(r.status, 404);
    let r = s.request("POST /rpc HTTP/1.1\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 413);
    // -32040: a line over the limit is answered, then the connection closes;
    // replies to earlier pipelined requests still arrive first.
    let mut big = Rpc::connect(s.addr);
    let huge = format!(
        r#"{{"jsonrpc":"2.0","method":"kv.set","params":["h","{}"],"id":9}}"#,
        "x".repeat(5000)
    );
    big.raw().send_lenient(
        format!("{{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\",\"id\":1}}\n{huge}\n").as_bytes(),
    );
    assert_eq!(big.read()["result"], "pong");
    let v = big.read();
    assert_eq!(code(&v), -32040, "{v}");
    big.raw().expect_closed(Duration::from_secs(5)).unwrap();
    assert_eq!(l.ok("kv.get", json!(["h"])), Value::Null);
    // -32001: while the module is gone, the host answers its prefixes.
    s.remove_module("rpc");
    let reply = s.admin("RELOAD");
    assert!(reply.contains("OK rpc removed"), "{reply}");
    let mut gone = Rpc::connect(s.addr);
    gone.send_line(r#"{"jsonrpc":"2.0","method":"sys.ping","id":1}"#);
    let v = gone.read();
    assert_eq!(code(&v), -32001, "{v}");
    assert_eq!(v["error"]["message"], "service unavailable, retry");
}

/// Thousands of requests written at once on one connection, reads and
/// writes mixed: replies come back in order, each seeing the ones before.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = rpc_server();
    let mut l = Rpc::connect(s.addr);
    let mut text = String::new();
    let n = 3000;
    for i in 0..n {
        let req = match i % 6 {
            0 => json!({"jsonrpc":"2.0","method":"kv.incr","params":["ctr"],"id":i}),
            1 => json!({"jsonrpc":"2.0","method":"kv.get","params":["ctr"],"id":i}),
            2 => json!({"jsonrpc":"2.0","method":"kv.set","params":[format!("k{i}"), i],"id":i}),
            3 => json!({"jsonrpc":"2.0","method":"kv.get","params":[format!("k{}", i - 1)],"id":i}),
            4 => json!({"jsonrpc":"2.0","method":"sys.ping","id":i}),
            _ => json!({"jsonrpc":"2.0","method":"kv.nope","id":i}),
        };
        text.push_str(&req.to_string());
        text.push('\n');
    }
    let writer = {
        let mut stream = l.raw().stream.try_clone().unwrap();
        thread::spawn(move || stream.write_all(text.as_bytes()).unwrap())
    };
    for i in 0..n {
        let v = l.read();
        assert_eq!(v["id"], i, "reply {i} out of order: {v}");
        let want = match i % 6 {
            0 | 1 => json!(i / 6 + 1),
            2 => json!(true),
            3 => json!(i - 1),
            4 => json!("pong"),
            _ => Value::Null,
        };
        if i % 6 == 5 {
            assert_eq!(v["error"]["code"], -32601);
        } else {
            assert_eq!(v["result"], want, "reply {i}: {v}");
        }
    }
    writer.join().unwrap();
    // Alternating writes and reads, one at a time: each read sees the write.
    for i in 0..300 {
        assert_eq!(l.ok("kv.set", json!(["alt", i])), true);
        assert_eq!(l.ok("kv.get", json!(["alt"])), i);
    }
}

/// Big values read right after a write (their replies are pushed) arrive
/// whole, and a connection that reads its replies is never cut off.
#[test]
fn big_values_after_writes() {
    let s = rpc_server();
    let mut l = Rpc::connect(s.addr);
    let big = "b".repeat(300 * 1024);
    let mut text = String::new();
    for i in 0..8 {
        text.push_str(&json!({"jsonrpc":"2.0","method":"kv.set","params":[format!("big{i}"), big],"id":format!("s{i}")}).to_string());
        text.push('\n');
        text.push_str(
            &json!({"jsonrpc":"2.0","method":"kv.get","params":[format!("big{i}")],"id":i})
                .to_string(),
        );
        text.push('\n');
    }
    let writer = {
        let mut stream = l.raw().stream.try_clone().unwrap();
        thread::spawn(move || stream.write_all(text.as_bytes()).unwrap())
    };
    for i in 0..8 {
        assert_eq!(l.read()["id"], format!("s{i}"));
        let v = l.read();
        assert_eq!(v["id"], i);
        assert_eq!(v["result"].as_str().map(str::len), Some(big.len()));
    }
    writer.join().unwrap();
    assert_eq!(l.ok("sys.ping", json!([])), "pong");
}

/// `printf '...' | nc -q1 host port`: the client sends its requests, then
/// shuts its sending side; every reply still arrives, writes included.
#[test]
fn replies_reach_a_client_that_half_closed() {
    let s = rpc_server();
    for round in 0..20 {
        let mut c = s.connect();
        c.send(format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\",\"id\":0}}\n{{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":[\"hc\",{round}],\"id\":1}}\n{{\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":[\"hc\"],\"id\":2}}\n"
        ).as_bytes());
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let replies: Vec<Value> = (0..3)
            .map(|_| serde_json::from_str(&c.read_line()).unwrap())
            .collect();
        assert_eq!(replies[0]["result"], "pong");
        assert_eq!(replies[1]["result"], true, "round {round}");
        assert_eq!(replies[2]["result"], round);
        c.expect_closed(Duration::from_secs(5)).unwrap();
    }
}

/// A request's bytes may arrive in pieces, on both transports.
#[test]
fn requests_split_across_packets() {
    let s = rpc_server();
    let mut l = Rpc::connect(s.addr);
    for piece in [
        r#"{"jsonrpc":"2.0","me"#,
        r#"thod":"kv.set","params":["sp""#,
        ",7],\"id\":1}\n{\"jsonrpc\"",
    ] {
        l.send_raw(piece.as_bytes());
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(l.read()["result"], true);
    l.send_raw(b":\"2.0\",\"method\":\"kv.get\",\"params\":[\"sp\"],\"id\":2}\n");
    assert_eq!(l.read()["result"], 7);

    let body = r#"{"jsonrpc":"2.0","method":"kv.incr","params":["sp2"],"id":1}"#;
    let head = format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut c = s.connect();
    for _ in 0..2 {
        c.send(head.as_bytes());
        thread::sleep(Duration::from_millis(50));
        c.send(&body.as_bytes()[..10]);
        thread::sleep(Duration::from_millis(50));
        c.send(&body.as_bytes()[10..]);
        let r = c.read_response(false);
        assert_eq!(r.status, 200);
    }
    assert_eq!(Rpc::connect(s.addr).ok("kv.get", json!(["sp2"])), 2);
}

/// Three connections: two subscribers (one with a wildcard), one publisher.
#[test]
fn pubsub_across_three_connections_with_a_wildcard() {
    let s = rpc_server();
    let mut a = Rpc::connect(s.addr);
    let mut b = Rpc::connect(s.addr);
    let mut p = Rpc::connect(s.addr);
    assert_eq!(a.ok("bus.subscribe", json!({"topics": ["chat.*"]})), 1);
    assert_eq!(
        b.ok("bus.subscribe", json!({"topics": ["chat.room1", "news"]})),
        2
    );
    assert_eq!(
        p.ok(
            "bus.publish",
            json!({"topic": "chat.room1", "data": {"text": "hi"}})
        ),
        2
    );
    assert_eq!(
        p.ok("bus.publish", json!({"topic": "chat.room2", "data": 2})),
        1
    );
    assert_eq!(
        p.ok("bus.publish", json!({"topic": "news", "data": [3]})),
        1
    );
    assert_eq!(
        p.ok(
            "bus.publish",
            json!({"topic": "chat.room1.thread", "data": 4})
        ),
        0,
        "* is one segment"
    );
    assert_eq!(p.ok("bus.publish", json!({"topic": "chat", "data": 5})), 0);
    let msg = |topic: &str, data: Value| json!({"jsonrpc":"2.0","method":"bus.message","params":{"topic": topic, "data": data}});
    assert_eq!(a.read(), msg("chat.room1", json!({"text": "hi"})));
    assert_eq!(a.read(), msg("chat.room2", json!(2)));
    assert_eq!(b.read(), msg("chat.room1", json!({"text": "hi"})));
    assert_eq!(b.read(), msg("news", json!([3])));
    // A subscriber can still make calls; notifications and replies interleave.
    assert_eq!(a.ok("kv.set", json!(["from-a", 1])), true);
    assert_eq!(
        b.ok("bus.unsubscribe", json!({"topics": ["chat.room1"]})),
        1
    );
    assert_eq!(
        p.ok("bus.publish", json!({"topic": "chat.room1", "data": 6})),
        1
    );
    assert_eq!(a.read(), msg("chat.room1", json!(6)));
    // A closed subscriber is forgotten.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = p.ok("bus.publish", json!({"topic": "chat.room3", "data": 7}));
        if n == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "closed subscriber still counted");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!b.has_unread());
    // HTTP can publish too.
    assert_eq!(
        http_call(s.addr, "bus.publish", json!({"topic": "news", "data": "h"}))["result"],
        1
    );
    assert_eq!(b.read(), msg("news", json!("h")));
}

/// A subscriber that stops reading gets a bounded queue, then the overflow
/// notice and a disconnect; the publisher is never held up.
#[test]
fn slow_subscriber_is_told_and_disconnected() {
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("rpc-slow")
        .server("max_push_backlog = 65536")
        .start();
    let mut sub = Rpc::connect(s.addr);
    assert_eq!(sub.ok("bus.subscribe", json!(["flood"])), 1);
    let mut p = Rpc::connect(s.addr);
    let worker = s.worker_pid();
    let rss_before = rss_kib(worker);
    let chunk = "x".repeat(32 * 1024);
    let started = Instant::now();
    let total = 600;
    for round in 0..total / 50 {
        let mut text = String::new();
        for i in 0..50 {
            let id = round * 50 + i;
            text.push_str(&json!({"jsonrpc":"2.0","method":"bus.publish","params":{"topic":"flood","data":[id, chunk]},"id":id}).to_string());
            text.push('\n');
        }
        p.send_raw(text.as_bytes());
        for i in 0..50 {
            let v = p.read();
            assert_eq!(v["id"], round * 50 + i);
            assert!(v["result"].as_u64().unwrap() <= 1, "{v}");
        }
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "publisher held up: {took:?}");
    let rss_after = rss_kib(worker);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The subscriber reads now: some messages in order, then the notice,
    // then the end of the stream.
    let mut got = 0u64;
    let last = loop {
        let line = sub
            .raw()
            .try_read_line()
            .unwrap_or_else(|e| panic!("after {got} messages: {e}"));
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["method"] != "bus.message" {
            break v;
        }
        assert_eq!(v["params"]["data"][0], got, "messages in order");
        got += 1;
    };
    assert!(got > 0 && got < total, "{got} messages before the cut");
    assert_eq!(last["method"], "bus.overflow", "{last}");
    sub.raw().expect_closed(Duration::from_secs(5)).unwrap();
    // Forgotten once gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.ok("bus.publish", json!({"topic": "flood", "data": 0})) != 0 {
        assert!(
            Instant::now() < deadline,
            "the dropped subscriber is still counted"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ttl_expiry_and_background_purge() {
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("rpc-ttl")
        .toml("[modules.rpc]\npurge_interval_ms = 100")
        .start();
    let mut l = Rpc::connect(s.addr);
    assert_eq!(
        l.ok(
            "kv.set",
            json!({"key": "t:read", "value": 1, "ttl_ms": 300})
        ),
        true
    );
    for i in 0..20 {
        assert_eq!(
            l.ok(
                "kv.set",
                json!({"key": format!("t:{i}"), "value": i, "ttl_ms": 300})
            ),
            true
        );
    }
    assert_eq!(l.ok("kv.set", json!(["t:keep", 1])), true);
    assert_eq!(l.ok("kv.get", json!(["t:read"])), 1);
    assert_eq!(
        l.ok("kv.keys", json!({"prefix": "t:"}))
            .as_array()
            .unwrap()
            .len(),
        22
    );
    // A TTL-less set clears an earlier TTL; incr keeps one.
    assert_eq!(
        l.ok("kv.set", json!({"key": "t:x", "value": 1, "ttl_ms": 300})),
        true
    );
    assert_eq!(l.ok("kv.set", json!(["t:x", 2])), true);
    assert_eq!(
        l.ok("kv.set", json!({"key": "t:i", "value": 1, "ttl_ms": 300})),
        true
    );
    assert_eq!(l.ok("kv.incr", json!(["t:i"])), 2);
    thread::sleep(Duration::from_millis(450));
    assert_eq!(
        l.ok("kv.get", json!(["t:read"])),
        Value::Null,
        "expired on read"
    );
    assert_eq!(l.ok("kv.get", json!(["t:i"])), Value::Null);
    assert_eq!(
        l.ok("kv.keys", json!({"prefix": "t:"})),
        json!(["t:keep", "t:x"])
    );
    assert_eq!(
        l.ok("kv.incr", json!(["t:5"])),
        1,
        "an expired counter starts again"
    );
    // Purged from memory (and disk) in the background without any read.
    let st = s.wait_status(Duration::from_secs(5), |st| {
        st.expect("rpc").num("keys") == 3
    });
    assert_eq!(st.expect("rpc").num("keys"), 3, "{}", st.raw);
    assert!(st.expect("rpc").num("purged") >= 21, "{}", st.raw);
}

/// What `kill -9` hits in the durability tests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// The worker, which holds the data; the leader starts a new one on
    /// the same data directory.
    Worker,
    /// Worker and leader; a new server is started on the same database.
    Server,
}

/// Writes acknowledged right before `kill -9` — while more are in flight —
/// are all there after the restart.
fn durable_across_kill_9(sync: &str, kill: Kill) {
    let dir = temp_dir(&format!("rpc-durable-{sync}"));
    let toml = format!(
        "[modules.rpc]\ndb = \"{}\"\nsync = \"{sync}\"",
        dir.join("kv.sqlite").display()
    );
    let mut a = ServerBuilder::new(&["rpc"])
        .tag("rpc-kill")
        .toml(&toml)
        .start();
    let worker = a.worker_pid();
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let addr = a.addr;
            let acked = acked.clone();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut done: Vec<(String, u64)> = Vec::new();
                let mut max_incr = 0u64;
                let mut i = 0u64;
                'outer: loop {
                    let mut text = String::new();
                    for n in i..i + 25 {
                        text.push_str(&format!(
                            "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":[\"w{t}-{n}\",{n}],\"id\":{n}}}\n{{\"jsonrpc\":\"2.0\",\"method\":\"kv.incr\",\"params\":[\"count\"],\"id\":\"c{n}\"}}\n"
                        ));
                    }
                    if c.stream.write_all(text.as_bytes()).is_err() {
                        break;
                    }
                    for _ in 0..50 {
                        // The kill ends the stream; everything read before
                        // it was acknowledged.
                        let Ok(line) = c.try_read_line() else { break 'outer };
                        let v: Value = serde_json::from_str(&line).unwrap();
                        assert!(v.get("error").is_none(), "{v}");
                        match v["id"].as_u64() {
                            Some(n) => done.push((format!("w{t}-{n}"), n)),
                            None => max_incr = max_incr.max(v["result"].as_u64().unwrap()),
                        }
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 25;
                }
                (done, max_incr)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) < 4000 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let killed = unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) };
    assert_eq!(killed, 0);
    if kill == Kill::Server {
        a.signal(libc::SIGKILL);
        assert!(a.wait_exit(Duration::from_secs(5)).is_some());
    }
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let total: usize = results.iter().map(|(d, _)| d.len()).sum();
    assert!(
        total > 1000,
        "only {total} writes acknowledged before the kill"
    );
    let max_incr = results.iter().map(|(_, m)| *m).max().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(worker) {
        assert!(
            Instant::now() < deadline,
            "worker {worker} survived SIGKILL"
        );
        thread::sleep(Duration::from_millis(10));
    }

    let b;
    let check = match kill {
        Kill::Worker => {
            // The leader replaces the worker on the same sockets.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut c = a.connect();
                c.send_lenient(b"{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\",\"id\":1}\n");
                if c.try_read_line().is_ok_and(|l| l.contains("pong")) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "no worker after the kill:\n{}",
                    a.log()
                );
                thread::sleep(Duration::from_millis(50));
            }
            assert_ne!(a.worker_pid(), worker);
            &a
        }
        Kill::Server => {
            b = ServerBuilder::new(&["rpc"])
                .tag("rpc-restart")
                .toml(&toml)
                .start();
            &b
        }
    };
    let mut l = Rpc::connect(check.addr);
    for (key, n) in results.iter().flat_map(|(d, _)| d) {
        assert_eq!(l.ok("kv.get", json!([key])), *n, "acknowledged {key} lost");
    }
    let count = l.ok("kv.get", json!(["count"])).as_u64().unwrap();
    assert!(
        count >= max_incr,
        "counter {count} < acknowledged {max_incr}"
    );
    eprintln!("sync={sync}: {total} acknowledged sets and {max_incr} increments survived");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn durable_across_kill_9_of_the_worker_sync_normal() {
    durable_across_kill_9("normal", Kill::Worker);
}

#[test]
fn durable_across_kill_9_of_the_server_sync_normal() {
    durable_across_kill_9("normal", Kill::Server);
}

#[test]
fn durable_across_kill_9_of_the_worker_sync_full() {
    durable_across_kill_9("full", Kill::Worker);
}

#[test]
fn durable_across_kill_9_of_the_server_sync_full() {
    durable_across_kill_9("full", Kill::Server);
}

/// `RELOAD rpc` under load: no request fails or is reordered, pending
/// calls complete, subscriptions stay.
#[test]
fn subscriptions_and_pending_calls_survive_reload() {
    let s = rpc_server();
    let mut sub = Rpc::connect(s.addr);
    assert_eq!(sub.ok("bus.subscribe", json!(["t.*"])), 1);
    let running = Arc::new(AtomicBool::new(true));
    let raw_writer = {
        let running = running.clone();
        let addr = s.addr;
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut next = 1u64;
            while running.load(Ordering::Relaxed) {
                let mut text = String::new();
                for i in next..next + 100 {
                    text.push_str(&format!(
                        "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.incr\",\"params\":[\"ctr\"],\"id\":{i}}}\n{{\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":[\"ctr\"],\"id\":\"g{i}\"}}\n"
                    ));
                }
                c.send(text.as_bytes());
                for i in next..next + 100 {
                    let v: Value = serde_json::from_str(&c.read_line()).unwrap();
                    assert_eq!(v, json!({"jsonrpc":"2.0","result":i,"id":i}));
                    let v: Value = serde_json::from_str(&c.read_line()).unwrap();
                    assert_eq!(v, json!({"jsonrpc":"2.0","result":i,"id":format!("g{i}")}));
                }
                next += 100;
            }
            next - 1
        })
    };
    let http_writer = {
        let running = running.clone();
        let addr = s.addr;
        thread::spawn(move || {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                i += 1;
                let body =
                    format!(r#"{{"jsonrpc":"2.0","method":"kv.incr","params":["hctr"],"id":{i}}}"#);
                let mut c = Client::connect(addr);
                c.send(format!("POST /rpc HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
                let r = c.read_response(false);
                assert_eq!(r.status, 200, "{}", r.text());
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["result"], i, "{v}");
            }
            i
        })
    };
    let publisher = {
        let running = running.clone();
        let addr = s.addr;
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut sent = 0u64;
            while running.load(Ordering::Relaxed) {
                let req = json!({"jsonrpc":"2.0","method":"bus.publish","params":{"topic":"t.x","data":sent},"id":sent});
                c.send(format!("{req}\n").as_bytes());
                let v: Value = serde_json::from_str(&c.read_line()).unwrap();
                assert_eq!(v["result"], 1, "publish {sent} reached {v}");
                sent += 1;
                thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    for gen in 2..=6 {
        thread::sleep(Duration::from_millis(100));
        let reply = s.admin("RELOAD rpc");
        assert!(reply.starts_with(&format!("OK rpc gen={gen}")), "{reply}");
    }
    thread::sleep(Duration::from_millis(100));
    running.store(false, Ordering::Relaxed);
    let n = raw_writer.join().unwrap();
    let http_done = http_writer.join().unwrap();
    let published = publisher.join().unwrap();
    assert!(http_done > 0 && published > 0);
    for i in 0..published {
        let v = sub.read();
        assert_eq!(v["params"]["data"], i, "message {i}: {v}");
    }
    let mut l = Rpc::connect(s.addr);
    assert_eq!(l.ok("kv.get", json!(["ctr"])), n);
    assert_eq!(l.ok("kv.get", json!(["hctr"])), http_done);
    let st = s.status();
    assert_eq!(st.expect("rpc").gen, 6);
    assert_eq!(st.expect("rpc").faults, 0);
    let log = s.log();
    assert_eq!(log.matches("handing over").count(), 5, "{log}");
    assert!(!log.contains("-32001") && !log.contains("ERROR"), "{log}");
    eprintln!(
        "{n} pipelined increments, {http_done} over HTTP, {published} messages across 5 reloads"
    );
    for l in log.lines().filter(|l| l.contains("forwarded")) {
        eprintln!("{l}");
    }
}

/// The Python client in examples/ runs against the real server.
#[test]
fn python_example_client() {
    let s = rpc_server();
    let script = workspace().join("examples/rpc_client.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .args(["--host", "127.0.0.1", "--port", &s.addr.port().to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not finish in 20 s");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "example failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("got greeting = {'text': 'hello'"),
        "{stdout}"
    );
    assert!(stdout.contains("received on chat.room1: "), "{stdout}");
    let mut l = Rpc::connect(s.addr);
    assert_eq!(l.ok("kv.get", json!(["example:visits"])), 1);
}

/// `UPGRADE` (a new worker process while the old one drains): the new
/// worker's rpc waits for the old one to let go of the database, so no
/// increment is lost or counted twice.
///
/// A connection the old worker accepted just before it drained may be
/// closed before its request is read; that increment may or may not have
/// been made, so the final count lies between the acknowledged and the
/// attempted ones.
#[test]
fn upgrade_hands_the_database_to_the_new_worker() {
    let s = rpc_server();
    let first = s.worker_pid();
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, running) = (s.addr, running.clone());
            thread::spawn(move || {
                let (mut seen, mut unknown) = (Vec::new(), 0u64);
                while running.load(Ordering::Relaxed) {
                    // A new connection each time, so calls reach the new
                    // worker as soon as it accepts.
                    let mut c = Client::connect(addr);
                    c.send_lenient(
                        b"{\"jsonrpc\":\"2.0\",\"method\":\"kv.incr\",\"params\":[\"up\"],\"id\":1}\n",
                    );
                    match c.try_read_line() {
                        Ok(line) => {
                            let v: Value = serde_json::from_str(&line).unwrap();
                            seen.push(v["result"].as_u64().unwrap_or_else(|| panic!("{v}")));
                        }
                        Err(_) => unknown += 1,
                    }
                }
                (seen, unknown)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    let reply = s.admin("UPGRADE");
    assert!(reply.starts_with("OK upgrading"), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(first) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(first), "old worker still running");
    thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::Relaxed);
    let (mut all, mut unknown) = (Vec::new(), 0);
    for c in clients {
        let (seen, u) = c.join().unwrap();
        all.extend(seen);
        unknown += u;
    }
    let acked = all.len() as u64;
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, acked, "an increment was counted twice");
    let total = Rpc::connect(s.addr)
        .ok("kv.get", json!(["up"]))
        .as_u64()
        .unwrap();
    assert!(
        (acked..=acked + unknown).contains(&total),
        "counter {total}, {acked} acknowledged, {unknown} without a reply"
    );
    assert_ne!(s.worker_pid(), first);
    eprintln!("{acked} increments acknowledged across UPGRADE, {unknown} without a reply");
}

/// A second server started on the same database waits for the first to
/// let go instead of serving a stale copy.
#[test]
fn a_second_server_on_the_same_database_waits() {
    let dir = temp_dir("rpc-two");
    let toml = format!(
        "[modules.rpc]\ndb = \"{}\"",
        dir.join("kv.sqlite").display()
    );
    let mut a = ServerBuilder::new(&["rpc"])
        .tag("rpc-a")
        .toml(&toml)
        .start();
    assert_eq!(
        Rpc::connect(a.addr).ok("kv.set", json!(["owner", "a"])),
        true
    );
    let b = ServerBuilder::new(&["rpc"])
        .tag("rpc-b")
        .toml(&toml)
        .start();
    let st = b.status();
    assert_eq!(st.expect("rpc").field("standby"), Some("1"), "{}", st.raw);
    let waiting = {
        let addr = b.addr;
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            c.send(
                b"{\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":[\"owner\"],\"id\":1}\n",
            );
            let v: Value = serde_json::from_str(&c.read_line()).unwrap();
            v
        })
    };
    thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "answered while another server owns the data"
    );
    assert_eq!(
        Rpc::connect(a.addr).ok("kv.set", json!(["owner", "a2"])),
        true
    );
    let worker = a.worker_pid();
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(worker) {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(waiting.join().unwrap()["result"], "a2");
    assert_eq!(b.status().expect("rpc").field("standby"), None);
    drop(a);
    let _ = std::fs::remove_dir_all(dir);
}
