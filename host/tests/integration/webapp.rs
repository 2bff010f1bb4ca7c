//! The `webapp` module (a message board on SQLite) against the real
//! binary: the JSON API, the HTML form, validation, body framing and
//! limits, escaping, and messages surviving reloads (also under concurrent
//! posts) and restarts.

use crate::common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{parse_reload, temp_dir, Client, Response, Server, ServerBuilder};

/// A server with the static site and the web app; `extra` goes into
/// `[modules.webapp]`.
fn start(extra: &str) -> Server {
    ServerBuilder::new(&["http", "webapp"])
        .tag("webapp")
        .threads(4)
        .toml(&format!("[modules.webapp]\n{extra}"))
        .start()
}

fn post_json(s: &Server, body: &str) -> Response {
    s.request(json_request("POST", "/app/api/messages", body, true))
}

fn json_request(method: &str, path: &str, body: &str, close: bool) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn post_form(s: &Server, body: &str, cookie: Option<&str>) -> Response {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    s.request(format!(
        "POST /app/messages HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n{cookie}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

fn request(s: &Server, method: &str, path: &str) -> Response {
    s.request(format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    ))
}

/// The `"id":N` values in a JSON text, in order.
fn ids(json: &str) -> Vec<i64> {
    json.match_indices("\"id\":")
        .map(|(i, m)| {
            let rest = &json[i + m.len()..];
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
            rest[..end].parse().unwrap()
        })
        .collect()
}

fn assert_error(r: &Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let t = r.text();
    assert!(t.starts_with("{\"error\":"), "{t}");
    assert!(t.contains(needle), "expected {needle:?} in {t}");
}

#[test]
fn json_api_create_list_page_fetch_delete() {
    let s = start("");
    let mut created = Vec::new();
    for i in 1..=5 {
        let r = post_json(&s, &format!(r#"{{"author":"ann","text":"message {i}"}}"#));
        assert_eq!(r.status, 201, "{}", r.text());
        let id = ids(&r.text())[0];
        assert_eq!(
            r.header("location"),
            Some(format!("/app/api/messages/{id}").as_str())
        );
        assert!(r.text().contains(&format!(r#""text":"message {i}""#)));
        assert!(r.text().contains(r#""created_at":""#));
        created.push(id);
    }

    // Newest first.
    let r = request(&s, "GET", "/app/api/messages");
    assert_eq!(r.status, 200);
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(ids(&r.text()), newest_first);
    assert!(
        r.text().ends_with("\"next_before\":null}\n"),
        "{}",
        r.text()
    );

    // Paging: two at a time until next_before is null.
    let mut seen: Vec<i64> = Vec::new();
    let mut path = "/app/api/messages?limit=2".to_string();
    loop {
        let r = request(&s, "GET", &path);
        assert_eq!(r.status, 200, "{}", r.text());
        let page = ids(&r.text());
        assert!(page.len() <= 2);
        seen.extend(&page);
        let t = r.text();
        let next = t.rsplit("\"next_before\":").next().unwrap();
        if next.starts_with("null") {
            break;
        }
        let before: i64 = next
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap();
        assert_eq!(before, *page.last().unwrap());
        path = format!("/app/api/messages?limit=2&before={before}");
    }
    assert_eq!(seen, newest_first);

    // One message, then delete it.
    let id = created[2];
    let r = request(&s, "GET", &format!("/app/api/messages/{id}"));
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r.text()), [id]);
    assert!(r.text().contains(r#""text":"message 3""#));
    let r = request(&s, "DELETE", &format!("/app/api/messages/{id}"));
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_error(
        &request(&s, "GET", &format!("/app/api/messages/{id}")),
        404,
        &format!("no message with id {id}"),
    );
    assert_error(
        &request(&s, "DELETE", &format!("/app/api/messages/{id}")),
        404,
        "no message",
    );
    assert_error(
        &request(&s, "GET", "/app/api/messages/999999"),
        404,
        "no message",
    );
    assert_eq!(
        ids(&request(&s, "GET", "/app/api/messages").text()).len(),
        4
    );

    // STATUS counts the module's requests and adds its own fields.
    let st = s.status();
    st.assert_exact_format();
    let w = st.expect("webapp");
    assert!(w.requests >= 15, "{}", w.line);
    assert_eq!(w.num("posted"), 5, "{}", w.line);
    assert_eq!(w.num("deleted"), 1, "{}", w.line);
    assert_eq!(w.field("mode"), Some("overlap"), "{}", w.line);
}

#[test]
fn bad_input_is_400_with_a_reason() {
    let s = start("max_text = 20");
    let cases: &[(&str, &str)] = &[
        (r#"{"text":"hi"}"#, "missing field: author"),
        (r#"{"author":"a"}"#, "missing field: text"),
        (r#"{"author":"a","text":""}"#, "text must not be empty"),
        (r#"{"author":"a","text":"   "}"#, "text must not be empty"),
        (r#"{"author":"","text":"x"}"#, "author must not be empty"),
        (
            r#"{"author":"a","text":"123456789012345678901"}"#,
            "text is longer than 20 characters",
        ),
        (r#"{"author":7,"text":"x"}"#, "author must be a string"),
        (r#"{"author":"a","text":"x""#, "body is not valid JSON"),
        ("not json", "body is not valid JSON"),
        ("", "empty body"),
        (r#"["a","b"]"#, "expected a JSON object"),
    ];
    for (body, needle) in cases {
        assert_error(&post_json(&s, body), 400, needle);
    }
    // The field is named.
    assert!(post_json(&s, r#"{"author":"a"}"#)
        .text()
        .contains(r#""field":"text""#));
    // Not JSON at all.
    let r = s.request(
        "POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_error(&r, 415, "expected a JSON body");
    // Bad ids and query parameters.
    assert_error(
        &request(&s, "GET", "/app/api/messages/abc"),
        400,
        "id must be",
    );
    assert_error(
        &request(&s, "GET", "/app/api/messages/0"),
        400,
        "id must be",
    );
    assert_error(
        &request(&s, "GET", "/app/api/messages?limit=x"),
        400,
        "limit",
    );
    assert_error(
        &request(&s, "GET", "/app/api/messages?limit=0"),
        400,
        "limit",
    );
    assert_error(
        &request(&s, "GET", "/app/api/messages?before=-3"),
        400,
        "before",
    );
    // Nothing was stored.
    assert_eq!(
        request(&s, "GET", "/app/api/messages").text(),
        "{\"messages\":[],\"next_before\":null}\n"
    );
}

#[test]
fn html_form_post_redirect_and_escaping() {
    let s = start("");
    // The page works empty.
    let r = request(&s, "GET", "/app/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text().contains("<title>Switchyard message board</title>"));
    assert!(r
        .text()
        .contains("<form class=\"post\" method=\"post\" action=\"/app/messages\">"));
    assert!(r.text().contains("0 messages"));

    // Post with a plain form: 303 back to the board, name remembered.
    let r = post_form(&s, "author=Zo%C3%AB+%22Z%22&text=hello+from+a+form", None);
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/app/"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.starts_with("author=Zo%C3%AB%20%22Z%22; Path=/app;"),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // A script as text, posted through the API.
    let r = post_json(
        &s,
        r#"{"author":"<b>mallory</b>","text":"<script>alert(1)</script>"}"#,
    );
    assert_eq!(r.status, 201);

    let cookie_pair = cookie.split(';').next().unwrap();
    let r = s.get_with("/app/", &[&format!("Cookie: {cookie_pair}")]);
    assert_eq!(r.status, 200);
    let page = r.text();
    assert!(page.contains("2 messages"), "{page}");
    assert!(page.contains("hello from a form"));
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;mallory&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains("<b>mallory"), "{page}");
    // The remembered name is filled in, escaped inside the attribute.
    assert!(page.contains("value=\"Zoë &quot;Z&quot;\""), "{page}");
    // Newest first.
    assert!(page.find("alert(1)").unwrap() < page.find("hello from a form").unwrap());

    // Invalid form: the page again, 400, with the error and the input kept.
    let r = post_form(&s, "author=ann&text=+++", None);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("text must not be empty"), "{}", r.text());
    assert!(r.text().contains("value=\"ann\""));
    let r = post_form(&s, "text=%3Ci%3Ex", None);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("missing field: author"));
    assert!(r.text().contains(">&lt;i&gt;x</textarea>"), "{}", r.text());

    // Delete from the page.
    let id = ids(&request(&s, "GET", "/app/api/messages").text())[0];
    let r = s.request(format!(
        "POST /app/messages/{id}/delete HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 303);
    assert!(!request(&s, "GET", "/app/").text().contains("alert(1)"));
}

#[test]
fn html_page_pages_through_older_messages() {
    let s = start("page_size = 3");
    for i in 1..=7 {
        assert_eq!(
            post_json(&s, &format!(r#"{{"author":"a","text":"m{i}"}}"#)).status,
            201
        );
    }
    let page = request(&s, "GET", "/app/").text();
    assert!(page.contains(">m7<") && page.contains(">m5<") && !page.contains(">m4<"));
    let older = page.split("href=\"/app/?before=").nth(1).unwrap();
    let before: i64 = older[..older.find('"').unwrap()].parse().unwrap();
    let page = request(&s, "GET", &format!("/app/?before={before}")).text();
    assert!(page.contains(">m4<") && page.contains(">m2<") && !page.contains(">m5<"));
    assert!(page.contains("href=\"/app/\">Newest</a>"));
}

#[test]
fn body_framing_limits_and_chunked() {
    let s = start("max_body = 1024\nmax_text = 100");
    // A declared body over the limit is refused at once.
    let mut c = s.connect();
    c.send(b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"au");
    let r = c.read_response(false);
    assert_error(&r, 413, "request body too large");
    assert_eq!(r.header("connection"), Some("close"));

    // Chunked, sent in pieces, with an extension and a trailer.
    let mut c = s.connect();
    c.send(b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
    thread::sleep(Duration::from_millis(30));
    c.send(b"e\r\n{\"author\":\"chu\r\n");
    thread::sleep(Duration::from_millis(30));
    c.send(b"16;ext=1\r\nnk\",\"text\":\"chunked!\"}\r\n");
    thread::sleep(Duration::from_millis(30));
    c.send(b"0\r\nX-Trailer: 1\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.text().contains(r#""author":"chunk","text":"chunked!""#),
        "{}",
        r.text()
    );
    // The connection is still usable (keep-alive).
    c.send(b"GET /app/api/messages HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(ids(&r.text()).len(), 1);

    // Chunk sizes adding up past the limit: 413 before the data arrives.
    let mut c = s.connect();
    c.send(
        b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n300\r\n",
    );
    c.send(&[b'x'; 0x300]);
    c.send(b"\r\n300\r\n");
    assert_error(&c.read_response(false), 413, "too large");

    // A broken chunk is a 400.
    let mut c = s.connect();
    c.send(b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n");
    assert_error(&c.read_response(false), 400, "chunked");

    // Content-Length and Transfer-Encoding together: refused (smuggling).
    let mut c = s.connect();
    c.send(b"POST /app/api/messages HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_error(&c.read_response(false), 400, "framing");

    // A body exactly at the limit is fine (it is only validation that fails).
    let text = "y".repeat(1024 - 24);
    let body = format!(r#"{{"author":"a","text":"{text}"}}"#);
    assert_eq!(body.len(), 1024);
    assert_error(&post_json(&s, &body), 400, "text is longer");
}

#[test]
fn routing_keep_alive_and_methods() {
    let s = ServerBuilder::new(&["http", "webapp"])
        .tag("webapp-routes")
        .file("apple.html", "static apple\n")
        .start();
    // /apple* is not the app's: the static module serves it.
    let r = s.get("/apple.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "static apple\n");
    // /app and /app?x redirect to the board.
    let r = s.get("/app");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/app/"));
    let r = s.get("/app?before=3");
    assert_eq!(r.header("location"), Some("/app/?before=3"));
    // Unknown path under /app/: JSON 404 from the app.
    assert_error(&s.get("/app/nope"), 404, "not found");
    // Wrong method: 405 with Allow; OPTIONS lists the methods.
    let r = request(&s, "PUT", "/app/api/messages");
    assert_error(&r, 405, "not allowed");
    assert_eq!(r.header("allow"), Some("GET, POST, HEAD, OPTIONS"));
    let r = request(&s, "OPTIONS", "/app/api/messages/1");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("GET, DELETE, HEAD, OPTIONS"));
    // HEAD: the GET's headers, no body.
    let r = s.request("HEAD /app/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 500
    );
    assert!(r.body.is_empty());

    // Pipelined on one connection, across both modules and a POST.
    let mut c = s.connect();
    let mut batch = json_request(
        "POST",
        "/app/api/messages",
        r#"{"author":"p","text":"piped"}"#,
        false,
    );
    batch.push_str("GET /apple.html HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str("GET /app/api/messages HTTP/1.1\r\nHost: t\r\n\r\n");
    c.send(batch.as_bytes());
    assert_eq!(c.read_response(false).status, 201);
    assert_eq!(c.read_response(false).text(), "static apple\n");
    let r = c.read_response(false);
    assert!(r.text().contains("\"text\":\"piped\""), "{}", r.text());
    // A request without Host is refused and the connection closed.
    c.send(b"GET /app/ HTTP/1.1\r\n\r\n");
    let r = c.read_response(false);
    assert_error(&r, 400, "Host");
    c.expect_closed(Duration::from_secs(5)).unwrap();
}

/// Every message text in the board, with how often it appears.
fn all_texts(s: &Server) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut path = "/app/api/messages?limit=200".to_string();
    loop {
        let r = request(s, "GET", &path);
        assert_eq!(r.status, 200);
        let t = r.text();
        for part in t.split("\"text\":\"").skip(1) {
            *counts
                .entry(part[..part.find('"').unwrap()].to_string())
                .or_insert(0) += 1;
        }
        let next = t.rsplit("\"next_before\":").next().unwrap();
        if next.starts_with("null") {
            return counts;
        }
        let before = next.trim_end_matches(|c: char| !c.is_ascii_digit());
        path = format!("/app/api/messages?limit=200&before={before}");
    }
}

#[test]
fn messages_survive_reload_and_restart() {
    let dir = temp_dir("webapp-restart");
    let db = dir.join("board.db");
    let toml = format!("database = {:?}", db.to_str().unwrap());
    let s = start(&toml);
    for i in 0..10 {
        assert_eq!(
            post_json(&s, &format!(r#"{{"author":"r","text":"keep {i}"}}"#)).status,
            201
        );
    }
    let reply = s.admin("RELOAD webapp");
    assert!(reply.starts_with("OK webapp gen=2"), "{reply}");
    let texts = all_texts(&s);
    assert_eq!(texts.len(), 10, "{texts:?}");
    assert_eq!(
        post_json(&s, r#"{"author":"r","text":"after reload"}"#).status,
        201
    );
    // A reload of everything (no file changed) leaves it alone.
    let (_, counts) = parse_reload(&s.admin("RELOAD"));
    assert_eq!(counts[3], 0);

    // A clean shutdown, then a new server on the same database.
    let mut s = s;
    assert_eq!(s.admin("SHUTDOWN").trim(), "OK shutting down");
    assert!(s
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|st| st.success()));
    assert_wal_mode(&db);
    let s2 = start(&toml);
    let texts = all_texts(&s2);
    assert_eq!(texts.len(), 11, "{texts:?}");
    assert!(texts.contains_key("keep 0") && texts.contains_key("after reload"));
    drop(s2);
    let _ = fs::remove_dir_all(dir);
}

/// The database file says WAL in its header (bytes 18 and 19 are 2).
fn assert_wal_mode(db: &Path) {
    let head = fs::read(db).unwrap();
    assert_eq!(&head[..16], b"SQLite format 3\0");
    assert_eq!((head[18], head[19]), (2, 2), "not in WAL mode");
}

#[test]
fn concurrent_posts_while_reloading() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    const RELOADS: usize = 10;
    // Reload k (from 1) starts once about k * STEP posts have started, and
    // posts beyond (done + 1) * STEP wait for the next reload: every reload
    // happens in the middle of the stream of posts.
    const STEP: usize = THREADS * PER_THREAD / (RELOADS + 1);
    let s = Arc::new(start(""));
    let started = Arc::new(AtomicUsize::new(0));
    let reloads = Arc::new(AtomicUsize::new(0));

    let reloader = {
        let (s, started, reloads) = (s.clone(), started.clone(), reloads.clone());
        thread::spawn(move || {
            let mut replies = Vec::new();
            for k in 1..=RELOADS {
                let deadline = Instant::now() + Duration::from_secs(30);
                while started.load(Ordering::SeqCst) < k * STEP - THREADS / 2 {
                    assert!(Instant::now() < deadline, "posters stalled");
                    thread::sleep(Duration::from_millis(1));
                }
                replies.push(s.admin("RELOAD webapp"));
                reloads.store(k, Ordering::SeqCst);
            }
            replies
        })
    };
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (s, started, reloads) = (s.clone(), started.clone(), reloads.clone());
            thread::spawn(move || {
                let mut statuses = Vec::new();
                // Half the threads keep one connection, half reconnect.
                let mut keep: Option<Client> = None;
                for i in 0..PER_THREAD {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let done = reloads.load(Ordering::SeqCst);
                        if done == RELOADS || started.load(Ordering::SeqCst) < (done + 1) * STEP {
                            break;
                        }
                        assert!(Instant::now() < deadline, "reloads stalled");
                        thread::sleep(Duration::from_millis(1));
                    }
                    started.fetch_add(1, Ordering::SeqCst);
                    let body = format!(r#"{{"author":"t{t}","text":"c-{t}-{i}"}}"#);
                    let r = if t % 2 == 0 {
                        let c = keep.get_or_insert_with(|| s.connect());
                        c.send(json_request("POST", "/app/api/messages", &body, false).as_bytes());
                        c.read_response(false)
                    } else {
                        post_json(&s, &body)
                    };
                    statuses.push((r.status, r.text()));
                }
                statuses
            })
        })
        .collect();

    for p in posters {
        for (status, body) in p.join().unwrap() {
            assert_eq!(status, 201, "{body}");
        }
    }
    let replies = reloader.join().unwrap();
    for (i, r) in replies.iter().enumerate() {
        assert!(
            r.starts_with(&format!("OK webapp gen={}", i + 2)),
            "reload {i}: {r}"
        );
    }

    let texts = all_texts(&s);
    assert_eq!(texts.len(), THREADS * PER_THREAD, "missing messages");
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            assert_eq!(texts.get(&format!("c-{t}-{i}")), Some(&1), "c-{t}-{i}");
        }
    }
    let st = s.status();
    let w = st.expect("webapp");
    assert_eq!(w.gen, 11, "{}", w.line);
    assert_eq!(w.faults, 0, "{}", w.line);
    let log = s.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR") && l.contains("webapp")),
        "{log}"
    );

    // The retired generations closed their connections once drained: only
    // the current one's stay open (at most pool_size = 8, each holding the
    // database and its WAL; the shared-memory index once per process).
    let st = s.wait_status(Duration::from_secs(10), |st| {
        st.expect("webapp").field("draining") == Some("0")
    });
    assert_eq!(st.expect("webapp").field("draining"), Some("0"));
    let open = common::open_descriptors(s.pid(), "messages.db");
    assert!(open >= 1, "the database is not open at all?");
    assert!(
        open <= 2 * 8 + 1,
        "{open} descriptors on the database after 10 reloads"
    );
}

/// Headless Chromium renders the board (tests/browser/webapp.sh); skipped
/// when Chromium is not installed (`make browser-check` runs the script by
/// itself).
#[test]
fn browser_renders_the_board() {
    let has_chromium = ["chromium", "chromium-browser"].iter().any(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !has_chromium {
        eprintln!("browser_renders_the_board: skipped, no chromium installed");
        return;
    }
    let s = start("");
    let shot = s.dir.join("webapp.png");
    let out = std::process::Command::new(common::workspace().join("tests/browser/webapp.sh"))
        .arg(format!("http://{}", s.addr))
        .env("SCREENSHOT", &shot)
        .output()
        .expect("run tests/browser/webapp.sh");
    assert!(
        out.status.success(),
        "browser check failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::metadata(&shot).unwrap().len() > 1000);
}
