//! `kv.watch`: the watches connections hold on keys (a prefix or a
//! subject pattern), in memory, and the `kv.event` notifications they get.
//!
//! The writer is the only source of events: after a batch's `COMMIT` it
//! hands the batch's sets and deletes to [`Watches::publish`], and after
//! each purge the expired keys; so a watch sees the changes in revision
//! order, and never one that a failed commit took back. A write costs
//! nothing more while nobody watches: the writer asks [`Watches::active`]
//! (one atomic load) before it keeps any event.
//!
//! Each event is filtered by the watching connection's `kv_read` right on
//! the key (a prefix can span allowed and denied keys). A watch made with
//! `initial` first gets the current values: the writer reads them from
//! SQLite between batches, [`SCAN_CHUNK`] rows at a time
//! ([`Watches::scan_step`]), then sends `{"op":"ready"}`. While that scan
//! runs, a change to a key the scan has not reached yet is left to the
//! scan (which reads it as committed); a change behind it is sent live.
//!
//! Watches are handed to the next generation on `RELOAD`
//! ([`Watches::snapshot`], [`Watches::restore`]), and dropped with their
//! connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::access::pattern::Pattern;
use crate::access::{Right, Who};
use crate::db::Db;
use crate::entry::{Event, Op};
use crate::jsonrpc::{self, code, RpcError};

/// What the watches need from the generation that owns them (implemented
/// by [`crate::core::Core`]). A trait rather than the core itself, so
/// that the watches sit below the core (`docs/ARCHITECTURE.md`).
pub trait WatchHost: Send + Sync {
    /// Pushes one JSON line to one connection, framed for its transport;
    /// whether the connection exists.
    fn push_line(&self, conn: u64, line: &[u8]) -> bool;
}

/// Rows one step of an initial scan reads (the writer does one step per
/// scanning watch between batches, so writes never wait long for it).
pub const SCAN_CHUNK: usize = 256;

/// Which keys a watch covers.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Keys starting with it (`""`: every key).
    Prefix(String),
    /// Keys matching the subject pattern (`*` one segment, `>` the rest).
    Pattern(Pattern),
}

impl Filter {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Filter::Prefix(p) => key.starts_with(p.as_str()),
            Filter::Pattern(p) => p.matches(key),
        }
    }

    /// The start every covered key has (what a scan reads and what
    /// `kv_read` is checked on at watch time).
    pub fn prefix(&self) -> String {
        match self {
            Filter::Prefix(p) => p.clone(),
            Filter::Pattern(p) => p.literal_prefix(),
        }
    }
}

/// An initial scan in progress.
#[derive(Debug, Clone)]
struct Scan {
    /// The last key sent (`None`: none yet).
    after: Option<Box<str>>,
}

struct Watch {
    conn: u64,
    filter: Filter,
    /// Whose `kv_read` filters the events.
    who: Who,
    /// Events up to this revision came before the watch.
    from_rev: u64,
    scan: Option<Scan>,
}

impl Watch {
    /// Whether the watch reports `ev`.
    fn wants(&self, ev: &Event) -> bool {
        if ev.rev <= self.from_rev || !self.filter.matches(&ev.key) {
            return false;
        }
        if let Some(scan) = &self.scan {
            // Keys the scan has not reached yet: it reads them itself.
            match &scan.after {
                Some(a) if *ev.key <= **a => {}
                _ => return false,
            }
        }
        self.who.may(Right::KvRead, &ev.key)
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    map: BTreeMap<u64, Watch>,
    per_conn: HashMap<u64, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Watch> {
        let w = self.map.remove(&id)?;
        if let Some(n) = self.per_conn.get_mut(&w.conn) {
            *n -= 1;
            if *n == 0 {
                self.per_conn.remove(&w.conn);
            }
        }
        Some(w)
    }
}

/// A watch as handed to the next generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchSnap {
    pub id: u64,
    pub conn: u64,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    /// An initial scan still running, and where (`Some(None)`: not
    /// started).
    #[serde(default)]
    pub scan: Option<Option<String>>,
}

/// Every watch of a generation.
pub struct Watches {
    count: AtomicUsize,
    scanning: AtomicUsize,
    inner: Mutex<Inner>,
    max_per_conn: usize,
    max_total: usize,
}

impl Watches {
    pub fn new(max_per_conn: usize, max_total: usize) -> Watches {
        Watches {
            count: AtomicUsize::new(0),
            scanning: AtomicUsize::new(0),
            inner: Mutex::new(Inner {
                next: 1,
                ..Inner::default()
            }),
            max_per_conn,
            max_total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recount(&self, inner: &Inner) {
        self.count.store(inner.map.len(), Ordering::Release);
        let scanning = inner.map.values().filter(|w| w.scan.is_some()).count();
        self.scanning.store(scanning, Ordering::Release);
    }

    /// Whether anyone watches (one atomic load: the writer's check before
    /// it keeps a batch's events).
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Whether an initial scan waits for the writer.
    pub fn scanning(&self) -> bool {
        self.scanning.load(Ordering::Acquire) > 0
    }

    /// Number of watches.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a watch for `conn` that reports changes after revision
    /// `from_rev` (with the current values first when `initial`);
    /// returns its id, or -32050 at `max_watches` / `max_watches_total`.
    pub fn add(
        &self,
        conn: u64,
        filter: Filter,
        who: Who,
        from_rev: u64,
        initial: bool,
    ) -> Result<u64, RpcError> {
        let mut inner = self.lock();
        let mine = inner.per_conn.get(&conn).copied().unwrap_or(0);
        if mine >= self.max_per_conn {
            log::warn!("conn {conn}: refused a watch at max_watches ({mine})");
            return Err(RpcError::new(
                code::LIMIT,
                format!(
                    "this connection holds max_watches ({}) watches; kv.unwatch some",
                    self.max_per_conn
                ),
            ));
        }
        if inner.map.len() >= self.max_total {
            log::warn!(
                "conn {conn}: refused a watch at max_watches_total ({})",
                self.max_total
            );
            return Err(RpcError::new(
                code::LIMIT,
                format!(
                    "the server holds max_watches_total ({}) watches",
                    self.max_total
                ),
            ));
        }
        let id = inner.next;
        inner.next += 1;
        inner.map.insert(
            id,
            Watch {
                conn,
                filter,
                who,
                from_rev,
                scan: initial.then_some(Scan { after: None }),
            },
        );
        *inner.per_conn.entry(conn).or_default() += 1;
        self.recount(&inner);
        Ok(id)
    }

    /// Drops `conn`'s watch `id`; whether it had it.
    pub fn remove(&self, conn: u64, id: u64) -> bool {
        let mut inner = self.lock();
        if inner.map.get(&id).map(|w| w.conn) != Some(conn) {
            return false;
        }
        inner.remove(id);
        self.recount(&inner);
        true
    }

    /// Drops watches by id (those of a batch that failed to commit).
    pub fn drop_ids(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for id in ids {
            inner.remove(*id);
        }
        self.recount(&inner);
    }

    /// Drops every watch of a closed connection.
    pub fn remove_conn(&self, conn: u64) {
        if !self.active() {
            return;
        }
        let mut inner = self.lock();
        if !inner.per_conn.contains_key(&conn) {
            return;
        }
        let ids: Vec<u64> = inner
            .map
            .iter()
            .filter(|(_, w)| w.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            inner.remove(id);
        }
        self.recount(&inner);
    }

    /// Pushes the events (in revision order) to the watches that want
    /// them. Called by the writer after the changes committed.
    ///
    /// The lines are built under the table's lock and pushed after it is
    /// let go: `kv.unwatch` and connection closes take the lock on an event
    /// loop, and must not wait for events × watches pushes. Each watch
    /// still gets its events in revision order (they are pushed in the
    /// order built, and only the writer thread publishes). The price: an
    /// event built just before a `kv.unwatch` may reach the connection
    /// after its reply, as one already queued could before.
    pub fn publish(&self, core: &dyn WatchHost, events: &[Event]) {
        if events.is_empty() || !self.active() {
            return;
        }
        let targets: Vec<(u64, Vec<u8>)> = {
            let inner = self.lock();
            events
                .iter()
                .flat_map(|ev| {
                    inner
                        .map
                        .iter()
                        .filter(|(_, w)| w.wants(ev))
                        .map(|(id, w)| (w.conn, event_line(*id, ev)))
                })
                .collect()
        };
        for (conn, line) in &targets {
            core.push_line(*conn, line);
        }
    }

    /// One step of every initial scan: up to [`SCAN_CHUNK`] rows each,
    /// read from `db` (the committed state: the writer runs this between
    /// batches) and sent as `set` events; a scan that reached its end
    /// sends `ready`.
    pub fn scan_step(&self, core: &dyn WatchHost, db: &Db, now: u64) {
        if !self.scanning() {
            return;
        }
        let todo: Vec<(u64, String, Option<Box<str>>)> = self
            .lock()
            .map
            .iter()
            .filter_map(|(id, w)| {
                let scan = w.scan.as_ref()?;
                Some((*id, w.filter.prefix(), scan.after.clone()))
            })
            .collect();
        for (id, prefix, after) in todo {
            let rows = match db.scan_entries(after.as_deref(), &prefix, SCAN_CHUNK) {
                Ok(rows) => rows,
                Err(e) => {
                    log::warn!("watch {id}: reading the initial values failed, will retry: {e}");
                    continue;
                }
            };
            let done = rows.len() < SCAN_CHUNK;
            let mut inner = self.lock();
            let Some(w) = inner.map.get_mut(&id) else {
                continue;
            };
            for (key, e) in &rows {
                if e.live(now) && w.filter.matches(key) && w.who.may(Right::KvRead, key) {
                    let ev = Event {
                        key: key.clone(),
                        op: Op::Set,
                        rev: e.rev,
                        value: Some(e.value.clone()),
                    };
                    core.push_line(w.conn, &event_line(id, &ev));
                }
            }
            if done {
                w.scan = None;
                let mut line = Vec::with_capacity(96);
                line.extend_from_slice(
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"kv.event\",\"params\":{\"watch\":",
                );
                line.extend_from_slice(id.to_string().as_bytes());
                line.extend_from_slice(b",\"op\":\"ready\"}}\n");
                core.push_line(w.conn, &line);
                self.recount(&inner);
            } else if let (Some(scan), Some((last, _))) = (&mut w.scan, rows.last()) {
                scan.after = Some(last.clone());
            }
        }
    }

    /// The watches, for the next generation.
    pub fn snapshot(&self) -> Vec<WatchSnap> {
        let inner = self.lock();
        inner
            .map
            .iter()
            .map(|(id, w)| {
                let (prefix, pattern) = match &w.filter {
                    Filter::Prefix(p) => (Some(p.clone()), None),
                    Filter::Pattern(p) => (None, Some(p.as_str().to_string())),
                };
                WatchSnap {
                    id: *id,
                    conn: w.conn,
                    prefix,
                    pattern,
                    scan: w
                        .scan
                        .as_ref()
                        .map(|s| s.after.as_ref().map(|a| a.to_string())),
                }
            })
            .collect()
    }

    /// Takes over the previous generation's watches; `who` says who each
    /// connection acts as now (events are filtered by it). Every change
    /// this generation makes is new to them.
    pub fn restore(&self, snaps: Vec<WatchSnap>, who: impl Fn(u64) -> Who) {
        let mut inner = self.lock();
        for s in snaps {
            let filter = match (s.prefix, s.pattern) {
                (Some(p), None) => Filter::Prefix(p),
                (None, Some(p)) => match Pattern::parse(&p) {
                    Ok(p) => Filter::Pattern(p),
                    Err(e) => {
                        log::warn!("dropping handed-over watch {} ({p:?}): {e}", s.id);
                        continue;
                    }
                },
                _ => continue,
            };
            inner.map.insert(
                s.id,
                Watch {
                    conn: s.conn,
                    filter,
                    who: who(s.conn),
                    from_rev: 0,
                    scan: s.scan.map(|after| Scan {
                        after: after.map(Into::into),
                    }),
                },
            );
            *inner.per_conn.entry(s.conn).or_default() += 1;
            inner.next = inner.next.max(s.id + 1);
        }
        self.recount(&inner);
    }
}

/// The `kv.event` line of `ev` for watch `id`.
fn event_line(id: u64, ev: &Event) -> Vec<u8> {
    let size = ev.key.len() + ev.value.as_ref().map_or(0, |v| v.len()) + 128;
    let mut line = Vec::with_capacity(size);
    line.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"kv.event\",\"params\":{\"watch\":");
    line.extend_from_slice(id.to_string().as_bytes());
    line.extend_from_slice(b",\"key\":");
    jsonrpc::write_str(&mut line, &ev.key);
    line.extend_from_slice(b",\"op\":\"");
    line.extend_from_slice(ev.op.name().as_bytes());
    line.extend_from_slice(b"\",\"revision\":");
    line.extend_from_slice(ev.rev.to_string().as_bytes());
    if let Some(v) = &ev.value {
        line.extend_from_slice(b",\"value\":");
        line.extend_from_slice(v.as_bytes());
    }
    line.extend_from_slice(b"}}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(key: &str, rev: u64) -> Event {
        Event {
            key: key.into(),
            op: Op::Set,
            rev,
            value: Some("1".into()),
        }
    }

    #[test]
    fn filters_limits_and_lines() {
        let w = Watches::new(2, 3);
        assert!(!w.active());
        let a = w
            .add(1, Filter::Prefix("a.".into()), Who::Internal, 5, false)
            .unwrap();
        let pat = Filter::Pattern(Pattern::parse("b.*.c").unwrap());
        assert_eq!(pat.prefix(), "b.");
        w.add(1, pat, Who::Internal, 0, true).unwrap();
        assert!(w.active() && w.scanning());
        let e = w
            .add(1, Filter::Prefix(String::new()), Who::Internal, 0, false)
            .unwrap_err();
        assert_eq!(e.code, code::LIMIT);
        assert!(e.message.contains("max_watches (2)"), "{}", e.message);
        w.add(2, Filter::Prefix(String::new()), Who::Internal, 0, false)
            .unwrap();
        let e = w
            .add(3, Filter::Prefix(String::new()), Who::Internal, 0, false)
            .unwrap_err();
        assert!(e.message.contains("max_watches_total (3)"), "{}", e.message);
        {
            let inner = w.lock();
            let wa = &inner.map[&a];
            assert!(!wa.wants(&ev("a.x", 5)), "before the watch");
            assert!(wa.wants(&ev("a.x", 6)));
            assert!(!wa.wants(&ev("b.x", 6)));
        }
        assert!(!w.remove(2, a), "not this connection's");
        assert!(w.remove(1, a));
        assert!(!w.remove(1, a));
        w.remove_conn(1);
        assert_eq!(w.len(), 1);
        assert!(!w.scanning());
        let line = event_line(
            7,
            &Event {
                key: "k\"".into(),
                op: Op::Del,
                rev: 9,
                value: None,
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            v["params"],
            serde_json::json!({"watch":7,"key":"k\"","op":"del","revision":9})
        );
        assert_eq!(*line.last().unwrap(), b'\n');
    }

    /// Records pushes, and whether the watch table was free at each.
    struct Recorder<'a> {
        watches: &'a Watches,
        pushed: Mutex<Vec<(u64, serde_json::Value, bool)>>,
    }

    impl WatchHost for Recorder<'_> {
        fn push_line(&self, conn: u64, line: &[u8]) -> bool {
            let free = self.watches.inner.try_lock().is_ok();
            let v = serde_json::from_slice(line).unwrap();
            self.pushed.lock().unwrap().push((conn, v, free));
            true
        }
    }

    /// `publish` pushes with the table unlocked (a `kv.unwatch` or a close
    /// on an event loop does not wait for it), each watch's events in
    /// revision order, only to the watches that want them.
    #[test]
    fn publish_pushes_after_letting_go_of_the_table() {
        let w = Watches::new(10, 10);
        let a = w
            .add(1, Filter::Prefix("a.".into()), Who::Internal, 0, false)
            .unwrap();
        let all = w
            .add(2, Filter::Prefix(String::new()), Who::Internal, 0, false)
            .unwrap();
        let host = Recorder {
            watches: &w,
            pushed: Mutex::new(Vec::new()),
        };
        w.publish(&host, &[ev("a.1", 1), ev("b.1", 2), ev("a.2", 3)]);
        let pushed = host.pushed.into_inner().unwrap();
        assert!(pushed.iter().all(|p| p.2), "pushed under the lock");
        let seen = |conn: u64| -> Vec<(u64, String, u64)> {
            pushed
                .iter()
                .filter(|p| p.0 == conn)
                .map(|p| {
                    let params = &p.1["params"];
                    (
                        params["watch"].as_u64().unwrap(),
                        params["key"].as_str().unwrap().to_string(),
                        params["revision"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(seen(1), [(a, "a.1".into(), 1), (a, "a.2".into(), 3)]);
        assert_eq!(
            seen(2),
            [
                (all, "a.1".into(), 1),
                (all, "b.1".into(), 2),
                (all, "a.2".into(), 3)
            ]
        );
        assert_eq!(pushed.len(), 5);
    }

    #[test]
    fn a_scan_leaves_keys_ahead_of_it_to_itself() {
        let w = Watches::new(10, 10);
        let id = w
            .add(1, Filter::Prefix(String::new()), Who::Internal, 0, true)
            .unwrap();
        let mut inner = w.lock();
        let watch = inner.map.get_mut(&id).unwrap();
        assert!(!watch.wants(&ev("a", 1)), "nothing sent yet");
        watch.scan.as_mut().unwrap().after = Some("m".into());
        assert!(watch.wants(&ev("a", 1)), "behind the scan: live");
        assert!(watch.wants(&ev("m", 1)));
        assert!(!watch.wants(&ev("n", 1)), "ahead: the scan reads it");
        drop(inner);
        let snap = w.snapshot();
        assert_eq!(snap[0].scan, Some(Some("m".to_string())));
        let next = Watches::new(10, 10);
        next.restore(snap, |_| Who::Internal);
        assert!(next.scanning());
        let id2 = next
            .add(1, Filter::Prefix(String::new()), Who::Internal, 0, false)
            .unwrap();
        assert!(id2 > id, "ids are not reused");
    }
}
