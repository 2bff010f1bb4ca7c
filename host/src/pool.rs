//! The worker pool for blocking module work, the control thread for admin
//! work, and the mailboxes that carry results back to the event loops.
//!
//! An event loop never blocks: a deferred message goes to the pool with
//! the address of its connection (loop, slab key, connection id); the
//! result comes back through that loop's channel and wakes it with its
//! `mio::Waker`. An admin command's reply has two possible readers, a
//! connection of an event loop or a thread of the admin socket: both are
//! an [`AdminReply`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use abi_stable::std_types::{RSlice, RVec};
use crossbeam_channel::{unbounded, Receiver, Sender};
use module_api::{ConnInfo, Verdict};

use crate::generation::{CallSite, Generation};

/// Where a result must be delivered.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub loop_idx: usize,
    pub key: usize,
    pub conn_id: u64,
}

/// Where the reply of an admin command that finishes later (`RUN`,
/// `UPGRADE`) goes. Whoever runs the command sends through it once, from
/// any thread.
#[derive(Clone)]
pub enum AdminReply {
    /// A connection of an event loop (the public port): delivered as
    /// [`Completion::Admin`] through the loop's mailbox.
    Conn { mailbox: Mailbox, to: ReplyTo },
    /// A thread waiting on a channel (a client of the admin socket).
    Channel(Sender<String>),
}

impl AdminReply {
    /// The reply path to the event-loop connection `to`.
    pub fn conn(mailboxes: &[Mailbox], to: ReplyTo) -> AdminReply {
        AdminReply::Conn {
            mailbox: mailboxes[to.loop_idx].clone(),
            to,
        }
    }

    /// Delivers `reply`. A reader that has gone away (the connection
    /// closed, the client thread ended) is not an error: nobody waits.
    pub fn send(&self, reply: String) {
        match self {
            AdminReply::Conn { mailbox, to } => mailbox.send(Completion::Admin { to: *to, reply }),
            AdminReply::Channel(tx) => {
                let _ = tx.send(reply);
            }
        }
    }
}

/// A result for an event loop.
pub enum Completion {
    /// A deferred module call finished.
    Deferred {
        to: ReplyTo,
        out: RVec<u8>,
        verdict: Verdict,
    },
    /// An admin command finished; `reply` is written to the connection.
    Admin { to: ReplyTo, reply: String },
    /// A module pushes bytes to connections of this loop (see
    /// `services`); the bytes are shared, each connection copies them
    /// into its own output only after its backlog was checked. `refused`:
    /// the loop's mailbox held too many pushed bytes already, so these
    /// connections get `notice` and close instead (`data` is empty).
    Push {
        conn_ids: Vec<u64>,
        module: Arc<str>,
        data: Arc<[u8]>,
        notice: Arc<[u8]>,
        refused: bool,
    },
    /// The pushes an event loop thread made to this loop during one
    /// module call, in order (see [`PushBatch`]).
    Pushes(Arc<PushBatch>),
}

/// The pushes one event-loop thread makes to one loop during one module
/// call, as one mailbox entry: the entry is queued with the call's first
/// push, and the call's later pushes join it until the loop takes it.
/// The entry holds its place in the mailbox from the first push on, so
/// a push that another thread makes because of this call (the rpc
/// module's writer, fed by the call) still comes after it.
#[derive(Default)]
pub struct PushBatch(parking_lot::Mutex<Pushes>);

/// What a [`PushBatch`] holds: each push's bytes copied once into
/// `bytes`, its connections in `conn_ids`.
#[derive(Default)]
pub struct Pushes {
    /// Set when the loop takes the pushes; a later push starts a new batch.
    taken: bool,
    pub items: Vec<PushItem>,
    pub conn_ids: Vec<u64>,
    pub bytes: Vec<u8>,
}

/// One push of a [`Pushes`]: the ranges of its connections and bytes.
pub struct PushItem {
    pub module: Arc<str>,
    pub conns: std::ops::Range<usize>,
    pub data: std::ops::Range<usize>,
    /// Sent instead when `refused` (see [`Completion::Push`]), or when
    /// the connection's backlog is full.
    pub notice: Arc<[u8]>,
    pub refused: bool,
}

impl PushBatch {
    /// A batch holding one push.
    pub fn new(
        module: &Arc<str>,
        conns: &[u64],
        data: &[u8],
        notice: &Arc<[u8]>,
        refused: bool,
    ) -> PushBatch {
        let b = PushBatch::default();
        b.join(module, conns, data, notice, refused);
        b
    }

    /// Adds a push; false (nothing added) once the loop took the batch.
    pub fn join(
        &self,
        module: &Arc<str>,
        conns: &[u64],
        data: &[u8],
        notice: &Arc<[u8]>,
        refused: bool,
    ) -> bool {
        let mut p = self.0.lock();
        if p.taken {
            return false;
        }
        let c = p.conn_ids.len();
        p.conn_ids.extend_from_slice(conns);
        let d = p.bytes.len();
        if !refused {
            p.bytes.extend_from_slice(data);
        }
        let (c_end, d_end) = (p.conn_ids.len(), p.bytes.len());
        p.items.push(PushItem {
            module: module.clone(),
            conns: c..c_end,
            data: d..d_end,
            notice: notice.clone(),
            refused,
        });
        true
    }

    /// The loop takes the pushes queued so far; later ones need a new batch.
    pub fn take(&self) -> Pushes {
        let mut p = self.0.lock();
        let pushes = std::mem::take(&mut *p);
        p.taken = true;
        pushes
    }
}

/// One event loop's inbox.
#[derive(Clone)]
pub struct Mailbox {
    pub tx: Sender<Completion>,
    pub waker: Arc<mio::Waker>,
    /// Set by the first send since the loop last looked at its mailbox:
    /// later sends skip the wake-up (an `eventfd` write each), since the
    /// loop will drain them with the first. Cleared by [`Mailbox::rearm`].
    woken: Arc<AtomicBool>,
}

impl Mailbox {
    pub fn new(tx: Sender<Completion>, waker: Arc<mio::Waker>) -> Mailbox {
        Mailbox {
            tx,
            waker,
            woken: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Delivers a completion and wakes the loop, unless a wake-up since
    /// its last drain is already on the way.
    pub fn send(&self, c: Completion) {
        // The completion is queued before `woken` is read (AcqRel): a
        // send that skips the wake-up is seen by the drain that follows
        // the `rearm` which read its `true`.
        if self.tx.send(c).is_ok() && !self.woken.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake event loop: {e}");
            }
        }
    }

    /// The loop is about to drain its mailbox: the next send wakes it.
    pub fn rearm(&self) {
        self.woken.swap(false, Ordering::AcqRel);
    }
}

/// A deferred call.
pub struct Job {
    pub gen: Arc<Generation>,
    pub info: ConnInfo,
    pub msg: Vec<u8>,
    pub to: ReplyTo,
}

/// Threads that run deferred module calls.
pub struct Pool {
    tx: Sender<Job>,
}

impl Pool {
    /// Starts `threads` workers delivering into `mailboxes`.
    pub fn start(threads: usize, mailboxes: Arc<Vec<Mailbox>>) -> Pool {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = unbounded();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let mailboxes = mailboxes.clone();
            thread::Builder::new()
                .name(format!("pool-{i}"))
                .spawn(move || {
                    for job in rx {
                        let mut out = RVec::new();
                        let verdict = job.gen.call(CallSite::Deferred, |m| {
                            m.on_deferred(&job.info, RSlice::from_slice(&job.msg), &mut out)
                        });
                        drop(job.gen);
                        mailboxes[job.to.loop_idx].send(Completion::Deferred {
                            to: job.to,
                            out,
                            verdict,
                        });
                    }
                })
                .expect("spawn pool thread");
        }
        Pool { tx }
    }

    /// Queues a deferred call. The queue is bounded in practice: each
    /// connection has at most one deferred message in flight.
    pub fn submit(&self, job: Job) {
        let _ = self.tx.send(job);
    }
}

/// A single thread that runs admin work (reloads, status) in order, so
/// reloads never overlap and never run on an event loop.
pub struct Control {
    tx: Sender<Box<dyn FnOnce() + Send>>,
}

impl Control {
    pub fn start() -> Control {
        let (tx, rx) = unbounded::<Box<dyn FnOnce() + Send>>();
        thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for task in rx {
                    task();
                }
            })
            .expect("spawn control thread");
        Control { tx }
    }

    /// Runs `task` on the control thread.
    pub fn run(&self, task: impl FnOnce() + Send + 'static) {
        let _ = self.tx.send(Box::new(task));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Completion, Mailbox, ReplyTo};

    fn admin(n: usize) -> Completion {
        Completion::Admin {
            to: ReplyTo {
                loop_idx: 0,
                key: n,
                conn_id: n as u64,
            },
            reply: String::new(),
        }
    }

    /// Whether the loop's poll reports its waker within `ms`.
    fn woken(poll: &mut mio::Poll, ms: u64) -> bool {
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_millis(ms)))
            .expect("poll");
        !events.is_empty()
    }

    #[test]
    fn one_wake_up_per_drain() {
        let mut poll = mio::Poll::new().expect("poll");
        let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Mailbox::new(tx, waker);
        mailbox.send(admin(1));
        assert!(woken(&mut poll, 1000), "the first send wakes the loop");
        mailbox.send(admin(2));
        assert!(!woken(&mut poll, 50), "no second wake-up before a drain");
        mailbox.rearm();
        assert_eq!(rx.try_iter().count(), 2, "both are in the mailbox");
        mailbox.send(admin(3));
        assert!(woken(&mut poll, 1000), "after a drain, a send wakes again");
        assert_eq!(rx.try_iter().count(), 1);
    }
}
