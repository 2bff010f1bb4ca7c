//! Proxied connections in flight, by host connection id: which route and
//! upstream each one is on, so a `proxy_event` finds its pool. Sharded so
//! event loops rarely wait on one another.

use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 32;

/// One proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub route: u32,
    /// The member the current attempt goes to (it holds one `active`).
    pub member: u32,
    /// Members tried so far, a bit each.
    pub tried: u64,
    /// Connect attempts so far.
    pub attempts: u32,
}

pub struct Sessions {
    shards: Vec<Mutex<HashMap<u64, Session>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Sessions {
    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records a session; returns the one it replaces, if any.
    pub fn insert(&self, id: u64, s: Session) -> Option<Session> {
        self.shard(id).insert(id, s)
    }

    /// Applies `f` to session `id` and returns the updated copy.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Session)) -> Option<Session> {
        let mut shard = self.shard(id);
        let s = shard.get_mut(&id)?;
        f(s);
        Some(*s)
    }

    pub fn get(&self, id: u64) -> Option<Session> {
        self.shard(id).get(&id).copied()
    }

    pub fn remove(&self, id: u64) -> Option<Session> {
        self.shard(id).remove(&id)
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
