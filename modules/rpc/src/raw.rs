//! Newline-delimited JSON-RPC over raw TCP: one message (request or batch)
//! per line, one reply line per message that has one, in order.
//!
//! [`on_message`] runs on an event loop and never blocks: reads, `sys.*`
//! and `bus.*` are answered from memory straight into the host's output.
//! A line that writes, with the writing lines right after it, goes to the
//! writer, and the connection is deferred: [`on_deferred`] then collects
//! their replies on the host's pool (see [`crate::conns`]); the lines
//! after them are handled by the next call.
//!
//! # Input stays with the host
//!
//! A call consumes complete lines only. A line whose newline has not
//! arrived stays in the host's buffer, where the host's
//! `max_message_size` and message timeout bound it like any message; the
//! module remembers only how far it already searched that start for a
//! newline ([`crate::conns::ConnState::scanned`]), so a line arriving in
//! many pieces is searched once, never copied. With no complete line
//! buffered the answer is `NeedMore`.
//!
//! # Output stays bounded
//!
//! A call stops answering once its output reaches the host's budget
//! ([`ConnInfo::out_limit`]; [`DEFAULT_OUT_BUDGET`] when the host sets
//! none) and reports the lines answered; the host calls again with the
//! rest once the client has read enough. A run of writing
//! lines handed to the writer is cut so that its replies, estimated from
//! the lines' sizes, fit the same budget; a batch goes alone (its reply is
//! capped at 8 × `max_line_bytes`, see [`crate::methods`]).
//!
//! A line longer than `max_line_bytes` (its line ending included) is
//! answered with -32040, after the replies to the lines before it, and the
//! connection is closed.
//!
//! # Who is calling
//!
//! Each call looks up once who the connection acts as
//! ([`crate::access::Access::who`]); `sys.auth` changes it for the lines
//! after it, and lines handed to the writer carry it along. In protected
//! mode a peer that is not loopback gets -32060 for every line and the
//! connection stays open; a connection that fails `sys.auth`
//! `max_auth_failures` times is closed after that reply.

use crate::access::Peer;
use std::sync::mpsc;

use abi_stable::std_types::RVec;
use module_api::{ConnInfo, Verdict};

use crate::conns::ConnState;
use crate::core::{too_large, Core};
use crate::generation::Rpc;
use crate::host::wait;
use crate::jsonrpc::{self, code, Message, RpcError, Sink};
use crate::methods::{eval_message, needs_writer, only_writes, Env};
use crate::types::Kind;
use crate::writer::Submission;

/// The output budget of a call whose host sets none ([`ConnInfo::out_limit`]
/// is `u64::MAX`): pipelined replies are never answered in one call beyond
/// this, so no host can be made to buffer gigabytes for a client that
/// does not read. The host calls again with the rest.
pub const DEFAULT_OUT_BUDGET: usize = 1 << 20;

/// Where `out` counts as full for this call.
pub(crate) fn out_budget(info: &ConnInfo) -> usize {
    match info.out_limit {
        u64::MAX => DEFAULT_OUT_BUDGET,
        limit => usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

/// What a reply to a writing line may take beyond the line's own length
/// (its id is echoed; results and error messages are short): used to cut
/// a run of writing lines to the output budget.
const REPLY_OVERHEAD: usize = 256;

/// The lines of `buf` (split on `\n`, a trailing `\r` removed), except the
/// empty piece after a final newline.
pub fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i + 1);
        let line = trim(&buf[pos..end]);
        pos = end;
        Some(line)
    })
}

/// A line without its `\n` and a `\r` before it.
fn trim(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Cuts buffered input into complete lines, searching every byte for a
/// newline once across calls: it starts from what the previous call
/// remembered ([`Scanner::scanned`]).
#[derive(Debug)]
pub struct Scanner {
    /// Offset just past the last line returned.
    pos: usize,
    /// Bytes from `pos` on known to hold no newline.
    scanned: usize,
}

impl Scanner {
    /// Starts at the beginning of the input, whose first `scanned` bytes
    /// hold no newline.
    pub fn new(scanned: usize) -> Scanner {
        Scanner { pos: 0, scanned }
    }

    /// The next complete line of `input` (its line ending included), or
    /// `None` when the rest has no newline.
    pub fn next_line<'a>(&mut self, input: &'a [u8]) -> Option<&'a [u8]> {
        let from = self.pos + self.scanned.min(input.len() - self.pos);
        match memchr::memchr(b'\n', &input[from..]) {
            Some(i) => {
                let start = self.pos;
                self.pos = from + i + 1;
                self.scanned = 0;
                Some(&input[start..self.pos])
            }
            None => {
                self.scanned = input.len() - self.pos;
                None
            }
        }
    }

    /// Offset just past the last line returned.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes after [`Scanner::pos`] known to hold no newline: what to
    /// remember when the call consumes exactly `pos` bytes.
    pub fn scanned(&self) -> usize {
        self.scanned
    }
}

/// Writes a line's error reply.
fn put_error<S: Sink>(out: &mut S, e: &RpcError) {
    jsonrpc::write_error(out, None, e);
    out.put(b"\n");
}

/// What [`evaluate`] did with one message.
pub enum Evaluated<'m> {
    /// Answered from memory: the reply (if the message has one) is in the
    /// output, a line ending with `\n`.
    Answered,
    /// It needs the writer (a write, `kv.keys`, or a read the cache cannot
    /// answer): nothing was written; hand the message to the writer.
    Writer(Message<'m>),
}

/// Evaluates one JSON-RPC message (a raw line without its ending, or a
/// WebSocket text message) on the calling thread, from memory: the one
/// place both transports answer a message, so they behave the same. A
/// caller checks `env.close` after it (too many failed logins).
pub fn evaluate<'m, S: Sink>(env: &mut Env<'_>, text: &'m [u8], out: &mut S) -> Evaluated<'m> {
    let msg = jsonrpc::parse(text, env.core.cfg.max_batch);
    if needs_writer(&env.view, &env.who, &msg) {
        return Evaluated::Writer(msg);
    }
    if eval_message(env, &msg, out) {
        out.put(b"\n");
    }
    Evaluated::Answered
}

/// Handles input on an event loop (the generation is live).
pub fn on_message(rpc: &Rpc, info: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let core = &*rpc.core;
    let conn = info.id;
    let max = core.cfg.max_line_bytes;
    let budget = out_budget(info);
    let mut st = core.conns.take(conn);
    if !st.partial.is_empty() && !st.partial_http {
        return handed_over(rpc, conn, st, input, out);
    }
    let mut scan = Scanner::new(st.scanned);
    let peer = crate::access::peer_of(info);
    // Looked up once per call; `sys.auth` changes it for later lines.
    let who = core.access.who(core.host, &core.conns, conn, peer);
    let map = core.store.read();
    let mut env = Env::reading(core, &map, conn, who, peer);
    let verdict = loop {
        let start = scan.pos();
        let Some(raw_line) = scan.next_line(input) else {
            if input.len() - start >= max {
                // Even its newline would not fit.
                put_error(out, &too_large(core));
                break Verdict::close(input.len());
            }
            break if start == 0 {
                Verdict::NEED_MORE
            } else {
                Verdict::keep(start).watch_close()
            };
        };
        if raw_line.len() > max {
            put_error(out, &too_large(core));
            break Verdict::close(input.len());
        }
        if let Evaluated::Writer(msg) = evaluate(&mut env, trim(raw_line), out) {
            if start > 0 {
                // Send what is answered first; the host calls again with
                // the rest, from this line on.
                break Verdict::keep(start).watch_close();
            }
            let room = budget.saturating_sub(out.len());
            let (q, end) = writer_run(core, &msg, raw_line, &mut scan, input, room);
            let (tx, rx) = mpsc::sync_channel(1);
            let sub = Submission {
                conn,
                who: env.who.clone(),
                peer,
                kind: Kind::Lines,
                input: q,
                // The run is already cut to fit (see `writer_run`), so the
                // writer answers every line of it.
                budget: usize::MAX,
                reply: tx,
            };
            st.pending = rpc.writer.submit(sub).then_some(rx);
            break Verdict::defer(end);
        }
        if env.close {
            // Too many failed logins: this reply is the last.
            break Verdict::close(scan.pos());
        }
        if out.len() >= budget {
            break Verdict::keep(scan.pos()).watch_close();
        }
    };
    drop(map);
    // `scanned` is relative to where the next call's input starts: after
    // a line just returned it is 0 (nothing known), at the end of the
    // complete lines it is the unfinished line's length.
    st.scanned = if verdict.action == module_api::Action::NeedMore
        || verdict.consumed as usize == scan.pos()
    {
        scan.scanned()
    } else {
        0
    };
    core.conns.put_back(conn, st);
    verdict
}

/// The run of lines for the writer that starts with `first` (already
/// parsed; a write, a `kv.keys` or a read the cache cannot answer): those
/// lines, each ending with `\n`, and the offset just past the last one.
/// After the first, only single writing calls join the run (their replies
/// are small); it ends before any other line, a line over the limit or the
/// unfinished line, after a batch (which goes alone), and once the
/// estimated replies fill `budget` (the first line always goes, its reply
/// bounded by `max_value_bytes` or the batch cap).
fn writer_run(
    core: &Core,
    first: &Message<'_>,
    first_raw: &[u8],
    scan: &mut Scanner,
    input: &[u8],
    budget: usize,
) -> (Vec<u8>, usize) {
    let max = core.cfg.max_line_bytes;
    let mut q = Vec::with_capacity(first_raw.len() + 1);
    q.extend_from_slice(trim(first_raw));
    q.push(b'\n');
    let mut end = scan.pos();
    let mut estimate = first_raw.len() + REPLY_OVERHEAD;
    if matches!(first, Message::Batch(_)) {
        return (q, end);
    }
    while estimate < budget {
        let Some(raw_line) = scan.next_line(input) else {
            break;
        };
        if raw_line.len() > max {
            break;
        }
        let line = trim(raw_line);
        let msg = jsonrpc::parse(line, core.cfg.max_batch);
        if !only_writes(&msg) {
            break;
        }
        q.extend_from_slice(line);
        q.push(b'\n');
        end = scan.pos();
        estimate += raw_line.len() + REPLY_OVERHEAD;
    }
    (q, end)
}

/// Raw lines while the generation does not serve (frozen for a reload, or
/// in standby): the first complete line goes to the pool, which forwards
/// it to the successor or waits until this generation serves. One line
/// at a time, so the reply to each is bounded like any other.
pub fn defer_line(rpc: &Rpc, info: &ConnInfo, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let core = &*rpc.core;
    let mut st = core.conns.take(info.id);
    let mut scan = Scanner::new(st.scanned);
    let verdict = match scan.next_line(input) {
        Some(line) => Verdict::defer(line.len()),
        None if input.len() >= core.cfg.max_line_bytes => {
            put_error(out, &too_large(core));
            Verdict::close(input.len())
        }
        None => Verdict::NEED_MORE,
    };
    st.scanned = if verdict.action == module_api::Action::Defer {
        0
    } else {
        scan.scanned()
    };
    core.conns.put_back(info.id, st);
    verdict
}

/// A connection whose line start was handed over by a generation of an
/// older version (which kept it in its own state): completes that line
/// with the input up to the first newline, which goes to the pool whole.
fn handed_over(
    rpc: &Rpc,
    conn: u64,
    mut st: ConnState,
    input: &[u8],
    out: &mut RVec<u8>,
) -> Verdict {
    let core = &*rpc.core;
    let mut scan = Scanner::new(st.scanned);
    let verdict = match scan.next_line(input) {
        Some(line) => Verdict::defer(line.len()),
        None if st.partial.len() + input.len() >= core.cfg.max_line_bytes => {
            put_error(out, &too_large(core));
            Verdict::close(input.len())
        }
        None => Verdict::NEED_MORE,
    };
    st.scanned = scan.scanned();
    core.conns.put_back(conn, st);
    verdict
}

fn finish(len: usize, close: bool) -> Verdict {
    if close {
        Verdict::close(len)
    } else {
        Verdict::keep(len).watch_close()
    }
}

/// -32020 for a message the writer could not take (its thread has
/// stopped).
pub(crate) fn writer_stopped() -> RpcError {
    RpcError::new(code::STORAGE, "the writer has stopped; nothing was written")
}

/// Handles input on a pool thread (may block); replies go into `out`.
/// Either collects the replies to lines [`on_message`] handed to the
/// writer, or handles `input` itself: every line in order, waiting for the
/// writer where needed, answering a line over the limit and closing.
/// `conn` is 0 for an in-process call, whose input is complete (a last
/// line needs no newline); otherwise the input is complete lines (one,
/// from [`defer_line`]), or an unfinished line an older generation
/// forwarded, which is kept until its end arrives.
pub fn on_deferred<S: Sink>(
    rpc: &Rpc,
    conn: u64,
    peer: Peer,
    input: &[u8],
    out: &mut S,
) -> Verdict {
    let core = &*rpc.core;
    let max = core.cfg.max_line_bytes;
    let mut st = if conn == 0 {
        ConnState::default()
    } else {
        core.conns.take(conn)
    };
    if let Some(rx) = st.pending.take() {
        let close = match wait(core.host, || rx.recv()) {
            Ok(reply) => {
                out.put(&reply.out);
                reply.close
            }
            Err(_) => {
                put_error(out, &writer_stopped());
                true
            }
        };
        core.conns.put_back(conn, st);
        return finish(input.len(), close);
    }
    // The start of a line an older generation kept (see `handed_over`).
    let joined;
    let data = if !st.partial.is_empty() && !st.partial_http {
        joined = [&std::mem::take(&mut st.partial)[..], input].concat();
        &joined[..]
    } else {
        input
    };
    st.scanned = 0;
    let complete = memchr::memrchr(b'\n', data).map_or(0, |i| i + 1);
    let (whole, rest) = if conn == 0 {
        (data, &[][..])
    } else {
        data.split_at(complete)
    };
    let mut close = false;
    let mut queue: Option<Vec<u8>> = None;
    let mut who = core.access.who(core.host, &core.conns, conn, peer);
    {
        let map = core.store.read();
        let mut env = Env::reading(core, &map, conn, who.clone(), peer);
        for line in lines(whole) {
            if line.len() >= max {
                close = true;
                match &mut queue {
                    // The writer answers it in its place, then we close.
                    Some(q) => push_line(q, line),
                    None => put_error(out, &too_large(core)),
                }
                break;
            }
            if let Some(q) = &mut queue {
                push_line(q, line);
                continue;
            }
            if let Evaluated::Writer(_) = evaluate(&mut env, line, out) {
                let mut q = Vec::new();
                push_line(&mut q, line);
                queue = Some(q);
                continue;
            }
            if env.close {
                close = true;
                break;
            }
        }
        who = env.who;
    }
    if let Some(q) = queue {
        match wait(core.host, || {
            rpc.writer.call(conn, who, peer, Kind::Lines, q, usize::MAX)
        }) {
            Ok(reply) => {
                out.put(&reply.out);
                close |= reply.close;
            }
            Err(e) => {
                put_error(out, &e);
                close = true;
            }
        }
    }
    if !close && rest.len() >= max {
        put_error(out, &too_large(core));
        close = true;
    }
    if conn != 0 && !close {
        // Only an older generation forwards an unfinished line.
        st.partial = rest.to_vec();
        st.partial_http = false;
        core.conns.put_back(conn, st);
    }
    finish(input.len(), close)
}

fn push_line(q: &mut Vec<u8>, line: &[u8]) {
    q.extend_from_slice(line);
    q.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use crate::testing::core_with;
    use std::sync::Arc;

    #[test]
    fn splits_lines() {
        let v: Vec<&[u8]> = lines(b"a\r\nb\n\nc\n").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"x").collect::<Vec<_>>(), [b"x"]);
    }

    #[test]
    fn scanner_returns_complete_lines_and_remembers_the_search() {
        let mut s = Scanner::new(0);
        let input = b"{1}\n{2}\r\n{3";
        assert_eq!(s.next_line(input), Some(&b"{1}\n"[..]));
        assert_eq!(s.pos(), 4);
        assert_eq!(s.next_line(input), Some(&b"{2}\r\n"[..]));
        assert_eq!(s.next_line(input), None);
        assert_eq!((s.pos(), s.scanned()), (9, 2), "`{{3` searched");
        // The next call's input starts at the unfinished line; the search
        // resumes after the 2 bytes already searched.
        let mut s = Scanner::new(2);
        assert_eq!(s.next_line(b"{34"), None);
        assert_eq!(s.scanned(), 3);
        let mut s = Scanner::new(3);
        assert_eq!(s.next_line(b"{345}\n{6"), Some(&b"{345}\n"[..]));
        assert_eq!(s.scanned(), 0, "nothing known after a line");
        assert_eq!(s.next_line(b"{345}\n{6"), None);
        assert_eq!(s.scanned(), 2);
        // A stale count larger than the input is clamped.
        let mut s = Scanner::new(99);
        assert_eq!(s.next_line(b"ab"), None);
        assert_eq!(s.scanned(), 2);
    }

    #[test]
    fn scanner_never_searches_a_byte_twice() {
        // A 1 MB line arriving 1 KB at a time: every call searches only
        // the new kilobyte (the remembered count moves by 1 KB a call).
        let mut scanned = 0;
        let mut buf = Vec::new();
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'x'; 1000]);
            let mut s = Scanner::new(scanned);
            assert_eq!(s.next_line(&buf), None);
            assert_eq!(s.scanned(), buf.len());
            scanned = s.scanned();
        }
        buf.push(b'\n');
        let mut s = Scanner::new(scanned);
        assert_eq!(s.next_line(&buf).map(<[u8]>::len), Some(1_000_001));
    }

    fn rpc_with(config: serde_json::Value) -> (Rpc, crate::testdir::TestDir) {
        let (core, dir) = core_with(config);
        let core: Arc<Core> = core;
        let writer = crate::writer::Writer::spawn(
            core.clone(),
            crate::writer::Start::Ready {
                db: crate::db::Db::open(&core.cfg.db, core.cfg.sync).unwrap(),
                owner: crate::owner::Owner::try_acquire(&crate::owner::Owner::lock_path(
                    &core.cfg.db,
                ))
                .unwrap()
                .unwrap(),
            },
        )
        .unwrap();
        let rpc = Rpc {
            core,
            writer,
            handover: Default::default(),
            token: "t".into(),
        };
        (rpc, dir)
    }

    fn lo() -> Peer {
        Peer::new(std::net::IpAddr::from([127, 0, 0, 1]), false)
    }

    fn info(id: u64, out_limit: u64) -> ConnInfo {
        let mut i = ConnInfo::new(id, "127.0.0.1:1".parse().unwrap(), false);
        i.out_limit = out_limit;
        i
    }

    fn get(id: u64) -> String {
        format!("{{\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":[\"big\"],\"id\":{id}}}\n")
    }

    #[test]
    fn stops_answering_at_the_output_budget() {
        let (rpc, _dir) = rpc_with(serde_json::json!({}));
        let set = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":[\"big\",\"{}\"],\"id\":0}}\n",
            "v".repeat(10_000)
        );
        let mut out = Vec::new();
        on_deferred(&rpc, 0, Peer::UNKNOWN, set.as_bytes(), &mut out);
        assert!(out.starts_with(br#"{"jsonrpc":"2.0","result":true"#));

        let input: String = (1..=100).map(get).collect();
        let mut out = RVec::new();
        let v = on_message(&rpc, &info(5, 25_000), input.as_bytes(), &mut out);
        // Three replies of 10 KB reach 25 KB: it stops there.
        assert_eq!(v.action, module_api::Action::Keep);
        assert_eq!(v.consumed as usize, 3 * get(1).len());
        assert_eq!(lines(&out).count(), 3);
        // A host that sets no budget gets the default one (1 MiB).
        let mut out = RVec::new();
        let v = on_message(&rpc, &info(5, u64::MAX), input.as_bytes(), &mut out);
        assert_eq!(v.consumed as usize, input.len());
        let mut out = RVec::new();
        let many: String = (1..=200).map(get).collect();
        let v = on_message(&rpc, &info(5, u64::MAX), many.as_bytes(), &mut out);
        let n = lines(&out).count();
        assert!(out.len() >= DEFAULT_OUT_BUDGET && out.len() - 10_100 < DEFAULT_OUT_BUDGET);
        assert_eq!(
            v.consumed as usize,
            (1..=n as u64).map(|i| get(i).len()).sum::<usize>()
        );
        rpc.writer.stop();
    }

    /// Protected mode: a connection from a proxy route of ours back at
    /// our own port has a loopback address but is not loopback.
    #[test]
    fn a_self_forwarded_peer_is_not_loopback() {
        let (rpc, _dir) = rpc_with(serde_json::json!({}));
        let whoami = "{\"jsonrpc\":\"2.0\",\"method\":\"sys.whoami\",\"id\":1}\n";
        let mut out = RVec::new();
        on_message(&rpc, &info(5, u64::MAX), whoami.as_bytes(), &mut out);
        assert!(String::from_utf8_lossy(&out).contains(r#""auth":"loopback""#));
        let mut fwd = info(6, u64::MAX);
        fwd.self_forwarded = true;
        let mut out = RVec::new();
        on_message(&rpc, &fwd, whoami.as_bytes(), &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("loopback\""), "{text}");
        assert!(text.contains("-32060"), "{text}");
        rpc.writer.stop();
    }

    #[test]
    fn unfinished_lines_stay_with_the_host() {
        let (rpc, _dir) = rpc_with(serde_json::json!({"max_line_bytes": 100}));
        let ping = "{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\",\"id\":1}\n";
        let mut out = RVec::new();
        // Only a line start: nothing consumed, nothing written.
        let v = on_message(&rpc, &info(7, u64::MAX), &ping.as_bytes()[..10], &mut out);
        assert_eq!(v, Verdict::NEED_MORE);
        assert!(out.is_empty());
        assert_eq!(rpc.core.conns.take(7).scanned, 10);
        // A complete line and the start of the next: the line is consumed.
        let input = format!("{ping}{}", &ping[..20]);
        let v = on_message(&rpc, &info(7, u64::MAX), input.as_bytes(), &mut out);
        assert_eq!(v.action, module_api::Action::Keep);
        assert_eq!(v.consumed as usize, ping.len());
        assert_eq!(rpc.core.conns.take(7).scanned, 20);
        // An unfinished line that reaches the limit: -32040 and close.
        let mut out = RVec::new();
        let v = on_message(&rpc, &info(7, u64::MAX), &[b'{'; 100], &mut out);
        assert_eq!(v.action, module_api::Action::Close);
        assert!(String::from_utf8_lossy(&out).contains("-32040"));
        rpc.writer.stop();
    }

    #[test]
    fn a_write_goes_to_the_writer_with_the_writes_after_it() {
        let (rpc, _dir) = rpc_with(serde_json::json!({}));
        let set = |i: u32| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":[\"k\",{i}],\"id\":{i}}}\n"
            )
        };
        let get_k = "{\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":[\"k\"],\"id\":3}\n";
        let input = format!("{}{}{get_k}{}", set(1), set(2), set(4));
        let mut out = RVec::new();
        let v = on_message(&rpc, &info(9, u64::MAX), input.as_bytes(), &mut out);
        assert_eq!(v.action, module_api::Action::Defer);
        assert_eq!(v.consumed as usize, set(1).len() + set(2).len());
        let mut out = Vec::new();
        let v = on_deferred(
            &rpc,
            9,
            lo(),
            &input.as_bytes()[..v.consumed as usize],
            &mut out,
        );
        assert_eq!(v.action, module_api::Action::Keep);
        assert_eq!(lines(&out).count(), 2);
        // The read after them is answered on the event loop and sees them.
        let rest = &input.as_bytes()[set(1).len() + set(2).len()..];
        let mut out = RVec::new();
        let v = on_message(&rpc, &info(9, u64::MAX), rest, &mut out);
        assert_eq!(v.consumed as usize, get_k.len());
        assert!(out.starts_with(br#"{"jsonrpc":"2.0","result":2,"id":3}"#));
        // A budget cuts a run of writes short.
        let many: String = (10..30).map(set).collect();
        let v = on_message(&rpc, &info(9, 1000), many.as_bytes(), &mut RVec::new());
        assert_eq!(v.action, module_api::Action::Defer);
        assert!((v.consumed as usize) < many.len() / 2, "{}", v.consumed);
        on_deferred(
            &rpc,
            9,
            lo(),
            &many.as_bytes()[..v.consumed as usize],
            &mut Vec::new(),
        );
        rpc.writer.stop();
    }
}
