//! The loop's front door: accepting connections, admitting them within
//! `max_connections` and `max_connections_per_ip` (closing the longest-idle
//! connection to make room), and registering them with the poll.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest, Token};
use module_api::ConnInfo;

use super::{EventLoop, ACCEPT_BACKOFF};
use crate::conn::{self, Conn};

impl EventLoop {
    pub(super) fn accept(&mut self) {
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

    /// Takes a connection slot for a new peer: within
    /// `max_connections_per_ip`, and within `max_connections`, making room
    /// by closing this loop's oldest idle connection when the slots are
    /// full (nginx reuses idle keep-alive connections the same way), so
    /// that silent or idle clients cannot lock everyone out, the admin
    /// commands included. False: refused (logged).
    pub(super) fn admit(&mut self, peer: SocketAddr) -> bool {
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
    pub(super) fn evict_idle(&mut self, newcomer: SocketAddr) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| c.idle() && c.sticky().is_none() && c.watchers().is_empty())
            .min_by_key(|(_, c)| c.last_activity())
            .map(|(k, c)| {
                (
                    k,
                    c.info().id,
                    c.info().peer(),
                    c.heard(),
                    c.last_activity(),
                )
            });
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
    pub(super) fn forget_peer(&self, peer: SocketAddr) {
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

    pub(super) fn register(&mut self, mut sock: TcpStream, peer: SocketAddr) {
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
}
