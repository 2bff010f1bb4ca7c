//! Durable streams and consumers on SQLite (JetStream semantics): the
//! streams' configs and counters, their consumers' state, and the
//! delivery of stored messages to the connections attached to a
//! consumer.
//!
//! Ownership: [`State`] is changed on the writer thread only (the
//! `stream.*`/`consumer.*` methods all go through the writer, and so does
//! a `bus.publish` to a covered subject); timers and closing connections
//! hand their work to it through a [`Runner`]. A method changes the state
//! at once and records the [`Op`]s for SQLite in the batch overlay; they
//! are written in the batch's transaction, so an append is durable before
//! its reply. If that commit fails, the state is reloaded from SQLite
//! ([`Streams::failed`]): nothing acknowledged is lost, and what was
//! pending is delivered again. Messages are delivered only after the
//! commit ([`Streams::after_batch`]), a bounded chunk per consumer and
//! step, so a consumer catching up on a long stream never holds back
//! writes.
//!
//! Only acknowledgements are persisted (floor plus the sparse set above
//! it, [`consumer`]); deliveries are not, so a restart delivers every
//! unacknowledged message again and never an acknowledged one. A reload
//! hands the in-memory state over ([`Streams::snapshot`]), so it delivers
//! nothing twice.
//!
//! Parts: [`store`] (SQL reads; the tables and writes are in
//! [`crate::stream_sql`]), [`index`] (subjects and names), [`consumer`]
//! (one consumer's state).

pub mod consumer;
pub mod index;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::clock::Clock;
use crate::config::Config;
use crate::jsonrpc::{code, RpcError};
use crate::types::Mode;

pub use crate::stream_sql::{Discard, Op, StreamConfig};
use consumer::{Consumer, ConsumerConfig, ConsumerSnap, Pending};

/// What the streams need from the generation that owns them (implemented
/// by [`crate::core::Core`]). A trait rather than the core itself, so
/// that the streams sit below the core (`docs/ARCHITECTURE.md`).
pub trait StreamsHost: Send + Sync {
    fn cfg(&self) -> &Config;
    fn clock(&self) -> &Clock;
    /// Whether the generation serves ([`crate::handoff`]).
    fn gate(&self) -> &RwLock<Mode>;
    /// Pushes one JSON line to one connection, framed for its transport;
    /// whether the connection exists.
    fn push_line(&self, conn: u64, line: &[u8]) -> bool;
    /// The owner's streams (this very value).
    fn streams(&self) -> &Streams;
}

/// Hands a closure to the writer thread, after the work queued so far;
/// `false` if the writer has stopped. Built by [`crate::writer`] from its
/// channel (the streams do not name the writer, which sits above them).
pub type Runner = Box<dyn Fn(Box<dyn FnOnce() + Send>) -> bool + Send + Sync>;

/// Messages read per consumer and delivery step.
const CHUNK: usize = 256;
/// Most messages one max_age round deletes per stream.
const MAX_EXPIRE: usize = 10_000;
/// How often max_age is enforced.
const AGE_CHECK: Duration = Duration::from_millis(100);
/// The earliest a redelivery timer fires after being armed (a message
/// that could not be delivered is not retried in a busy loop).
const MIN_TIMER: Duration = Duration::from_millis(5);

/// A stream: config and counters. Its messages are `first_seq ..=
/// last_seq` (none when `first_seq > last_seq`): only the oldest are
/// ever deleted.
#[derive(Debug, Clone)]
pub struct Stream {
    pub cfg: StreamConfig,
    pub created_ms: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
}

impl Stream {
    pub fn msgs(&self) -> u64 {
        (self.last_seq + 1).saturating_sub(self.first_seq)
    }

    fn state_op(&self) -> Op {
        Op::State {
            stream: self.cfg.name.clone(),
            first: self.first_seq,
            last: self.last_seq,
            bytes: self.bytes,
        }
    }

    /// What `stream.info` returns.
    pub fn info(&self, consumers: usize) -> serde_json::Value {
        let c = &self.cfg;
        serde_json::json!({
            "name": c.name, "subjects": c.subjects, "max_msgs": c.max_msgs,
            "max_bytes": c.max_bytes, "max_age_ms": c.max_age_ms,
            "max_msg_bytes": c.max_msg_bytes, "discard": c.discard.name(),
            "messages": self.msgs(), "bytes": self.bytes, "first_seq": self.first_seq,
            "last_seq": self.last_seq, "consumers": consumers,
        })
    }

    /// Whether `topic` is one of this stream's subjects.
    pub fn covers(&self, topic: &str) -> bool {
        self.cfg.subjects.iter().any(|s| index::matches(s, topic))
    }
}

/// A consumer's key: (stream, consumer).
pub type Key = (String, String);

/// How a consumer starts, when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deliver {
    All,
    New,
    Last,
    Seq(u64),
}

/// The writer-owned state of every stream and consumer.
#[derive(Default)]
pub struct State {
    loaded: bool,
    db: Option<Connection>,
    pub streams: BTreeMap<String, Stream>,
    pub consumers: BTreeMap<Key, Consumer>,
    /// Sizes of the messages appended by the batch being evaluated (not
    /// readable from SQLite yet).
    fresh: HashMap<(String, u64), u64>,
    /// Consumers that may have something to deliver.
    dirty: BTreeSet<Key>,
    /// A predecessor's consumer state, merged once the tables are loaded.
    handed: Vec<ConsumerSnap>,
    next_age_check: Option<Instant>,
    /// A delivery step is queued on the writer.
    scheduled: bool,
}

struct Hooks {
    core: Weak<dyn StreamsHost>,
    runner: Arc<Runner>,
}

/// The streams of one generation (a [`crate::core::Core`] field).
#[derive(Default)]
pub struct Streams {
    state: Mutex<State>,
    reg: index::Registration,
    hooks: OnceLock<Hooks>,
    /// Members attached to any consumer (a close costs nothing when 0).
    attached: AtomicUsize,
}

fn live(core: &dyn StreamsHost) -> bool {
    matches!(core.gate().try_read().as_deref(), Ok(Mode::Live))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The `params` of a `stream.message` (also an element of
/// `stream.fetch`'s result).
pub fn message_params(key: &Key, m: &store::Msg, deliveries: u32) -> String {
    format!(
        r#"{{"stream":{},"consumer":{},"seq":{},"subject":{},"data":{},"deliveries":{}}}"#,
        json_str(&key.0),
        json_str(&key.1),
        m.seq,
        json_str(&m.subject),
        m.data,
        deliveries
    )
}

impl Streams {
    /// Called once by the writer: where timers and closes send work.
    pub fn start(&self, core: Weak<dyn StreamsHost>, runner: Runner) {
        let _ = self.hooks.set(Hooks {
            core,
            runner: Arc::new(runner),
        });
    }

    /// Runs `f` on the writer thread with the core (nothing if the
    /// generation is gone).
    fn on_writer(&self, f: impl FnOnce(&dyn StreamsHost) + Send + 'static) {
        if let Some(h) = self.hooks.get() {
            let core = h.core.clone();
            (h.runner)(Box::new(move || {
                if let Some(core) = core.upgrade() {
                    f(&*core);
                }
            }));
        }
    }

    /// The state, loaded from SQLite on first use.
    pub fn lock(&self, cfg: &Config) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.loaded {
            if let Err(e) = st.load(cfg) {
                log::error!("cannot load the streams: {e}");
            }
            self.reg.set(st.subjects());
        }
        st
    }

    /// Loads the streams once the writer owns the database, and delivers
    /// what a predecessor left pending.
    pub fn open(&self, core: &dyn StreamsHost) {
        // Read again even if a call looked before (in standby the tables
        // may have changed under another owner).
        self.state.lock().unwrap_or_else(|e| e.into_inner()).loaded = false;
        let st = self.lock(core.cfg());
        self.attached.store(
            st.consumers.values().map(|c| c.members.len()).sum(),
            Ordering::Relaxed,
        );
        if !st.dirty.is_empty() {
            drop(st);
            self.schedule();
        }
    }

    fn schedule(&self) {
        self.on_writer(|core| core.streams().after_batch(core));
    }

    /// The predecessor's consumer state (before [`Streams::open`]).
    pub fn restore(&self, handed: Vec<ConsumerSnap>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).handed = handed;
    }

    /// The consumers' in-memory state for the next generation.
    pub fn snapshot(&self) -> Vec<ConsumerSnap> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        st.consumers.values().map(|c| c.snapshot(now)).collect()
    }

    /// After a batch committed (or had nothing to commit): delivers what
    /// became deliverable, a chunk per consumer; queues another step if
    /// more is left.
    pub fn after_batch(&self, core: &dyn StreamsHost) {
        if !live(core) {
            return;
        }
        let mut st = self.lock(core.cfg());
        st.fresh.clear();
        st.scheduled = false;
        let keys: Vec<Key> = std::mem::take(&mut st.dirty).into_iter().collect();
        let mut more = false;
        for k in keys {
            if st.pump(core, self, &k, None) {
                st.dirty.insert(k);
                more = true;
            }
        }
        if more && !st.scheduled {
            st.scheduled = true;
            drop(st);
            self.schedule();
        }
    }

    /// A batch failed to commit: back to what SQLite holds (members stay
    /// attached; what was pending is delivered again).
    pub fn failed(&self, core: &dyn StreamsHost) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let members: Vec<(Key, Vec<u64>)> = st
            .consumers
            .iter()
            .map(|(k, c)| (k.clone(), c.members.clone()))
            .collect();
        for c in st.consumers.values_mut() {
            if let Some((id, _)) = c.timer.take() {
                core.clock().cancel(id);
            }
        }
        st.loaded = false;
        st.fresh.clear();
        if let Err(e) = st.load(core.cfg()) {
            log::error!("cannot reload the streams: {e}");
        }
        let mut n = 0;
        for (k, m) in members {
            if let Some(c) = st.consumers.get_mut(&k) {
                n += m.len();
                c.members = m;
                st.dirty.insert(k);
            }
        }
        self.attached.store(n, Ordering::Relaxed);
        self.reg.set(st.subjects());
    }

    /// A connection closed: it leaves every consumer it was attached to.
    pub fn closed(&self, conn: u64) {
        if self.attached.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.on_writer(move |core| {
            let mut st = core.streams().lock(core.cfg());
            let keys: Vec<Key> = st.consumers.keys().cloned().collect();
            for k in keys {
                st.detach(core.streams(), &k, conn);
            }
            drop(st);
            core.streams().after_batch(core);
        });
    }

    /// A redelivery timer fired.
    fn wake(&self, core: &dyn StreamsHost, key: Key) {
        let mut st = self.lock(core.cfg());
        if let Some(c) = st.consumers.get_mut(&key) {
            c.timer = None;
            st.dirty.insert(key);
        }
        drop(st);
        self.after_batch(core);
    }

    /// Re-publishes the covered subjects after a create or a delete.
    pub fn reindex(&self, st: &State) {
        self.reg.set(st.subjects());
    }

    pub fn attached_delta(&self, up: bool) {
        if up {
            self.attached.fetch_add(1, Ordering::Relaxed);
        } else {
            self.attached.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Enforces max_age (writer housekeeping): returns the ops to write,
    /// applied to the state once `write` succeeds.
    pub fn expire(
        &self,
        core: &dyn StreamsHost,
        write: impl FnOnce(&[Op]) -> rusqlite::Result<()>,
    ) -> bool {
        let mut st = self.lock(core.cfg());
        let now = Instant::now();
        if st.next_age_check.is_some_and(|t| now < t) {
            return false;
        }
        st.next_age_check = Some(now + AGE_CHECK);
        let now_ms = crate::clock::now_ms();
        let mut ops = Vec::new();
        let mut next: Vec<Stream> = Vec::new();
        for s in st.streams.values() {
            if s.cfg.max_age_ms == 0 || s.msgs() == 0 {
                continue;
            }
            let cutoff = now_ms.saturating_sub(s.cfg.max_age_ms);
            let Some(db) = st.db.as_ref() else {
                return false;
            };
            let rows = match store::sizes_from(db, &s.cfg.name, s.first_seq, MAX_EXPIRE) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("cannot read stream {:?} for max_age: {e}", s.cfg.name);
                    continue;
                }
            };
            let mut n = s.clone();
            for (seq, at, size) in rows {
                if at >= cutoff {
                    break;
                }
                n.first_seq = seq + 1;
                n.bytes = n.bytes.saturating_sub(size);
            }
            if n.first_seq != s.first_seq {
                ops.push(Op::Trim {
                    stream: n.cfg.name.clone(),
                    below: n.first_seq,
                });
                ops.push(n.state_op());
                next.push(n);
            }
        }
        if ops.is_empty() {
            return false;
        }
        match write(&ops) {
            Ok(()) => {
                for n in next {
                    log::debug!(
                        "stream {:?}: dropped messages older than max_age",
                        n.cfg.name
                    );
                    st.streams.insert(n.cfg.name.clone(), n);
                }
                true
            }
            Err(e) => {
                log::warn!("cannot enforce max_age, will retry: {e}");
                false
            }
        }
    }
}

impl State {
    fn subjects(&self) -> impl Iterator<Item = String> + '_ {
        self.streams
            .values()
            .flat_map(|s| s.cfg.subjects.iter().cloned())
    }

    fn load(&mut self, cfg: &Config) -> Result<(), String> {
        self.loaded = true;
        if self.db.is_none() {
            self.db = Some(store::open_read(&cfg.db)?);
        }
        let db = self.db.as_ref().expect("opened above");
        let (streams, consumers) =
            store::load(db).map_err(|e| format!("cannot read the stream tables: {e}"))?;
        self.streams = streams
            .into_iter()
            .map(|s| (s.cfg.name.clone(), s))
            .collect();
        self.consumers = consumers
            .into_iter()
            .map(|c| ((c.cfg.stream.clone(), c.cfg.name.clone()), c))
            .collect();
        let now = Instant::now();
        for snap in std::mem::take(&mut self.handed) {
            let key = (snap.stream.clone(), snap.consumer.clone());
            if let Some(c) = self.consumers.get_mut(&key) {
                c.restore(&snap, now);
                self.dirty.insert(key);
            }
        }
        Ok(())
    }

    /// The bytes every stream's messages take (the batch's appends
    /// included); counted against `max_total_bytes` with the keys and
    /// values.
    pub fn bytes(&self) -> u64 {
        self.streams.values().map(|s| s.bytes).sum()
    }

    /// The stream covering `topic`.
    pub fn covering(&self, topic: &str) -> Option<&Stream> {
        self.streams.values().find(|s| s.covers(topic))
    }

    /// Consumers of `stream`.
    pub fn consumers_of(&self, stream: &str) -> usize {
        self.consumers.keys().filter(|k| k.0 == stream).count()
    }

    /// Creates a stream (or accepts the same config again): whether it
    /// was created. -32036 for another config or overlapping subjects.
    pub fn create(
        &mut self,
        cfg: StreamConfig,
        max_streams: usize,
        now_ms: u64,
        ops: &mut Vec<Op>,
    ) -> Result<bool, RpcError> {
        if let Some(s) = self.streams.get(&cfg.name) {
            if s.cfg == cfg {
                return Ok(false);
            }
            return Err(RpcError::new(
                code::STREAM_CONFLICT,
                format!(
                    "stream {:?} exists with another config (delete it first)",
                    cfg.name
                ),
            ));
        }
        for s in self.streams.values() {
            for a in &s.cfg.subjects {
                if let Some(b) = cfg.subjects.iter().find(|b| index::overlap(a, b)) {
                    return Err(RpcError::new(
                        code::STREAM_CONFLICT,
                        format!("subject {b:?} overlaps {a:?} of stream {:?}", s.cfg.name),
                    ));
                }
            }
        }
        if self.streams.len() >= max_streams {
            return Err(RpcError::new(
                code::LIMIT,
                format!("stream.create: max_streams ({max_streams}) reached"),
            ));
        }
        ops.push(Op::CreateStream(Box::new(cfg.clone()), now_ms));
        log::info!("stream {:?} created over {:?}", cfg.name, cfg.subjects);
        self.streams.insert(
            cfg.name.clone(),
            Stream {
                cfg,
                created_ms: now_ms,
                first_seq: 1,
                last_seq: 0,
                bytes: 0,
            },
        );
        Ok(true)
    }

    /// Deletes a stream, its messages and its consumers.
    pub fn delete(
        &mut self,
        streams: &Streams,
        core: &dyn StreamsHost,
        name: &str,
        ops: &mut Vec<Op>,
    ) -> bool {
        if self.streams.remove(name).is_none() {
            return false;
        }
        let keys: Vec<Key> = self
            .consumers
            .keys()
            .filter(|k| k.0 == name)
            .cloned()
            .collect();
        for k in keys {
            self.drop_consumer(streams, core, &k);
        }
        ops.push(Op::DeleteStream(name.to_string()));
        log::info!("stream {name:?} deleted");
        true
    }

    /// Removes a consumer from memory (the caller records the op).
    pub fn drop_consumer(&mut self, streams: &Streams, core: &dyn StreamsHost, key: &Key) -> bool {
        let Some(mut c) = self.consumers.remove(key) else {
            return false;
        };
        if let Some((id, _)) = c.timer.take() {
            core.clock().cancel(id);
        }
        for _ in &c.members {
            streams.attached_delta(false);
        }
        self.dirty.remove(key);
        true
    }

    /// The size of message `seq` of `stream`.
    fn size_of(&self, stream: &str, seq: u64) -> u64 {
        if let Some(s) = self.fresh.get(&(stream.to_string(), seq)) {
            return *s;
        }
        self.db
            .as_ref()
            .and_then(|db| store::sizes_from(db, stream, seq, 1).ok())
            .and_then(|r| r.first().copied())
            .map_or(0, |(_, _, size)| size)
    }

    /// Appends a message on `topic` to the stream covering it, within
    /// the batch: `Some((stream, seq))`, `None` if no stream covers it.
    /// -32050 naming the limit for a message that does not fit.
    pub fn append(
        &mut self,
        cfg: &Config,
        kv_bytes: u64,
        topic: &str,
        data: &str,
        now_ms: u64,
        ops: &mut Vec<Op>,
    ) -> Result<Option<(String, u64)>, RpcError> {
        let Some(name) = self.covering(topic).map(|s| s.cfg.name.clone()) else {
            return Ok(None);
        };
        let stream = name.as_str();
        let all_bytes = self.bytes();
        let s = &self.streams[stream];
        let size = store::msg_size(topic, data);
        let full = |what: &str, max: i64| {
            RpcError::new(
                code::LIMIT,
                format!("stream {stream:?} is full: {what} ({max}) reached (discard new)"),
            )
        };
        let c = &s.cfg;
        if data.len() as u64 > c.max_msg_bytes {
            return Err(RpcError::new(
                code::LIMIT,
                format!(
                    "stream {stream:?}: a message of {} bytes exceeds max_msg_bytes ({})",
                    data.len(),
                    c.max_msg_bytes
                ),
            ));
        }
        if c.max_bytes >= 0 && size > c.max_bytes as u64 {
            return Err(full("max_bytes", c.max_bytes));
        }
        if c.discard == Discard::New {
            if c.max_msgs >= 0 && s.msgs() + 1 > c.max_msgs as u64 {
                return Err(full("max_msgs", c.max_msgs));
            }
            if c.max_bytes >= 0 && s.bytes + size > c.max_bytes as u64 {
                return Err(full("max_bytes", c.max_bytes));
            }
        }
        let would = kv_bytes + all_bytes + size;
        if would > cfg.max_total_bytes {
            return Err(RpcError::new(
                code::LIMIT,
                format!(
                    "stream {stream:?}: the store would hold {would} bytes of keys, values and \
                     messages, over max_total_bytes ({})",
                    cfg.max_total_bytes
                ),
            ));
        }
        let mut s = s.clone();
        let seq = s.last_seq + 1;
        s.last_seq = seq;
        s.bytes += size;
        self.fresh.insert((stream.to_string(), seq), size);
        ops.push(Op::Append {
            stream: stream.to_string(),
            seq,
            at_ms: now_ms,
            subject: topic.to_string(),
            data: data.to_string(),
        });
        let first = s.first_seq;
        let (max_msgs, max_bytes) = (s.cfg.max_msgs, s.cfg.max_bytes);
        while s.msgs() > 1
            && ((max_msgs >= 0 && s.msgs() > max_msgs as u64)
                || (max_bytes >= 0 && s.bytes > max_bytes as u64))
        {
            s.bytes = s.bytes.saturating_sub(self.size_of(stream, s.first_seq));
            s.first_seq += 1;
        }
        if max_msgs == 0 {
            // A stream that keeps nothing: the message is dropped at once.
            s.bytes = 0;
            s.first_seq = seq + 1;
        }
        if s.first_seq != first {
            ops.push(Op::Trim {
                stream: stream.to_string(),
                below: s.first_seq,
            });
        }
        ops.push(s.state_op());
        self.streams.insert(stream.to_string(), s);
        let keys: Vec<Key> = self
            .consumers
            .iter()
            .filter(|(k, c)| k.0 == stream && !c.members.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        self.dirty.extend(keys);
        Ok(Some((name, seq)))
    }

    /// The floor a new consumer starts from.
    pub fn start_floor(&self, stream: &Stream, deliver: &Deliver, filter: Option<&str>) -> u64 {
        let before_first = stream.first_seq.saturating_sub(1);
        match deliver {
            Deliver::All => before_first,
            Deliver::New => stream.last_seq,
            Deliver::Seq(n) => n.saturating_sub(1).max(before_first),
            Deliver::Last => {
                let last = match (filter, self.db.as_ref()) {
                    (Some(f), Some(db)) => store::last_matching(
                        db,
                        &stream.cfg.name,
                        stream.last_seq,
                        MAX_EXPIRE,
                        |t| index::matches(f, t),
                    )
                    .ok()
                    .flatten(),
                    _ => Some(stream.last_seq),
                };
                last.map_or(stream.last_seq, |s| s.saturating_sub(1))
                    .max(before_first)
            }
        }
    }

    /// Creates a consumer in the batch.
    pub fn create_consumer(
        &mut self,
        cfg: ConsumerConfig,
        floor: u64,
        max_consumers: usize,
        now_ms: u64,
        ops: &mut Vec<Op>,
    ) -> Result<(), RpcError> {
        if self.consumers.len() >= max_consumers {
            return Err(RpcError::new(
                code::LIMIT,
                format!("stream.consume: max_consumers ({max_consumers}) reached"),
            ));
        }
        ops.push(Op::CreateConsumer(Box::new(cfg.clone()), floor, now_ms));
        log::info!("consumer {:?} of stream {:?} created", cfg.name, cfg.stream);
        let key = (cfg.stream.clone(), cfg.name.clone());
        self.consumers
            .insert(key, Consumer::new(cfg, now_ms, floor, BTreeSet::new()));
        Ok(())
    }

    /// Detaches `conn` from a consumer; its messages go to the others.
    pub fn detach(&mut self, streams: &Streams, key: &Key, conn: u64) -> bool {
        let Some(c) = self.consumers.get_mut(key) else {
            return false;
        };
        if !c.detach(conn, Instant::now()) {
            return false;
        }
        streams.attached_delta(false);
        self.dirty.insert(key.clone());
        true
    }

    /// Marks a consumer for the next delivery step.
    pub fn touch(&mut self, key: &Key) {
        self.dirty.insert(key.clone());
    }

    /// Delivers what a consumer can take: due redeliveries first, then
    /// new messages, at most [`CHUNK`] rows read. With `pull`, into it
    /// (at most its limit, for `stream.fetch`), else pushed to the
    /// members. Returns whether more is left to push.
    pub fn pump(
        &mut self,
        core: &dyn StreamsHost,
        streams: &Streams,
        key: &Key,
        mut pull: Option<(&mut Vec<String>, usize)>,
    ) -> bool {
        let now = Instant::now();
        let (Some(db), Some(c), Some(s)) = (
            self.db.as_ref(),
            self.consumers.get_mut(key),
            self.streams.get(&key.0),
        ) else {
            return false;
        };
        let pulling = pull.is_some();
        if !pulling && c.members.is_empty() {
            return false;
        }
        let cap = pull.as_ref().map_or(usize::MAX, |(_, n)| *n);
        // A fetch's reply stays near a line's size (the first message
        // always goes).
        let max_bytes = if pulling {
            core.cfg().max_line_bytes
        } else {
            usize::MAX
        };
        // (member, params) of each delivery, sent once the state is set.
        let mut out: Vec<(u64, String)> = Vec::new();
        let mut bytes = 0;
        let mut emit = |c: &mut Consumer, m: &store::Msg, member: u64, deliveries: u32| -> usize {
            c.pending.insert(
                m.seq,
                Pending {
                    member,
                    deliveries,
                    deadline: now + c.ack_wait(),
                },
            );
            let params = message_params(key, m, deliveries);
            let n = params.len();
            out.push((member, params));
            n
        };
        let mut taken = 0;
        for seq in c.due(now) {
            if taken >= cap || bytes >= max_bytes {
                break;
            }
            let p = c.pending[&seq];
            if !c.may_redeliver(p.deliveries) {
                log::info!(
                    "consumer {:?} of {:?}: message {seq} dropped after {} deliveries",
                    key.1,
                    key.0,
                    p.deliveries
                );
                c.terminated += 1;
                c.terminate(seq);
                continue;
            }
            let msg = match store::read_one(db, &key.0, seq) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    // Deleted by a limit meanwhile.
                    c.terminate(seq);
                    continue;
                }
                Err(e) => {
                    log::warn!("cannot read message {seq} of stream {:?}: {e}", key.0);
                    break;
                }
            };
            let member = if pulling {
                0
            } else {
                match c.next_member(p.member) {
                    Some(m) => m,
                    None => break,
                }
            };
            bytes += emit(c, &msg, member, p.deliveries + 1);
            taken += 1;
        }
        let mut read = 0;
        let mut more = false;
        c.next_seq = c.next_seq.max(s.first_seq);
        'chunks: while c.has_room() && taken < cap && bytes < max_bytes && c.next_seq <= s.last_seq
        {
            if read >= CHUNK {
                more = true;
                break;
            }
            let msgs = match store::read_from(db, &key.0, c.next_seq, CHUNK) {
                Ok(m) => m,
                Err(e) => {
                    log::warn!("cannot read stream {:?}: {e}", key.0);
                    break;
                }
            };
            if msgs.is_empty() {
                c.next_seq = s.last_seq + 1;
                break;
            }
            for m in msgs {
                if !c.has_room() || taken >= cap || bytes >= max_bytes {
                    break 'chunks;
                }
                read += 1;
                c.next_seq = m.seq + 1;
                let skip = c.acked.contains(&m.seq)
                    || c.cfg
                        .filter
                        .as_deref()
                        .is_some_and(|f| !index::matches(f, &m.subject));
                if skip {
                    continue;
                }
                let member = if pulling {
                    0
                } else {
                    c.next_member(0).unwrap_or(0)
                };
                bytes += emit(c, &m, member, 1);
                taken += 1;
            }
        }
        let mut gone = Vec::new();
        match &mut pull {
            Some((into, _)) => into.extend(out.into_iter().map(|(_, p)| p)),
            None => {
                for (member, params) in out {
                    let line = format!(
                        "{{\"jsonrpc\":\"2.0\",\"method\":\"stream.message\",\"params\":{params}}}\n"
                    );
                    if !core.push_line(member, line.as_bytes()) && !gone.contains(&member) {
                        gone.push(member);
                    }
                }
            }
        }
        c.settle();
        for g in gone {
            if c.detach(g, now) {
                streams.attached_delta(false);
                more = true;
            }
        }
        arm(core, streams, key, c);
        more && !pulling
    }
}

/// Keeps one timer per consumer, at its earliest redelivery deadline
/// (none while nobody is attached: a fetch or an attach looks then).
fn arm(core: &dyn StreamsHost, streams: &Streams, key: &Key, c: &mut Consumer) {
    let want = if c.members.is_empty() {
        None
    } else {
        c.earliest().map(|t| t.max(Instant::now() + MIN_TIMER))
    };
    if let (Some((_, at)), Some(w)) = (c.timer, want) {
        if at <= w && at + MIN_TIMER > w {
            return;
        }
    }
    if let Some((id, _)) = c.timer.take() {
        core.clock().cancel(id);
    }
    let (Some(w), Some(h)) = (want, streams.hooks.get()) else {
        return;
    };
    let (weak, runner, key) = (h.core.clone(), h.runner.clone(), key.clone());
    // The clock thread only hands the work over: it never takes the
    // streams' lock (the writer may hold it for a whole batch).
    let task = Box::new(move || {
        runner(Box::new(move || {
            if let Some(core) = weak.upgrade() {
                core.streams().wake(&*core, key);
            }
        }));
    });
    c.timer = Some((core.clock().at(w, task), w));
}

/// -32034 for a stream that does not exist.
pub fn no_stream(name: &str) -> RpcError {
    RpcError::new(code::NO_SUCH_STREAM, format!("no stream {name:?}"))
}

/// -32035 for a consumer that does not exist.
pub fn no_consumer(key: &Key) -> RpcError {
    RpcError::new(
        code::NO_SUCH_CONSUMER,
        format!("no consumer {:?} on stream {:?}", key.1, key.0),
    )
}

/// What `consumer.info` returns.
pub fn consumer_info(c: &Consumer) -> serde_json::Value {
    let deliver: serde_json::Value =
        serde_json::from_str(&c.cfg.deliver).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "stream": c.cfg.stream, "consumer": c.cfg.name, "filter": c.cfg.filter,
        "deliver": deliver, "ack_wait_ms": c.cfg.ack_wait_ms,
        "max_deliver": c.cfg.max_deliver, "max_ack_pending": c.cfg.max_ack_pending,
        "ack_floor": c.floor, "pending": c.pending.len(), "members": c.members.len(),
        "delivered_seq": c.next_seq.saturating_sub(1), "terminated": c.terminated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn cfg(name: &str, subject: &str, max_msgs: i64, discard: Discard) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subjects: vec![subject.into()],
            max_msgs,
            max_bytes: -1,
            max_age_ms: 0,
            max_msg_bytes: 100,
            discard,
        }
    }

    #[test]
    fn appends_enforce_limits_and_survive_a_reload_from_sqlite() {
        let (core, _dir) = crate::testing::core();
        let mut db = Db::open(&core.cfg.db, core.cfg.sync).unwrap();
        let mut ops = Vec::new();
        let mut st = core.streams.lock(&core.cfg);
        assert!(st
            .create(cfg("S", "s.>", 2, Discard::Old), 10, 1, &mut ops)
            .unwrap());
        assert!(!st
            .create(cfg("S", "s.>", 2, Discard::Old), 10, 1, &mut ops)
            .unwrap());
        let e = st
            .create(cfg("T", "*.x", -1, Discard::Old), 10, 1, &mut ops)
            .unwrap_err();
        assert_eq!(e.code, code::STREAM_CONFLICT, "{}", e.message);
        let e = st
            .create(cfg("T", "t", -1, Discard::New), 1, 1, &mut ops)
            .unwrap_err();
        assert_eq!(e.code, code::LIMIT, "max_streams 1");
        for i in 1..=3 {
            let got = st
                .append(&core.cfg, 0, "s.a", &i.to_string(), 5, &mut ops)
                .unwrap();
            assert_eq!(got, Some(("S".to_string(), i)));
        }
        let s = &st.streams["S"];
        assert_eq!((s.first_seq, s.last_seq, s.bytes), (2, 3, 8));
        let e = st
            .append(&core.cfg, 0, "s.a", &"x".repeat(101), 5, &mut ops)
            .unwrap_err();
        assert!(e.message.contains("max_msg_bytes"), "{}", e.message);
        assert_eq!(
            st.append(&core.cfg, 0, "t.a", "1", 5, &mut ops).unwrap(),
            None
        );
        db.write_streams(&ops).unwrap();
        drop(st);
        core.streams.failed(&*core);
        let st = core.streams.lock(&core.cfg);
        let s = &st.streams["S"];
        assert_eq!((s.first_seq, s.last_seq, s.bytes), (2, 3, 8), "as stored");
        let conn = st.db.as_ref().unwrap();
        assert!(!store::exists(conn, "S", 1).unwrap(), "trimmed");
        assert!(store::exists(conn, "S", 3).unwrap());
        assert!(index::covered("s.b"));
    }

    #[test]
    fn discard_new_refuses_naming_the_limit() {
        let (core, _dir) = crate::testing::core();
        let mut ops = Vec::new();
        let mut st = core.streams.lock(&core.cfg);
        st.create(cfg("N", "n", 1, Discard::New), 10, 1, &mut ops)
            .unwrap();
        st.append(&core.cfg, 0, "n", "1", 5, &mut ops).unwrap();
        let e = st.append(&core.cfg, 0, "n", "2", 5, &mut ops).unwrap_err();
        assert_eq!(e.code, code::LIMIT);
        assert!(e.message.contains("max_msgs (1)"), "{}", e.message);
        let e = st
            .append(&core.cfg, u64::MAX / 2, "n", "2", 5, &mut ops)
            .unwrap_err();
        assert!(
            e.message.contains("max_msgs"),
            "the stream's own limit first"
        );
    }

    #[test]
    fn a_consumer_gets_each_message_once_until_acked_and_persists_its_floor() {
        let (core, _dir) = crate::testing::core();
        let mut db = Db::open(&core.cfg.db, core.cfg.sync).unwrap();
        let mut ops = Vec::new();
        let mut st = core.streams.lock(&core.cfg);
        st.create(cfg("S", "s.*", -1, Discard::Old), 10, 1, &mut ops)
            .unwrap();
        for (i, subject) in ["s.a", "s.b", "s.a"].iter().enumerate() {
            st.append(&core.cfg, 0, subject, &i.to_string(), 5, &mut ops)
                .unwrap();
        }
        let c = ConsumerConfig {
            stream: "S".into(),
            name: "c".into(),
            filter: Some("s.a".into()),
            deliver: "\"all\"".into(),
            ack_wait_ms: 60_000,
            max_deliver: -1,
            max_ack_pending: 10,
        };
        st.create_consumer(c, 0, 10, 1, &mut ops).unwrap();
        db.write_streams(&std::mem::take(&mut ops)).unwrap();
        let key: Key = ("S".into(), "c".into());
        let mut got = Vec::new();
        st.pump(&*core, &core.streams, &key, Some((&mut got, 10)));
        let seqs: Vec<u64> = got
            .iter()
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(m).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 3], "the filter skips s.b");
        let mut again = Vec::new();
        st.pump(&*core, &core.streams, &key, Some((&mut again, 10)));
        assert!(again.is_empty(), "pending until acked or ack_wait");
        let c = st.consumers.get_mut(&key).unwrap();
        assert!(c.ack(3));
        assert_eq!((c.floor, c.acked.len()), (0, 1), "1 still pending");
        assert!(c.ack(1));
        assert_eq!(c.floor, 3);
        db.write_streams(&[Op::Acks {
            stream: "S".into(),
            consumer: "c".into(),
            floor: 3,
            above: vec![],
        }])
        .unwrap();
        drop(st);
        core.streams.failed(&*core);
        let st = core.streams.lock(&core.cfg);
        assert_eq!(st.consumers[&key].next_seq, 4, "resumes after the floor");
    }
}
