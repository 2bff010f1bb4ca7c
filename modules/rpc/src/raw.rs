//! Newline-delimited JSON-RPC over raw TCP: one message (request or batch)
//! per line, one reply line per message that has one, in order.
//!
//! [`on_message`] runs on an event loop and never blocks: reads, `sys.*`
//! and `bus.*` are answered from memory straight into the host's output.
//! At the first line that writes, that line and every complete line after
//! it go to the writer, and the connection is deferred: [`on_deferred`]
//! then collects their replies on the host's pool (see [`crate::conns`]).
//! Lines over the size limit also go to [`on_deferred`], which answers
//! them and closes.
//!
//! A line's start may arrive without its end: it is kept in the
//! connection's state (bounded by `max_line_bytes`) and joined with the
//! rest when that arrives.

use std::sync::mpsc;

use abi_stable::std_types::RVec;
use module_api::Verdict;

use crate::conns::ConnState;
use crate::jsonrpc::{self, code, RpcError, Sink};
use crate::methods::{eval_message, needs_writer, Env};
use crate::store::{now_ms, View};
use crate::writer::{Kind, Submission};
use crate::{too_large, Rpc};

/// The lines of `buf` (split on `\n`, a trailing `\r` removed), except the
/// empty piece after a final newline.
pub fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_ends(buf).map(|(line, _)| line)
}

/// The lines of `buf` with the offset just past each one's newline.
fn line_ends(buf: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i + 1);
        let mut line = &buf[pos..end];
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = end;
        Some((line, end))
    })
}

/// `input` cut at line boundaries, given the partial line kept from
/// earlier input.
struct Framed<'a> {
    /// The kept partial line completed by this input (without `\n`), and
    /// where it ends in `input`.
    joined: Option<(Vec<u8>, usize)>,
    /// Whole lines of this input, each ending with `\n`, and where they
    /// start in `input`.
    complete: &'a [u8],
    complete_at: usize,
    /// The unfinished line to keep for later.
    partial: Vec<u8>,
}

fn frame<'a>(kept: &[u8], input: &'a [u8]) -> Framed<'a> {
    let (joined, at) = if kept.is_empty() {
        (None, 0)
    } else {
        match memchr::memchr(b'\n', input) {
            None => {
                return Framed {
                    joined: None,
                    complete: &[],
                    complete_at: input.len(),
                    partial: [kept, input].concat(),
                }
            }
            Some(i) => (Some(([kept, &input[..i]].concat(), i + 1)), i + 1),
        }
    };
    let rest = &input[at..];
    let cut = memchr::memrchr(b'\n', rest).map_or(0, |j| j + 1);
    Framed {
        joined,
        complete: &rest[..cut],
        complete_at: at,
        partial: rest[cut..].to_vec(),
    }
}

impl Framed<'_> {
    /// Every complete line with the offset in `input` just past it.
    fn lines(&self) -> impl Iterator<Item = (&[u8], usize)> {
        let joined = self.joined.as_ref().map(|(l, end)| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            (l, *end)
        });
        let at = self.complete_at;
        joined
            .into_iter()
            .chain(line_ends(self.complete).map(move |(l, end)| (l, at + end)))
    }

    fn oversized(&self, max: usize) -> bool {
        self.partial.len() > max || self.lines().any(|(l, _)| l.len() > max)
    }
}

fn push_line(q: &mut Vec<u8>, line: &[u8]) {
    q.extend_from_slice(line);
    q.push(b'\n');
}

/// Handles input on an event loop.
pub fn on_message(rpc: &Rpc, conn: u64, input: &[u8], out: &mut RVec<u8>) -> Verdict {
    let core = &*rpc.core;
    let st = core.conns.take(conn);
    let mut framed = frame(&st.partial, input);
    if st.pending.is_some() || framed.oversized(core.cfg.max_line_bytes) {
        // Answered (and the connection closed) on the pool.
        core.conns.put_back(conn, st);
        return Verdict::defer(input.len());
    }
    let partial = std::mem::take(&mut framed.partial);
    let replies_before = out.len();
    let mut lines = framed.lines();
    let map = core.store.read();
    let mut env = Env {
        core,
        view: View::Read(&map),
        now: now_ms(),
        conn,
        later: None,
        subscribed: false,
    };
    let mut answered = 0;
    while let Some((line, end)) = lines.next() {
        let msg = jsonrpc::parse(line, core.cfg.max_batch);
        if !needs_writer(&env.view, &msg) {
            if eval_message(&mut env, &msg, out) {
                out.put(b"\n");
            }
            answered = end;
            continue;
        }
        drop(map);
        if out.len() > replies_before {
            // Send what is answered first; the host calls again with the
            // rest (from this line on), which is still in its buffer. (A
            // kept partial line, if any, was the first line: answered.)
            return Verdict::keep(answered).watch_close();
        }
        // This line and every complete one after it go to the writer; the
        // connection waits on the pool for their replies.
        let mut q = Vec::with_capacity(framed.complete.len() + line.len() + 1);
        push_line(&mut q, line);
        for (l, _) in lines {
            push_line(&mut q, l);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let sub = Submission {
            conn,
            kind: Kind::Lines,
            input: q,
            budget: usize::MAX,
            reply: tx,
        };
        let pending = rpc.writer.submit(sub).then_some(rx);
        core.conns.put_back(
            conn,
            ConnState {
                partial,
                partial_http: false,
                pending,
            },
        );
        return Verdict::defer(input.len());
    }
    drop(map);
    core.conns.put_back(
        conn,
        ConnState {
            partial,
            ..ConnState::default()
        },
    );
    Verdict::keep(input.len()).watch_close()
}

fn finish(len: usize, close: bool) -> Verdict {
    if close {
        Verdict::close(len)
    } else {
        Verdict::keep(len).watch_close()
    }
}

fn writer_stopped() -> RpcError {
    RpcError::new(code::STORAGE, "the writer has stopped; nothing was written")
}

/// Handles input on a pool thread (may block); replies go into `out`.
/// Either collects the replies to lines [`on_message`] handed to the
/// writer, or handles `input` itself: in order, waiting for the writer
/// where needed, answering a line over the limit and closing. `conn` is 0
/// for an in-process call, whose input is complete (a last line needs no
/// newline).
pub fn on_deferred<S: Sink>(rpc: &Rpc, conn: u64, input: &[u8], out: &mut S) -> Verdict {
    let core = &*rpc.core;
    let max = core.cfg.max_line_bytes;
    let mut st = if conn == 0 {
        ConnState::default()
    } else {
        core.conns.take(conn)
    };
    if let Some(rx) = st.pending.take() {
        let close = match crate::wait(core.host, || rx.recv()) {
            Ok(reply) => {
                out.put(&reply.out);
                false
            }
            Err(_) => {
                jsonrpc::write_error(out, None, &writer_stopped());
                out.put(b"\n");
                true
            }
        };
        core.conns.put_back(conn, st);
        return finish(input.len(), close);
    }
    let mut framed = frame(&st.partial, input);
    let last = if conn == 0 && !framed.partial.is_empty() {
        Some(std::mem::take(&mut framed.partial))
    } else {
        None
    };
    let mut close = false;
    let mut queue: Option<Vec<u8>> = None;
    {
        let map = core.store.read();
        let mut env = Env {
            core,
            view: View::Read(&map),
            now: now_ms(),
            conn,
            later: None,
            subscribed: false,
        };
        let all = framed.lines().map(|(l, _)| l).chain(last.as_deref());
        for line in all {
            if line.len() > max {
                close = true;
                match &mut queue {
                    // The writer answers it in its place, then we close.
                    Some(q) => push_line(q, line),
                    None => {
                        jsonrpc::write_error(out, None, &too_large(core));
                        out.put(b"\n");
                    }
                }
                break;
            }
            if let Some(q) = &mut queue {
                push_line(q, line);
                continue;
            }
            let msg = jsonrpc::parse(line, core.cfg.max_batch);
            if needs_writer(&env.view, &msg) {
                let mut q = Vec::new();
                push_line(&mut q, line);
                queue = Some(q);
                continue;
            }
            if eval_message(&mut env, &msg, out) {
                out.put(b"\n");
            }
        }
    }
    if let Some(q) = queue {
        match rpc.writer.call(conn, Kind::Lines, q, usize::MAX) {
            Ok(reply) => out.put(&reply.out),
            Err(e) => {
                jsonrpc::write_error(out, None, &e);
                out.put(b"\n");
                close = true;
            }
        }
    }
    if !close && framed.partial.len() > max {
        jsonrpc::write_error(out, None, &too_large(core));
        out.put(b"\n");
        close = true;
    }
    if conn != 0 && !close {
        st.partial = framed.partial;
        core.conns.put_back(conn, st);
    }
    finish(input.len(), close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines() {
        let v: Vec<&[u8]> = lines(b"a\r\nb\n\nc\n").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"x").collect::<Vec<_>>(), [b"x"]);
        let ends: Vec<usize> = line_ends(b"ab\ncd\n").map(|(_, e)| e).collect();
        assert_eq!(ends, [3, 6]);
    }

    #[test]
    fn frames_partial_lines() {
        let f = frame(b"", b"{1}\n{2}\n{3");
        assert!(f.joined.is_none());
        assert_eq!(f.complete, b"{1}\n{2}\n");
        assert_eq!(f.partial, b"{3");
        let ends: Vec<usize> = f.lines().map(|(_, e)| e).collect();
        assert_eq!(ends, [4, 8]);
        let f = frame(b"{3", b"4}\r\n{5}\n");
        let v: Vec<(&[u8], usize)> = f.lines().collect();
        assert_eq!(v, [(&b"{34}"[..], 4), (&b"{5}"[..], 8)]);
        assert!(f.partial.is_empty());
        let f = frame(b"{3", b"4");
        assert_eq!(f.partial, b"{34");
        assert_eq!(f.lines().count(), 0);
        assert!(f.oversized(2));
        assert!(!f.oversized(3));
    }
}
