//! Hostile clients: supervision. A panic in host code must not leave a
//! half-dead worker (item 2: the leader replaces it, every loop serves
//! again), and reloads must not grow memory without bound (item 10: past
//! `max_retained_bytes` the worker replaces itself without failing a
//! request). The panics are injected with the test hook
//! `SWITCHYARD_FAULT_INJECT`, which only the server's environment arms.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::supervision::{alive, line, wait_new_worker, worker_field, worker_pid, Load};
use crate::common::{rss_kib, Server, ServerBuilder, Status, INDEX_HTML};

/// A server whose `site` thread panics on the admin line `marker`.
fn armed_server(tag: &str, site: &str, marker: &str) -> Server {
    ServerBuilder::new(&["http"])
        .tag(tag)
        .server("event_loops = 4")
        .env(
            "SWITCHYARD_FAULT_INJECT",
            &format!("{site}-panic-on:{marker}"),
        )
        .start()
}

/// Sends `marker`, which kills the worker: no answer, the connection ends.
fn trigger(s: &Server, marker: &str) {
    let mut c = s.connect();
    c.send(format!("{marker}\n").as_bytes());
    let r = c.try_read_line();
    assert!(r.is_err(), "{marker:?} was answered: {r:?}");
}

/// After a host panic: a new worker, `STATUS` names the panic, the log
/// says where, and fresh connections are served by every loop.
fn check_replaced(s: &Server, old: u32, thread_prefix: &str) -> Status {
    let st = wait_new_worker(s, old);
    assert!(!alive(old), "worker {old} still running after its panic");
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains(&format!("pid={old} ")) && fault.contains("cause=panic "),
        "{fault}"
    );
    assert!(fault.contains("module=- "), "no module is blamed: {fault}");
    let log = s.log();
    assert!(
        log.lines().any(|l| l.contains("host panic on thread ")
            && l.contains(thread_prefix)
            && l.contains("admin/mod.rs")
            && l.contains("fault injected")),
        "the log does not name the thread, place and message of the panic:\n{log}"
    );
    assert_eq!(st.host_field("loops"), 4, "{}", st.raw);
    // 40 fresh connections spread over the 4 reuseport listeners: each
    // loop gets some ((3/4)^40 < 1e-5 that one gets none), and every one
    // is answered. A dead loop would leave about a quarter unanswered.
    let mut served = 0;
    for i in 0..40 {
        let mut c = s.connect();
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = c
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("connection {i} not served after the panic: {e}"));
        assert_eq!((r.status, r.body.as_slice()), (200, INDEX_HTML.as_bytes()));
        served += 1;
    }
    assert_eq!(served, 40);
    st
}

#[test]
fn a_host_panic_on_an_event_loop_gets_the_worker_replaced() {
    let s = armed_server("panic-loop", "loop", "STATUS boom");
    let old = worker_pid(&s.status());
    // A connection open on the old worker is closed with it, not left
    // hanging on a dead loop.
    let mut held = s.connect();
    held.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(held.read_response(false).status, 200);

    trigger(&s, "STATUS boom");
    check_replaced(&s, old, "loop-");
    held.expect_closed(Duration::from_secs(5))
        .expect("a connection of the dead worker stayed open");
}

#[test]
fn a_host_panic_on_the_control_thread_gets_the_worker_replaced() {
    let s = armed_server("panic-control", "control", "RELOAD boom");
    let old = worker_pid(&s.status());
    trigger(&s, "RELOAD boom");
    let st = check_replaced(&s, old, "control");
    // The control thread of the new worker answers admin commands.
    assert!(s.admin("RELOAD http").starts_with("OK http gen="));
    assert_eq!(st.expect("http").gen, 1);
}

#[test]
fn the_fault_hook_is_inert_without_the_variable() {
    let s = ServerBuilder::new(&["http"]).tag("panic-unarmed").start();
    let old = worker_pid(&s.status());
    assert_eq!(s.admin("STATUS boom"), "ERR unknown command\n");
    assert!(s.admin("RELOAD boom").starts_with("ERR boom:"));
    assert_eq!(worker_pid(&s.status()), old);
}

/// `RELOAD <name>` on a fresh connection, retried when the connection
/// belonged to a worker that is handing over (it may close before
/// answering); the reply, and how many tries it took.
fn reload(s: &Server, name: &str) -> (String, u32) {
    let cmd = format!("RELOAD {name}\n");
    for attempt in 1..=5 {
        let mut c = s.connect();
        c.send_lenient(cmd.as_bytes());
        if let Ok(l) = c.try_read_line() {
            return (l, attempt);
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("RELOAD {name} never answered; log:\n{}", s.log());
}

/// The RSS of every live worker of the leader `leader` (KiB).
fn workers_rss(leader: u32) -> Vec<(u32, u64)> {
    let children = std::fs::read_to_string(format!("/proc/{leader}/task/{leader}/children"))
        .unwrap_or_default();
    children
        .split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| alive(p))
        .map(|p| (p, rss_kib(p)))
        .collect()
}

#[test]
fn reload_memory_is_bounded_by_replacing_the_worker_under_load() {
    const LIMIT: u64 = 8 << 20;
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("retained")
        .server("event_loops = 2")
        .server(&format!("max_retained_bytes = {LIMIT}"))
        .start();
    let first = worker_pid(&s.status());
    for _ in 0..20 {
        assert_eq!(s.get("/").status, 200);
    }
    let fresh = rss_kib(first);

    let load = Load::start(s.addr, 3, false);
    let keep_alive = Load::start(s.addr, 3, true);
    thread::sleep(Duration::from_millis(200));
    let (mut peak, mut retries) = (0u64, 0u32);
    for i in 0..60 {
        let (reply, tries) = reload(&s, "rpc");
        assert!(reply.starts_with("OK rpc gen="), "reload {i}: {reply}");
        retries += tries - 1;
        for (_, kib) in workers_rss(s.pid()) {
            peak = peak.max(kib);
        }
    }
    thread::sleep(Duration::from_millis(300));
    let (ok, connect_errors, failed, _) = load.finish();
    let (ka_ok, ka_connect_errors, ka_failed, told_close) = keep_alive.finish();

    let st = s.status();
    let now = worker_pid(&st);
    let auto = worker_field(&st, "auto_upgrades");
    let last = rss_kib(now);
    eprintln!(
        "retained: RSS KiB fresh {fresh}, peak over live workers {peak}, last worker {last}; \
         auto_upgrades={auto}; requests ok {ok} + {ka_ok} keep-alive ({told_close} told to \
         close); RELOAD retries {retries}"
    );
    assert_eq!(connect_errors + ka_connect_errors, 0, "connections refused");
    assert_eq!(failed + ka_failed, 0, "requests failed");
    assert!(ok > 0 && ka_ok > 0);
    // rpc.so is over 1 MiB: 60 copies are far past 8 MiB, so the worker
    // was replaced several times, and no worker ever held them all.
    assert!(auto >= 3, "auto_upgrades={auto}:\n{}", st.raw);
    assert!(worker_field(&st, "upgrades") >= auto, "{}", st.raw);
    assert_ne!(now, first);
    let bound = fresh + fresh / 2 + 2 * (LIMIT >> 10);
    assert!(
        peak <= bound,
        "a worker reached {peak} KiB RSS (fresh {fresh}, bound {bound})"
    );
    assert!(
        st.expect("rpc").num("retained_bytes") <= LIMIT + (4 << 20),
        "{}",
        st.raw
    );
    assert!(
        s.log()
            .contains("bytes > max_retained_bytes=8388608: replacing the worker"),
        "no log line for the replacement:\n{}",
        s.log()
    );
    // Old workers drain and exit.
    let deadline = Instant::now() + Duration::from_secs(15);
    while workers_rss(s.pid()).len() > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        workers_rss(s.pid()).len(),
        1,
        "old workers still running: {:?}",
        workers_rss(s.pid())
    );
    assert_eq!(s.get("/").text(), INDEX_HTML);
}
