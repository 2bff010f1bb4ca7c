//! Module faults: a panicking handler, libraries that must be refused at
//! load (ABI mismatch, `start` error) and conflicting bindings. In every
//! case the other modules keep serving.

use crate::common;

use std::time::Duration;

use common::{parse_reload, Server, ServerBuilder, INDEX_HTML};

/// Whether `text` mentions an ABI/layout mismatch, not counting the words
/// inside the fixture's own name.
fn mentions_mismatch(text: &str) -> bool {
    let t = text.to_ascii_lowercase().replace("fx_bad_abi", "");
    ["mismatch", "incompatible", "abi", "layout"]
        .iter()
        .any(|w| t.contains(w))
}

#[test]
fn panic_is_a_500_and_a_counted_fault() {
    let s = Server::start(&["http", "fx_panic"]);
    assert_eq!(s.get("/panic/ok").text(), "fine");

    let r = s.get("/panic/now");
    assert_eq!(r.status, 500, "{r:?}");

    // The module and the server keep serving.
    let r = s.get("/panic/ok");
    assert_eq!((r.status, r.text().as_str()), (200, "fine"));
    assert_eq!(s.get("/").text(), INDEX_HTML);

    let st = s.status();
    let m = st.expect("fx_panic");
    assert_eq!(m.faults, 1, "{}", m.line);
    assert_eq!(m.state, "running");
    assert_eq!(st.expect("http").faults, 0);
    assert!(st.host_field("faults") >= 1, "{}", st.raw);

    // A panic on a keep-alive connection: 500, then the connection closes
    // (the SDK answers Close), and the server is fine.
    let mut c = s.connect();
    c.send(b"GET /panic/ok HTTP/1.1\r\nHost: x\r\n\r\nGET /panic/now HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(false).text(), "fine");
    assert_eq!(c.read_response(false).status, 500);
    c.expect_closed(Duration::from_secs(5))
        .expect("connection kept open after a module fault");
    assert_eq!(s.status().expect("fx_panic").faults, 2);
}

#[test]
fn bad_abi_module_is_refused_at_startup() {
    let s = Server::start(&["http", "fx_app", "fx_bad_abi"]);
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert_eq!(s.get("/app/1").text(), "app:/app/1");
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains("fx_bad_abi") && l.contains("ERROR")),
        "no error-level log line names fx_bad_abi.so:\n{log}"
    );
    assert!(
        mentions_mismatch(&log),
        "log does not mention the mismatch:\n{log}"
    );
    let st = s.status();
    let names: Vec<&str> = st.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["fx_app", "http"], "{}", st.raw);
}

#[test]
fn bad_abi_module_is_refused_by_reload() {
    let s = Server::start(&["http"]);
    s.install_module("fx_bad_abi");
    let reply = s.admin("RELOAD");
    let (lines, counts) = parse_reload(&reply);
    assert_eq!(counts[3], 1, "{reply}");
    let err = lines
        .iter()
        .find(|l| l.starts_with("ERR ") && l.contains("fx_bad_abi"))
        .unwrap_or_else(|| panic!("no ERR line naming fx_bad_abi: {reply}"));
    assert!(mentions_mismatch(err), "ERR line does not say why: {err}");
    assert!(
        lines.contains(&"OK http unchanged gen=1".to_string()),
        "{reply}"
    );
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert_eq!(s.status().modules.len(), 1);
}

#[test]
fn start_error_is_refused() {
    let s = Server::start(&["http", "fx_start_err"]);
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert!(
        s.wait_log(Duration::from_secs(2), |l| l
            .contains("refusing to start: fx_start_err test")),
        "start error not logged:\n{}",
        s.log()
    );
    assert!(
        s.log()
            .lines()
            .any(|l| l.contains("fx_start_err") && l.contains("ERROR")),
        "no error-level log line names fx_start_err:\n{}",
        s.log()
    );
    assert!(s.status().module("fx_start_err").is_none());

    // Retried by RELOAD (its file is not running) and refused again.
    let reply = s.admin("RELOAD");
    let (lines, counts) = parse_reload(&reply);
    assert_eq!(counts[3], 1, "{reply}");
    assert!(
        lines.iter().any(|l| l.starts_with("ERR ")
            && l.contains("fx_start_err")
            && l.contains("refusing to start: fx_start_err test")),
        "{reply}"
    );
    assert_eq!(s.get("/").text(), INDEX_HTML);
}

#[test]
fn conflicting_bindings_are_a_load_error_naming_both() {
    let s = Server::start(&["http", "fx_app", "fx_dup"]);
    assert_eq!(s.get("/").text(), INDEX_HTML);
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains("fx_app") && l.contains("fx_dup")),
        "no log line names both conflicting modules:\n{log}"
    );
    let st = s.status();
    let loaded: Vec<&str> = st
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| *n == "fx_app" || *n == "fx_dup")
        .collect();
    assert_eq!(
        loaded.len(),
        1,
        "exactly one of the two must load: {}",
        st.raw
    );
    let body = s.get("/app/k").text();
    let expect = format!(
        "{}:/app/k",
        if loaded[0] == "fx_app" { "app" } else { "dup" }
    );
    assert_eq!(body, expect);
}

#[test]
fn conflicting_binding_added_by_reload_is_refused() {
    let s = Server::start(&["http", "fx_app"]);
    s.install_module("fx_dup");
    let reply = s.admin("RELOAD");
    let (lines, counts) = parse_reload(&reply);
    assert_eq!(counts[3], 1, "{reply}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERR ") && l.contains("fx_dup") && l.contains("fx_app")),
        "{reply}"
    );
    // The running module keeps its route.
    assert_eq!(s.get("/app/k").text(), "app:/app/k");
    assert_eq!(s.get("/").text(), INDEX_HTML);
}

#[test]
fn config_routes_resolve_a_conflict() {
    let s = ServerBuilder::new(&["http", "fx_app", "fx_dup"])
        .route("GET /app/", "fx_dup")
        .start();
    let st = s.status();
    st.expect("fx_app");
    st.expect("fx_dup");
    assert_eq!(s.get("/app/k").text(), "dup:/app/k");
    assert_eq!(s.get("/").text(), INDEX_HTML);

    let s = ServerBuilder::new(&["http", "fx_app", "fx_dup"])
        .route("GET /app/", "fx_app")
        .start();
    assert_eq!(s.get("/app/k").text(), "app:/app/k");
}
