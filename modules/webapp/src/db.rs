//! The message store: one SQLite file in WAL mode, a small pool of
//! connections, the schema and its migrations.
//!
//! Every call blocks (disk, locks), so it runs only on the host's worker
//! pool, never on an event loop. Pool threads are shared by all modules,
//! so connections are not tied to threads: a call takes an idle connection
//! (or opens one), uses it and puts it back; at most `pool_size` stay open
//! while idle. [`Store::close`] (from `Handler::stop`) closes them all.
//!
//! ## Two generations, one file
//!
//! With `overlap` reload the old and the new generation run side by side
//! for a moment, each with its own connections to the same file. SQLite
//! makes that safe with WAL (readers never block the writer), a busy
//! timeout (writers queue instead of failing) and its file locks, which
//! work between connections of one SQLite library. That last point is why
//! the workspace links the system's shared `libsqlite3`: each generation is
//! a fresh copy of this module's library, and copies of a *bundled* SQLite
//! would not know each other's POSIX locks (closing a file in one drops the
//! other's locks; opening the `-shm` index in one resets it under the
//! other), the "multiple copies of SQLite in one process" corruption case
//! of SQLite's documentation. [`sqlite_is_shared`] checks this at run time,
//! and the manifest falls back to `exclusive` reload if SQLite was compiled
//! into the module after all.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::config::{Config, Synchronous};
use crate::message::{Message, NewMessage};

/// The schema, one step per version (`PRAGMA user_version` holds how many
/// were applied). Append steps; never edit one that shipped.
const MIGRATIONS: &[&str] = &[
    // 1: messages. AUTOINCREMENT: ids are never reused, so `before=<id>`
    // paging and cached links stay right after deletes.
    "CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        author TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );",
];

/// A database failure, as the app answers it.
#[derive(Debug)]
pub enum DbError {
    /// Another writer held the database longer than the busy timeout:
    /// answer 503, the client may retry.
    Busy,
    /// Anything else: answer 500 and log it.
    Other(rusqlite::Error),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                DbError::Busy
            }
            _ => DbError::Other(e),
        }
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Busy => f.write_str("database busy"),
            DbError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// The message store of one generation.
pub struct Store {
    path: PathBuf,
    busy_timeout: Duration,
    synchronous: Synchronous,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
    /// Held around every write: this generation's writers queue here, in
    /// order, instead of in SQLite's busy handler, which polls with sleeps
    /// of up to 100 ms. SQLite's own lock still orders them against the
    /// other generation during a reload.
    writer: Mutex<()>,
    closed: AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the database, switches it to WAL and
    /// brings the schema up to date. Fails when the file cannot be opened
    /// or was written by a newer version of this module.
    pub fn open(cfg: &Config) -> Result<Store, String> {
        if let Some(dir) = cfg.database.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let store = Store {
            path: cfg.database.clone(),
            busy_timeout: Duration::from_millis(cfg.busy_timeout_ms),
            synchronous: cfg.synchronous,
            max_idle: cfg.pool_size,
            idle: Mutex::new(Vec::new()),
            writer: Mutex::new(()),
            closed: AtomicBool::new(false),
        };
        let mut conn = store
            .connect()
            .map_err(|e| format!("database {}: {e}", store.path.display()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| format!("database {}: cannot enable WAL: {e}", store.path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "database {}: journal mode is {mode}, WAL refused",
                store.path.display()
            ));
        }
        migrate(&mut conn).map_err(|e| format!("database {}: {e}", store.path.display()))?;
        store.lock().push(conn);
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "synchronous", self.synchronous.pragma())?;
        Ok(conn)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock cannot leave the Vec half-changed.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with a pooled connection.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        let pooled = self.lock().pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = f(&conn);
        if !self.closed.load(Ordering::Acquire) {
            let mut idle = self.lock();
            if idle.len() < self.max_idle {
                idle.push(conn);
            }
        }
        Ok(result?)
    }

    /// Runs a write with the writer lock held.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        let _turn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.with(f)
    }

    /// Stores a message; returns it with its id and time.
    pub fn insert(&self, m: &NewMessage) -> Result<Message, DbError> {
        self.write(|c| {
            c.prepare_cached(
                "INSERT INTO messages (author, text) VALUES (?1, ?2)
                 RETURNING id, author, text, created_at",
            )?
            .query_row(params![m.author, m.text], row_to_message)
        })
    }

    /// Up to `limit` messages, newest first, older than id `before` if
    /// given.
    pub fn list(&self, limit: u32, before: Option<i64>) -> Result<Vec<Message>, DbError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, author, text, created_at FROM messages
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows =
                stmt.query_map(params![before.unwrap_or(i64::MAX), limit], row_to_message)?;
            rows.collect()
        })
    }

    /// The message with this id.
    pub fn get(&self, id: i64) -> Result<Option<Message>, DbError> {
        self.with(|c| {
            c.prepare_cached("SELECT id, author, text, created_at FROM messages WHERE id = ?1")?
                .query_row(params![id], row_to_message)
                .optional()
        })
    }

    /// Deletes a message; `false` when there was none.
    pub fn delete(&self, id: i64) -> Result<bool, DbError> {
        self.write(|c| {
            let n = c
                .prepare_cached("DELETE FROM messages WHERE id = ?1")?
                .execute(params![id])?;
            Ok(n > 0)
        })
    }

    /// How many messages there are.
    pub fn count(&self) -> Result<u64, DbError> {
        self.with(|c| {
            c.prepare_cached("SELECT count(*) FROM messages")?
                .query_row([], |r| r.get(0))
        })
    }

    /// Closes every idle connection; connections in use are closed when
    /// they come back. Called when the generation retires.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let conns = std::mem::take(&mut *self.lock());
        for c in conns {
            if let Err((_, e)) = c.close() {
                log::warn!("closing {}: {e}", self.path.display());
            }
        }
    }
}

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        author: r.get(1)?,
        text: r.get(2)?,
        created_at: r.get(3)?,
    })
}

/// Applies the migrations this database lacks, in one write transaction
/// (so two generations starting at once cannot both apply a step).
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    let version: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if version > MIGRATIONS.len() {
        return Err(format!(
            "schema version {version} is newer than this module knows ({}); refusing to touch it",
            MIGRATIONS.len()
        ));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(step)
            .map_err(|e| format!("migration {}: {e}", i + 1))?;
        log::info!("database schema migrated to version {}", i + 1);
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| e.to_string())
}

/// The linked SQLite's version, for `STATUS`.
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// Whether SQLite's code lives in a shared library of its own (one copy
/// per process), rather than inside this module's file (one copy per
/// generation). Asks the dynamic linker which object holds
/// `sqlite3_libversion`.
pub fn sqlite_is_shared() -> bool {
    let sqlite = rusqlite::ffi::sqlite3_libversion as *const libc::c_void;
    let ours = sqlite_is_shared as *const libc::c_void;
    let object_of = |addr: *const libc::c_void| {
        // SAFETY: Dl_info is plain old data (pointers and integers); all-zero is a valid value.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr only reads the loader's tables and fills `info`.
        let found = unsafe { libc::dladdr(addr, &mut info) } != 0;
        found.then_some(info.dli_fbase)
    };
    match (object_of(sqlite), object_of(ours)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_config(tag: &str) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "webapp-db-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Config::from_json(&serde_json::json!({}), &dir).unwrap()
    }

    fn msg(author: &str, text: &str) -> NewMessage {
        NewMessage {
            author: author.into(),
            text: text.into(),
        }
    }

    #[test]
    fn stores_lists_pages_deletes() {
        let cfg = temp_config("crud");
        let s = Store::open(&cfg).unwrap();
        let a = s.insert(&msg("a", "one")).unwrap();
        let b = s.insert(&msg("b", "two")).unwrap();
        let c = s.insert(&msg("c", "three")).unwrap();
        assert!(a.id < b.id && b.id < c.id);
        assert!(c.created_at.ends_with('Z') && c.created_at.contains('T'));
        let ids = |v: Vec<Message>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(s.list(10, None).unwrap()), [c.id, b.id, a.id]);
        assert_eq!(ids(s.list(2, None).unwrap()), [c.id, b.id]);
        assert_eq!(ids(s.list(2, Some(b.id)).unwrap()), [a.id]);
        assert_eq!(s.get(b.id).unwrap(), Some(b.clone()));
        assert!(s.delete(c.id).unwrap());
        assert!(!s.delete(c.id).unwrap());
        assert_eq!(s.get(c.id).unwrap(), None);
        assert_eq!(s.count().unwrap(), 2);
        // Ids are not reused after deleting the newest.
        assert!(s.insert(&msg("d", "four")).unwrap().id > c.id);
        s.close();

        // Reopening keeps everything and does not migrate twice.
        let s = Store::open(&cfg).unwrap();
        assert_eq!(s.count().unwrap(), 3);
        s.close();
        let _ = std::fs::remove_dir_all(cfg.database.parent().unwrap());
    }

    #[test]
    fn links_the_shared_sqlite() {
        assert!(
            sqlite_is_shared(),
            "SQLite {} is compiled in",
            sqlite_version()
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let cfg = temp_config("newer");
        Store::open(&cfg).unwrap().close();
        let c = Connection::open(&cfg.database).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Store::open(&cfg).err().unwrap();
        assert!(err.contains("schema version 99"), "{err}");
        let _ = std::fs::remove_dir_all(cfg.database.parent().unwrap());
    }
}
