//! Where a message goes once the host hands it over: which transport
//! reads it ([`crate::raw`] lines, a [`crate::post`] request or
//! [`crate::ws`] frames), and
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
use crate::{post, raw, ws};

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
                    // As `on_close` does for a connection of this generation.
                    self.closed(conn);
                    self.core.inbox.drop_conn(&*self.core, conn);
                    self.core.streams.closed(conn);
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
        let ws = conn != 0 && self.core.ws.contains(conn);
        if conn != 0 && self.core.conns.has_pending(conn) {
            // Replies to messages this generation handed to its writer.
            return if ws {
                ws::collect(self, conn, input, out)
            } else {
                raw::on_deferred(self, conn, peer, input, out)
            };
        }
        let since = std::time::Instant::now();
        loop {
            let gate = self.core.gate.read().unwrap_or_else(|e| e.into_inner());
            match *gate {
                Mode::Live => {
                    return if ws {
                        ws::serve(self, conn, peer, input, out)
                    } else if http {
                        let mut gate = Some(gate);
                        post::on_deferred(self, conn, peer, draining, input, out, &mut || {
                            gate.take();
                        })
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
                        if ws {
                            return ws::unavailable(input.len(), out);
                        }
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
        self.core.conns.close(conn, || {
            self.core.bus.remove_conn(conn);
            self.core.watches.remove_conn(conn);
        });
        self.core.access.sessions.remove(conn);
        self.core.ws.remove(conn);
    }
}

#[cfg(test)]
mod tests {
    use module_api::{ConnInfo, Handler};

    use super::*;
    use crate::access;
    use crate::jsonrpc::code;
    use crate::testing::NullHost;

    #[test]
    fn a_second_owner_waits_in_standby() {
        let dir = crate::testdir::TestDir::new("standby");
        let cfg = serde_json::json!({});
        let a = Rpc::start(&cfg, dir.path(), b"", &NullHost).unwrap();
        let set = br#"{"jsonrpc":"2.0","method":"kv.set","params":["k",1],"id":1}"#;
        let mut out = RVec::new();
        raw::on_deferred(&a, 0, Peer::UNKNOWN, set, &mut out);
        assert!(out
            .as_slice()
            .starts_with(br#"{"jsonrpc":"2.0","result":true"#));

        let b = Rpc::start(&cfg, dir.path(), b"", &NullHost).unwrap();
        assert_eq!(*b.core.gate.read().unwrap(), Mode::Standby);
        assert!(b.status().contains("standby=1"));
        let info = ConnInfo::new(0, "127.0.0.1:1".parse().unwrap(), false);
        let waiter = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let get = br#"{"jsonrpc":"2.0","method":"kv.get","params":["k"],"id":2}"#;
                let mut out = module_api::Out::new();
                b.on_deferred(&info, get, &mut out);
                out.into_inner().into_vec()
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!h.is_finished(), "waits while the other owner lives");
            a.stop();
            drop(a);
            h.join().unwrap()
        });
        assert_eq!(waiter, b"{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":2}\n");
        assert!(b.live());
        b.stop();
    }

    /// A message a frozen generation forwards arrives as an in-process
    /// call (connection id 0) but runs as the connection it came from:
    /// its login, or its address in protected mode.
    #[test]
    fn forwarded_messages_are_authorized_as_their_connection() {
        let dir = crate::testdir::TestDir::new("fwdauth");
        let hash = format!(
            "sha256:{}",
            access::users::hash_token("t1")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let cfg = serde_json::json!({"users": [{"name": "bot1", "token_hash": hash,
            "permissions": {"kv_read": ["bot1.*"]}}]});
        let rpc = Rpc::start(&cfg, dir.path(), b"", &NullHost).unwrap();
        let internal = ConnInfo::new(0, "127.0.0.1:1".parse().unwrap(), false);
        let peer = Peer::new("10.0.0.5".parse().unwrap(), false);
        let forward = |line: &str| {
            let env = handoff::envelope(&rpc.token, "fwd", 7, false, peer, line.as_bytes());
            let mut out = module_api::Out::new();
            rpc.on_deferred(&internal, &env, &mut out);
            let text = String::from_utf8(out.into_inner().into_vec()).unwrap();
            let body = text.split_once('\n').unwrap().1.to_string();
            serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()
        };
        let get = "{\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":[\"bot1.x\"],\"id\":1}\n";
        assert_eq!(
            forward(get)["error"]["code"],
            code::AUTH_REQUIRED,
            "not in-process"
        );
        let auth = "{\"jsonrpc\":\"2.0\",\"method\":\"sys.auth\",\"params\":[\"t1\"],\"id\":2}\n";
        assert_eq!(forward(auth)["result"]["user"], "bot1");
        assert_eq!(forward(get)["result"], serde_json::Value::Null);
        let other = get.replace("bot1.x", "bot2.x");
        assert_eq!(forward(&other)["error"]["code"], code::PERMISSION_DENIED);
        // An in-process call proper is internal.
        let mut out = module_api::Out::new();
        rpc.on_deferred(&internal, other.as_bytes(), &mut out);
        assert!(out
            .as_slice()
            .starts_with(br#"{"jsonrpc":"2.0","result":null"#));
        rpc.stop();

        // Protected mode: the forwarded address decides.
        let dir = crate::testdir::TestDir::new("fwdprot");
        let rpc = Rpc::start(&serde_json::json!({}), dir.path(), b"", &NullHost).unwrap();
        // A self-forwarded peer (a proxy route of ours back at our own
        // port) is not loopback, whatever its address.
        for (peer, fwd, want) in [
            ("10.0.0.5", false, Some(code::AUTH_REQUIRED)),
            ("127.0.0.1", false, None),
            ("127.0.0.1", true, Some(code::AUTH_REQUIRED)),
        ] {
            let env = handoff::envelope(
                &rpc.token,
                "fwd",
                7,
                false,
                Peer::new(peer.parse().unwrap(), fwd),
                get.as_bytes(),
            );
            let mut out = module_api::Out::new();
            rpc.on_deferred(&internal, &env, &mut out);
            let text = String::from_utf8(out.into_inner().into_vec()).unwrap();
            let v: serde_json::Value =
                serde_json::from_str(text.split_once('\n').unwrap().1.trim()).unwrap();
            assert_eq!(v["error"]["code"].as_i64(), want, "{peer} {fwd}: {v}");
        }
        rpc.stop();
    }
}
