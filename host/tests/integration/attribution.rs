//! Crash attribution: whichever way module code is reached (a module's
//! `start`, an in-process call from another module's handler or job, its
//! `status`), a crash or a hang in it is pinned on the module whose code
//! was running, in the leader's log line, in `STATUS`'s `fault` line and
//! in the quarantine, never on its caller or on "not in module code".

use crate::common;

use common::supervision::{line, wait_new_worker, worker_pid};
use common::{Server, ServerBuilder, INDEX_HTML};

/// `fx_call_crash`, which calls `fx_crash` in-process, next to it.
fn callers(tag: &str, quarantine_after: u32) -> Server {
    ServerBuilder::new(&["fx_crash", "fx_call_crash"])
        .tag(tag)
        .server(&format!("quarantine_after = {quarantine_after}"))
        .start()
}

/// The leader's line for worker `pid`'s death, from the log.
fn death_line(s: &Server, pid: u32) -> String {
    let log = s.log();
    log.lines()
        .find(|l| l.contains(&format!("leader: worker pid={pid} ")) && l.contains("restarting"))
        .unwrap_or_else(|| panic!("no line about worker {pid}'s death:\n{log}"))
        .to_string()
}

/// Checks that the crash of worker `old` was blamed on `fx_crash` alone.
fn pinned_on_fx_crash(s: &Server, old: u32, fault: &str) {
    assert!(
        fault.contains(&format!("pid={old} ")) && fault.contains("cause=SIGSEGV "),
        "{fault}"
    );
    assert!(fault.contains("module=fx_crash "), "{fault}");
    let death = death_line(s, old);
    assert!(
        death.contains("was killed by SIGSEGV while running module fx_crash;"),
        "{death}"
    );
    assert!(!death.contains("fx_call_crash"), "{death}");
}

/// A module that crashes in its `start` is blamed for it, as a crash in a
/// request is: the fault line names it, and once `quarantine_after`
/// workers have died starting it, it is quarantined, so the next worker
/// starts without it and serves the other modules.
#[test]
fn a_crash_in_start_is_pinned_on_the_module_and_quarantines_it() {
    let s = ServerBuilder::new(&["http", "fx_crash"])
        .tag("start-crash")
        .server("quarantine_after = 3")
        .toml("[modules.fx_crash]\nsegv_in_start = true\n")
        .start();
    let st = s.status();
    let q = line(&st, "quarantined fx_crash ")
        .unwrap_or_else(|| panic!("fx_crash not quarantined:\n{}", st.raw));
    assert!(q.contains("crashes=3"), "{q}");
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains("cause=SIGSEGV ") && fault.contains("module=fx_crash "),
        "{fault}"
    );
    assert!(st.module("fx_crash").is_none(), "{}", st.raw);
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert_eq!(s.get("/crash/ok").status, 404, "the http module answers");
}

/// `fx_call_crash`'s handler calls `fx_crash` in-process, and `fx_crash`
/// segfaults: the crash is `fx_crash`'s, so `fx_crash` is the one
/// quarantined after `quarantine_after` of them, and its caller keeps
/// running (and is told the callee is gone).
#[test]
fn a_crash_in_an_in_process_callee_is_pinned_on_the_callee() {
    let s = callers("call-crash", 2);
    let r = s.get("/callcrash/ok");
    assert_eq!(r.status, 200, "{}", s.log());
    assert!(r.text().ends_with("\r\n\r\nok"), "{:?}", r.text());

    let mut pid = worker_pid(&s.status());
    for _ in 0..2 {
        let mut c = s.connect();
        c.send(b"GET /callcrash/segv HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            c.try_read_response(false).is_err(),
            "the crashing call was answered"
        );
        let st = wait_new_worker(&s, pid);
        let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
        pinned_on_fx_crash(&s, pid, fault);
        pid = worker_pid(&st);
    }

    let st = s.status();
    let q = line(&st, "quarantined fx_crash ")
        .unwrap_or_else(|| panic!("fx_crash not quarantined:\n{}", st.raw));
    assert!(q.contains("crashes=2"), "{q}");
    assert!(
        line(&st, "quarantined fx_call_crash ").is_none(),
        "{}",
        st.raw
    );
    assert!(st.module("fx_crash").is_none(), "{}", st.raw);
    assert!(st.module("fx_call_crash").is_some(), "{}", st.raw);
    // The caller still runs; the callee is gone.
    let r = s.get("/callcrash/ok");
    assert_eq!(
        (r.status, r.text().as_str()),
        (502, "fx_crash: NoSuchModule")
    );
}

/// The same crash reached from a scheduled job of `fx_call_crash`: jobs run
/// on their own threads, unwatched, and the callee is still the one named.
#[test]
fn a_crash_in_a_callee_of_a_job_is_pinned_on_the_callee() {
    let s = callers("job-call-crash", 3);
    let old = worker_pid(&s.status());
    let mut c = s.connect();
    c.send(b"RUN fx_call_crash segv\n");
    assert!(c.try_read_line().is_err(), "the crashing job was answered");
    let st = wait_new_worker(&s, old);
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    pinned_on_fx_crash(&s, old, fault);
    // One crash of three: nothing quarantined, both modules back.
    assert!(line(&st, "quarantined ").is_none(), "{}", st.raw);
    assert_eq!(st.expect("fx_crash").gen, 1);
    assert_eq!(st.expect("fx_call_crash").gen, 1);
    assert_eq!(s.get("/callcrash/ok").status, 200);
}

/// A module whose `status` never returns hangs `STATUS`: the leader's hang
/// check names the module, kills the worker and (with `quarantine_after =
/// 1`) quarantines the module, so the next worker answers `STATUS`.
#[test]
fn a_module_that_hangs_in_status_is_killed_and_named() {
    let s = ServerBuilder::new(&["http", "fx_crash"])
        .tag("status-hang")
        .server("hang_warn_ms = 300")
        .server("hang_kill_ms = 1500")
        .server("quarantine_after = 1")
        .toml("[modules.fx_crash]\nhang_in_status = true\n")
        .start();
    assert_eq!(s.get("/crash/ok").text(), "ok");
    let log = s.log();
    let old: u32 = log
        .lines()
        .find_map(|l| l.split("leader: started worker pid=").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker pid in the log:\n{log}"));

    let mut c = s.connect();
    c.send(b"STATUS\n");
    assert!(c.try_read_line().is_err(), "a hung STATUS was answered");
    let st = wait_new_worker(&s, old);
    let fault = line(&st, "fault ").unwrap_or_else(|| panic!("no fault line:\n{}", st.raw));
    assert!(
        fault.contains(&format!("pid={old} "))
            && fault.contains("cause=hang ")
            && fault.contains("module=fx_crash "),
        "{fault}"
    );
    let log = s.log();
    assert!(
        log.contains("a call into module fx_crash has not returned"),
        "no hang report:\n{log}"
    );
    assert!(line(&st, "quarantined fx_crash ").is_some(), "{}", st.raw);
    assert_eq!(s.get("/").text(), INDEX_HTML);
}
