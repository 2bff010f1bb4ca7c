//! The event loops: one per core, each with its own listener (or a shared
//! one), driving non-blocking connections edge-triggered with mio.
//!
//! Per connection the loop reads until `WouldBlock`, routes each message to
//! a module by its first bytes, calls the module, and writes until
//! `WouldBlock`. Module calls that block go to the worker pool and come back
//! through the loop's mailbox. Pushes come through the mailbox too: a loop
//! turn queues all of them on their connections first and then writes each
//! such connection once, so a burst of published messages costs one write
//! per connection, not one per message. Timeouts are checked by a sweep
//! four times a second.
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
//! This file is the loop itself (poll, wake-ups, the shutdown clock). The
//! rest is split by what happens to a connection:
//!
//! * [`accept`]: accepting, admitting within the limits, registering;
//! * [`dispatch`]: reading, routing, calling modules, applying verdicts,
//!   writing, and what comes back from the pool;
//! * [`verdict`]: the rules a module's verdict must keep (a pure function);
//! * [`close`]: closing, the timeout sweep, shutdown;
//! * [`replies`]: the fixed replies the host writes itself;
//! * [`commands`]: the built-in commands; [`proxying`]: proxied
//!   connections.

mod accept;
mod close;
mod commands;
mod dispatch;
mod proxying;
mod replies;
mod verdict;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::RVec;
use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::conn::Conn;
use crate::pool::Completion;
use crate::router::RouteTable;
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
/// Pushed bytes a mailbox drain queues on its connections (each has its
/// own copy) before it writes them, rather than waiting for the drain's
/// end: many messages still share one write, and the copies of one large
/// message to many subscribers never pile up (they are written and freed
/// as they go, as `hostile::rpc` checks with 300 x 900 KB).
const COALESCE_BYTES: usize = 4 << 20;

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
    /// Connections (slab key, id) that got pushes during this turn's
    /// mailbox drain, written once each after it.
    pushed: Vec<(usize, u64)>,
    /// Bytes those connections queued since they were last written.
    pushed_bytes: usize,
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
        // mio expects a non-blocking socket; a listener handed in by a
        // caller (a test building the server in-process) may not be one.
        listener.set_nonblocking(true)?;
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
            pushed: Vec::new(),
            pushed_bytes: 0,
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
        // Pushes made by module calls on this thread go out one mailbox
        // entry per destination loop and call, not one per message.
        crate::services::batch_pushes_on_this_thread();
        let mut events = Events::with_capacity(1024);
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            // A mailbox drain takes only what was there when it began:
            // what is left is taken next turn, without sleeping.
            let timeout = if self.again.is_empty() && self.inbox.is_empty() {
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
                                if let Some(s) = c.session_mut() {
                                    s.upstream_ready.note(event);
                                }
                            } else {
                                c.note_event(event);
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

    fn refresh_table(&mut self) {
        let v = self.shared.table.version();
        if v != self.table_version {
            let (v, t) = self.shared.table.current();
            self.table_version = v;
            self.table = t;
        }
    }
}
