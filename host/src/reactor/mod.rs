//! The event loops: one per core, each with its own listener (or a shared
//! one), driving non-blocking connections edge-triggered with mio.
//!
//! Per connection the loop reads until `WouldBlock`, routes each message to
//! a module by its first bytes, calls the module, and writes until
//! `WouldBlock`. Module calls that block go to the worker pool and come back
//! through the loop's mailbox. Timeouts are checked by a sweep four times a
//! second.
//!
//! Every resource a client can make the loop hold is bounded: unsent output
//! by the output budget (`max_output_buffer`: above it the connection's
//! module is not called and its socket not read), buffered input by
//! `max_message_size` and `max_buffered_bytes`, connections by
//! `max_connections` (idle ones are closed to admit newcomers) and the
//! descriptor limit (accepting pauses on `EMFILE`), pushes by
//! `max_push_backlog` and each mailbox's `max_pending_push_bytes`, and the
//! buffer pools by bytes.
//!
//! Built-in commands are in [`commands`], proxied connections in
//! [`proxying`].

mod commands;
mod proxying;

use proxying::proxy_event;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RSlice, RVec};
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use module_api::{Action, ConnInfo, Protocol, ProxyEventKind, Verdict};
use slab::Slab;

use crate::conn::{self, Conn, PendingFile, ReadResult, Stage, READ_BUF};
use crate::generation::{CallSite, Generation};
use crate::pool::{Completion, Job, ReplyTo};
use crate::router::{Match, RouteTable, Target};
use crate::state::Shared;

const LISTENER: Token = Token(usize::MAX - 1);
/// Set in the token of a proxied connection's upstream socket.
const UPSTREAM: usize = 1 << 25;
/// Connect attempts per proxied connection, whatever the module answers.
const MAX_PROXY_ATTEMPTS: u32 = 8;
const WAKER: Token = Token(usize::MAX);
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// How long accepting pauses after running out of descriptors (retried on
/// the next wake-up after it, at most `SWEEP_EVERY` later).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// Bytes of read buffers kept per loop for reuse (16 KiB each).
const POOLED_READ_BYTES: usize = 4 << 20;
/// Bytes of write buffers kept per loop for reuse. Bounded in bytes, not
/// in count: a pool of a thousand 1 MiB buffers left behind by large
/// answers (or pushes) is a gigabyte that never returns.
const POOLED_WRITE_BYTES: usize = 4 << 20;
/// Read/process/write rounds one connection gets per turn.
const MAX_ROUNDS: usize = 16;

/// One event loop, owned by its thread.
pub struct EventLoop {
    idx: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    shared: Arc<Shared>,
    inbox: Receiver<Completion>,
    table_version: u64,
    table: Arc<RouteTable>,
    buffers: Vec<Vec<u8>>,
    wbuffers: Vec<RVec<u8>>,
    /// Capacity held by `wbuffers`.
    wbuffer_bytes: usize,
    /// Connections that yielded with work left (see `MAX_ROUNDS`).
    again: Vec<usize>,
    now: Instant,
    last_sweep: Instant,
    last_refusal_log: Option<Instant>,
    /// Accepting is paused until then after running out of descriptors.
    accept_paused_until: Option<Instant>,
    /// Accept failures since the last log line about them.
    accept_failures: u64,
    /// Idle connections closed for newcomers since the last line about it.
    evicted_unlogged: u64,
    /// Draining: when idle connections stop waiting for one more message.
    idle_close_at: Instant,
    idle_grace_over: bool,
}

/// What processing decided about the connection.
enum Next {
    Keep,
    Close(&'static str),
}

impl EventLoop {
    pub fn new(
        idx: usize,
        poll: Poll,
        listener: std::net::TcpListener,
        shared: Arc<Shared>,
        inbox: Receiver<Completion>,
    ) -> io::Result<EventLoop> {
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (table_version, table) = shared.table.current();
        let now = Instant::now();
        Ok(EventLoop {
            idx,
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            shared,
            inbox,
            table_version,
            table,
            buffers: Vec::new(),
            wbuffers: Vec::new(),
            wbuffer_bytes: 0,
            again: Vec::new(),
            now,
            last_sweep: now,
            last_refusal_log: None,
            accept_paused_until: None,
            accept_failures: 0,
            evicted_unlogged: 0,
            idle_close_at: now,
            idle_grace_over: false,
        })
    }

    /// Creates the poll instance and its waker (before the loop exists, so
    /// that mailboxes can be handed out first).
    pub fn poll_and_waker() -> io::Result<(Poll, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok((poll, waker))
    }

    /// Runs until shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let timeout = if self.again.is_empty() {
                SWEEP_EVERY
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("loop {}: poll failed: {e}", self.idx);
                    return;
                }
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(token) => {
                        let key = token & !UPSTREAM;
                        if let Some(c) = self.conns.get_mut(key) {
                            if token & UPSTREAM != 0 {
                                if let Stage::Proxy(s) = &mut c.stage {
                                    s.upstream_ready.note(event);
                                }
                            } else {
                                if event.is_readable() || event.is_error() {
                                    c.read_ready = true;
                                }
                                if event.is_read_closed() || event.is_error() {
                                    c.peer_closing = true;
                                }
                                if let Stage::Proxy(s) = &mut c.stage {
                                    s.client_ready.note(event);
                                }
                            }
                        }
                        self.drive(key)
                    }
                }
            }
            for key in std::mem::take(&mut self.again) {
                self.drive(key);
            }
            self.drain_inbox();
            self.refresh_table();
            if self.accept_paused_until.is_some_and(|t| self.now >= t) {
                self.accept_paused_until = None;
                self.accept();
            }
            if self.now.duration_since(self.last_sweep) >= SWEEP_EVERY {
                self.last_sweep = self.now;
                self.sweep();
            }
            if self.shared.shutting_down.load(Ordering::Acquire) {
                let deadline = *shutdown_deadline.get_or_insert_with(|| {
                    self.begin_shutdown();
                    self.now + Duration::from_millis(self.shared.cfg.shutdown_timeout_ms)
                });
                if !self.idle_grace_over && self.now >= self.idle_close_at {
                    self.idle_grace_over = true;
                    self.close_idle();
                }
                if self.conns.is_empty() {
                    return;
                }
                if self.now >= deadline {
                    log::warn!(
                        "loop {}: shutdown grace period over, closing {} connections",
                        self.idx,
                        self.conns.len()
                    );
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for k in keys {
                        self.close(k, "shutdown timeout");
                    }
                    return;
                }
            }
        }
    }

    /// Stops accepting and marks every connection as draining. Closing the
    /// idle ones at once would race their clients: a keep-alive client may
    /// be sending its next request right now, and a connection accepted a
    /// moment ago has not sent its first one yet. So each idle connection
    /// gets `shutdown_idle_grace_ms` for one more message, answered with
    /// the draining flag (HTTP: `Connection: close`), and then closes.
    fn begin_shutdown(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let grace = Duration::from_millis(self.shared.cfg.shutdown_idle_grace_ms);
        self.idle_close_at = self.now + grace;
        let mut idle = Vec::new();
        for (k, c) in self.conns.iter_mut() {
            c.info.draining = true;
            if c.idle() {
                idle.push(k);
            }
        }
        // A request already in the socket buffer (its event not seen yet)
        // is answered now.
        for k in idle {
            self.drive(k);
        }
        if grace.is_zero() {
            self.idle_grace_over = true;
            self.close_idle();
        }
    }

    /// Closes every connection with nothing in flight (end of the idle
    /// grace while draining).
    fn close_idle(&mut self) {
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.idle())
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            self.close(k, "shutdown");
        }
    }

    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
            return; // out of descriptors: `run` retries after the pause
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let (sock, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if crate::sys::is_descriptor_exhaustion(&e) => {
                    // The pending connections stay in the listen queue;
                    // retrying at once would only fail again, as fast as
                    // events come. Pause, retry from `run`, log once a
                    // second.
                    self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
                    self.accept_failures += 1;
                    if self.refusal_log_due() {
                        log::error!(
                            "loop {}: accept failed {} time(s): {e}; pausing accepts for {} ms \
                             (see max_connections and the descriptor limit)",
                            self.idx,
                            self.accept_failures,
                            ACCEPT_BACKOFF.as_millis()
                        );
                        self.accept_failures = 0;
                    }
                    return;
                }
                Err(e) => {
                    log::error!("loop {}: accept failed: {e}", self.idx);
                    return;
                }
            };
            if !self.admit(peer) {
                drop(sock);
                continue;
            }
            self.shared.accepted.fetch_add(1, Ordering::Relaxed);
            self.register(sock, peer);
        }
    }

    /// Whether a rate-limited log line (refusals, accept failures) may be
    /// written now: at most one a second per loop.
    fn refusal_log_due(&mut self) -> bool {
        let quiet = self
            .last_refusal_log
            .is_some_and(|t| self.now.duration_since(t) < Duration::from_secs(1));
        if !quiet {
            self.last_refusal_log = Some(self.now);
        }
        !quiet
    }

    /// Takes a connection slot for a new peer: within
    /// `max_connections_per_ip`, and within `max_connections`, making room
    /// by closing this loop's oldest idle connection when the slots are
    /// full (nginx reuses idle keep-alive connections the same way), so
    /// that silent or idle clients cannot lock everyone out, the admin
    /// commands included. False: refused (logged).
    fn admit(&mut self, peer: SocketAddr) -> bool {
        let per_ip = self.shared.cfg.max_connections_per_ip;
        if per_ip > 0 {
            let mut peers = self.shared.per_ip.lock();
            let n = peers.entry(peer.ip()).or_insert(0);
            if *n >= per_ip {
                drop(peers);
                if self.refusal_log_due() {
                    log::warn!("max_connections_per_ip ({per_ip}) reached: refusing {peer}");
                }
                return false;
            }
            *n += 1;
        }
        let max = self.shared.cfg.max_connections;
        loop {
            if self.shared.conns.fetch_add(1, Ordering::AcqRel) < max {
                return true;
            }
            self.shared.conns.fetch_sub(1, Ordering::AcqRel);
            if self.evict_idle(peer) {
                continue;
            }
            if self.refusal_log_due() {
                log::warn!(
                    "max_connections ({max}) reached and no idle connection to close: refusing {peer}"
                );
            }
            self.forget_peer(peer);
            return false;
        }
    }

    /// Closes this loop's longest-idle connection (nothing in flight,
    /// nothing to send, no module keeping it or watching it) to make room
    /// for `newcomer`. False when there is none.
    fn evict_idle(&mut self, newcomer: SocketAddr) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.idle() && c.sticky.is_none() && c.watchers.is_empty())
            .min_by_key(|(_, c)| c.last_activity)
            .map(|(k, c)| (k, c.info.id, c.info.peer(), c.heard, c.last_activity));
        let Some((key, id, peer, heard, since)) = victim else {
            return false;
        };
        // One line a second at most: a flood of newcomers would otherwise
        // write one per connection.
        self.evicted_unlogged += 1;
        if self.refusal_log_due() {
            log::info!(
                "max_connections ({}) reached: closing conn {id} from {peer} ({} for {} ms) \
                 to admit {newcomer} ({} closed this way since the previous such line)",
                self.shared.cfg.max_connections,
                if heard { "idle" } else { "silent" },
                self.now.saturating_duration_since(since).as_millis(),
                self.evicted_unlogged
            );
            self.evicted_unlogged = 0;
        }
        self.close(key, "evicted for a new connection");
        true
    }

    /// Gives back a peer's `max_connections_per_ip` slot.
    fn forget_peer(&self, peer: SocketAddr) {
        if self.shared.cfg.max_connections_per_ip == 0 {
            return;
        }
        let mut peers = self.shared.per_ip.lock();
        if let Some(n) = peers.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&peer.ip());
            }
        }
    }

    fn register(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        let _ = sock.set_nodelay(true);
        let seq = self.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= conn::MAX_KEY {
            log::error!("loop {}: too many connections, refusing {peer}", self.idx);
            self.shared.conns.fetch_sub(1, Ordering::AcqRel);
            self.forget_peer(peer);
            return;
        }
        let id = conn::make_id(seq, self.idx, key);
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::error!("cannot register connection from {peer}: {e}");
            self.shared.conns.fetch_sub(1, Ordering::AcqRel);
            self.forget_peer(peer);
            return;
        }
        // No admin rights are decided here: each command is checked against
        // the settings in force when it arrives (see `commands`).
        let mut info = ConnInfo::new(id, peer, false);
        // Asked once, at accept, and kept: the proxy session behind a
        // connection to ourselves may end before this one is done.
        info.self_forwarded = self.shared.own_upstreams.contains(peer);
        if let Ok(local) = sock.local_addr() {
            info = info.with_local(local);
        }
        entry.insert(Conn::new(sock, info, self.now));
        log::trace!("conn {id} from {peer}");
        // Data may already be there (edge-triggered: no event repeats it).
        self.drive(key);
    }

    fn close(&mut self, key: usize, why: &'static str) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        self.shared
            .buffered
            .fetch_sub(conn.rbuf.grown(), Ordering::AcqRel);
        conn.close_tls();
        let _ = self.poll.registry().deregister(&mut conn.sock);
        let told = match std::mem::replace(&mut conn.stage, Stage::Routing) {
            Stage::Module(g) | Stage::Deferred(g) => {
                g.stats.conns.fetch_sub(1, Ordering::Relaxed);
                g.call(CallSite::Close, |m| m.on_close(&conn.info));
                Some(g.name.clone())
            }
            Stage::Proxy(mut session) => {
                let _ = self.poll.registry().deregister(&mut session.sock);
                self.shared.conns.fetch_sub(session.slots, Ordering::AcqRel);
                let g = session.gen.clone();
                g.stats.conns.fetch_sub(1, Ordering::Relaxed);
                let mut out = RVec::new();
                let _ = g.call(CallSite::ProxyEvent, |m| {
                    m.proxy_event(
                        &conn.info,
                        proxy_event(ProxyEventKind::Closed, &session),
                        &mut out,
                    )
                });
                log::debug!(
                    "conn {}: proxy to {} closed ({why}): {} bytes up, {} down",
                    conn.info.id,
                    session.upstream.addr(),
                    session.bytes_up,
                    session.bytes_down
                );
                Some(g.name.clone())
            }
            Stage::Routing | Stage::Admin => None,
        };
        for name in &conn.watchers {
            if told.as_ref() != Some(name) {
                if let Ok(g) = self.shared.registry.current(name) {
                    g.call(CallSite::Close, |m| m.on_close(&conn.info));
                }
            }
        }
        // After `on_close`: a module may still ask who it was.
        if conn.has_identity {
            self.shared.services.forget_peer_identity(conn.info.id);
        }
        if let Some(buf) = conn.rbuf.detach() {
            self.recycle(buf);
        }
        conn.wbuf.clear();
        self.recycle_wbuf(std::mem::replace(&mut conn.wbuf, RVec::new()));
        self.shared.conns.fetch_sub(1, Ordering::AcqRel);
        self.forget_peer(conn.info.peer());
        log::trace!("conn {} closed: {why}", conn.info.id);
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if buf.len() == READ_BUF && (self.buffers.len() + 1) * READ_BUF <= POOLED_READ_BYTES {
            self.buffers.push(buf);
        }
    }

    /// Keeps an empty write buffer for the next connection that needs one,
    /// within [`POOLED_WRITE_BYTES`]; large ones are freed.
    fn recycle_wbuf(&mut self, mut wbuf: RVec<u8>) {
        let cap = wbuf.capacity();
        if cap > 0
            && cap <= conn::KEEP_OUT_CAPACITY
            && self.wbuffer_bytes + cap <= POOLED_WRITE_BYTES
        {
            wbuf.clear();
            self.wbuffer_bytes += cap;
            self.wbuffers.push(wbuf);
        }
    }

    /// A pooled write buffer, if any.
    fn pooled_wbuf(&mut self) -> Option<RVec<u8>> {
        let w = self.wbuffers.pop()?;
        self.wbuffer_bytes -= w.capacity();
        Some(w)
    }

    fn refresh_table(&mut self) {
        let v = self.shared.table.version();
        if v != self.table_version {
            let (v, t) = self.shared.table.current();
            self.table_version = v;
            self.table = t;
        }
    }

    /// Reads, processes and writes until no more progress, then decides
    /// whether the connection lives on.
    fn drive(&mut self, key: usize) {
        if matches!(self.conns.get(key).map(|c| &c.stage), Some(Stage::Proxy(_))) {
            return self.drive_proxy(key);
        }
        let max_message = self.shared.cfg.max_message_size;
        let budget = self.shared.cfg.max_output_buffer;
        let mut rounds = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            rounds += 1;
            if rounds > MAX_ROUNDS {
                // Fairness: a busy connection yields to the others and is
                // resumed after the next poll (no event would repeat it).
                if !self.again.contains(&key) {
                    self.again.push(key);
                }
                break;
            }
            let mut progress = false;
            if !conn.paused(budget) && !conn.eof && !conn.closing {
                if !conn.rbuf.is_attached() {
                    let buf = self.buffers.pop().unwrap_or_else(|| vec![0; READ_BUF]);
                    conn.rbuf.attach(buf);
                }
                let was_empty = conn.rbuf.is_empty();
                let grown_before = conn.rbuf.grown();
                let result = conn.read(max_message);
                let grew = conn.rbuf.grown() - grown_before;
                if grew > 0 {
                    let total = self.shared.buffered.fetch_add(grew, Ordering::AcqRel) + grew;
                    let limit = self.shared.cfg.max_buffered_bytes;
                    if total > limit {
                        let (id, peer) = (conn.info.id, conn.info.peer());
                        if self.refusal_log_due() {
                            log::warn!(
                                "conn {id} from {peer}: incomplete messages of all connections \
                                 hold {total} bytes, over max_buffered_bytes ({limit}): closing \
                                 this one (logged at most once a second)"
                            );
                        }
                        return self.close(key, "max_buffered_bytes");
                    }
                }
                match result {
                    Ok(ReadResult::Read(n)) => {
                        if n > 0 {
                            progress = true;
                            conn.heard = true;
                            if was_empty {
                                conn.msg_start = Some(self.now);
                            }
                        }
                    }
                    Ok(ReadResult::Full) => {
                        log::warn!(
                            "conn {} from {}: message exceeds {max_message} bytes, closing",
                            conn.info.id,
                            conn.info.peer()
                        );
                        // Tell the client why, in its module's protocol,
                        // then close once that is sent.
                        let Stage::Module(g) = &conn.stage else {
                            return self.close(key, "message too large");
                        };
                        let protocol = message_protocol(g.protocol, conn.rbuf.bytes());
                        too_large(&mut conn.wbuf, protocol);
                        conn.closing = true;
                        progress = true;
                    }
                    Err(e) if conn.tls_handshaking() => {
                        // A refused client certificate lands here too
                        // (none sent while required, unknown issuer,
                        // expired, malformed chain): the operator sees
                        // who and why; a flood of them logs once a second
                        // at info, the rest at debug.
                        let (id, peer) = (conn.info.id, conn.info.peer());
                        if self.refusal_log_due() {
                            log::info!("conn {id} from {peer}: tls handshake failed: {e}");
                        } else {
                            log::debug!("conn {id} from {peer}: tls handshake failed: {e}");
                        }
                        return self.close(key, "tls handshake failed");
                    }
                    Err(e) => {
                        log::debug!("conn {}: read error: {e}", conn.info.id);
                        return self.close(key, "read error");
                    }
                }
                self.record_identity(key);
            }
            match self.process(key) {
                Ok(p) => progress |= p,
                Err(why) => return self.close(key, why),
            }
            let conn = &mut self.conns[key];
            progress |= conn.release_pushes();
            match conn.flush() {
                Ok(p) => {
                    if p {
                        conn.last_activity = self.now;
                        progress = true;
                        conn.shrink_output();
                    }
                }
                Err(e) => {
                    log::debug!("conn {}: write error: {e}", conn.info.id);
                    return self.close(key, "write error");
                }
            }
            if !progress {
                break;
            }
        }
        let conn = &mut self.conns[key];
        if conn.rbuf.is_empty() && conn.rbuf.grown() > 0 {
            // A read buffer grown for one large message is freed as soon
            // as that message is consumed, not kept while the connection
            // lives (and counted against max_buffered_bytes).
            if let Some(buf) = conn.rbuf.detach() {
                let grown = buf.len() - READ_BUF;
                self.shared.buffered.fetch_sub(grown, Ordering::AcqRel);
            }
        }
        if conn.pending_output() {
            return;
        }
        if conn.closing {
            return self.close(key, "closed by module");
        }
        if conn.idle() {
            if conn.eof {
                return self.close(key, "peer closed");
            }
            // Draining: it closes once it has answered a message since
            // (or when the idle grace ends, in `run`).
            if conn.info.draining && (conn.answered_draining || self.idle_grace_over) {
                return self.close(key, "shutdown");
            }
            let wbuf = std::mem::replace(&mut conn.wbuf, RVec::new());
            if let Some(buf) = conn.rbuf.detach() {
                let grown = buf.len().saturating_sub(READ_BUF);
                self.shared.buffered.fetch_sub(grown, Ordering::AcqRel);
                self.recycle(buf);
            }
            self.recycle_wbuf(wbuf);
        } else if conn.eof && matches!(conn.stage, Stage::Routing | Stage::Module(_)) {
            // A partial message can never complete now.
            self.close(key, "peer closed mid-message");
        }
    }

    /// Routes and hands buffered messages to modules until input runs out or
    /// the connection must wait. Returns whether anything happened.
    fn process(&mut self, key: usize) -> Result<bool, &'static str> {
        self.refresh_table();
        let budget = self.shared.cfg.max_output_buffer;
        let mut progress = false;
        loop {
            let conn = &mut self.conns[key];
            if conn.rbuf.is_empty() || conn.paused(budget) || conn.closing {
                return Ok(progress);
            }
            match &conn.stage {
                Stage::Routing if conn.sticky.is_some() => {
                    let name = conn.sticky.as_deref().unwrap_or_default();
                    match self.table.by_name(name) {
                        Some(Target::Module(g)) => {
                            g.stats.conns.fetch_add(1, Ordering::Relaxed);
                            conn.stage = Stage::Module(g.clone());
                        }
                        Some(Target::Unavailable(protocol)) => {
                            unavailable(&mut conn.wbuf, *protocol);
                            conn.closing = true;
                        }
                        _ => {
                            log::info!(
                                "conn {}: module {name} that kept it is gone, closing",
                                conn.info.id
                            );
                            conn.closing = true;
                        }
                    }
                }
                Stage::Routing if !conn.tls_checked => match self.start_tls(key) {
                    Ok(true) => {}
                    Ok(false) => return Ok(progress),
                    Err(why) => return Err(why),
                },
                Stage::Routing => {
                    let input = conn.rbuf.bytes();
                    match self.table.lookup(input) {
                        Match::NeedMore => {
                            if input.len() > self.shared.cfg.max_header_size {
                                log::info!(
                                    "conn {} from {}: {} bytes match no binding yet, closing",
                                    conn.info.id,
                                    conn.info.peer(),
                                    input.len()
                                );
                                conn.closing = true;
                                return Ok(true);
                            }
                            return Ok(progress);
                        }
                        Match::None => {
                            let shown: String = input
                                .iter()
                                .take(32)
                                .flat_map(|b| std::ascii::escape_default(*b))
                                .map(char::from)
                                .collect();
                            log::info!(
                                "conn {} from {}: no module for \"{shown}\", closing",
                                conn.info.id,
                                conn.info.peer()
                            );
                            // An HTTP client is told why (as nginx does)
                            // rather than left guessing at a reset.
                            if crate::router::looks_like_http(input) {
                                bad_request(&mut conn.wbuf);
                            }
                            // Replies to earlier messages still go out.
                            conn.closing = true;
                            return Ok(true);
                        }
                        Match::Found(Target::Builtin(b)) => {
                            let b = *b;
                            match self.builtin(key, b) {
                                Next::Keep => {}
                                Next::Close(why) => return Err(why),
                            }
                        }
                        Match::Found(Target::Module(g)) => {
                            g.stats.conns.fetch_add(1, Ordering::Relaxed);
                            conn.stage = Stage::Module(g.clone());
                        }
                        Match::Found(Target::Unavailable(protocol)) => {
                            unavailable(&mut conn.wbuf, *protocol);
                            conn.closing = true;
                        }
                    }
                }
                Stage::Module(g) => {
                    let g = g.clone();
                    if conn.wbuf.capacity() == 0 {
                        if let Some(w) = self.pooled_wbuf() {
                            self.conns[key].wbuf = w;
                        }
                    }
                    let conn = &mut self.conns[key];
                    let before = conn.wbuf.len();
                    // The module answers no further pipelined message in
                    // this call once `out` reaches the limit; one that
                    // ignores it overshoots once, then `paused` holds it.
                    conn.info.out_limit = conn.out_limit(budget);
                    let input = conn.rbuf.bytes();
                    let verdict = g.call(CallSite::Message, |m| {
                        m.on_message(&conn.info, RSlice::from_slice(input), &mut conn.wbuf)
                    });
                    // An incomplete message waits for more bytes from the
                    // socket; asking again now would spin.
                    let wait = verdict.action == Action::NeedMore;
                    // Told that the connection drains: it may close once
                    // this answer is out.
                    conn.answered_draining |= conn.info.draining && !wait;
                    match self.apply(key, &g, verdict, before) {
                        Next::Keep if wait => return Ok(progress),
                        Next::Keep => {}
                        Next::Close(why) => return Err(why),
                    }
                }
                Stage::Deferred(_) | Stage::Admin | Stage::Proxy(_) => return Ok(progress),
            }
            progress = true;
        }
    }

    /// Once the TLS handshake has completed, records the names on the
    /// client's verified certificate for modules (mutual TLS). Runs right
    /// after a read, so before any decrypted byte reaches a module.
    fn record_identity(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let Some(der) = conn.take_client_cert() else {
            return;
        };
        let (id, peer) = (conn.info.id, conn.info.peer());
        match crate::tls::identity::names(&der) {
            Ok(names) if names.is_empty() => {
                log::debug!("conn {id} from {peer}: client certificate without usable names");
            }
            Ok(names) => {
                log::debug!("conn {id} from {peer}: client certificate for {names:?}");
                conn.has_identity = true;
                self.shared.services.set_peer_identity(id, names.into());
            }
            // rustls verified it, so this is rare: the connection goes on
            // without an identity, as if no certificate had been sent.
            Err(e) => log::warn!("conn {id} from {peer}: {e}; no identity recorded"),
        }
    }

    /// Looks at a new connection's first bytes: a TLS ClientHello for a
    /// name with a certificate starts termination here. Returns `false`
    /// while more bytes are needed.
    fn start_tls(&mut self, key: usize) -> Result<bool, &'static str> {
        let conn = &mut self.conns[key];
        if !self.shared.tls.active() || conn.rbuf.bytes().first() != Some(&0x16) {
            conn.tls_checked = true;
            return Ok(true);
        }
        let name = match module_api::tls::sni(conn.rbuf.bytes()) {
            module_api::tls::Sni::Incomplete => return Ok(false),
            module_api::tls::Sni::NotTls => {
                conn.tls_checked = true;
                return Ok(true);
            }
            module_api::tls::Sni::Hello(name) => name,
        };
        conn.tls_checked = true;
        let Some(config) = self.shared.tls.terminate(name.as_deref()) else {
            return Ok(true); // passthrough, or no certificate: route as is
        };
        let session = match rustls::ServerConnection::new(config) {
            Ok(s) => s,
            Err(e) => {
                log::error!("tls: cannot start a session: {e}");
                return Err("tls setup failed");
            }
        };
        conn.tls = Some(Box::new(session));
        conn.info.tls = true;
        let hello = conn.rbuf.bytes().to_vec();
        conn.rbuf.consume(hello.len());
        conn.msg_start = None;
        if let Err(e) = conn.feed_tls(&hello) {
            log::debug!("conn {}: tls handshake failed: {e}", conn.info.id);
            return Err("tls handshake failed");
        }
        log::trace!("conn {}: tls for {:?}", conn.info.id, name);
        Ok(true)
    }

    /// Applies a module's verdict to the connection.
    fn apply(&mut self, key: usize, g: &Arc<Generation>, v: Verdict, wbuf_before: usize) -> Next {
        let now = self.now;
        let conn = &mut self.conns[key];
        let available = conn.rbuf.len() as u64;
        if v.fault {
            g.stats.faults.fetch_add(1, Ordering::Relaxed);
            log::error!(
                "{} gen={} faulted (panic) on conn {} from {}",
                g.name,
                g.gen,
                conn.info.id,
                conn.info.peer()
            );
        }
        let bad = |why: &str| {
            log::error!("{} gen={}: protocol violation: {why}", g.name, g.gen);
            g.stats.faults.fetch_add(1, Ordering::Relaxed);
        };
        if v.consumed > available {
            bad("consumed more bytes than it was given");
            return Next::Close("module violation");
        }
        let consumed = v.consumed as usize;
        match v.action {
            Action::NeedMore => {
                if consumed != 0 || conn.wbuf.len() != wbuf_before {
                    bad("NeedMore with output or consumed bytes");
                    return Next::Close("module violation");
                }
                if conn.rbuf.len() >= self.shared.cfg.max_message_size {
                    log::warn!(
                        "conn {} from {}: message exceeds {} bytes, closing",
                        conn.info.id,
                        conn.info.peer(),
                        self.shared.cfg.max_message_size
                    );
                    let protocol = message_protocol(g.protocol, conn.rbuf.bytes());
                    too_large(&mut conn.wbuf, protocol);
                    conn.closing = true;
                    return Next::Keep;
                }
                // Wait for more bytes: stop this round.
                return Next::Keep;
            }
            Action::Defer => {
                if consumed == 0 || conn.wbuf.len() != wbuf_before {
                    bad("Defer without a message or with output");
                    return Next::Close("module violation");
                }
                let msg = conn.rbuf.bytes()[..consumed].to_vec();
                conn.rbuf.consume(consumed);
                conn.stage = Stage::Deferred(g.clone());
                self.shared.pool.submit(Job {
                    gen: g.clone(),
                    info: conn.info,
                    msg,
                    to: ReplyTo {
                        loop_idx: self.idx,
                        key,
                        conn_id: conn.info.id,
                    },
                });
                return Next::Keep;
            }
            Action::Proxy => {
                let out = conn.wbuf[wbuf_before..].to_vec();
                conn.wbuf.truncate(wbuf_before);
                if consumed != 0 {
                    bad("Proxy with consumed bytes");
                    return Next::Close("module violation");
                }
                if conn.tls.is_some() {
                    log::error!(
                        "{}: cannot proxy conn {}: the host terminated its TLS",
                        g.name,
                        conn.info.id
                    );
                    return Next::Close("proxy of a TLS-terminated connection");
                }
                let initial = conn.rbuf.bytes().to_vec();
                conn.rbuf.consume(initial.len());
                self.start_proxy(key, g.clone(), v.upstream, out, initial, 0);
                return Next::Keep;
            }
            Action::Done | Action::Close | Action::Keep => {}
        }
        if consumed == 0 && matches!(v.action, Action::Done | Action::Keep) {
            bad("Done without consuming input");
            return Next::Close("module violation");
        }
        conn.rbuf.consume(consumed);
        finish_message(conn, g, v, now);
        Next::Keep
    }

    /// Delivers results from the pool and the control thread.
    fn drain_inbox(&mut self) {
        while let Ok(c) = self.inbox.try_recv() {
            let to = match c {
                Completion::Deferred { to, .. } | Completion::Admin { to, .. } => to,
                Completion::Push {
                    conn_ids,
                    module,
                    data,
                    notice,
                    refused,
                } => {
                    for conn_id in conn_ids {
                        self.push(conn_id, module.clone(), &data, &notice, refused);
                    }
                    if !refused {
                        self.shared.push_pending.release(self.idx, data.len());
                    }
                    continue;
                }
            };
            let Some(conn) = self.conns.get_mut(to.key) else {
                continue;
            };
            if conn.info.id != to.conn_id {
                continue; // the connection closed; its slot was reused
            }
            match c {
                Completion::Deferred { out, verdict, .. } => {
                    let Stage::Deferred(g) = std::mem::replace(&mut conn.stage, Stage::Routing)
                    else {
                        continue;
                    };
                    conn.wbuf.extend_from_copy_slice(&out);
                    if verdict.fault {
                        g.stats.faults.fetch_add(1, Ordering::Relaxed);
                        log::error!("{} gen={} faulted (panic) in deferred call", g.name, g.gen);
                    }
                    let v = match verdict.action {
                        Action::Done | Action::Close | Action::Keep => verdict,
                        _ => {
                            log::error!(
                                "{} gen={}: deferred call answered {:?}, closing",
                                g.name,
                                g.gen,
                                verdict.action
                            );
                            g.stats.faults.fetch_add(1, Ordering::Relaxed);
                            Verdict::close(0)
                        }
                    };
                    finish_message(conn, &g, v, self.now);
                }
                Completion::Admin { reply, .. } => {
                    conn.wbuf.extend_from_copy_slice(reply.as_bytes());
                    conn.stage = Stage::Routing;
                }
                Completion::Push { .. } => unreachable!("handled above"),
            }
            self.drive(to.key);
        }
    }

    /// Queues bytes a module pushed to one of this loop's connections.
    fn push(&mut self, conn_id: u64, module: Arc<str>, data: &[u8], notice: &[u8], refused: bool) {
        let (_, key) = conn::id_parts(conn_id);
        let limit = self.shared.cfg.max_push_backlog;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.info.id != conn_id || conn.closing {
            return;
        }
        if !conn.watchers.contains(&module) {
            conn.watchers.push(module.clone());
        }
        if refused {
            conn.push_queue.extend_from_slice(notice);
            conn.closing = true;
        } else if conn.backlog() + data.len() > limit {
            log::warn!(
                "conn {} from {}: {module} push backlog over {limit} bytes, disconnecting the slow reader",
                conn.info.id,
                conn.info.peer()
            );
            conn.push_queue.extend_from_slice(notice);
            conn.closing = true;
        } else {
            conn.push_queue.extend_from_slice(data);
        }
        self.drive(key);
    }

    /// Closes connections whose deadline passed.
    fn sweep(&mut self) {
        let cfg = &self.shared.cfg;
        let now = self.now;
        let mut expired: Vec<(usize, &'static str)> = Vec::new();
        let mut connect_timeouts: Vec<usize> = Vec::new();
        for (key, c) in self.conns.iter() {
            if let Stage::Proxy(session) = &c.stage {
                if !session.connected
                    && now.duration_since(session.started) >= cfg.upstream_connect_timeout()
                {
                    connect_timeouts.push(key);
                } else if session.connected
                    && now.duration_since(session.last_activity) >= cfg.proxy_idle_timeout()
                {
                    expired.push((key, "proxy idle timeout"));
                }
                continue;
            }
            if let Stage::Module(g) | Stage::Deferred(g) = &c.stage {
                if g.drain_expired(now) {
                    log::warn!(
                        "conn {} from {}: still on {} gen={} after the drain timeout, closing",
                        c.info.id,
                        c.info.peer(),
                        g.name,
                        g.gen
                    );
                    expired.push((key, "drain timeout"));
                    continue;
                }
            }
            // A handshake in progress, or a ClientHello still arriving.
            let handshaking = c.tls.as_ref().is_some_and(|t| t.is_handshaking())
                || (!c.tls_checked
                    && self.shared.tls.active()
                    && c.rbuf.bytes().first() == Some(&0x16));
            if handshaking && now.duration_since(c.accepted) >= self.shared.tls.handshake_timeout()
            {
                expired.push((key, "tls handshake timeout"));
                continue;
            }
            let (since, limit, why) = if c.pending_output() {
                (c.last_activity, cfg.send_timeout(), "send timeout")
            } else {
                match &c.stage {
                    Stage::Deferred(_) | Stage::Admin | Stage::Proxy(_) => continue,
                    // Accepted and silent ever since: it has not even
                    // started a message, so the idle allowance (meant for
                    // keep-alive between messages) does not apply.
                    _ if c.rbuf.is_empty() && !c.heard => {
                        (c.accepted, cfg.first_bytes_timeout(), "first-bytes timeout")
                    }
                    _ if c.rbuf.is_empty() => (c.last_activity, cfg.idle_timeout(), "idle timeout"),
                    Stage::Routing => (
                        c.msg_start.unwrap_or(c.last_activity),
                        cfg.first_bytes_timeout(),
                        "first-bytes timeout",
                    ),
                    Stage::Module(_) => (
                        c.msg_start.unwrap_or(c.last_activity),
                        cfg.header_timeout(),
                        "message timeout",
                    ),
                }
            };
            if now.duration_since(since) >= limit {
                expired.push((key, why));
            }
        }
        for key in connect_timeouts {
            self.proxy_failed(
                key,
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            );
            self.drive(key);
        }
        for (key, why) in expired {
            if let Some(c) = self.conns.get(key) {
                log::debug!("conn {} from {}: {why}", c.info.id, c.info.peer());
            }
            self.close(key, why);
        }
    }
}

/// Bookkeeping once a module finished a message (`Done` or `Close`).
fn finish_message(conn: &mut Conn, g: &Arc<Generation>, v: Verdict, now: Instant) {
    g.stats.requests.fetch_add(1, Ordering::Relaxed);
    g.stats.conns.fetch_sub(1, Ordering::Relaxed);
    conn.stage = Stage::Routing;
    if v.body.is_some() {
        conn.body = Some(v.body);
        conn.body_pos = 0;
    }
    if v.file.is_some() {
        conn.file = Some(PendingFile::new(v.file));
    }
    match v.action {
        Action::Close => conn.closing = true,
        Action::Keep => conn.sticky = Some(g.name.clone()),
        _ => conn.sticky = None,
    }
    if v.watch_close && !conn.watchers.contains(&g.name) {
        conn.watchers.push(g.name.clone());
    }
    conn.last_activity = now;
    conn.msg_start = if conn.rbuf.is_empty() {
        None
    } else {
        Some(now)
    };
}

/// The reply to bytes that look like an HTTP request but match no
/// binding (a malformed request line, an unknown method).
fn bad_request(out: &mut RVec<u8>) {
    let body = b"400 Bad Request\n";
    module_api::http::start_response(out, 400, false);
    module_api::http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
    module_api::http::end_head(out, body.len() as u64);
    out.extend_from_copy_slice(body);
}

/// The protocol of one message: a module that speaks JSON-RPC may also
/// take it over HTTP (the rpc module's `POST /rpc`), so a message that
/// starts like an HTTP request is answered in HTTP.
fn message_protocol(module: Protocol, message: &[u8]) -> Protocol {
    if module == Protocol::JsonRpc && crate::router::looks_like_http(message) {
        Protocol::Http
    } else {
        module
    }
}

/// The reply to a message over `max_message_size`, before the host closes
/// the connection.
fn too_large(out: &mut RVec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Http => {
            let body = b"413 Content Too Large: the request exceeds the server's max_message_size\n";
            module_api::http::start_response(out, 413, false);
            module_api::http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
            module_api::http::end_head(out, body.len() as u64);
            out.extend_from_copy_slice(body);
        }
        Protocol::JsonRpc => out.extend_from_copy_slice(
            br#"{"jsonrpc":"2.0","error":{"code":-32040,"message":"message over the server's max_message_size; closing"},"id":null}
"#,
        ),
        Protocol::Raw => {}
    }
}

/// The reply for a prefix whose module is reloading or gone.
fn unavailable(out: &mut RVec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Http => {
            let body = b"503 Service Unavailable: the module is reloading or removed\n";
            module_api::http::start_response(out, 503, false);
            module_api::http::push_header(out, "Retry-After", b"1");
            module_api::http::push_header(out, "Content-Type", b"text/plain; charset=utf-8");
            module_api::http::end_head(out, body.len() as u64);
            out.extend_from_copy_slice(body);
        }
        Protocol::JsonRpc => out.extend_from_copy_slice(
            br#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"service unavailable, retry"},"id":null}
"#,
        ),
        Protocol::Raw => {}
    }
}
