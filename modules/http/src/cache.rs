//! The open-file cache: what a request key resolved to, with the response
//! headers precomputed and, for small files, the bytes themselves.
//!
//! Shared by every event loop, so it is sharded (one `RwLock` per shard)
//! and a hit only takes a read lock and clones an `Arc`. Entries are
//! re-checked against the disk at most once per `revalidate_ms` (one
//! thread wins the right to check; the others keep serving meanwhile).
//! The total size is bounded; when full, entries are evicted with the
//! second-chance (clock) rule: an entry used since the last sweep is
//! spared once.

use std::collections::HashMap;
use std::fs::Metadata;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::mime;

/// What identifies a file's content for caching: if any of it changes, the
/// cached entry is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Modification time in whole seconds (0 before the epoch).
    pub fn mtime_secs(&self) -> u64 {
        u64::try_from(self.mtime).unwrap_or(0)
    }
}

/// One resolved file.
#[derive(Debug)]
pub struct Entry {
    /// Canonical path of the file.
    pub file: PathBuf,
    /// The file's stamp when the entry was built.
    pub stamp: Stamp,
    /// `Content-Type`, `Last-Modified`, `ETag` and `Accept-Ranges` lines.
    pub head: Box<[u8]>,
    /// The validator lines alone (`ETag`, `Last-Modified`), for 304.
    pub validators: std::ops::Range<usize>,
    /// The quoted entity tag, within `head`.
    pub etag: std::ops::Range<usize>,
    /// The file's bytes when it is small enough to keep in memory.
    pub body: Option<Box<[u8]>>,
    /// The open file behind a larger cached body: the host sends from it
    /// with `sendfile`, borrowing the descriptor for each response.
    pub open: Option<std::sync::Arc<std::fs::File>>,
    checked: AtomicU64,
    used: AtomicBool,
}

/// The cached bytes (empty for a file not kept in memory), so that an entry
/// can own a body shared with the host.
impl AsRef<[u8]> for Entry {
    fn as_ref(&self) -> &[u8] {
        self.body.as_deref().unwrap_or(&[])
    }
}

impl Entry {
    /// Builds an entry; `body` is `Some` for a file kept in memory.
    pub fn new(file: PathBuf, stamp: Stamp, body: Option<Box<[u8]>>) -> Entry {
        let mut head = Vec::with_capacity(160);
        head.extend_from_slice(b"Content-Type: ");
        head.extend_from_slice(mime::for_path(&file).as_bytes());
        head.extend_from_slice(b"\r\n");
        let validators_start = head.len();
        head.extend_from_slice(b"Last-Modified: ");
        let mtime = UNIX_EPOCH + Duration::from_secs(stamp.mtime_secs());
        let _ = write!(head, "{}", httpdate::HttpDate::from(mtime));
        head.extend_from_slice(b"\r\nETag: ");
        let etag_start = head.len();
        let nsec = stamp.mtime_nsec.clamp(0, 999_999_999);
        let _ = write!(
            head,
            "\"{:x}{:08x}-{:x}\"",
            stamp.mtime_secs(),
            nsec,
            stamp.len
        );
        let etag = etag_start..head.len();
        head.extend_from_slice(b"\r\n");
        let validators = validators_start..head.len();
        head.extend_from_slice(b"Accept-Ranges: bytes\r\n");
        Entry {
            open: None,
            file,
            stamp,
            head: head.into_boxed_slice(),
            validators,
            etag,
            body,
            checked: AtomicU64::new(now_ms()),
            used: AtomicBool::new(false),
        }
    }

    /// The quoted strong entity tag.
    pub fn etag(&self) -> &[u8] {
        &self.head[self.etag.clone()]
    }

    /// The `Last-Modified` and `ETag` header lines.
    pub fn validator_lines(&self) -> &[u8] {
        &self.head[self.validators.clone()]
    }

    /// Bytes this entry holds, for the cache budget.
    fn cost(&self, key_len: usize) -> usize {
        const OVERHEAD: usize = 160;
        OVERHEAD
            + key_len
            + self.head.len()
            + self.file.as_os_str().len()
            + self.body.as_ref().map_or(0, |b| b.len())
    }

    /// Whether the caller should re-check this entry against the disk now.
    /// At most one caller per period gets `true`.
    pub fn due(&self, every_ms: u64) -> bool {
        let last = self.checked.load(Relaxed);
        let now = now_ms();
        now.saturating_sub(last) >= every_ms
            && self
                .checked
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

/// Milliseconds on a monotonic clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

const SHARDS: usize = 16;

type Shard = RwLock<HashMap<Box<[u8]>, Arc<Entry>>>;

/// The shared cache, keyed by normalized request path.
pub struct Cache {
    shards: [Shard; SHARDS],
    hasher: RandomState,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    max_bytes: usize,
    /// Where the next eviction sweep starts.
    hand: AtomicUsize,
}

impl Cache {
    /// An empty cache holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            hasher: RandomState::new(),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            max_bytes,
            hand: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % SHARDS]
    }

    /// The entry for `key`, if cached.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Entry>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        let entry = shard.get(key)?;
        entry.used.store(true, Relaxed);
        Some(Arc::clone(entry))
    }

    /// Caches `entry` under `key`, replacing any previous one, evicting
    /// others when over budget. An entry bigger than the whole budget is not
    /// cached.
    pub fn insert(&self, key: &[u8], entry: Arc<Entry>) {
        let cost = entry.cost(key.len());
        if cost > self.max_bytes {
            self.remove(key);
            return;
        }
        while self.bytes.load(Relaxed) + cost > self.max_bytes {
            if !self.evict_one() {
                break;
            }
        }
        let old = {
            let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
            shard.insert(key.into(), entry)
        };
        self.bytes.fetch_add(cost, Relaxed);
        match old {
            Some(old) => self.bytes.fetch_sub(old.cost(key.len()), Relaxed),
            None => self.entries.fetch_add(1, Relaxed),
        };
    }

    /// Drops the entry for `key`, if it is still `expected` (a concurrent
    /// refresh may already have replaced it).
    pub fn remove_if(&self, key: &[u8], expected: &Arc<Entry>) {
        let removed = {
            let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
            match shard.get(key) {
                Some(e) if Arc::ptr_eq(e, expected) => shard.remove(key),
                _ => None,
            }
        };
        if let Some(old) = removed {
            self.forget(key.len(), &old);
        }
    }

    /// Drops the entry for `key`.
    pub fn remove(&self, key: &[u8]) {
        let removed = {
            let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
            shard.remove(key)
        };
        if let Some(old) = removed {
            self.forget(key.len(), &old);
        }
    }

    fn forget(&self, key_len: usize, old: &Entry) {
        self.bytes.fetch_sub(old.cost(key_len), Relaxed);
        self.entries.fetch_sub(1, Relaxed);
    }

    /// Evicts one entry (second chance for recently used ones). Returns
    /// `false` when the cache is empty.
    fn evict_one(&self) -> bool {
        // Two passes over every shard: the first may only clear `used` bits.
        for _ in 0..2 * SHARDS {
            let i = self.hand.fetch_add(1, Relaxed) % SHARDS;
            let mut shard = self.shards[i].write().unwrap_or_else(|e| e.into_inner());
            let victim = shard
                .iter()
                .find(|(_, e)| !e.used.swap(false, Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(key) = victim {
                if let Some(old) = shard.remove(&key) {
                    drop(shard);
                    self.forget(key.len(), &old);
                    return true;
                }
            }
        }
        // Everything was recently used: take any entry.
        for shard in &self.shards {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            let Some(key) = shard.keys().next().cloned() else {
                continue;
            };
            if let Some(old) = shard.remove(&key) {
                drop(shard);
                self.forget(key.len(), &old);
                return true;
            }
        }
        false
    }

    /// `(entries, bytes)` currently cached.
    pub fn stats(&self) -> (usize, usize) {
        (self.entries.load(Relaxed), self.bytes.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(len: u64) -> Stamp {
        Stamp {
            len,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            ino: 1,
            dev: 1,
        }
    }

    fn entry(name: &str, len: usize) -> Arc<Entry> {
        Arc::new(Entry::new(
            PathBuf::from(name),
            stamp(len as u64),
            Some(vec![b'x'; len].into()),
        ))
    }

    #[test]
    fn precomputed_headers() {
        let e = entry("/r/a.css", 16);
        let head = std::str::from_utf8(&e.head).unwrap();
        assert!(head.starts_with("Content-Type: text/css; charset=utf-8\r\n"));
        assert!(head.contains("Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"));
        assert_eq!(e.etag(), b"\"6553f10000000005-10\"");
        assert!(head.contains("ETag: \"6553f10000000005-10\"\r\n"));
        assert!(head.ends_with("Accept-Ranges: bytes\r\n"));
        let v = std::str::from_utf8(e.validator_lines()).unwrap();
        assert!(v.starts_with("Last-Modified: ") && v.ends_with("\"\r\n"));
    }

    #[test]
    fn insert_get_remove_account() {
        let c = Cache::new(1 << 20);
        let e = entry("/r/a", 100);
        c.insert(b"/a", Arc::clone(&e));
        assert!(Arc::ptr_eq(&c.get(b"/a").unwrap(), &e));
        let (n, bytes) = c.stats();
        assert_eq!(n, 1);
        assert!(bytes >= 100);
        c.insert(b"/a", entry("/r/a", 50));
        assert_eq!(c.stats().0, 1);
        c.remove_if(b"/a", &e); // already replaced: kept
        assert_eq!(c.stats().0, 1);
        c.remove(b"/a");
        assert_eq!(c.stats(), (0, 0));
        assert!(c.get(b"/a").is_none());
    }

    #[test]
    fn stays_within_budget() {
        let c = Cache::new(10_000);
        for i in 0..100 {
            let key = format!("/f{i}");
            c.insert(key.as_bytes(), entry(&key, 1000));
            assert!(c.stats().1 <= 10_000);
        }
        assert!(c.stats().0 >= 5);
        // Bigger than the whole budget: not cached.
        c.insert(b"/big", entry("/big", 20_000));
        assert!(c.get(b"/big").is_none());
    }

    #[test]
    fn due_once_per_period() {
        let e = entry("/r/a", 1);
        assert!(!e.due(60_000));
        assert!(e.due(0));
    }
}
