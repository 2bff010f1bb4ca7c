//! template_module without a host: requests in through
//! `module_api::testing::Harness`, responses out.

use module_api::testing::{json, Harness};
use module_api::Verdict;
use template_module::{manifest, start, Module};

fn module() -> Harness<Module> {
    Harness::start(manifest, start, json!({})).expect("starts")
}

#[test]
fn greets() {
    let h = module();
    let request = b"GET /template_module/ HTTP/1.1\r\nHost: t\r\n\r\n";
    let reply = h.send(request);
    assert_eq!(reply.verdict, Verdict::done(request.len()));
    let page = reply.http();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(page.text(), "hello from template_module");
}

#[test]
fn head_has_no_body() {
    let page = module()
        .send(b"HEAD /template_module/ HTTP/1.1\r\nHost: t\r\n\r\n")
        .http();
    assert_eq!(page.status, 200);
    let length = "hello from template_module".len().to_string();
    assert_eq!(page.header("content-length"), Some(length.as_str()));
    assert!(page.body.is_empty());
}

#[test]
fn unknown_paths_and_methods() {
    let h = module();
    let page = h
        .send(b"GET /template_module/nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .http();
    assert_eq!(page.status, 404);
    let page = h
        .send(b"POST /template_module/ HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .http();
    assert_eq!(page.status, 405);
    assert_eq!(page.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn waits_for_a_whole_request() {
    let reply = module().message(b"GET /template_module/ HTTP/1.1\r\nHo");
    assert_eq!(reply.verdict, Verdict::NEED_MORE);
    assert!(reply.out.is_empty());
}

#[test]
fn greeting_comes_from_config() {
    let h = Harness::start(manifest, start, json!({ "greeting": "hi" })).unwrap();
    let page = h
        .send(b"GET /template_module/ HTTP/1.1\r\nHost: t\r\n\r\n")
        .http();
    assert_eq!(page.text(), "hi");
    let refused = Harness::start(manifest, start, json!({ "greeting": 5 }));
    assert_eq!(refused.err().as_deref(), Some("greeting must be a string"));
}

#[test]
fn manifest_binds_the_prefix_and_defers() {
    let m = manifest();
    assert_eq!(m.name.as_str(), "template_module");
    assert!(m.defers);
    let bindings: Vec<&[u8]> = m.bindings.iter().map(|b| b.as_slice()).collect();
    for b in [
        "GET /template_module/",
        "HEAD /template_module/",
        "POST /template_module/",
    ] {
        assert!(bindings.contains(&b.as_bytes()), "{b}");
    }
}
