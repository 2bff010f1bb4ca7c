//! The writer thread: the only code that changes stored data. It owns the
//! database connection and commits writes in groups.
//!
//! Submissions (the lines of one connection from its first write on, or a
//! whole HTTP body) queue up while a commit is running. The writer then
//! takes everything queued, evaluates it in arrival order against the
//! committed map plus a batch overlay (so `kv.incr` and `kv.cas` are
//! atomic and see earlier writes of the same batch), writes the overlay in
//! one transaction, and only after `COMMIT` returns makes the changes
//! visible to readers, delivers `bus.message` notifications published in
//! the batch, and sends the replies. A batch that fails to commit changes
//! nothing and every request in it is answered with -32020.
//!
//! Between batches it purges expired keys and checkpoints the WAL.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::db::{self, Db};
use crate::handoff::Mode;
use crate::jsonrpc::{self, code, RpcError};
use crate::methods::{eval_message, Env, Note};
use crate::owner::Owner;
use crate::store::{now_ms, Expired, Map, Overlay, View};
use crate::Core;

/// Most submissions evaluated in one batch (one transaction).
const MAX_BATCH: usize = 4096;
/// Most expired keys deleted per purge round.
const MAX_PURGE: usize = 10_000;
/// How often a generation in standby tries to take the database over.
const STANDBY_POLL: Duration = Duration::from_millis(20);

/// How a submission's input is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Newline-separated messages; each reply ends with a newline.
    Lines,
    /// One message (an HTTP body); the reply has no newline.
    Body,
}

/// Work for the writer.
pub struct Submission {
    /// The raw TCP connection (whose subscriptions calls change), or 0.
    pub conn: u64,
    pub kind: Kind,
    pub input: Vec<u8>,
    /// Where the reply goes once the batch has committed.
    pub reply: SyncSender<Vec<u8>>,
}

enum Cmd {
    Submit(Submission),
    /// Acknowledged once everything sent before it is committed and
    /// delivered.
    Barrier(SyncSender<()>),
    /// Runs on the writer thread after everything sent before it.
    Run(Box<dyn FnOnce() + Send>),
    Stop,
}

/// How the writer starts.
pub enum Start {
    /// This generation owns the database, already open and loaded.
    Ready {
        db: Db,
        expired: Expired,
        owner: Owner,
    },
    /// Another process owns it: take it over when it lets go.
    Standby,
}

/// The handle to the writer thread.
pub struct Writer {
    tx: Mutex<Sender<Cmd>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer.
    pub fn spawn(core: Arc<Core>, start: Start) -> Result<Writer, String> {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let mut worker = Worker {
            core,
            db: None,
            owner: None,
            expiry: BTreeSet::new(),
            dirty: false,
            last_batch: 0,
            next_purge: now,
            next_checkpoint: now,
            standby_errors: 0,
        };
        let expired = match start {
            Start::Ready { db, expired, owner } => {
                worker.take_over(db, owner);
                expired
            }
            Start::Standby => Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("rpc-writer".into())
            .spawn(move || worker.run(rx, expired))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Writer {
            tx: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, cmd: Cmd) -> bool {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(cmd)
            .is_ok()
    }

    /// Queues a submission. `false` if the writer has stopped.
    pub fn submit(&self, s: Submission) -> bool {
        self.send(Cmd::Submit(s))
    }

    /// Evaluates `input` in the writer and waits for the reply (blocks).
    pub fn call(&self, conn: u64, kind: Kind, input: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let stopped =
            || RpcError::new(code::STORAGE, "the writer has stopped; nothing was written");
        if !self.submit(Submission {
            conn,
            kind,
            input,
            reply: tx,
        }) {
            return Err(stopped());
        }
        rx.recv().map_err(|_| stopped())
    }

    /// Waits until everything queued so far is committed and delivered.
    pub fn barrier(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.send(Cmd::Barrier(tx)) {
            let _ = rx.recv();
        }
    }

    /// Runs `f` on the writer thread after the work queued so far.
    pub fn run(&self, f: impl FnOnce() + Send + 'static) {
        self.send(Cmd::Run(Box::new(f)));
    }

    /// Commits what is queued and stops the thread.
    pub fn stop(&self) {
        self.send(Cmd::Stop);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                log::error!("the writer thread panicked");
            }
        }
    }
}

struct Worker {
    core: Arc<Core>,
    /// `None` while in standby.
    db: Option<Db>,
    /// The ownership lock; released when the thread ends, after the last
    /// commit.
    owner: Option<Owner>,
    /// Failed attempts to open the database after taking the lock.
    standby_errors: u32,
    /// (expiry, key) of every key written with a TTL; stale pairs (the key
    /// changed since) are skipped when they come due.
    expiry: BTreeSet<(u64, Box<str>)>,
    /// Commits since the last checkpoint.
    dirty: bool,
    /// Submissions in the last batch.
    last_batch: usize,
    next_purge: Instant,
    next_checkpoint: Instant,
}

impl Worker {
    /// Starts serving from an open, loaded database.
    fn take_over(&mut self, db: Db, owner: Owner) {
        self.expiry.clear();
        for (k, e) in self.core.store.read().iter() {
            if e.expires_at != 0 {
                self.expiry.insert((e.expires_at, Box::from(k)));
            }
        }
        self.core.owner_fd.store(owner.fd(), Ordering::Release);
        self.db = Some(db);
        self.owner = Some(owner);
    }

    fn purge_loaded(&mut self, expired: &Expired) {
        if let (Some(db), false) = (&mut self.db, expired.is_empty()) {
            match db.purge(expired) {
                Ok(()) => log::info!("purged {} keys that expired while stopped", expired.len()),
                Err(e) => log::warn!("cannot purge expired keys: {e}"),
            }
        }
    }

    /// In standby: takes the database over once its owner let go.
    fn try_standby(&mut self) {
        if *self.core.gate.read().unwrap_or_else(|e| e.into_inner()) != Mode::Standby {
            return;
        }
        let cfg = &self.core.cfg;
        let owner = match Owner::try_acquire(&Owner::lock_path(&cfg.db)) {
            Ok(Some(o)) => o,
            Ok(None) => return,
            Err(e) => {
                self.standby_error(&e);
                return;
            }
        };
        let loaded = db::Db::open(&cfg.db, cfg.sync).and_then(|db| {
            let (map, expired) = db.load(now_ms())?;
            Ok((db, map, expired))
        });
        let (db, map, expired) = match loaded {
            Ok(l) => l,
            Err(e) => {
                self.standby_error(&e);
                return;
            }
        };
        self.core.store.replace(map);
        self.take_over(db, owner);
        self.purge_loaded(&expired);
        let mut gate = self.core.gate.write().unwrap_or_else(|e| e.into_inner());
        if *gate == Mode::Standby {
            *gate = Mode::Live;
        }
        log::info!(
            "the other owner of {} let go: {} keys loaded, serving",
            self.core.cfg.db.display(),
            self.core.store.len()
        );
    }

    fn standby_error(&mut self, e: &str) {
        if self.standby_errors % 250 == 0 {
            log::error!("standby: cannot take over the database: {e}");
        }
        self.standby_errors += 1;
    }

    fn run(mut self, rx: Receiver<Cmd>, expired: Expired) {
        self.purge_loaded(&expired);
        loop {
            let wait = if self.db.is_none() {
                STANDBY_POLL
            } else {
                self.next_purge
                    .min(self.next_checkpoint)
                    .saturating_duration_since(Instant::now())
            };
            let first = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) if self.db.is_none() => {
                    self.try_standby();
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Submit(s) => batch.push(s),
                    Cmd::Barrier(ack) => {
                        self.commit(std::mem::take(&mut batch));
                        let _ = ack.send(());
                    }
                    Cmd::Run(f) => {
                        self.commit(std::mem::take(&mut batch));
                        if catch_unwind(AssertUnwindSafe(f)).is_err() {
                            log::error!("a task on the writer thread panicked");
                        }
                    }
                    Cmd::Stop => {
                        self.commit(batch);
                        self.checkpoint();
                        return;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.last_batch = batch.len();
            self.commit(batch);
            self.housekeeping();
        }
    }

    /// Evaluates, commits and answers one batch.
    fn commit(&mut self, subs: Vec<Submission>) {
        if subs.is_empty() {
            return;
        }
        let core = &*self.core;
        let now = now_ms();
        let mut overlay = Overlay::new();
        let mut notes = Vec::new();
        let mut outs = Vec::with_capacity(subs.len());
        {
            let map = core.store.read();
            for sub in &subs {
                let mut out = Vec::new();
                let run = catch_unwind(AssertUnwindSafe(|| {
                    evaluate(core, &map, &mut overlay, &mut notes, now, sub, &mut out)
                }));
                if run.is_err() {
                    log::error!("a request panicked in the writer; answering it with -32603");
                    out.clear();
                    answer_all(
                        core,
                        sub,
                        &RpcError::new(code::INTERNAL_ERROR, "internal error"),
                        &mut out,
                    );
                }
                outs.push(out);
            }
        }
        if !overlay.is_empty() {
            let writes = overlay.len() as u64;
            let committed = match &mut self.db {
                Some(db) => db.commit(&overlay),
                None => Err(rusqlite::Error::InvalidQuery),
            };
            match committed {
                Ok(()) => {
                    for (k, e) in &overlay {
                        if let Some(e) = e {
                            if e.expires_at != 0 {
                                self.expiry.insert((e.expires_at, k.clone()));
                            }
                        }
                    }
                    core.store.apply(overlay);
                    self.dirty = true;
                    core.stats.commits.fetch_add(1, Ordering::Relaxed);
                    core.stats.writes.fetch_add(writes, Ordering::Relaxed);
                }
                Err(e) => {
                    log::error!("commit of {writes} changes failed, answering -32020: {e}");
                    core.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    let err = RpcError::new(
                        code::STORAGE,
                        format!("storage error, nothing was written: {e}"),
                    );
                    notes.clear();
                    for (sub, out) in subs.iter().zip(outs.iter_mut()) {
                        out.clear();
                        answer_all(core, sub, &err, out);
                    }
                }
            }
        }
        for note in &notes {
            core.deliver(note);
        }
        for (sub, out) in subs.into_iter().zip(outs) {
            let _ = sub.reply.send(out);
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_purge {
            self.purge();
            self.next_purge = Instant::now() + self.core.cfg.purge_interval();
        }
        if now >= self.next_checkpoint {
            self.checkpoint();
            self.next_checkpoint = Instant::now() + self.core.cfg.checkpoint_interval();
        }
    }

    fn checkpoint(&mut self) {
        if let (true, Some(db)) = (self.dirty, &self.db) {
            match db.checkpoint() {
                Ok(()) => self.dirty = false,
                Err(e) => log::warn!("WAL checkpoint failed: {e}"),
            }
        }
    }

    /// Deletes keys whose TTL has passed, from disk then from memory.
    fn purge(&mut self) {
        let now = now_ms();
        let mut due = Vec::new();
        while due.len() < MAX_PURGE {
            match self.expiry.first() {
                Some((at, _)) if *at <= now => {
                    if let Some(pair) = self.expiry.pop_first() {
                        due.push(pair);
                    }
                }
                _ => break,
            }
        }
        if due.is_empty() {
            return;
        }
        let keys: Vec<(Box<str>, u64)> = {
            let map = self.core.store.read();
            due.into_iter()
                .filter(|(at, k)| map.get(k).is_some_and(|e| e.expires_at == *at))
                .map(|(at, k)| (k, at))
                .collect()
        };
        let Some(db) = &mut self.db else {
            return;
        };
        if keys.is_empty() {
            return;
        }
        match db.purge(&keys) {
            Ok(()) => {
                self.core.store.remove_expired(&keys);
                self.dirty = true;
                self.core
                    .stats
                    .purged
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                log::warn!(
                    "purging {} expired keys failed, will retry: {e}",
                    keys.len()
                );
                self.expiry.extend(keys.into_iter().map(|(k, at)| (at, k)));
            }
        }
    }
}

/// Evaluates one submission into `out`.
fn evaluate(
    core: &Core,
    map: &Map,
    overlay: &mut Overlay,
    notes: &mut Vec<Note>,
    now: u64,
    sub: &Submission,
    out: &mut Vec<u8>,
) {
    let mut one = |text: &[u8], out: &mut Vec<u8>| {
        let mut env = Env {
            core,
            view: View::Write {
                map,
                overlay: &mut *overlay,
            },
            now,
            conn: sub.conn,
            later: Some(&mut *notes),
            subscribed: false,
        };
        if text.len() > core.cfg.max_line_bytes {
            jsonrpc::write_error(out, None, &crate::too_large(core));
            return true;
        }
        let msg = jsonrpc::parse(text, core.cfg.max_batch);
        eval_message(&mut env, &msg, out)
    };
    match sub.kind {
        Kind::Body => {
            one(&sub.input, out);
        }
        Kind::Lines => {
            for line in crate::raw::lines(&sub.input) {
                if one(line, out) {
                    out.push(b'\n');
                }
            }
        }
    }
}

/// Answers every request of a submission with the same error.
fn answer_all(core: &Core, sub: &Submission, err: &RpcError, out: &mut Vec<u8>) {
    let one = |text: &[u8], out: &mut Vec<u8>| {
        let msg = jsonrpc::parse(text, core.cfg.max_batch);
        let before = out.len();
        jsonrpc::write_all_errors(out, &msg, err);
        out.len() > before
    };
    match sub.kind {
        Kind::Body => {
            one(&sub.input, out);
        }
        Kind::Lines => {
            for line in crate::raw::lines(&sub.input) {
                if one(line, out) {
                    out.push(b'\n');
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::core;

    fn ready(dir: &crate::testdir::TestDir, read_only: bool) -> Start {
        let path = dir.path().join("w.sqlite");
        let db = Db::open(&path, crate::config::SyncMode::Normal).unwrap();
        if read_only {
            db.make_read_only();
        }
        let owner = Owner::try_acquire(&Owner::lock_path(&path))
            .unwrap()
            .unwrap();
        Start::Ready {
            db,
            expired: Vec::new(),
            owner,
        }
    }

    fn reply(v: Vec<u8>) -> serde_json::Value {
        serde_json::from_slice(&v).unwrap()
    }

    #[test]
    fn commits_in_groups_and_reports_storage_errors() {
        let (core, dir) = core();
        let writer = Writer::spawn(core.clone(), ready(&dir, false)).unwrap();
        let set = br#"{"jsonrpc":"2.0","method":"kv.set","params":["a",1],"id":1}"#.to_vec();
        let r = reply(writer.call(0, Kind::Body, set).unwrap());
        assert_eq!(r["result"], true);
        assert_eq!(
            &*core.store.read().get("a").unwrap().value,
            "1",
            "visible once committed"
        );

        // Many submissions at once: replies in order, counter exact.
        let mut waits = Vec::new();
        for i in 0..200 {
            let (tx, rx) = mpsc::sync_channel(1);
            let line = format!(r#"{{"jsonrpc":"2.0","method":"kv.incr","params":["n"],"id":{i}}}"#);
            writer.submit(Submission {
                conn: 0,
                kind: Kind::Lines,
                input: line.into_bytes(),
                reply: tx,
            });
            waits.push(rx);
        }
        for (i, rx) in waits.into_iter().enumerate() {
            let v = reply(rx.recv().unwrap());
            assert_eq!(v["result"], i as i64 + 1);
        }
        let commits = core.stats.commits.load(Ordering::Relaxed);
        assert!(
            commits < 201,
            "{commits} commits for 201 writes: not grouped"
        );

        // A failing commit changes nothing and answers -32020.
        let (tx, rx) = mpsc::sync_channel(1);
        writer.run(move || tx.send(()).unwrap());
        writer.barrier();
        rx.recv().unwrap();
        writer.stop();
        let writer = Writer::spawn(core.clone(), ready(&dir, true)).unwrap();
        let set = br#"[{"jsonrpc":"2.0","method":"kv.set","params":["a",2],"id":1},{"jsonrpc":"2.0","method":"kv.get","params":["a"],"id":2}]"#.to_vec();
        let r = reply(writer.call(0, Kind::Body, set).unwrap());
        assert_eq!(r[0]["error"]["code"], code::STORAGE);
        assert_eq!(r[1]["error"]["code"], code::STORAGE);
        assert_eq!(
            &*core.store.read().get("a").unwrap().value,
            "1",
            "unchanged"
        );
        writer.stop();
    }
}
