//! [`Core`]: the state one generation's event loops, pool threads and
//! writer share (config, value cache, subscriptions, connection table,
//! users, counters and the serving gate), and the replies every layer
//! above may need ([`too_large`], [`OVERFLOW_NOTICE`]).

use std::sync::atomic::{AtomicI32, AtomicU64};
use std::sync::RwLock;

use crate::access::Access;
use crate::bus::{Bus, Note};
use crate::clock::Clock;
use crate::config::Config;
use crate::conns::Conns;
use crate::host::HostApi;
use crate::inbox::{Inbox, InboxHost};
use crate::jsonrpc::{code, RpcError};
use crate::store::Store;
use crate::streams::{Streams, StreamsHost};
use crate::types::Mode;
use crate::watch::{WatchHost, Watches};

/// Sent before the host disconnects a connection whose unsent output grew
/// past `[server] max_push_backlog` (a subscriber that does not read).
pub const OVERFLOW_NOTICE: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"bus.overflow\",\"params\":{\"message\":\"too much unread output (slow subscriber); disconnecting\"}}\n";

/// Counters for `STATUS`.
#[derive(Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub writes: AtomicU64,
    pub failed_commits: AtomicU64,
    pub purged: AtomicU64,
    /// Messages a frozen generation handed to its successor.
    pub forwarded: AtomicU64,
}

/// What the event loops, the pool and the writer share.
pub struct Core {
    pub cfg: Config,
    pub store: Store,
    pub bus: Bus,
    pub conns: Conns,
    /// Users, sessions and the login brake ([`crate::access`]).
    pub access: Access,
    pub host: &'static dyn HostApi,
    pub stats: Stats,
    /// Whether this generation serves (see [`crate::handoff`] and [`crate::owner`]).
    pub gate: RwLock<Mode>,
    /// The descriptor of the ownership lock once held, else -1.
    pub owner_fd: AtomicI32,
    /// Timers: request timeouts, ack waits, pings ([`crate::clock`]).
    pub clock: Clock,
    /// Durable streams and their consumers ([`crate::streams`]).
    pub streams: Streams,
    /// `kv.watch` watches ([`crate::watch`]).
    pub watches: Watches,
    /// `bus.request` calls waiting for their answer ([`crate::inbox`]).
    pub inbox: Inbox,
    /// Which connections speak WebSocket ([`crate::ws`]).
    pub ws: crate::conns::WsConns,
}

impl Core {
    /// Fails when the users table is wrong (the message names the user).
    pub fn new(cfg: Config, store: Store, host: &'static dyn HostApi) -> Result<Core, String> {
        let watches = Watches::new(cfg.max_watches, cfg.max_watches_total);
        let inbox = Inbox::new(cfg.max_pending_requests, cfg.max_pending_requests_total);
        Ok(Core {
            inbox,
            bus: Bus::new(cfg.max_subscriptions, cfg.max_subscriptions_total),
            access: Access::new(&cfg)?,
            cfg,
            store,
            conns: Conns::default(),
            host,
            stats: Stats::default(),
            gate: RwLock::new(Mode::Live),
            owner_fd: AtomicI32::new(-1),
            clock: Clock::start()?,
            streams: Default::default(),
            watches,
            ws: Default::default(),
        })
    }

    /// Pushes one JSON line (ending in `\n`) to one connection, framed for
    /// its transport; returns whether the connection exists. Every push
    /// of the module goes through this or [`Core::deliver`], never
    /// `host.push_many` directly, so that WebSocket connections get
    /// frames and raw ones lines.
    pub fn push_line(&self, conn: u64, line: &[u8]) -> bool {
        if self.ws.contains(conn) {
            let mut frame = Vec::with_capacity(line.len() + 10);
            crate::conns::ws_text_frames(line, &mut frame);
            return self.host.push_many(&[conn], &frame, ws_overflow_notice()) == 1;
        }
        self.host.push_many(&[conn], line, OVERFLOW_NOTICE) == 1
    }

    /// Pushes a notification to its recipients, one shared copy for all
    /// of them; returns how many exist.
    pub fn deliver(&self, note: &Note) -> usize {
        if note.topic_conns.is_empty() {
            return 0;
        }
        if !self.ws.any() {
            // No WebSocket client: one shared copy, no lookup.
            return self
                .host
                .push_many(&note.topic_conns, &note.bytes, OVERFLOW_NOTICE);
        }
        let (raw, ws) = self.ws.split(&note.topic_conns);
        let mut n = 0;
        if !raw.is_empty() {
            n += self.host.push_many(&raw, &note.bytes, OVERFLOW_NOTICE);
        }
        if !ws.is_empty() {
            let mut frame = Vec::with_capacity(note.bytes.len() + 10);
            crate::conns::ws_text_frames(&note.bytes, &mut frame);
            n += self.host.push_many(&ws, &frame, ws_overflow_notice());
        }
        n
    }
}

// What the components the core owns need from it: each names a trait
// of its own rather than `Core`, so that they sit below the core (no
// import circle; `docs/ARCHITECTURE.md`).

impl StreamsHost for Core {
    fn cfg(&self) -> &Config {
        &self.cfg
    }
    fn clock(&self) -> &Clock {
        &self.clock
    }
    fn gate(&self) -> &RwLock<Mode> {
        &self.gate
    }
    fn push_line(&self, conn: u64, line: &[u8]) -> bool {
        Core::push_line(self, conn, line)
    }
    fn streams(&self) -> &Streams {
        &self.streams
    }
}

impl InboxHost for Core {
    fn clock(&self) -> &Clock {
        &self.clock
    }
    fn gate(&self) -> &RwLock<Mode> {
        &self.gate
    }
    fn push_line(&self, conn: u64, line: &[u8]) -> bool {
        Core::push_line(self, conn, line)
    }
    fn conn_closed(&self, conn: u64) -> bool {
        self.conns.lock(conn).closed(conn)
    }
    fn inbox(&self) -> &Inbox {
        &self.inbox
    }
}

impl WatchHost for Core {
    fn push_line(&self, conn: u64, line: &[u8]) -> bool {
        Core::push_line(self, conn, line)
    }
}

/// The error for a line over the limit.
pub fn too_large(core: &Core) -> RpcError {
    RpcError::new(
        code::TOO_LARGE,
        format!(
            "request too large: lines are limited to {} bytes; closing",
            core.cfg.max_line_bytes
        ),
    )
}

/// [`OVERFLOW_NOTICE`] as a WebSocket text frame.
pub fn ws_overflow_notice() -> &'static [u8] {
    static NOTICE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    NOTICE.get_or_init(|| {
        let mut v = Vec::new();
        crate::conns::ws_text_frames(OVERFLOW_NOTICE, &mut v);
        v
    })
}
