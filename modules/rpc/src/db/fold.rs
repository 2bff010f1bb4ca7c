//! The fold thread (`rpc-fold`): moves the write log's changes into the
//! key table (see [`crate::kv_log`]) on its own SQLite connection, so
//! that the writer thread goes on evaluating and committing batches
//! while the b-tree work of a fold runs on another core.
//!
//! A fold job is a frozen tail (the last change per key, shared with the
//! writer, whose reads still see it) and the log sequence it covers. The
//! thread writes it in key order, in transactions of [`CHUNK`] keys, each
//! taken under the write turn shared with the writer's connection (so
//! the writer waits for at most one chunk, never for SQLite's busy
//! sleeps), then deletes the log rows it covered. A crash between chunks
//! leaves every change still in the log, and opening the database folds
//! it again (writing a key's last change twice is harmless).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, MutexGuard};
use rusqlite::{params, Connection};

use super::{transact, write_row, DELETE, UPSERT};
use crate::entry::Row;
use crate::kv_log::Tail;

/// Keys per fold transaction: short enough that a commit of the writer
/// waits about a millisecond for the turn, long enough that neighbouring
/// keys share their pages within one transaction.
pub const CHUNK: usize = 256;

/// A tail to fold, and the last log sequence it covers.
#[derive(Clone)]
pub struct Job {
    pub rows: Arc<Tail>,
    pub upto: i64,
}

/// The handle to the fold thread; dropping it lets the thread finish its
/// job and joins it.
pub struct Folder {
    jobs: Option<Sender<Job>>,
    done: Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

impl Folder {
    /// Starts the thread on `conn` (a second connection to the database).
    pub fn spawn(conn: Connection, turn: Arc<Mutex<()>>) -> std::io::Result<Folder> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rpc-fold".into())
            .spawn(move || {
                for job in rx {
                    let rows = job.rows.sorted();
                    let r = fold_rows(&conn, &turn, &rows, job.upto).map_err(|e| e.to_string());
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Folder {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands a job to the thread; `false` if it has stopped.
    pub fn send(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok())
    }

    /// The outcome of the job sent last, if it has finished.
    pub fn try_done(&self) -> Option<Result<(), String>> {
        self.done.try_recv().ok()
    }

    /// Waits for the outcome of the job sent last (an error if the thread
    /// is gone).
    pub fn wait_done(&self) -> Result<(), String> {
        self.done
            .recv()
            .unwrap_or_else(|_| Err("the fold thread has stopped".into()))
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the fold thread panicked");
            }
        }
    }
}

/// Writes `rows` (in key order) into `kv` a chunk at a time under `turn`,
/// then deletes the log rows up to `upto`.
pub fn fold_rows(
    conn: &Connection,
    turn: &Mutex<()>,
    rows: &[(&str, &Row)],
    upto: i64,
) -> rusqlite::Result<()> {
    for part in rows.chunks(CHUNK) {
        let guard = turn.lock();
        transact(conn, |c| {
            let mut upsert = c.prepare_cached(UPSERT)?;
            let mut delete = c.prepare_cached(DELETE)?;
            for (key, row) in part {
                match row {
                    Some(e) => write_row(&mut upsert, key, e)?,
                    None => delete.execute(params![key])?,
                };
            }
            Ok(())
        })?;
        // Fair: a writer waiting for the turn gets it before the next chunk.
        MutexGuard::unlock_fair(guard);
    }
    let _turn = turn.lock();
    transact(conn, |c| {
        c.prepare_cached("DELETE FROM kv_log WHERE seq <= ?1")?
            .execute([upto])?;
        Ok(())
    })
}
