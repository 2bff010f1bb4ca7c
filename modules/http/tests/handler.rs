//! The handler end to end, without a host: requests in, responses and
//! verdicts out, against a real directory, through `module_api::testing`.

use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::Http;
use module_api::testing::{Harness, HttpReply};
use module_api::{Action, Verdict};
use serde_json::json;

struct Site {
    dir: PathBuf,
    module: Harness<Http>,
}

impl Site {
    fn new(extra: serde_json::Value) -> Site {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("switchyard-http-it-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("www");
        fs::create_dir_all(root.join("docs")).unwrap();
        fs::write(root.join("index.html"), "<h1>home</h1>\n").unwrap();
        fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
        fs::write(root.join("docs/index.html"), "docs\n").unwrap();
        fs::write(root.join("big.bin"), big_bytes()).unwrap();
        fs::write(dir.join("secret.txt"), "secret\n").unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("leak.txt")).unwrap();
        let mut config = json!({ "root": root, "cache_max_file": 1024 });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let module = Harness::new(http::manifest(), Http::new(&config).unwrap());
        Site { dir, module }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("www")
    }

    /// The verdict and the response; status 0 and no headers when the
    /// module wrote nothing.
    fn call(&self, input: &[u8]) -> (Verdict, HttpReply) {
        let reply = self.module.message(input);
        let page = if reply.out.is_empty() {
            HttpReply {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
            }
        } else {
            reply.http()
        };
        (reply.verdict, page)
    }

    fn get(&self, target: &str, extra_headers: &str) -> (Verdict, HttpReply) {
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra_headers}\r\n");
        self.call(req.as_bytes())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn big_bytes() -> Vec<u8> {
    (0..10_000u32).map(|i| (i % 251) as u8).collect()
}

fn text(s: &str) -> &[u8] {
    s.as_bytes()
}

#[test]
fn serves_files_with_validators() {
    let site = Site::new(json!({}));
    let (v, r) = site.get("/hello.txt", "");
    assert_eq!(
        v,
        Verdict::done("GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n".len())
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello, world\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").unwrap().starts_with('"'));
    assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
    assert!(r.header("date").is_some());
    assert!(r.header("connection").is_none());

    let (_, index) = site.get("/", "");
    assert_eq!(index.status, 200);
    assert_eq!(index.body, b"<h1>home</h1>\n");
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let (_, docs) = site.get("/docs/?x=1", "");
    assert_eq!(docs.body, b"docs\n");
}

#[test]
fn head_has_no_body() {
    let site = Site::new(json!({}));
    let (v, r) = site.call(b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(v.action, Action::Done);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("13"));
    assert!(r.body.is_empty());
    let (v, r) = site.call(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(v.file.fd(), -1);
    assert_eq!(r.header("content-length"), Some("10000"));
    assert!(r.body.is_empty());
}

#[test]
fn pipelined_requests_are_consumed_one_at_a_time() {
    let site = Site::new(json!({}));
    let first = "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let second = "GET /docs/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let both = format!("{first}{second}");
    let (v, r) = site.call(both.as_bytes());
    assert_eq!(v, Verdict::done(first.len()));
    assert_eq!(r.body, b"hello, world\n");
    let (v, r) = site.call(&both.as_bytes()[first.len()..]);
    assert_eq!(v, Verdict::close(second.len()));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"docs\n");
}

#[test]
fn incomplete_requests_wait() {
    let site = Site::new(json!({}));
    let (v, r) = site.call(b"GET /hello.txt HTTP/1.1\r\nHo");
    assert_eq!(v, Verdict::NEED_MORE);
    assert_eq!(r.status, 0);
    // A body announced but not yet here.
    let (v, _) = site.call(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab");
    assert_eq!(v, Verdict::NEED_MORE);
}

#[test]
fn bodies_are_consumed() {
    let site = Site::new(json!({}));
    let req = "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde";
    let (v, r) = site.call(format!("{req}GET /x").as_bytes());
    assert_eq!(v, Verdict::done(req.len()));
    assert_eq!(r.status, 200);
    let req = "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
    let (v, r) = site.call(format!("{req}GET /x").as_bytes());
    assert_eq!(v, Verdict::done(req.len()));
    assert_eq!(r.status, 200);
    let (v, _) = site.call(&req.as_bytes()[..req.len() - 2]);
    assert_eq!(v, Verdict::NEED_MORE);
}

#[test]
fn conditional_requests() {
    let site = Site::new(json!({}));
    let (_, r) = site.get("/hello.txt", "");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();

    let (v, nm) = site.get("/hello.txt", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(v.action, Action::Done);
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some(etag.as_str()));

    let (_, ims) = site.get("/hello.txt", &format!("If-Modified-Since: {lm}\r\n"));
    assert_eq!(ims.status, 304);
    // If-None-Match wins over If-Modified-Since.
    let (_, both) = site.get(
        "/hello.txt",
        &format!("If-None-Match: \"nope\"\r\nIf-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(both.status, 200);
    let (_, pre) = site.get("/hello.txt", "If-Match: \"nope\"\r\n");
    assert_eq!(pre.status, 412);
}

#[test]
fn ranges() {
    let site = Site::new(json!({}));
    let (_, r) = site.get("/hello.txt", "Range: bytes=0-4\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-range"), Some("bytes 0-4/13"));
    assert_eq!(r.header("content-length"), Some("5"));
    let (_, r) = site.get("/hello.txt", "Range: bytes=-6\r\n");
    assert_eq!(r.body, b"world\n");
    let (v, r) = site.get("/hello.txt", "Range: bytes=13-\r\n");
    assert_eq!(v.action, Action::Done);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */13"));
    let (_, r) = site.get("/hello.txt", "Range: bytes=0-1,3-4\r\n");
    assert_eq!(r.status, 200);
    let (_, r) = site.get("/hello.txt", "Range: bytes=0-1\r\nIf-Range: \"stale\"\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello, world\n");
}

fn read_file_body(v: &Verdict) -> Vec<u8> {
    assert!(v.file.fd() >= 0);
    // The body keeps the descriptor open while `v` lives; the test reads
    // through it as the host would, without taking it over.
    // SAFETY: `v.file` keeps `fd()` open for the whole borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(v.file.fd()) };
    let file = fs::File::from(fd.try_clone_to_owned().unwrap());
    let mut buf = vec![0; v.file.len() as usize];
    file.read_exact_at(&mut buf, v.file.offset()).unwrap();
    buf
}

#[test]
fn large_files_go_out_as_file_bodies() {
    let site = Site::new(json!({}));
    let big = big_bytes();
    for _ in 0..2 {
        // Miss, then hit.
        let (v, r) = site.get("/big.bin", "");
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("10000"));
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!((v.file.offset(), v.file.len()), (0, 10_000));
        assert_eq!(read_file_body(&v), big);
    }
    let (v, r) = site.get("/big.bin", "Range: bytes=100-199\r\n");
    assert_eq!(r.status, 206);
    assert_eq!((v.file.offset(), v.file.len()), (100, 100));
    assert_eq!(read_file_body(&v), &big[100..200]);
}

#[test]
fn changes_on_disk_are_noticed() {
    let site = Site::new(json!({ "revalidate_ms": 0 }));
    let (_, r) = site.get("/hello.txt", "");
    assert_eq!(r.body, b"hello, world\n");
    fs::write(site.root().join("hello.txt"), "changed!\n").unwrap();
    let (_, r) = site.get("/hello.txt", "");
    assert_eq!(r.body, b"changed!\n");
    fs::remove_file(site.root().join("hello.txt")).unwrap();
    let (_, r) = site.get("/hello.txt", "");
    assert_eq!(r.status, 404);
    // A small file that grows past the in-memory limit.
    fs::write(site.root().join("hello.txt"), vec![b'x'; 5000]).unwrap();
    let (v, r) = site.get("/hello.txt", "");
    assert_eq!(r.header("content-length"), Some("5000"));
    assert_eq!(read_file_body(&v).len(), 5000);
}

#[test]
fn changes_show_up_after_the_revalidation_period() {
    let site = Site::new(json!({ "revalidate_ms": 50 }));
    let (_, r) = site.get("/hello.txt", "");
    assert_eq!(r.body, b"hello, world\n");
    fs::write(site.root().join("hello.txt"), "new\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(120));
    let (_, r) = site.get("/hello.txt", "");
    assert_eq!(r.body, b"new\n");
    assert!(site
        .module
        .status()
        .starts_with("cache_entries=1 cache_bytes="));
}

#[test]
fn nothing_escapes_the_root() {
    let site = Site::new(json!({}));
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/docs/../../secret.txt",
        "/a%00b",
    ] {
        let (v, r) = site.get(target, "");
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(v.action, Action::Close);
    }
    for target in [
        "/leak.txt",
        "//etc/passwd",
        "/etc/passwd",
        "http://x//etc/passwd",
    ] {
        let (_, r) = site.get(target, "");
        assert_eq!(r.status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&r.body).contains("root:"));
    }
}

#[test]
fn directories_redirect_to_their_slash() {
    let site = Site::new(json!({}));
    let (v, r) = site.get("/docs?q=1", "");
    assert_eq!(v.action, Action::Done);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/?q=1"));
    let (_, r) = site.get("/hello.txt/", "");
    assert_eq!(r.status, 404);
    fs::create_dir(site.root().join("empty")).unwrap();
    let (_, r) = site.get("/empty/", "");
    assert_eq!(r.status, 404);
}

#[test]
fn other_methods() {
    let site = Site::new(json!({}));
    let req = "POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    let (v, r) = site.call(text(req));
    assert_eq!(v, Verdict::done(req.len()));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    let (_, r) = site.call(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert!(r.header("content-length").is_none());
    let (_, r) = site.call(b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405);
}

#[test]
fn limits_and_malformed_requests() {
    let site = Site::new(json!({ "max_uri": 100, "max_header_size": 400, "max_body": 10 }));
    let long = format!("/{}", "a".repeat(200));
    let (v, r) = site.get(&long, "");
    assert_eq!((r.status, v.action), (414, Action::Close));
    // Still incomplete but already too long.
    let (v, r) = site.call(format!("GET {long}").as_bytes());
    assert_eq!((r.status, v.action), (414, Action::Close));
    let big_header = format!("X-Big: {}\r\n", "b".repeat(500));
    let (_, r) = site.get("/", &big_header);
    assert_eq!(r.status, 431);
    let (v, r) = site.call(format!("GET / HTTP/1.1\r\n{big_header}").as_bytes());
    assert_eq!((r.status, v.action), (431, Action::Close));
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let site2 = Site::new(json!({}));
    let (_, r) = site2.get("/", &many);
    assert_eq!(r.status, 431);

    let (v, r) = site.call(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n");
    assert_eq!((r.status, v.action), (413, Action::Close));
    let (v, r) = site.call(b"GET /\x01 HTTP/1.1\r\n\r\n");
    assert_eq!((r.status, v.action), (400, Action::Close));
    let (_, r) = site.call(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400, "missing Host");
    let (_, r) = site.call(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    assert_eq!(r.status, 400, "two Hosts");
    let (_, r) =
        site.call(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn strict_framing() {
    let site = Site::new(json!({}));
    let status = |raw: &[u8]| {
        let (v, r) = site.call(raw);
        assert_eq!(
            v.action,
            Action::Close,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
        r.status
    };
    let post = |h: &str, body: &str| format!("POST /x HTTP/1.1\r\nHost: t\r\n{h}\r\n{body}");
    assert_eq!(
        status(post("Content-Length: +3\r\n", "abc").as_bytes()),
        400
    );
    assert_eq!(
        status(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: \xc2\xa03\r\n\r\nabc"),
        400
    );
    let te = post("Transfer-Encoding: chunked\r\n", "\r\nabc\r\n0\r\n\r\n");
    assert_eq!(status(te.as_bytes()), 400, "empty chunk-size line");
    let te = post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n");
    assert_eq!(status(te.as_bytes()), 501);
    assert_eq!(status(b"GET\t/ HTTP/1.1\r\nHost: t\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost : t\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: t\r\n x\r\n\r\n"), 400);
    // Absolute form: served by its path.
    let (v, r) = site.call(b"GET http://t/hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, v.action), (200, Action::Done));
    assert_eq!(r.body, b"hello, world\n");
}

#[test]
fn chunked_body_in_pieces_is_consumed_once_whole() {
    let site = Site::new(json!({ "max_body": 1 << 20 }));
    let mut req = b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5000 {
        req.extend_from_slice(b"3\r\nabc\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let whole = req.len();
    req.extend_from_slice(b"GET / HTTP/1.1\r\n");
    for end in (1..whole).step_by(3) {
        let (v, _) = site.call(&req[..end]);
        assert_eq!(v, Verdict::NEED_MORE, "at {end}");
    }
    let (v, r) = site.call(&req);
    assert_eq!(r.status, 405);
    assert_eq!(v.consumed, whole as u64);
}

#[test]
fn http10_keep_alive() {
    let site = Site::new(json!({}));
    let (v, r) = site.call(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(v.action, Action::Close);
    assert_eq!(r.header("connection"), Some("close"));
    let (v, r) = site.call(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(v.action, Action::Done);
    assert_eq!(r.header("connection"), Some("keep-alive"));
}

#[test]
fn expect_continue_without_body_is_answered_and_closed() {
    let site = Site::new(json!({}));
    let req = b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    let (v, r) = site.call(req);
    assert_eq!(r.status, 405);
    assert_eq!(v, Verdict::close(req.len()));
}

#[test]
fn start_fails_without_root() {
    let err = Http::new(&json!({ "root": "/definitely/not/here" }))
        .err()
        .unwrap();
    assert!(err.contains("/definitely/not/here"), "{err}");
}

#[test]
fn manifest_binds_every_method() {
    let m = http::manifest();
    assert_eq!(m.name.as_str(), "http");
    let bindings: Vec<&[u8]> = m.bindings.iter().map(|b| b.as_slice()).collect();
    for p in ["GET ", "HEAD ", "POST ", "OPTIONS ", "CONNECT "] {
        assert!(bindings.contains(&p.as_bytes()), "{p}");
    }
}

#[test]
fn every_prefix_of_a_request_waits_or_answers_consistently() {
    let site = Site::new(json!({}));
    let requests: [&[u8]; 4] = [
        b"GET /hello.txt?x HTTP/1.1\r\nHost: t\r\nRange: bytes=1-3\r\n\r\n",
        b"HEAD /docs HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"POST /f HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"GET /%2e%2e/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
    ];
    for req in requests {
        for cut in 0..=req.len() {
            let reply = site.module.message(&req[..cut]);
            let (v, out) = (reply.verdict, reply.out);
            if cut < req.len() {
                assert_eq!(v, Verdict::NEED_MORE, "{cut}: {:?}", &req[..cut]);
                assert!(out.is_empty());
            } else {
                assert_ne!(v.action, Action::NeedMore);
                assert_eq!(v.consumed, req.len() as u64);
                assert!(!out.is_empty());
            }
        }
    }
}

#[test]
fn concurrent_readers_see_whole_files() {
    let site = Site::new(json!({ "revalidate_ms": 0 }));
    let path = site.root().join("hello.txt");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..300 {
                    let (v, r) = site.get("/hello.txt", "");
                    if r.status != 200 {
                        continue;
                    }
                    let len: usize = r.header("content-length").unwrap().parse().unwrap();
                    let body = if v.file.fd() >= 0 {
                        read_file_body(&v)
                    } else {
                        r.body
                    };
                    assert_eq!(body.len(), len);
                }
            });
        }
        s.spawn(|| {
            for i in 0..100 {
                let tmp = path.with_extension("tmp");
                fs::write(&tmp, vec![b'a' + (i % 26) as u8; 10 + i * 30]).unwrap();
                fs::rename(&tmp, &path).unwrap();
            }
        });
    });
}
