//! Unit tests of the web layer: framing, requests, forms, routing,
//! responses and HTML.

use super::*;
use crate::{ConnInfo, Verdict};
use abi_stable::std_types::RVec;
use std::borrow::Cow;

const LIMITS: Limits = Limits {
    max_head: 1024,
    max_body: 16,
};

fn text(out: impl AsRef<[u8]>) -> String {
    String::from_utf8(out.as_ref().to_vec()).unwrap()
}

fn conn() -> ConnInfo {
    ConnInfo::new(1, "127.0.0.1:9".parse().unwrap(), false)
}

#[test]
fn frames_content_length() {
    let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET";
    let head = req.len() - 6;
    assert_eq!(frame(&req[..head + 2], &LIMITS), Framed::Partial);
    assert_eq!(frame(req, &LIMITS), Framed::Complete(head + 3));
    assert_eq!(frame(b"GET / HTTP/1.1\r\nHo", &LIMITS), Framed::Partial);
    let big = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n";
    assert!(matches!(
        frame(big, &LIMITS),
        Framed::Refused(Refusal { status: 413, .. })
    ));
}

#[test]
fn refuses_bad_heads() {
    let status = |input: &[u8]| match frame(input, &LIMITS) {
        Framed::Refused(r) => r.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400); // no Host
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_eq!(status(b"GET\0 / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(status(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 2000));
    assert_eq!(status(&long), 431);
    // HTTP/1.0 needs no Host.
    assert_eq!(
        frame(b"GET / HTTP/1.0\r\n\r\n", &LIMITS),
        Framed::Complete(18)
    );
}

#[test]
fn frames_and_decodes_chunked() {
    let head = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n";
    let mut req = head.to_vec();
    req.extend_from_slice(body);
    let full = req.len();
    req.extend_from_slice(b"GET / HTTP/1.1\r\n");
    for cut in [head.len(), head.len() + 4, full - 1] {
        assert_eq!(frame(&req[..cut], &LIMITS), Framed::Partial, "cut {cut}");
    }
    assert_eq!(frame(&req, &LIMITS), Framed::Complete(full));
    let parsed = Request::parse(&req, &LIMITS).unwrap();
    assert_eq!(parsed.body(), b"abcde");
    assert_eq!(parsed.len(), full);

    // Announced sizes over the limit are refused before the data comes.
    let mut big = head.to_vec();
    big.extend_from_slice(b"10\r\n");
    assert_eq!(frame(&big, &LIMITS), Framed::Partial); // exactly 16: fine so far
    big.extend_from_slice(&[b'x'; 16]);
    big.extend_from_slice(b"\r\n1\r\n");
    assert!(matches!(
        frame(&big, &LIMITS),
        Framed::Refused(Refusal { status: 413, .. })
    ));
    let mut bad = head.to_vec();
    bad.extend_from_slice(b"3\r\nabcX\r\n");
    assert!(matches!(
        frame(&bad, &LIMITS),
        Framed::Refused(Refusal { status: 400, .. })
    ));
    let mut bad = head.to_vec();
    bad.extend_from_slice(b"zz\r\n");
    assert!(matches!(
        frame(&bad, &LIMITS),
        Framed::Refused(Refusal { status: 400, .. })
    ));
}

#[test]
fn strict_framing_statuses() {
    let status = |input: &[u8]| match frame(input, &Limits::default()) {
        Framed::Refused(r) => r.status,
        other => panic!("{other:?}"),
    };
    let post = |h: &str| format!("POST /a HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n");
    assert_eq!(status(post("Content-Length: +3").as_bytes()), 400);
    assert_eq!(
        status(post("Transfer-Encoding: gzip, chunked").as_bytes()),
        501
    );
    let mut empty_size = post("Transfer-Encoding: chunked").into_bytes();
    empty_size.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
    assert_eq!(status(&empty_size), 400);
    assert_eq!(status(b"GET\t/app/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
}

#[test]
fn absolute_form_routes_by_its_path() {
    let msg = b"GET http://example.test/m/5?x=1 HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let req = Request::parse(msg, &LIMITS).unwrap();
    assert_eq!(req.path(), "/m/5");
    assert_eq!(req.query("x").as_deref(), Some("1"));
    let (_, out) = run(&router(), std::str::from_utf8(msg).unwrap());
    assert!(out.ends_with("{\"id\":5,\"s\":7}\n"), "{out}");
}

#[test]
fn chunked_body_in_pieces_through_the_router() {
    let r = router().inline().limits(Limits {
        max_head: 1024,
        max_body: 1 << 20,
    });
    let c = ConnInfo::new(0xabc0_0001, "127.0.0.1:9".parse().unwrap(), false);
    let mut msg =
        b"POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n".to_vec();
    for _ in 0..3000 {
        msg.extend_from_slice(b"2\r\n,1\r\n");
    }
    msg.extend_from_slice(b"1\r\n]\r\n0\r\n\r\n");
    let mut out = crate::Out::new();
    for end in (1..msg.len()).step_by(5) {
        assert_eq!(
            r.on_message(&7, &c, &msg[..end], &mut out),
            Verdict::NEED_MORE
        );
    }
    let v = r.on_message(&7, &c, &msg, &mut out);
    assert_eq!(v, Verdict::done(msg.len()));
    let s = text(out);
    assert!(s.starts_with("HTTP/1.1 201 "), "{}", &s[..s.len().min(200)]);
    assert_eq!(s.matches(",1").count(), 3000);
}

#[test]
fn form_refuses_invalid_utf8() {
    let parse = |body: &[u8]| {
        let mut msg = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        let req = Request::parse(&msg, &Limits::default()).unwrap();
        req.form().map_err(|r| {
            (
                r.status(),
                String::from_utf8_lossy(r.body_bytes()).into_owned(),
            )
        })
    };
    assert_eq!(parse(b"a=%C3%A9").unwrap().get("a"), Some("\u{e9}"));
    assert_eq!(
        parse("a=\u{e9}".as_bytes()).unwrap().get("a"),
        Some("\u{e9}")
    );
    for bad in [&b"a=%ff"[..], b"a=\xff", b"%C3=1", b"a=%C3"] {
        let (status, body) = parse(bad).unwrap_err();
        assert_eq!(status, 400);
        assert!(body.contains("UTF-8"), "{body}");
    }
}

#[test]
fn request_accessors() {
    let msg = b"POST /p/a%20b?limit=5&q=x+y%21&bad=%zz HTTP/1.1\r\nHost: x\r\n\
Cookie: a=1; author=Ann%20%3Cb%3E\r\nContent-Type: Application/JSON; charset=utf-8\r\n\
Content-Length: 13\r\n\r\n{\"n\": [1, 2]}";
    let req = Request::parse(msg, &Limits::default()).unwrap();
    assert_eq!(req.method(), "POST");
    assert_eq!(req.path(), "/p/a%20b");
    assert_eq!(req.query("q").as_deref(), Some("x y!"));
    assert_eq!(req.query("bad").as_deref(), Some("%zz"));
    assert_eq!(req.query_as::<u32>("limit").unwrap(), Some(5));
    assert_eq!(req.query_as::<u32>("missing").unwrap(), None);
    assert_eq!(req.query_as::<u32>("q").unwrap_err().status(), 400);
    assert_eq!(req.cookie("author").as_deref(), Some("Ann <b>"));
    assert_eq!(req.cookie("nope"), None);
    assert_eq!(req.content_type().as_deref(), Some("application/json"));
    let v: serde_json::Value = req.json().unwrap();
    assert_eq!(v["n"][1], 2);
    assert!(req.keep_alive());
    assert_eq!(req.form().unwrap_err().status(), 415);
}

#[test]
fn json_and_form_errors() {
    let parse = |ct: &str, body: &str| {
        let msg = format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let req = Request::parse(msg.as_bytes(), &Limits::default()).unwrap();
        (
            req.json::<serde_json::Value>().map_err(|r| r.status()),
            req.form().map_err(|r| r.status()),
        )
    };
    assert_eq!(parse("", "{").0, Err(400));
    assert_eq!(parse("", "").0, Err(400));
    assert_eq!(parse("Content-Type: text/plain\r\n", "{}").0, Err(415));
    assert!(parse("Content-Type: application/problem+json\r\n", "{}")
        .0
        .is_ok());
    let (_, form) = parse(
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "author=A+B&text=%3Cscript%3E&&empty=&flag",
    );
    let form = form.unwrap();
    assert_eq!(form.get("author"), Some("A B"));
    assert_eq!(form.get("text"), Some("<script>"));
    assert_eq!(form.get("empty"), Some(""));
    assert_eq!(form.get("flag"), Some(""));
    assert_eq!(form.get("none"), None);
}

#[test]
fn decoding() {
    assert_eq!(decode_component(b"a%2Fb+c", true), "a/b c");
    assert_eq!(decode_component(b"a%2Fb+c", false), "a/b+c");
    assert_eq!(decode_component(b"%", true), "%");
    assert_eq!(decode_component(b"%4", true), "%4");
    assert_eq!(decode_component(b"%ff", true), "\u{fffd}");
    assert_eq!(decode_component("é".as_bytes(), true), "é");
    assert_eq!(encode_component("a b/é~"), "a%20b%2F%C3%A9~");
    assert_eq!(
        parse_urlencoded(b"a=1&b&=x"),
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "".into()),
            ("".into(), "x".into())
        ]
    );
}

#[test]
fn patterns() {
    let p = Pattern::parse("/app/messages/:id").unwrap();
    assert_eq!(
        p.matches("/app/messages/42"),
        Some(vec![("id".into(), "42".into())])
    );
    assert_eq!(
        p.matches("/app/messages/a%2Fb"),
        Some(vec![("id".into(), "a/b".into())])
    );
    assert_eq!(p.matches("/app/messages/"), None);
    assert_eq!(p.matches("/app/messages"), None);
    assert_eq!(p.matches("/app/messages/1/x"), None);
    let root = Pattern::parse("/app/").unwrap();
    assert!(root.matches("/app/").is_some());
    assert!(root.matches("/app").is_none());
    assert!(root.matches("/apple/").is_none());
    let rest = Pattern::parse("/files/*path").unwrap();
    assert_eq!(
        rest.matches("/files/a/b%20c"),
        Some(vec![("path".into(), "a/b c".into())])
    );
    assert_eq!(
        rest.matches("/files/"),
        Some(vec![("path".into(), "".into())])
    );
    assert!(Pattern::parse("app").is_err());
    assert!(Pattern::parse("/a/:").is_err());
    assert!(Pattern::parse("/*a/b").is_err());
}

fn router() -> Router<u32> {
    Router::new()
        .get("/m/:id", |s: &u32, r: &Request<'_>| {
            let id: u64 = r.param_as("id")?;
            Ok(Response::json(
                200,
                &serde_json::json!({ "id": id, "s": s }),
            ))
        })
        .delete("/m/:id", |_: &u32, _: &Request<'_>| Ok(Response::new(204)))
        .post("/m", |_: &u32, r: &Request<'_>| {
            let v: serde_json::Value = r.json()?;
            Ok(Response::json(201, &v))
        })
}

fn run(router: &Router<u32>, msg: &str) -> (Verdict, String) {
    let mut out = crate::Out::new();
    let v = router.handle(&7, &conn(), msg.as_bytes(), &mut out);
    (v, text(out))
}

#[test]
fn dispatches() {
    let r = router();
    let (v, out) = run(&r, "GET /m/5 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("{\"id\":5,\"s\":7}\n"), "{out}");
    assert_eq!(v.action, crate::Action::Done);

    let (_, out) = run(&r, "HEAD /m/5 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("Content-Length: 15\r\n\r\n"), "{out}");

    let (_, out) = run(&r, "GET /m/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(
        out.contains("{\"error\":\"id: invalid value \\\"x\\\"\"}"),
        "{out}"
    );

    let (_, out) = run(
        &r,
        "PUT /m/5 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
    assert!(
        out.contains("Allow: GET, DELETE, HEAD, OPTIONS\r\n"),
        "{out}"
    );

    let (_, out) = run(&r, "OPTIONS /m HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 204 "), "{out}");
    assert!(out.contains("Allow: POST, OPTIONS\r\n"), "{out}");
    assert!(!out.contains("Content-Length"), "{out}");

    let (v, out) = run(
        &r,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert_eq!(v.action, crate::Action::Close);

    let (_, out) = run(
        &r,
        "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 201 "), "{out}");
    assert!(out.ends_with("\r\n\r\n{}\n"), "{out}");
}

#[test]
fn message_cycle() {
    let r = router();
    let mut out = crate::Out::new();
    let full = b"GET /m/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /m/2";
    let v = r.on_message(&7, &conn(), &full[..10], &mut out);
    assert_eq!(v, Verdict::NEED_MORE);
    let v = r.on_message(&7, &conn(), full, &mut out);
    assert_eq!(v, Verdict::defer(full.len() - 8));
    assert!(out.is_empty());
    let small = router().limits(LIMITS);
    let v = small.on_message(
        &7,
        &conn(),
        b"POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n",
        &mut out,
    );
    assert_eq!(v.action, crate::Action::Close);
    let s = text(out);
    assert!(s.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{s}");
    assert!(s.contains("Connection: close\r\n"), "{s}");
    assert!(
        s.ends_with("{\"error\":\"request body too large\"}\n"),
        "{s}"
    );

    let inline = router().inline();
    let mut out = crate::Out::new();
    let v = inline.on_message(&7, &conn(), full, &mut out);
    assert_eq!(v, Verdict::done(full.len() - 8));
    assert!(text(out).starts_with("HTTP/1.1 200 OK"));

    // A draining host: the answer is the connection's last.
    let mut draining = conn();
    draining.draining = true;
    let mut out = crate::Out::new();
    let v = inline.on_message(&7, &draining, full, &mut out);
    assert_eq!(v, Verdict::close(full.len() - 8));
    let s = text(out);
    assert!(s.starts_with("HTTP/1.1 200 OK"), "{s}");
    assert!(s.contains("Connection: close\r\n"), "{s}");
}

#[test]
fn responses() {
    let mut out = RVec::new();
    Response::redirect(303, "/app/\r\nSet-Cookie: x=1")
        .set_cookie(
            &Cookie::new("author", "Ann; Max-Age=0")
                .path("/app")
                .max_age(60)
                .http_only()
                .same_site(SameSite::Lax),
        )
        .write(&mut out, true, true, false);
    let s = text(out);
    assert!(s.starts_with("HTTP/1.1 303 See Other\r\n"), "{s}");
    assert!(s.contains("Connection: keep-alive\r\n"), "{s}");
    assert!(s.contains("Location: /app/Set-Cookie: x=1\r\n"), "{s}");
    assert!(
        s.contains("Set-Cookie: author=Ann%3B%20Max-Age%3D0; Path=/app; Max-Age=60; HttpOnly; SameSite=Lax\r\n"),
        "{s}"
    );
    assert_eq!(Cookie::removal("a").to_string(), "a=; Max-Age=0");
}

#[test]
#[should_panic(expected = "not an HTTP token")]
fn header_names_are_checked() {
    let _ = Response::new(200).header("Bad Name", "x");
}

#[test]
fn html_escapes() {
    assert_eq!(escape("plain"), Cow::Borrowed("plain"));
    assert_eq!(
        escape("<script>alert('x') & \"y\"</script>"),
        "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
    );
    let mut list = Html::new();
    for item in ["<a>", "b&c"] {
        list.markup("<li>").push(item).markup("</li>");
    }
    let page = render(
        "<title>{{title}}</title><ul>{{ items }}</ul><p>{{n}}</p>",
        &[("title", &"A \"board\""), ("items", &list), ("n", &42u64)],
    );
    assert_eq!(
        page.as_str(),
        "<title>A &quot;board&quot;</title><ul><li>&lt;a&gt;</li><li>b&amp;c</li></ul><p>42</p>"
    );
}

#[test]
#[should_panic(expected = "no value for {{missing}}")]
fn render_needs_every_value() {
    render("{{missing}}", &[]);
}
