//! The event loop's side of proxied connections: connecting to the
//! upstream a module chose, relaying, and asking the module again when a
//! connect fails. The relay itself is in [`crate::proxy`].

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use abi_stable::std_types::RVec;
use mio::net::TcpStream;
use mio::{Interest, Token};
use module_api::{Action, ProxyEvent, ProxyEventKind};

use super::{EventLoop, MAX_PROXY_ATTEMPTS, UPSTREAM};
use crate::conn::Stage;
use crate::generation::{CallSite, Generation};
use crate::proxy::{Buffer, Ready, Relay, Session};

impl EventLoop {
    /// Starts connecting a connection to an upstream; `out` goes first, then
    /// the client's buffered bytes.
    pub(super) fn start_proxy(
        &mut self,
        key: usize,
        gen: Arc<Generation>,
        upstream: module_api::Upstream,
        out: Vec<u8>,
        initial: Vec<u8>,
        attempts: u32,
    ) {
        let cfg = &self.shared.cfg;
        let addr = upstream.addr();
        let mut first = out;
        first.extend_from_slice(&initial);
        // The upstream socket is a descriptor like a client's: it counts
        // against max_connections, so proxied sessions cannot exhaust the
        // descriptor limit behind the connection count's back.
        let full = self.shared.conns.load(Ordering::Acquire) >= cfg.max_connections;
        let mut own = None;
        let sock = if full {
            Err(io::Error::other(
                "max_connections reached (a proxied session's upstream socket counts)",
            ))
        } else if addr.port() == self.shared.listen_addr.port() {
            // Possibly ourselves (a proxy route pointing back at our own
            // port): mark the upstream's local address before the connect
            // starts, so the loop that accepts it, whichever, sees the mark.
            let own_upstreams = &self.shared.own_upstreams;
            match crate::sys::connect_from_own_address(addr, |local| own_upstreams.mark(local)) {
                Ok(Some((sock, mark))) => {
                    own = Some(mark);
                    Ok(TcpStream::from_std(sock))
                }
                Ok(None) => TcpStream::connect(addr),
                Err(e) => Err(e),
            }
        } else {
            TcpStream::connect(addr)
        };
        let sock = sock.and_then(|mut sock| {
            sock.set_nodelay(true)?;
            self.poll.registry().register(
                &mut sock,
                Token(key | UPSTREAM),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(sock)
        });
        let conn = &mut self.conns[key];
        match sock {
            Ok(sock) => {
                // TLS terminated here means plaintext exists only in user
                // space: such a connection can only copy.
                let splice = cfg.proxy_splice && !conn.is_tls();
                let (up, down) =
                    Buffer::pair(splice, cfg.proxy_buffer_size, &first, conn.info().id);
                // Only an upstream on our own port can reach our listener,
                // and it was marked above, before its connect. Others are
                // not marked: their local ports, lingering as marks, would
                // make a local client that reuses one look self-forwarded.
                let slots = Session::extra_slots(up.is_spliced());
                self.shared.conns.fetch_add(slots, Ordering::AcqRel);
                conn.into_proxy(Box::new(Session {
                    gen,
                    upstream,
                    sock,
                    connected: false,
                    attempts: attempts + 1,
                    initial,
                    started: self.now,
                    last_activity: self.now,
                    up,
                    down,
                    client_ready: Ready::BOTH,
                    upstream_ready: Ready::BOTH,
                    bytes_up: 0,
                    bytes_down: 0,
                    client_eof: conn.is_eof(),
                    upstream_eof: false,
                    up_shut: false,
                    down_shut: false,
                    slots,
                    own,
                }));
            }
            Err(e) => {
                // Failed before any socket existed: ask the module at once.
                log::warn!("conn {}: cannot connect to {addr}: {e}", conn.info().id);
                conn.route_to(gen.clone());
                self.proxy_retry(key, gen, upstream, initial, attempts + 1);
            }
        }
    }

    /// Relays a proxied connection (or finishes connecting it).
    pub(super) fn drive_proxy(&mut self, key: usize) {
        let now = self.now;
        let conn = &mut self.conns[key];
        // Replies written before the hand-off go out first.
        if conn.output().head_unsent() {
            match conn.flush() {
                Ok(_) if conn.output().head_unsent() => return,
                Ok(_) => {}
                Err(_) => return self.close(key, "write error"),
            }
        }
        let Some((sock, session, info)) = conn.relay_parts() else {
            return;
        };
        if !session.connected {
            match session.check_connected() {
                Ok(false) => return,
                Ok(true) => {
                    let g = session.gen.clone();
                    let mut out = RVec::new();
                    let _ = g.call(CallSite::ProxyEvent, |m| {
                        m.proxy_event(
                            info,
                            proxy_event(ProxyEventKind::Connected, session),
                            &mut out,
                        )
                    });
                    log::debug!(
                        "conn {}: proxied to {} ({})",
                        info.id,
                        session.upstream.addr(),
                        if session.up.is_spliced() {
                            "splice"
                        } else {
                            "copy"
                        }
                    );
                }
                Err(e) => {
                    self.proxy_failed(key, e);
                    return self.drive(key);
                }
            }
        }
        match session.relay(sock, now) {
            Ok(Relay::Open) => {}
            Ok(Relay::Yield) => {
                if !self.again.contains(&key) {
                    self.again.push(key);
                }
            }
            Ok(Relay::Done) => self.close(key, "proxy session done"),
            Err(e) => {
                log::debug!("conn {}: proxy relay: {e}", info.id);
                self.close(key, "proxy relay error");
            }
        }
    }

    /// A connect failed: the module picks another upstream or gives up.
    /// The caller drives the connection afterwards (it may be closing).
    pub(super) fn proxy_failed(&mut self, key: usize, err: io::Error) {
        let conn = &mut self.conns[key];
        let Stage::Proxy(mut session) = conn.leave_stage() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut session.sock);
        self.shared.conns.fetch_sub(session.slots, Ordering::AcqRel);
        log::warn!(
            "conn {}: upstream {} failed: {err}",
            conn.info().id,
            session.upstream.addr()
        );
        let gen = session.gen.clone();
        conn.route_to(gen.clone());
        let initial = std::mem::take(&mut session.initial);
        self.proxy_retry(key, gen, session.upstream, initial, session.attempts);
    }

    /// Asks the module what to do after a failed connect; the connection is
    /// in `Stage::Module(gen)` meanwhile (it counts in the module's conns).
    fn proxy_retry(
        &mut self,
        key: usize,
        gen: Arc<Generation>,
        failed: module_api::Upstream,
        initial: Vec<u8>,
        attempts: u32,
    ) {
        let conn = &mut self.conns[key];
        let mut out = RVec::new();
        let event = ProxyEvent {
            kind: ProxyEventKind::Failed,
            upstream: failed,
            bytes_up: 0,
            bytes_down: 0,
        };
        let v = gen.call(CallSite::ProxyEvent, |m| {
            m.proxy_event(conn.info(), event, &mut out)
        });
        if v.fault {
            gen.count_fault(
                CallSite::ProxyEvent,
                &format_args!("panicked on conn {}", conn.info().id),
            );
        }
        if v.action == Action::Proxy && attempts < MAX_PROXY_ATTEMPTS {
            self.start_proxy(key, gen, v.upstream, out.into_vec(), initial, attempts);
            return;
        }
        if v.action == Action::Proxy {
            log::warn!(
                "conn {}: {} proxy attempts failed, closing",
                conn.info().id,
                attempts
            );
        }
        // No `drive` here: this runs inside the caller's processing of the
        // connection (a verdict being applied, a relay, the sweep), and a
        // nested drive could close the slot under it. The caller drives.
        conn.out_mut().extend_from_copy_slice(&out);
        conn.close_after_output();
        conn.leave_stage();
        gen.stats.conns.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The event for a session's current state.
pub(super) fn proxy_event(kind: ProxyEventKind, s: &Session) -> ProxyEvent {
    ProxyEvent {
        kind,
        upstream: s.upstream,
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
    }
}
