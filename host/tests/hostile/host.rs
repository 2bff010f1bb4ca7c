//! Hostile clients against the host's I/O path: output budget, a proxy
//! connect that fails at once, timeouts for bytes nobody finished, the
//! descriptor limit, connection slots, routing of odd request lines, and
//! memory that large pushes leave behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{dead_addr, rss_kib, Client, EchoUpstream, Server, ServerBuilder, INDEX_HTML};

/// Waits until the server closes `c` (EOF or reset), up to `limit`;
/// returns how long it took.
fn time_to_close(c: &mut Client, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match c.stream.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Ok(start.elapsed()),
        }
    }
    Err(format!("still open after {limit:?}"))
}

/// One GET / on a fresh connection answered with the index page.
fn serves(s: &Server) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut c = Client::from_stream(stream);
    c.send_lenient(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.try_read_response(false)
        .is_ok_and(|r| r.status == 200 && r.text() == INDEX_HTML)
}

fn rpc_line(method: &str, params: &str, id: u64) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"params\":{params},\"id\":{id}}}\n")
}

/// Item 1: connections that pipeline `kv.get`s of a large value and never
/// read cannot grow the worker's memory past the output budget; another
/// client is answered meanwhile. (The host pauses the connection above
/// `max_output_buffer`; the rpc module stops answering at `out_limit`:
/// this needs both halves, the rpc one from the rpc work of the same
/// round. With an rpc module that ignores `out_limit` the one call that
/// answers every buffered line overshoots: about 510 MB here.)
#[test]
fn pipelined_large_replies_stay_within_the_output_budget() {
    let s = ServerBuilder::new(&["rpc"]).tag("budget").start();
    let pid = s.worker_pid();
    // 256 KB values and 500 lines per connection keep the worst case (a
    // module answering every buffered line in one call) near 512 MB.
    let value = "v".repeat(256 * 1024);
    let mut setter = s.connect();
    setter.send(
        rpc_line(
            "kv.set",
            &format!("{{\"key\":\"big\",\"value\":\"{value}\"}}"),
            1,
        )
        .as_bytes(),
    );
    assert!(setter.read_line().contains("\"result\""));
    let start = rss_kib(pid);

    let get = rpc_line("kv.get", "[\"big\"]", 7);
    let burst = get.repeat(500);
    let mut hogs = Vec::new();
    for _ in 0..4 {
        let mut c = s.connect();
        c.send_lenient(burst.as_bytes());
        hogs.push(c);
    }
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut other = s.connect();
    let t = Instant::now();
    other.send(rpc_line("kv.get", "[\"big\"]", 9).as_bytes());
    let answer = other.read_line();
    let latency = t.elapsed();
    peak = peak.max(rss_kib(pid));
    eprintln!(
        "output budget: RSS {} MB at start, peak {} MB with 4 x 500 pipelined 256 KB kv.get; \
         another client's kv.get answered in {latency:?}",
        start / 1024,
        peak / 1024
    );
    assert!(answer.contains("\"id\":9"), "other client: {answer:.200}");
    assert!(
        peak < start + 64 * 1024,
        "worker RSS grew from {} MB to {} MB",
        start / 1024,
        peak / 1024
    );
    drop(hogs);
}

/// Item 2: a proxy route whose upstream connect fails at once
/// (`224.0.0.1`, refused by the kernel before any socket exists), and one
/// to a closed port, tell or close the client, and every event loop keeps
/// serving afterwards; no loop panicked.
#[test]
fn failed_proxy_connects_leave_every_loop_serving() {
    let dead = dead_addr();
    let s = ServerBuilder::new(&["http", "proxy"])
        .tag("proxyfail")
        .server("event_loops = 4")
        .toml(&format!(
            "[modules.proxy]\nretries = 2\n\n\
             [[modules.proxy.routes]]\nprefix = \"MCAST\"\nupstreams = [\"224.0.0.1:7001\"]\n\n\
             [[modules.proxy.routes]]\nprefix = \"DEAD\"\nupstreams = [\"{dead}\"]\n"
        ))
        .start();
    let loops = s.status().host_field("loops");
    for i in 0..32 {
        let mut c = s.connect();
        c.send_lenient(if i % 2 == 0 {
            b"MCAST hello\n"
        } else {
            b"DEAD hello\n"
        });
        let mut got = Vec::new();
        let _ = c.stream.read_to_end(&mut got);
    }
    let st = s.status();
    assert_eq!(st.host_field("loops"), loops);
    // With SO_REUSEPORT the kernel spreads connections across all loops:
    // a dead loop would leave some of these unanswered.
    let answered = (0..64).filter(|_| serves(&s)).count();
    let log = s.log();
    assert!(!log.contains("panicked"), "a thread panicked:\n{log}");
    assert!(
        log.contains("224.0.0.1:7001"),
        "the connect did not fail:\n{log}"
    );
    assert_eq!(
        answered, 64,
        "connections answered after the failed proxies"
    );
}

/// Item 5: a connection that sends nothing is closed after
/// `first_bytes_timeout_ms`, not the (much longer) idle timeout.
#[test]
fn silent_connection_closed_after_first_bytes_timeout() {
    let s = ServerBuilder::new(&["http"])
        .tag("silent")
        .server("first_bytes_timeout_ms = 500")
        .server("idle_timeout_ms = 60000")
        .start();
    let mut c = s.connect();
    let took = time_to_close(&mut c, Duration::from_secs(5)).expect("silent connection");
    eprintln!("silent connection closed after {took:?} (first_bytes_timeout_ms = 500)");
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    // A keep-alive connection that was served is idle, not silent.
    let mut k = s.connect();
    k.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(k.read_response(false).status, 200);
    assert!(time_to_close(&mut k, Duration::from_secs(2)).is_err());
}

/// Item 5: a partial message the module waits on (NeedMore) counts against
/// the message timeout, on a fresh connection and on one a module keeps
/// (a bus subscriber with half a JSON-RPC line, which the rpc module of
/// the same round leaves in the host's buffer instead of keeping it).
#[test]
fn partial_messages_count_against_the_message_timeout() {
    let s = ServerBuilder::new(&["http", "rpc"])
        .tag("partial")
        .server("header_timeout_ms = 1000")
        .server("idle_timeout_ms = 60000")
        .start();
    let mut h = s.connect();
    h.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    let took = time_to_close(&mut h, Duration::from_secs(5)).expect("partial HTTP head");
    eprintln!("partial HTTP head closed after {took:?} (header_timeout_ms = 1000)");

    let mut sub = s.connect();
    sub.send(rpc_line("bus.subscribe", "{\"topics\":[\"t\"]}", 1).as_bytes());
    assert!(sub.read_line().contains("\"result\""));
    sub.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\"");
    let took = time_to_close(&mut sub, Duration::from_secs(5)).expect("kept partial rpc line");
    eprintln!("partial line on a kept connection closed after {took:?}");
}

/// Item 6: the descriptor limit is raised and logged, `max_connections`
/// is clamped to it, and running out of descriptors in `accept` backs off
/// with a few log lines instead of one per event.
#[test]
fn descriptor_exhaustion_backs_off() {
    let s = ServerBuilder::new(&["http"])
        .tag("emfile")
        .server("max_connections = 100000000")
        .start();
    let log = s.log();
    assert!(log.contains("descriptor limit (RLIMIT_NOFILE)"), "{log}");
    assert!(
        log.contains("max_connections 100000000 is more than"),
        "{log}"
    );

    let pid = s.worker_pid();
    let lim = libc::rlimit {
        rlim_cur: 96,
        rlim_max: 96,
    };
    // SAFETY: prlimit on a child process we own; `lim` is valid.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(c) = TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)) {
            held.push(c);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let failures = s.log().matches("accept failed").count();
    eprintln!("accept failure log lines over 2 s of EMFILE: {failures}");
    assert!(failures >= 1, "no accept failure logged");
    assert!(failures <= 6, "{failures} accept failure lines in 2 s");
    drop(held);
    // Descriptors are back: the queued and new connections are served.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !serves(&s) {
        assert!(
            Instant::now() < deadline,
            "not serving after descriptors freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 6: a proxied session's upstream socket is a descriptor and counts
/// against `max_connections`: with 3 slots, one session (client and
/// upstream) and a second client leave no room for a second upstream.
#[test]
fn proxied_sessions_count_their_upstream_socket() {
    let up = EchoUpstream::start("UP");
    let s = ServerBuilder::new(&["fx_proxy"])
        .tag("proxyslots")
        .server("max_connections = 3")
        .toml(&format!(
            "[modules.fx_proxy]\nupstreams = [\"{}\"]\n",
            up.addr
        ))
        .start();
    let mut a = s.connect();
    a.send(b"PROXY-ME 1\n");
    assert_eq!(a.read_line(), "UP");
    assert_eq!(a.read_line(), "PROXY-ME 1");
    let mut b = s.connect();
    b.send_lenient(b"PROXY-ME 2\n");
    let mut got = Vec::new();
    let _ = b.stream.read_to_end(&mut got);
    assert_eq!(String::from_utf8_lossy(&got), "NO UPSTREAM\n");
    assert!(s
        .log()
        .contains("a proxied session's upstream socket counts"));
    // The first session goes on.
    a.send(b"ping\n");
    assert_eq!(a.read_line(), "ping");
}

/// Item 12: with every slot held by silent connections, a new client (and
/// `STATUS`) still gets in: the oldest idle connection is closed to make
/// room, and the eviction is logged with its peer.
#[test]
fn full_slots_close_idle_connections_for_newcomers() {
    let s = ServerBuilder::new(&["http"])
        .tag("slots")
        // One loop: eviction picks among the accepting loop's connections.
        .server("event_loops = 1")
        .server("max_connections = 1000")
        .server("first_bytes_timeout_ms = 60000")
        .start();
    let mut silent = Vec::new();
    for _ in 0..1000 {
        silent.push(s.connect());
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let st = s.status();
    assert!(st.host_field("conns") <= 1000);
    assert!(serves(&s), "a new client was locked out");
    eprintln!(
        "STATUS and a GET with 1000 of 1000 slots silent: {:?}",
        t.elapsed()
    );
    assert!(
        s.log()
            .contains("max_connections (1000) reached: closing conn"),
        "no eviction logged:\n{}",
        s.log()
    );
    // The oldest silent connection was the one closed.
    assert!(time_to_close(&mut silent[0], Duration::from_secs(2)).is_ok());
}

/// Item 12: `max_connections_per_ip` refuses a peer's excess connections
/// with a log line.
#[test]
fn connections_per_ip_are_limited() {
    let s = ServerBuilder::new(&["http"])
        .tag("perip")
        .server("max_connections_per_ip = 3")
        .start();
    let mut held: Vec<Client> = (0..3).map(|_| s.connect()).collect();
    for c in &mut held {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response(false).status, 200);
    }
    assert!(
        !serves(&s),
        "a fourth connection from the same address was served"
    );
    assert!(s.log().contains("max_connections_per_ip (3) reached"));
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(3);
    while !serves(&s) {
        assert!(Instant::now() < deadline, "slot not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Item 12 (memory side): incomplete large messages of all connections
/// together are bounded by `max_buffered_bytes`.
#[test]
fn partial_messages_are_bounded_globally() {
    let s = ServerBuilder::new(&["http", "fx_app"])
        .tag("buffered")
        .server("max_buffered_bytes = 4194304")
        .server("header_timeout_ms = 60000")
        .start();
    let pid = s.worker_pid();
    let start = rss_kib(pid);
    // A body the module waits for (NeedMore): the host holds it.
    let chunk = format!(
        "GET /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{}",
        "a".repeat(900 * 1024)
    );
    let mut conns = Vec::new();
    for _ in 0..16 {
        let mut c = s.connect();
        c.send_lenient(chunk.as_bytes());
        conns.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let closed = conns
        .iter_mut()
        .map(|c| time_to_close(c, Duration::from_millis(300)).is_ok())
        .filter(|&closed| closed)
        .count();
    let rss = rss_kib(pid);
    eprintln!(
        "16 x 900 KB partial bodies, max_buffered_bytes = 4 MiB: {closed} closed, RSS {} -> {} MB",
        start / 1024,
        rss / 1024
    );
    assert!(closed >= 10, "only {closed} of 16 closed");
    assert!(s.log().contains("max_buffered_bytes"));
    assert!(serves(&s));
}

/// Item 13: an absolute-form request line is routed by its path (to the
/// module bound to `GET /app/`, not the static one), and a request line
/// that matches nothing (tabs) gets `400` with `Connection: close`.
#[test]
fn absolute_form_routed_by_path_and_malformed_lines_answered() {
    let s = ServerBuilder::new(&["http", "fx_app"])
        .tag("absform")
        .start();
    let r =
        s.request("GET http://x/app/api/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("app:"), "went to {:?}", r.text());
    let r = s.request("GET http://x/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.text(), INDEX_HTML);

    let mut c = s.connect();
    c.send(b"GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.expect_closed(Duration::from_secs(2)).is_ok());
}

/// Item 11: large pushes to one subscriber that reads everything do not
/// leave memory behind: three runs of 100 x 900 KB, RSS back within 50 MB
/// of the start after each. (264 MiB in all: keeping a fifth of each
/// message breaks the bound by the last run.)
#[test]
fn large_pushes_leave_no_memory_behind() {
    let s = ServerBuilder::new(&["rpc"])
        .tag("pushrss")
        .server("max_push_backlog = 268435456")
        .start();
    let pid = s.worker_pid();
    let sub = TcpStream::connect(s.addr).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = sub.try_clone().unwrap();
    w.write_all(rpc_line("bus.subscribe", "{\"topics\":[\"big\"]}", 1).as_bytes())
        .unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, sub);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"result\""), "{line}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || loop {
        let mut l = Vec::new();
        match reader.read_until(b'\n', &mut l) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(l.len()).is_err() {
                    return;
                }
            }
        }
    });

    let data = "d".repeat(900 * 1024);
    let publish = rpc_line(
        "bus.publish",
        &format!("{{\"topic\":\"big\",\"data\":\"{data}\"}}"),
        2,
    );
    let mut publisher = s.connect();
    let start = rss_kib(pid);
    let mut after = Vec::new();
    for _ in 0..3 {
        for i in 0..100 {
            publisher.send(publish.as_bytes());
            let reply = publisher.read_line();
            assert!(reply.contains("\"result\""), "publish {i}: {reply:.200}");
            let got = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("bus.message");
            assert!(got > 900 * 1024, "short message: {got} bytes");
        }
        std::thread::sleep(Duration::from_millis(500));
        after.push(rss_kib(pid));
    }
    eprintln!(
        "RSS after 3 runs of 100 x 900 KB pushes to one reading subscriber: start {} MB, then {:?} MB",
        start / 1024,
        after.iter().map(|k| k / 1024).collect::<Vec<_>>()
    );
    for (run, rss) in after.iter().enumerate() {
        assert!(
            *rss < start + 50 * 1024,
            "run {}: RSS {} MB, start {} MB",
            run + 1,
            rss / 1024,
            start / 1024
        );
    }
}
