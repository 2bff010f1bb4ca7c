//! One client connection: its socket, its buffers and where it is in the
//! current message.
//!
//! Buffers are taken from the event loop's pool when bytes arrive and given
//! back when the connection goes idle, so an idle keep-alive connection
//! holds no buffer at all.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use abi_stable::std_types::RVec;
use mio::net::TcpStream;
use module_api::abi::{FileBody, SharedBody};
use module_api::ConnInfo;

use crate::generation::Generation;
use crate::sys;

/// Size of a pooled read buffer.
pub const READ_BUF: usize = 16 * 1024;
/// A write buffer or push queue whose capacity grew past this for a large
/// message is freed once empty rather than kept for the next one, so a
/// connection that once carried a big answer does not hold it forever.
pub const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// Connection ids carry where the connection lives, so that a push can be
/// routed to its loop and slab slot: `seq << 32 | loop << 24 | key`.
pub const MAX_KEY: usize = 1 << 24;

/// Builds a connection id.
pub fn make_id(seq: u64, loop_idx: usize, key: usize) -> u64 {
    debug_assert!(loop_idx < 256 && key < MAX_KEY);
    (seq << 32) | ((loop_idx as u64) << 24) | key as u64
}

/// The loop index and slab key of a connection id.
pub fn id_parts(id: u64) -> (usize, usize) {
    (((id >> 24) & 0xff) as usize, (id & 0xff_ffff) as usize)
}

/// Where the connection is in its current message.
pub enum Stage {
    /// Between messages, or reading the first bytes of one.
    Routing,
    /// Routed: the module is reading the message.
    Module(Arc<Generation>),
    /// The message is on the worker pool.
    Deferred(Arc<Generation>),
    /// An admin command is running on the control thread.
    Admin,
    /// Relayed to an upstream server (see `proxy`).
    Proxy(Box<crate::proxy::Session>),
}

/// A growable read buffer with a consumed offset, so that pipelined
/// messages are consumed without moving bytes each time.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn is_attached(&self) -> bool {
        !self.data.is_empty()
    }

    /// Bytes held beyond a pooled buffer's size (grown for a large
    /// message): what `max_buffered_bytes` counts.
    pub fn grown(&self) -> usize {
        self.data.len().saturating_sub(READ_BUF)
    }

    pub fn attach(&mut self, buf: Vec<u8>) {
        debug_assert!(buf.len() >= READ_BUF);
        self.data = buf;
        self.start = 0;
        self.end = 0;
    }

    /// Gives the buffer back (only when empty).
    pub fn detach(&mut self) -> Option<Vec<u8>> {
        if self.is_attached() && self.is_empty() {
            self.start = 0;
            self.end = 0;
            Some(std::mem::take(&mut self.data))
        } else {
            None
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room to read into; false when the buffer holds `max` bytes.
    fn make_room(&mut self, max: usize) -> bool {
        if self.end < self.data.len() {
            return true;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.data.len() >= max {
            return false;
        }
        let new_len = (self.data.len() * 2).min(max);
        self.data.resize(new_len, 0);
        true
    }
}

/// A file range still to be sent after the write buffer. Dropping it
/// closes the descriptor or hands it back to the module that lent it.
pub struct PendingFile {
    pub file: FileBody,
    pub offset: u64,
    pub remaining: u64,
}

impl PendingFile {
    pub fn new(file: FileBody) -> PendingFile {
        let (offset, remaining) = (file.offset(), file.len());
        PendingFile {
            file,
            offset,
            remaining,
        }
    }
}

/// `pread(2)`: the TLS path and in-process calls, where `sendfile` cannot
/// be used.
pub fn read_at(fd: i32, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    crate::sys::read_at(fd, buf, offset)
}

/// The outcome of reading.
pub enum ReadResult {
    /// Read this many bytes (0: nothing available now).
    Read(usize),
    /// The buffer is full at its maximum size.
    Full,
}

pub struct Conn {
    pub sock: TcpStream,
    pub info: ConnInfo,
    /// Its admin standing on the public port (token epoch, failed
    /// `AUTH`s); rights themselves are decided per command.
    pub auth: crate::admin::ConnAuth,
    pub rbuf: ReadBuf,
    pub wbuf: RVec<u8>,
    pub wpos: usize,
    /// Pushed bytes waiting for the current body or file to finish.
    pub push_queue: Vec<u8>,
    /// The module that keeps this connection (`Action::Keep`): its next
    /// message goes there whatever its first bytes.
    pub sticky: Option<Arc<str>>,
    /// The TLS session when the host terminates TLS for this connection.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Whether the first bytes were already looked at for a TLS handshake.
    pub tls_checked: bool,
    /// Whether the completed TLS handshake was looked at for a client
    /// certificate (see [`Conn::take_client_cert`]).
    handshake_seen: bool,
    /// Names from a client certificate are recorded for this connection
    /// in the services: they must be forgotten when it closes.
    pub has_identity: bool,
    /// When the connection was accepted (handshake timeout).
    pub accepted: Instant,
    /// Modules that asked for `on_close` on this connection.
    pub watchers: Vec<Arc<str>>,
    /// Module-owned bytes to send after `wbuf` (released when dropped).
    pub body: Option<SharedBody>,
    /// Bytes of `body` already sent.
    pub body_pos: usize,
    pub file: Option<PendingFile>,
    pub stage: Stage,
    /// The peer closed its sending side.
    pub eof: bool,
    /// Close once the output is flushed.
    pub closing: bool,
    /// The socket may have bytes to read: set by every readable event,
    /// cleared when a read finds it empty (plain TCP only).
    pub read_ready: bool,
    /// An event said the peer closed its side: read until EOF.
    pub peer_closing: bool,
    /// A module answered a message flagged as draining: the connection
    /// closes as soon as it is idle.
    pub answered_draining: bool,
    /// Whether any byte arrived yet: a connection that has sent nothing
    /// gets `first_bytes_timeout_ms` from its accept, not the idle timeout.
    pub heard: bool,
    /// When the first byte of the current message arrived.
    pub msg_start: Option<Instant>,
    /// Last time the connection finished a message or made write progress.
    pub last_activity: Instant,
}

impl Conn {
    pub fn new(sock: TcpStream, info: ConnInfo, now: Instant) -> Conn {
        Conn {
            sock,
            info,
            auth: Default::default(),
            rbuf: ReadBuf::default(),
            wbuf: RVec::new(),
            wpos: 0,
            push_queue: Vec::new(),
            watchers: Vec::new(),
            tls: None,
            tls_checked: false,
            handshake_seen: false,
            has_identity: false,
            accepted: now,
            sticky: None,
            body: None,
            body_pos: 0,
            file: None,
            stage: Stage::Routing,
            eof: false,
            closing: false,
            read_ready: true,
            peer_closing: false,
            answered_draining: false,
            heard: false,
            msg_start: None,
            last_activity: now,
        }
    }

    /// Unsent output bytes (buffer and file).
    pub fn pending_output(&self) -> bool {
        self.wpos < self.wbuf.len()
            || self.body.is_some()
            || self.file.is_some()
            || !self.push_queue.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Unsent bytes (write buffer, shared body, file range, queued
    /// pushes): what the output budget and the push backlog limit count.
    pub fn backlog(&self) -> usize {
        (self.wbuf.len() - self.wpos)
            + self.body.as_ref().map_or(0, |b| b.len() - self.body_pos)
            + self.file.as_ref().map_or(0, |f| f.remaining as usize)
            + self.push_queue.len()
    }

    /// Moves queued pushes into the write buffer once no body or file is
    /// in the way (pushes never split a response).
    pub fn release_pushes(&mut self) -> bool {
        if self.push_queue.is_empty() || self.body.is_some() || self.file.is_some() {
            return false;
        }
        self.wbuf.extend_from_copy_slice(&self.push_queue);
        self.push_queue.clear();
        if self.push_queue.capacity() > KEEP_OUT_CAPACITY {
            self.push_queue = Vec::new();
        }
        true
    }

    /// Whether input processing must wait: work off the loop, a body or
    /// file being sent, or unsent output above `budget` (the output
    /// budget, `max_output_buffer`). While paused the socket is not read
    /// either, so the kernel's buffers hold the client back.
    pub fn paused(&self, budget: usize) -> bool {
        matches!(
            self.stage,
            Stage::Deferred(_) | Stage::Admin | Stage::Proxy(_)
        ) || self.body.is_some()
            || self.file.is_some()
            || over_budget(self.backlog(), budget)
    }

    /// The `out_limit` for a module call appending to `wbuf` now: what is
    /// left of the budget once the unsent output is counted.
    pub fn out_limit(&self, budget: usize) -> u64 {
        out_limit(self.wbuf.len(), self.backlog(), budget)
    }

    /// Frees a write buffer that grew large for one message once it is
    /// empty (see [`KEEP_OUT_CAPACITY`]).
    pub fn shrink_output(&mut self) {
        if self.wbuf.is_empty() && self.wbuf.capacity() > KEEP_OUT_CAPACITY {
            self.wbuf = RVec::new();
        }
    }

    /// Idle: nothing buffered, nothing to send, between messages.
    pub fn idle(&self) -> bool {
        matches!(self.stage, Stage::Routing) && self.rbuf.is_empty() && !self.pending_output()
    }

    /// Reads until `WouldBlock`, the peer's EOF, or a full buffer (through
    /// TLS when the connection is terminated here).
    pub fn read(&mut self, max: usize) -> io::Result<ReadResult> {
        if self.tls.is_some() {
            return self.read_tls(max);
        }
        if !self.read_ready {
            return Ok(ReadResult::Read(0));
        }
        let mut total = 0;
        loop {
            if !self.rbuf.make_room(max) {
                return Ok(if total > 0 {
                    ReadResult::Read(total)
                } else {
                    ReadResult::Full
                });
            }
            let end = self.rbuf.end;
            let room = self.rbuf.data.len() - end;
            match self.sock.read(&mut self.rbuf.data[end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(ReadResult::Read(total));
                }
                Ok(n) => {
                    self.rbuf.end += n;
                    total += n;
                    // A short read emptied the socket: the next read would
                    // only say `WouldBlock`, and new bytes bring a new
                    // (edge-triggered) event. Not when the peer's FIN was
                    // signalled, which must still be read as EOF.
                    if n < room && !self.peer_closing {
                        self.read_ready = false;
                        return Ok(ReadResult::Read(total));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_ready = false;
                    return Ok(ReadResult::Read(total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves decrypted bytes from the TLS session into the read buffer.
    fn drain_plaintext(&mut self, max: usize) -> io::Result<(usize, bool)> {
        let tls = self.tls.as_mut().expect("tls connection");
        let mut total = 0;
        loop {
            if !self.rbuf.make_room(max) {
                return Ok((total, true));
            }
            let end = self.rbuf.end;
            match tls.reader().read(&mut self.rbuf.data[end..]) {
                Ok(0) => {
                    // close_notify: the peer is done sending.
                    self.eof = true;
                    return Ok((total, false));
                }
                Ok(n) => {
                    self.rbuf.end += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, false)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands ciphertext to the TLS session and processes it; on a protocol
    /// error the alert is sent (best effort) and the error returned.
    pub fn feed_tls(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let tls = self.tls.as_mut().expect("tls connection");
        while !bytes.is_empty() {
            tls.read_tls(&mut bytes)?;
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(())
    }

    fn read_tls(&mut self, max: usize) -> io::Result<ReadResult> {
        let mut total = 0;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let (n, full) = self.drain_plaintext(max)?;
            total += n;
            if full {
                return Ok(if total > 0 {
                    ReadResult::Read(total)
                } else {
                    ReadResult::Full
                });
            }
            if self.eof {
                return Ok(ReadResult::Read(total));
            }
            match self.sock.read(&mut scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(ReadResult::Read(total));
                }
                Ok(n) => self.feed_tls(&scratch[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadResult::Read(total))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts pending output into the TLS session and writes its records,
    /// until done or `WouldBlock`.
    fn flush_tls(&mut self) -> io::Result<bool> {
        let mut progress = false;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let tls = self.tls.as_mut().expect("tls connection");
            // Plaintext in, as much as the session buffers.
            let mut moved = 0;
            if self.wpos < self.wbuf.len() {
                moved = tls.writer().write(&self.wbuf[self.wpos..])?;
                self.wpos += moved;
            } else if let Some(b) = &self.body {
                moved = tls.writer().write(&b.bytes()[self.body_pos..])?;
                self.body_pos += moved;
                if self.body_pos >= b.len() {
                    self.body = None;
                    self.body_pos = 0;
                }
            } else if let Some(f) = &mut self.file {
                let want = (f.remaining as usize).min(scratch.len());
                if want > 0 {
                    let n = read_at(f.file.fd(), &mut scratch[..want], f.offset)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file truncated while sending",
                        ));
                    }
                    moved = tls.writer().write(&scratch[..n])?;
                    f.offset += moved as u64;
                    f.remaining -= moved as u64;
                }
                if f.remaining == 0 {
                    self.file = None;
                }
            }
            // Records out.
            while tls.wants_write() {
                match tls.write_tls(&mut self.sock) {
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.wpos >= self.wbuf.len() && self.body.is_none() && self.file.is_none() {
                self.wbuf.clear();
                self.wpos = 0;
                return Ok(progress);
            }
            if moved == 0 {
                return Ok(progress);
            }
        }
    }

    /// Whether a TLS handshake terminated here is still in progress.
    pub fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// The verified client certificate (the leaf, DER), returned once: by
    /// the first call after the TLS handshake completed with one. `None`
    /// before the handshake completes, on later calls, and for a client
    /// that presented none (or a connection not terminated here). rustls
    /// only completes a handshake whose certificate verified.
    pub fn take_client_cert(&mut self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        if self.handshake_seen || self.tls.is_none() || self.tls_handshaking() {
            return None;
        }
        self.handshake_seen = true;
        let tls = self.tls.as_ref()?;
        tls.peer_certificates()?
            .first()
            .map(|c| c.clone().into_owned())
    }

    /// Sends a TLS close_notify, best effort, before the socket closes.
    pub fn close_tls(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.sock);
        }
    }

    /// Writes buffered output, then any shared body (together, with one
    /// vectored write), then any file range, until done or `WouldBlock`.
    /// Returns whether any byte went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        if self.tls.is_some() {
            return self.flush_tls();
        }
        let mut progress = false;
        loop {
            let head = &self.wbuf[self.wpos..];
            let body = self
                .body
                .as_ref()
                .map_or(&[][..], |b| &b.bytes()[self.body_pos..]);
            if head.is_empty() && body.is_empty() {
                break;
            }
            let result = if body.is_empty() && self.file.is_some() {
                sys::send_more(self.sock.as_raw_fd(), head)
            } else if body.is_empty() {
                self.sock.write(head)
            } else {
                self.sock
                    .write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    progress = true;
                    let from_head = n.min(head.len());
                    self.wpos += from_head;
                    n -= from_head;
                    self.body_pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.body.take().is_some() {
            self.body_pos = 0;
        }
        if let Some(f) = &mut self.file {
            let sock = self.sock.as_raw_fd();
            while f.remaining > 0 {
                match sys::sendfile(sock, f.file.fd(), &mut f.offset, f.remaining) {
                    Ok(0) => {
                        // The file shrank under us: the response is now
                        // short, so the connection cannot be reused.
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file truncated while sending",
                        ));
                    }
                    Ok(n) => {
                        f.remaining -= n as u64;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.file = None;
        }
        Ok(progress)
    }
}

/// Whether `unsent` output bytes are above the output `budget`: the
/// connection's module is not called and its socket not read until they
/// drain.
pub fn over_budget(unsent: usize, budget: usize) -> bool {
    unsent > budget
}

/// The `ConnInfo::out_limit` for a call whose output starts at `out_len`
/// bytes of the write buffer while `unsent` bytes are waiting: the module
/// may add what is left of `budget`. A module that ignores it overshoots
/// for one call only: the next call waits (see [`over_budget`]).
pub fn out_limit(out_len: usize, unsent: usize, budget: usize) -> u64 {
    (out_len as u64).saturating_add(budget.saturating_sub(unsent) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_decisions() {
        // Nothing waiting: the whole budget.
        assert_eq!(out_limit(0, 0, 1000), 1000);
        // Earlier answers still in the buffer count.
        assert_eq!(out_limit(300, 300, 1000), 1000);
        assert_eq!(out_limit(300, 700, 1000), 600);
        // Over budget: no room at all (the module answers one message).
        assert_eq!(out_limit(50, 5000, 1000), 50);
        assert!(!over_budget(1000, 1000));
        assert!(over_budget(1001, 1000));
        assert!(!over_budget(0, 0));
    }
}
