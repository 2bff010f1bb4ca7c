//! The key-value data as the rest of the module sees it: a bounded cache
//! of committed values that the event loops read, the store's totals, and
//! the writer's view of a batch (cache, then SQLite, under the batch's
//! overlay) with the limits every write is checked against.
//!
//! SQLite ([`crate::db`]) holds every key; memory holds at most
//! `cache_bytes` of values. The cache is changed only by the writer
//! thread — with the values of a batch once it has committed, and with
//! what it read from SQLite for a batch — so a fill can never overwrite a
//! newer write, and a reader never sees a value that a crash could take
//! back. A read that finds its key cached (as a value or as "absent") is
//! answered on the event loop; any other goes to the writer (see
//! [`crate::methods::needs_writer`]).
//!
//! Eviction is CLOCK (second chance): a read marks its slot with an
//! atomic flag under the shared lock, so readers never take the write
//! lock; the writer sweeps the ring when the cache is over its budget.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use serde_json::value::RawValue;

use crate::config::Config;
use crate::db::{Db, ReadDb, Totals};
use crate::entry::{Entry, Fills, Overlay, Row};
use crate::jsonrpc::{code, RpcError};

/// Changes made visible per write-lock hold in [`Store::apply`].
const APPLY_SLICE: usize = 1024;
/// Bytes a cache slot costs besides its key and value (map entry, ring
/// entry, allocation headers), so that many small or absent keys count.
const SLOT_OVERHEAD: usize = 96;
/// A value costing more than this share of `cache_bytes` is never cached
/// (it would push out everything else): reads of it go to the writer.
const MAX_SHARE: usize = 8;

struct Slot {
    row: Row,
    /// Read since the clock hand last passed (second chance).
    hot: AtomicBool,
}

fn cost(key: &str, row: &Row) -> usize {
    // An entry also holds its expiry and revision.
    let entry = |e: &Entry| e.value.len() + 2 * std::mem::size_of::<u64>();
    key.len() + row.as_ref().map_or(0, entry) + SLOT_OVERHEAD
}

/// Committed rows, bounded by `cap` bytes.
struct Cache {
    slots: HashMap<Arc<str>, Slot>,
    /// Clock order; may hold keys no longer cached (skipped).
    ring: VecDeque<Arc<str>>,
    bytes: usize,
    cap: usize,
}

impl Cache {
    fn new(cap: usize) -> Cache {
        Cache {
            slots: HashMap::new(),
            ring: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    fn get(&self, key: &str) -> Option<&Row> {
        let slot = self.slots.get(key)?;
        if !slot.hot.load(Ordering::Relaxed) {
            slot.hot.store(true, Ordering::Relaxed);
        }
        Some(&slot.row)
    }

    /// Caches `row` for `key` (the committed state), or forgets the key if
    /// the row is too big to cache. Does not evict.
    fn put(&mut self, key: &str, row: Row) {
        let c = cost(key, &row);
        if c > self.cap / MAX_SHARE {
            self.remove(key);
            return;
        }
        match self.slots.get_mut(key) {
            Some(slot) => {
                self.bytes = self.bytes - cost(key, &slot.row) + c;
                slot.row = row;
            }
            None => {
                let key: Arc<str> = Arc::from(key);
                self.ring.push_back(key.clone());
                self.slots.insert(
                    key,
                    Slot {
                        row,
                        hot: AtomicBool::new(false),
                    },
                );
                self.bytes += c;
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.slots.remove(key) {
            self.bytes -= cost(key, &slot.row);
        }
    }

    /// Drops cold slots until the cache fits its budget.
    fn evict(&mut self) {
        while self.bytes > self.cap {
            let Some(key) = self.ring.pop_front() else {
                break;
            };
            // A ring entry is current only if it is the map's own key (a
            // key removed and cached again has a newer ring entry).
            let current = self
                .slots
                .get_key_value(&*key)
                .filter(|(k, _)| Arc::ptr_eq(k, &key));
            match current {
                None => continue,
                Some((_, slot)) if slot.hot.swap(false, Ordering::Relaxed) => {
                    self.ring.push_back(key);
                }
                Some(_) => self.remove(&key),
            }
        }
        if self.ring.len() > 2 * self.slots.len() + 64 {
            let slots = &self.slots;
            self.ring.retain(|k| {
                slots
                    .get_key_value(&**k)
                    .is_some_and(|(m, _)| Arc::ptr_eq(m, k))
            });
        }
    }
}

/// What the cache says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached<'a> {
    /// The committed row (`None`: no such key); expired ones included.
    Hit(Option<&'a Entry>),
    /// Not cached: ask SQLite.
    Miss,
}

/// The data: the cache behind a lock (readers on every event loop, the
/// writer thread changing it), and the totals.
pub struct Store {
    cache: RwLock<Cache>,
    keys: AtomicU64,
    bytes: AtomicU64,
    /// The last revision committed ([`crate::db`]).
    rev: AtomicU64,
    path: PathBuf,
    /// Opened on first use: see [`Reader::lookup_or_read`].
    fallback: Mutex<Option<ReadDb>>,
}

impl Store {
    /// An empty store for the database at `path` with a cache of
    /// `cache_bytes`.
    pub fn new(path: &Path, cache_bytes: usize) -> Store {
        Store {
            cache: RwLock::new(Cache::new(cache_bytes)),
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rev: AtomicU64::new(0),
            path: path.to_path_buf(),
            fallback: Mutex::new(None),
        }
    }

    /// Starts over from the database's totals with an empty cache (a
    /// generation taking the database over).
    pub fn reset(&self, totals: Totals) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        *cache = Cache::new(cache.cap);
        self.keys.store(totals.keys, Ordering::Release);
        self.bytes.store(totals.bytes, Ordering::Release);
    }

    /// Starts from the database's last revision (a generation taking the
    /// database over).
    pub fn set_revision(&self, rev: u64) {
        self.rev.store(rev, Ordering::Release);
    }

    /// The last revision committed.
    pub fn revision(&self) -> u64 {
        self.rev.load(Ordering::Acquire)
    }

    /// A shared lock on the cache.
    pub fn read(&self) -> Reader<'_> {
        Reader {
            cache: self.cache.read().unwrap_or_else(|e| e.into_inner()),
            store: self,
        }
    }

    /// The committed totals.
    pub fn totals(&self) -> Totals {
        Totals {
            keys: self.keys.load(Ordering::Acquire),
            bytes: self.bytes.load(Ordering::Acquire),
        }
    }

    /// Number of keys held (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.totals().keys as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of values and keys cached.
    pub fn cached_bytes(&self) -> usize {
        self.cache.read().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Caches rows read from SQLite (writer only: nothing can have
    /// committed in between).
    pub fn fill(&self, fills: Fills) {
        if fills.is_empty() {
            return;
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for (key, row) in fills {
            cache.put(&key, row);
        }
        cache.evict();
    }

    /// Makes a committed batch visible (its fills first, then its
    /// changes), a slice at a time so that readers on the event loops
    /// never wait for a big batch as a whole.
    pub fn apply(&self, overlay: Overlay) {
        let (keys, bytes) = overlay.delta();
        let rev = overlay.last_rev();
        let (fills, changes) = overlay.into_parts();
        self.fill(fills);
        let mut changes = changes.into_iter().peekable();
        while changes.peek().is_some() {
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            for (key, row) in changes.by_ref().take(APPLY_SLICE) {
                cache.put(&key, row);
            }
            cache.evict();
        }
        add(&self.keys, keys);
        add(&self.bytes, bytes);
        self.rev.fetch_max(rev, Ordering::AcqRel);
    }

    /// Forgets purged keys (their purge has committed, its last revision
    /// `rev`).
    pub fn purged(&self, keys: &[(Box<str>, u64)], gone: Totals, rev: u64) {
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for (key, _) in keys {
            // Only keys already cached: a purge must not fill the cache.
            if cache.slots.contains_key(&**key) {
                cache.put(key, None);
            }
        }
        cache.evict();
        drop(cache);
        add(&self.keys, -(gone.keys as i64));
        add(&self.bytes, -(gone.bytes as i64));
        self.rev.fetch_max(rev, Ordering::AcqRel);
    }

    fn read_fallback(&self, key: &str) -> Result<Row, RpcError> {
        let mut db = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            *db = Some(ReadDb::open(&self.path).map_err(|e| storage(&e))?);
        }
        let db = db.as_ref().expect("opened above");
        db.get(key).map_err(|e| storage(&e))
    }

    fn scan_fallback(
        &self,
        start: Bound<&str>,
        f: impl FnMut(&str, u64) -> bool,
    ) -> Result<(), RpcError> {
        let mut db = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            *db = Some(ReadDb::open(&self.path).map_err(|e| storage(&e))?);
        }
        let db = db.as_ref().expect("opened above");
        db.scan_keys(start, f).map_err(|e| storage(&e))
    }
}

fn add(n: &AtomicU64, delta: i64) {
    if delta >= 0 {
        n.fetch_add(delta as u64, Ordering::AcqRel);
    } else {
        let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(v.saturating_sub(delta.unsigned_abs()))
        });
    }
}

fn storage(e: &dyn fmt::Display) -> RpcError {
    RpcError::new(code::STORAGE, format!("storage error: {e}"))
}

/// A shared lock on the cache (see [`Store::read`]).
pub struct Reader<'a> {
    cache: RwLockReadGuard<'a, Cache>,
    store: &'a Store,
}

impl Reader<'_> {
    /// What the cache holds for `key`.
    pub fn lookup(&self, key: &str) -> Cached<'_> {
        match self.cache.get(key) {
            Some(row) => Cached::Hit(row.as_ref()),
            None => Cached::Miss,
        }
    }

    /// The committed row of `key`: from the cache, else read from SQLite
    /// on this thread. Only a key evicted after [`crate::methods::needs_writer`]
    /// routed its read here gets that far, so the read connection is
    /// rarely used.
    fn lookup_or_read(&self, key: &str) -> Result<Cow<'_, Entry>, Option<RpcError>> {
        match self.lookup(key) {
            Cached::Hit(Some(e)) => Ok(Cow::Borrowed(e)),
            Cached::Hit(None) => Err(None),
            Cached::Miss => match self.store.read_fallback(key) {
                Ok(Some(e)) => Ok(Cow::Owned(e)),
                Ok(None) => Err(None),
                Err(e) => Err(Some(e)),
            },
        }
    }

    /// The cached committed entry of `key` (for tests and status).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match self.lookup(key) {
            Cached::Hit(e) => e,
            Cached::Miss => None,
        }
    }
}

/// A limit a write would pass; nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ValueBytes { size: usize, max: usize },
    Keys { max: u64 },
    TotalBytes { would: u64, max: u64 },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::ValueBytes { size, max } => {
                write!(f, "value of {size} bytes exceeds max_value_bytes ({max})")
            }
            Limit::Keys { max } => write!(
                f,
                "the store holds max_keys ({max}) keys; delete some or raise the limit"
            ),
            Limit::TotalBytes { would, max } => write!(
                f,
                "the store would hold {would} bytes of keys, values and stream messages, over \
                 max_total_bytes ({max})"
            ),
        }
    }
}

/// What a method evaluates against: the cache alone (reads on an event
/// loop or a pool thread), or the writer's batch.
pub enum View<'a> {
    Read(&'a Reader<'a>),
    Write {
        reader: &'a Reader<'a>,
        /// `None` while the generation waits for the database.
        db: Option<&'a Db>,
        overlay: &'a mut Overlay,
        cfg: &'a Config,
    },
}

fn no_db() -> RpcError {
    RpcError::new(
        code::STORAGE,
        "storage error: the database is not open (another process owns it)",
    )
}

impl View<'_> {
    /// Whether a read of `key` can be answered without SQLite.
    pub fn cached(&self, key: &str) -> bool {
        match self {
            View::Read(r) => r.lookup(key) != Cached::Miss,
            View::Write { .. } => true,
        }
    }

    /// The live entry for `key`.
    pub fn get(&mut self, key: &str, now: u64) -> Result<Option<Cow<'_, Entry>>, RpcError> {
        let found = match self {
            View::Read(r) => match r.lookup_or_read(key) {
                Ok(e) => Some(e),
                Err(None) => None,
                Err(Some(e)) => return Err(e),
            },
            View::Write {
                reader,
                db,
                overlay,
                ..
            } => {
                let (changes, fills) = overlay.changes_and_fills();
                match changes.get(key) {
                    Some(row) => row.as_ref().map(Cow::Borrowed),
                    None => match reader.lookup(key) {
                        Cached::Hit(e) => e.map(Cow::Borrowed),
                        Cached::Miss => {
                            let db = db.ok_or_else(no_db)?;
                            let row = db.get(key).map_err(|e| storage(&e))?;
                            let cap = reader.cache.cap / MAX_SHARE;
                            if cost(key, &row) <= cap {
                                fills.push((key.into(), row.clone()));
                            }
                            row.map(Cow::Owned)
                        }
                    },
                }
            }
        };
        Ok(found.filter(|e| e.live(now)))
    }

    /// The last revision as this view sees it: the committed one, or
    /// the batch's last.
    pub fn revision(&self) -> u64 {
        match self {
            View::Read(r) => r.store.revision(),
            View::Write {
                reader, overlay, ..
            } => reader.store.revision().max(overlay.last_rev()),
        }
    }

    /// Notes a watch the batch made (the writer drops it again if the
    /// batch fails), and keeps the batch's events from now on (nobody
    /// may have watched when it started); nothing outside the writer.
    pub fn watch_made(&mut self, id: u64) {
        if let View::Write { overlay, .. } = self {
            overlay.watch_made(id);
            overlay.keep_events();
        }
    }

    /// [`View::put_counting`] with nothing stored besides keys and values.
    #[cfg(test)]
    pub fn put(&mut self, key: &str, row: Row) -> Result<Result<u64, Limit>, RpcError> {
        self.put_counting(key, row, 0)
    }

    /// Sets or deletes `key`, unless that would pass a limit; the change
    /// takes the next revision (returned; a set row carries it). Only the
    /// writer's view can change anything. `others`: the bytes the store
    /// holds besides keys and values (stream messages), which count
    /// against `max_total_bytes` too.
    pub fn put_counting(
        &mut self,
        key: &str,
        mut row: Row,
        others: u64,
    ) -> Result<Result<u64, Limit>, RpcError> {
        let View::Write {
            reader,
            db,
            overlay,
            cfg,
        } = self
        else {
            unreachable!("a write method was evaluated outside the writer")
        };
        let before = match overlay.get(key) {
            Some(r) => r.as_ref().map(|e| e.value.len() as u64),
            None => match reader.lookup(key) {
                Cached::Hit(e) => e.map(|e| e.value.len() as u64),
                Cached::Miss => db
                    .ok_or_else(no_db)?
                    .value_size(key)
                    .map_err(|e| storage(&e))?,
            },
        };
        if let Some(e) = &row {
            let size = e.value.len();
            if size > cfg.max_value_bytes {
                return Ok(Err(Limit::ValueBytes {
                    size,
                    max: cfg.max_value_bytes,
                }));
            }
            let committed = reader.store.totals();
            let (dk, db_) = overlay.delta();
            let keys = (committed.keys as i64 + dk).max(0) as u64;
            let bytes = (committed.bytes as i64 + db_).max(0) as u64;
            if before.is_none() && keys >= cfg.max_keys {
                return Ok(Err(Limit::Keys { max: cfg.max_keys }));
            }
            let old = before.map_or(0, |b| key.len() as u64 + b);
            let kv = bytes - old.min(bytes) + key.len() as u64 + size as u64;
            let would = kv.saturating_add(others);
            // A write that does not grow the store is always allowed (the
            // limit may have been lowered below what is stored).
            if would > cfg.max_total_bytes && kv > bytes {
                return Ok(Err(Limit::TotalBytes {
                    would,
                    max: cfg.max_total_bytes,
                }));
            }
        }
        let rev = overlay.take_rev(reader.store.revision());
        if let Some(e) = &mut row {
            e.rev = rev;
        }
        overlay.event(key, &row, rev);
        overlay.record(key, row, before);
        Ok(Ok(rev))
    }

    /// Up to `limit` live keys the caller may see (`visible`) in the
    /// key ranges `ranges` (prefixes, sorted, none a prefix of another:
    /// see [`crate::access::Who::read_ranges`]), after `after`, in order,
    /// from SQLite (under the batch's changes in the writer). At most
    /// `max_scan` rows are examined, hidden ones included; when that stops
    /// the listing before the page is full, the second value is the last
    /// key examined, where the next call goes on.
    pub fn keys(
        &self,
        ranges: &[String],
        after: Option<&str>,
        limit: usize,
        max_scan: usize,
        now: u64,
        visible: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<String>, Option<String>), RpcError> {
        let overlay = match self {
            View::Read(_) => None,
            View::Write { overlay, .. } => Some(&**overlay),
        };
        let mut keys: Vec<String> = Vec::new();
        let mut examined = 0usize;
        let mut stopped: Option<String> = None;
        for prefix in ranges {
            if keys.len() >= limit || stopped.is_some() {
                break;
            }
            let prefix = prefix.as_str();
            let start = match after {
                Some(a) if a >= prefix => Bound::Excluded(a),
                _ => Bound::Included(prefix),
            };
            // Keys the batch changed are taken from the overlay below.
            let mut take = |k: &str, at: u64| {
                if !k.starts_with(prefix) || keys.len() >= limit {
                    return false;
                }
                let changed = overlay.is_some_and(|o| o.changed(k));
                if !changed && (at == 0 || at > now) && visible(k) {
                    keys.push(k.to_string());
                }
                examined += 1;
                if examined >= max_scan && keys.len() < limit {
                    stopped = Some(k.to_string());
                    return false;
                }
                true
            };
            match self {
                View::Read(r) => r.store.scan_fallback(start, &mut take)?,
                View::Write { db, .. } => db
                    .ok_or_else(no_db)?
                    .scan_keys(start, &mut take)
                    .map_err(|e| storage(&e))?,
            }
        }
        if let Some(overlay) = overlay {
            let after_ok = |k: &str| after.map_or(true, |a| k > a);
            let before_stop = |k: &str| stopped.as_deref().map_or(true, |s| k <= s);
            for (k, row) in overlay.changes() {
                if row.as_ref().is_some_and(|e| e.live(now))
                    && ranges.iter().any(|p| k.starts_with(p.as_str()))
                    && after_ok(k)
                    && before_stop(k)
                    && visible(k)
                {
                    keys.push(k.to_string());
                }
            }
            keys.sort_unstable();
            keys.truncate(limit);
        }
        if keys.len() >= limit {
            // A full page: the client goes on after its last key.
            stopped = None;
        }
        Ok((keys, stopped))
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
    use crate::config::SyncMode;

    fn entry(v: &str, at: u64) -> Row {
        Some(Entry {
            value: v.into(),
            expires_at: at,
            rev: 0,
        })
    }

    fn setup(cache: usize) -> (crate::testdir::TestDir, Db, Store, Config) {
        let dir = crate::testdir::TestDir::new("store");
        let cfg = Config::from_json(
            &serde_json::json!({"cache_bytes": cache, "max_keys": 6, "max_total_bytes": 200,
                "max_line_bytes": 100, "max_value_bytes": 50}),
            dir.path(),
        )
        .unwrap();
        let db = Db::open(&cfg.db, SyncMode::Normal).unwrap();
        let store = Store::new(&cfg.db, cfg.cache_bytes);
        (dir, db, store, cfg)
    }

    /// Evaluates `f` as one batch, commits it and makes it visible.
    fn batch(db: &mut Db, store: &Store, cfg: &Config, f: impl FnOnce(&mut View<'_>)) {
        let mut overlay = Overlay::default();
        {
            let reader = store.read();
            let mut view = View::Write {
                reader: &reader,
                db: Some(db),
                overlay: &mut overlay,
                cfg,
            };
            f(&mut view);
        }
        db.commit(&overlay).unwrap();
        store.apply(overlay);
    }

    #[test]
    fn overlay_shadows_the_database() {
        let (_dir, mut db, store, cfg) = setup(1 << 20);
        batch(&mut db, &store, &cfg, |v| {
            for k in ["a1", "a2", "a3", "b1"] {
                v.put(k, entry("1", 0)).unwrap().unwrap();
            }
            v.put("a4", entry("1", 5)).unwrap().unwrap(); // expired at now=10
        });
        let reader = store.read();
        let mut overlay = Overlay::default();
        let mut view = View::Write {
            reader: &reader,
            db: Some(&db),
            overlay: &mut overlay,
            cfg: &cfg,
        };
        view.put("a2", None).unwrap().unwrap();
        view.put("a0", entry("2", 0)).unwrap().unwrap();
        view.put("a5", entry("2", 20)).unwrap().unwrap();
        assert!(view.get("a2", 10).unwrap().is_none());
        assert_eq!(&*view.get("a0", 10).unwrap().unwrap().value, "2");
        assert!(view.get("a4", 10).unwrap().is_none());
        assert_eq!(
            view.keys(&["a".to_string()], None, 10, 1000, 10, &|_| true)
                .unwrap()
                .0,
            ["a0", "a1", "a3", "a5"]
        );
        assert_eq!(
            view.keys(&["a".to_string()], Some("a1"), 2, 1000, 10, &|_| true)
                .unwrap()
                .0,
            ["a3", "a5"]
        );
        assert_eq!(
            View::Read(&reader)
                .keys(&["a".to_string()], None, 2, 1000, 10, &|_| true)
                .unwrap()
                .0,
            ["a1", "a2"]
        );
        assert_eq!(
            View::Read(&reader)
                .keys(&["".to_string()], Some("a4"), 10, 1000, 10, &|_| true)
                .unwrap()
                .0,
            ["b1"]
        );
    }

    /// Hidden keys count toward `max_scan`: a listing stopped by it before
    /// its page is full says where to go on, and going on from there
    /// finds the rest, in the writer's view (overlay) and on a reader.
    #[test]
    fn the_rows_a_listing_examines_are_capped() {
        let (_dir, mut db, store, mut cfg) = setup(1 << 20);
        cfg.max_keys = 1000;
        cfg.max_total_bytes = 1 << 20;
        batch(&mut db, &store, &cfg, |v| {
            for i in 0..50 {
                v.put(&format!("k.hidden{i:02}"), entry("1", 0))
                    .unwrap()
                    .unwrap();
            }
            v.put("k.open1", entry("1", 0)).unwrap().unwrap();
            v.put("k.zopen2", entry("1", 0)).unwrap().unwrap();
        });
        let all = ["k.".to_string()];
        let seen = |k: &str| k.contains("open");
        let reader = store.read();
        let read = View::Read(&reader);
        let (keys, stopped) = read.keys(&all, None, 10, 20, 10, &seen).unwrap();
        assert!(keys.is_empty());
        assert_eq!(stopped.as_deref(), Some("k.hidden19"), "20 rows examined");
        let mut after = stopped;
        let mut found = Vec::new();
        for _ in 0..10 {
            let (keys, stopped) = read
                .keys(&all, after.as_deref(), 10, 20, 10, &seen)
                .unwrap();
            found.extend(keys);
            if stopped.is_none() {
                break;
            }
            after = stopped;
        }
        assert_eq!(found, ["k.open1", "k.zopen2"]);
        // Uncapped: one call.
        let (keys, stopped) = read.keys(&all, None, 10, 1000, 10, &seen).unwrap();
        assert_eq!((keys.len(), stopped), (2, None));
        // A full page needs no position: its last key is one.
        let (keys, stopped) = read.keys(&all, None, 1, 1000, 10, &|_| true).unwrap();
        assert_eq!((keys.len(), stopped), (1, None));
        // The writer's view: the batch's own keys beyond the stop wait
        // for the next call.
        let mut overlay = Overlay::default();
        let mut view = View::Write {
            reader: &reader,
            db: Some(&db),
            overlay: &mut overlay,
            cfg: &cfg,
        };
        view.put("k.aopen0", entry("1", 0)).unwrap().unwrap();
        view.put("k.zopen3", entry("1", 0)).unwrap().unwrap();
        let (keys, stopped) = view.keys(&all, None, 10, 20, 10, &seen).unwrap();
        assert_eq!(keys, ["k.aopen0"]);
        let (keys, stopped) = view
            .keys(&all, stopped.as_deref(), 10, 1000, 10, &seen)
            .unwrap();
        assert_eq!(
            (keys, stopped),
            (
                vec!["k.open1".to_string(), "k.zopen2".into(), "k.zopen3".into()],
                None
            )
        );
    }

    #[test]
    fn limits_and_exact_totals() {
        let (_dir, mut db, store, cfg) = setup(1 << 20);
        batch(&mut db, &store, &cfg, |v| {
            let big = format!("\"{}\"", "x".repeat(49));
            assert_eq!(
                v.put("k", entry(&big, 0)).unwrap(),
                Err(Limit::ValueBytes { size: 51, max: 50 })
            );
            for i in 0..6 {
                v.put(&format!("k{i}"), entry("12345", 0)).unwrap().unwrap();
            }
            assert_eq!(
                v.put("k6", entry("1", 0)).unwrap(),
                Err(Limit::Keys { max: 6 })
            );
            // Overwriting and deleting stay possible at the key limit.
            v.put("k0", entry("1", 0)).unwrap().unwrap();
            v.put("k1", None).unwrap().unwrap();
        });
        assert_eq!(
            store.totals(),
            Totals {
                keys: 5,
                bytes: 3 + 4 * 7
            }
        );
        assert_eq!(db.totals().unwrap(), store.totals());
        batch(&mut db, &store, &cfg, |v| {
            let v40 = format!("\"{}\"", "y".repeat(38));
            for k in ["k2", "k3", "k4", "k5"] {
                v.put(k, entry(&v40, 0)).unwrap().unwrap();
            }
            // 3 + 4 * 42 = 171 bytes; k0 growing to 42 would make 210.
            let e = v.put("k0", entry(&v40, 0)).unwrap().unwrap_err();
            assert_eq!(
                e,
                Limit::TotalBytes {
                    would: 210,
                    max: 200
                }
            );
            assert!(e.to_string().contains("max_total_bytes (200)"), "{e}");
        });
        assert_eq!(db.totals().unwrap(), store.totals());
    }

    #[test]
    fn reads_fill_a_bounded_cache() {
        let (_dir, mut db, store, cfg) = setup(4000);
        let v = format!("\"{}\"", "v".repeat(500));
        batch(&mut db, &store, &cfg, |view| {
            for i in 0..6 {
                view.put(&format!("k{i}"), entry("1", 0)).unwrap().unwrap();
            }
        });
        // Committed writes are cached; a value over 1/8 of the cache is not.
        let mut o = Overlay::default();
        o.record("big", entry(&v, 0), None);
        db.commit(&o).unwrap();
        store.apply(o);
        assert_eq!(store.read().lookup("big"), Cached::Miss);
        assert!(matches!(store.read().lookup("k1"), Cached::Hit(Some(_))));
        // A miss in the writer reads SQLite and caches what it found,
        // absent keys included.
        store.reset(db.totals().unwrap());
        assert_eq!(store.read().lookup("k1"), Cached::Miss);
        batch(&mut db, &store, &cfg, |view| {
            assert_eq!(&*view.get("k1", 0).unwrap().unwrap().value, "1");
            assert!(view.get("nope", 0).unwrap().is_none());
        });
        assert!(matches!(store.read().lookup("k1"), Cached::Hit(Some(_))));
        assert_eq!(store.read().lookup("nope"), Cached::Hit(None));
        // Many keys: the cache stays within its budget.
        for i in 0..200 {
            store.fill(vec![(format!("n{i}").into(), None)]);
            assert!(store.cached_bytes() <= 4000);
        }
        // A read view falls back to SQLite for a key that is not cached.
        let reader = store.read();
        let mut view = View::Read(&reader);
        assert_eq!(&*view.get("big", 0).unwrap().unwrap().value, &*v);
    }

    #[test]
    fn eviction_gives_read_slots_a_second_chance() {
        let one = SLOT_OVERHEAD + 3 + 16; // key "kN", value "1", expiry, revision
        let mut c = Cache::new(MAX_SHARE * one);
        for i in 0..MAX_SHARE {
            c.put(&format!("k{i}"), entry("1", 0));
        }
        c.evict();
        assert_eq!(c.slots.len(), MAX_SHARE, "fits");
        assert!(c.get("k0").is_some(), "read: hot");
        c.put("k8", entry("1", 0));
        c.evict();
        assert!(c.get("k0").is_some(), "kept for its read");
        assert!(c.get("k1").is_none(), "the coldest went");
        assert_eq!(c.bytes, MAX_SHARE * one);
        // A key removed and cached again is evicted by its own ring entry.
        c.remove("k2");
        c.put("k2", entry("2", 0));
        for i in 9..30 {
            c.put(&format!("k{i}"), entry("1", 0));
            c.evict();
            assert!(c.bytes <= c.cap);
        }
        assert!(c.ring.len() <= 2 * c.slots.len() + 64);
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
