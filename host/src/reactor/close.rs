//! How connections end: closing one (telling the modules that hold or
//! watch it, giving its buffers back to the loop's pools), the sweep that
//! closes those whose deadline passed, and the graceful shutdown.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use abi_stable::std_types::RVec;
use module_api::ProxyEventKind;

use super::proxying::proxy_event;
use super::{EventLoop, POOLED_READ_BYTES, POOLED_WRITE_BYTES};
use crate::conn::{self, Stage, READ_BUF};
use crate::generation::CallSite;

impl EventLoop {
    /// Stops accepting and marks every connection as draining. Closing the
    /// idle ones at once would race their clients: a keep-alive client may
    /// be sending its next request right now, and a connection accepted a
    /// moment ago has not sent its first one yet. So each idle connection
    /// gets `shutdown_idle_grace_ms` for one more message, answered with
    /// the draining flag (HTTP: `Connection: close`), and then closes.
    pub(super) fn begin_shutdown(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let grace = Duration::from_millis(self.shared.cfg.shutdown_idle_grace_ms);
        self.idle_close_at = self.now + grace;
        let mut idle = Vec::new();
        for (k, c) in self.conns.iter_mut() {
            c.mark_draining();
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
    pub(super) fn close_idle(&mut self) {
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

    pub(super) fn close(&mut self, key: usize, why: &'static str) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        self.shared
            .buffered
            .fetch_sub(conn.rbuf().grown(), Ordering::AcqRel);
        conn.close_tls();
        let _ = conn.deregister(self.poll.registry());
        let told = match conn.leave_stage() {
            Stage::Module(g) | Stage::Deferred(g) => {
                g.stats.conns.fetch_sub(1, Ordering::Relaxed);
                g.call(CallSite::Close, |m| m.on_close(conn.info()));
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
                        conn.info(),
                        proxy_event(ProxyEventKind::Closed, &session),
                        &mut out,
                    )
                });
                log::debug!(
                    "conn {}: proxy to {} closed ({why}): {} bytes up, {} down",
                    conn.info().id,
                    session.upstream.addr(),
                    session.bytes_up,
                    session.bytes_down
                );
                Some(g.name.clone())
            }
            Stage::Routing | Stage::Admin => None,
        };
        for name in conn.watchers() {
            if told.as_ref() != Some(name) {
                if let Ok(g) = self.shared.registry.current(name) {
                    g.call(CallSite::Close, |m| m.on_close(conn.info()));
                }
            }
        }
        // After `on_close`: a module may still ask who it was.
        if conn.has_identity() {
            self.shared.services.forget_peer_identity(conn.info().id);
        }
        if let Some(buf) = conn.detach_read_buffer() {
            self.recycle(buf);
        }
        let wbuf = conn.take_write_buffer();
        self.recycle_wbuf(wbuf);
        self.shared.conns.fetch_sub(1, Ordering::AcqRel);
        self.forget_peer(conn.info().peer());
        log::trace!("conn {} closed: {why}", conn.info().id);
    }

    pub(super) fn recycle(&mut self, buf: Vec<u8>) {
        if buf.len() == READ_BUF && (self.buffers.len() + 1) * READ_BUF <= POOLED_READ_BYTES {
            self.buffers.push(buf);
        }
    }

    /// Keeps an empty write buffer for the next connection that needs one,
    /// within [`POOLED_WRITE_BYTES`]; large ones are freed.
    pub(super) fn recycle_wbuf(&mut self, mut wbuf: RVec<u8>) {
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
    pub(super) fn pooled_wbuf(&mut self) -> Option<RVec<u8>> {
        let w = self.wbuffers.pop()?;
        self.wbuffer_bytes -= w.capacity();
        Some(w)
    }

    /// Closes connections whose deadline passed.
    pub(super) fn sweep(&mut self) {
        let cfg = &self.shared.cfg;
        let now = self.now;
        let mut expired: Vec<(usize, &'static str)> = Vec::new();
        let mut connect_timeouts: Vec<usize> = Vec::new();
        for (key, c) in self.conns.iter() {
            if let Stage::Proxy(session) = c.stage() {
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
            if let Stage::Module(g) | Stage::Deferred(g) = c.stage() {
                if g.drain_expired(now) {
                    log::warn!(
                        "conn {} from {}: still on {} gen={} after the drain timeout, closing",
                        c.info().id,
                        c.info().peer(),
                        g.name,
                        g.gen
                    );
                    expired.push((key, "drain timeout"));
                    continue;
                }
            }
            // A handshake in progress, or a ClientHello still arriving.
            let handshaking = c.tls_handshaking()
                || (!c.tls_checked()
                    && self.shared.tls.active()
                    && c.rbuf().bytes().first() == Some(&0x16));
            if handshaking
                && now.duration_since(c.accepted()) >= self.shared.tls.handshake_timeout()
            {
                expired.push((key, "tls handshake timeout"));
                continue;
            }
            let (since, limit, why) = if c.pending_output() {
                (c.last_activity(), cfg.send_timeout(), "send timeout")
            } else {
                match c.stage() {
                    Stage::Deferred(_) | Stage::Admin | Stage::Proxy(_) => continue,
                    // Accepted and silent ever since: it has not even
                    // started a message, so the idle allowance (meant for
                    // keep-alive between messages) does not apply.
                    _ if c.rbuf().is_empty() && !c.heard() => (
                        c.accepted(),
                        cfg.first_bytes_timeout(),
                        "first-bytes timeout",
                    ),
                    _ if c.rbuf().is_empty() => {
                        (c.last_activity(), cfg.idle_timeout(), "idle timeout")
                    }
                    Stage::Routing => (
                        c.msg_start().unwrap_or(c.last_activity()),
                        cfg.first_bytes_timeout(),
                        "first-bytes timeout",
                    ),
                    Stage::Module(_) => (
                        c.msg_start().unwrap_or(c.last_activity()),
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
                log::debug!("conn {} from {}: {why}", c.info().id, c.info().peer());
            }
            self.close(key, why);
        }
    }
}
