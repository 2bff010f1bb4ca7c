//! The handler driven through the SDK's trait, as the host would, with no
//! sockets: which verdicts and events lead where.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use module_api::{Action, ConnInfo, Handler, Out, ProxyEvent, ProxyEventKind, Upstream, Verdict};
use serde_json::json;

use crate::Proxy;
use module_api::tls::client_hello;

fn conn(id: u64) -> ConnInfo {
    ConnInfo::new(id, "192.0.2.9:40000".parse().unwrap(), false)
}

fn addr(v: &Verdict) -> SocketAddr {
    assert_eq!(v.action, Action::Proxy, "{v:?}");
    assert_eq!(v.consumed, 0);
    v.upstream.addr()
}

fn event(kind: ProxyEventKind, to: SocketAddr, up: u64, down: u64) -> ProxyEvent {
    ProxyEvent {
        kind,
        upstream: Upstream::new(to),
        bytes_up: up,
        bytes_down: down,
    }
}

fn proxy(cfg: serde_json::Value) -> Proxy {
    Proxy::new(&cfg, &[]).unwrap()
}

fn a(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn prefix_route_proxies_and_counts() {
    let p = proxy(json!({"routes": [
        {"prefix": "ECHO", "upstreams": ["127.0.0.1:7001", "127.0.0.1:7002"]},
    ]}));
    assert_eq!(p.bindings(), vec![b"ECHO".to_vec()]);
    assert!(p.tls_passthrough().is_empty());
    let mut out = Out::new();
    assert_eq!(p.on_message(&conn(1), b"EC", &mut out), Verdict::NEED_MORE);
    let v = p.on_message(&conn(1), b"ECHO hi\n", &mut out);
    assert_eq!(addr(&v), a(7001));
    assert!(out.is_empty(), "no PROXY header unless configured");
    let v2 = p.on_message(&conn(2), b"ECHO", &mut out);
    assert_eq!(addr(&v2), a(7002));
    let r = &p.routes()[0];
    assert_eq!(r.stats.active.load(Relaxed), 2);
    p.proxy_event(
        &conn(1),
        event(ProxyEventKind::Connected, a(7001), 0, 0),
        &mut out,
    );
    p.proxy_event(
        &conn(1),
        event(ProxyEventKind::Closed, a(7001), 10, 20),
        &mut out,
    );
    assert_eq!(r.stats.active.load(Relaxed), 1);
    assert_eq!(r.stats.conns.load(Relaxed), 1);
    assert_eq!(r.stats.bytes_up.load(Relaxed), 10);
    assert_eq!(r.stats.bytes_down.load(Relaxed), 20);
    assert_eq!(p.sessions(), 1);
    p.on_close(&conn(2));
    assert_eq!(p.sessions(), 0);
    assert_eq!(r.stats.active.load(Relaxed), 0);
    assert_eq!(r.pool.members[1].active.load(Relaxed), 0);
    let st = p.status();
    assert!(
        st.starts_with("routes=1 ECHO:active=0,conns=1,failed=0,bytes_up=10,bytes_down=20,upstreams=127.0.0.1:7001(up,w=1,active=0)+127.0.0.1:7002(up,w=1,active=0)"),
        "{st}"
    );
    assert!(!st.contains('\n'));
}

#[test]
fn failed_connect_retries_then_gives_up() {
    let p = proxy(json!({"routes": [
        {"prefix": "X", "retries": 1, "upstreams": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
         "proxy_protocol": "v1"},
    ]}));
    let mut out = Out::new();
    let v = p.on_message(&conn(7), b"X", &mut out);
    assert_eq!(addr(&v), a(1));
    assert_eq!(&out[..], b"PROXY TCP4 192.0.2.9 0.0.0.0 40000 0\r\n");
    out.clear();
    let v = p.proxy_event(
        &conn(7),
        event(ProxyEventKind::Failed, a(1), 0, 0),
        &mut out,
    );
    assert_eq!(addr(&v), a(2));
    assert_eq!(
        &out[..],
        b"PROXY TCP4 192.0.2.9 0.0.0.0 40000 0\r\n",
        "header again for the retry"
    );
    out.clear();
    let v = p.proxy_event(
        &conn(7),
        event(ProxyEventKind::Failed, a(2), 0, 0),
        &mut out,
    );
    assert_eq!(v.action, Action::Close, "retries = 1: two attempts in all");
    assert!(out.is_empty());
    let r = &p.routes()[0];
    assert_eq!(r.stats.failed.load(Relaxed), 1);
    assert_eq!(r.stats.active.load(Relaxed), 0);
    assert!(r.pool.members.iter().all(|m| m.active.load(Relaxed) == 0));
    assert_eq!(p.sessions(), 0);
    // Both failed upstreams are skipped now: the next goes to the third.
    let v = p.on_message(&conn(8), b"X", &mut out);
    assert_eq!(addr(&v), a(3));
    assert!(p.status().contains("127.0.0.1:1(failed,"), "{}", p.status());
    // A Closed after giving up is harmless.
    p.proxy_event(
        &conn(7),
        event(ProxyEventKind::Closed, a(2), 0, 0),
        &mut out,
    );
}

#[test]
fn all_down_closes_without_connecting() {
    let p = proxy(json!({"routes": [
        {"prefix": "X", "upstreams": ["127.0.0.1:1"]},
    ]}));
    p.routes()[0].pool.members[0]
        .health_down
        .store(true, Relaxed);
    let mut out = Out::new();
    let v = p.on_message(&conn(1), b"X", &mut out);
    assert_eq!(v.action, Action::Close);
    assert_eq!(p.sessions(), 0);
    assert_eq!(p.routes()[0].stats.failed.load(Relaxed), 1);
}

#[test]
fn sni_routes_default_and_refusals() {
    let p = proxy(json!({"default_route": "fallback", "routes": [
        {"sni": "db.example.test", "upstreams": ["127.0.0.1:5432"]},
        {"sni": "*.example.test", "upstreams": ["127.0.0.1:8443"]},
        {"name": "fallback", "upstreams": ["127.0.0.1:9443"]},
    ]}));
    assert_eq!(p.bindings(), vec![b"\x16\x03".to_vec()]);
    assert_eq!(p.tls_passthrough(), ["db.example.test", "*.example.test"]);
    let mut out = Out::new();
    let hello = client_hello(Some("db.example.test"));
    assert_eq!(
        p.on_message(&conn(1), &hello[..20], &mut out),
        Verdict::NEED_MORE
    );
    assert_eq!(addr(&p.on_message(&conn(1), &hello, &mut out)), a(5432));
    let v = p.on_message(&conn(2), &client_hello(Some("www.example.test")), &mut out);
    assert_eq!(addr(&v), a(8443));
    let v = p.on_message(&conn(3), &client_hello(Some("other.test")), &mut out);
    assert_eq!(addr(&v), a(9443));
    assert!(out.is_empty());

    let p = proxy(json!({"routes": [
        {"sni": "db.example.test", "upstreams": ["127.0.0.1:5432"]},
    ]}));
    let v = p.on_message(&conn(4), &client_hello(Some("other.test")), &mut out);
    assert_eq!(v.action, Action::Close);
    let v = p.on_message(&conn(5), &client_hello(None), &mut out);
    assert_eq!(v.action, Action::Close);
    // Decrypted by the host: never proxied.
    let tls_conn = ConnInfo::new(6, "192.0.2.9:1".parse().unwrap(), true);
    let v = p.on_message(&tls_conn, &client_hello(Some("db.example.test")), &mut out);
    assert_eq!(v.action, Action::Close);
    assert_eq!(p.sessions(), 0);
}

#[test]
fn state_carries_over_a_reload() {
    let cfg = json!({"routes": [
        {"prefix": "X", "upstreams": ["127.0.0.1:1", "127.0.0.1:2"], "health_interval": "1s"},
    ]});
    let old = proxy(cfg.clone());
    let mut out = Out::new();
    old.on_message(&conn(1), b"X", &mut out);
    old.proxy_event(
        &conn(1),
        event(ProxyEventKind::Connected, a(1), 0, 0),
        &mut out,
    );
    old.proxy_event(
        &conn(1),
        event(ProxyEventKind::Closed, a(1), 5, 6),
        &mut out,
    );
    old.routes()[0].pool.members[1]
        .health_down
        .store(true, Relaxed);
    let saved = old.save_state();
    let new = Proxy::new(&cfg, &saved).unwrap();
    let r = &new.routes()[0];
    assert_eq!(r.stats.conns.load(Relaxed), 1);
    assert_eq!(r.stats.bytes_up.load(Relaxed), 5);
    assert!(r.pool.members[1].health_down.load(Relaxed));
    // Without health checks nothing would bring it back: not restored.
    let cfg_off = json!({"routes": [
        {"prefix": "X", "upstreams": ["127.0.0.1:1", "127.0.0.1:2"]},
    ]});
    let new = Proxy::new(&cfg_off, &saved).unwrap();
    assert!(!new.routes()[0].pool.members[1].health_down.load(Relaxed));
    // Garbage state is ignored.
    assert!(Proxy::new(&cfg, b"not json").is_ok());
}

#[test]
fn health_checker_marks_down_and_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live = listener.local_addr().unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut p = proxy(json!({"routes": [
        {"prefix": "X", "upstreams": [live.to_string(), dead.to_string()],
         "health_interval": "50ms", "health_timeout": "500ms", "health_fall": 1, "health_rise": 1},
    ]}));
    p.start_health().unwrap();
    let m = &p.routes()[0].pool.members;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !m[1].health_down.load(Relaxed) {
        assert!(
            std::time::Instant::now() < deadline,
            "dead upstream never marked down"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!m[0].health_down.load(Relaxed));
    let mut out = Out::new();
    for id in 0..5 {
        assert_eq!(addr(&p.on_message(&conn(id), b"X", &mut out)), live);
    }
    p.stop();
    drop(listener);
}
