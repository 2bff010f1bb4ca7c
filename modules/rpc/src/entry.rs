//! The values the store and the database pass between them: a stored
//! [`Entry`], a cache [`Row`] (an entry or "no such key"), and a batch's
//! uncommitted changes ([`Overlay`]) that the writer commits to SQLite
//! ([`crate::db`]) and then makes visible in the cache
//! ([`crate::store`]), with the revisions the batch took and, while
//! someone watches, its events in revision order ([`Event`], for
//! [`crate::watch`]). Nearly a leaf: it imports only the leaves
//! [`crate::clock`] and [`crate::stream_sql`].

use std::collections::HashMap;

pub use crate::clock::now_ms;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value as compact JSON text (never `null`).
    pub value: Box<str>,
    /// Expiry in [`now_ms`] time; 0 for none.
    pub expires_at: u64,
    /// The store revision of the write that stored it (0 until the
    /// writer's view assigns one: see [`crate::store::View::put`]).
    pub rev: u64,
}

impl Entry {
    /// Whether the entry is still visible at `now`.
    pub fn live(&self, now: u64) -> bool {
        self.expires_at == 0 || self.expires_at > now
    }
}

/// A row as the cache knows it: `None` means "no such key".
pub type Row = Option<Entry>;

/// Rows read from SQLite for a batch, to cache once it is evaluated.
pub type Fills = Vec<(Box<str>, Row)>;

/// What happened to a key, as a watch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Set,
    Del,
    Expire,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::Del => "del",
            Op::Expire => "expire",
        }
    }
}

/// One change for the watches: the key, what happened, its revision and
/// (for a set) the new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub key: Box<str>,
    pub op: Op,
    pub rev: u64,
    pub value: Option<Box<str>>,
}

/// Uncommitted changes of one batch, what they do to the totals, and the
/// rows read from SQLite while evaluating it.
#[derive(Debug, Default)]
pub struct Overlay {
    changes: HashMap<Box<str>, Row>,
    keys: i64,
    bytes: i64,
    fills: Fills,
    /// Changes to the stream tables, written in the same transaction
    /// ([`crate::streams`]).
    pub streams: Vec<crate::stream_sql::Op>,
    /// The last revision the batch took (0: none).
    last_rev: u64,
    /// The batch's events, kept only while someone watches (`None`
    /// otherwise, so that a write nobody watches costs nothing more).
    events: Option<Vec<Event>>,
    /// Watches the batch's `kv.watch` calls made (dropped again if the
    /// batch fails to commit).
    watches: Vec<u64>,
}

impl Overlay {
    /// Records that `key` becomes `row`; `before` is the size of its value
    /// as the batch saw it so far (`None`: absent).
    pub fn record(&mut self, key: &str, row: Row, before: Option<u64>) {
        let size = |v: Option<u64>| v.map_or(0, |v| key.len() as i64 + v as i64);
        let after = row.as_ref().map(|e| e.value.len() as u64);
        self.keys += after.is_some() as i64 - before.is_some() as i64;
        self.bytes += size(after) - size(before);
        self.changes.insert(key.into(), row);
    }

    /// Records the batch's events from now on (someone watches).
    pub fn keep_events(&mut self) {
        self.events.get_or_insert_with(Vec::new);
    }

    /// The next revision after `committed` (the store's) and what the
    /// batch took so far; taken by the caller.
    pub fn take_rev(&mut self, committed: u64) -> u64 {
        self.last_rev = self.last_rev.max(committed) + 1;
        self.last_rev
    }

    /// The last revision the batch took (0: none).
    pub fn last_rev(&self) -> u64 {
        self.last_rev
    }

    /// Adds an event (only while events are kept).
    pub fn event(&mut self, key: &str, row: &Row, rev: u64) {
        if let Some(events) = &mut self.events {
            events.push(Event {
                key: key.into(),
                op: if row.is_some() { Op::Set } else { Op::Del },
                rev,
                value: row.as_ref().map(|e| e.value.clone()),
            });
        }
    }

    /// The batch's events, in revision order (empty unless kept).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.take().unwrap_or_default()
    }

    /// Notes a watch the batch made.
    pub fn watch_made(&mut self, id: u64) {
        self.watches.push(id);
    }

    /// The watches the batch made.
    pub fn take_watches(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.watches)
    }

    /// What the batch adds to the key count and to the bytes.
    pub fn delta(&self) -> (i64, i64) {
        (self.keys, self.bytes)
    }

    pub fn changes(&self) -> impl Iterator<Item = (&str, &Row)> {
        self.changes.iter().map(|(k, r)| (&**k, r))
    }

    /// The batch's own row for `key`, if it changed it.
    pub fn get(&self, key: &str) -> Option<&Row> {
        self.changes.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.streams.is_empty()
    }

    pub fn len(&self) -> usize {
        self.changes.len() + self.streams.len()
    }

    /// Whether the batch changed `key`.
    pub fn changed(&self, key: &str) -> bool {
        self.changes.contains_key(key)
    }

    /// The batch's changes to look a key up in, beside the rows read
    /// from SQLite to add to (borrowed apart, so a reply can borrow a
    /// changed row while a read row is remembered, at no cost).
    pub fn changes_and_fills(&mut self) -> (&HashMap<Box<str>, Row>, &mut Fills) {
        (&self.changes, &mut self.fills)
    }

    /// The fills and the changes, for the store to make them visible
    /// once the batch has committed.
    pub fn into_parts(self) -> (Fills, HashMap<Box<str>, Row>) {
        (self.fills, self.changes)
    }

    /// The rows read from SQLite (kept when the batch fails to commit:
    /// they were committed before it).
    pub fn take_fills(&mut self) -> Fills {
        std::mem::take(&mut self.fills)
    }
}
