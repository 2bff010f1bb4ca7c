//! For unit tests: a stand-in host ([`NullHost`]) and a [`Core`] over a
//! fresh data directory with it ([`core`], [`core_with`]).

use std::sync::Arc;

use module_api::CallStatus;

use crate::config::Config;
use crate::core::Core;
use crate::host::HostApi;
use crate::store::Store;

/// A host with no connections and no other modules: every push
/// reaches its connections, every call finds no module.
pub struct NullHost;

impl HostApi for NullHost {
    fn push_many(&self, conns: &[u64], _data: &[u8], _notice: &[u8]) -> usize {
        conns.len()
    }
    fn call(&self, _module: &str, _input: &[u8]) -> Result<Vec<u8>, CallStatus> {
        Err(CallStatus::NoSuchModule)
    }
    fn wait_begin(&self) -> u64 {
        0
    }
    fn wait_end(&self, _token: u64) {}
    fn peer_identity(&self, _conn: u64) -> Vec<String> {
        Vec::new()
    }
}

pub fn core() -> (Arc<Core>, crate::testdir::TestDir) {
    core_with(serde_json::json!({}))
}

pub fn core_with(config: serde_json::Value) -> (Arc<Core>, crate::testdir::TestDir) {
    let dir = crate::testdir::TestDir::new("core");
    let cfg = Config::from_json(&config, dir.path()).unwrap();
    let store = Store::new(&cfg.db, cfg.cache_bytes);
    let core = Core::new(cfg, store, &NullHost).unwrap();
    (Arc::new(core), dir)
}
