//! Hostile clients: HTTP framing (items 1, 5, 7 and 13 of the hardening
//! work) against the real binary. Every HTTP reader (the static `http`
//! module, the `webapp`'s web layer, `POST /rpc`) frames requests with the
//! SDK's one strict function, so each smuggling lever is tried on each of
//! them: `Content-Length: +3`, NBSP padding, an empty chunk-size line,
//! `Transfer-Encoding: gzip, chunked`, tabs in the request line. Then the
//! form path's UTF-8 check, absolute-form targets, chunked bodies that
//! trickle in, and 10,000 pipelined GETs that are never read.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{rss_kib, Client, Response, Server, ServerBuilder};

/// The static site, the web app and the rpc module on one server.
fn start(tag: &str, extra: &str) -> Server {
    ServerBuilder::new(&["http", "webapp", "rpc"])
        .tag(tag)
        .threads(4)
        .file("small.txt", "x".repeat(8 * 1024))
        .toml(extra)
        .start()
}

/// One request per reader: the static module, the web app and POST /rpc,
/// each with the given extra header lines and raw body.
fn each_reader(headers: &str, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    [
        ("http", "POST /upload HTTP/1.1\r\nHost: t\r\n"),
        (
            "webapp",
            "POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n",
        ),
        (
            "rpc",
            "POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n",
        ),
    ]
    .into_iter()
    .map(|(who, start)| {
        let mut req = format!("{start}{headers}\r\n").into_bytes();
        req.extend_from_slice(body);
        (who, req)
    })
    .collect()
}

/// Sends `raw` on a new connection and expects `status`, then the close.
fn refused(s: &Server, who: &str, raw: &[u8], status: u16) -> Response {
    let mut c = s.connect();
    c.send(raw);
    let r = c.try_read_response(false).unwrap_or_else(|e| {
        panic!(
            "{who}: no answer to {:?}: {e}",
            String::from_utf8_lossy(raw)
        )
    });
    assert_eq!(
        r.status,
        status,
        "{who}: {:?} -> {} {}",
        String::from_utf8_lossy(raw),
        r.status_line,
        r.text()
    );
    c.expect_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{who}: after {status}: {e}"));
    r
}

/// A message over the host's `max_message_size` (here smaller than what
/// the module itself would take) is answered in its module's protocol
/// before the close: 413 for HTTP, -32040 for a JSON-RPC line.
#[test]
fn message_over_max_message_size_is_answered_then_closed() {
    let s = ServerBuilder::new(&["rpc"])
        .tag("too-large")
        .server("max_message_size = 65536")
        .start();
    let body = format!(
        r#"{{"jsonrpc":"2.0","method":"kv.set","params":{{"key":"k","value":"{}"}},"id":1}}"#,
        "v".repeat(100_000)
    );
    let raw = format!(
        "POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = s.connect();
    c.send_lenient(raw.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("max_message_size"), "{}", r.text());
    c.expect_closed(Duration::from_secs(5)).unwrap();

    let mut c = s.connect();
    c.send_lenient(body.as_bytes());
    let line = c.read_line();
    assert!(line.contains("-32040"), "{line}");
    c.expect_closed(Duration::from_secs(5)).unwrap();
    assert!(s.log().contains("message exceeds 65536 bytes"));
}

#[test]
fn content_length_with_a_sign_is_400() {
    let s = start("http-plus", "");
    for (who, req) in each_reader("Content-Length: +3\r\n", b"{}x") {
        refused(&s, who, &req, 400);
    }
    for (who, req) in each_reader("Content-Length: -1\r\n", b"") {
        refused(&s, who, &req, 400);
    }
}

#[test]
fn content_length_padded_with_nbsp_is_400() {
    let s = start("http-nbsp", "");
    for pad in ["Content-Length: \u{a0}2\r\n", "Content-Length: 2\u{a0}\r\n"] {
        for (who, req) in each_reader(pad, b"{}") {
            refused(&s, who, &req, 400);
        }
    }
    // NBSP as a Latin-1 byte.
    let mut raw = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \xa02\r\n\r\n{}".to_vec();
    refused(&s, "http", &raw, 400);
    raw = b"POST /rpc HTTP/1.1\r\nContent-Length: 2\xa0\r\n\r\n{}".to_vec();
    refused(&s, "rpc", &raw, 400);
}

#[test]
fn empty_chunk_size_line_is_400_not_the_last_chunk() {
    let s = start("http-empty-chunk", "");
    // Taken as the last chunk, the "GET /" after it would be a second,
    // smuggled request.
    let body = b"\r\n\r\nGET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    for (who, req) in each_reader("Transfer-Encoding: chunked\r\n", body) {
        refused(&s, who, &req, 400);
    }
}

#[test]
fn transfer_codings_other_than_chunked_are_501() {
    let s = start("http-gzip", "");
    for te in ["gzip, chunked", "chunked, gzip", "deflate"] {
        let headers = format!("Transfer-Encoding: {te}\r\n");
        for (who, req) in each_reader(&headers, b"0\r\n\r\n") {
            refused(&s, who, &req, 501);
        }
    }
    // Content-Length beside Transfer-Encoding: 400 everywhere.
    let both = "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n";
    for (who, req) in each_reader(both, b"0\r\n\r\n") {
        refused(&s, who, &req, 400);
    }
}

#[test]
fn tab_in_the_request_line_after_the_target_is_400() {
    let s = start("http-tab-target", "");
    refused(
        &s,
        "http",
        b"GET /small.txt\tHTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    );
    refused(&s, "webapp", b"GET /app/\tHTTP/1.1\r\nHost: t\r\n\r\n", 400);
    refused(
        &s,
        "http",
        b"GET  /small.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    );
    // Whitespace before a header's colon, and obs-fold.
    refused(&s, "http", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400);
    refused(
        &s,
        "webapp",
        b"GET /app/ HTTP/1.1\r\nHost: t\r\n x\r\n\r\n",
        400,
    );
}

/// Needs the host's router to hand a request line that matches no binding
/// but looks like HTTP (`GET\t/`) to an HTTP module, or to answer 400
/// itself; today such a connection is closed with no answer.
#[test]
fn tab_after_the_method_is_400() {
    let s = start("http-tab-method", "");
    refused(
        &s,
        "router",
        b"GET\t/small.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
    );
}

#[test]
fn form_with_invalid_utf8_is_400_and_stores_nothing() {
    let s = start("http-form-utf8", "");
    for body in ["author=a&text=caf%E9", "author=%FF&text=hello"] {
        let raw = format!(
            "POST /app/messages HTTP/1.1\r\nHost: t\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let r = s.request(raw);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains("UTF-8"), "{}", r.text());
    }
    // The same text, valid, is stored (so the refusal is about the bytes).
    let body = "author=a&text=caf%C3%A9";
    let raw = format!(
        "POST /app/messages HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(s.request(raw).status, 303);
    let list = s.get("/app/api/messages").text();
    assert!(list.contains("café"), "{list}");
    assert!(!list.contains('\u{fffd}'), "{list}");
    assert_eq!(list.matches("\"id\":").count(), 1, "{list}");
}

/// Needs the host's router to route an absolute-form request by its path
/// (today it matches `GET ` and lands in the static module: 404).
#[test]
fn absolute_form_get_reaches_the_webapp() {
    let s = start("http-absolute", "");
    let r =
        s.request("GET http://t/app/api/messages HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{} {}", r.status_line, r.text());
    assert!(r.text().contains("\"messages\""), "{}", r.text());
}

#[test]
fn absolute_form_get_is_served_by_its_path() {
    let s = start("http-absolute-static", "");
    let r = s.request("GET http://t/small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.status_line);
    assert_eq!(r.body.len(), 8 * 1024);
}

/// Sends `raw` one byte per write (TCP_NODELAY), pausing now and then so
/// the server sees many small arrivals.
fn trickle(c: &mut Client, raw: &[u8]) {
    for (i, b) in raw.iter().enumerate() {
        c.stream.write_all(std::slice::from_ref(b)).unwrap();
        if i % 16 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn chunked_post_arriving_one_byte_at_a_time_is_answered() {
    let s = start("http-trickle", "");
    // The web app.
    let json = br#"{"author":"slow","text":"one byte at a time"}"#;
    let mut raw = b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in json.chunks(7) {
        raw.extend_from_slice(format!("{:x};n=1\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    let mut c = s.connect();
    trickle(&mut c, &raw);
    let r = c.read_response(false);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("one byte at a time"), "{}", r.text());
    // The connection goes on.
    c.send(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).body.len(), 8 * 1024);

    // POST /rpc, which used to answer chunked bodies with 411.
    let call = br#"{"jsonrpc":"2.0","method":"kv.set","params":{"key":"k","value":"v"},"id":1}"#;
    let mut raw = b"POST /rpc HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in call.chunks(5) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut c = s.connect();
    trickle(&mut c, &raw);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"result\""), "{}", r.text());
    // The static module consumes (and refuses) a trickled chunked body too.
    let mut c = s.connect();
    trickle(
        &mut c,
        b"PUT /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.read_response(false).status, 405);
    assert_eq!(c.read_response(false).status, 200);
}

/// A large chunked body sent as thousands of tiny chunks, each its own
/// write: answered, and quickly (each arrival resumes the framing where
/// the last one stopped; rescanning every chunk on every arrival was
/// quadratic).
#[test]
fn large_chunked_body_in_many_small_pieces_is_answered() {
    let s = start(
        "http-many-chunks",
        "[modules.webapp]\nmax_body = 900000\nmax_text = 400000",
    );
    let text = "t".repeat(300_000);
    let json = format!(r#"{{"author":"bulk","text":"{text}"}}"#);
    let mut c = s.connect();
    c.send(b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    let started = Instant::now();
    // 1-byte chunks (6 bytes each on the wire) for the first 20,000 bytes,
    // then 64-byte ones: about 24,000 chunks.
    let (small, rest) = json.as_bytes().split_at(20_000);
    let mut batch = Vec::new();
    for (i, b) in small.iter().enumerate() {
        batch.extend_from_slice(b"1\r\n");
        batch.push(*b);
        batch.extend_from_slice(b"\r\n");
        if i % 8 == 7 {
            c.send(&batch);
            batch.clear();
        }
    }
    for piece in rest.chunks(64) {
        batch.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        batch.extend_from_slice(piece);
        batch.extend_from_slice(b"\r\n");
        c.send(&batch);
        batch.clear();
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response(false);
    let took = started.elapsed();
    assert_eq!(r.status, 201, "{}", &r.text()[..r.text().len().min(300)]);
    assert!(r.text().contains(&text[..1000]));
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // POST /rpc: a 400 KB value in 100-byte chunks.
    let value = "v".repeat(400_000);
    let call = format!(
        r#"{{"jsonrpc":"2.0","method":"kv.set","params":{{"key":"big","value":"{value}"}},"id":2}}"#
    );
    let mut c = s.connect();
    c.send(b"POST /rpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for piece in call.as_bytes().chunks(100) {
        let mut w = format!("{:x}\r\n", piece.len()).into_bytes();
        w.extend_from_slice(piece);
        w.extend_from_slice(b"\r\n");
        c.send(&w);
    }
    c.send(b"0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"result\""), "{}", r.text());
    let get = r#"{"jsonrpc":"2.0","method":"kv.get","params":["big"],"id":3}"#;
    let r = s.request(format!(
        "POST /rpc HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{get}",
        get.len()
    ));
    assert!(r.text().contains(&value), "kv.get after the chunked set");
}

/// The worker's resident set, in KiB.
/// 10,000 pipelined GETs of an 8 KiB file (80 MB of answers), sent at
/// once and not read for a while: the server answers as the client reads,
/// holding about one output budget, not every answer. The SDK stops each
/// call at the budget; the host enforces it between calls.
#[test]
fn ten_thousand_pipelined_gets_unread_stay_in_bounded_memory() {
    const N: usize = 10_000;
    let s = start("http-pipeline", "");
    // Warm the cache and the worker.
    assert_eq!(s.get("/small.txt").body.len(), 8 * 1024);
    let before = rss_kib(s.worker_pid());
    let mut c = s.connect();
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let one = b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n";
        let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * N).collect();
        writer.write_all(&all).unwrap();
    });
    thread::sleep(Duration::from_secs(2));
    let during = rss_kib(s.worker_pid());
    let mut answered = 0;
    while answered < N {
        let r = c.read_response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 8 * 1024);
        answered += 1;
    }
    sender.join().unwrap();
    let grew = during.saturating_sub(before);
    eprintln!("worker RSS before {before} KiB, with {N} unread answers pending {during} KiB");
    assert!(
        grew < 48 * 1024,
        "the worker grew by {grew} KiB holding answers nobody reads"
    );
    // Another client is served meanwhile and afterwards.
    assert_eq!(s.get("/small.txt").status, 200);
}
