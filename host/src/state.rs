//! The state every event loop, the admin commands and the control link
//! share: the server's settings, the registry and route table, the pool,
//! the admin settings in force, and the counters `STATUS` reports. It is
//! built once at startup (see `server.rs`) and handed out as `Arc<Shared>`;
//! it holds no logic beyond starting a shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Server;
use crate::pool::{Control, Mailbox, Pool};
use crate::registry::Registry;
use crate::router::SharedTable;
use crate::scheduler::Scheduler;

/// State shared by all loops.
pub struct Shared {
    pub cfg: Server,
    pub registry: Arc<Registry>,
    /// Modules' scheduled jobs (`STATUS` lines, `RUN`).
    pub scheduler: Arc<Scheduler>,
    pub tls: Arc<crate::tls::Tls>,
    /// What modules call back into; the loops record client certificate
    /// names here (mutual TLS).
    pub services: Arc<crate::services::Services>,
    pub table: Arc<SharedTable>,
    pub pool: Pool,
    pub control: Control,
    pub mailboxes: Arc<Vec<Mailbox>>,
    /// Pushed bytes waiting in each loop's mailbox (see `services`).
    pub push_pending: Arc<crate::services::PushPending>,
    /// The admin settings in force (`admin_token`, `admin_from`, ...),
    /// replaced on every `RELOAD`; read per command, never cached.
    pub admin: Arc<crate::access::LiveAccess>,
    /// Peers recently failing `AUTH`, locked out for a while.
    pub auth_backoff: crate::access::AuthBackoff,
    /// Local addresses of the upstream sockets open now (a connection
    /// from one of them is never an admin by address).
    pub own_upstreams: Arc<crate::access::OwnUpstreams>,
    /// The address the listeners are bound to (its port is ours: a proxy
    /// upstream with that port may be this server).
    pub listen_addr: std::net::SocketAddr,
    /// Open connections per peer address (only with
    /// `max_connections_per_ip`).
    pub per_ip: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Bytes held by read buffers grown past `READ_BUF` (see
    /// `max_buffered_bytes`).
    pub buffered: AtomicUsize,
    pub shutting_down: AtomicBool,
    pub conns: AtomicUsize,
    pub accepted: AtomicU64,
    pub next_conn_id: AtomicU64,
    pub started: Instant,
    pub loops: usize,
    pub threads: usize,
}

impl Shared {
    /// Starts a graceful shutdown: every loop stops accepting, closes idle
    /// connections and exits once the rest finish.
    pub fn shutdown(&self) {
        if !self.shutting_down.swap(true, Ordering::SeqCst) {
            log::info!("shutting down: no new connections, finishing in-flight work");
        }
        for m in self.mailboxes.iter() {
            let _ = m.waker.wake();
        }
    }
}
