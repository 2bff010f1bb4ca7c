//! Built-in commands on the shared port: STATUS, RELOAD, RELOAD <name>,
//! CLOSE, SHUTDOWN, AUTH, unknown commands; and SIGHUP / SIGTERM / SIGINT.
//! Admin access: `admin_from` against real peer addresses (clients bound
//! to other loopback addresses such as 127.0.0.2), token rotation on
//! `RELOAD`, `public_shutdown`, a bad `admin_from` at start.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{parse_reload, Client, Server, ServerBuilder, Status, INDEX_HTML, IO_TIMEOUT};

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
    // No backoff here: the second AUTH comes right after a failed one from
    // the same address (the backoff has its own tests in hostile/admin.rs).
    let s = ServerBuilder::new(&["http"])
        .server("admin_token = \"s3cret\"")
        .server("auth_backoff_ms = 0")
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

// ---- Admin access ----

/// Sends one command and reads its reply (whole `STATUS`/`RELOAD` replies).
fn command(c: &mut Client, cmd: &str) -> String {
    c.send(format!("{cmd}\n").as_bytes());
    c.read_admin_reply(cmd)
}

/// Replaces `from` by `to` in the server's config file.
fn edit_config(s: &Server, from: &str, to: &str) {
    let path = s.dir.join("switchyard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn empty_admin_from_turns_admin_off_but_close_works() {
    let s = ServerBuilder::new(&["http"])
        .server("admin_from = []")
        .server("admin_token = \"tok-9b1e\"")
        .start();
    let mut c = s.connect();
    c.send(b"STATUS\nRELOAD\nRELOAD http\nAUTH tok-9b1e\nAUTH x\nSTATUS\nSHUTDOWN\nCLOSE\n");
    for cmd in [
        "STATUS",
        "RELOAD",
        "RELOAD http",
        "AUTH right",
        "AUTH x",
        "STATUS",
        "SHUTDOWN",
    ] {
        assert_eq!(c.read_line(), "ERR forbidden", "{cmd}");
    }
    assert_eq!(c.read_line(), "OK bye");
    c.expect_closed(Duration::from_secs(5))
        .expect("CLOSE did not close");
    // Nothing was run: still serving.
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn admin_from_is_matched_against_the_real_peer_address() {
    let s = ServerBuilder::new(&["http"])
        .server("admin_from = [\"127.0.0.2/32\", \"127.0.1.0/24\"]")
        .start();
    for src in ["127.0.0.2", "127.0.1.77"] {
        let mut c = s.connect_from(src);
        let st = Status::parse(&command(&mut c, "STATUS"));
        assert_eq!(st.expect("http").gen, 1, "from {src}");
    }
    for src in ["127.0.0.1", "127.0.0.3", "127.0.2.1"] {
        let mut c = s.connect_from(src);
        assert_eq!(command(&mut c, "STATUS"), "ERR forbidden\n", "from {src}");
        assert_eq!(
            command(&mut c, "RELOAD http"),
            "ERR forbidden\n",
            "from {src}"
        );
        // No token configured: AUTH says so.
        assert_eq!(
            command(&mut c, "AUTH x"),
            "ERR no admin token is configured\n"
        );
    }
}

#[test]
fn ipv4_mapped_peer_matches_as_ipv4() {
    // Dual-stack listener: an IPv4 client shows up as ::ffff:127.0.0.1,
    // and `127.0.0.0/8` alone (no ::1) must still cover it.
    let s = ServerBuilder::new(&["http"])
        .cli(&["-port", "0", "--bind", "::", "-threads", "2"])
        .server("admin_from = [\"127.0.0.0/8\"]")
        .start();
    let v4 = SocketAddr::from(([127, 0, 0, 1], s.addr.port()));
    let mut c = Client::connect(v4);
    assert!(command(&mut c, "STATUS").starts_with("OK status"));
    // ::1 is not in the list.
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.addr.port()));
    let mut c = Client::connect(v6);
    assert_eq!(command(&mut c, "STATUS"), "ERR forbidden\n");
}

#[test]
fn admin_from_excluding_loopback_needs_auth() {
    let s = ServerBuilder::new(&["http"])
        .server("admin_from = [\"192.0.2.0/24\"]")
        .server("admin_token = \"tok-5e7a\"")
        .start();
    let mut c = s.connect();
    assert_eq!(command(&mut c, "STATUS"), "ERR forbidden\n");
    assert_eq!(command(&mut c, "UPGRADE"), "ERR forbidden\n");
    assert_eq!(command(&mut c, "AUTH tok-5e7a"), "OK\n");
    let st = Status::parse(&command(&mut c, "STATUS"));
    assert_eq!(st.expect("http").gen, 1, "{}", st.raw);
    assert!(command(&mut c, "RELOAD http").starts_with("OK http gen=2"));
    // Another connection from the same address has no rights of its own.
    assert_eq!(s.admin("STATUS"), "ERR forbidden\n");
}

#[test]
fn narrowing_admin_from_on_reload_applies_to_open_connections() {
    let s = ServerBuilder::new(&["http"]).start();
    let mut open = s.connect();
    let st = Status::parse(&command(&mut open, "STATUS"));
    assert_eq!(st.expect("http").gen, 1);
    let mut other = s.connect_from("127.0.0.2");
    assert!(command(&mut other, "STATUS").starts_with("OK status"));

    // Only 127.0.0.2 from now on: decided per command, not at accept.
    edit_config(&s, "[server]\n", "[server]\nadmin_from = [\"127.0.0.2\"]\n");
    let reply = command(&mut other, "RELOAD");
    assert!(reply.contains("OK reload:"), "{reply}");
    assert_eq!(command(&mut open, "STATUS"), "ERR forbidden\n");
    assert!(command(&mut other, "STATUS").starts_with("OK status"));
    assert!(
        s.wait_log(IO_TIMEOUT, |l| l
            .contains("admin_from is now [127.0.0.2/32]")),
        "{}",
        s.log()
    );
}

#[test]
fn rotated_token_revokes_the_old_one_on_reload() {
    const OLD: &str = "tok-OLD-4711";
    const NEW: &str = "tok-NEW-0815";
    let s = ServerBuilder::new(&["http"])
        .server("admin_from = [\"192.0.2.0/24\"]")
        .server(&format!("admin_token = \"{OLD}\""))
        .start();
    let mut authed = s.connect();
    assert_eq!(command(&mut authed, &format!("AUTH {OLD}")), "OK\n");
    assert!(command(&mut authed, "STATUS").starts_with("OK status"));

    edit_config(&s, OLD, NEW);
    let reply = command(&mut authed, "RELOAD");
    assert!(reply.contains("OK reload:"), "{reply}");

    // The connection that authenticated with the old token lost its rights.
    assert_eq!(command(&mut authed, "STATUS"), "ERR forbidden\n");
    // The new token works (before any failure, so no backoff is in play).
    let mut fresh = s.connect();
    assert_eq!(command(&mut fresh, &format!("AUTH {NEW}")), "OK\n");
    assert!(command(&mut fresh, "STATUS").starts_with("OK status"));
    // The old one is refused.
    let mut stale = s.connect();
    assert_eq!(
        command(&mut stale, &format!("AUTH {OLD}")),
        "ERR bad token\n"
    );
    assert_eq!(command(&mut stale, "STATUS"), "ERR forbidden\n");

    assert!(
        s.wait_log(IO_TIMEOUT, |l| l.contains("admin_token changed")),
        "{}",
        s.log()
    );
    let log = s.log();
    assert!(
        !log.contains(OLD) && !log.contains(NEW),
        "token in the log:\n{log}"
    );

    // Removing the token: the new-token connection loses its rights too,
    // and AUTH says there is none.
    edit_config(&s, &format!("admin_token = \"{NEW}\"\n"), "");
    assert!(command(&mut fresh, "RELOAD").contains("OK reload:"));
    assert_eq!(command(&mut fresh, "STATUS"), "ERR forbidden\n");
    assert_eq!(
        command(&mut fresh, &format!("AUTH {NEW}")),
        "ERR no admin token is configured\n"
    );
    assert!(
        s.wait_log(IO_TIMEOUT, |l| l.contains("admin_token removed")),
        "{}",
        s.log()
    );
}

#[test]
fn public_shutdown_false_keeps_the_server_running() {
    let mut s = ServerBuilder::new(&["http"])
        .server("public_shutdown = false")
        .start();
    assert_eq!(
        s.admin("SHUTDOWN"),
        "ERR SHUTDOWN is disabled on this port; use the admin socket or SIGTERM\n"
    );
    assert!(
        s.wait_exit(Duration::from_millis(500)).is_none(),
        "exited after a refused SHUTDOWN"
    );
    assert_eq!(s.get("/").status, 200);
    // Other admin commands still work, and SIGTERM still stops it.
    assert_eq!(s.status().expect("http").gen, 1);
    s.signal(libc::SIGTERM);
    let st = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after SIGTERM");
    assert!(st.success(), "exit status {st:?}");
}

#[test]
fn bad_admin_from_refuses_to_start() {
    let dir = common::temp_dir("bad-admin-from");
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        "[server]\nadmin_from = [\"127.0.0.0/8\", \"10.0.0.0/33\"]\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["-port", "0", "--bind", "127.0.0.1", "--config"])
        .arg(&config)
        .arg("--modules")
        .arg(dir.join("modules"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchyard started with a bad admin_from");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("server.admin_from") && err.contains("\"10.0.0.0/33\""),
        "{err}"
    );
}
