//! Durable streams and consumers of the `rpc` module against the real
//! server: a consumer that resumes after a restart of the whole server
//! with nothing lost or doubled, ack_wait redelivery, members sharing a
//! consumer, limits, overlapping subjects, a reload with an attached
//! consumer, the pull form over `POST /rpc`, permissions and bad input.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// `printf bot1-token | sha256sum`.
const BOT1: &str = "sha256:214f5ce4185c54dcc78671b5fa27de9eb9f1b486e332624f92ea001eab0a6310";

fn seqs(msgs: &[Value]) -> Vec<u64> {
    msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// The Must-show: a consumer acks part of a stream, disconnects, the
/// whole server is killed and started again on the same data directory,
/// and the consumer resumes after its last acknowledged message: the
/// acknowledged sequences are exactly 1..=N, none twice.
#[test]
fn a_durable_consumer_resumes_after_a_restart_with_nothing_lost_or_doubled() {
    const N: u64 = 60;
    let dir = temp_dir("rpc-streams-restart");
    let toml = format!(
        "[modules.rpc]\ndb = \"{}\"",
        dir.join("rpc.sqlite").display()
    );
    let mut a = ServerBuilder::new(&["rpc"])
        .tag("rpc-streams-a")
        .toml(&toml)
        .start();
    let mut p = Rpc::connect(a.addr);
    p.ok(
        "stream.create",
        json!({"name": "ORDERS", "subjects": ["orders.>"]}),
    );
    for i in 1..=N {
        // Both ways of publishing store the message.
        if i % 2 == 0 {
            p.ok(
                "bus.publish",
                json!({"topic": "orders.new", "data": {"n": i}}),
            );
        } else {
            let r = p.ok(
                "stream.publish",
                json!({"topic": "orders.new", "data": {"n": i}}),
            );
            assert_eq!(r, json!({"stream": "ORDERS", "seq": i}));
        }
    }
    let mut acked = Vec::new();
    let mut c = Rpc::connect(a.addr);
    let consume = json!({"stream": "ORDERS", "consumer": "worker", "max_ack_pending": 10});
    c.ok("stream.consume", consume.clone());
    // Ack 25, leave the rest of what arrived unacknowledged, disconnect.
    while acked.len() < 25 {
        let m = c
            .try_notification("stream.message", Duration::from_secs(5))
            .expect("a message");
        assert_eq!(m["deliveries"], 1);
        assert_eq!(m["data"]["n"], m["seq"]);
        let seq = m["seq"].as_u64().unwrap();
        let n = c.ok(
            "stream.ack",
            json!({"stream": "ORDERS", "consumer": "worker", "seq": seq}),
        );
        assert_eq!(n, 1);
        acked.push(seq);
    }
    drop(c);
    // Worker and leader, as a crash would.
    let worker = a.worker_pid();
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let killed = unsafe { libc::kill(worker as libc::pid_t, libc::SIGKILL) };
    assert_eq!(killed, 0);
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::supervision::alive(worker) {
        assert!(
            Instant::now() < deadline,
            "worker {worker} survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let b = ServerBuilder::new(&["rpc"])
        .tag("rpc-streams-b")
        .toml(&toml)
        .start();
    let mut c = Rpc::connect(b.addr);
    let info = c.ok("stream.info", json!({"name": "ORDERS"}));
    assert_eq!(
        (info["messages"].as_u64(), info["last_seq"].as_u64()),
        (Some(N), Some(N))
    );
    c.ok("stream.consume", consume);
    while (acked.len() as u64) < N {
        let m = c
            .try_notification("stream.message", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("stalled after acking {acked:?}"));
        let seq = m["seq"].as_u64().unwrap();
        assert!(!acked.contains(&seq), "{seq} delivered again after its ack");
        let n = c.ok(
            "stream.ack",
            json!({"stream": "ORDERS", "consumer": "worker", "seq": seq}),
        );
        assert_eq!(n, 1, "{seq}");
        acked.push(seq);
    }
    let set: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(set.len(), acked.len(), "an ack counted twice");
    assert_eq!(set, (1..=N).collect(), "acked exactly 1..=N");
    assert!(
        c.try_notification("stream.message", Duration::from_millis(300))
            .is_none(),
        "nothing more"
    );
    let ci = c.ok(
        "consumer.info",
        json!({"stream": "ORDERS", "consumer": "worker"}),
    );
    assert_eq!(
        (ci["ack_floor"].as_u64(), ci["pending"].as_u64()),
        (Some(N), Some(0))
    );
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}

/// One server: limits, overlap, redelivery, shared consumers, fetch over
/// HTTP, a reload, and bad input.
#[test]
fn streams_limits_redelivery_members_fetch_and_reload() {
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("rpc-streams")
        .toml("[modules.rpc]\nmax_streams = 9\nmax_consumers = 5\nmax_consumer_members = 2")
        .start();
    let mut p = Rpc::connect(s.addr);

    // Create: same config again is fine; another config or an overlap is not.
    let info = p.ok(
        "stream.create",
        json!({"name": "LIM", "subjects": ["lim.*"], "max_msgs": 3}),
    );
    assert_eq!(info["max_msgs"], 3);
    assert_eq!(info["discard"], "old");
    p.ok(
        "stream.create",
        json!({"name": "LIM", "subjects": ["lim.*"], "max_msgs": 3}),
    );
    let (code, _) = p.err(
        "stream.create",
        json!({"name": "LIM", "subjects": ["lim.*"]}),
    );
    assert_eq!(code, -32036);
    let (code, msg) = p.err(
        "stream.create",
        json!({"name": "OTHER", "subjects": ["*.x"]}),
    );
    assert_eq!(code, -32036, "{msg}");
    assert!(msg.contains("lim.*"), "{msg}");
    let (code, _) = p.err("stream.publish", json!({"topic": "nowhere.x", "data": 1}));
    assert_eq!(code, -32034);

    // max_msgs drops the oldest.
    for i in 1..=5 {
        p.ok("stream.publish", json!({"topic": "lim.a", "data": i}));
    }
    let info = p.ok("stream.info", json!({"name": "LIM"}));
    assert_eq!(
        (
            info["messages"].as_u64(),
            info["first_seq"].as_u64(),
            info["last_seq"].as_u64()
        ),
        (Some(3), Some(3), Some(5))
    );
    // discard new refuses, naming the limit.
    p.ok(
        "stream.create",
        json!({"name": "FULL", "subjects": ["full"], "max_msgs": 2, "discard": "new"}),
    );
    p.ok("stream.publish", json!({"topic": "full", "data": 1}));
    p.ok("bus.publish", json!({"topic": "full", "data": 2}));
    let (code, msg) = p.err("stream.publish", json!({"topic": "full", "data": 3}));
    assert_eq!(code, -32050);
    assert!(msg.contains("max_msgs"), "{msg}");
    let (code, msg) = p.err("bus.publish", json!({"topic": "full", "data": 3}));
    assert_eq!(code, -32050, "{msg}");
    // max_age.
    p.ok(
        "stream.create",
        json!({"name": "AGE", "subjects": ["age"], "max_age_ms": 200}),
    );
    p.ok("stream.publish", json!({"topic": "age", "data": 1}));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = p.ok("stream.info", json!({"name": "AGE"}));
        if info["messages"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not expired: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // ack_wait redelivery, deliveries 2.
    p.ok("stream.create", json!({"name": "RED", "subjects": ["red"]}));
    p.ok("stream.publish", json!({"topic": "red", "data": "x"}));
    let mut c = Rpc::connect(s.addr);
    c.ok(
        "stream.consume",
        json!({"stream": "RED", "consumer": "r", "ack_wait_ms": 200}),
    );
    let m = c.notification("stream.message", Duration::from_secs(5));
    assert_eq!(
        (m["seq"].as_u64(), m["deliveries"].as_u64()),
        (Some(1), Some(1))
    );
    let t = Instant::now();
    let m = c
        .try_notification("stream.message", Duration::from_secs(5))
        .expect("redelivered");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        (m["seq"].as_u64(), m["deliveries"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        c.ok(
            "stream.ack",
            json!({"stream": "RED", "consumer": "r", "seq": 1})
        ),
        1
    );
    assert!(
        c.try_notification("stream.message", Duration::from_millis(400))
            .is_none(),
        "acked: never again"
    );
    // A nak gives it back at once.
    p.ok("stream.publish", json!({"topic": "red", "data": "y"}));
    let m = c.notification("stream.message", Duration::from_secs(5));
    assert_eq!(m["seq"], 2);
    assert_eq!(
        c.ok(
            "stream.nak",
            json!({"stream": "RED", "consumer": "r", "seq": 2})
        ),
        true
    );
    let m = c.notification("stream.message", Duration::from_secs(5));
    assert_eq!(
        (m["seq"].as_u64(), m["deliveries"].as_u64()),
        (Some(2), Some(2))
    );
    c.ok(
        "stream.ack",
        json!({"stream": "RED", "consumer": "r", "seqs": [2]}),
    );

    // Two members split the work: none to both, none lost.
    p.ok(
        "stream.create",
        json!({"name": "WORK", "subjects": ["work.>"]}),
    );
    let mut m1 = Rpc::connect(s.addr);
    let mut m2 = Rpc::connect(s.addr);
    let consume = json!({"stream": "WORK", "consumer": "pool"});
    m1.ok("stream.consume", consume.clone());
    let info = m2.ok("stream.consume", consume.clone());
    assert_eq!(info["members"], 2);
    for i in 1..=40 {
        p.ok("bus.publish", json!({"topic": "work.job", "data": i}));
    }
    let a = m1.notifications("stream.message", Duration::from_millis(400));
    let b = m2.notifications("stream.message", Duration::from_millis(400));
    let (sa, sb): (BTreeSet<u64>, BTreeSet<u64>) = (
        seqs(&a).into_iter().collect(),
        seqs(&b).into_iter().collect(),
    );
    assert!(!sa.is_empty() && !sb.is_empty(), "{sa:?} {sb:?}");
    assert!(sa.is_disjoint(&sb), "{sa:?} {sb:?}");
    assert_eq!(sa.union(&sb).count(), 40);
    // A member that leaves: its unacknowledged messages go to the other.
    for s in &sb {
        m2.ok(
            "stream.ack",
            json!({"stream": "WORK", "consumer": "pool", "seq": s}),
        );
    }
    drop(m1);
    let again = m2.notifications("stream.message", Duration::from_millis(500));
    assert_eq!(seqs(&again).into_iter().collect::<BTreeSet<_>>(), sa);
    assert!(again.iter().all(|m| m["deliveries"] == 2));

    // A reload with an attached consumer delivers nothing twice.
    p.ok("stream.create", json!({"name": "REL", "subjects": ["rel"]}));
    let mut r = Rpc::connect(s.addr);
    r.ok("stream.consume", json!({"stream": "REL", "consumer": "c"}));
    for i in 1..=5 {
        p.ok("stream.publish", json!({"topic": "rel", "data": i}));
    }
    let before = seqs(&r.notifications("stream.message", Duration::from_millis(300)));
    assert_eq!(before, [1, 2, 3, 4, 5]);
    let reply = s.admin("RELOAD rpc");
    assert!(reply.starts_with("OK"), "{reply}");
    for i in 6..=8 {
        p.ok("stream.publish", json!({"topic": "rel", "data": i}));
    }
    let after = seqs(&r.notifications("stream.message", Duration::from_millis(500)));
    assert_eq!(after, [6, 7, 8], "nothing delivered twice, nothing lost");
    assert_eq!(
        r.ok(
            "stream.ack",
            json!({"stream": "REL", "consumer": "c", "seqs": [1, 2, 3, 4, 5, 6, 7, 8]})
        ),
        8
    );

    // The pull form over POST /rpc.
    p.ok(
        "stream.create",
        json!({"name": "PULL", "subjects": ["pull.*"]}),
    );
    for i in 1..=3 {
        p.ok("stream.publish", json!({"topic": "pull.x", "data": i}));
    }
    let (code, _) = {
        let v = http_call(
            s.addr,
            "stream.consume",
            json!({"stream": "PULL", "consumer": "h"}),
        );
        (v["error"]["code"].as_i64().unwrap(), ())
    };
    assert_eq!(code, -32030, "attaching needs a raw connection");
    p.ok("stream.consume", json!({"stream": "PULL", "consumer": "h"}));
    p.ok(
        "stream.unconsume",
        json!({"stream": "PULL", "consumer": "h"}),
    );
    p.notifications("stream.message", Duration::from_millis(200));
    p.ok(
        "consumer.delete",
        json!({"stream": "PULL", "consumer": "h"}),
    );
    p.ok(
        "stream.consume",
        json!({"stream": "PULL", "consumer": "h2", "deliver": {"seq": 2}}),
    );
    p.ok(
        "stream.unconsume",
        json!({"stream": "PULL", "consumer": "h2"}),
    );
    let got = p.notifications("stream.message", Duration::from_millis(200));
    // Delivered before the detach, given back by it: fetched below.
    let v = http_call(
        s.addr,
        "stream.fetch",
        json!({"stream": "PULL", "consumer": "h2", "batch": 5}),
    );
    let fetched = v["result"].as_array().unwrap_or_else(|| panic!("{v}"));
    let all: BTreeSet<u64> = seqs(fetched).into_iter().chain(seqs(&got)).collect();
    assert_eq!(all, BTreeSet::from([2, 3]), "from seq 2 on");
    assert_eq!(fetched[0]["subject"], "pull.x");
    let v = http_call(
        s.addr,
        "stream.ack",
        json!({"stream": "PULL", "consumer": "h2", "seqs": [2, 3]}),
    );
    assert_eq!(v["result"], seqs(fetched).len());
    let v = http_call(
        s.addr,
        "stream.fetch",
        json!({"stream": "PULL", "consumer": "h2"}),
    );
    assert_eq!(v["result"], json!([]));

    // Bad names and malformed params.
    for (method, params) in [
        ("stream.create", json!({"name": "a.b", "subjects": ["x"]})),
        (
            "stream.create",
            json!({"name": "x".repeat(65), "subjects": ["x"]}),
        ),
        ("stream.create", json!({"name": "N", "subjects": []})),
        ("stream.create", json!({"name": "N", "subjects": ["a b"]})),
        (
            "stream.create",
            json!({"name": "N", "subjects": ["x"], "discard": "all"}),
        ),
        (
            "stream.create",
            json!({"name": "N", "subjects": ["x"], "max_msgs": -5}),
        ),
        (
            "stream.create",
            json!({"name": "N", "subjects": ["x"], "extra": 1}),
        ),
        ("stream.publish", json!({"topic": "a.*", "data": 1})),
        (
            "stream.consume",
            json!({"stream": "RED", "consumer": "bad name"}),
        ),
        (
            "stream.consume",
            json!({"stream": "RED", "consumer": "c", "deliver": "first"}),
        ),
        (
            "stream.consume",
            json!({"stream": "RED", "consumer": "c", "max_ack_pending": 0}),
        ),
        (
            "stream.consume",
            json!({"stream": "RED", "consumer": "c", "filter": "other"}),
        ),
        ("stream.ack", json!({"stream": "RED", "consumer": "r"})),
        (
            "stream.ack",
            json!({"stream": "RED", "consumer": "r", "seqs": vec![1; 10_001]}),
        ),
        (
            "stream.fetch",
            json!({"stream": "RED", "consumer": "r", "batch": 0}),
        ),
        ("stream.info", json!([])),
    ] {
        let (code, msg) = p.err(method, params.clone());
        assert_eq!(code, -32602, "{method} {params}: {msg}");
    }
    let (code, _) = p.err("stream.info", json!({"name": "NOPE"}));
    assert_eq!(code, -32034);
    let (code, _) = p.err(
        "stream.ack",
        json!({"stream": "RED", "consumer": "nope", "seq": 1}),
    );
    assert_eq!(code, -32035);
    let (code, _) = p.err(
        "stream.consume",
        json!({"stream": "RED", "consumer": "r", "ack_wait_ms": 999}),
    );
    assert_eq!(code, -32036, "another config for an existing consumer");
    // Too large, too many.
    p.ok(
        "stream.create",
        json!({"name": "BIG", "subjects": ["big"], "max_msg_bytes": 16}),
    );
    let (code, msg) = p.err(
        "stream.publish",
        json!({"topic": "big", "data": "x".repeat(20)}),
    );
    assert_eq!(code, -32050);
    assert!(msg.contains("max_msg_bytes (16)"), "{msg}");
    p.ok("stream.create", json!({"name": "S9", "subjects": ["s9"]}));
    let (code, msg) = p.err("stream.create", json!({"name": "S10", "subjects": ["s10"]}));
    assert_eq!(code, -32050);
    assert!(msg.contains("max_streams (9)"), "{msg}");
    p.ok("stream.consume", json!({"stream": "BIG", "consumer": "x"}));
    let (code, msg) = p.err("stream.consume", json!({"stream": "BIG", "consumer": "y"}));
    assert_eq!(code, -32050);
    assert!(msg.contains("max_consumers (5)"), "{msg}");
    p.ok("stream.consume", consume.clone());
    let mut third = Rpc::connect(s.addr);
    let (code, msg) = third.err("stream.consume", consume);
    assert_eq!(code, -32050);
    assert!(msg.contains("max_consumer_members (2)"), "{msg}");
    let list = p.ok("stream.list", json!({}));
    assert!(list.as_array().unwrap().len() >= 6, "{list}");
    assert_eq!(p.ok("stream.delete", json!({"name": "LIM"})), true);
    assert_eq!(p.ok("stream.delete", json!({"name": "LIM"})), false);
    // Its subjects are free again and no longer stored.
    let (code, _) = p.err("stream.publish", json!({"topic": "lim.a", "data": 1}));
    assert_eq!(code, -32034);
}

/// A user without `stream_admin` cannot create or delete streams nor
/// create or delete consumers; one with it (and the subjects) can.
#[test]
fn stream_admin_is_needed_to_create_and_delete() {
    let toml = format!(
        "[modules.rpc]\n\n[[modules.rpc.users]]\nname = \"bot1\"\ntoken_hash = \"{BOT1}\"\n\
         [modules.rpc.users.permissions]\npublish = [\"ev.>\"]\nsubscribe = [\"ev.>\"]\n\n\
         [[modules.rpc.users]]\nname = \"admin\"\n\
         token_hash = \"sha256:{}\"\n\
         [modules.rpc.users.permissions]\npublish = [\"ev.>\"]\nsubscribe = [\"ev.>\"]\n\
         stream_admin = [\"EV\"]\n",
        // `printf bot2-token | sha256sum`.
        "1c9ffa098b0be25d3c6bdf3e5ad90749048801488a1ec8347008e86f0e58c0af"
    );
    let s = ServerBuilder::new(&["rpc"])
        .tag("rpc-streams-access")
        .toml(&toml)
        .start();
    let mut u = Rpc::connect(s.addr);
    u.ok("sys.auth", json!({"token": "bot1-token"}));
    let who = u.ok("sys.whoami", json!({}));
    assert_eq!(who["permissions"]["stream_admin"]["allow"], json!([]));
    let (code, msg) = u.err("stream.create", json!({"name": "EV", "subjects": ["ev.>"]}));
    assert_eq!(code, -32061, "{msg}");
    assert!(msg.contains("bot1"), "{msg}");
    let mut a = Rpc::connect(s.addr);
    a.ok("sys.auth", json!({"token": "bot2-token"}));
    let (code, _) = a.err(
        "stream.create",
        json!({"name": "EV", "subjects": ["other.>"]}),
    );
    assert_eq!(code, -32061, "Publish and Subscribe on the subjects too");
    a.ok("stream.create", json!({"name": "EV", "subjects": ["ev.>"]}));
    // bot1 may use it, not administer it: it may not create a durable
    // consumer either (only stream_admin could delete it again), but it
    // may attach to one the admin made.
    u.ok("stream.publish", json!({"topic": "ev.a", "data": 1}));
    let (code, msg) = u.err("stream.consume", json!({"stream": "EV", "consumer": "c"}));
    assert_eq!(code, -32061, "{msg}");
    a.ok("stream.consume", json!({"stream": "EV", "consumer": "c"}));
    a.ok("stream.unconsume", json!({"stream": "EV", "consumer": "c"}));
    u.ok("stream.consume", json!({"stream": "EV", "consumer": "c"}));
    assert!(u
        .try_notification("stream.message", Duration::from_secs(5))
        .is_some());
    let (code, _) = u.err("consumer.delete", json!({"stream": "EV", "consumer": "c"}));
    assert_eq!(code, -32061);
    let (code, _) = u.err("stream.delete", json!({"name": "EV"}));
    assert_eq!(code, -32061);
    assert_eq!(
        a.ok("consumer.delete", json!({"stream": "EV", "consumer": "c"})),
        true
    );
    assert_eq!(a.ok("stream.delete", json!({"name": "EV"})), true);
}
