//! The `http` static-file module as served by the real host: content types,
//! HEAD, conditional and range requests, large files, path traversal, and
//! the malformed / oversized requests the server must refuse and survive.

use crate::common;

use std::time::Duration;

use common::{pseudo_random, Server, ServerBuilder, INDEX_HTML};

fn http_server() -> Server {
    ServerBuilder::new(&["http"])
        .tag("static")
        .file("small.txt", "hello, small file\n")
        .file("style.css", "body { color: black }\n")
        .file("app.js", "console.log('hi');\n")
        .file("image.png", b"\x89PNG\r\n\x1a\n fake png".to_vec())
        .file("sub/page.html", "<p>sub</p>\n")
        .start()
}

/// Asserts the server still answers `GET /` normally.
fn assert_serving(s: &Server) {
    let r = s.get("/");
    assert_eq!(r.status, 200, "server stopped serving: {r:?}");
    assert_eq!(r.text(), INDEX_HTML);
}

#[test]
fn index_html_for_root() {
    let s = http_server();
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        r.header("content-length"),
        Some(&*INDEX_HTML.len().to_string())
    );
    assert_eq!(r.text(), INDEX_HTML);

    let r = s.get("/index.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), INDEX_HTML);

    let r = s.get("/sub/page.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<p>sub</p>\n");
}

#[test]
fn head_has_headers_but_no_body() {
    let s = http_server();
    // HEAD then GET pipelined on one connection: if HEAD sent any body
    // bytes, the second response would not start with a status line.
    let mut c = s.connect();
    c.send(
        b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /small.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let head = c.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        head.header("content-length"),
        Some(&*INDEX_HTML.len().to_string())
    );
    let get = c.read_response(false);
    assert_eq!(get.status, 200, "response after HEAD: {get:?}");
    assert_eq!(get.text(), "hello, small file\n");
}

#[test]
fn missing_file_is_404() {
    let s = http_server();
    let r = s.get("/no/such/file.html");
    assert_eq!(r.status, 404);
    let r = s.get("/nothing-here");
    assert_eq!(r.status, 404);
    assert_serving(&s);
}

#[test]
fn path_traversal_never_escapes_the_root() {
    let s = http_server();
    std::os::unix::fs::symlink("/etc/passwd", s.site.join("passwd-link")).unwrap();
    std::os::unix::fs::symlink("/etc", s.site.join("etc-link")).unwrap();
    for path in [
        "/../",
        "/../etc/passwd",
        "/../../../../../../etc/passwd",
        "/%2e%2e/",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
        "//etc/passwd",
        "/..%2f..%2f..%2f..%2fetc/passwd",
        "/sub/../../../../etc/passwd",
        "/passwd-link",
        "/etc-link/passwd",
    ] {
        let r = s.get(path);
        assert!(
            !r.text().contains("root:"),
            "{path}: served /etc/passwd contents!"
        );
        assert!(
            (400..500).contains(&r.status),
            "{path}: expected a 4xx, got {}",
            r.status_line
        );
    }
    assert_serving(&s);
}

#[test]
fn post_is_405_with_allow() {
    let s = http_server();
    let r = s.request(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 405);
    let allow = r.header("allow").expect("405 without Allow header");
    assert!(allow.contains("GET"), "Allow: {allow}");
    assert!(allow.contains("HEAD"), "Allow: {allow}");
    assert_serving(&s);
}

#[test]
fn etag_if_none_match_is_304() {
    let s = http_server();
    let r = s.get("/small.txt");
    assert_eq!(r.status, 200);
    let etag = r.header("etag").expect("no ETag").to_string();
    let r = s.get_with("/small.txt", &[&format!("If-None-Match: {etag}")]);
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(&*etag));
    // A different tag gets the full body.
    let r = s.get_with("/small.txt", &["If-None-Match: \"something-else\""]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, small file\n");
}

#[test]
fn last_modified_if_modified_since_is_304() {
    let s = http_server();
    let r = s.get("/small.txt");
    assert_eq!(r.status, 200);
    let lm = r
        .header("last-modified")
        .expect("no Last-Modified")
        .to_string();
    let r = s.get_with("/small.txt", &[&format!("If-Modified-Since: {lm}")]);
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    // A date long before the file's mtime gets the full body.
    let r = s.get_with(
        "/small.txt",
        &["If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT"],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, small file\n");
}

#[test]
fn range_requests() {
    let s = http_server();
    let data = pseudo_random(5000, 7);
    s.write_site("blob.bin", &data);

    let r = s.get_with("/blob.bin", &["Range: bytes=0-9"]);
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes 0-9/5000"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.body, &data[..10]);

    let r = s.get_with("/blob.bin", &["Range: bytes=4990-"]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 4990-4999/5000"));
    assert_eq!(r.body, &data[4990..]);

    let r = s.get_with("/blob.bin", &["Range: bytes=99999-"]);
    assert_eq!(r.status, 416, "{r:?}");
    if let Some(cr) = r.header("content-range") {
        assert_eq!(cr, "bytes */5000");
    }
    assert_serving(&s);
}

#[test]
fn large_file_is_served_byte_exact() {
    let s = http_server();
    let data = pseudo_random(3 * 1024 * 1024 + 123, 42);
    s.write_site("big.bin", &data);
    let r = s.get("/big.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*data.len().to_string()));
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data, "large file body differs from the file");

    // Twice on one keep-alive connection, then a small file: the sendfile
    // path must leave the connection at a clean message boundary.
    let mut c = s.connect();
    c.send(
        b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    for _ in 0..2 {
        let r = c.read_response(false);
        assert_eq!(r.status, 200);
        assert!(r.body == data, "pipelined large file body differs");
    }
    let r = c.read_response(false);
    assert_eq!(r.text(), "hello, small file\n");
}

#[test]
fn cached_medium_file_is_shared_byte_exact() {
    // 64 KiB: cached in memory and sent from the cache without a copy.
    let s = http_server();
    let data = pseudo_random(64 * 1024, 7);
    s.write_site("medium.bin", &data);
    let mut c = s.connect();
    c.send(
        b"GET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /medium.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-40999\r\n\r\n\
          GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert!(r.body == data, "cached body differs from the file");
    let r = c.read_response(false);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000-40999/65536"));
    assert!(r.body[..] == data[1000..41000], "cached range differs");
    let r = c.read_response(false);
    assert_eq!(r.text(), "hello, small file\n");
    let r = c.read_response(false);
    assert!(r.body == data, "second cached body differs");
}

#[test]
fn file_descriptors_are_not_leaked_or_closed_early() {
    // A cached 64 KiB file goes out with sendfile from the cache's own
    // descriptor; a 3 MiB file from one opened per response and closed
    // after it. Many responses, some cut off mid-body, then the count of
    // descriptors on each file, and the bytes once more.
    let s = http_server();
    let medium = pseudo_random(64 * 1024, 11);
    let big = pseudo_random(3 * 1024 * 1024, 12);
    s.write_site("medium.bin", &medium);
    s.write_site("big.bin", &big);
    for round in 0..20 {
        let mut c = s.connect();
        c.send(
            b"GET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /medium.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=20000-\r\n\r\n",
        );
        let r = c.read_response(false);
        assert!(r.body == medium, "round {round}: medium body differs");
        let r = c.read_response(false);
        assert!(r.body == big, "round {round}: big body differs");
        let r = c.read_response(false);
        assert!(
            r.body[..] == medium[20000..],
            "round {round}: range differs"
        );
        // Asked for both, read nothing: the server gives up on the send.
        let mut cut = s.connect();
        cut.send(
            b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        drop(cut);
    }
    let mut medium_fds = usize::MAX;
    let mut big_fds = usize::MAX;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        medium_fds = common::open_descriptors(s.pid(), "medium.bin");
        big_fds = common::open_descriptors(s.pid(), "big.bin");
        if medium_fds <= 1 && big_fds == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        medium_fds <= 1,
        "{medium_fds} descriptors on the cached file"
    );
    assert_eq!(big_fds, 0, "descriptors on the large file left open");
    let r = s.get("/medium.bin");
    assert!(r.body == medium, "cached body differs at the end");
    assert!(
        s.get("/big.bin").body == big,
        "large body differs at the end"
    );
}

#[test]
fn changed_file_is_served_fresh() {
    let s = http_server();
    s.write_site("changing.txt", "version one\n");
    assert_eq!(s.get("/changing.txt").text(), "version one\n");
    assert_eq!(s.get("/changing.txt").text(), "version one\n");
    s.write_site("changing.txt", "version two, longer\n");
    std::thread::sleep(Duration::from_millis(1500));
    let r = s.get("/changing.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "version two, longer\n");
}

#[test]
fn mime_types() {
    let s = http_server();
    let ct = |p: &str| {
        let r = s.get(p);
        assert_eq!(r.status, 200, "{p}");
        r.header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert!(ct("/style.css").starts_with("text/css"));
    let js = ct("/app.js");
    assert!(
        js.starts_with("text/javascript") || js.starts_with("application/javascript"),
        "{js}"
    );
    assert_eq!(ct("/image.png"), "image/png");
    assert!(ct("/small.txt").starts_with("text/plain"));
}

#[test]
fn malformed_request_is_400_and_server_keeps_serving() {
    let s = http_server();
    for bad in [
        &b"GET /has space HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ] {
        let mut c = s.connect();
        c.send(bad);
        let r = c.read_response(false);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
    }
    assert_serving(&s);
}

#[test]
fn oversized_headers_are_431() {
    let s = http_server();
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)));
    }
    req.push_str("\r\n");
    assert!(req.len() > 16 * 1024);
    let mut c = s.connect();
    c.send_lenient(req.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 431, "{r:?}");
    assert_serving(&s);
}

#[test]
fn overlong_uri_is_414() {
    let s = http_server();
    let req = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(12 * 1024));
    let mut c = s.connect();
    c.send_lenient(req.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, 414, "{r:?}");
    assert_serving(&s);
}
