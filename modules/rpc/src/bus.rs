//! Publish/subscribe: which connection listens to which topic patterns.
//!
//! Topics are dot-separated names (`chat.room1`); a pattern may use `*` for
//! exactly one segment (`chat.*` matches `chat.room1`, not `chat` and not
//! `chat.room1.x`). Patterns live in a trie keyed by segment, so a publish
//! costs one walk over the topic's segments (two branches per `*` level),
//! whatever the number of subscriptions.
//!
//! The bus only knows connection ids; delivering is the caller's job
//! (see [`crate::Core::deliver`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use crate::jsonrpc::{code, RpcError};

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;

#[derive(Default)]
struct Node {
    exact: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Connections subscribed to the pattern that ends here.
    conns: Vec<u64>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.exact.is_empty() && self.star.is_none()
    }

    fn insert(&mut self, segs: &[&str], conn: u64) {
        match segs.split_first() {
            None => {
                if !self.conns.contains(&conn) {
                    self.conns.push(conn);
                }
            }
            Some((&"*", rest)) => self
                .star
                .get_or_insert_with(Default::default)
                .insert(rest, conn),
            Some((seg, rest)) => self
                .exact
                .entry((*seg).into())
                .or_default()
                .insert(rest, conn),
        }
    }

    /// Removes `conn` from the pattern and prunes empty branches.
    fn remove(&mut self, segs: &[&str], conn: u64) {
        match segs.split_first() {
            None => self.conns.retain(|&c| c != conn),
            Some((&"*", rest)) => {
                if let Some(star) = &mut self.star {
                    star.remove(rest, conn);
                    if star.is_empty() {
                        self.star = None;
                    }
                }
            }
            Some((seg, rest)) => {
                if let Some(child) = self.exact.get_mut(*seg) {
                    child.remove(rest, conn);
                    if child.is_empty() {
                        self.exact.remove(*seg);
                    }
                }
            }
        }
    }

    fn collect(&self, segs: &[&str], out: &mut Vec<u64>) {
        match segs.split_first() {
            None => out.extend_from_slice(&self.conns),
            Some((seg, rest)) => {
                if let Some(child) = self.exact.get(*seg) {
                    child.collect(rest, out);
                }
                if let Some(star) = &self.star {
                    star.collect(rest, out);
                }
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    root: Node,
    by_conn: HashMap<u64, BTreeSet<Box<str>>>,
    patterns: usize,
}

/// The subscription table of one generation.
pub struct Bus {
    inner: RwLock<Inner>,
    max_per_conn: usize,
}

/// Checks a topic (`pattern == false`) or a pattern.
pub fn check_topic(topic: &str, pattern: bool) -> Result<(), RpcError> {
    let what = if pattern { "pattern" } else { "topic" };
    let bad = |why: &str| {
        Err(RpcError::invalid_params(format!(
            "bad {what} {topic:?}: {why}"
        )))
    };
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return bad("must be 1 to 256 bytes");
    }
    let mut n = 0;
    for seg in topic.split('.') {
        n += 1;
        if seg.is_empty() {
            return bad("empty segment");
        }
        if seg.contains('*') && (!pattern || seg != "*") {
            return bad(if pattern {
                "`*` must be a whole segment"
            } else {
                "`*` is for patterns, not for published topics"
            });
        }
    }
    if n > MAX_SEGMENTS {
        return bad("too many segments");
    }
    Ok(())
}

impl Bus {
    pub fn new(max_per_conn: usize) -> Bus {
        Bus {
            inner: RwLock::new(Inner::default()),
            max_per_conn,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds patterns for `conn` (all or none); returns how many the
    /// connection has now.
    pub fn subscribe(&self, conn: u64, patterns: &[String]) -> Result<usize, RpcError> {
        for p in patterns {
            check_topic(p, true)?;
        }
        let mut inner = self.write();
        let have = inner.by_conn.get(&conn);
        let new = patterns
            .iter()
            .filter(|p| !have.is_some_and(|h| h.contains(p.as_str())))
            .collect::<BTreeSet<_>>();
        let total = have.map_or(0, BTreeSet::len) + new.len();
        if total > self.max_per_conn {
            return Err(RpcError::new(
                code::TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "too many subscriptions: at most {} per connection",
                    self.max_per_conn
                ),
            ));
        }
        for p in &new {
            let segs: Vec<&str> = p.split('.').collect();
            inner.root.insert(&segs, conn);
        }
        inner.patterns += new.len();
        let set = inner.by_conn.entry(conn).or_default();
        set.extend(new.into_iter().map(|p| p.as_str().into()));
        Ok(set.len())
    }

    /// Removes patterns (all of the connection's when `None`); returns how
    /// many remain.
    pub fn unsubscribe(&self, conn: u64, patterns: Option<&[String]>) -> usize {
        let mut inner = self.write();
        let Some(mut set) = inner.by_conn.remove(&conn) else {
            return 0;
        };
        let gone: Vec<Box<str>> = match patterns {
            None => std::mem::take(&mut set).into_iter().collect(),
            Some(ps) => ps
                .iter()
                .filter_map(|p| set.take(p.as_str()))
                .collect::<Vec<_>>(),
        };
        for p in &gone {
            let segs: Vec<&str> = p.split('.').collect();
            inner.root.remove(&segs, conn);
        }
        inner.patterns -= gone.len();
        let left = set.len();
        if left > 0 {
            inner.by_conn.insert(conn, set);
        }
        left
    }

    /// Forgets a closed connection.
    pub fn remove_conn(&self, conn: u64) {
        if self.read().by_conn.contains_key(&conn) {
            self.unsubscribe(conn, None);
        }
    }

    /// The connections subscribed to `topic` (each once).
    pub fn recipients(&self, topic: &str) -> Vec<u64> {
        let segs: Vec<&str> = topic.split('.').collect();
        let mut out = Vec::new();
        self.read().root.collect(&segs, &mut out);
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// (connections with subscriptions, patterns) for `STATUS`.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.by_conn.len(), inner.patterns)
    }

    /// Every connection's patterns, for the next generation.
    pub fn snapshot(&self) -> Vec<(u64, Vec<String>)> {
        self.read()
            .by_conn
            .iter()
            .map(|(c, ps)| (*c, ps.iter().map(|p| p.to_string()).collect()))
            .collect()
    }

    /// Restores a snapshot (patterns that no longer validate are dropped).
    pub fn restore(&self, subs: Vec<(u64, Vec<String>)>) {
        for (conn, patterns) in subs {
            let ok: Vec<String> = patterns
                .into_iter()
                .filter(|p| check_topic(p, true).is_ok())
                .collect();
            if let Err(e) = self.subscribe(conn, &ok) {
                log::warn!(
                    "dropping the subscriptions of conn {conn} on handover: {}",
                    e.message
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wildcard_matches_one_segment() {
        let bus = Bus::new(10);
        assert_eq!(bus.subscribe(1, &s(&["chat.*"])).unwrap(), 1);
        assert_eq!(bus.subscribe(2, &s(&["chat.room1", "*.room1"])).unwrap(), 2);
        assert_eq!(bus.subscribe(3, &s(&["chat"])).unwrap(), 1);
        assert_eq!(bus.recipients("chat.room1"), [1, 2]);
        assert_eq!(bus.recipients("chat.room2"), [1]);
        assert_eq!(bus.recipients("chat"), [3]);
        assert!(bus.recipients("chat.room1.x").is_empty());
        assert_eq!(bus.recipients("news.room1"), [2]);
        assert_eq!(bus.counts(), (3, 4));

        assert_eq!(bus.unsubscribe(2, Some(&s(&["chat.room1"]))), 1);
        assert_eq!(bus.recipients("chat.room1"), [1, 2]); // still via *.room1
        bus.remove_conn(2);
        assert_eq!(bus.recipients("chat.room1"), [1]);
        assert_eq!(bus.counts(), (2, 2));
        bus.remove_conn(1);
        bus.remove_conn(3);
        assert_eq!(bus.counts(), (0, 0));
        assert!(bus.read().root.is_empty(), "branches pruned");
    }

    #[test]
    fn limits_and_validation() {
        let bus = Bus::new(2);
        assert!(bus.subscribe(1, &s(&["a", "b", "c"])).is_err());
        assert_eq!(bus.subscribe(1, &s(&["a", "b", "a"])).unwrap(), 2);
        assert_eq!(bus.subscribe(1, &s(&["a"])).unwrap(), 2, "already there");
        assert_eq!(
            bus.subscribe(1, &s(&["c"])).unwrap_err().code,
            code::TOO_MANY_SUBSCRIPTIONS
        );
        for bad in ["", "a..b", "a.b*", ".a", "a."] {
            assert!(check_topic(bad, true).is_err(), "{bad:?}");
        }
        assert!(check_topic("a.*", false).is_err());
        assert!(check_topic("a.*.c", true).is_ok());
    }

    #[test]
    fn snapshot_round_trip() {
        let bus = Bus::new(10);
        bus.subscribe(7, &s(&["x.*", "y"])).unwrap();
        let next = Bus::new(10);
        next.restore(bus.snapshot());
        assert_eq!(next.recipients("x.1"), [7]);
        assert_eq!(next.recipients("y"), [7]);
    }
}
