//! The key-value data in memory: the committed map that every read sees,
//! and the overlay in which the writer evaluates a batch before it commits.
//!
//! The map holds exactly what the database holds (minus expired keys not
//! purged yet, which reads skip): the writer changes it only after the
//! batch that made the change has committed. So a reader never sees a
//! value that a crash could take back.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;

/// Milliseconds since the Unix epoch: the clock TTLs are measured on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Changes made visible per write-lock hold in [`Store::apply`].
const APPLY_SLICE: usize = 1024;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value as compact JSON text (never `null`).
    pub value: Box<str>,
    /// Expiry in [`now_ms`] time; 0 for none.
    pub expires_at: u64,
}

impl Entry {
    /// Whether the entry is still visible at `now`.
    pub fn live(&self, now: u64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }
}

/// The committed data: a hash map for point lookups, and the keys in
/// order for `kv.keys` (touched only when a key appears or goes).
#[derive(Debug, Default)]
pub struct Map {
    entries: HashMap<Arc<str>, Entry>,
    ordered: BTreeSet<Arc<str>>,
}

impl Map {
    pub fn new() -> Map {
        Map::default()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn insert(&mut self, key: &str, entry: Entry) {
        match self.entries.get_mut(key) {
            Some(e) => *e = entry,
            None => {
                let key: Arc<str> = Arc::from(key);
                self.ordered.insert(key.clone());
                self.entries.insert(key, entry);
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.ordered.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, e)| (&**k, e))
    }

    /// Entries in key order from `start`.
    pub fn range_from<'a>(
        &'a self,
        start: Bound<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> {
        self.ordered
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|k| self.entries.get(k).map(|e| (&**k, e)))
    }
}

/// Keys with the expiry they had when found expired.
pub type Expired = Vec<(Box<str>, u64)>;

/// Uncommitted changes of one batch: `None` deletes the key.
pub type Overlay = HashMap<Box<str>, Option<Entry>>;

/// The committed map behind a lock: readers on every event loop, one
/// writer thread.
#[derive(Default)]
pub struct Store {
    map: RwLock<Map>,
}

impl Store {
    pub fn new(map: Map) -> Store {
        Store {
            map: RwLock::new(map),
        }
    }

    /// Replaces everything (a generation taking over the database).
    pub fn replace(&self, map: Map) {
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// A read lock on the committed map.
    pub fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a committed batch visible, a slice at a time so that readers
    /// on the event loops never wait for a big batch as a whole.
    pub fn apply(&self, overlay: Overlay) {
        let mut changes = overlay.into_iter().peekable();
        while changes.peek().is_some() {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            for (key, entry) in changes.by_ref().take(APPLY_SLICE) {
                match entry {
                    Some(e) => map.insert(&key, e),
                    None => map.remove(&key),
                }
            }
        }
    }

    /// Removes keys that are still expired with the same expiry (a purge
    /// that has committed).
    pub fn remove_expired(&self, keys: &[(Box<str>, u64)]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (key, at) in keys {
            if map.get(key).is_some_and(|e| e.expires_at == *at) {
                map.remove(key);
            }
        }
    }

    /// Number of keys held (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a method evaluates against: the committed map alone (reads on an
/// event loop), or the map under the writer's overlay.
pub enum View<'a> {
    Read(&'a Map),
    Write {
        map: &'a Map,
        overlay: &'a mut Overlay,
    },
}

impl View<'_> {
    /// The live entry for `key`.
    pub fn get(&self, key: &str, now: u64) -> Option<&Entry> {
        let found = match self {
            View::Read(map) => map.get(key),
            View::Write { map, overlay } => match overlay.get(key) {
                Some(e) => e.as_ref(),
                None => map.get(key),
            },
        };
        found.filter(|e| e.live(now))
    }

    /// Sets or deletes `key`. Only the writer's view can change anything.
    pub fn put(&mut self, key: &str, entry: Option<Entry>) {
        match self {
            View::Read(_) => unreachable!("a write method was evaluated outside the writer"),
            View::Write { overlay, .. } => {
                overlay.insert(key.into(), entry);
            }
        }
    }

    /// Up to `limit` live keys starting with `prefix`, after `after`, in
    /// order.
    pub fn keys(&self, prefix: &str, after: Option<&str>, limit: usize, now: u64) -> Vec<String> {
        let (map, overlay) = match self {
            View::Read(map) => (*map, None),
            View::Write { map, overlay } => (*map, Some(&**overlay)),
        };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut keys: Vec<String> = Vec::new();
        for (k, e) in map.range_from(start) {
            if !k.starts_with(prefix) || keys.len() >= limit {
                break;
            }
            let visible = match overlay.and_then(|o| o.get(k)) {
                Some(changed) => changed.as_ref().is_some_and(|e| e.live(now)),
                None => e.live(now),
            };
            if visible {
                keys.push(k.to_string());
            }
        }
        if let Some(overlay) = overlay {
            let after_ok = |k: &str| after.map_or(true, |a| k > a);
            for (k, e) in overlay {
                let new = e.as_ref().is_some_and(|e| e.live(now))
                    && k.starts_with(prefix)
                    && after_ok(k)
                    && !map.contains_key(k);
                if new {
                    keys.push(k.to_string());
                }
            }
            keys.sort_unstable();
            keys.truncate(limit);
        }
        keys
    }
}

/// A JSON value as it is stored: compact text on one line. Values arrive
/// as raw text; only those spread over several lines (possible in an HTTP
/// body) are re-serialized, so a raw TCP reply never holds a newline.
pub fn stored_text(raw: &RawValue) -> Box<str> {
    let s = raw.get();
    if s.contains(['\n', '\r']) {
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) => v.to_string().into_boxed_str(),
            Err(_) => s.replace(['\n', '\r'], " ").into_boxed_str(),
        }
    } else {
        s.into()
    }
}

/// Whether two JSON texts are equal as values (`{"a":1,"b":2}` equals
/// `{"b":2,"a":1}`; `1` and `1.0` differ).
pub fn json_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, at: u64) -> Option<Entry> {
        Some(Entry {
            value: v.into(),
            expires_at: at,
        })
    }

    #[test]
    fn overlay_shadows_map() {
        let mut map = Map::new();
        for k in ["a1", "a2", "a3", "b1"] {
            map.insert(k, entry("1", 0).unwrap());
        }
        map.insert("a4", entry("1", 5).unwrap()); // expired at now=10
        let mut overlay = Overlay::new();
        let mut view = View::Write {
            map: &map,
            overlay: &mut overlay,
        };
        view.put("a2", None);
        view.put("a0", entry("2", 0));
        view.put("a5", entry("2", 20));
        assert!(view.get("a2", 10).is_none());
        assert_eq!(&*view.get("a0", 10).unwrap().value, "2");
        assert!(view.get("a4", 10).is_none());
        assert_eq!(view.keys("a", None, 10, 10), ["a0", "a1", "a3", "a5"]);
        assert_eq!(view.keys("a", Some("a1"), 2, 10), ["a3", "a5"]);
        assert_eq!(View::Read(&map).keys("a", None, 2, 10), ["a1", "a2"]);
        assert_eq!(View::Read(&map).keys("", Some("a4"), 10, 10), ["b1"]);
    }

    #[test]
    fn stored_text_is_one_line() {
        let raw = RawValue::from_string("{\n \"a\": [1,\r\n 2]\n}".into()).unwrap();
        assert_eq!(&*stored_text(&raw), r#"{"a":[1,2]}"#);
        let raw = RawValue::from_string(r#"{"a": 1}"#.into()).unwrap();
        assert_eq!(&*stored_text(&raw), r#"{"a": 1}"#);
        assert!(json_eq(r#"{"a":1,"b":2}"#, r#"{"b":2, "a":1}"#));
        assert!(!json_eq("1", "1.0"));
    }
}
