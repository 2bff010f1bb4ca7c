//! Leader/worker mode: a worker killed by a module (segfault, abort, hang;
//! a wait inside `host.wait` is none) is replaced on the same sockets, the fault is reported by `STATUS` and
//! the log, a module that keeps crashing is quarantined, and `UPGRADE`
//! swaps workers without refusing a connection.

use crate::common;

use std::thread;
use std::time::{Duration, Instant};

use common::supervision::{alive, line, wait_new_worker, worker_pid, Load};
use common::{rss_kib, Server, ServerBuilder, INDEX_HTML};

fn crash_server(tag: &str) -> Server {
    ServerBuilder::new(&["http", "fx_crash"])
        .tag(tag)
        .server("event_loops = 2")
        .server("hang_warn_ms = 300")
        .server("hang_kill_ms = 1500")
        .server("quarantine_after = 3")
        .start()
}

/// One request that kills the worker; the rest keep being served.
fn crash_case(path: &str, cause: &str) {
    let s = crash_server(&format!("crash{}", path.replace('/', "-")));
    let st = s.status();
    let old = worker_pid(&st);
    assert_ne!(old, s.pid(), "STATUS names the leader, not the worker");
    assert_eq!(s.get("/crash/ok").text(), "ok");

    let load = Load::start(s.addr, 2, false);
    thread::sleep(Duration::from_millis(200));
    let mut c = s.connect();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let r = c.try_read_response(false);
    assert!(r.is_err(), "{path} was answered: {r:?}");

    let st = wait_new_worker(&s, old);
    thread::sleep(Duration::from_millis(300));
    let (ok, connect_errors, failed, _) = load.finish();
    assert!(ok > 0, "no request served");
    assert_eq!(connect_errors, 0, "connections refused during the restart");
    assert!(
        failed <= 2,
        "{failed} requests failed; at most the 2 connections open at the crash may"
    );

    assert!(!alive(old), "old worker {old} still running");
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains(&format!("pid={old} ")) && fault.contains(&format!("cause={cause} ")),
        "{fault}"
    );
    assert!(fault.contains("module=fx_crash "), "{fault}");
    assert_eq!(st.expect("fx_crash").gen, 1);
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert_eq!(s.get("/crash/ok").text(), "ok");
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("worker pid={old}")) && l.contains("fx_crash")),
        "the log does not say which module crashed worker {old}:\n{log}"
    );
}

#[test]
fn segfault_in_a_module_restarts_the_worker() {
    crash_case("/crash/segv", "SIGSEGV");
}

#[test]
fn abort_in_a_module_restarts_the_worker() {
    crash_case("/crash/abort", "SIGABRT");
}

#[test]
fn a_job_that_crashes_is_pinned_on_its_module_and_a_slow_one_is_no_hang() {
    let s = crash_server("job-crash");
    let old = worker_pid(&s.status());
    // 2 s in a job is past hang_kill_ms (1.5 s): jobs may run long, so
    // this is not a hang.
    assert_eq!(s.admin("RUN fx_crash slow"), "OK fx_crash/slow slept 2 s\n");
    assert_eq!(worker_pid(&s.status()), old, "log:\n{}", s.log());

    let mut c = s.connect();
    c.send(b"RUN fx_crash segv\n");
    assert!(c.try_read_line().is_err(), "the crashing job was answered");
    let st = wait_new_worker(&s, old);
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains(&format!("pid={old} ")) && fault.contains("cause=SIGSEGV "),
        "{fault}"
    );
    assert!(fault.contains("module=fx_crash "), "{fault}");
    assert_eq!(s.get("/crash/ok").text(), "ok");
}

#[test]
fn hung_module_call_gets_the_worker_replaced() {
    let s = crash_server("hang");
    let old = worker_pid(&s.status());
    let mut c = s.connect();
    c.send(b"GET /crash/hang HTTP/1.1\r\nHost: x\r\n\r\n");
    // Other connections are served meanwhile (or right after the kill).
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert!(c.try_read_response(false).is_err());
    let st = wait_new_worker(&s, old);
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains("cause=hang") && fault.contains("module=fx_crash"),
        "{fault}"
    );
    let log = s.log();
    assert!(log.contains("hang_warn_ms=300"), "no hang warning:\n{log}");
    assert!(log.contains("hang_kill_ms=1500"), "no hang kill:\n{log}");
    assert_eq!(s.get("/crash/ok").text(), "ok");
}

#[test]
fn a_wait_on_a_pool_thread_is_no_hang_but_sleeping_outside_one_is() {
    let s = crash_server("wait");
    let old = worker_pid(&s.status());
    // 2 s inside `host.wait` is past hang_kill_ms (1.5 s): not a hang.
    let r = s.get("/crash/wait");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "waited"),
        "{}",
        s.log()
    );
    assert_eq!(
        worker_pid(&s.status()),
        old,
        "killed for a wait:\n{}",
        s.log()
    );

    // 3 s of blocking outside a wait is one.
    let mut c = s.connect();
    c.send(b"GET /crash/sleep HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.try_read_response(false).is_err());
    let st = wait_new_worker(&s, old);
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains("cause=hang") && fault.contains("module=fx_crash"),
        "{fault}"
    );
}

#[test]
fn external_sigsegv_is_recovered() {
    let s = crash_server("kill");
    let old = worker_pid(&s.status());
    // SAFETY: kill(2) on the worker the server reported.
    assert_eq!(unsafe { libc::kill(old as i32, libc::SIGSEGV) }, 0);
    let st = wait_new_worker(&s, old);
    let fault = line(&st, "fault ").unwrap();
    assert!(fault.contains("cause=SIGSEGV"), "{fault}");
    assert_eq!(s.get("/").text(), INDEX_HTML);
}

#[test]
fn repeated_crashes_quarantine_the_module_until_reload() {
    let s = crash_server("quarantine");
    let mut pid = worker_pid(&s.status());
    for _ in 0..3 {
        let mut c = s.connect();
        c.send(b"GET /crash/segv HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(c.try_read_response(false).is_err());
        pid = worker_pid(&wait_new_worker(&s, pid));
    }
    let st = s.status();
    let q = line(&st, "quarantined fx_crash ")
        .unwrap_or_else(|| panic!("fx_crash not quarantined:\n{}", st.raw));
    assert!(q.contains("crashes=3"), "{q}");
    assert!(st.module("fx_crash").is_none(), "{}", st.raw);
    assert_eq!(s.get("/crash/ok").status, 404, "the http module answers");
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert!(
        s.log().contains("quarantined after 3 crashes"),
        "{}",
        s.log()
    );

    // A plain RELOAD leaves it out and says why.
    let reply = s.admin("RELOAD");
    assert!(
        reply
            .lines()
            .any(|l| l.starts_with("ERR fx_crash: quarantined after 3 crashes")),
        "{reply}"
    );
    // An explicit RELOAD lifts it.
    let reply = s.admin("RELOAD fx_crash");
    assert!(reply.starts_with("OK fx_crash gen=1"), "{reply}");
    assert_eq!(s.get("/crash/ok").text(), "ok");
    let st = s.status();
    assert!(line(&st, "quarantined ").is_none(), "{}", st.raw);
}

#[test]
fn changed_file_lifts_the_quarantine_at_the_next_start() {
    let s = ServerBuilder::new(&["http", "fx_crash"])
        .tag("quarantine-file")
        .server("quarantine_after = 1")
        .start();
    let pid = worker_pid(&s.status());
    let mut c = s.connect();
    c.send(b"GET /crash/abort HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.try_read_response(false).is_err());
    let st = wait_new_worker(&s, pid);
    assert!(st.module("fx_crash").is_none(), "{}", st.raw);
    s.change_module("fx_crash");
    let reply = s.admin("RELOAD");
    assert!(
        reply.lines().any(|l| l.starts_with("OK fx_crash gen=1")),
        "{reply}"
    );
    assert_eq!(s.get("/crash/ok").text(), "ok");
}

#[test]
fn upgrade_under_load_refuses_nothing_and_reclaims_memory() {
    let s = ServerBuilder::new(&["http", "fx_app"])
        .tag("upgrade")
        .server("event_loops = 2")
        .start();
    let first = worker_pid(&s.status());
    for _ in 0..50 {
        assert_eq!(s.get("/").status, 200);
    }
    let fresh = rss_kib(first);

    // 200 reloads on the old worker: retired generations stay mapped.
    for i in 0..200 {
        let r = s.admin("RELOAD http");
        assert!(r.starts_with("OK http gen="), "reload {i}: {r}");
    }
    let grown = rss_kib(first);

    let load = Load::start(s.addr, 4, false);
    let keep_alive_load = Load::start(s.addr, 4, true);
    thread::sleep(Duration::from_millis(300));
    let reply = s.admin("UPGRADE");
    let new: u32 = reply
        .trim()
        .strip_prefix("OK upgrading: new worker pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("UPGRADE replied {reply:?}; log:\n{}", s.log()));
    assert_ne!(new, first);
    thread::sleep(Duration::from_millis(500));
    let st = s.status();
    assert_eq!(worker_pid(&st), new, "{}", st.raw);
    assert_eq!(st.expect("http").gen, 1, "{}", st.raw);
    let (ok, connect_errors, failed, _) = load.finish();
    assert!(ok > 0);
    assert_eq!(connect_errors, 0, "connections refused during UPGRADE");
    assert_eq!(failed, 0, "requests failed during UPGRADE");
    // Keep-alive clients are not cut off mid-request: their next request on
    // the old worker is answered with `Connection: close`.
    let (ok, connect_errors, failed, told_close) = keep_alive_load.finish();
    assert!(ok > 0);
    assert_eq!(connect_errors, 0, "keep-alive: connections refused");
    assert_eq!(failed, 0, "keep-alive: requests failed during UPGRADE");
    assert!(told_close >= 1, "no keep-alive client was told to close");

    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(first) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(first), "old worker still running after UPGRADE");
    for _ in 0..50 {
        assert_eq!(s.get("/").status, 200);
    }
    let after = rss_kib(new);
    eprintln!("RSS KiB: fresh {fresh}, after 200 reloads {grown}, new worker {after}");
    assert!(
        after <= fresh + fresh / 4 + 2048,
        "new worker RSS {after} KiB vs a fresh worker's {fresh} KiB (old one had {grown})"
    );
}

#[test]
fn shutdown_stops_leader_and_worker() {
    let mut s = crash_server("shutdown");
    let pid = worker_pid(&s.status());
    assert_eq!(s.admin("SHUTDOWN"), "OK shutting down\n");
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("leader still running after SHUTDOWN");
    assert!(st.success(), "{st:?}");
    assert!(!alive(pid), "worker {pid} still running");
}

#[test]
fn sigterm_to_the_leader_stops_the_worker() {
    let mut s = crash_server("sigterm");
    let pid = worker_pid(&s.status());
    s.signal(libc::SIGTERM);
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("leader still running after SIGTERM");
    assert!(st.success(), "{st:?}");
    assert!(!alive(pid), "worker {pid} still running");
}

#[test]
fn killed_leader_takes_the_worker_with_it() {
    let mut s = crash_server("leader-kill");
    let pid = worker_pid(&s.status());
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5)).expect("leader alive");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "worker {pid} outlived its leader");
}

#[test]
fn single_mode_has_no_leader() {
    let s = ServerBuilder::new(&["http"])
        .tag("single")
        .arg("--single")
        .start();
    let st = s.status();
    assert_eq!(worker_pid(&st), s.pid());
    assert!(s.admin("UPGRADE").starts_with("ERR "));
    assert_eq!(s.get("/").text(), INDEX_HTML);
}

#[test]
fn upgrade_answers_idle_and_silent_connections_before_closing_them() {
    let s = ServerBuilder::new(&["http"])
        .tag("upgrade-idle")
        .server("event_loops = 2")
        .server("shutdown_idle_grace_ms = 5000")
        .start();
    let first = worker_pid(&s.status());
    // An idle keep-alive connection, and one that has not sent a byte yet.
    let mut idle = s.connect();
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = idle.read_response(false);
    assert_eq!((r.status, r.header("connection")), (200, None));
    let mut silent = s.connect();
    // The old worker holds both (plus this STATUS connection).
    s.wait_status(Duration::from_secs(5), |st| st.host_field("conns") >= 3);

    let reply = s.admin("UPGRADE");
    assert!(reply.starts_with("OK upgrading"), "{reply}");
    thread::sleep(Duration::from_millis(200));
    assert!(alive(first), "the old worker quit with connections open");
    for (name, c) in [("idle", &mut idle), ("silent", &mut silent)] {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c
            .try_read_response(false)
            .unwrap_or_else(|e| panic!("{name} connection: {e}; log:\n{}", s.log()));
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.body, INDEX_HTML.as_bytes(), "{name}");
        assert_eq!(r.header("connection"), Some("close"), "{name}");
        c.expect_closed(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{name} connection not closed: {e}"));
    }
    // With nothing left to answer the old worker exits well before the
    // grace ends.
    let deadline = Instant::now() + Duration::from_secs(4);
    while alive(first) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(first), "old worker still running");
    assert_eq!(s.get("/").status, 200);
}
