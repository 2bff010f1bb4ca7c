//! The `[modules.http]` table.

use std::path::PathBuf;

use serde::Deserialize;

/// Settings of one generation, with the root already canonical.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Directory served, relative to the working directory or absolute.
    pub root: PathBuf,
    /// File served for a directory request (`/dir/`).
    pub index: String,
    /// Files up to this many bytes are kept in memory.
    pub cache_max_file: u64,
    /// Bound on the whole in-memory cache, in bytes.
    pub cache_max_total: u64,
    /// A cached entry re-checks the disk at most this often (0: always).
    pub revalidate_ms: u64,
    /// Largest request head; beyond it the answer is 431 and the
    /// connection closes.
    pub max_header_size: usize,
    /// Longest request target; beyond it the answer is 414.
    pub max_uri: usize,
    /// Largest request body accepted (and discarded); beyond it, 413.
    pub max_body: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            root: PathBuf::from("static_html"),
            index: "index.html".into(),
            cache_max_file: 256 * 1024,
            cache_max_total: 64 * 1024 * 1024,
            revalidate_ms: 1000,
            max_header_size: 16 * 1024,
            max_uri: 8 * 1024,
            max_body: 64 * 1024,
        }
    }
}

const KEYS: &[&str] = &[
    "root",
    "index",
    "cache_max_file",
    "cache_max_total",
    "revalidate_ms",
    "max_header_size",
    "max_uri",
    "max_body",
];

impl Config {
    /// Reads the module's config table, warns about keys it does not know
    /// and canonicalizes the root, which must be an existing directory.
    pub fn from_json(value: &serde_json::Value) -> Result<Config, String> {
        let Some(table) = value.as_object() else {
            return Err("config: [modules.http] must be a table".into());
        };
        for key in table.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            log::warn!("config: unknown key [modules.http] {key} (ignored)");
        }
        let mut cfg: Config =
            serde_json::from_value(value.clone()).map_err(|e| format!("config: {e}"))?;
        if cfg.index.is_empty() || cfg.index.contains('/') || cfg.index == ".." {
            return Err(format!(
                "config: index {:?} must be a plain file name",
                cfg.index
            ));
        }
        if cfg.max_header_size == 0 || cfg.max_uri == 0 {
            return Err("config: max_header_size and max_uri must be positive".into());
        }
        cfg.root = std::fs::canonicalize(&cfg.root).map_err(|e| {
            let shown = cfg.root.display();
            match std::env::current_dir() {
                Ok(cwd) if cfg.root.is_relative() => {
                    format!("root {shown} (relative to {}): {e}", cwd.display())
                }
                _ => format!("root {shown}: {e}"),
            }
        })?;
        if !cfg.root.is_dir() {
            return Err(format!("root {} is not a directory", cfg.root.display()));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let dir = TempDir::new();
        let root = dir.path().to_str().unwrap();
        let cfg = Config::from_json(&json!({ "root": root, "max_uri": 100 })).unwrap();
        assert_eq!(cfg.root, std::fs::canonicalize(root).unwrap());
        assert_eq!(cfg.max_uri, 100);
        assert_eq!(cfg.cache_max_file, 256 * 1024);
        assert_eq!(cfg.index, "index.html");
    }

    #[test]
    fn refuses_bad_values() {
        let err = Config::from_json(&json!({ "root": "/no/such/dir" })).unwrap_err();
        assert!(err.contains("/no/such/dir"), "{err}");
        let dir = TempDir::new();
        let root = dir.path().to_str().unwrap();
        assert!(Config::from_json(&json!({ "root": root, "max_uri": "big" })).is_err());
        assert!(Config::from_json(&json!({ "root": root, "index": "../x" })).is_err());
        assert!(Config::from_json(&json!([])).is_err());
    }
}
