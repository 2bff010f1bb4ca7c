//! One client connection: its socket, its buffers and where it is in the
//! current message.
//!
//! Buffers are taken from the event loop's pool when bytes arrive and given
//! back when the connection goes idle, so an idle keep-alive connection
//! holds no buffer at all.
//!
//! Every field is private: the event loop changes a connection through
//! methods named for what happened (`begin_message`, `defer`, `resume`,
//! `into_proxy`, `close_after_output`, `peer_closed`, ...) and reads it
//! through small accessors. The input buffer is in [`readbuf`], the output
//! (write buffer, bodies, pushes, how they reach the socket) in [`output`].

mod output;
mod readbuf;

pub use output::{read_at, Output, KEEP_OUT_CAPACITY};
pub use readbuf::ReadBuf;

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use abi_stable::std_types::RVec;
use mio::net::TcpStream;
use module_api::{Action, ConnInfo, Verdict};

use crate::access::ConnAuth;
use crate::generation::Generation;
use crate::proxy::Session;

/// Size of a pooled read buffer.
pub const READ_BUF: usize = 16 * 1024;

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
    Proxy(Box<Session>),
}

/// The outcome of reading.
pub enum ReadResult {
    /// Read this many bytes (0: nothing available now).
    Read(usize),
    /// The buffer is full at its maximum size.
    Full,
}

/// TLS terminated here, and what was already looked at.
#[derive(Default)]
struct Tls {
    /// The session, when the host terminates TLS for this connection.
    session: Option<Box<rustls::ServerConnection>>,
    /// Whether the first bytes were already looked at for a handshake.
    checked: bool,
    /// Whether the completed handshake was looked at for a client
    /// certificate (see [`Conn::take_client_cert`]).
    handshake_seen: bool,
    /// Names from a client certificate are recorded for this connection
    /// in the services: they must be forgotten when it closes.
    has_identity: bool,
}

/// What the two directions of the socket have said so far.
struct Flags {
    /// The peer closed its sending side (EOF read).
    eof: bool,
    /// Close once the output is flushed.
    closing: bool,
    /// The socket may have bytes to read: set by every readable event,
    /// cleared when a read finds it empty (plain TCP only).
    read_ready: bool,
    /// An event said the peer closed its side: read until EOF.
    peer_closing: bool,
    /// A module answered a message flagged as draining: the connection
    /// closes as soon as it is idle.
    answered_draining: bool,
    /// Whether any byte arrived yet: a connection that has sent nothing
    /// gets `first_bytes_timeout_ms` from its accept, not the idle timeout.
    heard: bool,
    /// Pushes were queued this loop turn and the loop will write them once
    /// the mailbox is drained (see `EventLoop::drain_inbox`).
    push_queued: bool,
}

/// The instants the timeouts are measured from.
struct Times {
    /// When the connection was accepted (handshake, first bytes).
    accepted: Instant,
    /// When the first byte of the current message arrived.
    msg_start: Option<Instant>,
    /// Last time the connection finished a message or made write progress.
    last_activity: Instant,
}

/// One client connection. Its state changes only through the methods
/// below, each named for what happened to it.
pub struct Conn {
    sock: TcpStream,
    info: ConnInfo,
    /// Its admin standing on the public port (token epoch, failed
    /// `AUTH`s); rights themselves are decided per command.
    auth: ConnAuth,
    rbuf: ReadBuf,
    out: Output,
    stage: Stage,
    tls: Tls,
    flags: Flags,
    times: Times,
    /// The module that keeps this connection (`Action::Keep`): its next
    /// message goes there whatever its first bytes.
    sticky: Option<Arc<str>>,
    /// Modules that asked for `on_close` on this connection.
    watchers: Vec<Arc<str>>,
}

impl Conn {
    pub fn new(sock: TcpStream, info: ConnInfo, now: Instant) -> Conn {
        Conn {
            sock,
            info,
            auth: ConnAuth::default(),
            rbuf: ReadBuf::default(),
            out: Output::default(),
            stage: Stage::Routing,
            tls: Tls::default(),
            flags: Flags {
                eof: false,
                closing: false,
                read_ready: true,
                peer_closing: false,
                answered_draining: false,
                heard: false,
                push_queued: false,
            },
            times: Times {
                accepted: now,
                msg_start: None,
                last_activity: now,
            },
            sticky: None,
            watchers: Vec::new(),
        }
    }

    // ----- reads -----

    #[inline]
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    #[inline]
    pub fn id(&self) -> u64 {
        self.info.id
    }

    #[inline]
    pub fn auth(&self) -> &ConnAuth {
        &self.auth
    }

    #[inline]
    pub fn auth_mut(&mut self) -> &mut ConnAuth {
        &mut self.auth
    }

    #[inline]
    pub fn rbuf(&self) -> &ReadBuf {
        &self.rbuf
    }

    /// The buffered, unconsumed input.
    #[inline]
    pub fn input(&self) -> &[u8] {
        self.rbuf.bytes()
    }

    #[inline]
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    #[inline]
    pub fn is_proxy(&self) -> bool {
        matches!(self.stage, Stage::Proxy(_))
    }

    /// The proxy session, while the connection is relayed.
    #[inline]
    pub fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.stage {
            Stage::Proxy(s) => Some(s),
            _ => None,
        }
    }

    #[inline]
    pub fn is_closing(&self) -> bool {
        self.flags.closing
    }

    #[inline]
    pub fn is_eof(&self) -> bool {
        self.flags.eof
    }

    #[inline]
    pub fn heard(&self) -> bool {
        self.flags.heard
    }

    /// Whether it answered a message since it was flagged as draining.
    #[inline]
    pub fn answered_draining(&self) -> bool {
        self.flags.answered_draining
    }

    #[inline]
    pub fn accepted(&self) -> Instant {
        self.times.accepted
    }

    #[inline]
    pub fn last_activity(&self) -> Instant {
        self.times.last_activity
    }

    #[inline]
    pub fn msg_start(&self) -> Option<Instant> {
        self.times.msg_start
    }

    #[inline]
    pub fn sticky(&self) -> Option<&str> {
        self.sticky.as_deref()
    }

    #[inline]
    pub fn watchers(&self) -> &[Arc<str>] {
        &self.watchers
    }

    /// Whether the host terminates TLS for this connection.
    #[inline]
    pub fn is_tls(&self) -> bool {
        self.tls.session.is_some()
    }

    /// Whether the first bytes were already looked at for a handshake.
    #[inline]
    pub fn tls_checked(&self) -> bool {
        self.tls.checked
    }

    /// Whether names from a client certificate were recorded for it.
    #[inline]
    pub fn has_identity(&self) -> bool {
        self.tls.has_identity
    }

    /// Whether a TLS handshake terminated here is still in progress.
    #[inline]
    pub fn tls_handshaking(&self) -> bool {
        self.tls
            .session
            .as_ref()
            .is_some_and(|t| t.is_handshaking())
    }

    /// The output, for reading its state.
    #[inline]
    pub fn output(&self) -> &Output {
        &self.out
    }

    /// Unsent output bytes (buffer, bodies, pushes, TLS records).
    #[inline]
    pub fn pending_output(&self) -> bool {
        self.out.has_unsent() || self.tls.session.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Unsent bytes: what the output budget and the push backlog count.
    #[inline]
    pub fn backlog(&self) -> usize {
        self.out.backlog()
    }

    /// Whether input processing must wait: work off the loop, a body or
    /// file being sent, or unsent output above `budget` (the output
    /// budget, `max_output_buffer`). While paused the socket is not read
    /// either, so the kernel's buffers hold the client back.
    #[inline]
    pub fn paused(&self, budget: usize) -> bool {
        matches!(
            self.stage,
            Stage::Deferred(_) | Stage::Admin | Stage::Proxy(_)
        ) || self.out.streaming()
            || over_budget(self.out.backlog(), budget)
    }

    /// Idle: nothing buffered, nothing to send, between messages.
    #[inline]
    pub fn idle(&self) -> bool {
        matches!(self.stage, Stage::Routing) && self.rbuf.is_empty() && !self.pending_output()
    }

    // ----- input -----

    /// Notes a readiness event on the client socket.
    #[inline]
    pub fn note_event(&mut self, event: &mio::event::Event) {
        if event.is_readable() || event.is_error() {
            self.flags.read_ready = true;
        }
        if event.is_read_closed() || event.is_error() {
            self.peer_closed();
        }
        if let Stage::Proxy(s) = &mut self.stage {
            s.client_ready.note(event);
        }
    }

    /// An event said the peer closed its sending side: reads go on until
    /// the EOF itself (a short read no longer means the socket is empty).
    #[inline]
    pub fn peer_closed(&mut self) {
        self.flags.peer_closing = true;
    }

    /// Gives the connection a pooled read buffer (it has none while idle).
    #[inline]
    pub fn attach_read_buffer(&mut self, buf: Vec<u8>) {
        self.rbuf.attach(buf);
    }

    /// Takes the read buffer back once it holds nothing.
    #[inline]
    pub fn detach_read_buffer(&mut self) -> Option<Vec<u8>> {
        self.rbuf.detach()
    }

    /// Bytes arrived: the connection was heard, and a message starts with
    /// them when nothing was buffered before.
    #[inline]
    pub fn begin_message(&mut self, was_empty: bool, now: Instant) {
        self.flags.heard = true;
        if was_empty {
            self.times.msg_start = Some(now);
        }
    }

    /// The first `n` buffered bytes were a message, now handled.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.rbuf.consume(n);
    }

    /// Takes every buffered byte (a hand-off to TLS or a proxy).
    pub fn take_input(&mut self) -> Vec<u8> {
        let all = self.rbuf.bytes().to_vec();
        self.rbuf.consume(all.len());
        all
    }

    /// A message was answered on the loop (`AUTH`, a built-in command): it
    /// is consumed, and the connection is active now.
    pub fn answered_command(&mut self, consumed: usize, now: Instant) {
        self.rbuf.consume(consumed);
        self.times.msg_start = None;
        self.times.last_activity = now;
    }

    /// Made progress now (output went out, a message finished).
    #[inline]
    pub fn touch(&mut self, now: Instant) {
        self.times.last_activity = now;
    }

    // ----- where it is -----

    /// Routed to `g` for the message being read.
    #[inline]
    pub fn route_to(&mut self, g: Arc<Generation>) {
        self.stage = Stage::Module(g);
    }

    /// The first `consumed` bytes go to the pool: returns them and waits
    /// in [`Stage::Deferred`] until [`Self::resume`].
    pub fn defer(&mut self, g: Arc<Generation>, consumed: usize) -> Vec<u8> {
        let msg = self.rbuf.bytes()[..consumed].to_vec();
        self.rbuf.consume(consumed);
        self.stage = Stage::Deferred(g);
        msg
    }

    /// The deferred call finished with `out`: back between messages, with
    /// the generation that ran it (`None` when it was not deferred).
    pub fn resume(&mut self, out: &[u8]) -> Option<Arc<Generation>> {
        match std::mem::replace(&mut self.stage, Stage::Routing) {
            Stage::Deferred(g) => {
                self.out.buf_mut().extend_from_copy_slice(out);
                Some(g)
            }
            other => {
                self.stage = other;
                None
            }
        }
    }

    /// An admin command runs on the control thread; input waits.
    #[inline]
    pub fn await_admin(&mut self) {
        self.stage = Stage::Admin;
    }

    /// The admin command's reply arrived.
    pub fn admin_done(&mut self, reply: &[u8]) {
        self.out.buf_mut().extend_from_copy_slice(reply);
        self.stage = Stage::Routing;
    }

    /// Relayed to an upstream from now on.
    #[inline]
    pub fn into_proxy(&mut self, session: Box<Session>) {
        self.stage = Stage::Proxy(session);
    }

    /// Leaves whatever stage it was in (closing, a proxy session ending),
    /// returning it; the connection is between messages afterwards.
    #[inline]
    pub fn leave_stage(&mut self) -> Stage {
        std::mem::replace(&mut self.stage, Stage::Routing)
    }

    /// Bookkeeping once a module finished a message (`Done`, `Close` or
    /// `Keep`): the module's counters, the verdict's bodies, who keeps or
    /// watches the connection, and the timers.
    pub fn finish_message(&mut self, g: &Arc<Generation>, v: Verdict, now: Instant) {
        g.stats.requests.fetch_add(1, Ordering::Relaxed);
        g.stats.conns.fetch_sub(1, Ordering::Relaxed);
        self.stage = Stage::Routing;
        match v.action {
            Action::Close => self.flags.closing = true,
            Action::Keep => self.sticky = Some(g.name.clone()),
            _ => self.sticky = None,
        }
        let watch_close = v.watch_close;
        self.out.set_bodies(v.body, v.file);
        if watch_close {
            self.watch(&g.name);
        }
        self.times.last_activity = now;
        self.times.msg_start = if self.rbuf.is_empty() {
            None
        } else {
            Some(now)
        };
    }

    /// Asks for `module`'s `on_close` when this connection closes.
    #[inline]
    pub fn watch(&mut self, module: &Arc<str>) {
        if !self.watchers.contains(module) {
            self.watchers.push(module.clone());
        }
    }

    // ----- closing -----

    /// Close once the output is flushed; nothing more is read.
    #[inline]
    pub fn close_after_output(&mut self) {
        self.flags.closing = true;
    }

    /// Flags the connection as draining (shutdown): modules are told, and
    /// it closes once idle after answering.
    #[inline]
    pub fn mark_draining(&mut self) {
        self.info.draining = true;
    }

    /// A module answered a message (anything but `NeedMore`): if the
    /// connection drains, it may close once this answer is out.
    #[inline]
    pub fn note_answer(&mut self) {
        self.flags.answered_draining |= self.info.draining;
    }

    /// Deregisters the client socket from the poll.
    pub fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.deregister(&mut self.sock)
    }

    // ----- output -----

    /// The write buffer, for appending a reply.
    #[inline]
    pub fn out_mut(&mut self) -> &mut RVec<u8> {
        self.out.buf_mut()
    }

    /// Where output appended from now on starts (see
    /// [`Self::take_output_since`]).
    #[inline]
    pub fn output_mark(&self) -> usize {
        self.out.mark()
    }

    /// The output appended since `mark`, taken out of the write buffer.
    #[inline]
    pub fn take_output_since(&mut self, mark: usize) -> Vec<u8> {
        self.out.take_since(mark)
    }

    /// Installs a pooled write buffer (it must hold none: see
    /// [`Output::capacity`]).
    #[inline]
    pub fn give_write_buffer(&mut self, buf: RVec<u8>) {
        self.out.give_buf(buf);
    }

    /// Takes the (empty) write buffer away for the loop's pool.
    #[inline]
    pub fn take_write_buffer(&mut self) -> RVec<u8> {
        self.out.take_buf()
    }

    /// Queues pushed bytes, unless the backlog would exceed `cap`.
    #[inline]
    pub fn push(&mut self, data: &[u8], cap: usize) -> bool {
        self.out.push(data, cap)
    }

    /// Marks the connection as holding pushes queued this loop turn;
    /// `true` the first time, so the loop lists it once.
    #[inline]
    pub fn mark_push_queued(&mut self) -> bool {
        !std::mem::replace(&mut self.flags.push_queued, true)
    }

    /// The loop is about to write this turn's queued pushes.
    #[inline]
    pub fn clear_push_queued(&mut self) {
        self.flags.push_queued = false;
    }

    /// Queues a last notice and closes once it is out.
    pub fn push_notice_and_close(&mut self, notice: &[u8]) {
        self.out.push_anyway(notice);
        self.flags.closing = true;
    }

    /// Moves queued pushes into the write buffer (see
    /// [`Output::release_pushes`]).
    #[inline]
    pub fn release_pushes(&mut self) -> bool {
        self.out.release_pushes()
    }

    /// Frees a write buffer that grew large once it is empty.
    #[inline]
    pub fn shrink_output(&mut self) {
        self.out.shrink()
    }

    /// Sets `info.out_limit` for a module call appending now: what is
    /// left of the budget once the unsent output is counted.
    #[inline]
    pub fn set_out_limit(&mut self, budget: usize) {
        self.info.out_limit = out_limit(self.out.mark(), self.out.backlog(), budget);
    }

    /// What a call to `on_message` needs at once: the connection's
    /// description, its input and its write buffer.
    #[inline]
    pub fn message_io(&mut self) -> (&ConnInfo, &[u8], &mut RVec<u8>) {
        (&self.info, self.rbuf.bytes(), self.out.buf_mut())
    }

    /// What relaying needs at once: the client socket, the session and
    /// the connection's description (`None` unless proxied).
    #[inline]
    pub fn relay_parts(&mut self) -> Option<(&mut TcpStream, &mut Session, &ConnInfo)> {
        match &mut self.stage {
            Stage::Proxy(s) => Some((&mut self.sock, s, &self.info)),
            _ => None,
        }
    }

    /// Writes pending output until done or `WouldBlock` (through TLS when
    /// the connection is terminated here). Returns whether any byte went
    /// out.
    #[inline]
    pub fn flush(&mut self) -> io::Result<bool> {
        match self.tls.session.as_mut() {
            Some(tls) => self.out.write_tls(tls, &mut self.sock),
            None => self.out.write_plain(&mut self.sock),
        }
    }

    // ----- TLS -----

    /// The first bytes were looked at: not looked at again.
    #[inline]
    pub fn mark_tls_checked(&mut self) {
        self.tls.checked = true;
    }

    /// Terminates TLS here with `session`, feeding it the ClientHello
    /// already buffered.
    pub fn start_tls(&mut self, session: rustls::ServerConnection) -> io::Result<()> {
        self.tls.session = Some(Box::new(session));
        self.info.tls = true;
        let hello = self.take_input();
        self.times.msg_start = None;
        self.feed_tls(&hello)
    }

    /// Names from the client certificate were recorded for it.
    #[inline]
    pub fn mark_identity(&mut self) {
        self.tls.has_identity = true;
    }

    /// The verified client certificate (the leaf, DER), returned once: by
    /// the first call after the TLS handshake completed with one. `None`
    /// before the handshake completes, on later calls, and for a client
    /// that presented none (or a connection not terminated here). rustls
    /// only completes a handshake whose certificate verified.
    pub fn take_client_cert(&mut self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        if self.tls.handshake_seen || self.tls.session.is_none() || self.tls_handshaking() {
            return None;
        }
        self.tls.handshake_seen = true;
        let tls = self.tls.session.as_ref()?;
        tls.peer_certificates()?
            .first()
            .map(|c| c.clone().into_owned())
    }

    /// Sends a TLS close_notify, best effort, before the socket closes.
    pub fn close_tls(&mut self) {
        if let Some(tls) = self.tls.session.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.sock);
        }
    }

    // ----- reading the socket -----

    /// Reads until `WouldBlock`, the peer's EOF, or a full buffer (through
    /// TLS when the connection is terminated here).
    pub fn read(&mut self, max: usize) -> io::Result<ReadResult> {
        if self.tls.session.is_some() {
            return self.read_tls(max);
        }
        if !self.flags.read_ready {
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
            let spare = self.rbuf.spare();
            let room = spare.len();
            match self.sock.read(spare) {
                Ok(0) => {
                    self.flags.eof = true;
                    return Ok(ReadResult::Read(total));
                }
                Ok(n) => {
                    self.rbuf.filled(n);
                    total += n;
                    // A short read emptied the socket: the next read would
                    // only say `WouldBlock`, and new bytes bring a new
                    // (edge-triggered) event. Not when the peer's FIN was
                    // signalled, which must still be read as EOF.
                    if n < room && !self.flags.peer_closing {
                        self.flags.read_ready = false;
                        return Ok(ReadResult::Read(total));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flags.read_ready = false;
                    return Ok(ReadResult::Read(total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves decrypted bytes from the TLS session into the read buffer.
    fn drain_plaintext(&mut self, max: usize) -> io::Result<(usize, bool)> {
        let tls = self.tls.session.as_mut().expect("tls connection");
        let mut total = 0;
        loop {
            if !self.rbuf.make_room(max) {
                return Ok((total, true));
            }
            match tls.reader().read(self.rbuf.spare()) {
                Ok(0) => {
                    // close_notify: the peer is done sending.
                    self.flags.eof = true;
                    return Ok((total, false));
                }
                Ok(n) => {
                    self.rbuf.filled(n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((total, false)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands ciphertext to the TLS session and processes it; on a protocol
    /// error the alert is sent (best effort) and the error returned.
    fn feed_tls(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let tls = self.tls.session.as_mut().expect("tls connection");
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
            if self.flags.eof {
                return Ok(ReadResult::Read(total));
            }
            match self.sock.read(&mut scratch) {
                Ok(0) => {
                    self.flags.eof = true;
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
}

/// Whether `unsent` output bytes are above the output `budget`: the
/// connection's module is not called and its socket not read until they
/// drain.
#[inline]
pub fn over_budget(unsent: usize, budget: usize) -> bool {
    unsent > budget
}

/// The `ConnInfo::out_limit` for a call whose output starts at `out_len`
/// bytes of the write buffer while `unsent` bytes are waiting: the module
/// may add what is left of `budget`. A module that ignores it overshoots
/// for one call only: the next call waits (see [`over_budget`]).
#[inline]
pub fn out_limit(out_len: usize, unsent: usize, budget: usize) -> u64 {
    (out_len as u64).saturating_add(budget.saturating_sub(unsent) as u64)
}

#[cfg(test)]
mod tests;
