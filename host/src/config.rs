//! The optional TOML configuration file: `[server]` holds host settings,
//! `[modules.<name>]` tables go to each module at start.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Longest admin command line (`AUTH <token>` included). It is the admin
/// protocol's limit (`admin::MAX_LINE`); it lives here, at the bottom, so
/// that validating `admin_token` needs nothing from the admin layer.
pub const ADMIN_MAX_LINE: usize = 1024;

/// Why a config file was refused. The texts are what the operator reads
/// at startup and in `ERR config: …` replies.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but its text was refused.
    #[error("bad config {}: {source}", path.display())]
    Bad {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    /// Not TOML, or not the shape of [`Config`].
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// An `admin_from` entry that is neither a network nor an address.
    #[error(
        "server.admin_from: {0:?} is neither a CIDR network (\"10.0.0.0/8\", \
         \"fd00::/8\") nor an address"
    )]
    AdminFrom(String),
    /// A setting out of its range; the text names it.
    #[error("{0}")]
    Invalid(String),
}

/// Parses `admin_from`: each entry a CIDR network (`10.0.0.0/8`) or a bare
/// address (`192.0.2.7`, one host). The error names the bad entry.
pub fn parse_networks(entries: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    entries
        .iter()
        .map(|e| {
            let text = e.trim();
            if let Ok(net) = text.parse::<IpNet>() {
                // `10.1.2.3/8` means the network 10.0.0.0/8.
                return Ok(net.trunc());
            }
            text.parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| ConfigError::AdminFrom(e.clone()))
        })
        .collect()
}

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    /// Per-module tables, passed to the module as JSON.
    #[serde(default)]
    pub modules: BTreeMap<String, toml::Value>,
}

/// How listening sockets are shared among event loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptMode {
    /// One `SO_REUSEPORT` listener per loop; the kernel spreads connections.
    Reuseport,
    /// One listener registered with every loop.
    Shared,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub bind: String,
    pub port: u16,
    pub threads: usize,
    /// Event loops; 0 means one per core.
    pub event_loops: usize,
    pub accept: AcceptMode,
    /// Open client connections; a proxied session's upstream socket counts
    /// as one more (its two pipes, with `proxy_splice`, as four more).
    pub max_connections: usize,
    /// Open connections per peer address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Routing (the first bytes of a message) must finish within this.
    pub first_bytes_timeout_ms: u64,
    /// A started message must be complete within this.
    pub header_timeout_ms: u64,
    /// A keep-alive connection with nothing to do is closed after this.
    pub idle_timeout_ms: u64,
    /// A stalled write (peer not reading) is abandoned after this.
    pub send_timeout_ms: u64,
    /// Bytes the host buffers for one message before giving up on it.
    pub max_message_size: usize,
    /// Bytes all of a worker's connections together may hold in read
    /// buffers grown past their first 16 KiB (incomplete large messages).
    pub max_buffered_bytes: usize,
    /// Routing gives up when this many bytes match no binding yet.
    pub max_header_size: usize,
    /// A proxied connection's upstream must accept within this.
    pub upstream_connect_timeout_ms: u64,
    /// A proxied connection with no traffic either way is closed after this.
    pub proxy_idle_timeout_ms: u64,
    /// Bytes buffered per direction of a proxied connection.
    pub proxy_buffer_size: usize,
    /// Relay plain-TCP proxied connections with `splice(2)` through a
    /// kernel pipe per direction (Linux); off, or elsewhere, bytes are
    /// copied through user space. Off by default: measured on loopback it
    /// used less CPU for bulk streams but moved bytes no faster, and was
    /// slower for small request/response traffic (see the README).
    pub proxy_splice: bool,
    /// Unsent bytes a connection may accumulate from server pushes before
    /// it is disconnected as a slow reader.
    pub max_push_backlog: usize,
    /// The output budget: above this many unsent bytes a connection's
    /// module is not called and its socket not read until they drain.
    pub max_output_buffer: usize,
    /// Pushed bytes that may wait in one event loop's mailbox; past it a
    /// push to that loop's connections is refused and they are closed.
    pub max_pending_push_bytes: usize,
    /// Grace period for in-flight work on `SHUTDOWN`.
    pub shutdown_timeout_ms: u64,
    /// While draining, a connection with nothing in flight stays open this
    /// long for its next (or first) message, which is answered with the
    /// draining flag set (HTTP: `Connection: close`); then it is closed.
    pub shutdown_idle_grace_ms: u64,
    /// How long a replaced generation may keep serving in-flight messages
    /// before their connections are closed.
    pub drain_timeout_ms: u64,
    /// When set, peers outside `admin_from` may `AUTH <token>` to run
    /// admin commands. Re-read on `RELOAD`: a changed or removed token
    /// takes the rights of connections that authenticated with the old one.
    pub admin_token: Option<String>,
    /// Peer networks (CIDR, or a bare address) whose connections on the
    /// public port may run admin commands without `AUTH`. Default:
    /// loopback only. `[]` turns admin off on the public port (`AUTH` too);
    /// the admin socket still works. Re-read on `RELOAD`.
    pub admin_from: Vec<String>,
    /// A Unix socket (created with mode 0600, owned by the leader) that
    /// accepts the admin commands from whoever can open it, whatever
    /// `admin_from` says. Unset: none.
    pub admin_socket: Option<std::path::PathBuf>,
    /// Whether `SHUTDOWN` is accepted on the public port (from an admin
    /// peer). `false`: only the admin socket and signals stop the server.
    pub public_shutdown: bool,
    /// Failed `AUTH` attempts a connection may make before it is closed.
    pub max_auth_failures: u32,
    /// After a failed `AUTH`, further attempts from the same peer address
    /// are refused unchecked for this long, doubling with each failure in
    /// a row (capped at 64 times this). 0: no backoff. Up to 4096 peers
    /// are remembered (IPv6 by /64); a peer quiet for 64 times this after
    /// its lock ends starts over.
    pub auth_backoff_ms: u64,
    /// Reload modules when their files change.
    pub watch: bool,
    /// Explicit owners for prefixes bound by more than one module.
    pub routes: BTreeMap<String, String>,
    /// TLS termination (`[server.tls]`).
    pub tls: crate::tls::TlsSettings,
    /// Leader/worker mode: a module call running longer than this is
    /// logged as a possible hang.
    pub hang_warn_ms: u64,
    /// Leader/worker mode: a module call running longer than this gets the
    /// worker killed and replaced.
    pub hang_kill_ms: u64,
    /// Leader/worker mode: a module that crashed the worker this many times
    /// in a row is quarantined (not loaded) until its file changes or an
    /// explicit `RELOAD <name>`.
    pub quarantine_after: u32,
    /// Bytes of module libraries that retired generations may keep mapped
    /// (each reload maps a new copy; none is ever unmapped). Past it the
    /// worker replaces itself the way `UPGRADE` does, which returns them.
    /// 0 = no limit.
    pub max_retained_bytes: u64,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            bind: "0.0.0.0".into(),
            port: 8080,
            threads: 4,
            event_loops: 0,
            accept: AcceptMode::Reuseport,
            max_connections: 10_000,
            max_connections_per_ip: 0,
            first_bytes_timeout_ms: 10_000,
            header_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            max_message_size: 1 << 20,
            max_buffered_bytes: 256 << 20,
            max_header_size: 16 * 1024,
            upstream_connect_timeout_ms: 3_000,
            proxy_idle_timeout_ms: 300_000,
            proxy_buffer_size: 64 * 1024,
            proxy_splice: false,
            max_push_backlog: 1 << 20,
            max_output_buffer: 1 << 20,
            max_pending_push_bytes: 64 << 20,
            shutdown_timeout_ms: 10_000,
            shutdown_idle_grace_ms: 1_000,
            drain_timeout_ms: 30_000,
            admin_token: None,
            admin_from: vec!["127.0.0.0/8".into(), "::1/128".into()],
            admin_socket: None,
            public_shutdown: true,
            max_auth_failures: 5,
            auth_backoff_ms: 500,
            watch: false,
            routes: BTreeMap::new(),
            tls: Default::default(),
            hang_warn_ms: 2_000,
            hang_kill_ms: 10_000,
            quarantine_after: 3,
            max_retained_bytes: 256 << 20,
        }
    }
}

impl Server {
    pub fn first_bytes_timeout(&self) -> Duration {
        Duration::from_millis(self.first_bytes_timeout_ms)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }
    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
    pub fn proxy_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.proxy_idle_timeout_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| ConfigError::Bad {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses and validates the text of a config file (what [`Config::load`]
    /// does after reading it; also the entry point of the `config` fuzz
    /// target).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |text: &str| Err(ConfigError::Invalid(text.into()));
        let s = &self.server;
        if s.proxy_buffer_size < 1024 {
            return invalid("server.proxy_buffer_size must be at least 1024");
        }
        if s.max_connections == 0 {
            return invalid("server.max_connections must be at least 1");
        }
        if s.max_output_buffer < 4096 {
            return invalid("server.max_output_buffer must be at least 4096");
        }
        if s.max_buffered_bytes < s.max_message_size {
            return invalid("server.max_buffered_bytes must be >= server.max_message_size");
        }
        if s.max_header_size < 16 || s.max_message_size < s.max_header_size {
            return invalid("server.max_message_size must be >= server.max_header_size >= 16");
        }
        parse_networks(&s.admin_from)?;
        if let Some(t) = &s.admin_token {
            // `AUTH <token>` carries one word on one command line.
            if t.is_empty() || t.chars().any(char::is_whitespace) {
                return invalid("server.admin_token must be one word (no spaces), not empty");
            }
            if t.len() > ADMIN_MAX_LINE - "AUTH ".len() {
                return Err(ConfigError::Invalid(format!(
                    "server.admin_token must be at most {} bytes",
                    ADMIN_MAX_LINE - "AUTH ".len()
                )));
            }
        }
        if s.max_auth_failures == 0 {
            return invalid("server.max_auth_failures must be at least 1");
        }
        for (name, v) in [
            ("first_bytes_timeout_ms", s.first_bytes_timeout_ms),
            ("header_timeout_ms", s.header_timeout_ms),
            ("idle_timeout_ms", s.idle_timeout_ms),
            ("send_timeout_ms", s.send_timeout_ms),
            ("drain_timeout_ms", s.drain_timeout_ms),
            ("upstream_connect_timeout_ms", s.upstream_connect_timeout_ms),
            ("proxy_idle_timeout_ms", s.proxy_idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "server.{name} must be positive"
                )));
            }
        }
        Ok(())
    }

    /// The module's table as JSON text (`{}` when absent).
    pub fn module_json(&self, name: &str) -> String {
        self.modules
            .get(name)
            .and_then(|v| serde_json::to_string(v).ok())
            .unwrap_or_else(|| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_file() {
        let cfg: Config = toml::from_str(
            r#"
            [server]
            port = 9000
            admin_token = "t"
            accept = "shared"
            [server.routes]
            "GET /x" = "a"
            [modules.http]
            root = "site"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.server.port, 9000);
        assert_eq!(cfg.server.accept, AcceptMode::Shared);
        assert_eq!(cfg.server.routes["GET /x"], "a");
        assert_eq!(cfg.module_json("http"), r#"{"root":"site"}"#);
        assert_eq!(cfg.module_json("nope"), "{}");
        assert!(toml::from_str::<Config>("[server]\nbogus = 1").is_err());
    }

    #[test]
    fn bad_admin_from_entries_are_named() {
        for bad in ["10.0.0.300/8", "10.0.0.0/33", "localhost", "", "10.0.0.0/"] {
            let e = parse_networks(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn admin_settings_are_validated() {
        let e = Config::parse("[server]\nadmin_from = [\"127.0.0.0/8\", \"10.0.0.0/33\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"10.0.0.0/33\""), "{e}");
        assert!(Config::parse("[server]\nadmin_from = []").is_ok());
        assert!(Config::parse("[server]\nadmin_from = [\"192.0.2.7\", \"::1\"]").is_ok());
        let e = Config::parse("[server]\nadmin_token = \"two words\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_token"), "{e}");
        assert!(Config::parse("[server]\nadmin_token = \"\"").is_err());
        let e = Config::parse("[server]\nmax_auth_failures = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_auth_failures"), "{e}");
    }
}
