//! A load generator for message buses, the rpc module's and nats-server's,
//! each driven over its own wire protocol so that `bench/bus.sh` can put
//! the two side by side: `--proto sy` speaks newline-delimited JSON-RPC to
//! switchyard's raw TCP port, `--proto nats` the NATS text protocol
//! (`CONNECT`, `PUB`, `SUB` with a queue group, `MSG`/`HMSG`, and
//! `PING`/`PONG` as a flush barrier). Everything above the two
//! [`Proto`] implementations is shared, so both servers get the same load
//! from the same single-threaded, non-blocking (mio) client.
//!
//! Scenarios (every message carries the same 16-byte payload plus an
//! 8-byte send timestamp, 24 ASCII bytes in all):
//!
//! * `reqrep`: `--responders R` connections in one queue group on
//!   `bench.svc`, `--requesters C` connections with one request in flight
//!   each. On switchyard a requester calls `bus.request` and a responder
//!   answers with a `bus.reply` notification; on NATS a requester publishes
//!   with a reply subject under its own inbox (`_INBOX.<n>.*`, subscribed
//!   once) and a responder publishes the answer there. Reports round trips
//!   per second and their p50/p99. A switchyard without `bus.request`
//!   (-32601) or without queue groups prints `reqrep: not supported by
//!   this server` and exits 0.
//! * `fanout`: `--subscribers S` connections subscribed to `bench.fan` and
//!   one publisher (switchyard: `bus.publish` notifications, as
//!   fire-and-forget as NATS `PUB`). The publisher keeps at most
//!   `--window` messages per subscriber not yet delivered (counted over
//!   all subscribers), so neither server's slow-consumer limit is hit.
//!   Reports delivered messages per second (the sum over subscribers) and
//!   the p50/p99 of publish-to-deliver.
//!
//! ```text
//! cargo run --release -p switchyard_rpc --example bus_load -- \
//!     --proto nats --addr 127.0.0.1:4222 --scenario fanout --subscribers 10 --seconds 5
//! ```
//!
//! Prints one line, e.g. `proto=nats scenario=fanout subscribers=10
//! requesters=0 responders=0 seconds=5.000 rate=812345 p50_us=210
//! p99_us=950 errors=0`. Exits non-zero when a connection failed, the run
//! stalled for 10 s, or any reply was an error.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Every message's payload before its timestamp.
const PAYLOAD: &[u8; 16] = b"switchyard-bench";
/// The subject of the request/reply service and of the fan-out.
const SVC: &str = "bench.svc";
const FAN: &str = "bench.fan";
/// The JSON-RPC id of the barrier (`sys.ping`) during setup.
const BARRIER_ID: u64 = 999_999_999;
/// No event for this long ends the run with an error.
const STALL: Duration = Duration::from_secs(10);
/// A NATS control line or a JSON line longer than this is an error.
const MAX_LINE: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ProtoKind {
    Sy,
    Nats,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    ReqRep,
    Fanout,
}

struct Args {
    addr: SocketAddr,
    proto: ProtoKind,
    scenario: Scenario,
    seconds: f64,
    warmup: f64,
    requesters: usize,
    responders: usize,
    subscribers: usize,
    window: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:4222".parse().unwrap(),
        proto: ProtoKind::Sy,
        scenario: Scenario::Fanout,
        seconds: 5.0,
        warmup: 0.5,
        requesters: 50,
        responders: 4,
        subscribers: 1,
        window: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        let secs = |s: String| match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("{flag}: not a number of seconds: {s}")),
        };
        match flag.as_str() {
            "--addr" => a.addr = val()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--proto" => {
                a.proto = match val()?.as_str() {
                    "sy" => ProtoKind::Sy,
                    "nats" => ProtoKind::Nats,
                    other => return Err(format!("unknown --proto {other} (sy or nats)")),
                }
            }
            "--scenario" => {
                a.scenario = match val()?.as_str() {
                    "reqrep" => Scenario::ReqRep,
                    "fanout" => Scenario::Fanout,
                    other => return Err(format!("unknown --scenario {other} (reqrep or fanout)")),
                }
            }
            "--seconds" => a.seconds = secs(val()?)?,
            "--warmup" => a.warmup = secs(val()?)?,
            "--requesters" => a.requesters = num(val()?)? as usize,
            "--responders" => a.responders = num(val()?)? as usize,
            "--subscribers" => a.subscribers = num(val()?)? as usize,
            "--window" => a.window = num(val()?)? as usize,
            "-h" | "--help" => {
                println!("bus_load [--proto sy|nats] [--addr A] [--scenario reqrep|fanout] [--seconds D] [--warmup W] [--requesters C] [--responders R] [--subscribers S] [--window N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
    let counts = match a.scenario {
        Scenario::ReqRep => [a.requesters, a.responders],
        Scenario::Fanout => [a.subscribers, a.window],
    };
    if counts.contains(&0) {
        return Err("connection counts and --window must be positive".into());
    }
    if a.requesters + a.responders + a.subscribers > 10_000 {
        return Err("at most 10000 connections".into());
    }
    Ok(a)
}

// --- time stamps and the latency histogram -------------------------------------

/// The moment every timestamp counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`], modulo 10^8: the 8 decimal digits a
/// message carries. Latencies below 100 s survive the wrap (see [`age_us`]).
fn now_stamp() -> u64 {
    epoch().elapsed().as_micros() as u64 % 100_000_000
}

/// The 24-byte payload: [`PAYLOAD`] then `stamp` as 8 decimal digits.
fn payload(stamp: u64) -> [u8; 24] {
    let mut p = [b'0'; 24];
    p[..16].copy_from_slice(PAYLOAD);
    let mut v = stamp;
    for i in (16..24).rev() {
        p[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    p
}

/// The stamp at the end of a received payload, `None` if it is not ours.
fn stamp_of(payload: &[u8]) -> Option<u64> {
    if payload.len() != 24 || &payload[..16] != PAYLOAD {
        return None;
    }
    payload[16..].iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Microseconds from `stamp` to `now`, both from [`now_stamp`].
fn age_us(stamp: u64, now: u64) -> u64 {
    (now + 100_000_000 - stamp) % 100_000_000
}

/// Latencies in microseconds: exact below 1024 µs, then 64 buckets per
/// power of two (under 1.6 % error), enough for a p99 without keeping the
/// samples (a fan-out run delivers millions).
struct Hist {
    counts: Vec<u64>,
    total: u64,
}

impl Hist {
    const LINEAR: u64 = 1024;
    const SUB_BITS: u32 = 6;

    fn new() -> Hist {
        // Up to 2^40 µs: far beyond any run.
        Hist {
            counts: vec![0; Self::LINEAR as usize + 31 * 64],
            total: 0,
        }
    }

    fn bucket(us: u64) -> usize {
        if us < Self::LINEAR {
            return us as usize;
        }
        let us = us.min((1 << 40) - 1);
        let exp = 63 - us.leading_zeros(); // >= 10
        let sub = (us >> (exp - Self::SUB_BITS)) & 63;
        Self::LINEAR as usize + ((exp - 10) as usize) * 64 + sub as usize
    }

    /// The smallest value that falls in bucket `b`.
    fn floor(b: usize) -> u64 {
        if (b as u64) < Self::LINEAR {
            return b as u64;
        }
        let rest = b - Self::LINEAR as usize;
        let exp = (rest / 64) as u32 + 10;
        let sub = (rest % 64) as u64;
        (1u64 << exp) | (sub << (exp - Self::SUB_BITS))
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0..=1), as its bucket's lower bound; 0 when empty.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::floor(b);
            }
        }
        Self::floor(self.counts.len() - 1)
    }

    fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
    }
}

// --- the two protocols ----------------------------------------------------------

/// What a server sent, borrowed from the connection's input buffer.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    /// A message on a subscription (NATS `MSG`/`HMSG`, switchyard
    /// `bus.message`); `reply` when it is a request.
    Msg {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// A JSON-RPC result: the string's content, or the raw value.
    Reply { id: Option<u64>, result: &'a [u8] },
    /// A JSON-RPC error or a NATS `-ERR`.
    Error {
        id: Option<u64>,
        code: i64,
        text: &'a [u8],
    },
    /// The barrier's answer (NATS `PONG`, the reply to switchyard's
    /// `sys.ping` with [`BARRIER_ID`]).
    Pong,
    /// NATS `PING` from the server: must be answered with `PONG`.
    Ping,
    /// Anything else (`INFO`, `+OK`, other notifications).
    Other,
}

/// One complete event from the front of a buffer and the bytes it used,
/// `Ok(None)` when the buffer holds only part of one.
type Parsed<'a> = Result<Option<(Event<'a>, usize)>, String>;

/// A bus's wire protocol, as far as the scenarios need it.
trait Proto {
    /// What a new connection sends first (NATS `CONNECT`).
    fn hello(&self, out: &mut Vec<u8>);
    /// Subscribe to `subject` (in `queue`'s group, if given) as `sid`.
    fn subscribe(&self, out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64);
    /// A request whose answer ([`Event::Pong`]) comes after everything
    /// sent before it was handled.
    fn barrier(&self, out: &mut Vec<u8>);
    /// Fire-and-forget publish.
    fn publish(&self, out: &mut Vec<u8>, subject: &str, payload: &[u8]);
    /// A request with `id` from requester `who`; its answer comes back as
    /// [`Event::Reply`] (switchyard) or [`Event::Msg`] on the inbox (NATS).
    fn request(&self, out: &mut Vec<u8>, subject: &str, who: usize, id: u64, payload: &[u8]);
    /// What a requester subscribes to for its answers, if anything.
    fn inbox_subscription(&self, who: usize) -> Option<String>;
    /// Answer a request that came with `reply`.
    fn respond(&self, out: &mut Vec<u8>, reply: &[u8], payload: &[u8]);
    /// The reply to PING.
    fn pong(&self, out: &mut Vec<u8>);
    fn parse<'a>(&self, buf: &'a [u8]) -> Parsed<'a>;
}

/// Switchyard: JSON-RPC 2.0, one message a line.
struct Sy;

impl Proto for Sy {
    fn hello(&self, _out: &mut Vec<u8>) {}

    fn subscribe(&self, out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64) {
        let queue = queue
            .map(|q| format!(",\"queue\":\"{q}\""))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            r#"{{"jsonrpc":"2.0","method":"bus.subscribe","params":{{"topics":["{subject}"]{queue}}},"id":{sid}}}"#
        );
    }

    fn barrier(&self, out: &mut Vec<u8>) {
        let _ = writeln!(
            out,
            r#"{{"jsonrpc":"2.0","method":"sys.ping","id":{BARRIER_ID}}}"#
        );
    }

    fn publish(&self, out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
        out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"bus.publish","params":{"topic":""#);
        out.extend_from_slice(subject.as_bytes());
        out.extend_from_slice(br#"","data":""#);
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\"}}\n");
    }

    fn request(&self, out: &mut Vec<u8>, subject: &str, _who: usize, id: u64, payload: &[u8]) {
        out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"bus.request","params":{"topic":""#);
        out.extend_from_slice(subject.as_bytes());
        out.extend_from_slice(br#"","data":""#);
        out.extend_from_slice(payload);
        let _ = writeln!(out, r#"","timeout_ms":5000}},"id":{id}}}"#);
    }

    fn inbox_subscription(&self, _who: usize) -> Option<String> {
        None
    }

    fn respond(&self, out: &mut Vec<u8>, reply: &[u8], payload: &[u8]) {
        // A notification: no `true` comes back, as NATS's PUB answers nothing.
        out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"bus.reply","params":{"reply":""#);
        out.extend_from_slice(reply);
        out.extend_from_slice(br#"","data":""#);
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\"}}\n");
    }

    fn pong(&self, _out: &mut Vec<u8>) {}

    fn parse<'a>(&self, buf: &'a [u8]) -> Parsed<'a> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > MAX_LINE {
                return Err(format!("a line longer than {MAX_LINE} bytes"));
            }
            return Ok(None);
        };
        Ok(Some((json_event(&buf[..nl])?, nl + 1)))
    }
}

/// Classifies one JSON line from switchyard. The fields are found by name
/// (`"name":`), not by a full JSON parse: the client must cost little next
/// to the server, and the only strings in these lines are the bench's own
/// subjects, inboxes and payloads, which hold no quotes or field names.
fn json_event(line: &[u8]) -> Result<Event<'_>, String> {
    let bad = || format!("unexpected line: {}", String::from_utf8_lossy(line));
    if let Some(method) = json_field(line, "method") {
        if method != b"bus.message" {
            // bus.overflow and the like: the run is not measuring what it should.
            return Ok(Event::Error {
                id: None,
                code: 0,
                text: line,
            });
        }
        return Ok(Event::Msg {
            subject: json_field(line, "topic").ok_or_else(bad)?,
            reply: json_field(line, "reply"),
            payload: json_field(line, "data").ok_or_else(bad)?,
        });
    }
    let id = json_field(line, "id").and_then(parse_u64);
    if memchr::memmem::find(line, b"\"error\":").is_some() {
        let code = json_field(line, "code")
            .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
            .ok_or_else(bad)?;
        let text = json_field(line, "message").unwrap_or(b"");
        return Ok(Event::Error { id, code, text });
    }
    if id == Some(BARRIER_ID) {
        return Ok(Event::Pong);
    }
    let result = json_field(line, "result").ok_or_else(bad)?;
    Ok(Event::Reply { id, result })
}

/// The value of the first `"name":` in `line`: a string's content (without
/// its quotes; escapes are skipped over, not decoded), or a scalar's text up
/// to the next `,`, `}` or `]`. `None` when absent or `null`.
fn json_field<'a>(line: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut key = Vec::with_capacity(name.len() + 3);
    key.push(b'"');
    key.extend_from_slice(name.as_bytes());
    key.extend_from_slice(b"\":");
    let at = memchr::memmem::find(line, &key)? + key.len();
    let rest = &line[at..];
    let skip = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let rest = &rest[skip..];
    if let Some(s) = rest.strip_prefix(b"\"") {
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'\\' => i += 2,
                b'"' => return Some(&s[..i]),
                _ => i += 1,
            }
        }
        return None;
    }
    let end = rest
        .iter()
        .position(|&b| matches!(b, b',' | b'}' | b']'))
        .unwrap_or(rest.len());
    let v = rest[..end].trim_ascii();
    (!v.is_empty() && v != b"null").then_some(v)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// nats-server: the NATS client protocol (text control lines ending in
/// CRLF, payloads counted in bytes).
struct Nats;

impl Proto for Nats {
    fn hello(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n",
        );
    }

    fn subscribe(&self, out: &mut Vec<u8>, subject: &str, queue: Option<&str>, sid: u64) {
        let _ = match queue {
            Some(q) => write!(out, "SUB {subject} {q} {sid}\r\n"),
            None => write!(out, "SUB {subject} {sid}\r\n"),
        };
    }

    fn barrier(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PING\r\n");
    }

    fn publish(&self, out: &mut Vec<u8>, subject: &str, payload: &[u8]) {
        let _ = write!(out, "PUB {subject} {}\r\n", payload.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    fn request(&self, out: &mut Vec<u8>, subject: &str, who: usize, id: u64, payload: &[u8]) {
        let _ = write!(
            out,
            "PUB {subject} _INBOX.bench{who}.{id} {}\r\n",
            payload.len()
        );
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    fn inbox_subscription(&self, who: usize) -> Option<String> {
        Some(format!("_INBOX.bench{who}.*"))
    }

    fn respond(&self, out: &mut Vec<u8>, reply: &[u8], payload: &[u8]) {
        out.extend_from_slice(b"PUB ");
        out.extend_from_slice(reply);
        let _ = write!(out, " {}\r\n", payload.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    }

    fn pong(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"PONG\r\n");
    }

    fn parse<'a>(&self, buf: &'a [u8]) -> Parsed<'a> {
        nats_event(buf)
    }
}

/// One event from the front of `buf` in the NATS protocol.
fn nats_event(buf: &[u8]) -> Parsed<'_> {
    let Some(cr) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(format!("a control line longer than {MAX_LINE} bytes"));
        }
        return Ok(None);
    };
    let line = &buf[..cr];
    let head = cr + 2;
    let mut words = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    let op = words.next().unwrap_or(b"");
    let bad = || format!("bad line: {}", String::from_utf8_lossy(line));
    let is = |name: &[u8]| op.eq_ignore_ascii_case(name);
    if is(b"MSG") || is(b"HMSG") {
        let args: Vec<&[u8]> = words.collect();
        // MSG subject sid [reply] size; HMSG subject sid [reply] hsize size.
        let sizes = if is(b"MSG") { 1 } else { 2 };
        if args.len() != 2 + sizes && args.len() != 3 + sizes {
            return Err(bad());
        }
        let num = |w: &[u8]| parse_u64(w).map(|n| n as usize).ok_or_else(bad);
        let total = num(args[args.len() - 1])?;
        let headers = if sizes == 2 {
            num(args[args.len() - 2])?
        } else {
            0
        };
        if headers > total || total > 64 << 20 {
            return Err(bad());
        }
        if buf.len() < head + total + 2 {
            return Ok(None);
        }
        if &buf[head + total..head + total + 2] != b"\r\n" {
            return Err(format!("{}: payload not followed by CRLF", bad()));
        }
        let reply = (args.len() == 3 + sizes).then(|| args[2]);
        let event = Event::Msg {
            subject: args[0],
            reply,
            payload: &buf[head + headers..head + total],
        };
        return Ok(Some((event, head + total + 2)));
    }
    let event = if is(b"PING") {
        Event::Ping
    } else if is(b"PONG") {
        Event::Pong
    } else if is(b"-ERR") {
        Event::Error {
            id: None,
            code: 0,
            text: line,
        }
    } else if is(b"INFO") || is(b"+OK") {
        Event::Other
    } else {
        return Err(bad());
    };
    Ok(Some((event, head)))
}

fn proto(kind: ProtoKind) -> &'static dyn Proto {
    match kind {
        ProtoKind::Sy => &Sy,
        ProtoKind::Nats => &Nats,
    }
}

// --- connections ----------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Requester,
    Responder,
    Subscriber,
    Publisher,
}

struct Conn {
    sock: TcpStream,
    role: Role,
    /// The index among requesters (their inbox and the request ids).
    who: usize,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
}

/// A JSON-RPC answer seen during setup.
type SetupReply = (Option<u64>, Result<Vec<u8>, (i64, String)>);

/// Connects, sends `hello` + `send` + a barrier, and reads until the
/// barrier's answer (blocking, 10 s at most). Returns the socket, the
/// bytes read after the barrier, and the replies and errors seen before it.
fn setup(
    a: &Args,
    p: &dyn Proto,
    send: &[u8],
) -> Result<(std::net::TcpStream, Vec<u8>, Vec<SetupReply>), String> {
    let mut sock = std::net::TcpStream::connect_timeout(&a.addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {}: {e}", a.addr))?;
    sock.set_read_timeout(Some(STALL))
        .map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    p.hello(&mut out);
    out.extend_from_slice(send);
    p.barrier(&mut out);
    sock.write_all(&out)
        .map_err(|e| format!("setup write: {e}"))?;
    let mut inbuf = Vec::new();
    let mut replies = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut used = 0;
        while let Some((ev, n)) = p.parse(&inbuf[used..])? {
            used += n;
            match ev {
                Event::Pong => {
                    inbuf.drain(..used);
                    return Ok((sock, inbuf, replies));
                }
                Event::Reply { id, result } => replies.push((id, Ok(result.to_vec()))),
                Event::Error { id, code, text } => {
                    replies.push((id, Err((code, String::from_utf8_lossy(text).into_owned()))))
                }
                Event::Ping => {
                    let mut pong = Vec::new();
                    p.pong(&mut pong);
                    sock.write_all(&pong).map_err(|e| e.to_string())?;
                }
                Event::Msg { .. } | Event::Other => {}
            }
        }
        inbuf.drain(..used);
        match sock.read(&mut buf) {
            Ok(0) => return Err("server closed a connection during setup".into()),
            Ok(n) => inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("setup read: {e}")),
        }
    }
}

/// The first error among setup replies, as a sentence.
fn first_error(replies: &[SetupReply]) -> Option<(i64, String)> {
    replies.iter().find_map(|(_, r)| r.clone().err())
}

/// Whether this server can run `reqrep`: switchyard answers -32601 for
/// `bus.request` while the method is not built, and something other than
/// -32032 (no responders) for a request nobody listens to.
fn probe_reqrep(a: &Args, p: &dyn Proto) -> Result<bool, String> {
    if a.proto != ProtoKind::Sy {
        return Ok(true);
    }
    let send = br#"{"jsonrpc":"2.0","method":"bus.request","params":{"topic":"bench.probe.nobody","data":1,"timeout_ms":100},"id":1}
"#;
    let (_, _, replies) = setup(a, p, send)?;
    match first_error(&replies) {
        Some((-32601, _)) => Ok(false),
        Some((-32032, _)) => Ok(true),
        Some((code, text)) => Err(format!("probing bus.request: error {code}: {text}")),
        None => Err("probing bus.request: an answer from nobody".into()),
    }
}

/// Opens every connection of the scenario, subscribed and ready. `Ok(None)`
/// when the server cannot run it (already said on stdout).
fn open_all(a: &Args, p: &dyn Proto) -> Result<Option<Vec<Conn>>, String> {
    let mut plan: Vec<(Role, usize, Vec<u8>)> = Vec::new();
    match a.scenario {
        Scenario::ReqRep => {
            if !probe_reqrep(a, p)? {
                println!("reqrep: not supported by this server (bus.request: -32601)");
                return Ok(None);
            }
            for i in 0..a.responders {
                let mut send = Vec::new();
                p.subscribe(&mut send, SVC, Some("responders"), 1);
                plan.push((Role::Responder, i, send));
            }
            for i in 0..a.requesters {
                let mut send = Vec::new();
                if let Some(inbox) = p.inbox_subscription(i) {
                    p.subscribe(&mut send, &inbox, None, 1);
                }
                plan.push((Role::Requester, i, send));
            }
        }
        Scenario::Fanout => {
            for i in 0..a.subscribers {
                let mut send = Vec::new();
                p.subscribe(&mut send, FAN, None, 1);
                plan.push((Role::Subscriber, i, send));
            }
            plan.push((Role::Publisher, 0, Vec::new()));
        }
    }
    let mut conns = Vec::with_capacity(plan.len());
    for (role, who, send) in plan {
        let (sock, inbuf, replies) = setup(a, p, &send)?;
        if let Some((code, text)) = first_error(&replies) {
            if role == Role::Responder {
                println!(
                    "reqrep: not supported by this server (queue subscription: {code} {text})"
                );
                return Ok(None);
            }
            return Err(format!("subscribing: error {code}: {text}"));
        }
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        conns.push(Conn {
            sock: TcpStream::from_std(sock),
            role,
            who,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inbuf,
        });
    }
    Ok(Some(conns))
}

// --- the run ----------------------------------------------------------------------

/// What the measured part of a run counted.
struct Tally {
    done: u64,
    errors: u64,
    hist: Hist,
    /// Fan-out flow control, over the whole run (warm-up included).
    published: u64,
    delivered: u64,
}

impl Tally {
    fn sample(&mut self, payload: &[u8], now: u64) {
        match stamp_of(payload) {
            Some(stamp) => {
                self.hist.record(age_us(stamp, now));
                self.done += 1;
            }
            None => self.error(format!(
                "a payload that is not the bench's: {}",
                String::from_utf8_lossy(payload)
            )),
        }
    }

    fn error(&mut self, what: String) {
        if self.errors == 0 {
            eprintln!("bus_load: {what}");
        }
        self.errors += 1;
    }
}

/// Handles everything complete in `c.inbuf`; queues what to send on `c`.
fn handle_input(
    c: &mut Conn,
    p: &dyn Proto,
    t: &mut Tally,
    next_id: &mut u64,
) -> Result<(), String> {
    let mut used = 0;
    let now = now_stamp();
    while let Some((ev, n)) = p.parse(&c.inbuf[used..])? {
        used += n;
        match (ev, c.role) {
            (Event::Ping, _) => p.pong(&mut c.out),
            (Event::Other | Event::Pong, _) => {}
            (Event::Error { id, code, text }, role) => {
                t.error(format!("error {code}: {}", String::from_utf8_lossy(text)));
                if role == Role::Requester && id.is_some() {
                    // The answer to this requester's call (a timeout, say):
                    // an error, not a stall; it sends the next one.
                    send_request(&mut c.out, c.who, p, next_id);
                }
            }
            (Event::Msg { payload, .. }, Role::Subscriber) => {
                t.delivered += 1;
                t.sample(payload, now);
            }
            (Event::Msg { reply, payload, .. }, Role::Responder) => match reply {
                Some(reply) => p.respond(&mut c.out, reply, payload),
                None => t.error("a request without a reply subject".into()),
            },
            // NATS: the answer on the inbox; switchyard: the call's result.
            (Event::Msg { payload, .. }, Role::Requester)
            | (
                Event::Reply {
                    result: payload, ..
                },
                Role::Requester,
            ) => {
                t.sample(payload, now);
                send_request(&mut c.out, c.who, p, next_id);
            }
            (ev, _) => t.error(format!("unexpected {ev:?}")),
        }
    }
    c.inbuf.drain(..used);
    Ok(())
}

/// Queues requester `who`'s next request, stamped now.
fn send_request(out: &mut Vec<u8>, who: usize, p: &dyn Proto, next_id: &mut u64) {
    *next_id += 1;
    p.request(out, SVC, who, *next_id, &payload(now_stamp()));
}

/// Publishes while fewer than `window` messages per subscriber are on the way.
fn pump(c: &mut Conn, p: &dyn Proto, t: &mut Tally, subscribers: u64, window: u64) {
    while t.published * subscribers < t.delivered + window * subscribers {
        p.publish(&mut c.out, FAN, &payload(now_stamp()));
        t.published += 1;
    }
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

/// Reads everything the socket has now into `c.inbuf`.
fn fill(c: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match c.sock.read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed a connection",
                ))
            }
            Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs the scenario on open connections; returns the measured seconds
/// and the tally.
fn run(a: &Args, p: &dyn Proto, mut conns: Vec<Conn>) -> Result<(f64, Tally), String> {
    let io_err = |e: io::Error| e.to_string();
    let mut poll = Poll::new().map_err(io_err)?;
    let mut events = Events::with_capacity(1024);
    for (i, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(
                &mut c.sock,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(io_err)?;
    }
    let mut t = Tally {
        done: 0,
        errors: 0,
        hist: Hist::new(),
        published: 0,
        delivered: 0,
    };
    let mut next_id = 0u64;
    let publisher = conns.iter().position(|c| c.role == Role::Publisher);
    let (subs, window) = (a.subscribers as u64, a.window as u64);
    for c in conns.iter_mut() {
        if c.role == Role::Requester {
            send_request(&mut c.out, c.who, p, &mut next_id);
        }
    }
    // Bytes read during setup may already hold events.
    for c in conns.iter_mut() {
        handle_input(c, p, &mut t, &mut next_id)?;
        flush(c).map_err(io_err)?;
    }
    let start = Instant::now();
    let warmup_end = start + Duration::from_secs_f64(a.warmup);
    let end = warmup_end + Duration::from_secs_f64(a.seconds);
    let mut warm = a.warmup == 0.0;
    let mut measured_from = start;
    let mut last_progress = start;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(i) = publisher {
            let c = &mut conns[i];
            pump(c, p, &mut t, subs, window);
            flush(c).map_err(io_err)?;
        }
        let now = Instant::now();
        if !warm && now >= warmup_end {
            warm = true;
            measured_from = now;
            t.done = 0;
            t.hist.clear();
        }
        if now >= end {
            break;
        }
        let wait = (end - now).min(Duration::from_millis(100));
        poll.poll(&mut events, Some(wait)).map_err(io_err)?;
        if events.is_empty() {
            if now.duration_since(last_progress) > STALL {
                return Err(format!(
                    "no progress for {} s ({} done)",
                    STALL.as_secs(),
                    t.done
                ));
            }
            continue;
        }
        last_progress = now;
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if ev.is_readable() {
                fill(c, &mut buf).map_err(io_err)?;
                handle_input(c, p, &mut t, &mut next_id)?;
            }
            flush(c).map_err(io_err)?;
        }
    }
    Ok((measured_from.elapsed().as_secs_f64(), t))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bus_load: {e}");
            std::process::exit(2);
        }
    };
    epoch();
    let p = proto(args.proto);
    let conns = match open_all(&args, p) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            eprintln!("bus_load: {e}");
            std::process::exit(1);
        }
    };
    let (secs, t) = match run(&args, p, conns) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bus_load: {e}");
            std::process::exit(1);
        }
    };
    let (subs, reqs, resps) = match args.scenario {
        Scenario::ReqRep => (0, args.requesters, args.responders),
        Scenario::Fanout => (args.subscribers, 0, 0),
    };
    println!(
        "proto={} scenario={} subscribers={subs} requesters={reqs} responders={resps} seconds={secs:.3} rate={:.0} p50_us={} p99_us={} errors={}",
        match args.proto {
            ProtoKind::Sy => "sy",
            ProtoKind::Nats => "nats",
        },
        match args.scenario {
            Scenario::ReqRep => "reqrep",
            Scenario::Fanout => "fanout",
        },
        t.done as f64 / secs,
        t.hist.quantile(0.5),
        t.hist.quantile(0.99),
        t.errors
    );
    if t.errors > 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of `input`, fed in two pieces split at every position:
    /// the parser must wait for the rest, never misread a partial event.
    fn events_split(p: &dyn Proto, input: &[u8]) -> Vec<String> {
        let whole = all_events(p, input, &[input.len()]);
        for cut in 0..=input.len() {
            assert_eq!(
                all_events(p, input, &[cut, input.len()]),
                whole,
                "cut at {cut}"
            );
        }
        // And one byte at a time.
        let bytes: Vec<usize> = (1..=input.len()).collect();
        assert_eq!(all_events(p, input, &bytes), whole);
        whole
    }

    /// Parses `input` as if it arrived in reads ending at `ends`.
    fn all_events(p: &dyn Proto, input: &[u8], ends: &[usize]) -> Vec<String> {
        let mut buf = Vec::new();
        let mut got = Vec::new();
        let mut from = 0;
        for &end in ends {
            buf.extend_from_slice(&input[from..end]);
            from = end;
            let mut used = 0;
            while let Some((ev, n)) = p.parse(&buf[used..]).unwrap() {
                used += n;
                got.push(show(&ev));
            }
            buf.drain(..used);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        got
    }

    fn show(ev: &Event<'_>) -> String {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match ev {
            Event::Msg {
                subject,
                reply,
                payload,
            } => format!("msg {} {:?} {}", s(subject), reply.map(s), s(payload)),
            Event::Reply { id, result } => format!("reply {id:?} {}", s(result)),
            Event::Error { id, code, text } => format!("error {id:?} {code} {}", s(text)),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn nats_msg_and_hmsg_split_across_reads() {
        let input = b"INFO {\"server_id\":\"x\"}\r\nMSG a.b 1 5\r\nhello\r\nMSG a.b 2 _INBOX.x.1 3\r\n\r\n\r\r\nPING\r\n\
HMSG a.c 3 12 17\r\nNATS/1.0\r\n\r\nworld\r\nHMSG a.d 4 r.1 12 12\r\nNATS/1.0\r\n\r\n\r\nPONG\r\n+OK\r\n-ERR 'Unknown'\r\n";
        assert_eq!(
            events_split(&Nats, input),
            [
                "Other",
                "msg a.b None hello",
                "msg a.b Some(\"_INBOX.x.1\") \r\n\r",
                "Ping",
                "msg a.c None world",
                "msg a.d Some(\"r.1\") ",
                "Pong",
                "Other",
                "error None 0 -ERR 'Unknown'",
            ]
        );
    }

    #[test]
    fn nats_refuses_malformed_lines() {
        for bad in [
            &b"MSG a.b 1\r\n"[..],
            b"MSG a 1 r x 5 6\r\n",
            b"MSG a.b 1 five\r\n",
            b"HMSG a 1 9 5\r\n",
            b"WHAT\r\n",
            b"MSG a.b 1 2\r\nabXY",
        ] {
            assert!(nats_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(nats_event(&long).is_err());
        assert_eq!(nats_event(b"MSG a.b 1 2\r\nab").unwrap(), None);
    }

    #[test]
    fn json_lines_split_across_reads() {
        let input = concat!(
            r#"{"jsonrpc":"2.0","method":"bus.message","params":{"topic":"bench.fan","data":"abc"}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"bus.message","params":{"topic":"bench.svc","data":"x\"y","reply":"_INBOX.k1"}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","result":"switchyard-bench00000042","id":17}"#,
            "\n",
            r#"{"jsonrpc":"2.0","result":3,"id":2}"#,
            "\n",
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"no such method"},"id":5}"#,
            "\n",
            r#"{"jsonrpc":"2.0","result":"pong","id":999999999}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"bus.overflow","params":{"message":"slow"}}"#,
            "\n",
        );
        assert_eq!(
            events_split(&Sy, input.as_bytes()),
            [
                "msg bench.fan None abc",
                "msg bench.svc Some(\"_INBOX.k1\") x\\\"y",
                "reply Some(17) switchyard-bench00000042",
                "reply Some(2) 3",
                "error Some(5) -32601 no such method",
                "Pong",
                "error None 0 {\"jsonrpc\":\"2.0\",\"method\":\"bus.overflow\",\"params\":{\"message\":\"slow\"}}",
            ]
        );
    }

    #[test]
    fn json_field_values() {
        let line = br#"{"a": "x", "b":12 ,"c":null,"d":[true],"e":"un\"ended"#;
        assert_eq!(json_field(line, "a"), Some(&b"x"[..]));
        assert_eq!(json_field(line, "b"), Some(&b"12"[..]));
        assert_eq!(json_field(line, "c"), None);
        assert_eq!(json_field(line, "z"), None);
        assert_eq!(json_field(line, "e"), None);
        assert!(json_event(br#"{"jsonrpc":"2.0","id":1}"#).is_err());
        assert!(Sy.parse(&vec![b'{'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn payload_stamps_round_trip_and_wrap() {
        let p = payload(42);
        assert_eq!(&p, b"switchyard-bench00000042");
        assert_eq!(stamp_of(&p), Some(42));
        assert_eq!(stamp_of(b"switchyard-bench0000004x"), None);
        assert_eq!(stamp_of(b"short"), None);
        assert_eq!(age_us(99_999_990, 10), 20);
        assert_eq!(age_us(5, 7), 2);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        assert_eq!(h.quantile(0.99), 0);
        for us in 1..=1000 {
            h.record(us);
        }
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        h.record(1_000_000);
        let top = h.quantile(1.0);
        assert!((984_000..=1_000_000).contains(&top), "{top}");
        for us in [1024, 1500, 65_535, 1 << 30, u64::MAX] {
            let b = Hist::bucket(us);
            assert!(Hist::floor(b) <= us.min((1 << 40) - 1));
            assert!(b < h.counts.len());
        }
        h.clear();
        assert_eq!(h.quantile(0.5), 0);
    }
}
