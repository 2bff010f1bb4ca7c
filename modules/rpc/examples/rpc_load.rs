//! A load generator for the rpc module: `kv.set` or `kv.get` over raw TCP
//! JSON-RPC, N connections, each keeping P requests in flight — what
//! `redis-benchmark -c N -P P` does for Redis. One thread, non-blocking
//! sockets (mio), so the client costs about what redis-benchmark costs.
//!
//! ```text
//! cargo run --release -p switchyard_rpc --example rpc_load -- \
//!     --addr 127.0.0.1:8080 --op set --conns 50 --pipeline 1 --requests 200000
//! ```
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
            "-h" | "--help" => {
                println!("rpc_load [--addr A] [--op set|get|incr|ping] [--conns N] [--pipeline P] [--requests R] [--keyspace K] [--value-size B]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !["set", "get", "incr", "ping"].contains(&a.op.as_str()) {
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
    match run(&args) {
        Ok((secs, errors)) => {
            println!(
                "op={} conns={} pipeline={} requests={} seconds={secs:.3} rps={:.0} errors={errors}",
                args.op,
                args.conns,
                args.pipeline,
                args.requests,
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
        let std_sock = std::net::TcpStream::connect_timeout(&a.addr, Duration::from_secs(5))?;
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
