//! A load generator for the rpc module: `kv.set` or `kv.get` over raw TCP
//! JSON-RPC, N connections, each keeping P requests in flight — what
//! `redis-benchmark -c N -P P` does for Redis. One thread, non-blocking
//! sockets (mio), so the client costs about what redis-benchmark costs.
//!
//! `--op publish` sends `bus.publish` to `bench.target.<n>` instead; with
//! `--subscribers S --patterns K`, S more connections first subscribe to K
//! patterns each that never match it (literal, `*` and `>` patterns that
//! share its first segments) and stay open while it runs, to show that a
//! publish costs the same whatever the number of other patterns.
//!
//! ```text
//! cargo run --release -p switchyard_rpc --example rpc_load -- \
//!     --addr 127.0.0.1:8080 --op set --conns 50 --pipeline 1 --requests 200000
//! ```
//!
//! `--token T` logs every connection in with `sys.auth` first (a bus
//! with users configured), so the cost of access control can be measured
//! against the same run without users.
//!
//! Prints one line: `op=set conns=50 pipeline=1 requests=200000
//! seconds=2.345 rps=85287 errors=0`. Exits non-zero if any reply was an
//! error or a connection failed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Args {
    addr: SocketAddr,
    op: String,
    conns: usize,
    pipeline: usize,
    requests: u64,
    keyspace: u64,
    value_size: usize,
    subscribers: usize,
    patterns: usize,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().unwrap(),
        op: "set".into(),
        conns: 50,
        pipeline: 1,
        requests: 100_000,
        keyspace: 100_000,
        value_size: 3,
        subscribers: 0,
        patterns: 0,
        token: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = val()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--op" => a.op = val()?,
            "--conns" => a.conns = num(val()?)? as usize,
            "--pipeline" => a.pipeline = num(val()?)? as usize,
            "--requests" => a.requests = num(val()?)?,
            "--keyspace" => a.keyspace = num(val()?)?.max(1),
            "--value-size" => a.value_size = num(val()?)? as usize,
            "--subscribers" => a.subscribers = num(val()?)? as usize,
            "--patterns" => a.patterns = num(val()?)? as usize,
            "--token" => a.token = Some(val()?),
            "-h" | "--help" => {
                println!("rpc_load [--addr A] [--op set|get|incr|ping|publish] [--conns N] [--pipeline P] [--requests R] [--keyspace K] [--value-size B] [--subscribers S --patterns K] [--token T]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["set", "get", "incr", "ping", "publish"].contains(&a.op.as_str()) {
        return Err(format!("unknown op {}", a.op));
    }
    if a.conns == 0 || a.pipeline == 0 {
        return Err("--conns and --pipeline must be positive".into());
    }
    Ok(a)
}

struct Conn {
    sock: TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    in_flight: usize,
}

struct Gen {
    op: String,
    value: String,
    rng: u64,
    keyspace: u64,
    id: u64,
}

impl Gen {
    fn request(&mut self, out: &mut Vec<u8>) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let key = self.rng % self.keyspace;
        self.id += 1;
        let id = self.id;
        let line = match self.op.as_str() {
            "set" => format!(
                r#"{{"jsonrpc":"2.0","method":"kv.set","params":["key:{key:012}","{}"],"id":{id}}}"#,
                self.value
            ),
            "get" => format!(
                r#"{{"jsonrpc":"2.0","method":"kv.get","params":["key:{key:012}"],"id":{id}}}"#
            ),
            "incr" => format!(
                r#"{{"jsonrpc":"2.0","method":"kv.incr","params":["counter:{key:012}"],"id":{id}}}"#
            ),
            "publish" => format!(
                r#"{{"jsonrpc":"2.0","method":"bus.publish","params":{{"topic":"bench.target.{key}","data":"{}"}},"id":{id}}}"#,
                self.value
            ),
            _ => format!(r#"{{"jsonrpc":"2.0","method":"sys.ping","id":{id}}}"#),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rpc_load: {e}");
            std::process::exit(2);
        }
    };
    let subscribers = match subscribe(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpc_load: subscribing: {e}");
            std::process::exit(1);
        }
    };
    let result = run(&args);
    drop(subscribers);
    match result {
        Ok((secs, errors)) => {
            println!(
                "op={} conns={} pipeline={} requests={} subscribers={} patterns={} seconds={secs:.3} rps={:.0} errors={errors}",
                args.op,
                args.conns,
                args.pipeline,
                args.requests,
                args.subscribers,
                args.patterns,
                args.requests as f64 / secs
            );
            if errors > 0 {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("rpc_load: {e}");
            std::process::exit(1);
        }
    }
}

/// Pattern `i` of subscriber `s`: never matches `bench.target.<n>`, but
/// shares its first segments, so the trie holds it on the same branches.
fn pattern(s: usize, i: usize) -> String {
    match i % 4 {
        0 => format!("bench.other{s}x{i}"),
        1 => format!("bench.*.o{s}x{i}"),
        2 => format!("*.target.o{s}x{i}.>"),
        _ => format!("bench.target.o{s}x{i}"),
    }
}

/// Opens `--subscribers` connections, each subscribed to `--patterns`
/// non-matching patterns; they stay open until dropped.
fn subscribe(a: &Args) -> io::Result<Vec<std::net::TcpStream>> {
    let mut socks = Vec::with_capacity(a.subscribers);
    for s in 0..a.subscribers {
        let mut sock = std::net::TcpStream::connect_timeout(&a.addr, Duration::from_secs(5))?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        login(&mut sock, a)?;
        let topics: Vec<String> = (0..a.patterns).map(|i| pattern(s, i)).collect();
        let topics = topics
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(",");
        let req = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"bus.subscribe\",\"params\":{{\"topics\":[{topics}]}},\"id\":1}}\n"
        );
        sock.write_all(req.as_bytes())?;
        let reply = read_reply(&mut sock)?;
        let want = format!("\"result\":{}", a.patterns);
        if memchr::memmem::find(&reply, want.as_bytes()).is_none() {
            return Err(io::Error::other(format!(
                "subscribe failed: {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        socks.push(sock);
    }
    Ok(socks)
}

/// Reads one reply line (blocking).
fn read_reply(sock: &mut std::net::TcpStream) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        if sock.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed a connection during setup",
            ));
        }
        reply.push(byte[0]);
    }
    Ok(reply)
}

/// `sys.auth` with `--token`, if given (blocking, before the run).
fn login(sock: &mut std::net::TcpStream, a: &Args) -> io::Result<()> {
    let Some(token) = &a.token else {
        return Ok(());
    };
    let req = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"sys.auth\",\"params\":{{\"token\":{token:?}}},\"id\":0}}\n"
    );
    sock.write_all(req.as_bytes())?;
    let reply = read_reply(sock)?;
    if memchr::memmem::find(&reply, b"\"result\"").is_none() {
        return Err(io::Error::other(format!(
            "sys.auth failed: {}",
            String::from_utf8_lossy(&reply)
        )));
    }
    Ok(())
}

fn run(a: &Args) -> io::Result<(f64, u64)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut gen = Gen {
        op: a.op.clone(),
        value: "x".repeat(a.value_size),
        rng: 0x9e37_79b9_7f4a_7c15,
        keyspace: a.keyspace,
        id: 0,
    };
    let mut conns = Vec::with_capacity(a.conns);
    for i in 0..a.conns {
        let mut std_sock = std::net::TcpStream::connect_timeout(&a.addr, Duration::from_secs(5))?;
        std_sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        login(&mut std_sock, a)?;
        std_sock.set_nodelay(true)?;
        std_sock.set_nonblocking(true)?;
        let mut sock = TcpStream::from_std(std_sock);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(Conn {
            sock,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inbuf: Vec::with_capacity(8192),
            in_flight: 0,
        });
    }
    let mut sent: u64 = 0;
    let mut done: u64 = 0;
    let mut errors: u64 = 0;
    let start = Instant::now();
    // Fill every pipeline.
    for c in conns.iter_mut() {
        while c.in_flight < a.pipeline && sent < a.requests {
            gen.request(&mut c.out);
            c.in_flight += 1;
            sent += 1;
        }
        flush(c)?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    while done < a.requests {
        poll.poll(&mut events, Some(Duration::from_secs(10)))?;
        if events.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no progress for 10 s ({done} of {} done)", a.requests),
            ));
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if ev.is_readable() {
                loop {
                    match c.sock.read(&mut buf) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "server closed a connection",
                            ))
                        }
                        Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                let mut start_of_line = 0;
                while let Some(nl) = memchr::memchr(b'\n', &c.inbuf[start_of_line..]) {
                    let line = &c.inbuf[start_of_line..start_of_line + nl];
                    if memchr::memmem::find(line, b"\"error\"").is_some() {
                        if errors == 0 {
                            eprintln!("rpc_load: error reply: {}", String::from_utf8_lossy(line));
                        }
                        errors += 1;
                    }
                    start_of_line += nl + 1;
                    c.in_flight -= 1;
                    done += 1;
                    if sent < a.requests {
                        gen.request(&mut c.out);
                        c.in_flight += 1;
                        sent += 1;
                    }
                }
                c.inbuf.drain(..start_of_line);
            }
            flush(c)?;
        }
    }
    Ok((start.elapsed().as_secs_f64(), errors))
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while c.out_pos < c.out.len() {
        match c.sock.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.out.clear();
    c.out_pos = 0;
    Ok(())
}
