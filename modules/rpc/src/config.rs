//! The `[modules.rpc]` table. Every key is optional; an unknown key or a
//! bad value refuses the load, so a misspelt setting is reported at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// When a batch of writes counts as committed (see the crate doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// WAL with `synchronous=NORMAL`: a commit is written to the OS before
    /// it is acknowledged (survives a process crash); the WAL is fsynced
    /// at checkpoints, at least every `checkpoint_interval_ms`.
    Normal,
    /// WAL with `synchronous=FULL`: every commit is fsynced before it is
    /// acknowledged (survives power loss).
    Full,
}

impl SyncMode {
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Normal => "normal",
            SyncMode::Full => "full",
        }
    }
}

/// Settings of one generation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The SQLite database, relative to the module's data directory.
    pub db: PathBuf,
    /// Durability of acknowledged writes.
    pub sync: SyncMode,
    /// Longest request line (or HTTP body); a longer line is answered with
    /// -32040 and the connection closed. Keep it at or below the host's
    /// `[server] max_message_size`.
    pub max_line_bytes: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes of its stored (compact) JSON text. At most
    /// `max_line_bytes`.
    pub max_value_bytes: usize,
    /// Most keys in the store (expired keys count until purged).
    pub max_keys: u64,
    /// Most bytes of keys plus values plus stream messages in the store
    /// (expired keys count until purged).
    pub max_total_bytes: u64,
    /// Memory for values cached for reads on the event loops; a read of a
    /// value that is not cached goes to the writer, which reads SQLite.
    pub cache_bytes: usize,
    /// Pages the writer gives back to the file system per step while the
    /// database has free pages (0: never give space back).
    pub vacuum_step_pages: u32,
    /// Most topic patterns one connection may subscribe to.
    pub max_subscriptions: usize,
    /// Most topic patterns held by all connections together.
    pub max_subscriptions_total: usize,
    /// Largest `limit` that `kv.keys` accepts.
    pub max_keys_limit: usize,
    /// Most rows one `kv.keys` call examines (keys the caller may not read
    /// count too); a call stopped by it returns a cursor to continue.
    /// Default: 10 × `max_keys_limit`.
    pub max_keys_scan: usize,
    /// How often expired keys are purged from memory and disk.
    pub purge_interval_ms: u64,
    /// How often the WAL is checkpointed (and so fsynced in `normal` mode).
    pub checkpoint_interval_ms: u64,
    /// Under load (the previous batch held more than one connection's
    /// writes), how long the writer lets more writes gather before a
    /// commit; 0 commits as soon as nothing more is queued.
    pub commit_delay_us: u64,
    /// How long a retiring generation waits for its successor while it
    /// hands messages over during a reload.
    pub handoff_timeout_ms: u64,
    /// `[[modules.rpc.users]]`, checked and compiled by
    /// [`crate::access::users::Users::compile`]. None: protected mode.
    pub users: Vec<serde_json::Value>,
    /// The user that connections which have not authenticated act as.
    pub no_auth_user: Option<String>,
    /// Failed `sys.auth` calls after which a connection is closed (0:
    /// never).
    pub max_auth_failures: u32,
    /// The pause a failed authentication opens for its peer address (IPv6:
    /// its /64), doubling while failures continue; 0: no pause. A token is
    /// still checked during the pause; a wrong one does not extend it.
    pub auth_backoff_ms: u64,
    /// The longest such pause.
    pub auth_backoff_max_ms: u64,
    /// Peer addresses the pause table remembers at most.
    pub auth_backoff_peers: usize,
    /// Most durable streams ([`crate::streams`]).
    pub max_streams: usize,
    /// Most durable consumers, all streams together.
    pub max_consumers: usize,
    /// Most connections attached to one consumer.
    pub max_consumer_members: usize,
    /// Most `kv.watch` watches one connection may hold.
    pub max_watches: usize,
    /// Most watches held by all connections together.
    pub max_watches_total: usize,
    /// Most `bus.request` calls one connection may have waiting.
    pub max_pending_requests: usize,
    /// Most `bus.request` calls waiting on the whole server.
    pub max_pending_requests_total: usize,
    /// Longest `timeout_ms` a `bus.request` may ask for.
    pub max_request_timeout_ms: u64,
    /// Most `bus.request` calls over `POST /rpc` waiting at once, each
    /// holding a pool thread; raise it only together with the host's
    /// `-threads`.
    pub max_http_waiters: usize,
    /// Browser origins (`https://app.example.com`) besides the server's
    /// own that may open a WebSocket at `GET /rpc/ws` or send `POST /rpc`
    /// (see [`crate::access::browser`]).
    pub ws_origins: Vec<String>,
    /// How often the server pings WebSocket clients (0: never); keep it
    /// under half the host's `idle_timeout_ms`.
    pub ws_ping_ms: u64,
    /// Most frames one WebSocket message may come in.
    pub ws_max_fragments: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            db: PathBuf::from("rpc.sqlite"),
            sync: SyncMode::Normal,
            max_line_bytes: 1 << 20,
            max_batch: 1000,
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_keys: 1_000_000,
            max_total_bytes: 1 << 30,
            cache_bytes: 64 << 20,
            vacuum_step_pages: 1024,
            max_subscriptions: 1024,
            max_subscriptions_total: 250_000,
            max_keys_limit: 10_000,
            max_keys_scan: 100_000,
            purge_interval_ms: 1000,
            checkpoint_interval_ms: 1000,
            handoff_timeout_ms: 30_000,
            commit_delay_us: 100,
            users: Vec::new(),
            no_auth_user: None,
            max_auth_failures: 5,
            auth_backoff_ms: 500,
            auth_backoff_max_ms: 30_000,
            auth_backoff_peers: 4096,
            max_streams: 100,
            max_consumers: 1000,
            max_consumer_members: 64,
            max_watches: 256,
            max_watches_total: 65_536,
            max_pending_requests: 1024,
            max_pending_requests_total: 65_536,
            max_request_timeout_ms: 60_000,
            max_http_waiters: 1,
            ws_origins: Vec::new(),
            ws_ping_ms: 25_000,
            ws_max_fragments: 1024,
        }
    }
}

impl Config {
    /// Reads the config table (JSON) and resolves the database path
    /// against `data_dir`.
    pub fn from_json(value: &serde_json::Value, data_dir: &Path) -> Result<Config, String> {
        let mut cfg = Config::deserialize(value).map_err(|e| format!("[modules.rpc]: {e}"))?;
        if value.get("max_value_bytes").is_none() {
            // The default follows a lowered line limit (a value must fit
            // in a line).
            cfg.max_value_bytes = cfg.max_value_bytes.min(cfg.max_line_bytes);
        }
        if value.get("max_keys_scan").is_none() {
            cfg.max_keys_scan = cfg.max_keys_limit.saturating_mul(10);
        }
        if cfg.max_keys_scan == 0 {
            return Err("[modules.rpc]: max_keys_scan must be positive".into());
        }
        if cfg.max_line_bytes < 64 {
            return Err("[modules.rpc]: max_line_bytes must be at least 64".into());
        }
        if cfg.max_batch == 0
            || cfg.max_key_bytes == 0
            || cfg.max_subscriptions == 0
            || cfg.max_subscriptions_total == 0
        {
            return Err(
                "[modules.rpc]: max_batch, max_key_bytes, max_subscriptions and \
                 max_subscriptions_total must be positive"
                    .into(),
            );
        }
        if cfg.max_pending_requests == 0
            || cfg.max_pending_requests_total == 0
            || cfg.max_request_timeout_ms == 0
        {
            return Err(
                "[modules.rpc]: max_pending_requests, max_pending_requests_total and \
                 max_request_timeout_ms must be positive"
                    .into(),
            );
        }
        if cfg.max_value_bytes == 0 || cfg.max_value_bytes > cfg.max_line_bytes {
            return Err(format!(
                "[modules.rpc]: max_value_bytes must be 1 to max_line_bytes ({})",
                cfg.max_line_bytes
            ));
        }
        if cfg.max_keys == 0 || cfg.max_total_bytes == 0 {
            return Err("[modules.rpc]: max_keys and max_total_bytes must be positive".into());
        }
        if cfg.purge_interval_ms == 0 || cfg.checkpoint_interval_ms == 0 {
            return Err(
                "[modules.rpc]: purge_interval_ms and checkpoint_interval_ms must be positive"
                    .into(),
            );
        }
        if cfg.max_streams == 0 || cfg.max_consumers == 0 || cfg.max_consumer_members == 0 {
            return Err(
                "[modules.rpc]: max_streams, max_consumers and max_consumer_members must be positive"
                    .into(),
            );
        }
        if cfg.max_watches == 0 || cfg.max_watches_total == 0 {
            return Err("[modules.rpc]: max_watches and max_watches_total must be positive".into());
        }
        if cfg.ws_max_fragments == 0 {
            return Err("[modules.rpc]: ws_max_fragments must be positive".into());
        }
        if cfg.db.is_relative() {
            cfg.db = data_dir.join(&cfg.db);
        }
        Ok(cfg)
    }

    pub fn purge_interval(&self) -> Duration {
        Duration::from_millis(self.purge_interval_ms)
    }

    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    pub fn handoff_timeout(&self) -> Duration {
        Duration::from_millis(self.handoff_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::from_json(&serde_json::json!({}), Path::new("/d")).unwrap();
        assert_eq!(c.db, PathBuf::from("/d/rpc.sqlite"));
        assert_eq!(c.sync, SyncMode::Normal);
        let c = Config::from_json(
            &serde_json::json!({"sync": "full", "db": "/x/y.db"}),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(c.sync, SyncMode::Full);
        assert_eq!(c.db, PathBuf::from("/x/y.db"));
        assert!(Config::from_json(&serde_json::json!({"snyc": "full"}), Path::new("/d")).is_err());
        assert!(
            Config::from_json(&serde_json::json!({"sync": "always"}), Path::new("/d")).is_err()
        );
        assert!(Config::from_json(&serde_json::json!({"max_batch": 0}), Path::new("/d")).is_err());
        let e = Config::from_json(
            &serde_json::json!({"max_line_bytes": 1000, "max_value_bytes": 1001}),
            Path::new("/d"),
        )
        .unwrap_err();
        assert!(e.contains("max_value_bytes"), "{e}");
        assert_eq!(c.max_value_bytes, 1 << 20);
    }
}
