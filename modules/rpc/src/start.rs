//! How a generation starts ([`Rpc::start`]): claim the predecessor's
//! state, check the config, own the database (the predecessor's lock, a
//! free one, or standby), restore the handed-over subscriptions,
//! connection starts and logins, drop the subscriptions the new users may
//! not hold, and start the writer.

use std::sync::Arc;

use crate::access::{self, Access, Peer, Who};
use crate::config::Config;
use crate::core::Core;
use crate::generation::Rpc;
use crate::handoff::{self, ResumeGuard, State};
use crate::host::HostApi;
use crate::owner::Owner;
use crate::store::Store;
use crate::types::Mode;
use crate::writer::{Start, Writer};
use crate::{db, hex, jsonrpc};

/// The notification a connection gets when a reload took one of its
/// subscriptions away.
pub fn revoked_notice(pattern: &str) -> Vec<u8> {
    let mut out = br#"{"jsonrpc":"2.0","method":"bus.revoked","params":{"pattern":"#.to_vec();
    jsonrpc::write_str(&mut out, pattern);
    out.extend_from_slice(b"}}\n");
    out
}

/// After a reload: drops the handed-over subscriptions that their
/// connections may no longer hold under the new users, telling each
/// connection with a `bus.revoked` notification per pattern. `whos` are
/// the connections whose sessions were handed over; the others were
/// served in protected mode (loopback) and are judged as they are now.
fn revoke_subscriptions(core: &Core, whos: Vec<(u64, Who)>) {
    let whos: std::collections::HashMap<u64, Who> = whos.into_iter().collect();
    let who_of = |conn: u64| {
        whos.get(&conn).cloned().unwrap_or_else(|| {
            if core.access.users.is_empty() {
                Who::Loopback
            } else {
                core.access.who(core.host, &core.conns, conn, Peer::UNKNOWN)
            }
        })
    };
    for (conn, patterns) in core.bus.snapshot() {
        let who = who_of(conn);
        let gone: Vec<String> = patterns
            .into_iter()
            .filter(|p| !who.may(access::Right::Subscribe, p))
            .collect();
        if gone.is_empty() {
            continue;
        }
        core.bus.unsubscribe(conn, Some(&gone));
        for p in &gone {
            log::info!("conn {conn}: subscription {p:?} revoked by the new users/permissions");
            core.push_line(conn, &revoked_notice(p));
        }
    }
    // Queue subscriptions are judged the same way.
    for (conn, pattern, queue) in core.bus.queue_snapshot() {
        if who_of(conn).may(access::Right::Subscribe, &pattern) {
            continue;
        }
        let gone = [pattern];
        core.bus.unsubscribe_queue(conn, Some(&gone), &queue);
        log::info!(
            "conn {conn}: queue subscription {:?} ({queue}) revoked by the new users/permissions",
            gone[0]
        );
        core.push_line(conn, &revoked_notice(&gone[0]));
    }
}

impl Rpc {
    /// Opens the database (reading no value) and starts the writer; `state` is the
    /// previous generation's (empty on a first start).
    pub fn start(
        config: &serde_json::Value,
        data_dir: &std::path::Path,
        state: &[u8],
        host: &'static dyn HostApi,
    ) -> Result<Rpc, String> {
        let state = State::parse(state)?;
        if let Some(s) = &state {
            handoff::claim(host, &s.token)?;
        }
        // From here on, a failure must let the frozen predecessor resume
        // (at once: a config the new generation refuses, such as a bad
        // users table, leaves the old one serving without a pause).
        let mut resume = ResumeGuard {
            host,
            token: state.as_ref().map(|s| s.token.clone()),
        };
        let cfg = Config::from_json(config, data_dir)?;
        // Checked before the database lock is taken over.
        Access::new(&cfg)?;
        let token = state
            .as_ref()
            .map_or_else(handoff::new_token, |s| s.token.clone());
        // Own the database: the predecessor's lock, or a free one.
        let lock = Owner::lock_path(&cfg.db);
        let adopted = state
            .as_ref()
            .and_then(|s| s.lock_fd)
            .and_then(|fd| Owner::adopt(fd, &lock));
        let owner = match adopted {
            Some(o) => Some(o),
            None => Owner::try_acquire(&lock)?,
        };
        let store = Store::new(&cfg.db, cfg.cache_bytes);
        let (start, mode) = match owner {
            Some(owner) => {
                let db = db::Db::open(&cfg.db, cfg.sync)?;
                (Start::Ready { db, owner }, Mode::Live)
            }
            None => {
                log::warn!(
                    "{} is in use by another process (a worker being replaced, or another \
                     server on this data directory); requests wait until it lets go",
                    cfg.db.display()
                );
                (Start::Standby, Mode::Standby)
            }
        };
        let core = Arc::new(Core::new(cfg, store, host)?);
        *core.gate.write().unwrap_or_else(|e| e.into_inner()) = mode;
        core.inbox.bind(&core);
        if let Some(s) = state {
            // First the tombstones: nothing comes back for a connection
            // the previous generation saw close.
            core.conns.restore_closed(s.closed);
            let partials = s.conns.iter();
            core.conns.restore(
                partials
                    .map(|c| (c.id, hex::from_hex(&c.partial), c.http))
                    .collect(),
            );
            crate::ws::restore(&core, s.ws);
            core.bus.restore(s.subs);
            core.streams.restore(s.consumers);
            // Queue subscriptions and waiting requests.
            core.bus.restore_queues(s.qsubs);
            core.inbox.restore(&*core, s.inbox);
            let whos = core.access.restore(host, &core.conns, s.sessions);
            restore_watches(&core, s.watches, &whos);
            revoke_subscriptions(&core, whos);
        }
        crate::ws::start_pings(&core);
        let writer = Writer::spawn(core.clone(), start)?;
        resume.token = None;
        log::info!(
            "serving {} keys from {} (sync={}), {} subscriptions handed over",
            core.store.len(),
            core.cfg.db.display(),
            core.cfg.sync.name(),
            core.bus.counts().1
        );
        Ok(Rpc {
            core,
            writer,
            handover: Default::default(),
            token,
        })
    }
}

/// After a reload: takes over the handed-over watches, each filtered by
/// who its connection acts as now (judged as [`revoke_subscriptions`]
/// judges subscriptions).
fn restore_watches(core: &Core, snaps: Vec<crate::watch::WatchSnap>, whos: &[(u64, Who)]) {
    if snaps.is_empty() {
        return;
    }
    let n = snaps.len();
    let whos: std::collections::HashMap<u64, &Who> = whos.iter().map(|(c, w)| (*c, w)).collect();
    core.watches.restore(snaps, |conn| match whos.get(&conn) {
        Some(who) => (*who).clone(),
        None if core.access.users.is_empty() => Who::Loopback,
        None => core.access.who(core.host, &core.conns, conn, Peer::UNKNOWN),
    });
    log::info!("{n} watches handed over");
}
