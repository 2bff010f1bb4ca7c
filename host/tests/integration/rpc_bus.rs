//! The rpc bus as a service bus, against the real server over real
//! sockets: queue groups (one member per message, round robin, members
//! joining and leaving mid-stream), request/reply (`bus.request`,
//! `bus.reply`, a publish to the reply subject, no responders, timeouts,
//! out-of-order replies, a closing requester, limits), the same over
//! `POST /rpc`, `bus.presence`, subject validation, permissions, and a
//! pending request that survives `RELOAD rpc`.

use crate::common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The params of the next `bus.message` pushed to `l`.
fn delivered(l: &mut Rpc) -> Value {
    l.notification("bus.message", IO_TIMEOUT)
}

/// The reply subject of the next request pushed to the responder `l`.
fn reply_subject(l: &mut Rpc) -> String {
    let note = delivered(l);
    note["reply"]
        .as_str()
        .unwrap_or_else(|| panic!("a request has a reply subject: {note}"))
        .to_string()
}

/// The `data` numbers of `bus.message` notifications.
fn seqs(notes: &[Value]) -> Vec<u64> {
    notes
        .iter()
        .map(|n| {
            assert_eq!(n["method"], "bus.message", "{n}");
            n["params"]["data"].as_u64().unwrap()
        })
        .collect()
}

/// The `bus.message` numbers each of `lines` receives, read until they
/// add up to `expected` (at most 10 s), then a little longer, so that a
/// duplicate or a stray message shows up as a surplus.
fn collect(lines: &mut [&mut Rpc], expected: usize) -> Vec<Vec<u64>> {
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); lines.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settle = None;
    loop {
        for (l, g) in lines.iter_mut().zip(got.iter_mut()) {
            g.extend(seqs(&l.arrived()));
        }
        let n: usize = got.iter().map(Vec::len).sum();
        if n >= expected && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(150));
        }
        if settle.is_some_and(|t| Instant::now() >= t) || Instant::now() > deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Publishes `range` on `topic`, pipelined, each reply checked to count
/// `recipients`.
fn publish(p: &mut Rpc, topic: &str, range: std::ops::Range<u64>, recipients: u64) {
    let mut ids = Vec::new();
    for i in range {
        ids.push(p.start("bus.publish", json!({"topic": topic, "data": i})));
    }
    for id in ids {
        let r = p.reply_to(id);
        assert_eq!(r["result"], recipients, "{r}");
    }
}

fn server(tag: &str, settings: &str) -> Server {
    ServerBuilder::new(&["http", "rpc"])
        .tag(tag)
        .toml(&format!("[modules.rpc]\n{settings}\n"))
        .start()
}

#[test]
fn queue_groups_share_messages_and_presence_counts_them() {
    let s = server("bus-queues", "");
    let mut m1 = Rpc::connect(s.addr);
    let mut m2 = Rpc::connect(s.addr);
    let mut m3 = Rpc::connect(s.addr);
    let mut plain = Rpc::connect(s.addr);
    let mut p = Rpc::connect(s.addr);
    let q = |t: &str| json!({"topics": [t], "queue": "w"});
    assert_eq!(m1.ok("bus.subscribe", q("jobs.*")), 1);
    assert_eq!(m2.ok("bus.subscribe", json!([["jobs.>"], "w"])), 1);
    assert_eq!(plain.ok("bus.subscribe", json!(["jobs.>"])), 1);

    assert_eq!(
        p.ok("bus.presence", json!({"topic": "jobs.x"})),
        json!({"subscribers": 1, "queues": {"w": 2}})
    );
    assert_eq!(
        p.ok("bus.presence", json!([">"])),
        json!({"subscribers": 1, "queues": {"w": 2}})
    );
    assert_eq!(
        p.ok("bus.presence", json!(["other.*"])),
        json!({"subscribers": 0, "queues": {}})
    );

    // Two members share 1,000 messages: none to both, none lost.
    publish(&mut p, "jobs.x", 0..1000, 2);
    let got = collect(&mut [&mut m1, &mut m2], 1000);
    let (a, b) = (&got[0], &got[1]);
    assert_eq!(a.len() + b.len(), 1000, "{} + {}", a.len(), b.len());
    let all: BTreeSet<u64> = a.iter().chain(b).copied().collect();
    assert_eq!(all, (0..1000).collect(), "each exactly once");
    assert_eq!((a.len(), b.len()), (500, 500), "round robin");
    let got = collect(&mut [&mut plain], 1000);
    assert_eq!(
        got[0],
        (0..1000).collect::<Vec<_>>(),
        "plain: all, in order"
    );

    // A third member joins at 300 and the first leaves at 600.
    publish(&mut p, "jobs.x", 0..300, 2);
    assert_eq!(m3.ok("bus.subscribe", q("jobs.x")), 1);
    publish(&mut p, "jobs.x", 300..600, 2);
    assert_eq!(m1.ok("bus.unsubscribe", json!({"queue": "w"})), 0);
    publish(&mut p, "jobs.x", 600..1000, 2);
    let got = collect(&mut [&mut m1, &mut m2, &mut m3], 1000);
    let (a, b, c) = (&got[0], &got[1], &got[2]);
    assert_eq!(a.len() + b.len() + c.len(), 1000);
    let all: BTreeSet<u64> = a.iter().chain(b).chain(c).copied().collect();
    assert_eq!(all.len(), 1000, "no duplicates, none lost");
    assert!(a.iter().all(|&i| i < 600), "m1 left at 600: {a:?}");
    assert!(c.iter().all(|&i| i >= 300), "m3 joined at 300");
    assert!(!c.is_empty() && a.iter().any(|&i| i < 300));
    assert_eq!(collect(&mut [&mut plain], 1000)[0].len(), 1000);
    assert_eq!(
        p.ok("bus.presence", json!(["jobs.x"])),
        json!({"subscribers": 1, "queues": {"w": 2}})
    );

    // Subjects with spaces or control characters are refused everywhere.
    for (m, params) in [
        ("bus.subscribe", json!(["a b"])),
        ("bus.subscribe", json!({"topics": ["a.\tb"], "queue": "w"})),
        ("bus.subscribe", json!({"topics": ["a"], "queue": "a b"})),
        ("bus.publish", json!({"topic": "a b", "data": 1})),
        ("bus.request", json!({"topic": "a\u{1}", "data": 1})),
        ("bus.presence", json!({"topic": "x y.>"})),
    ] {
        let (code, msg) = p.err(m, params.clone());
        assert_eq!(code, -32602, "{m} {params}: {msg}");
    }
    let (_, msg) = p.err("bus.publish", json!({"topic": "a b", "data": 1}));
    assert!(msg.contains("spaces or control characters"), "{msg}");
}

#[test]
fn request_and_reply_on_raw_tcp() {
    let s = server("bus-request", "max_pending_requests = 3");
    let mut req = Rpc::connect(s.addr);
    let mut resp = Rpc::connect(s.addr);

    // No responder: -32032 at once.
    let t = Instant::now();
    let (code, msg) = req.err("bus.request", json!({"topic": "svc.none", "data": 1}));
    assert_eq!(
        (code, msg.as_str()),
        (-32032, "no responders for \"svc.none\"")
    );
    assert!(t.elapsed() < Duration::from_secs(1));

    // Answered with bus.reply; a second answer finds nobody.
    assert_eq!(resp.ok("bus.subscribe", json!(["svc.echo"])), 1);
    let id = req.start(
        "bus.request",
        json!({"topic": "svc.echo", "data": {"n": 1}}),
    );
    let note = delivered(&mut resp);
    assert_eq!(note["topic"], "svc.echo");
    assert_eq!(note["data"], json!({"n": 1}));
    let reply = note["reply"].as_str().unwrap().to_string();
    assert!(
        reply.starts_with("_INBOX.") && reply.len() >= 7 + 22,
        "{reply}"
    );
    assert_eq!(
        resp.ok("bus.reply", json!({"reply": reply, "data": {"echo": 1}})),
        true
    );
    assert_eq!(req.reply_to(id)["result"], json!({"echo": 1}));
    assert_eq!(
        resp.ok("bus.reply", json!([reply, 2])),
        false,
        "answered already"
    );

    // Answered with a publish to the reply subject.
    let id = req.start("bus.request", json!(["svc.echo", "x"]));
    let reply = reply_subject(&mut resp);
    assert_eq!(
        resp.ok("bus.publish", json!({"topic": reply, "data": 7})),
        1
    );
    assert_eq!(req.reply_to(id)["result"], 7);

    // Out of order: a later ping is answered before the request.
    let id = req.start("bus.request", json!(["svc.echo", 3]));
    let ping = req.start("sys.ping", json!([]));
    assert_eq!(req.reply_to(ping)["result"], "pong");
    let reply = reply_subject(&mut resp);
    assert_eq!(resp.ok("bus.reply", json!([reply, "late"])), true);
    assert_eq!(req.reply_to(id)["result"], "late");

    // Timeout: -32033, not before its time.
    let t = Instant::now();
    let id = req.start(
        "bus.request",
        json!({"topic": "svc.echo", "data": 0, "timeout_ms": 300}),
    );
    let r = req.reply_to(id);
    let took = t.elapsed();
    assert_eq!(r["error"]["code"], -32033, "{r}");
    assert_eq!(
        r["error"]["message"],
        "request to \"svc.echo\" timed out after 300 ms"
    );
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let reply = reply_subject(&mut resp);
    assert_eq!(resp.ok("bus.reply", json!([reply, 1])), false, "too late");

    // The requester closes: a late reply returns false.
    let mut gone = Rpc::connect(s.addr);
    gone.start("bus.request", json!(["svc.echo", 4]));
    let reply = reply_subject(&mut resp);
    drop(gone);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(resp.ok("bus.reply", json!([reply, 1])), false);

    // Two plain responders: both get it, exactly one answer arrives.
    let mut resp2 = Rpc::connect(s.addr);
    assert_eq!(resp2.ok("bus.subscribe", json!(["svc.echo"])), 1);
    let id = req.start("bus.request", json!(["svc.echo", 5]));
    let r1 = reply_subject(&mut resp);
    let r2 = reply_subject(&mut resp2);
    assert_eq!(r1, r2);
    let a = resp.ok("bus.reply", json!([r1, "one"]));
    let b = resp2.ok("bus.reply", json!([r2, "two"]));
    assert_eq!((a, b), (json!(true), json!(false)));
    assert_eq!(req.reply_to(id)["result"], "one");
    assert!(req.drain().is_empty(), "no second answer");

    // Hostile params: refused, nothing sent.
    let long_queue = "q".repeat(65);
    for (m, params) in [
        (
            "bus.request",
            json!({"topic": "svc.echo", "data": 1, "timeout_ms": 60_001}),
        ),
        (
            "bus.request",
            json!({"topic": "svc.echo", "data": 1, "timeout_ms": 0}),
        ),
        ("bus.request", json!({"topic": "svc.echo"})),
        ("bus.request", json!({"topic": "svc.*", "data": 1})),
        (
            "bus.subscribe",
            json!({"topics": ["x"], "queue": long_queue}),
        ),
        ("bus.reply", json!({"reply": 5, "data": 1})),
    ] {
        assert_eq!(req.err(m, params.clone()).0, -32602, "{m} {params}");
    }
    let huge = format!("_INBOX.{}", "A".repeat(100_000));
    assert_eq!(req.ok("bus.reply", json!([huge, 1])), false);
    assert_eq!(req.ok("bus.reply", json!(["_INBOX.", 1])), false);

    // Not in a batch, not as a notification.
    req.send_line(r#"[{"jsonrpc":"2.0","method":"bus.request","params":["svc.echo",1],"id":"b"}]"#);
    let v = req.read();
    assert_eq!(v[0]["error"]["code"], -32602, "{v}");
    assert_eq!(
        v[0]["error"]["message"],
        "bus.request cannot be part of a batch"
    );
    req.send_line(r#"{"jsonrpc":"2.0","method":"bus.request","params":["svc.echo",1]}"#);
    assert!(req.drain().is_empty());
    assert!(resp.drain().is_empty(), "a notification sends nothing");
    drop(resp2);

    // Too many pending requests (max_pending_requests = 3): -32050.
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            req.start(
                "bus.request",
                json!({"topic": "svc.echo", "data": i, "timeout_ms": 500}),
            )
        })
        .collect();
    let (code, msg) = req.err("bus.request", json!(["svc.echo", 9]));
    assert_eq!(code, -32050, "{msg}");
    assert!(msg.contains("max_pending_requests"), "{msg}");
    for id in ids {
        assert_eq!(req.reply_to(id)["error"]["code"], -32033);
    }
    assert_eq!(resp.drain().len(), 3);
    let rpc = s.status();
    let rpc = rpc.expect("rpc");
    assert_eq!(rpc.num("pending_requests"), 0);
    assert_eq!(rpc.num("request_timeouts"), 4);
    assert_eq!(rpc.num("answered_requests"), 4);
}

#[test]
fn request_over_http_waits_for_the_answer() {
    let s = server("bus-http", "");
    let mut resp = Rpc::connect(s.addr);
    let v = http_call(s.addr, "bus.request", json!({"topic": "svc.h", "data": 1}));
    assert_eq!(v["error"]["code"], -32032, "{v}");
    assert_eq!(
        resp.ok("bus.subscribe", json!({"topics": ["svc.h"], "queue": "w"})),
        1
    );

    let addr_server = thread::scope(|scope| {
        let waiter =
            scope.spawn(|| http_call(s.addr, "bus.request", json!(["svc.h", {"q": 1}, 5000])));
        let note = delivered(&mut resp);
        assert_eq!(note["data"], json!({"q": 1}));
        // One waiter is the default limit: a second one is refused.
        let v = http_call(s.addr, "bus.request", json!(["svc.h", 2]));
        assert_eq!(v["error"]["code"], -32050, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_http_waiters"));
        let reply = note["reply"].as_str().unwrap();
        assert_eq!(resp.ok("bus.reply", json!([reply, {"a": 1}])), true);
        waiter.join().unwrap()
    });
    assert_eq!(
        addr_server,
        json!({"jsonrpc": "2.0", "result": {"a": 1}, "id": "h"})
    );
    // Refused notes from the second call reached nobody.
    assert!(resp.drain().is_empty());

    let t = Instant::now();
    let v = http_call(
        s.addr,
        "bus.request",
        json!({"topic": "svc.h", "data": 0, "timeout_ms": 250}),
    );
    assert_eq!(v["error"]["code"], -32033, "{v}");
    assert!(t.elapsed() >= Duration::from_millis(240));
    let reply = reply_subject(&mut resp);
    assert_eq!(resp.ok("bus.reply", json!([reply, 1])), false);
    // In an HTTP batch it is refused like on a connection.
    let resp_b = post_rpc(
        s.addr,
        r#"[{"jsonrpc":"2.0","method":"bus.request","params":["svc.h",1],"id":1}]"#,
        &[],
    );
    let v: Value = serde_json::from_slice(&resp_b.body).unwrap();
    assert_eq!(v[0]["error"]["code"], -32602, "{v}");
}

/// `printf bot1-token | sha256sum` and `printf bot2-token | sha256sum`.
const BOT1: &str = "sha256:214f5ce4185c54dcc78671b5fa27de9eb9f1b486e332624f92ea001eab0a6310";
const BOT2: &str = "sha256:1c9ffa098b0be25d3c6bdf3e5ad90749048801488a1ec8347008e86f0e58c0af";

#[test]
fn requests_and_presence_need_their_rights() {
    let users = format!(
        "[[modules.rpc.users]]\nname = \"bot1\"\ntoken_hash = \"{BOT1}\"\n\
         [modules.rpc.users.permissions]\npublish = [\"open.>\"]\nsubscribe = [\"open.>\"]\n\n\
         [[modules.rpc.users]]\nname = \"bot2\"\ntoken_hash = \"{BOT2}\"\n\
         [modules.rpc.users.permissions]\nsubscribe = [\"open.>\"]\n"
    );
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("bus-access")
        .toml(&format!("[modules.rpc]\n\n{users}"))
        .start();
    let mut a = Rpc::connect(s.addr);
    let mut b = Rpc::connect(s.addr);
    assert_eq!(
        a.ok("sys.auth", json!({"token": "bot1-token"}))["user"],
        "bot1"
    );
    assert_eq!(
        b.ok("sys.auth", json!({"token": "bot2-token"}))["user"],
        "bot2"
    );
    for (m, params) in [
        ("bus.request", json!({"topic": "svc.x", "data": 1})),
        ("bus.presence", json!({"topic": "svc.>"})),
        ("bus.subscribe", json!({"topics": ["svc.x"], "queue": "w"})),
    ] {
        let (code, msg) = a.err(m, params.clone());
        assert_eq!(code, -32061, "{m}: {msg}");
        assert!(msg.contains(m), "{msg}");
    }
    assert_eq!(
        a.ok("bus.presence", json!(["open.x"])),
        json!({"subscribers": 0, "queues": {}})
    );
    // bot2 may not publish at all, yet answers through reply subjects.
    assert_eq!(
        b.ok(
            "bus.subscribe",
            json!({"topics": ["open.svc"], "queue": "w"})
        ),
        1
    );
    assert_eq!(b.err("bus.publish", json!(["open.svc", 1])).0, -32061);
    let id = a.start("bus.request", json!(["open.svc", 1]));
    let reply = reply_subject(&mut b);
    assert_eq!(b.ok("bus.reply", json!([reply, "r"])), true);
    assert_eq!(a.reply_to(id)["result"], "r");
    let id = a.start("bus.request", json!(["open.svc", 2]));
    let reply = reply_subject(&mut b);
    assert_eq!(b.ok("bus.publish", json!([reply, "p"])), 1);
    assert_eq!(a.reply_to(id)["result"], "p");
    // A reply subject nobody waits on is an ordinary topic again.
    assert_eq!(b.err("bus.publish", json!([reply, "p"])).0, -32061);
}

/// A request waiting across `RELOAD rpc` is answered by the successor;
/// the queue subscription that received it is handed over too.
#[test]
fn a_pending_request_survives_reload() {
    let s = server("bus-reload", "");
    let mut req = Rpc::connect(s.addr);
    let mut resp = Rpc::connect(s.addr);
    assert_eq!(
        resp.ok("bus.subscribe", json!({"topics": ["svc.r"], "queue": "w"})),
        1
    );
    let id = req.start(
        "bus.request",
        json!({"topic": "svc.r", "data": 1, "timeout_ms": 20000}),
    );
    let reply = reply_subject(&mut resp);
    let r = s.admin("RELOAD rpc");
    assert!(r.starts_with("OK rpc gen=2"), "{r}");
    assert_eq!(resp.ok("bus.reply", json!([reply, "after"])), true);
    assert_eq!(req.reply_to(id)["result"], "after");
    assert_eq!(
        req.ok("bus.presence", json!(["svc.r"])),
        json!({"subscribers": 0, "queues": {"w": 1}})
    );
    // And its timer moved with it: a short one still fires.
    let id = req.start(
        "bus.request",
        json!({"topic": "svc.r", "data": 2, "timeout_ms": 800}),
    );
    delivered(&mut resp);
    let r = s.admin("RELOAD rpc");
    assert!(r.starts_with("OK rpc gen=3"), "{r}");
    let t = Instant::now();
    assert_eq!(req.reply_to(id)["error"]["code"], -32033);
    assert!(t.elapsed() < Duration::from_secs(5));
    // Answered once: the retired generation did not time it out too.
    thread::sleep(Duration::from_millis(300));
    assert!(req.drain().is_empty());
    assert_eq!(s.status().expect("rpc").num("pending_requests"), 0);
}

/// A `bus.request` over `POST /rpc` waits without holding the
/// generation: `RELOAD rpc` completes while it still waits (it used to
/// wait for the request's whole timeout).
#[test]
fn a_waiting_http_request_does_not_hold_up_a_reload() {
    let s = server("bus-http-reload", "");
    let mut resp = Rpc::connect(s.addr);
    assert_eq!(
        resp.ok("bus.subscribe", json!({"topics": ["svc.hr"], "queue": "w"})),
        1
    );
    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            http_call(
                s.addr,
                "bus.request",
                json!({"topic": "svc.hr", "data": 1, "timeout_ms": 3000}),
            )
        });
        delivered(&mut resp);
        let r = s.admin("RELOAD rpc");
        assert!(r.starts_with("OK rpc gen=2"), "{r}");
        assert!(
            !waiter.is_finished(),
            "the reload finished only after the HTTP request stopped waiting"
        );
        // Nobody answers it: it times out as usual.
        let v = waiter.join().unwrap();
        assert_eq!(v["error"]["code"], -32033, "{v}");
    });
    // The successor serves HTTP requests.
    let v = http_call(s.addr, "sys.ping", json!([]));
    assert_eq!(v["result"], "pong", "{v}");
}
