//! Where a message goes once the host hands it over: which transport
//! reads it ([`crate::raw`] lines or a [`crate::post`] request), and
//! whether this generation serves it (live), waits (standby) or forwards
//! it to its successor (frozen, [`crate::handoff`]). In-process calls
//! (connection id 0) are either internal calls between generations or
//! JSON-RPC from another module. `lib.rs`'s `Handler` calls these.

use module_api::{RVec, Verdict};

use crate::access::Peer;
use crate::generation::Rpc;
use crate::handoff::{self, Internal};
use crate::host::wait;
use crate::types::Mode;
use crate::{post, raw};

impl Rpc {
    /// Whether input on a connection is (the rest of) an HTTP request
    /// rather than JSON-RPC lines — a kept connection's input comes here
    /// whatever its first bytes, so a started message decides first — and
    /// whether it continues a kept start.
    pub(crate) fn transport(&self, conn: u64, input: &[u8]) -> (bool, bool) {
        let started = if conn == 0 {
            None
        } else {
            self.core.conns.partial_kind(conn)
        };
        match started {
            Some(http) => (http, true),
            None => (input.starts_with(b"POST "), false),
        }
    }

    /// In-process calls (connection id 0): internal calls between
    /// generations, or JSON-RPC from another module.
    pub(crate) fn on_call(&self, input: &[u8], out: &mut RVec<u8>) -> Verdict {
        match handoff::parse(input, &self.token) {
            Some(Internal::Resume) => {
                self.resume();
                log::warn!("resuming: the next generation failed to start");
                out.extend_from_copy_slice(b"ok done\n");
                Verdict::done(input.len())
            }
            Some(Internal::Claim) => {
                let reply: &[u8] = if self.claim() {
                    b"ok done\n"
                } else {
                    b"refused\n"
                };
                out.extend_from_copy_slice(reply);
                Verdict::done(input.len())
            }
            Some(Internal::Close { conn }) => {
                let frozen = !matches!(
                    self.core.gate.try_read().as_deref(),
                    Ok(Mode::Live | Mode::Standby)
                );
                if !frozen {
                    self.closed(conn);
                    out.extend_from_copy_slice(b"ok done\n");
                } else {
                    out.extend_from_copy_slice(b"retry\n");
                }
                Verdict::done(input.len())
            }
            // Forwarded messages and JSON-RPC calls may wait for a commit.
            Some(Internal::Forward { .. }) | None => Verdict::defer(input.len()),
        }
    }

    pub(crate) fn on_call_deferred(&self, input: &[u8], out: &mut RVec<u8>) -> Verdict {
        if let Some(Internal::Forward {
            conn,
            http,
            peer,
            payload,
        }) = handoff::parse(input, &self.token)
        {
            handoff::serve(self, conn, http, peer, payload, out);
            return Verdict::done(input.len());
        }
        let http = input.starts_with(b"POST ");
        self.deferred(0, Peer::UNKNOWN, false, http, input, out)
    }

    /// A deferred message: handled here while live (the gate held, so a
    /// handover waits for it), forwarded to the successor once frozen.
    pub(crate) fn deferred(
        &self,
        conn: u64,
        peer: Peer,
        draining: bool,
        http: bool,
        input: &[u8],
        out: &mut RVec<u8>,
    ) -> Verdict {
        if conn != 0 && self.core.conns.has_pending(conn) {
            // Replies to lines this generation handed to its writer.
            return raw::on_deferred(self, conn, peer, input, out);
        }
        let since = std::time::Instant::now();
        loop {
            let gate = self.core.gate.read().unwrap_or_else(|e| e.into_inner());
            match *gate {
                Mode::Live => {
                    return if http {
                        post::on_deferred(self, conn, peer, draining, input, out)
                    } else {
                        raw::on_deferred(self, conn, peer, input, out)
                    };
                }
                Mode::Frozen => {
                    drop(gate);
                    if let Ok(v) = handoff::forward(self, conn, http, peer, input, out) {
                        return v;
                    }
                }
                Mode::Standby => {
                    drop(gate);
                    if since.elapsed() >= self.core.cfg.handoff_timeout() {
                        return handoff::unavailable(http, input.len(), out);
                    }
                    let pause = std::time::Duration::from_millis(2);
                    wait(self.core.host, || std::thread::sleep(pause));
                }
            }
        }
    }

    /// A connection closed: forget its state, subscriptions and login.
    pub(crate) fn closed(&self, conn: u64) {
        self.core
            .conns
            .close(conn, || self.core.bus.remove_conn(conn));
        self.core.access.sessions.remove(conn);
    }
}
