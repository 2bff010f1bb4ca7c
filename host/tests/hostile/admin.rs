//! Hostile clients against admin access on the public port: a password
//! guesser pipelining wrong `AUTH` lines, the per-address backoff it runs
//! into (and that other addresses do not), oversized `AUTH` lines, and a
//! proxy route pointing back at the server's own port.
//!
//! The guarded servers here set `admin_from` to a network no test peer is
//! in, so loopback clients must `AUTH` like remote ones would.

use std::time::{Duration, Instant};

use crate::common::{free_port, Server, ServerBuilder, IO_TIMEOUT};

const TOKEN: &str = "tok-c0ffee-42";

fn guarded(backoff_ms: u64, max_failures: u32) -> Server {
    ServerBuilder::new(&["http"])
        .tag("hostile-admin")
        .server("admin_from = [\"192.0.2.0/24\"]")
        .server(&format!("admin_token = \"{TOKEN}\""))
        .server(&format!("auth_backoff_ms = {backoff_ms}"))
        .server(&format!("max_auth_failures = {max_failures}"))
        .start()
}

/// The `<n>` of `ERR AUTH locked for <n> ms after failed attempts`.
fn locked_ms(line: &str) -> u64 {
    line.strip_prefix("ERR AUTH locked for ")
        .and_then(|r| r.strip_suffix(" ms after failed attempts"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a backoff refusal: {line:?}"))
}

#[test]
fn twenty_pipelined_wrong_auths_close_the_connection_and_are_logged() {
    let s = guarded(500, 5);
    let mut c = s.connect_from("127.0.0.5");
    let me = c.stream.local_addr().unwrap();
    let burst: String = (0..20).map(|i| format!("AUTH guess-{i}\n")).collect();
    c.send(burst.as_bytes());

    // The first guess is checked; the next ones arrive within the backoff
    // window and are refused unchecked; the fifth failure closes.
    assert_eq!(c.read_line(), "ERR bad token");
    for _ in 0..3 {
        let n = locked_ms(&c.read_line());
        assert!((1..=500).contains(&n), "{n}");
    }
    assert_eq!(c.read_line(), "ERR too many failed AUTH attempts");
    c.expect_closed(Duration::from_secs(5))
        .expect("the connection stayed open after max_auth_failures");

    // One warn line per failure, with the peer; one for the close.
    let failed = format!("AUTH from {me} failed");
    assert!(
        s.wait_log(IO_TIMEOUT, |l| l.matches(&failed).count() == 5
            && l.contains(&format!(
                "AUTH from {me}: 5 failed attempts, closing"
            ))),
        "{}",
        s.log()
    );
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&failed)).collect();
    assert!(lines.iter().all(|l| l.contains("WARN")), "{lines:#?}");
    assert!(!log.contains("guess-"), "a guessed token was logged");

    // The server is fine, and the right token works once the window is
    // over.
    assert_eq!(s.get("/").status, 200);
    std::thread::sleep(Duration::from_millis(550));
    let mut c = s.connect_from("127.0.0.5");
    c.send(format!("AUTH {TOKEN}\nSTATUS\n").as_bytes());
    assert_eq!(c.read_line(), "OK");
    assert_eq!(c.read_line(), "OK status");
}

#[test]
fn backoff_doubles_for_one_address_and_spares_the_others() {
    let s = guarded(400, 10);
    let mut guesser = s.connect_from("127.0.0.6");
    guesser.send(b"AUTH wrong\n");
    assert_eq!(guesser.read_line(), "ERR bad token");
    // Even the right token is refused unchecked while locked.
    guesser.send(format!("AUTH {TOKEN}\n").as_bytes());
    let first = locked_ms(&guesser.read_line());
    assert!((1..=400).contains(&first), "{first}");
    guesser.send(b"STATUS\n");
    assert_eq!(guesser.read_line(), "ERR forbidden");

    // Another address is not slowed down by it.
    let mut other = s.connect_from("127.0.0.7");
    other.send(format!("AUTH {TOKEN}\nSTATUS\n").as_bytes());
    assert_eq!(other.read_line(), "OK");
    assert_eq!(other.read_line(), "OK status");

    // A second failure in a row (after the first window) doubles it.
    std::thread::sleep(Duration::from_millis(450));
    let started = Instant::now();
    guesser.send(b"AUTH wrong-again\n");
    assert_eq!(guesser.read_line(), "ERR bad token");
    guesser.send(format!("AUTH {TOKEN}\n").as_bytes());
    let second = locked_ms(&guesser.read_line());
    let spent = started.elapsed().as_millis() as u64;
    assert!(
        second <= 800 && second + spent >= 800 - 5,
        "second window {second} ms, {spent} ms after it opened"
    );
    assert!(second > 400, "the window did not double: {second} ms left");

    // A success resets the count: the next failure is back to the base.
    std::thread::sleep(Duration::from_millis(second + 50));
    guesser.send(format!("AUTH {TOKEN}\nAUTH wrong\nAUTH {TOKEN}\n").as_bytes());
    assert_eq!(guesser.read_line(), "OK");
    assert_eq!(guesser.read_line(), "ERR bad token");
    let third = locked_ms(&guesser.read_line());
    assert!((1..=400).contains(&third), "{third}");
}

#[test]
fn oversized_auth_lines_are_refused_and_closed() {
    let s = guarded(500, 5);
    // Complete but too long: its newline arrives with it.
    let mut c = s.connect();
    let long = format!("AUTH {}\n", "x".repeat(5000));
    c.send(long.as_bytes());
    assert_eq!(c.read_line(), "ERR line too long");
    c.expect_closed(Duration::from_secs(5))
        .expect("still open after a too-long line");

    // No newline at all: refused once past the limit, not buffered.
    let mut c = s.connect();
    c.send(format!("AUTH {}", "y".repeat(2000)).as_bytes());
    assert_eq!(c.read_line(), "ERR line too long");
    c.expect_closed(Duration::from_secs(5))
        .expect("still open after a too-long line");

    assert!(
        s.wait_log(IO_TIMEOUT, |l| l
            .matches("command line over 1024 bytes")
            .count()
            == 2),
        "{}",
        s.log()
    );
    assert!(!s.log().contains("xxxxxxxx"), "the line was logged");
    // Not counted as a guess: the right token works at once.
    let mut c = s.connect();
    c.send(format!("AUTH {TOKEN}\n").as_bytes());
    assert_eq!(c.read_line(), "OK");
}

#[test]
fn a_proxy_route_back_at_our_own_port_is_not_an_admin() {
    // fx_proxy relays to this server's own port. The connection the
    // server accepts from its own upstream socket comes from 127.0.0.1,
    // inside the default admin_from, but carries the proxy client's bytes.
    let port = free_port();
    let s = ServerBuilder::new(&["http", "fx_proxy"])
        .tag("hostile-admin-loop")
        .cli(&[
            "-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "-threads",
            "2",
        ])
        .toml(&format!(
            "[modules.fx_proxy]\nupstreams = [\"127.0.0.1:{port}\"]\n"
        ))
        .start();
    let mut c = s.connect();
    c.send(b"PROXY-ME KEEP\n");
    assert_eq!(c.read_line(), "KEPT");
    // Relayed to our own port as the first bytes of a new connection.
    c.send(b"STATUS\n");
    assert_eq!(c.read_line(), "ERR forbidden");
    c.send(b"SHUTDOWN\n");
    assert_eq!(c.read_line(), "ERR forbidden");
    c.send(b"CLOSE\n");
    assert_eq!(c.read_line(), "OK bye");
    assert!(
        s.wait_log(IO_TIMEOUT, |l| l
            .matches("an upstream socket of this server")
            .count()
            == 1),
        "{}",
        s.log()
    );
    // A direct loopback client is still an admin, and the server runs.
    assert!(s.admin("STATUS").starts_with("OK status"));
}
