//! The router: longest-prefix match, per-message routing on keep-alive and
//! pipelined connections (across HTTP and non-HTTP modules), unmatched
//! bytes, the first-bytes timeout, and the worker pool (deferred requests
//! must not block the event loop).

use crate::common;

use std::time::Duration;

use common::{Client, Server, ServerBuilder, INDEX_HTML};

#[test]
fn longest_prefix_wins() {
    let s = ServerBuilder::new(&["http", "fx_app"])
        .file("x", "static x\n")
        .start();
    let r = s.get("/app/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "app:/app/x");
    let r = s.get("/app/deeper/path?q=1");
    assert_eq!(r.text(), "app:/app/deeper/path");

    let r = s.get("/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "static x\n");
    // "GET /app" is a proper prefix of "GET /app/" but the next byte
    // differs: it belongs to the http module (no such file).
    let r = s.get("/app");
    assert_eq!(r.status, 404);
    assert_eq!(s.get("/").text(), INDEX_HTML);
}

#[test]
fn pipelined_requests_to_two_modules_on_one_connection() {
    let s = Server::start(&["http", "fx_app"]);
    let mut c = s.connect();
    // One write, three requests, two modules.
    c.send(
        b"GET /app/a HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /app/b HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "app:/app/a"));
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), INDEX_HTML);
    let r = c.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "app:/app/b"));

    // The connection is still usable afterwards (keep-alive).
    c.send(b"GET /app/c HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(false).text(), "app:/app/c");
    assert_eq!(c.read_response(false).text(), INDEX_HTML);
}

#[test]
fn keep_alive_requests_across_modules_one_at_a_time() {
    let s = Server::start(&["http", "fx_app"]);
    let mut c = s.connect();
    for i in 0..5 {
        c.send(format!("GET /app/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(c.read_response(false).text(), format!("app:/app/{i}"));
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response(false).text(), INDEX_HTML);
    }
}

#[test]
fn raw_line_module_then_http_on_one_connection() {
    let s = Server::start(&["http", "fx_line"]);
    let mut c = s.connect();
    c.send(b"PING\nGET /index.html HTTP/1.1\r\nHost: x\r\n\r\nPING again\n");
    assert_eq!(c.read_line(), "PONG");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), INDEX_HTML);
    assert_eq!(c.read_line(), "PONG");
}

#[test]
fn unmatched_bytes_close_the_connection() {
    let s = Server::start(&["http", "fx_line"]);
    let mut c = s.connect();
    c.send(b"XYZZY\n");
    c.expect_closed(Duration::from_secs(5))
        .expect("connection with unmatched first bytes not closed");
    // After a good message, unmatched bytes also close.
    let mut c = s.connect();
    c.send(b"PING\nXYZZY\n");
    assert_eq!(c.read_line(), "PONG");
    c.expect_closed(Duration::from_secs(5))
        .expect("connection with unmatched bytes after PING not closed");
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn stalled_proper_prefix_hits_first_bytes_timeout() {
    let s = ServerBuilder::new(&["http"])
        .server("first_bytes_timeout_ms = 500")
        .start();
    let mut c = s.connect();
    c.send(b"GE");
    c.expect_closed(Duration::from_secs(8))
        .expect("stalled connection not closed by the first-bytes timeout");
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn deferred_request_is_answered_from_the_pool() {
    let s = Server::start(&["http", "fx_defer"]);
    let r = s.get("/slow/one");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "deferred:/slow/one");
    // Keep-alive: after a deferred answer the connection is routed afresh.
    let mut c = s.connect();
    c.send(
        b"GET /slow/a HTTP/1.1\r\nHost: x\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /slow/b HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(c.read_response(false).text(), "deferred:/slow/a");
    assert_eq!(c.read_response(false).text(), INDEX_HTML);
    assert_eq!(c.read_response(false).text(), "deferred:/slow/b");
}

/// While deferred requests wait for the pool, the event loop keeps
/// answering other connections. An ordering check, not a timing one: with a
/// single event loop and 2 pool threads, 8 requests that each sleep 50 ms
/// cannot all be finished when the static request sent after them is
/// answered, unless the event loop ran them itself.
#[test]
fn deferred_work_does_not_block_the_event_loop() {
    let s = ServerBuilder::new(&["http", "fx_defer"])
        .server("event_loops = 1")
        .threads(2)
        .start();
    let mut slow: Vec<Client> = (0..8)
        .map(|i| {
            let mut c = s.connect();
            c.send(format!("GET /slow/{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            c
        })
        .collect();
    let r = s.get("/index.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), INDEX_HTML);
    let pending = slow.iter().filter(|c| !c.has_data()).count();
    assert!(
        pending > 0,
        "all 8 deferred requests were answered before a static request sent \
         after them: the event loop seems to run deferred work itself"
    );
    for (i, c) in slow.iter_mut().enumerate() {
        let r = c.read_response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("deferred:/slow/{i}"));
    }
}

#[test]
fn concurrent_deferred_requests_all_answer_correctly() {
    let s = ServerBuilder::new(&["http", "fx_defer"]).threads(4).start();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(format!("GET /slow/c{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
                let r = c.read_response(false);
                (r.status, r.text())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (status, body) = h.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, format!("deferred:/slow/c{i}"));
    }
}

#[test]
fn messages_split_across_segments_are_completed() {
    // A module that says "need more" must be asked again only when more
    // bytes arrived: here the request line, the headers and a pipelined
    // second request each arrive in pieces.
    let s = Server::start(&["http", "fx_app"]);
    let mut c = s.connect();
    for piece in [
        &b"GET /index.ht"[..],
        b"ml HTTP/1.1\r\nHo",
        b"st: x\r\n",
        b"\r\nGET /app/sp",
        b"lit HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(40));
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), INDEX_HTML);
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "app:/app/split");
    let st = s.status();
    assert_eq!(st.expect("http").field("requests"), Some("1"));
}
