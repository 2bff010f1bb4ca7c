//! kv revisions and watches against the real server over real sockets:
//! `kv.watch` sees sets, deletes and expiries with increasing revisions;
//! prefix and pattern watches; `initial` values then `ready`; `kv.cas`
//! by revision; `kv.get` with `meta`; the per-event `kv_read` filter;
//! `kv.unwatch`; the watch limit; malformed params; and revisions and
//! watches across `RELOAD rpc` and a restart.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `printf bot1-token | sha256sum`, and so on (as in `rpc_access.rs`).
const BOT1: &str = "sha256:214f5ce4185c54dcc78671b5fa27de9eb9f1b486e332624f92ea001eab0a6310";
const BOT2: &str = "sha256:1c9ffa098b0be25d3c6bdf3e5ad90749048801488a1ec8347008e86f0e58c0af";

/// Makes a watch on `l`; returns its id and what was kept before the
/// reply (the writer may push initial values before the reply reaches the
/// connection).
fn watch(l: &mut Rpc, params: Value) -> (u64, Vec<Value>) {
    let r = l.call("kv.watch", params.clone());
    let w = r["result"]
        .as_u64()
        .unwrap_or_else(|| panic!("kv.watch {params}: {r}"));
    (w, l.kept())
}

/// The params of the next `kv.event` pushed to `l`.
fn event(l: &mut Rpc) -> Value {
    l.notification("kv.event", IO_TIMEOUT)
}

fn user(name: &str, hash: &str, perms: &str) -> String {
    format!(
        "[[modules.rpc.users]]\nname = \"{name}\"\ntoken_hash = \"{hash}\"\n\
         [modules.rpc.users.permissions]\n{perms}\n"
    )
}

/// One `kv.event`'s (watch, key, op, value), for comparing.
fn short(e: &Value) -> (u64, String, String, Value) {
    (
        e["watch"].as_u64().unwrap(),
        e["key"].as_str().unwrap_or("").to_string(),
        e["op"].as_str().unwrap().to_string(),
        e.get("value").cloned().unwrap_or(Value::Null),
    )
}

fn ev(w: u64, key: &str, op: &str, value: Value) -> (u64, String, String, Value) {
    (w, key.to_string(), op.to_string(), value)
}

/// Everything but restarts on one server with users: events with
/// increasing revisions (set, del, expire), prefix and pattern watches,
/// initial + ready, cas by revision, get with meta, the permission filter,
/// unwatch, the watch limit and malformed params.
#[test]
fn watches_revisions_and_their_limits() {
    let toml = format!(
        "[modules.rpc]\npurge_interval_ms = 50\nmax_watches = 4\n\n{}{}",
        user("bot1", BOT1, "kv_read = [\">\"]\nkv_write = [\">\"]"),
        user(
            "bot2",
            BOT2,
            "kv_read = { allow = [\"a.>\"], deny = [\"a.secret.>\"] }"
        ),
    );
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("rpc-kv")
        .toml(&toml)
        .start();
    let mut a = Rpc::login(s.addr, "bot1-token");
    let mut w = Rpc::login(s.addr, "bot1-token");

    // Prefix and pattern watches; set, delete and expiry events in
    // revision order.
    let (wa, early) = watch(&mut w, json!({"prefix": "a."}));
    assert!(early.is_empty(), "{early:?}");
    let (wb, _) = watch(&mut w, json!({"pattern": "b.*"}));
    assert_ne!(wa, wb);
    let r1 = a.ok("kv.set", json!({"key": "a.x", "value": 1, "meta": true}))["revision"]
        .as_u64()
        .unwrap();
    assert!(r1 > 0);
    assert_eq!(a.ok("kv.set", json!(["b.y", {"n": 2}])), true);
    assert_eq!(a.ok("kv.set", json!(["b.y.z", 3])), true, "not under b.*");
    assert_eq!(a.ok("kv.set", json!(["c", 3])), true, "watched by nobody");
    assert_eq!(a.ok("kv.del", json!(["a.x"])), true);
    a.ok(
        "kv.set",
        json!({"key": "a.t", "value": "soon", "ttl_ms": 100}),
    );
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(event(&mut w));
    }
    let revs: Vec<u64> = got
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs[0], r1);
    assert!(revs.windows(2).all(|p| p[0] < p[1]), "{got:?}");
    assert_eq!(revs[1], r1 + 1, "one revision per write: {got:?}");
    assert_eq!(
        got.iter().map(short).collect::<Vec<_>>(),
        [
            ev(wa, "a.x", "set", json!(1)),
            ev(wb, "b.y", "set", json!({"n": 2})),
            ev(wa, "a.x", "del", Value::Null),
            ev(wa, "a.t", "set", json!("soon")),
            ev(wa, "a.t", "expire", Value::Null),
        ]
    );
    assert!(got[2].get("value").is_none(), "{:?}", got[2]);
    w.quiet();

    // kv.get with meta; kv.set with meta; kv.cas by revision.
    let m = a.ok("kv.get", json!({"key": "b.y", "meta": true}));
    assert_eq!(m["value"], json!({"n": 2}));
    assert_eq!(m["revision"], r1 + 1);
    assert_eq!(m["expires_in_ms"], Value::Null);
    a.ok(
        "kv.set",
        json!({"key": "ttl", "value": 1, "ttl_ms": 60_000}),
    );
    let m = a.ok("kv.get", json!({"key": "ttl", "meta": true}));
    let left = m["expires_in_ms"].as_u64().unwrap();
    assert!((59_000..=60_000).contains(&left), "{m}");
    assert_eq!(
        a.ok("kv.get", json!({"key": "none", "meta": true})),
        Value::Null
    );
    assert_eq!(
        a.ok("kv.get", json!(["b.y"])),
        json!({"n": 2}),
        "bare without meta"
    );
    let create = json!({"key": "lock", "revision": 0, "value": "me", "meta": true});
    let rl = a.ok("kv.cas", create.clone())["revision"].as_u64().unwrap();
    assert_eq!(a.ok("kv.cas", create), false, "0: must not exist");
    let stale = json!({"key": "lock", "revision": rl - 1, "value": "you"});
    assert_eq!(a.ok("kv.cas", stale), false);
    let fresh = json!({"key": "lock", "revision": rl, "value": "you"});
    assert_eq!(a.ok("kv.cas", fresh.clone()), true);
    assert_eq!(a.ok("kv.cas", fresh), false, "its revision moved on");
    assert_eq!(a.ok("kv.get", json!(["lock"])), "you");
    let expected = json!({"key": "lock", "expected": "you", "value": "x", "meta": true});
    let rx = a.ok("kv.cas", expected)["revision"].as_u64().unwrap();
    assert!(rx > rl + 1);
    assert_eq!(a.ok("kv.incr", json!(["n"])), 1);
    let m = a.ok("kv.get", json!({"key": "n", "meta": true}));
    assert_eq!(m["revision"], rx + 1, "incr takes a revision");

    // Initial values, then ready, then live events.
    a.ok("kv.set", json!(["i.1", 1]));
    a.ok("kv.set", json!(["i.2", 2]));
    let mut wi = Rpc::login(s.addr, "bot1-token");
    let (id, mut seen) = watch(&mut wi, json!({"prefix": "i.", "initial": true}));
    while seen.last().map(|e| e["params"]["op"].clone()) != Some(json!("ready")) {
        seen.push(wi.read());
    }
    let seen: Vec<Value> = seen.into_iter().map(|v| v["params"].clone()).collect();
    assert_eq!(
        seen.iter().map(short).collect::<Vec<_>>(),
        [
            ev(id, "i.1", "set", json!(1)),
            ev(id, "i.2", "set", json!(2)),
            ev(id, "", "ready", Value::Null),
        ]
    );
    a.ok("kv.set", json!(["i.3", 3]));
    assert_eq!(short(&event(&mut wi)), ev(id, "i.3", "set", json!(3)));

    // Per-event permission filter: bot2 may read a.> but not a.secret.>.
    let mut b2 = Rpc::login(s.addr, "bot2-token");
    let code = b2.err("kv.watch", json!({"prefix": "b."})).0;
    assert_eq!(code, -32061, "reads nothing under b.");
    let code = b2.err("kv.watch", json!({"pattern": "c.*"})).0;
    assert_eq!(code, -32061);
    a.ok("kv.set", json!(["a.secret.k", "old"]));
    let (wp, early) = watch(&mut b2, json!({"prefix": "a.", "initial": true}));
    let mut initial = early;
    while initial.last().map(|e| e["params"]["op"].clone()) != Some(json!("ready")) {
        initial.push(b2.read());
    }
    assert!(
        !initial.iter().any(|e| e.to_string().contains("secret")),
        "{initial:?}"
    );
    a.ok("kv.set", json!(["a.secret.k", "hidden"]));
    a.ok("kv.set", json!(["a.open", "seen"]));
    assert_eq!(
        short(&event(&mut b2)),
        ev(wp, "a.open", "set", json!("seen"))
    );
    b2.quiet();

    // bot1's prefix watch saw all three.
    for key in ["a.secret.k", "a.secret.k", "a.open"] {
        assert_eq!(event(&mut w)["key"], key);
    }
    w.quiet();

    // Unwatch: no more events for it; only this connection's watch.
    assert_eq!(a.ok("kv.unwatch", json!([wa])), false, "not a's watch");
    assert_eq!(w.ok("kv.unwatch", json!({"watch": wa})), true);
    assert_eq!(w.ok("kv.unwatch", json!({"watch": wa})), false);
    a.ok("kv.set", json!(["a.gone", 1]));
    w.quiet();

    // The limit: w holds 1 (wb); 3 more, then -32050.
    for p in ["x.", "y.", "z."] {
        watch(&mut w, json!({ "prefix": p }));
    }
    assert_eq!(w.err("kv.watch", json!({"prefix": "q."})).0, -32050);
    // A closed connection's watches go (wi and b2 keep theirs).
    drop(w);
    let st = s.wait_status(Duration::from_secs(5), |st| {
        st.expect("rpc").num("watches") == 2
    });
    assert_eq!(st.expect("rpc").num("watches"), 2, "{}", st.raw);
    let mut w2 = Rpc::login(s.addr, "bot1-token");
    for p in ["1", "2", "3", "4"] {
        watch(&mut w2, json!({ "prefix": p }));
    }

    // Malformed params.
    for bad in [
        json!({}),
        json!({"prefix": "a", "pattern": "a.*"}),
        json!({"pattern": "a.>.b"}),
        json!({"pattern": ""}),
        json!({"prefix": 7}),
        json!({"prefix": "a", "initial": 1}),
        json!({"prefix": "a", "bogus": true}),
        json!({"prefix": "k".repeat(5000)}),
    ] {
        assert_eq!(a.err("kv.watch", bad.clone()).0, -32602, "{bad}");
    }
    for bad in [json!({}), json!({"watch": "1"}), json!([-1])] {
        assert_eq!(a.err("kv.unwatch", bad.clone()).0, -32602, "{bad}");
    }
    for bad in [
        json!({"key": "k", "value": 1}),
        json!({"key": "k", "expected": 1, "revision": 1, "value": 2}),
        json!({"key": "k", "revision": "1", "value": 2}),
    ] {
        assert_eq!(a.err("kv.cas", bad.clone()).0, -32602, "{bad}");
    }
    assert_eq!(
        a.err("kv.get", json!({"key": "k", "meta": "yes"})).0,
        -32602
    );
    // Over HTTP there is no connection to push to.
    let body = json!({"jsonrpc": "2.0", "method": "kv.watch", "params": {"prefix": ""}, "id": 1})
        .to_string();
    let resp = post_rpc(s.addr, &body, &["Authorization: Bearer bot1-token"]);
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["error"]["code"], -32030, "{v}");
}

/// Revisions survive a restart on the same database and `RELOAD rpc`,
/// and so does a watch (over the reload).
#[test]
fn revisions_and_watches_survive_reload_and_restart() {
    let dir = temp_dir("rpc-kv-revs");
    let toml = format!(
        "[modules.rpc]\ndb = \"{}\"",
        dir.join("kv.sqlite").display()
    );
    let s = ServerBuilder::new(&["rpc"])
        .tag("rpc-kv-reload")
        .toml(&toml)
        .start();
    let mut a = Rpc::connect(s.addr);
    let mut w = Rpc::connect(s.addr);
    let (id, _) = watch(&mut w, json!({"prefix": "k"}));
    let r1 = a.ok("kv.set", json!({"key": "k1", "value": 1, "meta": true}))["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(event(&mut w)["revision"], r1);
    let reply = s.admin("RELOAD rpc");
    assert!(reply.starts_with("OK rpc gen=2"), "{reply}");
    let m = a.ok("kv.get", json!({"key": "k1", "meta": true}));
    assert_eq!(m["revision"], r1, "{m}");
    let r2 = a.ok("kv.set", json!({"key": "k2", "value": 2, "meta": true}))["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(r2, r1 + 1, "the counter went on across the reload");
    let e = event(&mut w);
    assert_eq!(
        short(&e),
        ev(id, "k2", "set", json!(2)),
        "the watch survived"
    );
    assert_eq!(e["revision"], r2);
    assert_eq!(
        w.ok("kv.unwatch", json!([id])),
        true,
        "and is still its own"
    );
    drop((a, w, s));

    let s = ServerBuilder::new(&["rpc"])
        .tag("rpc-kv-restart")
        .toml(&toml)
        .start();
    let mut a = Rpc::connect(s.addr);
    let m = a.ok("kv.get", json!({"key": "k2", "meta": true}));
    assert_eq!(m["revision"], r2, "{m}");
    assert_eq!(a.ok("kv.del", json!(["k2"])), true);
    let r4 = a.ok("kv.set", json!({"key": "k3", "value": 3, "meta": true}))["revision"]
        .as_u64()
        .unwrap();
    assert_eq!(r4, r2 + 2, "the delete took one too");
    drop(s);
    let _ = std::fs::remove_dir_all(dir);
}
