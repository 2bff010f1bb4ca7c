//! Hostile clients: the kv store (limits, memory, disk, waits).
//!
//! Item 3: every kv limit answers with an error that names it, and a
//! worker over a database much larger than its cache answers at once with
//! memory that does not grow with the data. Item 9: a burst of big
//! durable writes is a wait, not a hang. Item 14: deleted data is given
//! back to the file system while writes go on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The database file plus its WAL, in bytes.
fn disk(db: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    len(db) + len(&wal)
}

/// A server whose rpc module uses the database at `db` with `extra`
/// settings.
fn kv_server(tag: &str, db: &Path, extra: &str) -> Server {
    let toml = format!("[modules.rpc]\ndb = \"{}\"\n{extra}", db.display());
    ServerBuilder::new(&["rpc"]).tag(tag).toml(&toml).start()
}

/// A JSON string value of `n` bytes (quotes included).
fn value(n: usize, fill: char) -> String {
    format!("\"{}\"", fill.to_string().repeat(n - 2))
}

/// Writes `count` values of `size` bytes as keys `<prefix><i>`, pipelined
/// in groups of 16, every write acknowledged.
fn fill(s: &Server, prefix: &str, count: usize, size: usize) {
    let mut stream = TcpStream::connect(s.addr).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let v = value(size, 'd');
    for group in (0..count).collect::<Vec<_>>().chunks(16) {
        let mut out = String::new();
        for i in group {
            out.push_str(&format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":[\"{prefix}{i}\",{v}],\"id\":{i}}}\n"
            ));
        }
        stream.write_all(out.as_bytes()).unwrap();
        for _ in group {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            assert!(line.contains("\"result\":true"), "{line}");
        }
    }
}

/// Item 3: each limit answers -32050 naming the limit and its value, and
/// writes nothing; what fits is still accepted.
#[test]
fn kv_limits_answer_with_an_error_naming_the_limit() {
    let dir = temp_dir("hostile-kv-limits");
    let s = kv_server(
        "kv-limits",
        &dir.join("kv.sqlite"),
        "max_value_bytes = 1000\nmax_keys = 3\nmax_total_bytes = 2500\nmax_key_bytes = 16",
    );
    let mut c = Rpc::connect(s.addr);
    let big = value(1001, 'b');
    let v = c.call(
        "kv.set",
        json!(["a", serde_json::from_str::<Value>(&big).unwrap()]),
    );
    assert_eq!(v["error"]["code"], -32050, "{v}");
    assert_eq!(
        v["error"]["message"],
        "kv.set: value of 1001 bytes exceeds max_value_bytes (1000)"
    );
    assert_eq!(c.ok("kv.get", json!(["a"])), Value::Null, "nothing written");

    let v = c.call("kv.set", json!(["k".repeat(17), 1]));
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 to 16 bytes"),
        "{v}"
    );

    let v900: Value = serde_json::from_str(&value(900, 'v')).unwrap();
    for k in ["a", "b"] {
        assert_eq!(c.ok("kv.set", json!([k, v900])), true);
    }
    let v = c.call("kv.set", json!(["c", v900]));
    assert_eq!(v["error"]["code"], -32050, "{v}");
    assert_eq!(
        v["error"]["message"],
        "kv.set: the store would hold 2703 bytes of keys, values and stream messages, over max_total_bytes (2500)"
    );
    assert_eq!(c.ok("kv.incr", json!(["c"])), 1);
    let v = c.call("kv.cas", json!(["d", null, 1]));
    assert_eq!(v["error"]["code"], -32050, "{v}");
    assert_eq!(
        v["error"]["message"],
        "kv.cas: the store holds max_keys (3) keys; delete some or raise the limit"
    );
    assert_eq!(c.ok("kv.get", json!(["d"])), Value::Null);
    // Overwrites that do not grow the store and deletes still work.
    assert_eq!(c.ok("kv.set", json!(["a", "small"])), true);
    assert_eq!(c.ok("kv.del", json!(["b"])), true);
    assert_eq!(c.ok("kv.set", json!(["d", v900])), true);
    let st = s.status();
    assert_eq!(st.expect("rpc").num("keys"), 3, "{}", st.raw);
    assert_eq!(st.expect("rpc").num("kv_bytes"), 8 + 2 + 901, "{}", st.raw);

    // The same over HTTP, in a batch: only the call over the limit fails.
    let body = format!(
        r#"[{{"jsonrpc":"2.0","method":"kv.set","params":["a",{big}],"id":1}},{{"jsonrpc":"2.0","method":"kv.set","params":["a",2],"id":2}}]"#
    );
    let resp = s.request(format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v[0]["error"]["code"], -32050, "{v}");
    assert_eq!(v[1]["result"], true, "{v}");
    assert_eq!(c.ok("kv.get", json!(["a"])), 2);
}

/// Item 3: a server started over a database four times its value cache
/// answers its first read at once, and its worker's memory stays well
/// below the data even after every value was read once.
#[test]
fn a_big_database_is_served_at_once_without_holding_it() {
    const VALUES: usize = 96;
    const SIZE: usize = 1_000_000;
    let dir = temp_dir("hostile-kv-big");
    let db = dir.join("kv.sqlite");
    {
        let s = kv_server("kv-big-fill", &db, "");
        fill(&s, "big:", VALUES, SIZE);
    }
    assert!(disk(&db) > (VALUES * SIZE) as u64, "{} bytes", disk(&db));

    let started = Instant::now();
    let s = kv_server("kv-big", &db, "cache_bytes = 16777216");
    let mut c = Rpc::connect(s.addr);
    let first = c.call("kv.get", json!(["big:7"]));
    let ready = started.elapsed();
    assert_eq!(first["result"].as_str().map(str::len), Some(SIZE - 2));
    let pid = s.worker_pid();
    let at_start = rss_bytes(pid);
    eprintln!("{VALUES} MB database: first answer after {ready:?}, worker RSS {at_start} bytes");
    assert!(
        ready < Duration::from_secs(10),
        "first answer after {ready:?}"
    );
    assert!(
        at_start < (VALUES * SIZE / 2) as u64,
        "worker RSS {at_start} bytes over a {VALUES} MiB database"
    );
    for i in 0..VALUES {
        let v = c.call("kv.get", json!([format!("big:{i}")]));
        assert_eq!(
            v["result"].as_str().map(str::len),
            Some(SIZE - 2),
            "big:{i}"
        );
    }
    assert_eq!(
        c.ok("kv.keys", json!({"prefix": "big:", "limit": 1000}))
            .as_array()
            .unwrap()
            .len(),
        VALUES
    );
    let after = rss_bytes(pid);
    eprintln!("after reading every value once: worker RSS {after} bytes");
    assert!(
        after < (VALUES * SIZE * 3 / 4) as u64,
        "worker RSS {after} bytes after reading a {VALUES} MiB database with a 16 MiB cache"
    );
    let st = s.status();
    assert!(
        st.expect("rpc").num("cached_bytes") <= 16 << 20,
        "{}",
        st.raw
    );
    assert_eq!(st.expect("rpc").num("keys"), VALUES as u64, "{}", st.raw);
}

/// Item 14: deleting most of the data gives its space back (file and WAL)
/// within a bounded time, while other writes keep being acknowledged.
#[test]
fn deleted_data_is_given_back_to_the_file_system() {
    const VALUES: usize = 128;
    const SIZE: usize = 1_000_000;
    let dir = temp_dir("hostile-kv-vacuum");
    let db = dir.join("kv.sqlite");
    let s = kv_server("kv-vacuum", &db, "checkpoint_interval_ms = 200");
    fill(&s, "del:", VALUES, SIZE);
    let full = disk(&db);
    assert!(full > (VALUES * SIZE) as u64, "{full} bytes");

    let writer = {
        let addr = s.addr;
        thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut acked = 0;
            let until = Instant::now() + Duration::from_secs(4);
            let mut buf = [0u8; 256];
            while Instant::now() < until {
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.incr\",\"params\":[\"live\"],\"id\":{acked}}}\n"
                );
                stream.write_all(line.as_bytes()).unwrap();
                let n = stream
                    .read(&mut buf)
                    .expect("a write was not acknowledged in 5 s");
                assert!(n > 0 && buf[..n].ends_with(b"\n"), "{:?}", &buf[..n]);
                acked += 1;
                thread::sleep(Duration::from_millis(5));
            }
            acked
        })
    };
    let mut c = Rpc::connect(s.addr);
    for i in 0..VALUES {
        assert_eq!(c.ok("kv.del", json!([format!("del:{i}")])), true);
    }
    let t0 = Instant::now();
    while disk(&db) * 10 > full && t0.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(100));
    }
    let left = disk(&db);
    eprintln!(
        "{full} bytes on disk, {left} bytes {:?} after deleting everything",
        t0.elapsed()
    );
    assert!(left * 10 <= full, "{left} of {full} bytes still on disk");
    let acked = writer.join().unwrap();
    assert!(acked > 50, "only {acked} writes acknowledged meanwhile");
    assert_eq!(c.ok("kv.get", json!(["live"])), acked);
}

/// Item 9: with `hang_kill_ms` far below the time a burst of big durable
/// writes takes to commit, the pool threads waiting for the writer are
/// not taken for hung: no worker restart, no fault, every write
/// acknowledged.
#[test]
fn a_burst_of_big_durable_writes_is_not_a_hang() {
    const CONNS: usize = 16;
    const EACH: usize = 8;
    const SIZE: usize = 512 * 1024;
    let dir = temp_dir("hostile-kv-waits");
    let db = dir.join("kv.sqlite");
    let toml = format!("[modules.rpc]\ndb = \"{}\"\nsync = \"full\"", db.display());
    let s = ServerBuilder::new(&["rpc"])
        .tag("kv-waits")
        .server("hang_warn_ms = 100")
        .server("hang_kill_ms = 300")
        .toml(&toml)
        .start();
    let pid = s.worker_pid();
    let started = Instant::now();
    let clients: Vec<_> = (0..CONNS)
        .map(|n| {
            let addr = s.addr;
            thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let v = value(SIZE, char::from(b'a' + n as u8));
                let mut out = String::new();
                for i in 0..EACH {
                    out.push_str(&format!(
                        "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":[\"w{n}:{i}\",{v}],\"id\":{i}}}\n"
                    ));
                }
                stream.write_all(out.as_bytes()).unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let mut acked = 0;
                for _ in 0..EACH {
                    let mut line = String::new();
                    std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or_else(|e| {
                        panic!("conn {n}: no reply ({e}): was the worker killed as hung?")
                    });
                    assert!(line.contains("\"result\":true"), "conn {n}: {line:?}");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let acked: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let took = started.elapsed();
    eprintln!(
        "{} MiB of sync=full writes acknowledged in {took:?}",
        (CONNS * EACH * SIZE) >> 20
    );
    assert_eq!(acked, CONNS * EACH);
    let st = s.status();
    assert_eq!(s.worker_pid(), pid, "the worker was replaced:\n{}", st.raw);
    assert!(
        !st.after
            .iter()
            .any(|l| l.starts_with("fault ") || l.starts_with("quarantined ")),
        "{}",
        st.raw
    );
    assert_eq!(
        st.expect("rpc").num("keys"),
        (CONNS * EACH) as u64,
        "{}",
        st.raw
    );
    assert!(!s.log().contains("SIGKILL"), "{}", s.log());
}
