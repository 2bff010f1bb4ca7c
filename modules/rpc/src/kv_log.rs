//! The write log's tail: the key changes committed to the `kv_log` table
//! but not yet folded into the `kv` table ([`crate::db`]), the last one
//! per key, so that reads through the database see them.
//!
//! Why a log: a batch of writes to random keys changes one b-tree page
//! per key, and SQLite writes each changed page to the WAL at every
//! commit — about a kilobyte of I/O and a full tree descent per write.
//! Appended to a rowid table instead, the same batch fills a few pages at
//! the end of one table. The fold thread then copies the tail into
//! `kv` once it is big or old enough ([`FOLD_ROWS`] keys, [`FOLD_BYTES`],
//! [`FOLD_AGE`]) or the writer is idle: in key order, in transactions of
//! a few hundred keys, where a page shared by several keys is written
//! once and a key written many times is written once; then it deletes
//! the log rows it covered. A commit to the log is as durable as a
//! commit to `kv` (same transaction rules, same sync mode), and log rows
//! are deleted only after `kv` holds their changes, so a crash at any
//! point leaves every committed write in the log or in `kv`; opening the
//! database folds what a crash left in the log (writing a key's last
//! change again is harmless).
//!
//! A leaf: only [`crate::entry`].

use std::collections::HashMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::entry::Row;

/// Keys in the tail at which it is folded.
pub const FOLD_ROWS: usize = 16_384;
/// Bytes of keys and values in the tail at which it is folded (so the
/// tail's memory stays bounded whatever the value sizes).
pub const FOLD_BYTES: usize = 8 << 20;
/// Age of the tail's oldest change at which it is folded even under load
/// (after an idle moment of the writer it is folded at once).
pub const FOLD_AGE: Duration = Duration::from_millis(500);

/// The last unfolded change of each key.
#[derive(Debug, Default)]
pub struct Tail {
    rows: HashMap<Box<str>, Row>,
    bytes: usize,
    since: Option<Instant>,
}

fn cost(key: &str, row: &Row) -> usize {
    key.len() + row.as_ref().map_or(0, |e| e.value.len())
}

impl Tail {
    /// Remembers that `key` became `row` in a committed log entry.
    pub fn record(&mut self, key: &str, row: &Row) {
        self.bytes += cost(key, row);
        if let Some(old) = self.rows.insert(key.into(), row.clone()) {
            self.bytes -= cost(key, &old).min(self.bytes);
        }
        self.since.get_or_insert_with(Instant::now);
    }

    /// The last unfolded change of `key` (`Some(None)`: deleted).
    pub fn get(&self, key: &str) -> Option<&Row> {
        self.rows.get(key)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the tail is big or old enough to fold under load.
    pub fn due(&self, now: Instant) -> bool {
        self.rows.len() >= FOLD_ROWS
            || self.bytes >= FOLD_BYTES
            || self.deadline().is_some_and(|d| d <= now)
    }

    /// When the tail must be folded at the latest (`None`: empty).
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + FOLD_AGE)
    }

    /// The changes in key order, for a fold.
    pub fn sorted(&self) -> Vec<(&str, &Row)> {
        let mut v: Vec<(&str, &Row)> = self.rows.iter().map(|(k, r)| (&**k, r)).collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Forgets everything (folded).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
        self.since = None;
    }

    /// The keys from `start` in order with their expiry (`None`: deleted),
    /// for [`merge_keys`].
    pub fn keys_from(&self, start: Bound<&str>) -> Vec<(&str, Option<u64>)> {
        let mut v: Vec<(&str, Option<u64>)> = self
            .rows
            .iter()
            .filter(|(k, _)| in_bound(k, start))
            .map(|(k, r)| (&**k, r.as_ref().map(|e| e.expires_at)))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// Whether `key` is at or after `start`.
pub fn in_bound(key: &str, start: Bound<&str>) -> bool {
    match start {
        Bound::Included(s) => key >= s,
        Bound::Excluded(s) => key > s,
        Bound::Unbounded => true,
    }
}

/// Calls `f(key, expires_at)` in key order for the keys of a table scan
/// (`scan` feeds its rows, in key order, to the callback it is given,
/// stopping when that returns `false`) under the tail `tail` (sorted,
/// from the same start; `None` = deleted): a key in the tail is reported
/// with the tail's expiry, or not at all if deleted there. Stops when `f`
/// returns `false`.
pub fn merge_keys<E>(
    tail: &[(&str, Option<u64>)],
    scan: impl FnOnce(&mut dyn FnMut(&str, u64) -> bool) -> Result<(), E>,
    mut f: impl FnMut(&str, u64) -> bool,
) -> Result<(), E> {
    let mut next = 0;
    let mut stopped = false;
    scan(&mut |key, at| {
        let mut shadowed = false;
        while let Some(&(k, row)) = tail.get(next) {
            if k > key {
                break;
            }
            next += 1;
            shadowed |= k == key;
            if let Some(at) = row {
                if !f(k, at) {
                    stopped = true;
                    return false;
                }
            }
        }
        if !shadowed && !f(key, at) {
            stopped = true;
            return false;
        }
        true
    })?;
    if !stopped {
        for &(k, row) in &tail[next..] {
            if let Some(at) = row {
                if !f(k, at) {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Entry;

    fn row(v: &str, at: u64) -> Row {
        Some(Entry {
            value: v.into(),
            expires_at: at,
            rev: 1,
        })
    }

    #[test]
    fn keeps_the_last_change_per_key_and_its_size() {
        let mut t = Tail::default();
        assert!(t.deadline().is_none());
        t.record("a", &row("12345", 0));
        t.record("a", &row("1", 0));
        t.record("b", &None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.bytes, 2 + 1);
        assert_eq!(t.get("a"), Some(&row("1", 0)));
        assert_eq!(t.get("b"), Some(&None));
        assert_eq!(t.get("c"), None);
        let now = Instant::now();
        assert!(!t.due(now));
        assert!(t.due(now + FOLD_AGE + Duration::from_millis(1)));
        let order: Vec<&str> = t.sorted().into_iter().map(|(k, _)| k).collect();
        assert_eq!(order, ["a", "b"]);
        t.clear();
        assert!(t.is_empty() && t.deadline().is_none() && t.bytes == 0);
    }

    #[test]
    fn folds_when_big() {
        let mut t = Tail::default();
        for i in 0..FOLD_ROWS {
            t.record(&format!("k{i}"), &row("1", 0));
        }
        assert!(t.due(Instant::now()));
        let mut t = Tail::default();
        t.record("big", &row(&"x".repeat(FOLD_BYTES), 0));
        assert!(t.due(Instant::now()));
    }

    fn merged(
        table: &[(&str, u64)],
        tail: &[(&str, Option<u64>)],
        stop_after: usize,
    ) -> Vec<String> {
        let mut out = Vec::new();
        merge_keys::<()>(
            tail,
            |f| {
                for &(k, at) in table {
                    if !f(k, at) {
                        break;
                    }
                }
                Ok(())
            },
            |k, at| {
                out.push(format!("{k}@{at}"));
                out.len() < stop_after
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn merges_a_scan_with_the_tail() {
        let table = [("a", 0), ("c", 0), ("e", 5)];
        let tail = [("b", Some(1)), ("c", None), ("e", Some(9)), ("f", Some(0))];
        assert_eq!(merged(&table, &tail, 100), ["a@0", "b@1", "e@9", "f@0"]);
        // Stops where the caller stops, in the table or in the tail.
        assert_eq!(merged(&table, &tail, 2), ["a@0", "b@1"]);
        assert_eq!(merged(&table, &tail, 4), ["a@0", "b@1", "e@9", "f@0"]);
        assert_eq!(merged(&[], &tail, 100), ["b@1", "e@9", "f@0"]);
        assert_eq!(merged(&table, &[], 100), ["a@0", "c@0", "e@5"]);
        // A deleted key after the table's last key is not reported.
        assert_eq!(merged(&[("a", 0)], &[("z", None)], 100), ["a@0"]);
    }

    #[test]
    fn keys_from_respects_the_start() {
        let mut t = Tail::default();
        for k in ["a", "b", "c"] {
            t.record(k, &row("1", 3));
        }
        let ks = |b| {
            t.keys_from(b)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(ks(Bound::Excluded("a")), ["b", "c"]);
        assert_eq!(ks(Bound::Included("b")), ["b", "c"]);
        assert_eq!(ks(Bound::Unbounded), ["a", "b", "c"]);
    }
}
