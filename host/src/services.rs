//! Host services that modules call back into: server push to a
//! connection, and in-process calls to another module.
//!
//! Everything here is handed in at construction (`server.rs`): the loops'
//! mailboxes for pushes, and the route table, which names each module's
//! current generation, for calls. It does not know the registry.
//!
//! A push goes to the mailbox of each loop that owns one of its
//! connections. On an event loop thread the pushes of one module call to
//! one loop share a mailbox entry ([`PushBatch`], closed by
//! [`crate::calls`]): a call that publishes a run of messages costs one
//! entry, not one per message.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use abi_stable::std_types::{RSlice, RVec};
use module_api::{Action, CallStatus, ConnInfo};

use crate::conn;
use crate::generation::CallSite;
use crate::pool::{Completion, Mailbox, PushBatch};
use crate::router::SharedTable;

/// Pushed bytes sitting in each event loop's mailbox, not yet handed to
/// their connections. A publisher never waits, so without a bound a loop
/// that falls behind would let its mailbox grow without limit; past
/// `cap` (`max_pending_push_bytes`) a push to that loop is refused and
/// its connections are told (overflow notice) and closed.
pub struct PushPending {
    per_loop: Vec<AtomicUsize>,
    cap: usize,
    /// For logging refusals at most once a second: when this was made,
    /// and the second (since then, plus one) of the last line.
    born: std::time::Instant,
    last_log: AtomicU64,
}

impl PushPending {
    pub fn new(loops: usize, cap: usize) -> Arc<PushPending> {
        Arc::new(PushPending {
            per_loop: (0..loops).map(|_| AtomicUsize::new(0)).collect(),
            cap,
            born: std::time::Instant::now(),
            last_log: AtomicU64::new(0),
        })
    }

    /// Whether a refusal may be logged now (at most once a second).
    fn log_due(&self) -> bool {
        let now = self.born.elapsed().as_secs() + 1;
        self.last_log.swap(now, Ordering::Relaxed) != now
    }

    /// Counts `bytes` into loop `idx`'s mailbox; false (nothing counted)
    /// when that would pass the cap.
    pub fn reserve(&self, idx: usize, bytes: usize) -> bool {
        let slot = &self.per_loop[idx];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            if cur.saturating_add(bytes) > self.cap {
                return false;
            }
            match slot.compare_exchange_weak(cur, cur + bytes, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// The loop took `bytes` out of its mailbox.
    pub fn release(&self, idx: usize, bytes: usize) {
        self.per_loop[idx].fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What every module's host handle shares.
pub struct Services {
    mailboxes: Arc<Vec<Mailbox>>,
    /// Pushed bytes in each loop's mailbox.
    pending: Arc<PushPending>,
    /// Where in-process calls find the callee's current generation. Weak:
    /// every module's host handle holds these services for as long as its
    /// library stays mapped (for good), and a strong reference would keep
    /// the table, and through it the current generations, alive past the
    /// server, so their `stop` would never run.
    table: Weak<SharedTable>,
    /// The names on each connection's verified client certificate (mutual
    /// TLS), by connection id; only connections that presented one.
    identities: parking_lot::Mutex<std::collections::HashMap<u64, Arc<[String]>>>,
}

impl Services {
    /// Services that push through the loops' `mailboxes` (counting the
    /// bytes in `pending`) and call modules found in `table`.
    pub fn new(
        mailboxes: Arc<Vec<Mailbox>>,
        pending: Arc<PushPending>,
        table: Arc<SharedTable>,
    ) -> Arc<Services> {
        Arc::new(Services {
            mailboxes,
            pending,
            table: Arc::downgrade(&table),
            identities: Default::default(),
        })
    }

    /// Records the names of the verified client certificate connection
    /// `conn` presented (see `HostServices::peer_identity`). The event
    /// loop calls it once the handshake is complete and must call
    /// [`Services::forget_peer_identity`] when the connection closes.
    pub fn set_peer_identity(&self, conn: u64, names: Arc<[String]>) {
        self.identities.lock().insert(conn, names);
    }

    /// Drops what [`Services::set_peer_identity`] recorded for `conn`.
    pub fn forget_peer_identity(&self, conn: u64) {
        self.identities.lock().remove(&conn);
    }

    /// The names recorded for `conn`; empty when none.
    pub fn peer_identity(&self, conn: u64) -> Arc<[String]> {
        self.identities
            .lock()
            .get(&conn)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Queues pushed bytes on the loops that own `conns`: the bytes are
    /// copied once (into the thread's open batch for each loop on an
    /// event loop thread, else into one shared buffer). Returns how many
    /// connections were addressed to a loop. A loop whose mailbox already holds
    /// `max_pending_push_bytes` gets a refusal instead (its connections
    /// are sent `notice` and closed), logged; the caller never waits.
    pub fn push(&self, module: &Arc<str>, conns: &[u64], data: &[u8], notice: &[u8]) -> usize {
        let loops = self.mailboxes.len();
        let loop_of = |c: u64| conn::id_parts(c).0;
        let Some(first) = conns.iter().map(|&c| loop_of(c)).find(|&i| i < loops) else {
            return 0;
        };
        let notice = shared_notice(notice);
        let mut out = Outgoing::new(data);
        if conns.iter().all(|&c| loop_of(c) == first) {
            // All on one loop (one subscriber, or a few that landed on
            // the same loop): no list per loop.
            self.send_push(module, first, conns, &mut out, &notice);
            return conns.len();
        }
        let mut per_loop: Vec<Vec<u64>> = vec![Vec::new(); loops];
        for &c in conns {
            if let Some(ids) = per_loop.get_mut(loop_of(c)) {
                ids.push(c);
            }
        }
        let mut sent = 0;
        for (idx, conn_ids) in per_loop.iter().enumerate() {
            if !conn_ids.is_empty() {
                sent += conn_ids.len();
                self.send_push(module, idx, conn_ids, &mut out, &notice);
            }
        }
        sent
    }

    /// Queues one push on loop `idx`'s mailbox, or its refusal when the
    /// mailbox holds `max_pending_push_bytes` already: in this thread's
    /// open batch for that loop on an event loop thread, else as an entry
    /// of its own.
    fn send_push(
        &self,
        module: &Arc<str>,
        idx: usize,
        conn_ids: &[u64],
        out: &mut Outgoing<'_>,
        notice: &Arc<[u8]>,
    ) {
        let pending = &self.pending;
        let bytes = out.data.len();
        let refused = !pending.reserve(idx, bytes);
        if refused && pending.log_due() {
            log::warn!(
                "{module}: loop {idx} holds max_pending_push_bytes ({}) of undelivered \
                 pushes; refusing a {bytes}-byte push to {} connection(s), which are disconnected \
                 (logged at most once a second)",
                pending.cap,
                conn_ids.len()
            );
        }
        let batched = BATCHES.with(|b| {
            let mut b = b.borrow_mut();
            let open = b.as_mut()?;
            if open.len() <= idx {
                open.resize(idx + 1, None);
            }
            let call = crate::calls::finished_so_far();
            if let Some((opened, batch)) = &open[idx] {
                if *opened == call && batch.join(module, conn_ids, out.data, notice, refused) {
                    return Some(());
                }
            }
            let batch = Arc::new(PushBatch::new(module, conn_ids, out.data, notice, refused));
            open[idx] = Some((call, batch.clone()));
            self.mailboxes[idx].send(Completion::Pushes(batch));
            Some(())
        });
        if batched.is_some() {
            return;
        }
        self.mailboxes[idx].send(Completion::Push {
            conn_ids: conn_ids.to_vec(),
            module: module.clone(),
            data: if refused {
                Arc::from(&[][..])
            } else {
                out.shared()
            },
            notice: notice.clone(),
            refused,
        });
    }

    /// Runs one complete message through module `name`, inline.
    pub fn call(&self, name: &str, input: &[u8], out: &mut RVec<u8>) -> CallStatus {
        let Some(table) = self.table.upgrade() else {
            return CallStatus::NoSuchModule;
        };
        let g = match table.module(name) {
            Ok(g) => g,
            Err(status) => return status,
        };
        let info = ConnInfo::new(
            0,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            false,
        );
        // `enter`: a crash or a hang in the callee is pinned on it; its
        // time counts on the caller's clock, its waits do not.
        let mut v = g.call(CallSite::InProcess, |m| {
            m.on_message(&info, RSlice::from_slice(input), out)
        });
        if v.action == Action::Defer {
            let n = (v.consumed as usize).min(input.len());
            v = g.call(CallSite::InProcess, |m| {
                m.on_deferred(&info, RSlice::from_slice(&input[..n]), out)
            });
        }
        if v.fault {
            g.stats
                .faults
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return CallStatus::Fault;
        }
        if v.body.is_some() {
            out.extend_from_copy_slice(v.body.bytes());
        }
        if v.file.is_some() {
            if let Err(e) = read_file_body(&v.file, out) {
                log::error!("call to {name}: reading its file body failed: {e}");
                return CallStatus::Fault;
            }
        }
        match v.action {
            Action::NeedMore => CallStatus::Incomplete,
            _ => {
                g.stats
                    .requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                CallStatus::Ok
            }
        }
    }
}

thread_local! {
    /// On an event loop thread, the batch open for each loop during the
    /// current module call, with the count of calls the thread had
    /// finished when it opened ([`crate::calls`]: a batch of an earlier
    /// call is closed); `None` on other threads, whose pushes go one by
    /// one.
    static BATCHES: std::cell::RefCell<Option<Vec<OpenBatch>>> =
        const { std::cell::RefCell::new(None) };
}

/// A loop's slot in [`BATCHES`]: the batch and the count of finished
/// calls it was opened at.
type OpenBatch = Option<(u64, Arc<PushBatch>)>;

/// Makes the calling thread (an event loop's) batch the pushes of each
/// module call: a call's pushes to one loop share one mailbox entry, and
/// the next call's go into new ones, so pushes from other threads caused
/// by a later call come after this call's, as they would one by one.
pub fn batch_pushes_on_this_thread() {
    BATCHES.with(|b| *b.borrow_mut() = Some(Vec::new()));
}

/// A push's bytes, copied into a shared buffer at most once (the
/// one-by-one path) however many loops it goes to.
struct Outgoing<'a> {
    data: &'a [u8],
    shared: Option<Arc<[u8]>>,
}

impl<'a> Outgoing<'a> {
    fn new(data: &'a [u8]) -> Outgoing<'a> {
        Outgoing { data, shared: None }
    }

    fn shared(&mut self) -> Arc<[u8]> {
        self.shared
            .get_or_insert_with(|| Arc::from(self.data))
            .clone()
    }
}

/// `notice` as a shared copy. A module passes the same notice with
/// every push (the rpc module's overflow line), so the last one each
/// thread made is reused rather than copied again for every message.
fn shared_notice(notice: &[u8]) -> Arc<[u8]> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<Arc<[u8]>>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some(n) if **n == *notice => n.clone(),
            _ => {
                let n: Arc<[u8]> = Arc::from(notice);
                *last = Some(n.clone());
                n
            }
        }
    })
}

/// Appends a module's file body to `out` (an in-process caller gets the
/// whole answer in memory).
fn read_file_body(file: &module_api::FileBody, out: &mut RVec<u8>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut offset, mut left) = (file.offset(), file.len());
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = crate::conn::read_at(file.fd(), &mut buf[..want], offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file truncated",
            ));
        }
        out.extend_from_copy_slice(&buf[..n]);
        offset += n as u64;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{PushPending, Services};
    use crate::pool::{Completion, Mailbox, Pushes};

    /// Services over `loops` mailboxes (each pending bytes capped at
    /// `cap`), with the receiving end of each.
    fn services(
        loops: usize,
        cap: usize,
    ) -> (
        Arc<Services>,
        Vec<crossbeam_channel::Receiver<Completion>>,
        Vec<mio::Poll>,
    ) {
        let (mut boxes, mut rxs, mut polls) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..loops {
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
            let (tx, rx) = crossbeam_channel::unbounded();
            boxes.push(Mailbox::new(tx, waker));
            rxs.push(rx);
            polls.push(poll);
        }
        let table = Arc::new(crate::router::SharedTable::new(Vec::new()));
        let s = Services::new(Arc::new(boxes), PushPending::new(loops, cap), table);
        (s, rxs, polls)
    }

    /// Connection `key` of loop `idx`, as the host numbers them.
    fn conn(idx: u64, key: u64) -> u64 {
        (idx << 24) | key
    }

    /// Every push in a batch: (connections, bytes, refused).
    fn items(p: &Pushes) -> Vec<(Vec<u64>, Vec<u8>, bool)> {
        p.items
            .iter()
            .map(|i| {
                let c = p.conn_ids[i.conns.clone()].to_vec();
                (c, p.bytes[i.data.clone()].to_vec(), i.refused)
            })
            .collect()
    }

    #[test]
    fn an_event_loop_thread_sends_one_entry_per_loop_and_call() {
        let (s, rx, _polls) = services(2, 1 << 20);
        let m: Arc<str> = Arc::from("rpc");
        std::thread::spawn(move || {
            super::batch_pushes_on_this_thread();
            assert_eq!(s.push(&m, &[conn(0, 1)], b"a", b"!"), 1);
            assert_eq!(s.push(&m, &[conn(0, 2), conn(1, 3)], b"bb", b"!"), 2);
            assert_eq!(
                s.push(&m, &[conn(0, 1), conn(9, 1)], b"c", b"!"),
                1,
                "no loop 9"
            );
            crate::calls::finished();
            assert_eq!(s.push(&m, &[conn(0, 1)], b"d", b"!"), 1);
        })
        .join()
        .unwrap();
        let got: Vec<Completion> = rx[0].try_iter().collect();
        assert_eq!(got.len(), 2, "one entry per call");
        let Completion::Pushes(first) = &got[0] else {
            panic!("not a batch");
        };
        let first = first.take();
        assert_eq!(
            items(&first),
            [
                (vec![conn(0, 1)], b"a".to_vec(), false),
                (vec![conn(0, 2)], b"bb".to_vec(), false),
                (vec![conn(0, 1)], b"c".to_vec(), false),
            ]
        );
        assert_eq!(&*first.items[0].notice, b"!");
        let Completion::Pushes(second) = &got[1] else {
            panic!("not a batch");
        };
        assert_eq!(
            items(&second.take()),
            [(vec![conn(0, 1)], b"d".to_vec(), false)]
        );
        let other: Vec<Completion> = rx[1].try_iter().collect();
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn a_taken_batch_takes_no_more_and_refusals_carry_no_bytes() {
        let (s, rx, _polls) = services(1, 4);
        let m: Arc<str> = Arc::from("rpc");
        let s2 = s.clone();
        let m2 = m.clone();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            super::batch_pushes_on_this_thread();
            s2.push(&m2, &[conn(0, 1)], b"abc", b"!");
            wait.recv().unwrap();
            // The loop took the batch meanwhile: a new entry.
            s2.push(&m2, &[conn(0, 1)], b"xyz", b"!");
            done.send(()).unwrap();
        });
        let Ok(Completion::Pushes(b)) = rx[0].recv() else {
            panic!("no batch");
        };
        assert_eq!(
            items(&b.take()),
            [(vec![conn(0, 1)], b"abc".to_vec(), false)]
        );
        go.send(()).unwrap();
        finished.recv().unwrap();
        t.join().unwrap();
        let Ok(Completion::Pushes(b)) = rx[0].try_recv() else {
            panic!("no second batch");
        };
        // 3 of 4 bytes are still counted as waiting: 3 more are refused.
        assert_eq!(items(&b.take()), [(vec![conn(0, 1)], Vec::new(), true)]);
        // Off an event loop thread: one entry per push, as before.
        assert_eq!(s.push(&m, &[conn(0, 2)], b"q", b"!"), 1);
        assert!(matches!(
            rx[0].try_recv(),
            Ok(Completion::Push { refused: false, .. })
        ));
    }

    #[test]
    fn pending_push_bytes_are_capped_per_loop() {
        let p = PushPending::new(2, 100);
        assert!(p.reserve(0, 60));
        assert!(!p.reserve(0, 50), "over the cap");
        assert!(p.reserve(1, 100), "loops count separately");
        p.release(0, 60);
        assert!(p.reserve(0, 100));
    }
}
