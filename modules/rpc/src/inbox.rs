//! [`Inbox`]: the `bus.request` calls waiting for their answer, keyed by
//! their reply subject (`_INBOX.<random>`).
//!
//! A request registers a [`Pending`] entry (who asked, the call's raw
//! id, a timeout timer on [`crate::clock`]) and goes out as a
//! `bus.message` with `reply`. The first `bus.reply` (or `bus.publish`
//! to the reply subject) removes the entry, cancels the timer and pushes
//! the JSON-RPC result line to the requester; a later one finds nothing
//! (`false`). The timer removes the entry and pushes -32033. A closed
//! requester's entries are dropped through a per-connection index, so a
//! close costs O(its entries).
//!
//! The reply subject is the capability to answer (no `publish` right is
//! needed for it): 128 bits from the system's random source, after one
//! character naming the shard (the requester's), so that a reply and a
//! close each lock one shard.
//!
//! Requests over `POST /rpc` wait on their pool thread instead: their
//! entry holds a [`Slot`] the answer is put into, and no timer (the
//! waiting thread times out by itself).
//!
//! A request evaluated in the writer's batch ([`Wait::AfterCommit`]) goes
//! out only if the batch commits: its message is one of the batch's
//! notifications. Its timer is armed when the writer settles the batch
//! ([`Inbox::settle`]); a failed batch drops the entry without a word,
//! since the writer answers the call with the storage error itself (and
//! a timer would answer it a second time, with -32033).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, TimerId};
use crate::jsonrpc::{self, code, RpcError};
use crate::subject::INBOX_PREFIX;
use crate::types::Mode;

/// What the inbox needs from the generation that owns it (implemented by
/// [`crate::core::Core`]). A trait rather than the core itself, so that
/// the inbox sits below the core (`docs/ARCHITECTURE.md`).
pub trait InboxHost: Send + Sync {
    fn clock(&self) -> &Clock;
    /// Whether the generation serves ([`crate::handoff`]).
    fn gate(&self) -> &RwLock<Mode>;
    /// Pushes one JSON line to one connection, framed for its transport;
    /// whether the connection exists.
    fn push_line(&self, conn: u64, line: &[u8]) -> bool;
    /// Whether connection `conn` has closed.
    fn conn_closed(&self, conn: u64) -> bool;
    /// The owner's inbox (this very value).
    fn inbox(&self) -> &Inbox;
}

const SHARDS: usize = 16;
/// How often a frozen generation looks again at a request that timed out
/// after it was handed over (see [`Inbox::expire`]).
const FROZEN_RETRY: Duration = Duration::from_millis(100);
/// The characters of a reply subject's random part (one token, safe in
/// NATS subjects): 6 bits each.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Where an answer goes once it arrives (`POST /rpc`'s waiting thread).
#[derive(Default)]
pub struct Slot {
    answer: Mutex<Option<Vec<u8>>>,
    ready: Condvar,
}

impl Slot {
    fn put(&self, line: Vec<u8>) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
        self.ready.notify_all();
    }

    /// Waits until `deadline` for the answer line.
    pub fn wait(&self, deadline: Instant) -> Option<Vec<u8>> {
        let mut a = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(line) = a.take() {
                return Some(line);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            a = self
                .ready
                .wait_timeout(a, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// How a registered request waits for its answer.
pub enum Wait {
    /// A timer answers -32033 at the deadline; armed at once.
    Timer,
    /// A timer too, armed once the writer's batch that made the request
    /// commits ([`Inbox::settle`]); a failed batch drops the request.
    AfterCommit,
    /// A `POST /rpc` thread waits on the slot (and times out by itself).
    Slot(Arc<Slot>),
}

/// One waiting request.
pub struct Pending {
    /// The requester's connection; 0 for a `POST /rpc` waiter.
    conn: u64,
    /// The call's id, as JSON text.
    id: Box<str>,
    topic: Box<str>,
    timeout_ms: u64,
    deadline: Instant,
    timer: Option<TimerId>,
    slot: Option<Arc<Slot>>,
}

/// A waiting request as handed to the next generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingSnap {
    pub reply: String,
    pub conn: u64,
    pub id: String,
    pub topic: String,
    pub timeout_ms: u64,
    pub remaining_ms: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Pending>,
    by_conn: HashMap<u64, Vec<Box<str>>>,
}

impl Shard {
    fn take(&mut self, reply: &str) -> Option<Pending> {
        let p = self.map.remove(reply)?;
        if let Some(list) = self.by_conn.get_mut(&p.conn) {
            list.retain(|r| &**r != reply);
            if list.is_empty() {
                self.by_conn.remove(&p.conn);
            }
        }
        Some(p)
    }
}

/// The waiting requests of one generation.
pub struct Inbox {
    shards: Vec<Mutex<Shard>>,
    total: AtomicUsize,
    max_per_conn: usize,
    max_total: usize,
    rng: SystemRandom,
    /// The core this inbox is part of, for the timers (bound once the
    /// core is in its `Arc`: see [`Inbox::bind`]).
    core: OnceLock<Weak<dyn InboxHost>>,
    /// Requests answered, timed out, and answers that came too late.
    pub answered: AtomicU64,
    pub timeouts: AtomicU64,
    pub late_replies: AtomicU64,
    /// `POST /rpc` requests waiting on a pool thread now.
    pub http_waiters: AtomicUsize,
    /// The requests the writer's current batch registered
    /// ([`Wait::AfterCommit`]): shard, reply subject, deadline.
    unsettled: Mutex<Vec<(usize, Box<str>, Instant)>>,
}

fn conn_shard(conn: u64) -> usize {
    ((conn ^ (conn >> 32)) as usize) % SHARDS
}

/// The shard a reply subject names; `None` when it is no inbox of ours.
fn reply_shard(reply: &str) -> Option<usize> {
    let rest = reply.strip_prefix(INBOX_PREFIX)?;
    let c = *rest.as_bytes().first()?;
    ALPHABET.iter().position(|&a| a == c).map(|i| i % SHARDS)
}

/// The reply line carrying `data` (JSON text) for the call `id`.
fn result_line(id: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + id.len() + 40);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","result":"#);
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b",\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"}\n");
    out
}

/// The error line for the call `id`.
fn error_line(id: &str, e: &RpcError) -> Vec<u8> {
    let raw = serde_json::value::RawValue::from_string(id.to_string()).ok();
    let mut out = Vec::new();
    jsonrpc::write_error(&mut out, raw.as_deref(), e);
    out.push(b'\n');
    out
}

/// The -32033 of a request that got no answer in time.
pub fn timed_out(topic: &str, timeout_ms: u64) -> RpcError {
    RpcError::new(
        code::TIMEOUT,
        format!("request to {topic:?} timed out after {timeout_ms} ms"),
    )
}

impl Inbox {
    /// An inbox holding at most `max_per_conn` requests per connection
    /// and `max_total` in all.
    pub fn new(max_per_conn: usize, max_total: usize) -> Inbox {
        Inbox {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            total: AtomicUsize::new(0),
            max_per_conn,
            max_total,
            rng: SystemRandom::new(),
            core: OnceLock::new(),
            answered: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            http_waiters: AtomicUsize::new(0),
            unsettled: Mutex::default(),
        }
    }

    /// Lets timers reach the core (call once it is in its `Arc`).
    pub fn bind<H: InboxHost + 'static>(&self, core: &Arc<H>) {
        let weak = Arc::downgrade(core);
        let _ = self.core.set(weak);
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The `STATUS` fields: requests waiting, answered, timed out, and
    /// replies that came too late.
    pub fn status(&self) -> String {
        format!(
            " pending_requests={} answered_requests={} request_timeouts={} late_replies={}",
            self.len(),
            self.answered.load(Ordering::Relaxed),
            self.timeouts.load(Ordering::Relaxed),
            self.late_replies.load(Ordering::Relaxed)
        )
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A fresh reply subject in shard `shard`.
    fn new_reply(&self, shard: usize) -> Result<Box<str>, RpcError> {
        let mut bytes = [0u8; 17];
        self.rng.fill(&mut bytes).map_err(|_| {
            RpcError::new(
                code::INTERNAL_ERROR,
                "no random numbers for a reply subject",
            )
        })?;
        let mut s = String::with_capacity(INBOX_PREFIX.len() + 24);
        s.push_str(INBOX_PREFIX);
        // A shard character, then 22 characters of 6 bits: 132 random
        // bits (the shard character's own bits are spent on the shard).
        let spread = (bytes[16] as usize / SHARDS) % (ALPHABET.len() / SHARDS);
        s.push(ALPHABET[shard + SHARDS * spread] as char);
        let mut acc = 0u32;
        let mut bits = 0;
        for &b in &bytes[..16] {
            acc = (acc << 8) | b as u32;
            bits += 8;
            while bits >= 6 {
                bits -= 6;
                s.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
            }
        }
        s.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
        Ok(s.into_boxed_str())
    }

    /// Registers a request of connection `conn` (0 with a slot: an HTTP
    /// waiter) for the call `id` (JSON text) on `topic`, waiting as `wait`
    /// says. Returns the reply subject, or -32050 at a limit.
    pub fn register(
        &self,
        core: &dyn InboxHost,
        conn: u64,
        id: &str,
        topic: &str,
        timeout_ms: u64,
        wait: Wait,
    ) -> Result<Box<str>, RpcError> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            log::warn!(
                "conn {conn}: bus.request refused: {} requests wait (max_pending_requests_total)",
                self.max_total
            );
            return Err(RpcError::new(
                code::LIMIT,
                format!(
                    "too many pending requests: at most {} on this server \
                     (max_pending_requests_total)",
                    self.max_total
                ),
            ));
        }
        let shard = if conn == 0 {
            // HTTP waiters have no index; spread them.
            self.total.load(Ordering::Relaxed) % SHARDS
        } else {
            conn_shard(conn)
        };
        let reply = match self.new_reply(shard) {
            Ok(r) => r,
            Err(e) => {
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        {
            let mut sh = self.shard(shard);
            if conn != 0 {
                let mine = sh.by_conn.entry(conn).or_default();
                if mine.len() >= self.max_per_conn {
                    drop(sh);
                    self.total.fetch_sub(1, Ordering::AcqRel);
                    return Err(RpcError::new(
                        code::LIMIT,
                        format!(
                            "too many pending requests: at most {} per connection \
                             (max_pending_requests)",
                            self.max_per_conn
                        ),
                    ));
                }
                mine.push(reply.clone());
            }
            let slot = match wait {
                Wait::Timer => None,
                Wait::AfterCommit => {
                    let mut batch = self.unsettled.lock().unwrap_or_else(|e| e.into_inner());
                    batch.push((shard, reply.clone(), deadline));
                    None
                }
                Wait::Slot(ref s) => Some(s.clone()),
            };
            let timer_now = matches!(wait, Wait::Timer);
            sh.map.insert(
                reply.clone(),
                Pending {
                    conn,
                    id: id.into(),
                    topic: topic.into(),
                    timeout_ms,
                    deadline,
                    timer: None,
                    slot,
                },
            );
            if !timer_now {
                return Ok(reply);
            }
        }
        self.arm(core, shard, &reply, deadline);
        Ok(reply)
    }

    /// Ends the writer's batch for the requests it registered with
    /// [`Wait::AfterCommit`] (the writer calls it after each commit,
    /// before it delivers the batch's messages): `committed`, their timers
    /// are armed; otherwise they are dropped without an answer, since the
    /// writer answered each call with the storage error and its message
    /// never went out.
    pub fn settle(&self, core: &dyn InboxHost, committed: bool) {
        let batch = std::mem::take(&mut *self.unsettled.lock().unwrap_or_else(|e| e.into_inner()));
        for (shard, reply, deadline) in batch {
            if committed {
                // Its requester may have closed meanwhile.
                if self.shard(shard).map.contains_key(&reply) {
                    self.arm(core, shard, &reply, deadline);
                }
            } else if self.shard(shard).take(&reply).is_some() {
                self.total.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Arms the timeout of the entry `reply` (inserted already: a timer
    /// that fires at once finds it).
    fn arm(&self, core: &dyn InboxHost, shard: usize, reply: &str, deadline: Instant) {
        // Unbound (never in practice: the core binds it at once), the
        // timer finds nothing to upgrade and does nothing.
        let weak = self.core.get().cloned();
        let key: Box<str> = reply.into();
        let id = core.clock().at(
            deadline,
            Box::new(move || {
                if let Some(core) = weak.as_ref().and_then(Weak::upgrade) {
                    core.inbox().expire(&*core, &key);
                }
            }),
        );
        if let Some(p) = self.shard(shard).map.get_mut(reply) {
            p.timer = Some(id);
        }
    }

    /// The timer of `reply` fired: -32033 to the requester.
    fn expire(&self, core: &dyn InboxHost, reply: &str) {
        let Some(shard) = reply_shard(reply) else {
            return;
        };
        if matches!(core.gate().try_read().as_deref(), Ok(Mode::Frozen)) {
            // Handed over: the successor owns this request and times it
            // out itself. Should the handover fail and this generation
            // serve again, the request still times out: check again soon
            // (a stopped clock drops this retry).
            self.arm(core, shard, reply, Instant::now() + FROZEN_RETRY);
            return;
        }
        let Some(p) = self.shard(shard).take(reply) else {
            return;
        };
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        let line = error_line(&p.id, &timed_out(&p.topic, p.timeout_ms));
        match &p.slot {
            Some(slot) => slot.put(line),
            None => {
                core.push_line(p.conn, &line);
            }
        }
    }

    /// Answers the request waiting on `reply` with `data` (JSON text on
    /// one line): true if it still waited (the first answer wins).
    pub fn answer(&self, core: &dyn InboxHost, reply: &str, data: &str) -> bool {
        let Some(shard) = reply_shard(reply) else {
            return false;
        };
        let Some(p) = self.shard(shard).take(reply) else {
            return false;
        };
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.answered.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = p.timer {
            core.clock().cancel(t);
        }
        let line = result_line(&p.id, data);
        match &p.slot {
            Some(slot) => slot.put(line),
            None => {
                core.push_line(p.conn, &line);
            }
        }
        true
    }

    /// Gives up an HTTP waiter's entry (its thread timed out); false when
    /// an answer took it first.
    pub fn abandon(&self, reply: &str) -> bool {
        let Some(shard) = reply_shard(reply) else {
            return false;
        };
        let gone = self.shard(shard).take(reply).is_some();
        if gone {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        gone
    }

    /// Forgets a closed connection's requests (answers to them find
    /// nothing).
    pub fn drop_conn(&self, core: &dyn InboxHost, conn: u64) {
        let mut sh = self.shard(conn_shard(conn));
        let Some(replies) = sh.by_conn.remove(&conn) else {
            return;
        };
        for r in replies {
            if let Some(p) = sh.map.remove(&r) {
                self.total.fetch_sub(1, Ordering::AcqRel);
                if let Some(t) = p.timer {
                    core.clock().cancel(t);
                }
            }
        }
    }

    /// Every connection's waiting request, for the next generation (HTTP
    /// waiters stay: their threads answer them here). They stay here too,
    /// timers armed, in case the handover fails and this generation serves
    /// again; while it is frozen its timers only wait ([`Inbox::expire`]),
    /// and the messages that could answer them go to the successor.
    pub fn snapshot(&self) -> Vec<PendingSnap> {
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..SHARDS {
            let sh = self.shard(i);
            for (conn, replies) in &sh.by_conn {
                for r in replies {
                    let Some(p) = sh.map.get(r) else {
                        continue;
                    };
                    out.push(PendingSnap {
                        reply: r.to_string(),
                        conn: *conn,
                        id: p.id.to_string(),
                        topic: p.topic.to_string(),
                        timeout_ms: p.timeout_ms,
                        remaining_ms: p.deadline.saturating_duration_since(now).as_millis() as u64,
                    });
                }
            }
        }
        out
    }

    /// Takes over the previous generation's waiting requests and re-arms
    /// their timers.
    pub fn restore(&self, core: &dyn InboxHost, snaps: Vec<PendingSnap>) {
        let now = Instant::now();
        for s in snaps {
            let Some(shard) = reply_shard(&s.reply).filter(|_| s.conn != 0) else {
                continue;
            };
            if core.conn_closed(s.conn) {
                // Its requester closed during the handover.
                continue;
            }
            let reply: Box<str> = s.reply.into();
            let deadline = now + Duration::from_millis(s.remaining_ms);
            {
                let mut sh = self.shard(shard);
                sh.by_conn.entry(s.conn).or_default().push(reply.clone());
                sh.map.insert(
                    reply.clone(),
                    Pending {
                        conn: s.conn,
                        id: s.id.into(),
                        topic: s.topic.into(),
                        timeout_ms: s.timeout_ms,
                        deadline,
                        timer: None,
                        slot: None,
                    },
                );
            }
            self.total.fetch_add(1, Ordering::AcqRel);
            self.arm(core, shard, &reply, deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Core;
    use crate::host::HostApi;
    use module_api::CallStatus;

    /// Records every pushed line.
    #[derive(Default)]
    struct Lines(Mutex<Vec<(u64, String)>>);

    impl HostApi for Lines {
        fn push_many(&self, conns: &[u64], data: &[u8], _notice: &[u8]) -> usize {
            let mut l = self.0.lock().unwrap();
            for c in conns {
                l.push((*c, String::from_utf8_lossy(data).into_owned()));
            }
            conns.len()
        }
        fn call(&self, _module: &str, _input: &[u8]) -> Result<Vec<u8>, CallStatus> {
            Err(CallStatus::NoSuchModule)
        }
        fn wait_begin(&self) -> u64 {
            0
        }
        fn wait_end(&self, _token: u64) {}
        fn peer_identity(&self, _conn: u64) -> Vec<String> {
            Vec::new()
        }
    }

    fn core_with(cfg: serde_json::Value) -> (Arc<Core>, &'static Lines, crate::testdir::TestDir) {
        let host: &'static Lines = Box::leak(Box::default());
        let dir = crate::testdir::TestDir::new("inbox");
        let cfg = crate::config::Config::from_json(&cfg, dir.path()).unwrap();
        let store = crate::store::Store::new(&cfg.db, cfg.cache_bytes);
        let core = Arc::new(Core::new(cfg, store, host).unwrap());
        core.inbox.bind(&core);
        (core, host, dir)
    }

    fn lines(host: &Lines) -> Vec<(u64, serde_json::Value)> {
        let l = host.0.lock().unwrap();
        l.iter()
            .map(|(c, s)| (*c, serde_json::from_str(s).unwrap()))
            .collect()
    }

    #[test]
    fn reply_subjects_are_random_and_name_their_shard() {
        let inbox = Inbox::new(10, 10);
        let mut seen = std::collections::HashSet::new();
        for i in 0..2000 {
            let shard = i % SHARDS;
            let r = inbox.new_reply(shard).unwrap();
            assert_eq!(r.len(), INBOX_PREFIX.len() + 23, "{r}");
            assert_eq!(reply_shard(&r), Some(shard));
            assert!(crate::subject::check_topic(&r, false).is_ok(), "{r}");
            assert!(seen.insert(r));
        }
        assert_eq!(reply_shard("_INBOX."), None);
        assert_eq!(reply_shard("x.y"), None);
    }

    #[test]
    fn the_first_answer_wins_and_a_late_one_finds_nothing() {
        let (core, host, _dir) = core_with(serde_json::json!({}));
        let r = core
            .inbox
            .register(&*core, 5, "7", "svc", 10_000, Wait::Timer)
            .unwrap();
        assert_eq!(core.inbox.len(), 1);
        assert!(core.inbox.answer(&*core, &r, r#"{"a":1}"#));
        assert!(!core.inbox.answer(&*core, &r, "2"), "once");
        core.inbox.late_replies.fetch_add(1, Ordering::Relaxed);
        assert_eq!(core.inbox.len(), 0);
        assert_eq!(core.clock.pending(), 0, "timer cancelled");
        assert_eq!(
            lines(host),
            [(
                5,
                serde_json::json!({"jsonrpc":"2.0","result":{"a":1},"id":7})
            )]
        );
        assert_eq!(core.inbox.late_replies.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_request_times_out_with_its_id() {
        let (core, host, _dir) = core_with(serde_json::json!({}));
        let r = core
            .inbox
            .register(&*core, 5, "\"x\"", "svc.t", 30, Wait::Timer)
            .unwrap();
        std::thread::sleep(Duration::from_millis(15));
        assert!(lines(host).is_empty(), "not before its time");
        let end = Instant::now() + Duration::from_secs(5);
        while lines(host).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let l = lines(host);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1["id"], "x");
        assert_eq!(l[0].1["error"]["code"], code::TIMEOUT);
        assert_eq!(
            l[0].1["error"]["message"],
            "request to \"svc.t\" timed out after 30 ms"
        );
        assert!(!core.inbox.answer(&*core, &r, "1"));
        assert!(core.inbox.is_empty());
    }

    #[test]
    fn limits_and_close() {
        let (core, host, _dir) = core_with(
            serde_json::json!({"max_pending_requests": 2, "max_pending_requests_total": 3}),
        );
        let a = core
            .inbox
            .register(&*core, 1, "1", "t", 10_000, Wait::Timer)
            .unwrap();
        core.inbox
            .register(&*core, 1, "2", "t", 10_000, Wait::Timer)
            .unwrap();
        let e = core
            .inbox
            .register(&*core, 1, "3", "t", 10_000, Wait::Timer)
            .unwrap_err();
        assert_eq!(e.code, code::LIMIT);
        assert!(e.message.contains("max_pending_requests)"), "{}", e.message);
        core.inbox
            .register(&*core, 2, "1", "t", 10_000, Wait::Timer)
            .unwrap();
        let e = core
            .inbox
            .register(&*core, 3, "1", "t", 10_000, Wait::Timer)
            .unwrap_err();
        assert!(
            e.message.contains("max_pending_requests_total"),
            "{}",
            e.message
        );
        core.inbox.drop_conn(&*core, 1);
        assert_eq!(core.inbox.len(), 1);
        assert_eq!(core.clock.pending(), 1);
        assert!(!core.inbox.answer(&*core, &a, "1"), "its requester closed");
        core.inbox
            .register(&*core, 3, "1", "t", 10_000, Wait::Timer)
            .unwrap();
        assert!(lines(host).is_empty());
    }

    #[test]
    fn http_waiters_get_the_answer_in_their_slot() {
        let (core, _host, _dir) = core_with(serde_json::json!({}));
        let slot = Arc::new(Slot::default());
        let r = core
            .inbox
            .register(&*core, 0, "3", "t", 10_000, Wait::Slot(slot.clone()))
            .unwrap();
        assert_eq!(core.clock.pending(), 0, "the waiter times itself");
        assert!(core.inbox.answer(&*core, &r, "\"ok\""));
        let line = slot.wait(Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(line, b"{\"jsonrpc\":\"2.0\",\"result\":\"ok\",\"id\":3}\n");
        let r = core
            .inbox
            .register(&*core, 0, "4", "t", 10_000, Wait::Slot(slot.clone()))
            .unwrap();
        assert!(slot.wait(Instant::now()).is_none());
        assert!(core.inbox.abandon(&r));
        assert!(!core.inbox.answer(&*core, &r, "1"));
    }

    #[test]
    fn pending_requests_move_to_the_next_generation() {
        let (core, _host, _dir) = core_with(serde_json::json!({}));
        let r = core
            .inbox
            .register(&*core, 9, "1", "t", 10_000, Wait::Timer)
            .unwrap();
        let snap = core.inbox.snapshot();
        assert_eq!(core.inbox.len(), 1, "kept in case the handover fails");
        assert_eq!(snap.len(), 1);
        assert!(snap[0].remaining_ms > 9_000 && snap[0].remaining_ms <= 10_000);
        let (next, host, _dir2) = core_with(serde_json::json!({}));
        next.inbox.restore(&*next, snap);
        assert_eq!(next.clock.pending(), 1);
        assert!(next.inbox.answer(&*next, &r, "5"));
        assert_eq!(
            lines(host)[0],
            (9, serde_json::json!({"jsonrpc":"2.0","result":5,"id":1}))
        );
    }

    /// A request registered in the writer's batch waits for the batch:
    /// no timer until it commits, and gone without a word if it fails.
    #[test]
    fn after_commit_requests_wait_for_the_batch() {
        let (core, host, _dir) = core_with(serde_json::json!({}));
        let wait = || Wait::AfterCommit;
        let a = core
            .inbox
            .register(&*core, 5, "1", "t", 20, wait())
            .unwrap();
        assert_eq!(core.clock.pending(), 0, "not armed before the commit");
        core.inbox.settle(&*core, true);
        assert_eq!(core.clock.pending(), 1);
        core.inbox.settle(&*core, true);
        assert_eq!(core.clock.pending(), 1, "settled once");
        core.inbox
            .register(&*core, 5, "2", "t", 20, wait())
            .unwrap();
        core.inbox
            .register(&*core, 6, "3", "t", 20, wait())
            .unwrap();
        core.inbox.drop_conn(&*core, 6);
        core.inbox.settle(&*core, false);
        assert_eq!(core.inbox.len(), 1, "only the committed one waits");
        let end = Instant::now() + Duration::from_secs(5);
        while lines(host).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let l = lines(host);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!((l[0].0, &l[0].1["id"]), (5, &serde_json::json!(1)));
        assert_eq!(l[0].1["error"]["code"], code::TIMEOUT);
        assert!(!core.inbox.answer(&*core, &a, "1"));
        assert!(core.inbox.is_empty());
    }

    /// A `bus.request` pipelined behind a write on one connection is
    /// evaluated in the writer's batch. When that batch fails to commit,
    /// the writer answers both calls with -32020 and the request never
    /// goes out: no timer may answer it again with -32033 (nor hold a
    /// place in the inbox). When the batch commits, its timer runs.
    #[test]
    fn a_request_of_a_failed_batch_is_answered_once() {
        use crate::access::{Peer, Who};
        use crate::types::Kind;
        use crate::writer::{Start, Writer};
        let (core, host, dir) = core_with(serde_json::json!({}));
        core.bus.subscribe(8, &["svc".to_string()]).unwrap();
        let path = dir.path().join("rpc.sqlite");
        let db = crate::db::Db::open(&path, crate::config::SyncMode::Normal).unwrap();
        db.make_read_only();
        let owner = crate::owner::Owner::try_acquire(&crate::owner::Owner::lock_path(&path))
            .unwrap()
            .unwrap();
        let writer = Writer::spawn(core.clone(), Start::Ready { db, owner }).unwrap();
        let lines_in = concat!(
            r#"{"jsonrpc":"2.0","method":"kv.set","params":["a",1],"id":1}"#,
            "\n",
            r#"{"jsonrpc":"2.0","method":"bus.request","params":["svc",1,30],"id":2}"#,
            "\n"
        );
        let call = |input: &str| {
            let r = writer
                .call(
                    5,
                    Who::Internal,
                    Peer::UNKNOWN,
                    Kind::Lines,
                    input.into(),
                    usize::MAX,
                )
                .unwrap();
            String::from_utf8(r.out).unwrap()
        };
        let out = call(lines_in);
        let replies: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(replies.len(), 2, "{out}");
        for (r, id) in replies.iter().zip([1, 2]) {
            assert_eq!(r["id"], id, "{r}");
            assert_eq!(r["error"]["code"], code::STORAGE, "{r}");
        }
        assert_eq!(core.inbox.len(), 0, "dropped with its batch");
        std::thread::sleep(Duration::from_millis(150));
        assert!(lines(host).is_empty(), "answered twice: {:?}", lines(host));

        // A request in a batch that commits (nothing to write) goes out
        // and times out as ever.
        let out = call(concat!(
            r#"{"jsonrpc":"2.0","method":"bus.request","params":["svc",1,30],"id":3}"#,
            "\n"
        ));
        assert_eq!(out, "", "answered later");
        let end = Instant::now() + Duration::from_secs(5);
        while lines(host).iter().all(|(c, _)| *c != 5) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let l = lines(host);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[0].0, 8, "the request went out");
        assert_eq!(l[1], (5, l[1].1.clone()));
        assert_eq!(l[1].1["id"], 3);
        assert_eq!(l[1].1["error"]["code"], code::TIMEOUT);
        writer.stop();
    }

    #[test]
    fn a_frozen_generation_times_out_nothing_until_it_serves_again() {
        let (core, host, _dir) = core_with(serde_json::json!({}));
        core.inbox
            .register(&*core, 9, "1", "t", 20, Wait::Timer)
            .unwrap();
        *core.gate.write().unwrap() = Mode::Frozen;
        std::thread::sleep(Duration::from_millis(150));
        assert!(lines(host).is_empty(), "the successor answers it");
        assert_eq!(core.inbox.len(), 1);
        *core.gate.write().unwrap() = Mode::Live;
        let end = Instant::now() + Duration::from_secs(5);
        while lines(host).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lines(host)[0].1["error"]["code"], code::TIMEOUT);
    }
}
