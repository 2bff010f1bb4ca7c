//! Hostile clients: rpc (raw TCP JSON-RPC and the bus). Reply
//! amplification against the output budget (item 1), unfinished lines
//! held by the host and cut by the message timeout (items 5 and 12),
//! subscription limits and one copy per subscriber (item 4), memory of big
//! pushes (item 11), and waits that are not hangs (item 9). Each test
//! prints the numbers it measures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const MIB: u64 = 1024 * 1024;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn request(method: &str, params: Value, id: u64) -> String {
    let mut line =
        json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string();
    line.push('\n');
    line
}

/// Sends one request and returns its reply (skipping pushed messages).
fn call(c: &mut Client, method: &str, params: Value) -> Value {
    c.send(request(method, params, 1).as_bytes());
    loop {
        let line = c.read_line();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"));
        if v.get("id").is_some() {
            return v;
        }
    }
}

fn ok(c: &mut Client, method: &str, params: Value) -> Value {
    let shown: String = params.to_string().chars().take(200).collect();
    let v = call(c, method, params);
    assert!(v.get("error").is_none(), "{method} {shown}: {v}");
    v["result"].clone()
}

/// Writes `bytes` on a thread (the server may stop reading); the thread
/// ends when the write completes or the connection is closed.
fn send_in_background(c: &Client, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    let mut stream = c.stream.try_clone().unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    thread::spawn(move || {
        let _ = stream.write_all(&bytes);
    })
}

/// Item 1: 16 connections each pipeline 5,000 `kv.get` of a 1 MB value
/// and never read. The module stops answering at the host's output budget
/// and the host stops feeding it, so the worker's memory stays bounded,
/// and another client is still answered meanwhile.
#[test]
fn pipelined_reads_of_a_big_value_stay_within_the_output_budget() {
    let s = ServerBuilder::new(&["rpc"]).tag("hostile-amplify").start();
    let worker = s.worker_pid();
    let mut admin = s.connect();
    let big = "v".repeat(1_000_000);
    assert_eq!(ok(&mut admin, "kv.set", json!(["big", big])), true);
    assert_eq!(ok(&mut admin, "kv.set", json!(["small", 7])), true);
    drop(big);
    let before = rss_bytes(worker);

    let gets: String = (0..5000)
        .map(|i| request("kv.get", json!(["big"]), i))
        .collect();
    let mut clients = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..16 {
        let c = s.connect();
        writers.push(send_in_background(&c, gets.clone().into_bytes()));
        clients.push(c);
    }
    // Watch the worker for a few seconds; give up at once past the bound
    // (a worker without the budget grows by gigabytes a second).
    let bound = 256 * MIB;
    let mut peak = 0;
    let mut other = s.connect();
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let now = rss_bytes(worker);
        peak = peak.max(now);
        if now > bound {
            // SAFETY: kill(2) on the worker this test started.
            unsafe { libc::kill(worker as i32, libc::SIGKILL) };
            panic!(
                "worker RSS {:.0} MiB passed {:.0} MiB (from {:.0} MiB)",
                mib(now),
                mib(bound),
                mib(before)
            );
        }
        if answered < 5 && started.elapsed() > Duration::from_millis(500 * (answered + 1)) {
            let t = Instant::now();
            assert_eq!(ok(&mut other, "kv.get", json!(["small"])), 7);
            answered += 1;
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "slow: {:?}",
                t.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(answered, 5);
    println!(
        "amplification: 16 x 5,000 kv.get of 1 MB, unread: worker RSS {:.0} MiB before, peak {:.0} MiB",
        mib(before),
        mib(peak)
    );
    // The clients were served as far as they read: each read is answered.
    let mut c = clients.pop().unwrap();
    let first: Value = serde_json::from_str(&c.read_line()).unwrap();
    assert_eq!(first["id"], 0);
    assert_eq!(first["result"].as_str().map(str::len), Some(1_000_000));
    drop(clients);
    drop(c);
    drop(s);
    for w in writers {
        w.join().unwrap();
    }
}

/// The start of a JSON-RPC line of `len` bytes, without its end.
fn partial_line(len: usize) -> Vec<u8> {
    let mut v = br#"{"jsonrpc":"2.0","method":"kv.set","params":["k",""#.to_vec();
    v.resize(len, b'x');
    v
}

/// Items 5 and 12: 200 connections each send 1 MB of a line and stall.
/// The bytes stay in the host's buffer (one per connection, bounded by
/// `max_message_size`), nothing is copied per arrival, and the message
/// timeout closes every one of them — also a connection that trickles a
/// few bytes at a time — long before the idle timeout would.
#[test]
fn unfinished_lines_are_bounded_and_closed_by_the_message_timeout() {
    let timeout_ms = 6000;
    let s = ServerBuilder::new(&["rpc"])
        .tag("hostile-partial")
        .server(&format!("header_timeout_ms = {timeout_ms}"))
        .server("idle_timeout_ms = 120000")
        .start();
    let worker = s.worker_pid();
    let mut probe = s.connect();
    assert_eq!(ok(&mut probe, "sys.ping", json!([])), "pong");
    let before = rss_bytes(worker);
    let n = 200;
    let line = partial_line(1_000_000);
    let started = Instant::now();
    let mut trickler = s.connect();
    trickler.send(&line[..100]);
    let trickle = {
        let mut stream = trickler.stream.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..200 {
                thread::sleep(Duration::from_millis(100));
                if stream.write_all(b"xxxxxxxxxx").is_err() {
                    return true; // closed
                }
            }
            false
        })
    };
    let mut clients: Vec<Client> = (0..n)
        .map(|_| {
            let mut c = s.connect();
            c.send(&line);
            c
        })
        .collect();
    let sent = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let held = rss_bytes(worker);
    let per_conn = held.saturating_sub(before) / n as u64;
    println!(
        "partial lines: {n} x 1 MB sent in {sent:?}; worker RSS {:.0} MiB before, {:.0} MiB holding them ({:.2} MiB per connection)",
        mib(before),
        mib(held),
        mib(per_conn)
    );
    // One host buffer per connection (max_message_size, 1 MiB), no copies.
    assert!(
        held < before + n as u64 * MIB * 5 / 4,
        "RSS {:.0} MiB for {n} partial lines (from {:.0} MiB)",
        mib(held),
        mib(before)
    );
    // Nobody got an answer; the message timeout closes them all.
    for (i, c) in clients.iter_mut().enumerate() {
        let left = Duration::from_millis(timeout_ms + 5000).saturating_sub(started.elapsed());
        c.expect_closed(left.max(Duration::from_millis(100)))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
    trickler
        .expect_closed(Duration::from_millis(timeout_ms + 5000).saturating_sub(started.elapsed()))
        .unwrap_or_else(|e| panic!("the trickling connection: {e}"));
    let closed_after = started.elapsed();
    assert!(trickle.join().unwrap(), "the trickler was never cut off");
    assert!(
        closed_after >= Duration::from_millis(timeout_ms - 1000),
        "closed after {closed_after:?}, before the message timeout"
    );
    thread::sleep(Duration::from_millis(300));
    println!(
        "partial lines: all {n} (and the trickler) closed by the message timeout after {closed_after:?}; worker RSS then {:.0} MiB",
        mib(rss_bytes(worker))
    );
    // The server is fine.
    let mut fresh = s.connect();
    assert_eq!(ok(&mut fresh, "sys.ping", json!([])), "pong");
}

/// The 2,000-connection version of the test above, for the numbers in the
/// hardening note (about 2 GB of client data: run it by hand with
/// `--ignored`). Prints the worker's RSS while the lines are held and
/// which limit closes them.
#[test]
#[ignore = "measurement: 2,000 x 1 MB; run by hand"]
fn unfinished_lines_on_2000_connections() {
    let s = ServerBuilder::new(&["rpc"])
        .tag("hostile-partial-2000")
        .server("header_timeout_ms = 20000")
        .start();
    let worker = s.worker_pid();
    let before = rss_bytes(worker);
    let line = partial_line(1_000_000);
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match TcpStream::connect(s.addr) {
            Ok(mut c) => {
                c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                if c.write_all(&line).is_err() {
                    refused += 1;
                }
                clients.push(c);
            }
            Err(_) => refused += 1,
        }
    }
    thread::sleep(Duration::from_millis(500));
    let held = rss_bytes(worker);
    println!(
        "2000 partial lines: sent in {:?} ({refused} refused or cut); worker RSS {:.0} MiB before, {:.0} MiB holding them",
        started.elapsed(),
        mib(before),
        mib(held)
    );
    let mut open = 0;
    for c in &mut clients {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    println!(
        "2000 partial lines: {open} still open after {:?}",
        started.elapsed()
    );
    assert!(held < before + 2000 * MIB * 5 / 4);
}

/// Item 4: the per-connection and the server-wide pattern limits answer
/// -32031 naming the limit; a subscriber whose patterns overlap gets one
/// copy of each message; 51,200 patterns that do not match cost a
/// publisher nothing it could notice.
#[test]
fn subscription_limits_and_one_copy_per_subscriber() {
    let s = ServerBuilder::new(&["rpc"])
        .tag("hostile-bus")
        .toml("[modules.rpc]\nmax_subscriptions_total = 52000")
        .start();
    let mut sub = s.connect();
    assert_eq!(
        ok(&mut sub, "bus.subscribe", json!(["t.x", "t.*", "t.>", ">"])),
        4
    );
    let mut p = s.connect();
    let publish_1000 = |p: &mut Client| {
        let text: String = (0..1000)
            .map(|i| request("bus.publish", json!({"topic": "t.x", "data": i}), i))
            .collect();
        let t = Instant::now();
        p.send(text.as_bytes());
        for i in 0..1000 {
            let v: Value = serde_json::from_str(&p.read_line()).unwrap();
            assert_eq!(v["id"], i);
            assert_eq!(v["result"], 1, "one recipient: {v}");
        }
        t.elapsed()
    };
    let read_1000 = |sub: &mut Client| {
        for i in 0..1000 {
            let v: Value = serde_json::from_str(&sub.read_line()).unwrap();
            assert_eq!(v["method"], "bus.message");
            assert_eq!(v["params"]["data"], i, "one copy each, in order");
        }
        thread::sleep(Duration::from_millis(100));
        assert!(!sub.has_data(), "more than one copy of a message");
    };
    let alone = publish_1000(&mut p);
    read_1000(&mut sub);

    // 50 connections with 1,024 patterns each, none matching `t.x`.
    let holders: Vec<Client> = (0..50)
        .map(|h| {
            let mut c = s.connect();
            let patterns: Vec<String> = (0..1024)
                .map(|i| match i % 4 {
                    0 => format!("t.other{h}x{i}"),
                    1 => format!("t.x.o{h}x{i}"),
                    2 => format!("*.o{h}x{i}.>"),
                    _ => format!("o{h}x{i}.*"),
                })
                .collect();
            assert_eq!(ok(&mut c, "bus.subscribe", json!(patterns)), 1024);
            c
        })
        .collect();
    let crowded = publish_1000(&mut p);
    read_1000(&mut sub);
    println!(
        "bus: 1,000 pipelined publishes to one subscriber took {alone:?} with no other patterns, \
         {crowded:?} with 50 x 1,024 others"
    );

    // Per connection: 1,024 (max_subscriptions).
    let mut greedy = s.connect();
    let too_many: Vec<String> = (0..1025).map(|i| format!("g.{i}")).collect();
    let v = call(&mut greedy, "bus.subscribe", json!(too_many));
    assert_eq!(v["error"]["code"], -32031, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_subscriptions"),
        "{v}"
    );
    // Server-wide: 52,000 (max_subscriptions_total); 51,204 are taken.
    let v = call(
        &mut greedy,
        "bus.subscribe",
        json!((0..1000).map(|i| format!("g.{i}")).collect::<Vec<_>>()),
    );
    assert_eq!(v["error"]["code"], -32031, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_subscriptions_total"),
        "{v}"
    );
    assert_eq!(
        ok(
            &mut greedy,
            "bus.subscribe",
            json!((0..796).map(|i| format!("g.{i}")).collect::<Vec<_>>())
        ),
        796
    );
    // Closing the holders gives their patterns back.
    drop(holders);
    let st = s.wait_status(Duration::from_secs(5), |st| {
        st.expect("rpc").field("subscriptions") == Some("800")
    });
    assert_eq!(
        st.expect("rpc").field("subscribers"),
        Some("2"),
        "{}",
        st.raw
    );
    let mut late = s.connect();
    assert_eq!(
        ok(
            &mut late,
            "bus.subscribe",
            json!((0..1000).map(|i| format!("h.{i}")).collect::<Vec<_>>())
        ),
        1000,
        "room again"
    );
}

/// Reads `bus.message` lines until `n` arrived; returns how many bytes.
fn read_messages(c: &mut Client, n: usize) -> usize {
    let mut bytes = 0;
    for _ in 0..n {
        let line = c.read_line();
        assert!(line.starts_with(r#"{"jsonrpc":"2.0","method":"bus.message""#));
        bytes += line.len();
    }
    bytes
}

/// Item 11: 100 publishes of 900 KB to one subscriber that reads them all
/// (each publish waits until the one before it arrived), three times over:
/// nothing of them stays allocated. (The rounds carry 264 MiB in all, so
/// keeping a fifth of each message breaks the 50 MiB bound; 300 a round
/// caught leaks down to a fifteenth, at three times the run time.)
#[test]
fn big_messages_to_a_reading_subscriber_do_not_stay_allocated() {
    const ROUND: usize = 100;
    let s = ServerBuilder::new(&["rpc"]).tag("hostile-push-mem").start();
    let worker = s.worker_pid();
    let mut sub = s.connect();
    assert_eq!(ok(&mut sub, "bus.subscribe", json!(["big"])), 1);
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        thread::spawn(move || {
            for _ in 0..3 * ROUND {
                assert!(read_messages(&mut sub, 1) > 900 * 1024);
                received.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut p = s.connect();
    let data = "y".repeat(900 * 1024);
    let line = request("bus.publish", json!({"topic": "big", "data": data}), 1);
    drop(data);
    let start = rss_bytes(worker);
    let mut after = Vec::new();
    let mut sent = 0;
    for _ in 0..3 {
        for _ in 0..ROUND {
            p.send(line.as_bytes());
            let v: Value = serde_json::from_str(&p.read_line()).unwrap();
            assert_eq!(v["result"], 1, "{v}");
            sent += 1;
            let deadline = Instant::now() + Duration::from_secs(10);
            while received.load(Ordering::SeqCst) < sent {
                assert!(Instant::now() < deadline, "message {sent} never arrived");
                thread::sleep(Duration::from_micros(200));
            }
        }
        thread::sleep(Duration::from_millis(300));
        after.push(rss_bytes(worker));
    }
    reader.join().unwrap();
    println!(
        "push memory: 3 x {ROUND} x 900 KB to one reading subscriber: worker RSS {:.0} MiB at the start, then {}",
        mib(start),
        after
            .iter()
            .map(|r| format!("{:.0} MiB", mib(*r)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let last = *after.last().unwrap();
    assert!(
        last < start + 50 * MIB,
        "RSS grew from {:.0} MiB to {:.0} MiB",
        mib(start),
        mib(last)
    );
}

/// Item 11: one 900 KB publish to 300 subscribers that do not read is
/// built once and shared, not copied for each of them.
#[test]
fn one_big_message_to_300_idle_subscribers_is_shared() {
    let s = ServerBuilder::new(&["rpc"])
        .tag("hostile-push-wide")
        .start();
    let worker = s.worker_pid();
    let mut subs: Vec<Client> = (0..300)
        .map(|_| {
            let mut c = s.connect();
            assert_eq!(ok(&mut c, "bus.subscribe", json!(["wide"])), 1);
            c
        })
        .collect();
    let mut p = s.connect();
    let data = "w".repeat(900 * 1024);
    let line = request("bus.publish", json!({"topic": "wide", "data": data}), 1);
    drop(data);
    let before = rss_bytes(worker);
    p.send(line.as_bytes());
    let v: Value = serde_json::from_str(&p.read_line()).unwrap();
    assert_eq!(v["result"], 300, "{v}");
    thread::sleep(Duration::from_millis(500));
    let after = rss_bytes(worker);
    println!(
        "push memory: one 900 KB publish to 300 idle subscribers: worker RSS {:.0} MiB -> {:.0} MiB",
        mib(before),
        mib(after)
    );
    // 300 separate copies would be 264 MiB.
    assert!(
        after < before + 100 * MIB,
        "RSS grew from {:.0} MiB to {:.0} MiB",
        mib(before),
        mib(after)
    );
    // Every subscriber still gets the message when it reads.
    for c in subs.iter_mut().step_by(50) {
        assert!(read_messages(c, 1) > 900 * 1024);
    }
}

/// Item 9: a request that waits for the database's other owner (a second
/// server in standby) waits inside `Host::wait`, so a short `hang_kill_ms`
/// does not kill the waiting worker; the request is answered once the
/// first server lets go.
#[test]
fn waiting_for_the_database_is_not_a_hang() {
    let dir = temp_dir("hostile-standby");
    let toml = format!(
        "[modules.rpc]\ndb = \"{}\"",
        dir.join("kv.sqlite").display()
    );
    let mut a = ServerBuilder::new(&["rpc"])
        .tag("hostile-standby-a")
        .toml(&toml)
        .start();
    let mut ca = a.connect();
    assert_eq!(ok(&mut ca, "kv.set", json!(["owner", "a"])), true);
    let b = ServerBuilder::new(&["rpc"])
        .tag("hostile-standby-b")
        .server("hang_warn_ms = 100")
        .server("hang_kill_ms = 300")
        .toml(&toml)
        .start();
    let b_worker = b.worker_pid();
    let waiting = {
        let addr = b.addr;
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            call(&mut c, "kv.get", json!(["owner"]))
        })
    };
    // Well past hang_kill_ms while the request waits.
    thread::sleep(Duration::from_millis(1500));
    assert!(!waiting.is_finished(), "answered while a owns the data");
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)).is_some());
    let v = waiting.join().unwrap();
    assert_eq!(v["result"], "a", "{v}");
    assert_eq!(b.worker_pid(), b_worker, "the waiting worker was replaced");
    assert!(
        !b.log().contains("killing the worker"),
        "the leader took the wait for a hang"
    );
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}
