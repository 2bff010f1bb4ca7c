//! One generation of the http module: its settings and its file cache,
//! shared by the request handling (`request`, `serve`) below the crate
//! root, which only wires it to the host.

use crate::cache;
use crate::config::Config;

/// One generation of the module.
pub struct Http {
    pub(crate) cfg: Config,
    pub(crate) cache: cache::Cache,
}

impl Http {
    /// Starts from the `[modules.http]` table (as JSON). Fails when the
    /// config is invalid or the root is not a directory.
    pub fn new(config: &serde_json::Value) -> Result<Http, String> {
        let cfg = Config::from_json(config)?;
        let cache = cache::Cache::new(usize::try_from(cfg.cache_max_total).unwrap_or(usize::MAX));
        Ok(Http { cfg, cache })
    }

    /// The settings in force (with the root canonical).
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}
