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

/// A peer that accepts one connection and, for each step, first reads the
/// number of request lines it asks for, then writes its bytes (waiting
/// the pause first). After the last step it closes the connection at once
/// (`close`) or when the client does.
fn scripted(steps: Vec<(usize, Duration, &'static str)>, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        for (requests, pause, bytes) in steps {
            for _ in 0..requests {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
            }
            thread::sleep(pause);
            if out.write_all(bytes.as_bytes()).is_err() {
                return;
            }
        }
        let mut rest = String::new();
        while !close && reader.read_line(&mut rest).unwrap_or(0) > 0 {}
    });
    addr
}

const NOW: Duration = Duration::ZERO;

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
    let addr = scripted(
        vec![(
            1,
            NOW,
            concat!(
                r#"{"jsonrpc":"2.0","method":"a","params":1}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"b","params":2}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"a","params":3}"#,
                "\n",
                r#"{"jsonrpc":"2.0","result":"pong","id":1}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"a","params":4}"#,
                "\n",
            ),
        )],
        false,
    );
    let mut c = Rpc::connect(addr);
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
    let addr = scripted(
        vec![(
            2,
            NOW,
            concat!(
                r#"{"jsonrpc":"2.0","result":"first","id":1}"#,
                "\n",
                r#"[{"jsonrpc":"2.0","result":1,"id":"x"}]"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"n","params":{"k":"v"}}"#,
                "\n",
            ),
        )],
        false,
    );
    let mut c = Rpc::connect(addr);
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
    let addr = scripted(
        vec![
            (0, NOW, r#"{"jsonrpc":"2.0","met"#),
            (
                0,
                Duration::from_millis(300),
                "hod\":\"late\",\"params\":7}\n",
            ),
        ],
        false,
    );
    let mut c = Rpc::connect(addr);
    assert_eq!(c.try_notification("late", Duration::from_millis(50)), None);
    assert_eq!(c.notification("late", Duration::from_secs(5)), 7);
}

#[test]
fn a_wrong_reply_or_a_bad_line_fails_with_what_came() {
    let addr = scripted(
        vec![(1, NOW, "{\"jsonrpc\":\"2.0\",\"result\":0,\"id\":7}\n")],
        false,
    );
    let msg = panic_message(|| {
        Rpc::connect(addr).call("m", json!([]));
    });
    assert!(msg.contains("expected the reply to 1"), "{msg}");
    assert!(msg.contains(r#""id":7"#), "{msg}");

    let addr = scripted(vec![(1, NOW, "not json\n")], false);
    let msg = panic_message(|| {
        Rpc::connect(addr).call("m", json!([]));
    });
    assert!(msg.contains("\"not json\" is not JSON"), "{msg}");

    let addr = scripted(
        vec![(1, NOW, r#"{"jsonrpc":"2.0","method":"n","params":1}"#)],
        true,
    );
    let msg = panic_message(|| {
        Rpc::connect(addr).call("m", json!([]));
    });
    assert!(msg.contains("connection closed"), "{msg}");
    assert!(
        msg.contains(r#"\"method\":\"n\""#),
        "shows the partial line: {msg}"
    );
}

#[test]
fn a_missing_notification_fails_in_bounded_time() {
    let addr = scripted(
        vec![(
            0,
            NOW,
            "{\"jsonrpc\":\"2.0\",\"method\":\"other\",\"params\":1}\n",
        )],
        false,
    );
    let mut c = Rpc::connect(addr);
    let t = Instant::now();
    let msg = panic_message(std::panic::AssertUnwindSafe(|| {
        c.notification("wanted", Duration::from_millis(200));
    }));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(msg.contains("no wanted notification"), "{msg}");
    assert!(msg.contains("\"other\""), "shows what was kept: {msg}");
}
