//! Hot reload, end to end: the real `switchyard` binary, real module
//! libraries (the `fx_ver1`/`fx_ver2`, `fx_counter`, `fx_excl` ... fixtures),
//! real sockets.
//!
//! * 50 alternating v1/v2 reloads under continuous keep-alive load: no
//!   failed, malformed or stale response.
//! * exclusive mode: 503 + `Retry-After` while reloading, never a hang or a
//!   reset, 200 afterwards.
//! * state handoff across 10 reloads.
//! * bad files (wrong ABI, start error, start panic, truncated) refused with
//!   `ERR`, the running generation keeps serving.
//! * add / remove / re-add, 3 cycles; `--watch`; in-flight pool work
//!   finishing on the old generation; `retained=` accounting.
//!
//! Every wait is bounded by a count and a deadline, every socket read by
//! `IO_TIMEOUT`.

use crate::common;

use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The file stem every `fx_ver*` fixture is installed as.
const VER: &str = "fx_ver";

const GET_VER: &[u8] = b"GET /ver HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A server running fixture `fx_ver1` as `fx_ver.so` (plus `extra`).
fn ver_server(tag: &str, extra: &[&str]) -> Server {
    let s = ServerBuilder::new(extra)
        .tag(tag)
        .module_as("fx_ver1", VER)
        .start();
    let r = s.get("/ver");
    assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{r:?}");
    s
}

/// Asserts a `RELOAD <name>` reply is `OK <name> gen=<gen> v<version>`.
fn assert_reload_ok(reply: &str, name: &str, gen: u64, version: &str) {
    assert_eq!(
        reply.trim_end(),
        format!("OK {name} gen={gen} v{version}"),
        "RELOAD {name} reply"
    );
}

/// Fixture and version of `fx_ver` for a tag.
fn ver_fixture(tag: &str) -> (&'static str, &'static str) {
    match tag {
        "v1" => ("fx_ver1", "1.0.0"),
        "v2" => ("fx_ver2", "2.0.0"),
        _ => unreachable!(),
    }
}

/// Reads one HTTP response; any I/O error, timeout or malformed response
/// is returned as a description.
fn exchange(c: &mut Client, req: &[u8]) -> Result<Response, String> {
    c.stream.write_all(req).map_err(|e| format!("write: {e}"))?;
    c.try_read_response(false)
}

// ---------------------------------------------------------------------------

/// Shared between the load clients and the reloading thread.
struct Load {
    stop: AtomicBool,
    /// Even: no reload in progress, the version answering is known
    /// (`(epoch / 2) % 2 == 0` → v1, else v2). Odd: a reload is underway.
    epoch: AtomicU64,
    responses: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, who: usize, what: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 50 {
            f.push(format!("client {who}: {what}"));
        }
    }
}

/// One keep-alive client sending `GET /ver` until told to stop. Returns
/// how many `v1` and `v2` answers it got.
fn ver_client(addr: std::net::SocketAddr, who: usize, load: Arc<Load>) -> (u64, u64) {
    let (mut v1, mut v2) = (0u64, 0u64);
    let mut c = Client::connect(addr);
    let mut reconnects = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let e1 = load.epoch.load(Ordering::SeqCst);
        let r = exchange(&mut c, GET_VER);
        let e2 = load.epoch.load(Ordering::SeqCst);
        load.responses.fetch_add(1, Ordering::SeqCst);
        match r {
            Ok(r) => {
                let body = r.text();
                if r.status != 200 || (body != "v1" && body != "v2") {
                    load.fail(
                        who,
                        format!("unexpected response {} {body:?}", r.status_line),
                    );
                } else if r.header("connection").is_some_and(|v| v.contains("close")) {
                    load.fail(who, format!("keep-alive response says close: {r:?}"));
                } else {
                    let expected = if (e1 >> 1) & 1 == 0 { "v1" } else { "v2" };
                    if e1 == e2 && e1 & 1 == 0 && body != expected {
                        load.fail(
                            who,
                            format!(
                                "stale answer {body:?}: sent after reload #{} answered OK, \
                                 expected {expected:?}",
                                e1 / 2
                            ),
                        );
                    }
                    if body == "v1" {
                        v1 += 1
                    } else {
                        v2 += 1
                    }
                    continue;
                }
            }
            Err(e) => load.fail(who, format!("failed exchange: {e}")),
        }
        // After a failure the connection's state is unknown: start over.
        reconnects += 1;
        if reconnects > 20 {
            break;
        }
        c = Client::connect(addr);
    }
    (v1, v2)
}

#[test]
fn fifty_alternating_reloads_under_keepalive_load() {
    const CLIENTS: usize = 4;
    const RELOADS: u64 = 50;
    let s = ver_server("reload50", &[]);
    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        responses: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, load) = (s.addr, load.clone());
            thread::spawn(move || ver_client(addr, i, load))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last_tag = "v1";
    for k in 1..=RELOADS {
        // Let every client get a few answers from the current generation.
        let seen = load.responses.load(Ordering::SeqCst);
        while load.responses.load(Ordering::SeqCst) < seen + 2 * CLIENTS as u64 {
            assert!(
                Instant::now() < deadline,
                "load clients stopped making progress before reload #{k}; failures: {:?}",
                load.failures.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(1));
        }
        let tag = if k % 2 == 1 { "v2" } else { "v1" };
        let (fixture, version) = ver_fixture(tag);
        load.epoch.fetch_add(1, Ordering::SeqCst); // reload underway
        s.install_module_as(fixture, VER);
        let reply = s.admin("RELOAD fx_ver");
        assert_reload_ok(&reply, VER, k + 1, version);
        load.epoch.fetch_add(1, Ordering::SeqCst); // `tag` answers from now on
        last_tag = tag;
    }
    // A last stretch of load on the final generation.
    let seen = load.responses.load(Ordering::SeqCst);
    while load.responses.load(Ordering::SeqCst) < seen + 10 * CLIENTS as u64
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(1));
    }
    load.stop.store(true, Ordering::SeqCst);
    let counts: Vec<(u64, u64)> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed/malformed/stale responses, first ones: {failures:#?}",
        failures.len()
    );
    let (v1, v2) = counts.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    assert!(
        v1 > 0 && v2 > 0,
        "both versions must have answered: v1={v1} v2={v2}"
    );
    eprintln!("{RELOADS} reloads under load: {v1} x v1, {v2} x v2, per client {counts:?}");

    // Only the last version answers now, on new and on fresh connections.
    assert_eq!(last_tag, "v1", "50 alternations starting with v2 end on v1");
    for _ in 0..10 {
        let r = s.get("/ver");
        assert_eq!((r.status, r.text()), (200, last_tag.to_string()), "{r:?}");
    }
    let st = s.status();
    let m = st.expect(VER);
    assert_eq!(
        (m.gen, m.version.as_str()),
        (RELOADS + 1, "1.0.0"),
        "{}",
        m.line
    );
    assert_eq!(m.faults, 0, "{}", m.line);
}

// ---------------------------------------------------------------------------

#[derive(Default)]
struct ExclCounts {
    ok: u64,
    unavailable: u64,
    failures: Vec<String>,
}

/// Requests `GET /excl` until `stop`: keep-alive while answered 200,
/// reconnecting after each 503 (which closes the connection).
fn excl_client(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> ExclCounts {
    let mut n = ExclCounts::default();
    let req = b"GET /excl HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut c = Client::connect(addr);
    while !stop.load(Ordering::SeqCst) && n.failures.len() < 20 {
        let t0 = Instant::now();
        match exchange(&mut c, req) {
            Ok(r) if r.status == 200 && r.body == b"excl" => {
                n.ok += 1;
                continue;
            }
            Ok(r) if r.status == 503 => {
                if r.header("retry-after").is_none() {
                    n.failures.push(format!("503 without Retry-After: {r:?}"));
                } else {
                    n.unavailable += 1;
                }
                // The 503 closes the connection: it must be a clean close.
                if let Err(e) = c.expect_closed(IO_TIMEOUT) {
                    n.failures.push(format!("after the 503: {e}"));
                }
                // Retry soon, but not in a tight loop of new connections.
                thread::sleep(Duration::from_millis(5));
            }
            Ok(r) => n.failures.push(format!("unexpected response {r:?}")),
            Err(e) => n.failures.push(format!(
                "failed exchange after {:?} (hang or reset): {e}",
                t0.elapsed()
            )),
        }
        c = Client::connect(addr);
    }
    n
}

#[test]
fn exclusive_reload_answers_503_retry_after_then_200() {
    const CLIENTS: usize = 4;
    let s = Server::start(&["fx_excl"]);
    let r = s.get("/excl");
    assert_eq!((r.status, r.text().as_str()), (200, "excl"), "{r:?}");
    assert!(s
        .status()
        .expect("fx_excl")
        .line
        .contains(" mode=exclusive "));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, stop) = (s.addr, stop.clone());
            thread::spawn(move || excl_client(addr, stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    // A forced reload, then one triggered by a changed file.
    let reply = s.admin("RELOAD fx_excl");
    assert_reload_ok(&reply, "fx_excl", 2, "0.1.0");
    let r = s.get("/excl");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "excl"),
        "right after OK: {r:?}"
    );
    thread::sleep(Duration::from_millis(100));
    s.change_module("fx_excl");
    let (lines, counts) = parse_reload(&s.admin("RELOAD"));
    assert_eq!(lines, ["OK fx_excl gen=3 v0.1.0"]);
    assert_eq!(counts, [1, 0, 0, 0]);
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);

    let results: Vec<ExclCounts> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let failures: Vec<&String> = results.iter().flat_map(|r| &r.failures).collect();
    assert!(failures.is_empty(), "failures: {failures:#?}");
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let unavailable: u64 = results.iter().map(|r| r.unavailable).sum();
    eprintln!("exclusive reloads: {ok} x 200, {unavailable} x 503");
    assert!(ok > 0, "no 200 at all");
    assert!(
        unavailable > 0,
        "two exclusive reloads of >= 400 ms each under continuous load produced no 503"
    );

    for _ in 0..5 {
        let r = s.get("/excl");
        assert_eq!((r.status, r.text().as_str()), (200, "excl"), "{r:?}");
    }
    let st = s.status();
    let m = st.expect("fx_excl");
    assert_eq!((m.gen, m.state.as_str()), (3, "running"), "{}", m.line);
}

// ---------------------------------------------------------------------------

#[test]
fn counter_state_survives_ten_reloads() {
    let s = Server::start(&["fx_counter"]);
    let count = || {
        let r = s.get("/count");
        assert_eq!(r.status, 200, "{r:?}");
        r.text().parse::<u64>().unwrap_or_else(|_| panic!("{r:?}"))
    };
    for i in 1..=3 {
        assert_eq!(count(), i);
    }
    let mut expected = 3;
    for k in 1..=10u64 {
        if k % 2 == 0 {
            // A changed file, picked up by a plain RELOAD.
            s.change_module("fx_counter");
            let (lines, counts) = parse_reload(&s.admin("RELOAD"));
            assert_eq!(lines, [format!("OK fx_counter gen={} v0.1.0", k + 1)]);
            assert_eq!(counts, [1, 0, 0, 0]);
        } else {
            assert_reload_ok(&s.admin("RELOAD fx_counter"), "fx_counter", k + 1, "0.1.0");
        }
        expected += 1;
        assert_eq!(count(), expected, "after reload #{k}");
    }
    assert_eq!(expected, 13);
    let st = s.status();
    let m = st.expect("fx_counter");
    assert_eq!(m.gen, 11, "{}", m.line);
    assert_eq!(m.field("count"), Some("13"), "{}", m.line);
}

// ---------------------------------------------------------------------------

/// Checks that `s` still serves generation 1 of `fx_ver` (v1), on a
/// keep-alive connection opened earlier and on a new one.
fn assert_v1_serving(s: &Server, kept: &mut Client, what: &str) {
    let r = exchange(kept, GET_VER).unwrap_or_else(|e| panic!("{what}: kept connection: {e}"));
    assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{what}: {r:?}");
    let r = s.get("/ver");
    assert_eq!((r.status, r.text().as_str()), (200, "v1"), "{what}: {r:?}");
    let st = s.status();
    let m = st.expect(VER);
    assert_eq!(
        (m.gen, m.version.as_str(), m.state.as_str()),
        (1, "1.0.0", "running"),
        "{what}: {}",
        m.line
    );
}

#[test]
fn bad_files_are_refused_and_the_old_generation_keeps_serving() {
    let s = ver_server("badso", &[]);
    let mut kept = s.connect();
    let cases: [(&str, &str, &[&str]); 3] = [
        ("wrong ABI", "fx_bad_abi", &["abi mismatch"]),
        (
            "start returns an error",
            "fx_ver_bad_start",
            &["start failed", "fx_ver_bad_start refuses to start"],
        ),
        ("start panics", "fx_start_panic", &["start panicked"]),
    ];
    for (what, fixture, needles) in cases {
        s.install_module_as(fixture, VER);
        for cmd in ["RELOAD fx_ver", "RELOAD"] {
            let reply = s.admin(cmd);
            let line = if cmd == "RELOAD" {
                let (lines, counts) = parse_reload(&reply);
                assert_eq!(counts, [0, 0, 0, 1], "{what}: {cmd}: {reply}");
                assert_eq!(lines.len(), 1, "{what}: {cmd}: {reply}");
                lines[0].clone()
            } else {
                assert_eq!(reply.lines().count(), 1, "{what}: {cmd}: {reply}");
                reply.trim_end().to_string()
            };
            assert!(
                line.starts_with("ERR fx_ver: "),
                "{what}: {cmd} must answer `ERR fx_ver: <reason>`, got {line:?}"
            );
            for n in needles {
                assert!(line.contains(n), "{what}: {cmd}: {line:?} lacks {n:?}");
            }
            assert_v1_serving(&s, &mut kept, &format!("{what}, after {cmd}"));
        }
    }
    // A good file after all that: v2 takes over as generation 2.
    s.install_module_as("fx_ver2", VER);
    assert_reload_ok(&s.admin("RELOAD fx_ver"), VER, 2, "2.0.0");
    let r = exchange(&mut kept, GET_VER).unwrap();
    assert_eq!(r.text(), "v2");
    assert_eq!(s.get("/ver").text(), "v2");
}

/// A truncated library must be refused like any bad file: half of the file
/// (the brief's case: the loadable segments may all still be there, the
/// section headers at the end are not), a cut inside the loadable segments
/// (mapping it would fault on the missing pages) and a cut inside the ELF
/// headers. Each case gets its own server so one outcome cannot mask the
/// next; all outcomes are reported together.
#[test]
fn truncated_files_are_refused_and_the_old_generation_keeps_serving() {
    let good = fs::read(module_file("fx_ver2")).unwrap();
    let cases: [(&str, usize); 3] = [
        ("first 100 bytes", 100),
        ("first 64 KiB (inside the loadable segments)", 64 * 1024),
        ("first half", good.len() / 2),
    ];
    let mut problems = Vec::new();
    for (what, len) in cases {
        let mut s = ver_server("trunc", &[]);
        let mut kept = s.connect();
        s.put_module_bytes(VER, &good[..len]);
        let mut c = s.connect();
        c.send(b"RELOAD fx_ver\n");
        let reply = match c.try_read_line() {
            Ok(l) => l,
            Err(e) => {
                let exit = s.wait_exit(Duration::from_secs(2));
                problems.push(format!(
                    "{what} ({len} of {} bytes): no reply to RELOAD ({e}); server exit status \
                     {exit:?}; log tail:\n{}",
                    good.len(),
                    tail(&s.log())
                ));
                continue;
            }
        };
        if !reply.starts_with("ERR fx_ver: ") {
            problems.push(format!(
                "{what} ({len} of {} bytes): RELOAD fx_ver answered {reply:?}, expected ERR",
                good.len()
            ));
            continue;
        }
        let r = exchange(&mut kept, GET_VER);
        let fresh = s.get("/ver");
        match r {
            Ok(r) if r.text() == "v1" && fresh.text() == "v1" => {
                eprintln!("{what}: refused with {reply:?}")
            }
            other => problems.push(format!(
                "{what}: refused ({reply:?}) but then served {other:?} / {fresh:?}"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "truncated files not refused cleanly:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------

#[test]
fn add_remove_re_add_three_cycles() {
    let s = ServerBuilder::new(&["fx_line"])
        .tag("addrm")
        .module_as("fx_ver1", VER)
        .start();
    // A new file loads on RELOAD.
    s.install_module("fx_counter");
    let (lines, counts) = parse_reload(&s.admin("RELOAD"));
    assert_eq!(counts, [1, 2, 0, 0], "{lines:?}");
    assert!(
        lines.contains(&"OK fx_counter gen=1 v0.1.0".to_string()),
        "{lines:?}"
    );
    assert_eq!(s.get("/count").text(), "1");

    let ping = |s: &Server| -> Result<String, String> {
        let mut c = s.connect();
        c.send(b"PING\n");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match std::io::Read::read(&mut c.stream, &mut b) {
                Ok(0) => return Err(format!("closed after {line:?}")),
                Ok(_) if b[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into()),
                Ok(_) => line.push(b[0]),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    assert_eq!(ping(&s).as_deref(), Ok("PONG"));

    for cycle in 1..=3u64 {
        // Remove: drained and removed; HTTP prefixes answer 503, raw ones close.
        s.remove_module(VER);
        s.remove_module("fx_line");
        let (mut lines, counts) = parse_reload(&s.admin("RELOAD"));
        lines.sort();
        assert_eq!(
            lines,
            [
                "OK fx_counter unchanged gen=1",
                "OK fx_line removed",
                "OK fx_ver removed"
            ],
            "cycle {cycle}"
        );
        assert_eq!(counts, [0, 1, 2, 0], "cycle {cycle}");
        let st = s.wait_status(Duration::from_secs(5), |st| {
            st.module(VER).is_none() && st.module("fx_line").is_none()
        });
        assert!(
            st.module(VER).is_none() && st.module("fx_line").is_none(),
            "cycle {cycle}: removed modules still listed:\n{}",
            st.raw
        );
        let r = s.get("/ver");
        assert_eq!(r.status, 503, "cycle {cycle}: {r:?}");
        assert_eq!(r.header("retry-after"), Some("1"), "cycle {cycle}: {r:?}");
        let mut c = s.connect();
        c.send(b"PING\n");
        c.expect_closed(IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cycle {cycle}: removed raw module's prefix: {e}"));
        // The other module is untouched.
        assert_eq!(s.get("/count").text(), (cycle + 1).to_string());

        // Re-add (alternating the version) and reload.
        let tag = if cycle % 2 == 1 { "v2" } else { "v1" };
        let (fixture, version) = ver_fixture(tag);
        s.install_module_as(fixture, VER);
        s.install_module("fx_line");
        let (mut lines, counts) = parse_reload(&s.admin("RELOAD"));
        lines.sort();
        assert_eq!(
            lines,
            [
                "OK fx_counter unchanged gen=1".to_string(),
                format!("OK fx_line gen={} v0.1.0", cycle + 1),
                format!("OK fx_ver gen={} v{version}", cycle + 1),
            ],
            "cycle {cycle}"
        );
        assert_eq!(counts, [2, 1, 0, 0], "cycle {cycle}");
        let r = s.get("/ver");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, tag),
            "cycle {cycle}: {r:?}"
        );
        assert_eq!(ping(&s).as_deref(), Ok("PONG"), "cycle {cycle}");
        let st = s.status();
        assert_eq!(st.expect(VER).gen, cycle + 1);
        assert_eq!(st.expect(VER).version, version);
    }
}

// ---------------------------------------------------------------------------

#[test]
fn watch_reloads_renamed_files_and_removes_deleted_ones() {
    let s = ServerBuilder::new(&[])
        .tag("watch")
        .module_as("fx_ver1", VER)
        .arg("--watch")
        .start();
    assert_eq!(s.get("/ver").text(), "v1");
    let wait_gen = |gen: u64, version: &str| {
        let st = s.wait_status(Duration::from_secs(10), |st| {
            st.module(VER)
                .is_some_and(|m| m.gen == gen && m.version == version)
        });
        let m = st.module(VER);
        assert!(
            m.is_some_and(|m| m.gen == gen && m.version == version),
            "--watch did not load gen={gen} v{version} within 10 s:\n{}\nlog tail:\n{}",
            st.raw,
            tail(&s.log())
        );
    };

    // Replaced by write-to-temp-then-rename: reloaded by itself.
    s.install_module_as("fx_ver2", VER);
    wait_gen(2, "2.0.0");
    assert_eq!(s.get("/ver").text(), "v2");

    // A hidden temporary file alone changes nothing.
    fs::write(s.modules_dir.join(".fx_ver.so.tmp"), b"half written").unwrap();
    thread::sleep(Duration::from_millis(800));
    assert_eq!(s.status().expect(VER).gen, 2);
    fs::remove_file(s.modules_dir.join(".fx_ver.so.tmp")).unwrap();

    // Removed: the module goes away, its prefix answers 503.
    s.remove_module(VER);
    let st = s.wait_status(Duration::from_secs(10), |st| st.module(VER).is_none());
    assert!(
        st.module(VER).is_none(),
        "--watch did not remove fx_ver:\n{}",
        st.raw
    );
    let r = s.get("/ver");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");

    // Put back: loaded again.
    s.install_module_as("fx_ver1", VER);
    wait_gen(3, "1.0.0");
    assert_eq!(s.get("/ver").text(), "v1");
}

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(3000)..]
}

// ---------------------------------------------------------------------------

#[test]
fn in_flight_pool_request_finishes_on_the_old_generation() {
    let s = ver_server("inflight", &[]);
    // A deferred request that sleeps 1.5 s on the pool, on a keep-alive
    // connection.
    let mut slow = s.connect();
    slow.send(b"GET /verslow?ms=1500 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // Wait until it is routed to generation 1 (the module counts it).
    let st = s.wait_status(Duration::from_secs(5), |st| {
        st.module(VER).is_some_and(|m| m.conns >= 1)
    });
    assert!(
        st.expect(VER).conns >= 1,
        "slow request not in flight:\n{}",
        st.raw
    );

    s.install_module_as("fx_ver2", VER);
    assert_reload_ok(&s.admin("RELOAD fx_ver"), VER, 2, "2.0.0");
    assert!(
        !slow.has_data(),
        "the slow request answered before the reload completed; the test proves nothing"
    );
    // New requests get the new generation at once, pool requests included.
    let r = s.get("/ver");
    assert_eq!((r.status, r.text().as_str()), (200, "v2"), "{r:?}");
    let r = s.get("/verslow?ms=10");
    assert_eq!((r.status, r.text().as_str()), (200, "slow-v2"), "{r:?}");
    let st = s.status();
    let m = st.expect(VER);
    assert_eq!(
        (m.state.as_str(), m.num("draining")),
        ("draining", 1),
        "the old generation must still be draining: {}",
        m.line
    );

    // The in-flight one completes on the old code.
    let r = slow.read_response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "slow-v1"), "{r:?}");
    // Its connection's next message goes to the new generation.
    let r = exchange(&mut slow, GET_VER).unwrap();
    assert_eq!(r.text(), "v2");
    let st = s.wait_status(Duration::from_secs(5), |st| {
        st.module(VER).is_some_and(|m| m.num("draining") == 0)
    });
    let m = st.expect(VER);
    assert_eq!(
        (m.state.as_str(), m.num("draining"), m.num("retained")),
        ("running", 0, 1),
        "{}",
        m.line
    );
}

// ---------------------------------------------------------------------------

#[test]
fn status_retained_grows_by_one_per_reload() {
    let s = ver_server("retained", &[]);
    let size = fs::metadata(s.modules_dir.join("fx_ver.so")).unwrap().len();
    let m = s.status().expect(VER).clone();
    assert_eq!(
        (m.num("retained"), m.num("retained_bytes")),
        (0, 0),
        "{}",
        m.line
    );
    let mut prev_bytes = 0;
    for k in 1..=5u64 {
        assert_reload_ok(&s.admin("RELOAD fx_ver"), VER, k + 1, "1.0.0");
        assert_eq!(s.get("/ver").text(), "v1");
        // The old generation is released once no connection or route table
        // holds it any more.
        let st = s.wait_status(Duration::from_secs(5), |st| {
            st.module(VER).is_some_and(|m| m.num("retained") >= k)
        });
        let m = st.expect(VER);
        assert_eq!(m.num("retained"), k, "after reload #{k}: {}", m.line);
        let bytes = m.num("retained_bytes");
        let grown = bytes - prev_bytes;
        assert!(
            grown >= size / 2 && grown <= size * 2,
            "after reload #{k}: retained_bytes grew by {grown}, the file is {size} bytes: {}",
            m.line
        );
        prev_bytes = bytes;
    }
}
