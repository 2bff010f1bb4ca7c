//! The command line: `--help`, the single-dash `-port` / `-threads` forms
//! and their `--` twins.

use crate::common;

use std::process::Command;

use common::{free_port, Server, ServerBuilder, BIN, INDEX_HTML};

/// Whether `text` has `flag` not preceded by another `-` (so `-port` does
/// not match inside `--port`).
fn has_single_dash(text: &str, flag: &str) -> bool {
    text.match_indices(flag)
        .any(|(i, _)| i == 0 || text.as_bytes()[i - 1] != b'-')
}

#[test]
fn help_lists_the_options() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "--help exit status {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--threads",
        "--bind",
        "--modules",
        "--config",
        "--data-dir",
    ] {
        assert!(text.contains(flag), "--help does not list {flag}:\n{text}");
    }
    for flag in ["-port", "-threads"] {
        assert!(
            has_single_dash(&text, flag),
            "--help does not list the single-dash {flag}:\n{text}"
        );
    }
}

#[test]
fn single_dash_port_and_threads() {
    let port = free_port();
    let p = port.to_string();
    let s = ServerBuilder::new(&["http"])
        .cli(&["-port", &p, "--bind", "127.0.0.1", "-threads", "3"])
        .start();
    assert_eq!(s.addr.port(), port);
    assert_eq!(s.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert_eq!(s.status().host_field("threads"), 3);
}

#[test]
fn double_dash_port_and_threads() {
    let port = free_port();
    let p = port.to_string();
    let s = ServerBuilder::new(&["http"])
        .cli(&["--port", &p, "--bind", "127.0.0.1", "--threads", "5"])
        .start();
    assert_eq!(s.addr.port(), port);
    assert_eq!(s.get("/").text(), INDEX_HTML);
    assert_eq!(s.status().host_field("threads"), 5);
}

#[test]
fn port_zero_prints_the_real_port() {
    let s = Server::start(&["http"]);
    assert_ne!(s.addr.port(), 0);
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn bad_option_fails() {
    let out = Command::new(BIN)
        .arg("--no-such-option")
        .output()
        .expect("run switchyard");
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty(), "no error message for a bad option");
}
