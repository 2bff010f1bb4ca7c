//! The SQLite database: one table of keys, JSON values and expiry times,
//! in WAL mode. Only the writer thread writes; loading happens at start.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use crate::config::SyncMode;
use crate::store::{Entry, Expired, Map, Overlay};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    expires_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
";

/// Page size of a new database (an existing one keeps its own).
const PAGE_SIZE: u32 = 1024;
/// Page cache of the writer's connection, in KiB.
const CACHE_KIB: u32 = 64 * 1024;

const UPSERT: &str = "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
const DELETE: &str = "DELETE FROM kv WHERE key = ?1";
const PURGE: &str = "DELETE FROM kv WHERE key = ?1 AND expires_at = ?2";

/// An open database connection.
pub struct Db {
    conn: Connection,
}

fn err(what: &str, path: &Path, e: rusqlite::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Db {
    /// Opens (creating if needed) the database with the durability of
    /// `sync`. Another connection may hold it too (the retiring generation
    /// during a reload): writers then wait for each other, up to 5 s.
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
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| err("cannot configure", path, e))?;
        // Small pages: a random update rewrites one page into the WAL. Only
        // a new database takes it (before the switch to WAL).
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
            .map_err(|e| err("cannot configure", path, e))?;
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
        // A large page cache: the writer does not read from the OS.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync_pragma};
             PRAGMA cache_size = -{CACHE_KIB};
             PRAGMA wal_autocheckpoint = 65536;
             {SCHEMA}"
        ))
        .map_err(|e| err("cannot prepare", path, e))?;
        Ok(Db { conn })
    }

    /// Reads every live key. Expired rows are left for the purge.
    pub fn load(&self, now: u64) -> Result<(Map, Expired), String> {
        let mut map = Map::new();
        let mut expired = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT key, value, expires_at FROM kv")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (key, value, at) = row.map_err(|e| e.to_string())?;
            let entry = Entry {
                value: value.into_boxed_str(),
                expires_at: at.max(0) as u64,
            };
            if entry.live(now) {
                map.insert(&key, entry);
            } else {
                expired.push((key.into_boxed_str(), entry.expires_at));
            }
        }
        Ok((map, expired))
    }

    /// Writes a batch's changes in one transaction. When this returns
    /// `Ok`, the batch is as durable as the sync mode promises.
    pub fn commit(&mut self, overlay: &Overlay) -> rusqlite::Result<()> {
        self.in_transaction(|conn| {
            let mut upsert = conn.prepare_cached(UPSERT)?;
            let mut delete = conn.prepare_cached(DELETE)?;
            for (key, entry) in overlay {
                match entry {
                    Some(e) => upsert.execute(params![&**key, &*e.value, e.expires_at as i64])?,
                    None => delete.execute(params![&**key])?,
                };
            }
            Ok(())
        })
    }

    /// Runs `f` in a write transaction (statements cached, unlike
    /// rusqlite's `transaction`, which parses `BEGIN` and `COMMIT` each
    /// time); rolls back if anything fails.
    fn in_transaction(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        let done = f(&self.conn).and_then(|()| {
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        });
        if done.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        done
    }

    /// Deletes keys that are still expired at the given time.
    pub fn purge(&mut self, keys: &[(Box<str>, u64)]) -> rusqlite::Result<()> {
        self.in_transaction(|conn| {
            let mut purge = conn.prepare_cached(PURGE)?;
            for (key, at) in keys {
                purge.execute(params![&**key, *at as i64])?;
            }
            Ok(())
        })
    }

    /// Copies the WAL into the database (and so fsyncs the WAL); never
    /// waits for readers.
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
    }

    /// Test hook: makes every later write fail.
    #[cfg(test)]
    pub fn make_read_only(&self) {
        self.conn.execute_batch("PRAGMA query_only = 1").unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_load_purge() {
        let dir = crate::testdir::TestDir::new("db");
        let path = dir.path().join("t.sqlite");
        let mut db = Db::open(&path, SyncMode::Full).unwrap();
        let mut o = Overlay::new();
        o.insert(
            "a".into(),
            Some(Entry {
                value: "1".into(),
                expires_at: 0,
            }),
        );
        o.insert(
            "b".into(),
            Some(Entry {
                value: "[2]".into(),
                expires_at: 50,
            }),
        );
        db.commit(&o).unwrap();
        let mut o = Overlay::new();
        o.insert("c".into(), None);
        db.commit(&o).unwrap();
        drop(db);

        let mut db = Db::open(&path, SyncMode::Normal).unwrap();
        let (map, expired) = db.load(100).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(&*map.get("a").unwrap().value, "1");
        assert_eq!(expired, vec![("b".into(), 50)]);
        db.purge(&expired).unwrap();
        let (_, expired) = db.load(100).unwrap();
        assert!(expired.is_empty());
        db.checkpoint().unwrap();
    }
}
