//! Publish/subscribe: which connection listens to which topic patterns.
//!
//! Topics are dot-separated names (`chat.room1`). A pattern may use `*`
//! for exactly one segment (`chat.*` matches `chat.room1`, not `chat` and
//! not `chat.room1.x`) and end with `>` for one or more segments
//! (`chat.>` matches `chat.room1` and `chat.room1.x`, not `chat`), as in
//! NATS subjects.
//!
//! Patterns live in a trie keyed by segment: each node has a child per
//! literal segment (a hash map), one `*` child, and the connections whose
//! pattern ends there or with a `>` right after it. A publish walks the
//! topic's segments once (two branches per level where a `*` pattern
//! exists), so its cost depends on the patterns that match a prefix of the
//! topic, never on how many other patterns exist. Each node's connection
//! list holds a connection once; when several nodes match, the recipients
//! are deduplicated with a set sized to them (no sort).
//!
//! Limits: `max_subscriptions` patterns per connection and
//! `max_subscriptions_total` in all; both are answered with -32031.
//!
//! The bus only knows connection ids; delivering is the caller's job
//! (see [`crate::core::Core::deliver`]).

use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// Connections subscribed to this node's pattern followed by `.>`.
    tail: Vec<u64>,
}

/// Adds `conn` to a list (once).
fn add(list: &mut Vec<u64>, conn: u64) {
    if !list.contains(&conn) {
        list.push(conn);
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.conns.is_empty()
            && self.tail.is_empty()
            && self.exact.is_empty()
            && self.star.is_none()
    }

    fn insert(&mut self, segs: &[&str], conn: u64) {
        match segs.split_first() {
            None => add(&mut self.conns, conn),
            Some((&">", [])) => add(&mut self.tail, conn),
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
            Some((&">", [])) => self.tail.retain(|&c| c != conn),
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

    /// Collects the connection lists of every pattern matching `segs`.
    fn collect<'a>(&'a self, segs: &[&str], out: &mut Vec<&'a [u64]>) {
        match segs.split_first() {
            None => {
                if !self.conns.is_empty() {
                    out.push(&self.conns);
                }
            }
            Some((seg, rest)) => {
                if !self.tail.is_empty() {
                    out.push(&self.tail);
                }
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

/// The connections in `lists`, each once, in order of first appearance.
fn dedup(lists: &[&[u64]]) -> Vec<u64> {
    match lists {
        [] => Vec::new(),
        // One pattern: its list holds each connection once already.
        [one] => one.to_vec(),
        _ => {
            let n = lists.iter().map(|l| l.len()).sum();
            let mut seen = HashSet::with_capacity(n);
            let mut out = Vec::with_capacity(n);
            for &c in lists.iter().flat_map(|l| l.iter()) {
                if seen.insert(c) {
                    out.push(c);
                }
            }
            out
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
    max_total: usize,
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
    let segs = topic.split('.').count();
    if segs > MAX_SEGMENTS {
        return bad("too many segments");
    }
    for (i, seg) in topic.split('.').enumerate() {
        if seg.is_empty() {
            return bad("empty segment");
        }
        if !seg.contains(['*', '>']) {
            continue;
        }
        if !pattern {
            return bad("`*` and `>` are for patterns, not for published topics");
        }
        if seg.contains('*') && seg != "*" {
            return bad("`*` must be a whole segment");
        }
        if seg.contains('>') && (seg != ">" || i + 1 != segs) {
            return bad("`>` must be the whole last segment");
        }
    }
    Ok(())
}

/// The `bus.message` notification line for `data` (JSON text without a
/// line break) published on `topic`, in one allocation.
pub fn message(topic: &str, data: &str) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"jsonrpc":"2.0","method":"bus.message","params":{"topic":"#;
    let mut out = Vec::with_capacity(HEAD.len() + topic.len() + data.len() + 16);
    out.extend_from_slice(HEAD);
    crate::jsonrpc::write_str(&mut out, topic);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"}}\n");
    out
}

impl Bus {
    /// A table allowing `max_per_conn` patterns per connection and
    /// `max_total` in all.
    pub fn new(max_per_conn: usize, max_total: usize) -> Bus {
        Bus {
            inner: RwLock::new(Inner::default()),
            max_per_conn,
            max_total,
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
                    "too many subscriptions: at most {} per connection (max_subscriptions)",
                    self.max_per_conn
                ),
            ));
        }
        if inner.patterns + new.len() > self.max_total {
            log::warn!(
                "conn {conn}: refused {} subscriptions: the server holds {} of at most {} \
                 (max_subscriptions_total)",
                new.len(),
                inner.patterns,
                self.max_total
            );
            return Err(RpcError::new(
                code::TOO_MANY_SUBSCRIPTIONS,
                format!(
                    "too many subscriptions: at most {} on this server (max_subscriptions_total)",
                    self.max_total
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

    /// The connections subscribed to `topic`, each once, in no particular
    /// order.
    pub fn recipients(&self, topic: &str) -> Vec<u64> {
        let mut segs: [&str; MAX_SEGMENTS] = [""; MAX_SEGMENTS];
        let mut n = 0;
        for seg in topic.split('.') {
            if n == MAX_SEGMENTS {
                return Vec::new(); // longer than any pattern can match
            }
            segs[n] = seg;
            n += 1;
        }
        let inner = self.read();
        let mut lists = Vec::new();
        inner.root.collect(&segs[..n], &mut lists);
        dedup(&lists)
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

/// A `bus.message` notification waiting to be delivered (see
/// [`crate::core::Core::deliver`]).
pub struct Note {
    pub topic_conns: Vec<u64>,
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn wildcard_matches_one_segment() {
        let bus = Bus::new(10, 100);
        assert_eq!(bus.subscribe(1, &s(&["chat.*"])).unwrap(), 1);
        assert_eq!(bus.subscribe(2, &s(&["chat.room1", "*.room1"])).unwrap(), 2);
        assert_eq!(bus.subscribe(3, &s(&["chat"])).unwrap(), 1);
        assert_eq!(sorted(bus.recipients("chat.room1")), [1, 2]);
        assert_eq!(bus.recipients("chat.room2"), [1]);
        assert_eq!(bus.recipients("chat"), [3]);
        assert!(bus.recipients("chat.room1.x").is_empty());
        assert_eq!(bus.recipients("news.room1"), [2]);
        assert_eq!(bus.counts(), (3, 4));

        assert_eq!(bus.unsubscribe(2, Some(&s(&["chat.room1"]))), 1);
        assert_eq!(sorted(bus.recipients("chat.room1")), [1, 2]); // via *.room1
        bus.remove_conn(2);
        assert_eq!(bus.recipients("chat.room1"), [1]);
        assert_eq!(bus.counts(), (2, 2));
        bus.remove_conn(1);
        bus.remove_conn(3);
        assert_eq!(bus.counts(), (0, 0));
        assert!(bus.read().root.is_empty(), "branches pruned");
    }

    #[test]
    fn tail_wildcard_matches_one_or_more_segments() {
        let bus = Bus::new(10, 100);
        bus.subscribe(1, &s(&["chat.>"])).unwrap();
        bus.subscribe(2, &s(&[">"])).unwrap();
        bus.subscribe(3, &s(&["*.room1.>"])).unwrap();
        assert_eq!(bus.recipients("chat"), [2], "`>` needs a segment");
        assert_eq!(sorted(bus.recipients("chat.room1")), [1, 2]);
        assert_eq!(sorted(bus.recipients("chat.room1.x.y")), [1, 2, 3]);
        assert_eq!(sorted(bus.recipients("news.room1.x")), [2, 3]);
        assert_eq!(bus.recipients("news.room1"), [2]);
        bus.unsubscribe(2, Some(&s(&[">"])));
        assert_eq!(bus.recipients("chat.room1"), [1]);
        bus.remove_conn(1);
        bus.remove_conn(3);
        assert!(bus.read().root.is_empty(), "branches pruned");
    }

    #[test]
    fn a_connection_matching_several_patterns_gets_one_copy() {
        let bus = Bus::new(10, 100);
        bus.subscribe(1, &s(&["a.b", "a.*", "*.b", "a.>", ">"]))
            .unwrap();
        bus.subscribe(2, &s(&["a.*"])).unwrap();
        assert_eq!(sorted(bus.recipients("a.b")), [1, 2]);
        // Subscribing twice to one pattern keeps one entry.
        assert_eq!(bus.subscribe(2, &s(&["a.*"])).unwrap(), 1);
        assert_eq!(
            bus.read().root.exact["a"].star.as_ref().unwrap().conns,
            [1, 2]
        );
    }

    #[test]
    fn closing_a_connection_removes_all_its_patterns() {
        let bus = Bus::new(2000, 100_000);
        let many: Vec<String> = (0..1000).map(|i| format!("x.{i}.*")).collect();
        bus.subscribe(5, &many).unwrap();
        bus.subscribe(6, &s(&["x.7.q"])).unwrap();
        assert_eq!(sorted(bus.recipients("x.7.q")), [5, 6]);
        bus.remove_conn(5);
        assert_eq!(bus.counts(), (1, 1));
        assert_eq!(bus.recipients("x.7.q"), [6]);
        assert_eq!(bus.read().root.exact["x"].exact.len(), 1, "pruned");
    }

    #[test]
    fn limits_and_validation() {
        let bus = Bus::new(2, 3);
        assert!(bus.subscribe(1, &s(&["a", "b", "c"])).is_err());
        assert_eq!(bus.subscribe(1, &s(&["a", "b", "a"])).unwrap(), 2);
        assert_eq!(bus.subscribe(1, &s(&["a"])).unwrap(), 2, "already there");
        let e = bus.subscribe(1, &s(&["c"])).unwrap_err();
        assert_eq!(e.code, code::TOO_MANY_SUBSCRIPTIONS);
        assert!(e.message.contains("max_subscriptions"), "{}", e.message);
        assert_eq!(bus.subscribe(2, &s(&["c"])).unwrap(), 1);
        let e = bus.subscribe(3, &s(&["d"])).unwrap_err();
        assert_eq!(e.code, code::TOO_MANY_SUBSCRIPTIONS);
        assert!(
            e.message.contains("max_subscriptions_total"),
            "{}",
            e.message
        );
        bus.remove_conn(2);
        assert_eq!(bus.subscribe(3, &s(&["d"])).unwrap(), 1, "room again");
        for bad in ["", "a..b", "a.b*", ".a", "a.", "a.>.b", "a.b>", ">.a"] {
            assert!(check_topic(bad, true).is_err(), "{bad:?}");
        }
        for bad in ["a.*", "a.>", "a->b", "*"] {
            assert!(check_topic(bad, false).is_err(), "{bad:?}");
        }
        let deep = vec!["s"; MAX_SEGMENTS + 1].join(".");
        assert!(check_topic(&deep, false).is_err());
        assert!(bus.recipients(&deep).is_empty());
        for good in ["a.*.c", "a.>", ">", "*.*"] {
            assert!(check_topic(good, true).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn non_matching_patterns_are_not_visited() {
        // 1,024 patterns on other branches leave one match: the walk looks
        // at the topic's path only, so the result comes from one list.
        let bus = Bus::new(2000, 100_000);
        let others: Vec<String> = (0..1024).map(|i| format!("bench.other{i}")).collect();
        bus.subscribe(1, &others).unwrap();
        bus.subscribe(2, &s(&["bench.target"])).unwrap();
        let inner = bus.read();
        let mut lists = Vec::new();
        inner.root.collect(&["bench", "target"], &mut lists);
        assert_eq!(lists, [&[2u64][..]]);
    }

    #[test]
    fn message_is_one_notification_line() {
        let m = message("a.\"b", r#"{"x":[1]}"#);
        assert_eq!(m.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","method":"bus.message","params":{"topic":"a.\"b","data":{"x":[1]}}})
        );
    }

    #[test]
    fn snapshot_round_trip() {
        let bus = Bus::new(10, 100);
        bus.subscribe(7, &s(&["x.*", "y", "z.>"])).unwrap();
        let next = Bus::new(10, 100);
        next.restore(bus.snapshot());
        assert_eq!(next.recipients("x.1"), [7]);
        assert_eq!(next.recipients("y"), [7]);
        assert_eq!(next.recipients("z.1.2"), [7]);
    }
}
