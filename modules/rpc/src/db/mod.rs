//! The SQLite database: the source of truth for every key. One table of
//! keys, expiry times, value sizes, revisions and JSON values, a partial
//! index of the keys that expire, and the store's totals and last
//! revision (`meta`), all in WAL mode
//! with incremental auto-vacuum. The writer thread commits every change
//! (to the write log, below) and the fold thread copies them into `kv`;
//! the totals change in the same transaction as the log rows they count,
//! so they are exact after a crash too.
//!
//! Column order matters: SQLite stores a large value in a chain of
//! overflow pages after the columns before it, so `expires_at`, `size` and
//! `rev` come before `value` and can be read (for `kv.keys`, the totals,
//! the purge) without touching the value.
//!
//! Revisions: one counter per store (`meta` row `rev`), as the sequence
//! of a NATS KV bucket; every set, delete, increment, compare-and-set and
//! expiry takes the next one, and a key's row holds the revision that
//! wrote it. Layout 3 added them (see `Db::add_revisions`).
//!
//! Writes go to a log first: a batch commit appends its key changes to
//! the `kv_log` table (with the totals, revision and stream changes, in
//! one transaction), and the fold thread ([`fold`]) later moves them into
//! `kv` in key order (see [`crate::kv_log`] for why). The log's tail is
//! also kept in memory — the changes not yet handed to the fold thread,
//! and those it is folding — so every read through [`Db`] sees it;
//! `kv.keys` merges it into its scan, the purge leaves its keys for
//! later, and a watch's scan of initial values folds first
//! ([`Db::fold`]). [`ReadDb`] reads the log table itself. A reload's
//! handover folds and then retires the connection ([`Db::retire`]): the
//! successor owns the file from then on, and the log's sequence numbers
//! are never reused (`AUTOINCREMENT`), so nothing late from the old
//! generation can touch the successor's rows. The two
//! connections take turns for write transactions (a lock of ours, so
//! neither waits in SQLite's busy sleeps).
//! Opening the database folds what a crash left in the log. An older
//! binary knows nothing of `kv_log`: a reload back to one after a crash
//! (rather than a clean stop, which folds) does not see the writes still
//! in it until a newer one opens the file again.

mod fold;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::kv_log::{self, Tail};

use crate::config::SyncMode;
use crate::entry::{Entry, Overlay, Row};

/// `PRAGMA user_version` of the current layout. Version 0 (the first
/// layout) had `value` before `expires_at` and no sizes nor totals;
/// version 2 had no revisions.
const LAYOUT: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0,
    size       INTEGER NOT NULL,
    rev        INTEGER NOT NULL DEFAULT 0,
    value      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at > 0;
CREATE TABLE IF NOT EXISTS kv_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    rev        INTEGER NOT NULL,
    value      TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Page size of a new database (an existing one keeps its own).
const PAGE_SIZE: u32 = 4096;
/// Page cache of the writer's connection, in KiB. Values are cached by
/// [`crate::store`] (bounded by `cache_bytes`); this one holds the
/// b-tree's inner pages.
const CACHE_KIB: u32 = 16 * 1024;
/// How long a connection waits for another one's lock.
const BUSY: Duration = Duration::from_secs(5);

const UPSERT: &str =
    "INSERT INTO kv (key, expires_at, size, rev, value) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at,
    size = excluded.size, rev = excluded.rev, value = excluded.value";
const DELETE: &str = "DELETE FROM kv WHERE key = ?1";
/// A key change appended to the log (`value` NULL: deleted).
const APPEND: &str =
    "INSERT INTO kv_log (key, expires_at, size, rev, value) VALUES (?1, ?2, ?3, ?4, ?5)";
/// The newest logged change of a key. The log has no index on keys (one
/// would cost a scattered page per write again): this scans it, but only
/// [`ReadDb`]'s rare reads use it — a key evicted from the cache between
/// a read's routing and its evaluation — and the log is bounded (one row
/// per key and batch, folded at [`crate::kv_log::FOLD_ROWS`] keys, at most
/// [`TAIL_SLACK`] times that while folds fail).
const LOGGED: &str =
    "SELECT value, expires_at, rev FROM kv_log WHERE key = ?1 ORDER BY seq DESC LIMIT 1";
/// How long no fold is started after one failed.
const FOLD_RETRY: Duration = Duration::from_secs(1);
/// How many times the fold limits the tail may grow while folds fail
/// before commits are refused (memory stays bounded).
const TAIL_SLACK: usize = 4;
const PURGE: &str = "DELETE FROM kv WHERE key = ?1 AND expires_at = ?2 RETURNING size";
const ADD_META: &str = "UPDATE meta SET value = value + ?2 WHERE name = ?1";
const RAISE_REV: &str = "INSERT INTO meta (name, value) VALUES ('rev', ?1)
    ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)";

/// Keys with the revision a change of them took, in order.
pub type Revised = Vec<(Box<str>, u64)>;

/// Number of keys and bytes of keys plus values (expired rows included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub keys: u64,
    pub bytes: u64,
}

/// An open database: the writer's connection, and the fold thread with
/// its own.
pub struct Db {
    conn: Connection,
    /// Held for every write transaction, by both connections.
    turn: Arc<Mutex<()>>,
    /// The log's changes not yet handed to the fold thread.
    tail: Tail,
    /// The changes the fold thread is folding, and the log sequence they
    /// cover (until it reports back).
    folding: Option<fold::Job>,
    /// Whether the fold thread is working on `folding` (else its fold
    /// failed and waits to be tried again).
    in_flight: bool,
    /// The log sequence of the newest change appended.
    last_seq: i64,
    /// `None` only if the thread could not be started (then folds run on
    /// this connection).
    folder: Option<fold::Folder>,
    /// Why the last fold failed (commits are refused once the tail is
    /// far over its limits).
    fold_error: Option<String>,
    /// No fold is started again before this after a failure.
    retry_at: Option<Instant>,
    /// Handed over to a successor: folds nothing more ([`Db::retire`]).
    retired: bool,
}

fn err(what: &str, path: &Path, e: rusqlite::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Db {
    /// Opens (creating if needed) the database with the durability of
    /// `sync`, bringing an older layout up to date (once, logged). Another
    /// connection may hold it too (the retiring generation during a
    /// reload): writers then wait for each other, up to 5 s.
    pub fn open(path: &Path, sync: SyncMode) -> Result<Db, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("cannot open", path, e))?;
        let cfg = |e| err("cannot configure", path, e);
        conn.busy_timeout(BUSY).map_err(cfg)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(cfg)?;
        // Pages of 4 KiB: key changes reach `kv` only through folds, in
        // key order, where a shallower tree means fewer pages visited and
        // written per key (commits append to the log, whose pages fill
        // in order whatever their size).
        // Incremental auto-vacuum: deleted data can be given back to the
        // file system a few pages at a time (see `vacuum_step`). A new
        // database takes both before its first table; an existing one
        // keeps its page size and switches with one VACUUM below.
        conn.execute_batch(&format!(
            "PRAGMA page_size = {PAGE_SIZE}; PRAGMA auto_vacuum = INCREMENTAL;"
        ))
        .map_err(cfg)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| err("cannot switch to WAL", path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "{}: journal mode is {mode}, not wal (is the file system able to hold a WAL?)",
                path.display()
            ));
        }
        let sync_pragma = match sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync_pragma};
             PRAGMA cache_size = -{CACHE_KIB};
             PRAGMA wal_autocheckpoint = 65536;"
        ))
        .map_err(|e| err("cannot prepare", path, e))?;
        let mut db = Db {
            conn,
            turn: Arc::new(Mutex::new(())),
            tail: Tail::default(),
            folding: None,
            in_flight: false,
            last_seq: 0,
            folder: None,
            fold_error: None,
            retry_at: None,
            retired: false,
        };
        if tables > 0 {
            db.upgrade(path)
                .map_err(|e| err("cannot upgrade", path, e))?;
        }
        db.conn
            .execute_batch(SCHEMA)
            .map_err(|e| err("cannot prepare", path, e))?;
        db.conn
            .execute_batch(crate::stream_sql::SCHEMA)
            .map_err(|e| err("cannot prepare the stream tables of", path, e))?;
        // What a crash left in the log first: the totals and the last
        // revision, if they must be rebuilt, are read from `kv`.
        db.recover_log()
            .map_err(|e| err("cannot read the write log of", path, e))?;
        db.ensure_totals()
            .map_err(|e| err("cannot count the keys of", path, e))?;
        db.ensure_revisions()
            .map_err(|e| err("cannot number the keys of", path, e))?;
        // Written only when it changes: a successor generation opens the
        // database while its predecessor still has it open.
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(cfg)?;
        if version != LAYOUT {
            db.conn
                .execute_batch(&format!("PRAGMA user_version = {LAYOUT}"))
                .map_err(cfg)?;
        }
        db.folder = match Self::fold_connection(path, sync) {
            Ok(conn) => match fold::Folder::spawn(conn, db.turn.clone()) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::warn!("cannot start the fold thread, folding on the writer: {e}");
                    None
                }
            },
            Err(e) => {
                log::warn!("{e}; folding on the writer");
                None
            }
        };
        Ok(db)
    }

    /// The fold thread's connection: the same durability, its statement
    /// cache and page cache of its own.
    fn fold_connection(path: &Path, sync: SyncMode) -> Result<Connection, String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("cannot open a fold connection to", path, e))?;
        let sync_pragma = match sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        };
        conn.busy_timeout(BUSY)
            .and_then(|()| {
                conn.execute_batch(&format!(
                    "PRAGMA synchronous = {sync_pragma};
                     PRAGMA cache_size = -{CACHE_KIB};
                     PRAGMA wal_autocheckpoint = 0;"
                ))
            })
            .map_err(|e| err("cannot configure a fold connection to", path, e))?;
        Ok(conn)
    }

    /// Loads what a crash left in the log (oldest first, so the last
    /// change of a key wins) and folds it.
    fn recover_log(&mut self) -> rusqlite::Result<()> {
        {
            let mut stmt = self
                .conn
                .prepare("SELECT key, expires_at, rev, value, seq FROM kv_log ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                self.last_seq = r.get(4)?;
                let row = match r.get::<_, Option<String>>(3)? {
                    Some(v) => Some(Entry {
                        value: v.into_boxed_str(),
                        expires_at: r.get::<_, i64>(1)?.max(0) as u64,
                        rev: r.get::<_, i64>(2)?.max(0) as u64,
                    }),
                    None => None,
                };
                self.tail.record(r.get_ref(0)?.as_str()?, &row);
            }
        }
        if self.tail.is_empty() {
            return Ok(());
        }
        log::info!(
            "folding {} changes left in the write log into the key table",
            self.tail.len()
        );
        if let Err(e) = self.fold() {
            // Reads see the tail; the writer folds it later.
            log::warn!("cannot fold the write log yet, will retry: {e}");
        }
        Ok(())
    }

    /// Brings a database of an older layout (or without incremental
    /// auto-vacuum) up to date. Runs once per database; takes about as
    /// long as copying it.
    fn upgrade(&mut self, path: &Path) -> rusqlite::Result<()> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version < LAYOUT {
            let old: bool = self.conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'kv'",
                [],
                |r| r.get(0),
            )?;
            if old {
                log::warn!(
                    "{}: moving the data to the layout that keeps values out of key scans \
                     (once; takes about as long as copying the file)",
                    path.display()
                );
                self.in_transaction(|c| {
                    c.execute_batch(
                        "CREATE TABLE kv_next (
                             key        TEXT PRIMARY KEY NOT NULL,
                             expires_at INTEGER NOT NULL DEFAULT 0,
                             size       INTEGER NOT NULL,
                             value      TEXT NOT NULL
                         ) WITHOUT ROWID;
                         INSERT INTO kv_next (key, expires_at, size, value)
                             SELECT key, expires_at, length(CAST(value AS BLOB)), value FROM kv;
                         DROP TABLE kv;
                         ALTER TABLE kv_next RENAME TO kv;
                         DROP TABLE IF EXISTS meta;",
                    )
                })?;
            }
        }
        if version < LAYOUT {
            self.add_revisions(path)?;
        }
        let vacuum: i64 = self
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if vacuum != 2 {
            log::warn!(
                "{}: switching to incremental auto-vacuum so that deleted data is given \
                 back to the file system (one VACUUM; takes about as long as copying the file)",
                path.display()
            );
            self.conn
                .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
        }
        Ok(())
    }

    /// Layout 3: gives every key a revision. A layout-2 table is rebuilt
    /// with the `rev` column before `value` (`ALTER TABLE ADD COLUMN`
    /// would put it after the value, behind its overflow pages), its keys
    /// numbered 1, 2, ... in key order. A file that already has the column
    /// but says layout 2 was opened (and written) by an older binary,
    /// which resets `user_version` and inserts rows with revision 0: only
    /// those get fresh revisions, above every one given before.
    fn add_revisions(&mut self, path: &Path) -> rusqlite::Result<()> {
        let has_kv: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'kv'",
            [],
            |r| r.get(0),
        )?;
        if !has_kv {
            return Ok(());
        }
        let has_rev: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('kv') WHERE name = 'rev'",
            [],
            |r| r.get(0),
        )?;
        if !has_rev {
            log::warn!(
                "{}: adding revisions to the keys (once; takes about as long as copying the file)",
                path.display()
            );
            return self.in_transaction(|c| {
                c.execute_batch(
                    "CREATE TABLE kv_next (
                         key        TEXT PRIMARY KEY NOT NULL,
                         expires_at INTEGER NOT NULL DEFAULT 0,
                         size       INTEGER NOT NULL,
                         rev        INTEGER NOT NULL DEFAULT 0,
                         value      TEXT NOT NULL
                     ) WITHOUT ROWID;
                     INSERT INTO kv_next (key, expires_at, size, rev, value)
                         SELECT key, expires_at, size, row_number() OVER (ORDER BY key), value
                         FROM kv;
                     DROP TABLE kv;
                     ALTER TABLE kv_next RENAME TO kv;
                     CREATE TABLE IF NOT EXISTS meta (
                         name  TEXT PRIMARY KEY NOT NULL,
                         value INTEGER NOT NULL
                     ) WITHOUT ROWID;
                     INSERT INTO meta (name, value) SELECT 'rev', count(*) FROM kv WHERE true
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value;",
                )
            });
        }
        log::warn!(
            "{}: an older version wrote this file since its revisions were added; \
             numbering the keys it wrote",
            path.display()
        );
        self.in_transaction(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (
                     name  TEXT PRIMARY KEY NOT NULL,
                     value INTEGER NOT NULL
                 ) WITHOUT ROWID;",
            )?;
            let mut rev: i64 = c.query_row(
                "SELECT max((SELECT coalesce(max(rev), 0) FROM kv),
                            (SELECT coalesce(max(value), 0) FROM meta WHERE name = 'rev'))",
                [],
                |r| r.get(0),
            )?;
            let keys: Vec<String> = c
                .prepare("SELECT key FROM kv WHERE rev = 0 ORDER BY key")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut set = c.prepare("UPDATE kv SET rev = ?2 WHERE key = ?1")?;
            for k in &keys {
                rev += 1;
                set.execute(params![k, rev])?;
            }
            c.execute(RAISE_REV, [rev])?;
            Ok(())
        })
    }

    /// Makes sure the last revision is stored (a new database, or one
    /// whose `meta` an older version rebuilt without it).
    fn ensure_revisions(&mut self) -> rusqlite::Result<()> {
        let have: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM meta WHERE name = 'rev'",
            [],
            |r| r.get(0),
        )?;
        if have {
            return Ok(());
        }
        self.in_transaction(|c| {
            c.execute_batch(
                "INSERT INTO meta (name, value) SELECT 'rev', coalesce(max(rev), 0) FROM kv WHERE true
                     ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);",
            )
        })
    }

    /// The last revision taken, as committed.
    pub fn revision(&self) -> rusqlite::Result<u64> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE name = 'rev'")?
            .query_row([], |r| r.get::<_, i64>(0))
            .optional()
            .map(|r| r.unwrap_or(0).max(0) as u64)
    }

    /// Counts the keys once if the totals are missing (a new or upgraded
    /// database). Reads keys and sizes, never values.
    fn ensure_totals(&mut self) -> rusqlite::Result<()> {
        let have: i64 = self.conn.query_row(
            "SELECT count(*) FROM meta WHERE name IN ('keys', 'bytes')",
            [],
            |r| r.get(0),
        )?;
        if have == 2 {
            return Ok(());
        }
        self.in_transaction(|c| {
            c.execute_batch(
                "DELETE FROM meta WHERE name IN ('keys', 'bytes');
                 INSERT INTO meta (name, value)
                     SELECT 'keys', count(*) FROM kv;
                 INSERT INTO meta (name, value)
                     SELECT 'bytes', coalesce(sum(length(CAST(key AS BLOB)) + size), 0) FROM kv;",
            )
        })
    }

    /// The store's totals as committed.
    pub fn totals(&self) -> rusqlite::Result<Totals> {
        let mut stmt = self.conn.prepare_cached("SELECT name, value FROM meta")?;
        let mut t = Totals::default();
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let n: i64 = r.get(1)?;
            match r.get_ref(0)?.as_str()? {
                "keys" => t.keys = n.max(0) as u64,
                "bytes" => t.bytes = n.max(0) as u64,
                _ => {}
            }
        }
        Ok(t)
    }

    /// The row of `key`, expired or not.
    pub fn get(&self, key: &str) -> rusqlite::Result<Option<Entry>> {
        match self.logged(key) {
            Some(row) => Ok(row.clone()),
            None => get_on(&self.conn, key),
        }
    }

    /// The last unfolded change of `key`, if any.
    fn logged(&self, key: &str) -> Option<&Row> {
        self.tail
            .get(key)
            .or_else(|| self.folding.as_ref().and_then(|j| j.rows.get(key)))
    }

    /// Bytes of `key`'s stored value (expired or not); the value itself is
    /// not read.
    pub fn value_size(&self, key: &str) -> rusqlite::Result<Option<u64>> {
        if let Some(row) = self.logged(key) {
            return Ok(row.as_ref().map(|e| e.value.len() as u64));
        }
        self.conn
            .prepare_cached("SELECT size FROM kv WHERE key = ?1")?
            .query_row([key], |r| r.get::<_, i64>(0))
            .optional()
            .map(|s| s.map(|s| s.max(0) as u64))
    }

    /// Calls `f(key, expires_at)` for the keys from `start` in order while
    /// it returns `true`. Values are not read.
    pub fn scan_keys(
        &self,
        start: Bound<&str>,
        f: impl FnMut(&str, u64) -> bool,
    ) -> rusqlite::Result<()> {
        let mut tail = self.tail.keys_from(start);
        if let Some(job) = &self.folding {
            // The newer change of a key wins: the tail's over the job's.
            let older = job.rows.keys_from(start);
            tail.extend(
                older
                    .into_iter()
                    .filter(|(k, _)| self.tail.get(k).is_none()),
            );
            tail.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        kv_log::merge_keys(&tail, |g| scan_on(&self.conn, start, g), f)
    }

    /// Writes a batch's changes to the log, with the new totals, in one
    /// transaction. When this returns `Ok`, the batch is as durable as
    /// the sync mode promises.
    pub fn commit(&mut self, overlay: &Overlay) -> rusqlite::Result<()> {
        if self.tail_full() && !self.retry_at.is_some_and(|t| Instant::now() < t) {
            // The fold thread is behind: wait for it (back pressure).
            let _ = self.fold();
        }
        if self.tail_full() {
            let why = self.fold_error.as_deref().unwrap_or("unknown error");
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some(format!(
                    "the write log is full: folding it into the key table keeps failing ({why})"
                )),
            ));
        }
        let delta = overlay.delta();
        let _turn = self.turn.lock();
        let seq = transact(&self.conn, |conn| {
            let mut append = conn.prepare_cached(APPEND)?;
            for (key, entry) in overlay.changes() {
                match entry {
                    Some(e) => write_row(&mut append, key, e)?,
                    None => append.execute(params![key, 0i64, 0i64, 0i64, Option::<&str>::None])?,
                };
            }
            // Taken here, before any other statement of the transaction
            // can insert a row of its own.
            let seq = conn.last_insert_rowid();
            let mut add = conn.prepare_cached(ADD_META)?;
            add.execute(params!["keys", delta.0])?;
            add.execute(params!["bytes", delta.1])?;
            crate::stream_sql::write(conn, &overlay.streams)?;
            if overlay.last_rev() > 0 {
                conn.prepare_cached(RAISE_REV)?
                    .execute([overlay.last_rev() as i64])?;
            }
            Ok(seq)
        })?;
        if overlay.changes().next().is_some() {
            self.last_seq = seq;
        }
        for (key, row) in overlay.changes() {
            self.tail.record(key, row);
        }
        Ok(())
    }

    fn tail_full(&self) -> bool {
        self.tail.len() >= TAIL_SLACK * kv_log::FOLD_ROWS
            || self.tail.bytes() >= TAIL_SLACK * kv_log::FOLD_BYTES
    }

    /// Changes in the log not yet folded (handed to the fold thread or
    /// not).
    pub fn unfolded(&self) -> usize {
        self.tail.len() + self.folding.as_ref().map_or(0, |j| j.rows.len())
    }

    /// The fold thread's progress, between batches: takes note of a
    /// finished fold, hands a failed one back to the thread once
    /// [`FOLD_RETRY`] has passed, and hands the tail over when it is due
    /// (or `idle` and not empty) and the thread is free. Never waits.
    /// Returns the keys of a fold that finished now.
    pub fn fold_step(&mut self, now: Instant, idle: bool) -> usize {
        let mut folded = 0;
        if self.retired {
            return 0;
        }
        if self.in_flight {
            match self.folder.as_ref().and_then(|f| f.try_done()) {
                Some(Ok(())) => {
                    self.in_flight = false;
                    folded = self.folding.take().map_or(0, |j| j.rows.len());
                    self.fold_error = None;
                }
                Some(Err(e)) => {
                    self.in_flight = false;
                    self.failed_fold(e);
                }
                None => {}
            }
        }
        if self.retry_at.is_some_and(|t| now < t) || self.in_flight {
            return folded;
        }
        let job = match &self.folding {
            // A fold that failed: again, as it was.
            Some(job) => job.clone(),
            None if self.tail.is_empty() || !(idle || self.tail.due(now)) => return folded,
            None => fold::Job {
                rows: Arc::new(std::mem::take(&mut self.tail)),
                upto: self.last_seq,
            },
        };
        let sent = self.folder.as_ref().is_some_and(|f| f.send(job.clone()));
        self.folding = Some(job);
        if sent {
            self.in_flight = true;
        } else {
            // No thread (or it is gone): fold here from now on.
            self.folder = None;
            match self.fold() {
                Ok(n) => folded += n,
                Err(e) => log::warn!("fold failed, will retry: {e}"),
            }
        }
        folded
    }

    fn failed_fold(&mut self, e: String) {
        log::error!(
            "cannot fold {} changes of the write log into the key table, \
             will retry (reads still see them): {e}",
            self.unfolded()
        );
        self.fold_error = Some(e);
        self.retry_at = Some(Instant::now() + FOLD_RETRY);
    }

    /// Folds everything now, on this thread: waits for the fold thread's
    /// job (doing it here if it failed), then folds the tail. Returns how
    /// many keys were folded here. On failure, reads still see every
    /// change and a later fold tries again.
    pub fn fold(&mut self) -> rusqlite::Result<usize> {
        if self.retired {
            return Ok(0);
        }
        let mut n = 0;
        if let Some(job) = self.folding.clone() {
            let outcome = match (&self.folder, self.in_flight) {
                (Some(f), true) => f.wait_done(),
                _ => Err("not with the fold thread".into()),
            };
            self.in_flight = false;
            if outcome.is_err() {
                let rows = job.rows.sorted();
                if let Err(e) = fold::fold_rows(&self.conn, &self.turn, &rows, job.upto) {
                    self.failed_fold(e.to_string());
                    return Err(e);
                }
                n += rows.len();
            }
            self.folding = None;
        }
        if !self.tail.is_empty() {
            let rows = self.tail.sorted();
            let done = fold::fold_rows(&self.conn, &self.turn, &rows, self.last_seq);
            if let Err(e) = done {
                self.failed_fold(e.to_string());
                return Err(e);
            }
            n += rows.len();
            self.tail.clear();
        }
        self.fold_error = None;
        self.retry_at = None;
        Ok(n)
    }

    /// Runs `f` in a write transaction (see [`transact`]) in this
    /// connection's turn.
    fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let _turn = self.turn.lock();
        transact(&self.conn, f)
    }

    /// Up to `limit` keys whose expiry in `kv` is at or before `now`, with
    /// it; keys with a change still in the log are left for a later round
    /// (their row in `kv` is not their last word).
    pub fn expired(&self, now: u64, limit: usize) -> rusqlite::Result<Vec<(Box<str>, u64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, expires_at FROM kv WHERE expires_at > 0 AND expires_at <= ?1",
        )?;
        let rows = stmt.query_map(params![now as i64], |r| {
            Ok((
                r.get::<_, String>(0)?.into_boxed_str(),
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        })?;
        let mut due = Vec::new();
        for row in rows {
            if due.len() >= limit {
                break;
            }
            let (key, at) = row?;
            if self.logged(&key).is_none() {
                due.push((key, at));
            }
        }
        Ok(due)
    }

    /// Deletes keys that still have the given expiry, each taking the
    /// next revision after `rev` (the last one committed); returns what
    /// was removed from the totals and the keys removed with their
    /// revisions, in order.
    pub fn purge(
        &mut self,
        keys: &[(Box<str>, u64)],
        rev: u64,
    ) -> rusqlite::Result<(Totals, Revised)> {
        self.in_transaction(|conn| {
            let mut purge = conn.prepare_cached(PURGE)?;
            let mut gone = Totals::default();
            let mut removed = Vec::new();
            let mut rev = rev;
            for (key, at) in keys {
                let size: Option<i64> = purge
                    .query_row(params![&**key, *at as i64], |r| r.get(0))
                    .optional()?;
                if let Some(size) = size {
                    gone.keys += 1;
                    gone.bytes += key.len() as u64 + size.max(0) as u64;
                    rev += 1;
                    removed.push((key.clone(), rev));
                }
            }
            let mut add = conn.prepare_cached(ADD_META)?;
            add.execute(params!["keys", -(gone.keys as i64)])?;
            add.execute(params!["bytes", -(gone.bytes as i64)])?;
            if !removed.is_empty() {
                conn.prepare_cached(RAISE_REV)?.execute([rev as i64])?;
            }
            Ok((gone, removed))
        })
    }

    /// Up to `limit` rows with their values, in key order after `after`
    /// (from the start when `None`), stopping at the first key that does
    /// not start with `prefix` (a watch's initial values; expired rows
    /// included). Reads `kv` only: the log must have been folded
    /// ([`Db::fold`]; the writer does before each step), else this fails.
    pub fn scan_entries(
        &self,
        after: Option<&str>,
        prefix: &str,
        limit: usize,
    ) -> rusqlite::Result<Vec<(Box<str>, Entry)>> {
        if self.unfolded() > 0 {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                Some("the write log must be folded before a scan of values".into()),
            ));
        }
        let (sql, from) = match after {
            Some(k) if k >= prefix => (
                "SELECT key, expires_at, rev, value FROM kv WHERE key > ?1 ORDER BY key LIMIT ?2",
                k,
            ),
            _ => (
                "SELECT key, expires_at, rev, value FROM kv WHERE key >= ?1 ORDER BY key LIMIT ?2",
                prefix,
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![from, limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let key = r.get_ref(0)?.as_str()?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((
                key.into(),
                Entry {
                    expires_at: r.get::<_, i64>(1)?.max(0) as u64,
                    rev: r.get::<_, i64>(2)?.max(0) as u64,
                    value: r.get::<_, String>(3)?.into_boxed_str(),
                },
            ));
        }
        Ok(out)
    }

    /// Pages of the file that hold nothing (given back by
    /// [`Db::vacuum_step`]).
    pub fn free_pages(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
    }

    /// Gives up to `pages` free pages back to the file system (moving
    /// pages from the end of the file into free slots, then truncating):
    /// one short write transaction. Returns the free pages left.
    pub fn vacuum_step(&mut self, pages: u32) -> rusqlite::Result<u64> {
        // The pragma frees one page per step (each step returns a row):
        // run it to the end.
        let _turn = self.turn.lock();
        let mut stmt = self
            .conn
            .prepare_cached(&format!("PRAGMA incremental_vacuum({pages})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        drop(rows);
        self.free_pages()
    }

    /// Copies the WAL into the database (and so fsyncs the WAL). `PASSIVE`
    /// never waits for readers; `truncate` (when idle) also empties the WAL
    /// file so that its space goes back to the file system.
    pub fn checkpoint(&self, truncate: bool) -> rusqlite::Result<()> {
        let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
        // In turn: a TRUNCATE checkpoint waits for writers in SQLite's
        // busy handler otherwise.
        let _turn = self.turn.lock();
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
    }

    /// Test hook: a fold thread whose every fold fails.
    #[cfg(test)]
    pub fn break_folder(&mut self, path: &Path) {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        self.folder = Some(fold::Folder::spawn(conn, self.turn.clone()).unwrap());
    }

    /// Test hook: makes every later write fail.
    #[cfg(test)]
    pub fn make_read_only(&self) {
        self.conn.execute_batch("PRAGMA query_only = 1").unwrap();
    }
}

impl Db {
    /// Hands the database over (a reload's successor takes it): waits for
    /// the fold thread's job, and from now on this connection folds
    /// nothing, not even when dropped — the successor owns the file and
    /// folds whatever is left in the log when it opens it. The caller
    /// folds first ([`Db::fold`]) so that little or nothing is left.
    pub fn retire(&mut self) {
        if self.in_flight {
            if let Some(f) = &self.folder {
                let _ = f.wait_done();
            }
            self.in_flight = false;
        }
        self.retired = true;
    }

    /// Takes the database back after a handover that was abandoned.
    pub fn unretire(&mut self) {
        self.retired = false;
    }
}

/// A clean close folds the log (what a failed fold leaves there is
/// folded when the database is opened next); a retired one does not.
impl Drop for Db {
    fn drop(&mut self) {
        if !self.retired && self.unfolded() > 0 {
            if let Err(e) = self.fold() {
                log::warn!("closing with changes still in the write log: {e}");
            }
        }
    }
}

/// Durable streams ([`crate::streams`]).
impl Db {
    /// Writes stream changes made outside a batch (max_age) in one
    /// transaction.
    pub fn write_streams(&mut self, ops: &[crate::stream_sql::Op]) -> rusqlite::Result<()> {
        self.in_transaction(|c| crate::stream_sql::write(c, ops))
    }
}

/// A read-only connection, for the rare read on an event loop that finds
/// its key evicted from the cache after it was routed there.
pub struct ReadDb {
    conn: Connection,
}

impl ReadDb {
    pub fn open(path: &Path) -> Result<ReadDb, String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("cannot open", path, e))?;
        conn.busy_timeout(BUSY)
            .map_err(|e| err("cannot configure", path, e))?;
        Ok(ReadDb { conn })
    }

    /// The row of `key`, expired or not: its newest change in the log,
    /// else its row in `kv`.
    pub fn get(&self, key: &str) -> rusqlite::Result<Option<Entry>> {
        let logged = self
            .conn
            .prepare_cached(LOGGED)?
            .query_row([key], |r| {
                Ok(match r.get::<_, Option<String>>(0)? {
                    Some(v) => Some(Entry {
                        value: v.into_boxed_str(),
                        expires_at: r.get::<_, i64>(1)?.max(0) as u64,
                        rev: r.get::<_, i64>(2)?.max(0) as u64,
                    }),
                    None => None,
                })
            })
            .optional()?;
        match logged {
            Some(row) => Ok(row),
            None => get_on(&self.conn, key),
        }
    }

    /// As [`Db::scan_keys`] (reading the log's keys first).
    pub fn scan_keys(
        &self,
        start: Bound<&str>,
        f: impl FnMut(&str, u64) -> bool,
    ) -> rusqlite::Result<()> {
        let mut last: std::collections::BTreeMap<String, Option<u64>> = Default::default();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT key, expires_at, value IS NULL FROM kv_log ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let key = r.get::<_, String>(0)?;
                if kv_log::in_bound(&key, start) {
                    let deleted: bool = r.get(2)?;
                    let at = r.get::<_, i64>(1)?.max(0) as u64;
                    last.insert(key, (!deleted).then_some(at));
                }
            }
        }
        let tail: Vec<(&str, Option<u64>)> = last.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        kv_log::merge_keys(&tail, |g| scan_on(&self.conn, start, g), f)
    }
}

/// Runs [`APPEND`] or [`UPSERT`] (same parameters) for one row.
fn write_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    key: &str,
    e: &Entry,
) -> rusqlite::Result<usize> {
    stmt.execute(params![
        key,
        e.expires_at as i64,
        e.value.len() as i64,
        e.rev as i64,
        &*e.value
    ])
}

/// Runs `f` in a write transaction on `conn` (statements cached, unlike
/// rusqlite's `transaction`, which parses `BEGIN` and `COMMIT` each
/// time); rolls back if anything fails.
fn transact<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let done = f(conn).and_then(|v| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(v)
    });
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

fn get_on(conn: &Connection, key: &str) -> rusqlite::Result<Option<Entry>> {
    conn.prepare_cached("SELECT value, expires_at, rev FROM kv WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(Entry {
                value: r.get::<_, String>(0)?.into_boxed_str(),
                expires_at: r.get::<_, i64>(1)?.max(0) as u64,
                rev: r.get::<_, i64>(2)?.max(0) as u64,
            })
        })
        .optional()
}

fn scan_on(
    conn: &Connection,
    start: Bound<&str>,
    mut f: impl FnMut(&str, u64) -> bool,
) -> rusqlite::Result<()> {
    let (sql, from) = match start {
        Bound::Excluded(k) => (
            "SELECT key, expires_at FROM kv WHERE key > ?1 ORDER BY key",
            k,
        ),
        Bound::Included(k) => (
            "SELECT key, expires_at FROM kv WHERE key >= ?1 ORDER BY key",
            k,
        ),
        Bound::Unbounded => (
            "SELECT key, expires_at FROM kv WHERE key >= ?1 ORDER BY key",
            "",
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([from])?;
    while let Some(r) = rows.next()? {
        let at = r.get::<_, i64>(1)?.max(0) as u64;
        if !f(r.get_ref(0)?.as_str()?, at) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(v: &str, at: u64) -> Option<Entry> {
        Some(Entry {
            value: v.into(),
            expires_at: at,
            rev: 0,
        })
    }

    #[test]
    fn commit_totals_purge() {
        let dir = crate::testdir::TestDir::new("db");
        let path = dir.path().join("t.sqlite");
        let mut db = Db::open(&path, SyncMode::Full).unwrap();
        let mut o = Overlay::default();
        o.record("a", entry("1", 0), None);
        o.record("b", entry("[2]", 50), None);
        db.commit(&o).unwrap();
        let mut o = Overlay::default();
        o.record("c", None, None);
        db.commit(&o).unwrap();
        drop(db);

        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(db.totals().unwrap(), Totals { keys: 2, bytes: 6 });
        assert_eq!(db.get("a").unwrap(), entry("1", 0));
        assert_eq!(db.value_size("b").unwrap(), Some(3));
        let mut keys = Vec::new();
        db.scan_keys(Bound::Unbounded, |k, at| {
            keys.push((k.to_string(), at));
            true
        })
        .unwrap();
        assert_eq!(keys, [("a".to_string(), 0), ("b".to_string(), 50)]);
        let expired = db.expired(100, 10).unwrap();
        assert_eq!(expired, vec![("b".into(), 50)]);
        let (gone, removed) = db.purge(&expired, 7).unwrap();
        assert_eq!(gone, Totals { keys: 1, bytes: 4 });
        assert_eq!(removed, vec![("b".into(), 8)], "the next revision");
        assert_eq!(db.revision().unwrap(), 8);
        assert!(db.expired(100, 10).unwrap().is_empty());
        assert_eq!(db.totals().unwrap(), Totals { keys: 1, bytes: 2 });
        db.checkpoint(true).unwrap();
        let r = ReadDb::open(&path).unwrap();
        assert_eq!(r.get("a").unwrap(), entry("1", 0));
    }

    #[test]
    fn upgrades_the_first_layout() {
        let dir = crate::testdir::TestDir::new("db-upgrade");
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL,
                     expires_at INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
                 INSERT INTO kv VALUES ('a', '\"é\"', 0), ('b', '2', 7);",
            )
            .unwrap();
        }
        let db = Db::open(&path, SyncMode::Normal).unwrap();
        let vacuum: i64 = db
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "incremental");
        assert_eq!(db.get("a").unwrap(), with_rev(entry("\"é\"", 0), 1));
        assert_eq!(
            db.value_size("a").unwrap(),
            Some(4),
            "bytes, not characters"
        );
        assert_eq!(db.totals().unwrap(), Totals { keys: 2, bytes: 7 });
        assert_eq!(db.revision().unwrap(), 2);
    }

    fn with_rev(row: Option<Entry>, rev: u64) -> Option<Entry> {
        row.map(|e| Entry { rev, ..e })
    }

    fn columns(db: &Db) -> Vec<String> {
        db.conn
            .prepare("SELECT name FROM pragma_table_info('kv')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A layout-2 file gets revisions (in key order, `rev` before
    /// `value`), keeps its totals, and opens again as it is.
    #[test]
    fn layout_2_gets_revisions() {
        let dir = crate::testdir::TestDir::new("db-v3");
        let path = dir.path().join("v2.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;
                 CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL,
                     expires_at INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL,
                     value TEXT NOT NULL) WITHOUT ROWID;
                 CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)
                     WITHOUT ROWID;
                 INSERT INTO kv VALUES ('b', 0, 1, '2'), ('a', 9, 1, '1'), ('c', 0, 3, '[3]');
                 INSERT INTO meta VALUES ('keys', 3), ('bytes', 8);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(columns(&db), ["key", "expires_at", "size", "rev", "value"]);
        assert_eq!(db.get("a").unwrap(), with_rev(entry("1", 9), 1));
        assert_eq!(db.get("b").unwrap(), with_rev(entry("2", 0), 2));
        assert_eq!(db.get("c").unwrap(), with_rev(entry("[3]", 0), 3));
        assert_eq!(db.revision().unwrap(), 3);
        assert_eq!(db.totals().unwrap(), Totals { keys: 3, bytes: 8 });
        let mut o = Overlay::default();
        let rev = o.take_rev(db.revision().unwrap());
        o.record("d", with_rev(entry("4", 0), rev), None);
        db.commit(&o).unwrap();
        drop(db);
        // Opened again: nothing renumbered.
        let db = Db::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(db.revision().unwrap(), 4);
        assert_eq!(db.get("d").unwrap(), with_rev(entry("4", 0), 4));
        assert_eq!(db.get("a").unwrap(), with_rev(entry("1", 9), 1));
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, LAYOUT);
    }

    /// A layout-3 file that an older binary opened (it wrote
    /// `user_version = 2` and rows without a revision, and rebuilt `meta`
    /// without `rev`): only its rows get fresh revisions, above the
    /// others.
    #[test]
    fn a_downgraded_file_is_renumbered_above_the_rest() {
        let dir = crate::testdir::TestDir::new("db-down");
        let path = dir.path().join("d.sqlite");
        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        let mut o = Overlay::default();
        for k in ["a", "b", "c"] {
            let rev = o.take_rev(0);
            o.record(k, with_rev(entry("1", 0), rev), None);
        }
        db.commit(&o).unwrap();
        drop(db);
        {
            // What a layout-2 binary does to it.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO kv (key, expires_at, size, value) VALUES ('z', 0, 1, '9'), ('m', 0, 1, '8');
                 INSERT INTO kv (key, expires_at, size, value) VALUES ('a', 0, 1, '7')
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value;
                 DELETE FROM meta WHERE name = 'rev';",
            )
            .unwrap();
        }
        let db = Db::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(db.get("b").unwrap(), with_rev(entry("1", 0), 2), "kept");
        assert_eq!(db.get("m").unwrap(), with_rev(entry("8", 0), 4));
        assert_eq!(db.get("z").unwrap(), with_rev(entry("9", 0), 5));
        assert_eq!(db.revision().unwrap(), 5);
        assert_eq!(columns(&db), ["key", "expires_at", "size", "rev", "value"]);
    }

    #[test]
    fn gives_deleted_space_back() {
        let dir = crate::testdir::TestDir::new("db-vacuum");
        let path = dir.path().join("v.sqlite");
        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        let big = format!("\"{}\"", "x".repeat(100_000));
        let mut o = Overlay::default();
        for i in 0..40 {
            o.record(&format!("k{i}"), entry(&big, 0), None);
        }
        db.commit(&o).unwrap();
        db.checkpoint(true).unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        let mut o = Overlay::default();
        for i in 0..40 {
            o.record(&format!("k{i}"), None, Some(100_002));
        }
        db.commit(&o).unwrap();
        db.fold().unwrap();
        assert!(
            db.free_pages().unwrap() > 900,
            "{}",
            db.free_pages().unwrap()
        );
        let mut steps = 0;
        while db.vacuum_step(1000).unwrap() > 0 {
            steps += 1;
        }
        assert!(steps <= 5, "{steps} steps of 1000 pages");
        db.checkpoint(true).unwrap();
        let after = std::fs::metadata(&path).unwrap().len();
        assert!(after * 10 < full, "{after} of {full} bytes left");
        let wal = dir.path().join("v.sqlite-wal");
        assert_eq!(std::fs::metadata(wal).map_or(0, |m| m.len()), 0);
        assert_eq!(db.totals().unwrap(), Totals::default());
    }

    /// Commits one batch of changes: (key, row, size before).
    fn write(db: &mut Db, rows: &[(&str, Option<Entry>, Option<u64>)]) {
        let mut o = Overlay::default();
        for (key, row, before) in rows {
            o.record(key, row.clone(), *before);
        }
        db.commit(&o).unwrap();
    }

    fn count(db: &Db, table: &str) -> i64 {
        db.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn keys(db: &Db) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        db.scan_keys(Bound::Unbounded, |k, at| {
            out.push((k.to_string(), at));
            true
        })
        .unwrap();
        out
    }

    /// Writes land in the log and are read from it, the fold thread moves
    /// them into `kv` while reads go on seeing them, and a later change
    /// of a key wins over the one being folded.
    #[test]
    fn the_log_is_read_before_and_while_it_is_folded() {
        let dir = crate::testdir::TestDir::new("db-log");
        let path = dir.path().join("l.sqlite");
        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        write(
            &mut db,
            &[("a", entry("1", 0), None), ("b", entry("2", 9), None)],
        );
        assert_eq!((count(&db, "kv_log"), count(&db, "kv")), (2, 0));
        assert_eq!(db.get("a").unwrap(), entry("1", 0));
        assert_eq!(db.value_size("b").unwrap(), Some(1));
        assert_eq!(keys(&db), [("a".into(), 0), ("b".into(), 9)]);
        let r = ReadDb::open(&path).unwrap();
        assert_eq!(
            r.get("b").unwrap(),
            entry("2", 9),
            "another connection reads the log"
        );

        // Hand the tail to the fold thread, then change a key again.
        assert_eq!(db.fold_step(Instant::now(), true), 0);
        assert_eq!(db.unfolded(), 2);
        write(&mut db, &[("a", None, Some(1)), ("c", entry("3", 0), None)]);
        assert_eq!(db.get("a").unwrap(), None, "the newer change wins");
        assert_eq!(keys(&db), [("b".into(), 9), ("c".into(), 0)]);
        let t0 = Instant::now();
        while db.unfolded() > 2 && t0.elapsed() < Duration::from_secs(10) {
            db.fold_step(Instant::now(), false);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(db.unfolded(), 2, "the first fold finished");
        assert_eq!(r.get("a").unwrap(), None, "the log's delete hides kv's row");
        db.fold().unwrap();
        assert_eq!((count(&db, "kv_log"), count(&db, "kv")), (0, 2));
        assert_eq!(db.get("a").unwrap(), None);
        assert_eq!(db.get("c").unwrap(), entry("3", 0));
        assert_eq!(keys(&db), [("b".into(), 9), ("c".into(), 0)]);
        assert_eq!(r.get("c").unwrap(), entry("3", 0));
        assert_eq!(db.totals().unwrap(), Totals { keys: 2, bytes: 4 });
    }

    /// What a crash leaves in the log is folded when the file is opened
    /// again; the purge leaves keys with a logged change alone.
    #[test]
    fn a_crash_leaves_nothing_behind_in_the_log() {
        let dir = crate::testdir::TestDir::new("db-crash");
        let path = dir.path().join("c.sqlite");
        let copy = dir.path().join("copy.sqlite");
        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        write(&mut db, &[("old", entry("1", 5), None)]);
        db.fold().unwrap();
        write(
            &mut db,
            &[
                ("old", entry("2", 0), Some(1)),
                ("new", entry("3", 0), None),
            ],
        );
        assert!(
            db.expired(100, 10).unwrap().is_empty(),
            "old has a newer change"
        );
        // A crash: the files as they are now, nothing folded.
        for ext in ["", "-wal"] {
            let from = format!("{}{ext}", path.display());
            let to = format!("{}{ext}", copy.display());
            if std::path::Path::new(&from).exists() {
                std::fs::copy(from, to).unwrap();
            }
        }
        let again = Db::open(&copy, SyncMode::Normal).unwrap();
        assert_eq!(count(&again, "kv_log"), 0, "folded at open");
        assert_eq!(again.unfolded(), 0);
        assert_eq!(again.get("old").unwrap(), entry("2", 0));
        assert_eq!(again.get("new").unwrap(), entry("3", 0));
        assert_eq!(again.totals().unwrap(), Totals { keys: 2, bytes: 8 });
        assert!(again.expired(100, 10).unwrap().is_empty());
    }

    /// A fold that fails on the fold thread is tried again there, reads
    /// see its changes meanwhile, and a fold on the writer finishes it
    /// without waiting for anything.
    #[test]
    fn a_failed_fold_is_retried_and_never_waited_for() {
        let dir = crate::testdir::TestDir::new("db-badfold");
        let path = dir.path().join("b.sqlite");
        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        db.break_folder(&path);
        write(
            &mut db,
            &[("a", entry("1", 0), None), ("b", entry("2", 0), None)],
        );
        let until_failed = |db: &mut Db, now: Instant| {
            let t0 = Instant::now();
            db.fold_error = None;
            while db.fold_error.is_none() && t0.elapsed() < Duration::from_secs(10) {
                db.fold_step(now, true);
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(db.fold_error.is_some(), "the fold failed");
        };
        until_failed(&mut db, Instant::now());
        assert!(!db.in_flight, "not again at once");
        assert_eq!(db.get("a").unwrap(), entry("1", 0), "still seen");
        write(&mut db, &[("c", entry("3", 0), None)]);
        assert_eq!(db.unfolded(), 3);
        // Not again before FOLD_RETRY; then the same job again.
        db.fold_step(Instant::now(), true);
        assert!(!db.in_flight);
        // (Far enough ahead that the job is also sent a third time.)
        until_failed(&mut db, Instant::now() + FOLD_RETRY * 2);
        assert!(db.in_flight);
        assert_eq!(count(&db, "kv"), 0);
        assert_eq!(db.fold().unwrap(), 3);
        assert_eq!((count(&db, "kv_log"), count(&db, "kv")), (0, 3));
        assert_eq!(db.unfolded(), 0);
        assert_eq!(db.get("c").unwrap(), entry("3", 0));
    }

    /// A reload: the old connection retires (its last fold failed, say),
    /// the successor opens the file and folds what is left; the old one
    /// then writes nothing, even when dropped, and the successor's log
    /// rows get new sequence numbers that no late delete can reach.
    #[test]
    fn a_retired_connection_writes_nothing_more() {
        let dir = crate::testdir::TestDir::new("db-retire");
        let path = dir.path().join("r.sqlite");
        let mut old = Db::open(&path, SyncMode::Normal).unwrap();
        write(&mut old, &[("k", entry("1", 0), None)]);
        let old_seq = old.last_seq;
        old.retire();
        let mut new = Db::open(&path, SyncMode::Normal).unwrap();
        assert_eq!(
            (count(&new, "kv_log"), count(&new, "kv")),
            (0, 1),
            "folded at open"
        );
        write(
            &mut new,
            &[("k", entry("2", 0), Some(1)), ("j", entry("3", 0), None)],
        );
        assert!(new.last_seq > old_seq, "{} after {old_seq}", new.last_seq);
        new.fold().unwrap();
        write(&mut new, &[("j", None, Some(1))]);
        assert_eq!(old.fold().unwrap(), 0, "a retired connection folds nothing");
        drop(old);
        let r = ReadDb::open(&path).unwrap();
        assert_eq!(
            r.get("k").unwrap(),
            entry("2", 0),
            "not the old generation's value"
        );
        assert_eq!(
            count(&new, "kv_log"),
            1,
            "the successor's row is still there"
        );
        assert_eq!(r.get("j").unwrap(), None);
        new.fold().unwrap();
        assert_eq!(r.get("k").unwrap(), entry("2", 0));
        assert_eq!(r.get("j").unwrap(), None);
    }
}
