//! Built-in commands on the shared port: STATUS, RELOAD, RELOAD <name>,
//! CLOSE, SHUTDOWN, AUTH, unknown commands; and SIGHUP / SIGTERM / SIGINT.

mod common;

use std::time::Duration;

use common::{parse_reload, Server, ServerBuilder, INDEX_HTML};

#[test]
fn status_lists_modules_in_the_exact_format() {
    let s = Server::start(&["http", "fx_app"]);
    // Some traffic so counters move.
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/app/z").status, 200);

    let st = s.status();
    let names: Vec<&str> = st.modules.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["fx_app", "http"], "{}", st.raw);
    st.assert_exact_format();
    let http = st.expect("http");
    assert_eq!(http.gen, 1, "{}", http.line);
    assert_eq!(http.state, "running");
    assert!(http.line.starts_with("http v"), "{}", http.line);
    assert!(
        http.line.contains(" gen=1 state=running conns="),
        "{}",
        http.line
    );
    assert!(http.requests >= 1, "{}", http.line);
    assert_eq!(http.faults, 0);
    let app = st.expect("fx_app");
    assert_eq!(app.version, "0.1.0");
    assert_eq!(app.gen, 1);
    assert!(app.requests >= 1, "{}", app.line);
    assert_eq!(st.host_field("threads"), 2, "{}", st.raw);
    assert!(st.host_field("accepted") >= 3, "{}", st.raw);
    assert!(st.host_field("loops") >= 1, "{}", st.raw);
    assert_eq!(st.host_field("faults"), 0, "{}", st.raw);
}

#[test]
fn reload_one_module_bumps_its_generation() {
    let s = Server::start(&["http", "fx_app"]);
    let reply = s.admin("RELOAD http");
    assert_eq!(reply.lines().count(), 1, "{reply:?}");
    assert!(reply.starts_with("OK http gen=2 v"), "{reply:?}");
    let st = s.status();
    assert_eq!(st.expect("http").gen, 2, "{}", st.raw);
    assert_eq!(st.expect("fx_app").gen, 1, "{}", st.raw);
    assert_eq!(s.get("/").text(), INDEX_HTML);

    let reply = s.admin("RELOAD http");
    assert!(reply.starts_with("OK http gen=3 v"), "{reply:?}");
    assert_eq!(s.get("/").text(), INDEX_HTML);

    let reply = s.admin("RELOAD nosuchmodule");
    assert!(reply.starts_with("ERR nosuchmodule: "), "{reply:?}");
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn reload_all_reports_each_module_and_a_summary() {
    let s = Server::start(&["http", "fx_app"]);

    // Nothing changed.
    let reply = s.admin("RELOAD");
    let (lines, [loaded, unchanged, removed, failed]) = parse_reload(&reply);
    assert_eq!(
        (loaded, unchanged, removed, failed),
        (0, 2, 0, 0),
        "{reply}"
    );
    assert!(
        lines.contains(&"OK http unchanged gen=1".to_string()),
        "{reply}"
    );
    assert!(
        lines.contains(&"OK fx_app unchanged gen=1".to_string()),
        "{reply}"
    );

    // One changed file, one new file.
    s.change_module("http");
    s.install_module("fx_line");
    let reply = s.admin("RELOAD");
    let (lines, counts) = parse_reload(&reply);
    assert_eq!(counts, [2, 1, 0, 0], "{reply}");
    assert!(
        lines.iter().any(|l| l.starts_with("OK http gen=2 v")),
        "{reply}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("OK fx_line gen=1 v0.1.0")),
        "{reply}"
    );
    assert!(
        lines.contains(&"OK fx_app unchanged gen=1".to_string()),
        "{reply}"
    );
    let st = s.status();
    assert_eq!(st.expect("http").gen, 2);
    assert_eq!(st.expect("fx_line").gen, 1);
    let mut c = s.connect();
    c.send(b"PING\n");
    assert_eq!(c.read_line(), "PONG");
    assert_eq!(s.get("/").text(), INDEX_HTML);

    // A deleted file.
    s.remove_module("fx_app");
    let reply = s.admin("RELOAD");
    let (lines, counts) = parse_reload(&reply);
    assert_eq!(counts, [0, 2, 1, 0], "{reply}");
    assert!(lines.contains(&"OK fx_app removed".to_string()), "{reply}");
    assert!(s.status().module("fx_app").is_none());
    // The removed module's prefixes answer 503 with Retry-After (the
    // http module does not take them over silently).
    let r = s.get("/app/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));

    // ... and put back.
    s.install_module("fx_app");
    let reply = s.admin("RELOAD");
    let (_, counts) = parse_reload(&reply);
    assert_eq!(counts, [1, 2, 0, 0], "{reply}");
    assert_eq!(s.get("/app/x").text(), "app:/app/x");
}

#[test]
fn several_commands_on_one_connection() {
    let s = Server::start(&["http"]);
    let mut c = s.connect();
    c.send(b"STATUS\r\nRELOAD http\r\nSTATUS\nCLOSE\n");
    let first = common::Status::parse(&c.read_admin_reply("STATUS"));
    assert_eq!(first.expect("http").gen, 1);
    assert!(c.read_line().starts_with("OK http gen=2 v"));
    let second = common::Status::parse(&c.read_admin_reply("STATUS"));
    assert_eq!(second.expect("http").gen, 2);
    assert_eq!(c.read_line(), "OK bye");
    c.expect_closed(Duration::from_secs(5))
        .expect("CLOSE did not close");
}

#[test]
fn close_says_bye_and_closes() {
    let s = Server::start(&["http"]);
    let mut c = s.connect();
    c.send(b"CLOSE\n");
    assert_eq!(c.read_line(), "OK bye");
    c.expect_closed(Duration::from_secs(5))
        .expect("CLOSE did not close");
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn shutdown_exits_zero() {
    let mut s = Server::start(&["http"]);
    let reply = s.admin("SHUTDOWN");
    assert_eq!(reply, "OK shutting down\n");
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SHUTDOWN");
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn unknown_command_is_err() {
    let s = Server::start(&["http"]);
    let reply = s.admin("STATUSX");
    assert_eq!(reply, "ERR unknown command\n");
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn auth_with_token_configured() {
    let s = ServerBuilder::new(&["http"])
        .server("admin_token = \"s3cret\"")
        .start();
    // Loopback is trusted without AUTH.
    let st = s.status();
    assert_eq!(st.expect("http").gen, 1);
    assert_eq!(s.admin("AUTH wrong"), "ERR bad token\n");
    assert_eq!(s.admin("AUTH s3cret"), "OK\n");
    let mut c = s.connect();
    c.send(b"AUTH nope\nAUTH s3cret\nRELOAD http\n");
    assert_eq!(c.read_line(), "ERR bad token");
    assert_eq!(c.read_line(), "OK");
    assert!(c.read_line().starts_with("OK http gen=2"));
}

#[test]
fn sighup_reloads() {
    let s = Server::start(&["http"]);
    s.change_module("http");
    s.signal(libc::SIGHUP);
    let st = s.wait_status(Duration::from_secs(5), |st| {
        st.module("http").is_some_and(|m| m.gen == 2)
    });
    assert_eq!(st.expect("http").gen, 2, "{}", st.raw);
    assert_eq!(s.get("/").text(), INDEX_HTML);

    // A new file is picked up by SIGHUP too.
    s.install_module("fx_app");
    s.signal(libc::SIGHUP);
    let st = s.wait_status(Duration::from_secs(5), |st| st.module("fx_app").is_some());
    assert_eq!(st.expect("fx_app").gen, 1, "{}", st.raw);
    assert_eq!(s.get("/app/q").text(), "app:/app/q");
}

#[test]
fn sigterm_exits_zero() {
    let mut s = Server::start(&["http"]);
    assert_eq!(s.get("/").status, 200);
    s.signal(libc::SIGTERM);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGTERM");
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn sigint_exits_zero() {
    let mut s = Server::start(&["http"]);
    s.signal(libc::SIGINT);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGINT");
    assert!(st.success(), "exit status {st:?}");
}
