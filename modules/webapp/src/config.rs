//! The `[modules.webapp]` table.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How hard SQLite pushes each commit to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync the WAL at every commit: a posted message survives a power
    /// cut. The default.
    Full,
    /// fsync only at checkpoints: survives a crash of the process, not of
    /// the machine. Several times faster for writes.
    Normal,
}

impl Synchronous {
    /// The pragma's value.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Settings of one generation.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The SQLite file; relative paths are under the module's data
    /// directory (`<data-dir>/webapp`).
    pub database: PathBuf,
    /// See [`Synchronous`].
    pub synchronous: Synchronous,
    /// How long a statement waits for another writer before answering 503.
    pub busy_timeout_ms: u64,
    /// Idle database connections kept open for reuse.
    pub pool_size: usize,
    /// Largest request body, after chunked decoding; beyond it, 413.
    pub max_body: usize,
    /// Largest request head; beyond it, 431.
    pub max_header_size: usize,
    /// Messages per page (HTML) and the API's default `limit`.
    pub page_size: u32,
    /// Largest `limit` the API serves; larger values are lowered to it.
    pub max_page: u32,
    /// Longest message text, in characters.
    pub max_text: usize,
    /// Longest author name, in characters.
    pub max_author: usize,
    /// The page's title.
    pub title: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            database: PathBuf::from("messages.db"),
            synchronous: Synchronous::Full,
            busy_timeout_ms: 5000,
            pool_size: 8,
            max_body: 64 * 1024,
            max_header_size: 16 * 1024,
            page_size: 20,
            max_page: 200,
            max_text: 2000,
            max_author: 64,
            title: "Switchyard message board".into(),
        }
    }
}

const KEYS: &[&str] = &[
    "database",
    "synchronous",
    "busy_timeout_ms",
    "pool_size",
    "max_body",
    "max_header_size",
    "page_size",
    "max_page",
    "max_text",
    "max_author",
    "title",
];

impl Config {
    /// Reads the config table (warning about keys it does not know) and
    /// resolves the database path against `data_dir`.
    pub fn from_json(value: &serde_json::Value, data_dir: &Path) -> Result<Config, String> {
        let Some(table) = value.as_object() else {
            return Err("config: [modules.webapp] must be a table".into());
        };
        for key in table.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            log::warn!("config: unknown key [modules.webapp] {key} (ignored)");
        }
        let mut cfg: Config =
            serde_json::from_value(value.clone()).map_err(|e| format!("config: {e}"))?;
        if cfg.database.as_os_str().is_empty() {
            return Err("config: database must name a file".into());
        }
        cfg.database = data_dir.join(&cfg.database);
        if cfg.page_size == 0 || cfg.max_page == 0 || cfg.page_size > cfg.max_page {
            return Err("config: need 0 < page_size <= max_page".into());
        }
        if cfg.max_text == 0 || cfg.max_author == 0 || cfg.max_body == 0 {
            return Err("config: max_text, max_author and max_body must be positive".into());
        }
        if cfg.max_header_size < 1024 {
            return Err("config: max_header_size must be at least 1024".into());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_paths() {
        let cfg = Config::from_json(&json!({}), Path::new("/d/webapp")).unwrap();
        assert_eq!(cfg.database, PathBuf::from("/d/webapp/messages.db"));
        assert_eq!(cfg.synchronous, Synchronous::Full);
        let cfg = Config::from_json(
            &json!({ "database": "/abs/x.db", "synchronous": "normal", "page_size": 5 }),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(cfg.database, PathBuf::from("/abs/x.db"));
        assert_eq!(cfg.synchronous.pragma(), "NORMAL");
        assert_eq!(cfg.page_size, 5);
    }

    #[test]
    fn refuses_bad_values() {
        let d = Path::new("/d");
        assert!(Config::from_json(&json!([]), d).is_err());
        assert!(Config::from_json(&json!({ "synchronous": "off" }), d).is_err());
        assert!(Config::from_json(&json!({ "page_size": 0 }), d).is_err());
        assert!(Config::from_json(&json!({ "page_size": 50, "max_page": 10 }), d).is_err());
        assert!(Config::from_json(&json!({ "database": "" }), d).is_err());
        assert!(Config::from_json(&json!({ "max_text": "long" }), d).is_err());
    }
}
