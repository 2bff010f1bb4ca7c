//! The test client [`Rpc`] (`common/rpc.rs`) against a scripted peer on
//! loopback, not the server: what it keeps while it waits, in which order
//! it hands it out, and that a wrong or missing answer fails with what was
//! received instead of hanging. The rpc tests' assertions are only as good
//! as this client.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// One step of a scripted peer: it reads `requests` lines, waits `pause`,
/// then writes `bytes`.
struct Step {
    requests: usize,
    pause: Duration,
    bytes: String,
}

/// A step that answers `requests` lines at once with `lines`, each ended
/// by a newline.
fn answer(requests: usize, lines: &[&str]) -> Step {
    Step {
        requests,
        pause: Duration::ZERO,
        bytes: lines.iter().map(|l| format!("{l}\n")).collect(),
    }
}

/// A peer that accepts one connection and plays `steps`. After the last
/// one it closes the connection at once (`close`) or when the client does.
fn scripted(steps: Vec<Step>, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        let mut line = String::new();
        for step in steps {
            for _ in 0..step.requests {
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
            }
            thread::sleep(step.pause);
            if out.write_all(step.bytes.as_bytes()).is_err() {
                return;
            }
        }
        while !close && reader.read_line(&mut line).unwrap_or(0) > 0 {}
    });
    addr
}

/// A client of a peer that answers its first `requests` lines with
/// `lines`, then waits for the client to close.
fn answered(requests: usize, lines: &[&str]) -> Rpc {
    Rpc::connect(scripted(vec![answer(requests, lines)], false))
}

/// The message of the panic `f` ends in.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let e = std::panic::catch_unwind(f).expect_err("expected a panic");
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn notifications_before_a_reply_are_kept_in_order() {
    let mut c = answered(
        1,
        &[
            r#"{"jsonrpc":"2.0","method":"a","params":1}"#,
            r#"{"jsonrpc":"2.0","method":"b","params":2}"#,
            r#"{"jsonrpc":"2.0","method":"a","params":3}"#,
            r#"{"jsonrpc":"2.0","result":"pong","id":1}"#,
            r#"{"jsonrpc":"2.0","method":"a","params":4}"#,
        ],
    );
    assert_eq!(c.ok("sys.ping", json!([])), "pong");
    let wait = Duration::from_secs(5);
    assert_eq!(c.notification("a", wait), 1);
    assert_eq!(c.notification("a", wait), 3, "past the kept b");
    assert_eq!(c.notification("a", wait), 4, "read from the socket");
    assert_eq!(c.notification("b", wait), 2);
    assert!(c.try_notification("a", Duration::from_millis(50)).is_none());
}

#[test]
fn replies_read_while_waiting_for_a_notification_are_kept() {
    let mut c = answered(
        2,
        &[
            r#"{"jsonrpc":"2.0","result":"first","id":1}"#,
            r#"[{"jsonrpc":"2.0","result":1,"id":"x"}]"#,
            r#"{"jsonrpc":"2.0","method":"n","params":{"k":"v"}}"#,
        ],
    );
    let id = c.start("m", json!([]));
    c.send_line(r#"[{"jsonrpc":"2.0","method":"m","id":"x"}]"#);
    assert_eq!(
        c.notification("n", Duration::from_secs(5)),
        json!({"k": "v"})
    );
    assert_eq!(c.reply_to(id)["result"], "first");
    assert_eq!(c.read()[0]["id"], "x", "the batch's answer, next in order");
    assert!(c.kept().is_empty());
}

#[test]
fn a_partial_line_survives_a_timeout() {
    let head = Step {
        requests: 0,
        pause: Duration::ZERO,
        bytes: r#"{"jsonrpc":"2.0","met"#.to_string(),
    };
    let tail = Step {
        requests: 0,
        pause: Duration::from_millis(300),
        bytes: "hod\":\"late\",\"params\":7}\n".to_string(),
    };
    let mut c = Rpc::connect(scripted(vec![head, tail], false));
    assert_eq!(c.try_notification("late", Duration::from_millis(50)), None);
    assert_eq!(c.notification("late", Duration::from_secs(5)), 7);
}

#[test]
fn a_wrong_reply_or_a_bad_line_fails_with_what_came() {
    let call_on = |steps: Vec<Step>, close: bool| {
        let addr = scripted(steps, close);
        panic_message(move || {
            Rpc::connect(addr).call("m", json!([]));
        })
    };
    let msg = call_on(
        vec![answer(1, &[r#"{"jsonrpc":"2.0","result":0,"id":7}"#])],
        false,
    );
    assert!(msg.contains("expected the reply to 1"), "{msg}");
    assert!(msg.contains(r#""id":7"#), "{msg}");

    let msg = call_on(vec![answer(1, &["not json"])], false);
    assert!(msg.contains("\"not json\" is not JSON"), "{msg}");

    let partial = Step {
        requests: 1,
        pause: Duration::ZERO,
        bytes: r#"{"jsonrpc":"2.0","method":"n","params":1}"#.to_string(),
    };
    let msg = call_on(vec![partial], true);
    assert!(msg.contains("connection closed"), "{msg}");
    assert!(
        msg.contains(r#"\"method\":\"n\""#),
        "shows the partial line: {msg}"
    );
}

#[test]
fn a_missing_notification_fails_in_bounded_time() {
    let other = r#"{"jsonrpc":"2.0","method":"other","params":1}"#;
    let mut c = answered(0, &[other]);
    let t = Instant::now();
    let msg = panic_message(std::panic::AssertUnwindSafe(|| {
        c.notification("wanted", Duration::from_millis(200));
    }));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(msg.contains("no wanted notification"), "{msg}");
    assert!(msg.contains("\"other\""), "shows what was kept: {msg}");
}
