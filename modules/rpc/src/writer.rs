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
//! A submission's reply is bounded: once it passes the submission's
//! `budget`, no further line of it is evaluated, and the reply says how
//! much of the input it answered ([`Reply::taken`]); the caller hands the
//! rest in again later. So a connection that pipelines thousands of reads
//! of a big value behind one write never builds a reply of gigabytes.
//!
//! Watches ([`crate::watch`]): while anyone watches, a batch keeps its
//! sets and deletes as events (in revision order) and hands them to the
//! watches after `COMMIT`, before the replies; a purge hands over its
//! expiries the same way; and between batches the writer reads the next
//! chunk of each watch's initial values.
//!
//! A commit appends the batch's key changes to the write log
//! ([`crate::kv_log`]); between batches the writer folds the log into the
//! key table once it is big or old enough, or as soon as no work is
//! queued for [`FOLD_IDLE`], and always before it stops.
//!
//! Between batches it purges expired keys (found through SQLite's expiry
//! index), gives free pages back to the file system a step at a time
//! (incremental vacuum, only when no work is queued), and checkpoints the
//! WAL — truncating it when idle. These run only while the generation is
//! live: a frozen one must not change the database under its successor.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access::Peer;

use crate::access::Who;
use crate::bus::Note;
use crate::core::{too_large, Core};
use crate::db::{self, Db};
use crate::entry::{now_ms, Event, Op, Overlay};
use crate::host::{wait, HostApi};
use crate::jsonrpc::{self, code, RpcError};
use crate::methods::{eval_message, Env};
use crate::owner::Owner;
use crate::store::{Reader, View};
use crate::streams::Runner;
use crate::types::{Kind, Mode, Reply};

/// Most submissions evaluated in one batch (one transaction).
const MAX_BATCH: usize = 4096;
/// Most expired keys deleted per purge round.
const MAX_PURGE: usize = 10_000;
/// How often a generation in standby tries to take the database over.
const STANDBY_POLL: Duration = Duration::from_millis(20);

/// How long the writer waits for work before a step of vacuum while the
/// database has free pages (so that writes are never held up by it).
const VACUUM_PAUSE: Duration = Duration::from_millis(2);
/// How long the writer waits for work before it folds the write log
/// (under steady load the log's own limits fold it: see
/// [`crate::kv_log::Tail::due`]).
const FOLD_IDLE: Duration = Duration::from_millis(20);

/// Work for the writer.
pub struct Submission {
    /// The raw TCP connection (whose subscriptions calls change), or 0.
    pub conn: u64,
    /// Who the calls act as (checked per call, here in the writer).
    pub who: Who,
    /// The peer's address, for a `sys.auth` in a batch.
    pub peer: Peer,
    pub kind: Kind,
    pub input: Vec<u8>,
    /// Reply bytes after which no further line is evaluated (`Lines`
    /// only; the first line always is).
    pub budget: usize,
    /// Where the reply goes once the batch has committed.
    pub reply: SyncSender<Reply>,
}

enum Cmd {
    Submit(Submission),
    /// Acknowledged once everything sent before it is committed and
    /// delivered.
    Barrier(SyncSender<()>),
    /// Runs on the writer thread after everything sent before it.
    Run(Box<dyn FnOnce() + Send>),
    /// Folds the write log and retires the database (a reload hands it
    /// over); acknowledged when done.
    Handover(SyncSender<()>),
    Stop,
}

/// How the writer starts.
// Made once per generation and moved into the writer: its size is no cost.
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// This generation owns the database, already open.
    Ready { db: Db, owner: Owner },
    /// Another process owns it: take it over when it lets go.
    Standby,
}

/// The handle to the writer thread.
pub struct Writer {
    host: &'static dyn HostApi,
    tx: Mutex<Sender<Cmd>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer.
    pub fn spawn(core: Arc<Core>, start: Start) -> Result<Writer, String> {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        let host = core.host;
        // Timers and closing connections hand the streams' work to this
        // thread through the same channel as [`Writer::run`].
        let runner_tx = Mutex::new(tx.clone());
        let runner: Runner = Box::new(move |f| {
            runner_tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Cmd::Run(f))
                .is_ok()
        });
        core.streams.start(Arc::downgrade(&core) as _, runner);
        let mut worker = Worker {
            core,
            db: None,
            owner: None,
            disk: Disk {
                dirty: false,
                truncated: true,
                vacuum: false,
            },
            last_batch: 0,
            next_purge: now,
            next_checkpoint: now,
            last_work: now,
            standby_errors: 0,
        };
        if let Start::Ready { db, owner } = start {
            worker.take_over(db, owner)?;
        }
        let thread = std::thread::Builder::new()
            .name("rpc-writer".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Writer {
            host,
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

    /// Evaluates `input` in the writer and waits for the reply (blocks;
    /// the wait is not counted as a hang by the host). `budget` as in
    /// [`Submission::budget`]; `usize::MAX` answers every line.
    pub fn call(
        &self,
        conn: u64,
        who: Who,
        peer: Peer,
        kind: Kind,
        input: Vec<u8>,
        budget: usize,
    ) -> Result<Reply, RpcError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let stopped =
            || RpcError::new(code::STORAGE, "the writer has stopped; nothing was written");
        if !self.submit(Submission {
            conn,
            who,
            peer,
            kind,
            input,
            budget,
            reply: tx,
        }) {
            return Err(stopped());
        }
        wait(self.host, || rx.recv()).map_err(|_| stopped())
    }

    /// Waits until everything queued so far is committed and delivered.
    pub fn barrier(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.send(Cmd::Barrier(tx)) {
            let _ = wait(self.host, || rx.recv());
        }
    }

    /// Folds the write log and retires the database, after the work
    /// queued so far, and waits for it: from then on this generation
    /// writes nothing to the file (its successor's, see
    /// [`crate::db::Db::retire`]) unless the handover is abandoned.
    pub fn handover(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.send(Cmd::Handover(tx)) {
            let _ = wait(self.host, || rx.recv());
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

/// The database's upkeep state: what checkpoints and vacuum steps have
/// to do.
struct Disk {
    /// Written since the last checkpoint.
    dirty: bool,
    /// Whether the WAL was emptied since the last write.
    truncated: bool,
    /// Whether the database may have free pages to give back.
    vacuum: bool,
}

impl Disk {
    /// The database was written (a commit, a fold, a purge, a stream
    /// expiry): a checkpoint is due, the WAL is not empty, and pages may
    /// have been freed.
    fn wrote(&mut self) {
        self.dirty = true;
        self.truncated = false;
        self.vacuum = true;
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
    /// What the upkeep between batches has to do.
    disk: Disk,
    /// Submissions in the last batch.
    last_batch: usize,
    next_purge: Instant,
    next_checkpoint: Instant,
    /// When the last batch was committed.
    last_work: Instant,
}

impl Worker {
    /// Starts serving from an open database: its totals, an empty cache.
    fn take_over(&mut self, db: Db, owner: Owner) -> Result<(), String> {
        let totals = db
            .totals()
            .map_err(|e| format!("cannot read the totals of the database: {e}"))?;
        self.core.store.reset(totals);
        let rev = db
            .revision()
            .map_err(|e| format!("cannot read the last revision of the database: {e}"))?;
        self.core.store.set_revision(rev);
        self.disk.vacuum = db.free_pages().unwrap_or(0) > 0;
        self.core.owner_fd.store(owner.fd(), Ordering::Release);
        self.db = Some(db);
        self.owner = Some(owner);
        self.core.streams.open(&*self.core);
        Ok(())
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
        let taken = db::Db::open(&cfg.db, cfg.sync).and_then(|db| self.take_over(db, owner));
        if let Err(e) = taken {
            self.standby_error(&e);
            return;
        }
        let mut gate = self.core.gate.write().unwrap_or_else(|e| e.into_inner());
        if *gate == Mode::Standby {
            *gate = Mode::Live;
        }
        log::info!(
            "the other owner of {} let go: serving its {} keys",
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

    fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let unfolded = self.db.as_ref().is_some_and(|db| db.unfolded() > 0);
            let wait = if self.db.is_none() {
                STANDBY_POLL
            } else if (self.disk.vacuum || self.core.watches.scanning()) && self.live() {
                VACUUM_PAUSE
            } else {
                let wait = self
                    .next_purge
                    .min(self.next_checkpoint)
                    .saturating_duration_since(Instant::now());
                if unfolded {
                    wait.min(FOLD_IDLE)
                } else {
                    wait
                }
            };
            let first = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) if self.db.is_none() => {
                    self.try_standby();
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.housekeeping(true);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Under load (the last batch held several connections'
            // writes), let more gather for `commit_delay_us`: one commit,
            // and with `sync = "full"` one fsync, serves them all.
            let gather = if self.last_batch > 1 {
                Duration::from_micros(self.core.cfg.commit_delay_us)
            } else {
                Duration::ZERO
            };
            let deadline = Instant::now() + gather;
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Submit(s) => batch.push(s),
                    Cmd::Barrier(ack) => {
                        self.commit(std::mem::take(&mut batch));
                        let _ = ack.send(());
                    }
                    Cmd::Handover(ack) => {
                        self.commit(std::mem::take(&mut batch));
                        self.fold();
                        if let Some(db) = &mut self.db {
                            db.retire();
                        }
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
                        self.fold();
                        self.checkpoint(false);
                        return;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok().or_else(|| {
                        let left = deadline.saturating_duration_since(Instant::now());
                        (!left.is_zero() && !batch.is_empty())
                            .then(|| rx.recv_timeout(left).ok())
                            .flatten()
                    });
                }
            }
            self.last_batch = batch.len();
            self.commit(batch);
            self.last_work = Instant::now();
            self.housekeeping(false);
        }
    }

    /// Evaluates, commits and answers one batch.
    fn commit(&mut self, subs: Vec<Submission>) {
        if subs.is_empty() {
            return;
        }
        let core = &*self.core;
        let now = now_ms();
        let mut overlay = Overlay::default();
        if core.watches.active() {
            overlay.keep_events();
        }
        let mut notes = Vec::new();
        let mut replies = Vec::with_capacity(subs.len());
        {
            let reader = core.store.read();
            let mut batch = Batch {
                core,
                reader: &reader,
                db: self.db.as_ref(),
                overlay: &mut overlay,
                notes: &mut notes,
                now,
            };
            for sub in &subs {
                let mut reply = Reply::default();
                let run = catch_unwind(AssertUnwindSafe(|| batch.evaluate(sub, &mut reply)));
                if run.is_err() {
                    log::error!("a request panicked in the writer; answering it with -32603");
                    let taken = reply.taken.max(first_line(sub));
                    reply = Reply::default();
                    answer_all(
                        core,
                        sub,
                        taken,
                        &RpcError::new(code::INTERNAL_ERROR, "internal error"),
                        &mut reply.out,
                    );
                    reply.taken = taken;
                }
                replies.push(reply);
            }
        }
        let mut events = overlay.take_events();
        let watches = overlay.take_watches();
        if overlay.is_empty() {
            core.store.fill(overlay.take_fills());
        } else {
            let writes = overlay.len() as u64;
            let committed = match &mut self.db {
                Some(db) => db.commit(&overlay),
                None => Err(rusqlite::Error::InvalidQuery),
            };
            match committed {
                Ok(()) => {
                    core.store.apply(overlay);
                    self.disk.wrote();
                    core.stats.commits.fetch_add(1, Ordering::Relaxed);
                    core.stats.writes.fetch_add(writes, Ordering::Relaxed);
                }
                Err(e) => {
                    log::error!("commit of {writes} changes failed, answering -32020: {e}");
                    core.stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                    // What was read from SQLite is still the committed state.
                    core.store.fill(overlay.take_fills());
                    let err = RpcError::new(
                        code::STORAGE,
                        format!("storage error, nothing was written: {e}"),
                    );
                    notes.clear();
                    events.clear();
                    core.watches.drop_ids(&watches);
                    core.inbox.settle(core, false);
                    for (sub, reply) in subs.iter().zip(replies.iter_mut()) {
                        reply.out.clear();
                        answer_all(core, sub, reply.taken, &err, &mut reply.out);
                    }
                    core.streams.failed(core);
                }
            }
        }
        core.inbox.settle(core, true);
        for note in &notes {
            core.deliver(note);
        }
        core.streams.after_batch(core);
        core.watches.publish(core, &events);
        for (sub, reply) in subs.into_iter().zip(replies) {
            let _ = sub.reply.send(reply);
        }
    }

    /// Whether this generation serves (housekeeping changes the database
    /// only then).
    fn live(&self) -> bool {
        matches!(self.core.gate.try_read().as_deref(), Ok(Mode::Live))
    }

    /// Between batches (`idle`: no work came for a while).
    fn housekeeping(&mut self, idle: bool) {
        if self.db.is_none() || !self.live() {
            return;
        }
        if let Some(db) = &mut self.db {
            // Live again after a handover: it was abandoned.
            db.unretire();
        }
        let now = Instant::now();
        let quiet = idle && now.saturating_duration_since(self.last_work) >= FOLD_IDLE;
        if let Some(db) = &mut self.db {
            if db.fold_step(now, quiet) > 0 {
                self.disk.wrote();
            }
        }
        if now >= self.next_purge {
            self.purge();
            self.next_purge = Instant::now() + self.core.cfg.purge_interval();
        }
        if self.disk.vacuum && idle {
            self.vacuum_step();
        }
        if let Some(db) = &mut self.db {
            if self
                .core
                .streams
                .expire(&*self.core, |ops| db.write_streams(ops))
            {
                self.disk.wrote();
            }
        }
        if self.core.watches.scanning() && self.fold() {
            if let Some(db) = &self.db {
                self.core.watches.scan_step(&*self.core, db, now_ms());
            }
        }
        if now >= self.next_checkpoint {
            // Idle for a whole interval: empty the WAL file too.
            let idle = !self.disk.dirty && !self.disk.truncated && !self.disk.vacuum;
            self.checkpoint(idle);
            self.next_checkpoint = Instant::now() + self.core.cfg.checkpoint_interval();
        }
    }

    /// Folds the whole write log now (see [`crate::db::Db::fold`]);
    /// returns whether it is empty.
    fn fold(&mut self) -> bool {
        let Some(db) = &mut self.db else {
            return false;
        };
        if db.unfolded() == 0 {
            return true;
        }
        match db.fold() {
            Ok(_) => {
                self.disk.wrote();
                true
            }
            Err(_) => false,
        }
    }

    fn checkpoint(&mut self, truncate: bool) {
        let Some(db) = &self.db else {
            return;
        };
        if !(self.disk.dirty || truncate) {
            return;
        }
        match db.checkpoint(truncate) {
            Ok(()) => {
                self.disk.dirty = false;
                self.disk.truncated |= truncate;
            }
            Err(e) => log::warn!("WAL checkpoint failed: {e}"),
        }
    }

    /// Gives up to `vacuum_step_pages` free pages back to the file system.
    fn vacuum_step(&mut self) {
        let pages = self.core.cfg.vacuum_step_pages;
        let Some(db) = &mut self.db else {
            return;
        };
        if pages == 0 {
            self.disk.vacuum = false;
            return;
        }
        match db
            .free_pages()
            .and_then(|n| if n > 0 { db.vacuum_step(pages) } else { Ok(0) })
        {
            Ok(left) => {
                if left == 0 && self.disk.vacuum {
                    self.disk.dirty = true;
                }
                self.disk.vacuum = left > 0;
            }
            Err(e) => {
                log::warn!("incremental vacuum failed, will retry at the next change: {e}");
                self.disk.vacuum = false;
            }
        }
    }

    /// Deletes keys whose TTL has passed, from disk then from the cache.
    fn purge(&mut self) {
        let Some(db) = &mut self.db else {
            return;
        };
        let due = match db.expired(now_ms(), MAX_PURGE) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("cannot look for expired keys, will retry: {e}");
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let store = &self.core.store;
        match db.purge(&due, store.revision()) {
            Ok((gone, removed)) => {
                let last = removed.last().map_or(0, |(_, rev)| *rev);
                store.purged(&due, gone, last);
                if self.core.watches.active() {
                    let events: Vec<Event> = removed
                        .into_iter()
                        .map(|(key, rev)| Event {
                            key,
                            op: Op::Expire,
                            rev,
                            value: None,
                        })
                        .collect();
                    self.core.watches.publish(&*self.core, &events);
                }
                self.disk.wrote();
                self.core
                    .stats
                    .purged
                    .fetch_add(gone.keys, Ordering::Relaxed);
            }
            Err(e) => log::warn!("purging {} expired keys failed, will retry: {e}", due.len()),
        }
    }
}

/// What the submissions of one batch are evaluated against.
struct Batch<'a> {
    core: &'a Core,
    reader: &'a Reader<'a>,
    db: Option<&'a Db>,
    overlay: &'a mut Overlay,
    notes: &'a mut Vec<Note>,
    now: u64,
}

impl Batch<'_> {
    /// Evaluates one submission into `reply`, line by line until the
    /// reply passes the budget.
    fn evaluate(&mut self, sub: &Submission, reply: &mut Reply) {
        // A `sys.auth` in one line applies to the lines after it.
        let mut who = sub.who.clone();
        match sub.kind {
            Kind::Body => {
                self.one(sub, &mut who, &sub.input, reply);
                reply.taken = sub.input.len();
            }
            Kind::Lines => {
                for (line, end) in line_ends(&sub.input) {
                    if reply.taken > 0 && reply.out.len() >= sub.budget {
                        break;
                    }
                    if self.one(sub, &mut who, line, reply) {
                        reply.out.push(b'\n');
                    }
                    reply.taken = end;
                    if reply.close {
                        break;
                    }
                }
            }
        }
    }

    /// Evaluates one message; returns whether it has a reply.
    fn one(&mut self, sub: &Submission, who: &mut Who, text: &[u8], reply: &mut Reply) -> bool {
        let (conn, out) = (sub.conn, &mut reply.out);
        let core = self.core;
        if text.len() > core.cfg.max_line_bytes {
            jsonrpc::write_error(out, None, &too_large(core));
            return true;
        }
        let mut env = Env {
            core,
            view: View::Write {
                reader: self.reader,
                db: self.db,
                overlay: &mut *self.overlay,
                cfg: &core.cfg,
            },
            now: self.now,
            conn,
            later: Some(&mut *self.notes),
            subscribed: false,
            who: std::mem::replace(who, Who::Anonymous),
            peer: sub.peer,
            close: false,
        };
        let msg = jsonrpc::parse(text, core.cfg.max_batch);
        let answered = eval_message(&mut env, &msg, out);
        *who = env.who;
        reply.close |= env.close;
        answered
    }
}

/// The lines of `buf` (split on `\n`, a trailing `\r` removed), each with
/// the offset just past its newline.
fn line_ends(buf: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i + 1);
        let mut line = &buf[pos..end];
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = end;
        Some((line, end))
    })
}

/// Where a submission's first line ends (everything, for a body).
fn first_line(sub: &Submission) -> usize {
    match sub.kind {
        Kind::Body => sub.input.len(),
        Kind::Lines => line_ends(&sub.input).next().map_or(0, |(_, end)| end),
    }
}

/// Answers every request of a submission's first `taken` bytes with the
/// same error.
fn answer_all(core: &Core, sub: &Submission, taken: usize, err: &RpcError, out: &mut Vec<u8>) {
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
            for (line, _) in line_ends(&sub.input[..taken.min(sub.input.len())]) {
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
        let path = dir.path().join("rpc.sqlite");
        let db = Db::open(&path, crate::config::SyncMode::Normal).unwrap();
        if read_only {
            db.make_read_only();
        }
        let owner = Owner::try_acquire(&Owner::lock_path(&path))
            .unwrap()
            .unwrap();
        Start::Ready { db, owner }
    }

    fn reply(v: Reply) -> serde_json::Value {
        serde_json::from_slice(&v.out).unwrap()
    }

    #[test]
    fn commits_in_groups_and_reports_storage_errors() {
        let (core, dir) = core();
        let writer = Writer::spawn(core.clone(), ready(&dir, false)).unwrap();
        let set = br#"{"jsonrpc":"2.0","method":"kv.set","params":["a",1],"id":1}"#.to_vec();
        let r = reply(
            writer
                .call(0, Who::Internal, Peer::UNKNOWN, Kind::Body, set, usize::MAX)
                .unwrap(),
        );
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
                who: Who::Internal,
                peer: Peer::UNKNOWN,
                kind: Kind::Lines,
                input: line.into_bytes(),
                budget: usize::MAX,
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
        let r = reply(
            writer
                .call(0, Who::Internal, Peer::UNKNOWN, Kind::Body, set, usize::MAX)
                .unwrap(),
        );
        assert_eq!(r[0]["error"]["code"], code::STORAGE);
        assert_eq!(r[1]["error"]["code"], code::STORAGE);
        let get = br#"{"jsonrpc":"2.0","method":"kv.get","params":["a"],"id":3}"#.to_vec();
        let r = reply(
            writer
                .call(0, Who::Internal, Peer::UNKNOWN, Kind::Body, get, usize::MAX)
                .unwrap(),
        );
        assert_eq!(r["result"], 1, "unchanged");
        assert!(core.store.read().get("a").is_some(), "cached by the read");
        writer.stop();
    }

    #[test]
    fn a_reply_stops_at_its_budget() {
        let (core, dir) = core();
        let writer = Writer::spawn(core.clone(), ready(&dir, false)).unwrap();
        let value = format!("\"{}\"", "v".repeat(1000));
        let mut input =
            format!(r#"{{"jsonrpc":"2.0","method":"kv.set","params":["b",{value}],"id":0}}"#);
        input.push('\n');
        let get =
            |i: usize| format!(r#"{{"jsonrpc":"2.0","method":"kv.get","params":["b"],"id":{i}}}"#);
        for i in 1..=10 {
            input.push_str(&get(i));
            input.push_str("\r\n");
        }
        input.push_str(r#"{"jsonrpc":"2.0","method":"kv.incr","params":["n"],"id":11}"#);
        input.push('\n');
        let r = writer
            .call(
                5,
                Who::Internal,
                Peer::UNKNOWN,
                Kind::Lines,
                input.clone().into_bytes(),
                2500,
            )
            .unwrap();
        let lines: Vec<&[u8]> = r
            .out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 4, "the third get passes 2500 bytes");
        let done = &input[..r.taken];
        assert!(done.ends_with(&format!("{}\r\n", get(3))), "{done}");
        // The rest was not evaluated: the counter was not written.
        let rest = input.as_bytes()[r.taken..].to_vec();
        let r = writer
            .call(
                5,
                Who::Internal,
                Peer::UNKNOWN,
                Kind::Lines,
                rest.clone(),
                usize::MAX,
            )
            .unwrap();
        assert_eq!(r.taken, rest.len());
        let last = r.out.split(|b| *b == b'\n').rev().nth(1).unwrap();
        assert_eq!(last, br#"{"jsonrpc":"2.0","result":1,"id":11}"#);
        writer.stop();
    }

    #[test]
    fn purges_and_gives_space_back() {
        let (core, dir) = crate::testing::core_with(serde_json::json!({
            "purge_interval_ms": 10, "checkpoint_interval_ms": 10
        }));
        let writer = Writer::spawn(core.clone(), ready(&dir, false)).unwrap();
        let value = format!("\"{}\"", "v".repeat(200_000));
        for i in 0..20 {
            let line = format!(
                r#"{{"jsonrpc":"2.0","method":"kv.set","params":{{"key":"k{i}","value":{value},"ttl_ms":1500}}}}"#
            );
            writer
                .call(
                    0,
                    Who::Internal,
                    Peer::UNKNOWN,
                    Kind::Body,
                    line.into_bytes(),
                    usize::MAX,
                )
                .unwrap();
        }
        assert_eq!(core.store.len(), 20);
        let path = dir.path().join("rpc.sqlite");
        let size = || {
            let wal = dir.path().join("rpc.sqlite-wal");
            std::fs::metadata(&path).unwrap().len() + std::fs::metadata(wal).map_or(0, |m| m.len())
        };
        let full = size();
        assert!(full > 4_000_000, "{full}");
        let t0 = Instant::now();
        while (!core.store.is_empty() || size() * 10 > full)
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(core.store.len(), 0, "purged");
        assert_eq!(core.store.totals().bytes, 0);
        let wal = std::fs::metadata(dir.path().join("rpc.sqlite-wal")).map_or(0, |m| m.len());
        assert!(
            size() * 10 <= full,
            "{} of {full} bytes left (wal {wal})",
            size()
        );
        writer.stop();
    }
}
