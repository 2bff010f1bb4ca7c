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
//! Queue groups, as in NATS: a subscription may name a queue; each
//! message goes to every plain subscriber and to ONE member of each queue
//! name among the matching queue subscriptions (members of the same name
//! under different matching patterns form one group for that message),
//! picked round robin. A connection gets at most one copy of a message.
//!
//! Limits: `max_subscriptions` subscriptions (plain or queue) per
//! connection and `max_subscriptions_total` in all; both are answered
//! with -32031.
//!
//! The bus only knows connection ids; delivering is the caller's job
//! (see [`crate::core::Core::deliver`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use crate::jsonrpc::{code, RpcError};
use crate::subject::check_queue;
pub use crate::subject::{check_topic, MAX_SEGMENTS, MAX_TOPIC_BYTES};

/// The members of one queue name on one pattern.
struct Group {
    name: Box<str>,
    members: Vec<u64>,
    /// Round-robin cursor, advanced under the read lock.
    next: AtomicUsize,
}

/// The subscriptions of one pattern: plain connections and queue groups.
#[derive(Default)]
struct Subs {
    conns: Vec<u64>,
    groups: Vec<Group>,
}

impl Subs {
    fn is_empty(&self) -> bool {
        self.conns.is_empty() && self.groups.is_empty()
    }

    /// Adds `conn` (once) as a plain subscriber (`queue` empty) or a member.
    fn add(&mut self, conn: u64, queue: &str) {
        let list = if queue.is_empty() {
            &mut self.conns
        } else {
            match self.groups.iter().position(|g| &*g.name == queue) {
                Some(i) => &mut self.groups[i].members,
                None => {
                    self.groups.push(Group {
                        name: queue.into(),
                        members: Vec::new(),
                        next: AtomicUsize::new(0),
                    });
                    &mut self.groups.last_mut().expect("just pushed").members
                }
            }
        };
        if !list.contains(&conn) {
            list.push(conn);
        }
    }

    fn remove(&mut self, conn: u64, queue: &str) {
        if queue.is_empty() {
            self.conns.retain(|&c| c != conn);
            return;
        }
        if let Some(i) = self.groups.iter().position(|g| &*g.name == queue) {
            self.groups[i].members.retain(|&c| c != conn);
            if self.groups[i].members.is_empty() {
                self.groups.swap_remove(i);
            }
        }
    }
}

#[derive(Default)]
struct Node {
    exact: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    /// Subscriptions to the pattern that ends here.
    here: Subs,
    /// Subscriptions to this node's pattern followed by `.>`.
    tail: Subs,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.tail.is_empty() && self.exact.is_empty() && self.star.is_none()
    }

    fn insert(&mut self, segs: &[&str], conn: u64, queue: &str) {
        match segs.split_first() {
            None => self.here.add(conn, queue),
            Some((&">", [])) => self.tail.add(conn, queue),
            Some((&"*", rest)) => self
                .star
                .get_or_insert_with(Default::default)
                .insert(rest, conn, queue),
            Some((seg, rest)) => self
                .exact
                .entry((*seg).into())
                .or_default()
                .insert(rest, conn, queue),
        }
    }

    /// Removes `conn` from the pattern and prunes empty branches.
    fn remove(&mut self, segs: &[&str], conn: u64, queue: &str) {
        match segs.split_first() {
            None => self.here.remove(conn, queue),
            Some((&">", [])) => self.tail.remove(conn, queue),
            Some((&"*", rest)) => {
                if let Some(star) = &mut self.star {
                    star.remove(rest, conn, queue);
                    if star.is_empty() {
                        self.star = None;
                    }
                }
            }
            Some((seg, rest)) => {
                if let Some(child) = self.exact.get_mut(*seg) {
                    child.remove(rest, conn, queue);
                    if child.is_empty() {
                        self.exact.remove(*seg);
                    }
                }
            }
        }
    }

    /// Hands `found` the subscriptions of every pattern matching `segs`
    /// (a callback, not a list: most publishes match one pattern, and
    /// then nothing is allocated to gather it).
    fn collect<'a>(&'a self, segs: &[&str], found: &mut impl FnMut(&'a Subs)) {
        match segs.split_first() {
            None => {
                if !self.here.is_empty() {
                    found(&self.here);
                }
            }
            Some((seg, rest)) => {
                if !self.tail.is_empty() {
                    found(&self.tail);
                }
                if let Some(child) = self.exact.get(*seg) {
                    child.collect(rest, found);
                }
                if let Some(star) = &self.star {
                    star.collect(rest, found);
                }
            }
        }
    }

    /// Collects the subscriptions whose patterns could match a subject
    /// that the pattern `segs` matches, visiting at most `budget` nodes;
    /// false when the budget ran out first.
    fn scan<'a>(&'a self, segs: &[&str], budget: &mut usize, out: &mut Vec<&'a Subs>) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match segs.split_first() {
            None => {
                out.push(&self.here);
                true
            }
            Some((&">", [])) => {
                out.push(&self.tail);
                self.children().all(|c| c.everything(budget, out))
            }
            Some((seg, rest)) => {
                out.push(&self.tail);
                let star = self.star.as_deref();
                if *seg == "*" {
                    self.children().all(|c| c.scan(rest, budget, out))
                } else {
                    self.exact
                        .get(*seg)
                        .into_iter()
                        .chain(star)
                        .all(|c| c.scan(rest, budget, out))
                }
            }
        }
    }

    /// Every subscription at this node and below (see [`Node::scan`]).
    fn everything<'a>(&'a self, budget: &mut usize, out: &mut Vec<&'a Subs>) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        out.push(&self.here);
        out.push(&self.tail);
        self.children().all(|c| c.everything(budget, out))
    }

    fn children(&self) -> impl Iterator<Item = &Node> {
        self.exact.values().chain(self.star.as_deref())
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

/// The recipients of a message matching `found`: every plain subscriber
/// and one member per queue name, each connection once.
fn pick(found: &[&Subs]) -> Vec<u64> {
    let mut plain = found.iter().filter(|s| !s.conns.is_empty());
    let mut out = match (plain.next(), plain.next()) {
        (None, _) => Vec::new(),
        // One pattern with plain subscribers (the usual publish): its
        // list is the answer, without a list of lists or a set.
        (Some(one), None) => one.conns.clone(),
        _ => dedup(
            &found
                .iter()
                .filter(|s| !s.conns.is_empty())
                .map(|s| &s.conns[..])
                .collect::<Vec<_>>(),
        ),
    };
    if found.iter().all(|s| s.groups.is_empty()) {
        return out;
    }
    let mut groups: Vec<&Group> = found.iter().flat_map(|s| s.groups.iter()).collect();
    // NATS groups the matches by queue name: a name matched through two
    // patterns is one group for this message.
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    let mut chosen = Vec::new();
    for same in groups.chunk_by(|a, b| a.name == b.name) {
        let turn = same[0].next.fetch_add(1, Ordering::Relaxed);
        let member = if let [one] = same {
            one.members[turn % one.members.len()]
        } else {
            let merged = dedup(&same.iter().map(|g| &g.members[..]).collect::<Vec<_>>());
            merged[turn % merged.len()]
        };
        chosen.push(member);
    }
    let mut seen: HashSet<u64> = out.iter().copied().collect();
    for c in chosen {
        if seen.insert(c) {
            out.push(c);
        }
    }
    out
}

/// What `bus.presence` answers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// Connections with a plain subscription that could receive it.
    pub subscribers: usize,
    /// Per queue name, the member connections that could receive it.
    pub queues: BTreeMap<String, usize>,
    /// The scan stopped at its node cap: the counts are a lower bound.
    pub partial: bool,
}

/// A connection's subscription: (pattern, queue name, empty for plain).
type SubKey = (Box<str>, Box<str>);

#[derive(Default)]
struct Inner {
    root: Node,
    by_conn: HashMap<u64, BTreeSet<SubKey>>,
    patterns: usize,
}

/// The subscription table of one generation.
pub struct Bus {
    inner: RwLock<Inner>,
    max_per_conn: usize,
    max_total: usize,
}

/// The `bus.message` notification line for `data` (JSON text without a
/// line break) published on `topic`, in one allocation.
pub fn message(topic: &str, data: &str) -> Vec<u8> {
    message_with_reply(topic, data, None)
}

/// [`message`] with the `reply` subject of a `bus.request`.
pub fn message_with_reply(topic: &str, data: &str, reply: Option<&str>) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"jsonrpc":"2.0","method":"bus.message","params":{"topic":"#;
    let extra = reply.map_or(0, |r| r.len() + 12);
    let mut out = Vec::with_capacity(HEAD.len() + topic.len() + data.len() + 16 + extra);
    out.extend_from_slice(HEAD);
    crate::jsonrpc::write_str(&mut out, topic);
    if let Some(r) = reply {
        out.extend_from_slice(b",\"reply\":");
        crate::jsonrpc::write_str(&mut out, r);
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"}}\n");
    out
}

/// The segments of a topic; `None` when it has more than any pattern.
fn split(topic: &str) -> Option<([&str; MAX_SEGMENTS], usize)> {
    let mut segs: [&str; MAX_SEGMENTS] = [""; MAX_SEGMENTS];
    let mut n = 0;
    let mut start = 0;
    // By bytes: `.` is ASCII, so every cut falls on a character boundary;
    // `str::split` costs more per call than these short topics take.
    for (i, &b) in topic.as_bytes().iter().enumerate() {
        if b == b'.' {
            if n + 1 == MAX_SEGMENTS {
                return None;
            }
            segs[n] = &topic[start..i];
            n += 1;
            start = i + 1;
        }
    }
    segs[n] = &topic[start..];
    Some((segs, n + 1))
}

impl Bus {
    /// A table allowing `max_per_conn` subscriptions per connection and
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

    /// Adds plain subscriptions for `conn` (all or none); returns how
    /// many subscriptions the connection has now.
    pub fn subscribe(&self, conn: u64, patterns: &[String]) -> Result<usize, RpcError> {
        self.add(conn, patterns, "")
    }

    /// Adds `conn` to the queue group `queue` on each pattern (all or
    /// none); returns how many subscriptions the connection has now.
    pub fn subscribe_queue(
        &self,
        conn: u64,
        patterns: &[String],
        queue: &str,
    ) -> Result<usize, RpcError> {
        check_queue(queue)?;
        self.add(conn, patterns, queue)
    }

    fn add(&self, conn: u64, patterns: &[String], queue: &str) -> Result<usize, RpcError> {
        for p in patterns {
            check_topic(p, true)?;
        }
        let mut inner = self.write();
        let have = inner.by_conn.get(&conn);
        let new = patterns
            .iter()
            .map(|p| (Box::<str>::from(p.as_str()), Box::<str>::from(queue)))
            .filter(|k| !have.is_some_and(|h| h.contains(k)))
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
        for (p, q) in &new {
            let segs: Vec<&str> = p.split('.').collect();
            inner.root.insert(&segs, conn, q);
        }
        inner.patterns += new.len();
        let set = inner.by_conn.entry(conn).or_default();
        set.extend(new);
        Ok(set.len())
    }

    /// Removes plain subscriptions (all of the connection's, queue ones
    /// included, when `None`); returns how many remain.
    pub fn unsubscribe(&self, conn: u64, patterns: Option<&[String]>) -> usize {
        match patterns {
            None => self.drop_where(conn, |_| true),
            Some(ps) => self.drop_where(conn, |(p, q)| {
                q.is_empty() && ps.iter().any(|x| x.as_str() == &**p)
            }),
        }
    }

    /// Leaves the queue group `queue` on `patterns` (on every pattern when
    /// `None`); returns how many subscriptions remain.
    pub fn unsubscribe_queue(&self, conn: u64, patterns: Option<&[String]>, queue: &str) -> usize {
        self.drop_where(conn, |(p, q)| {
            &**q == queue && patterns.map_or(true, |ps| ps.iter().any(|x| x.as_str() == &**p))
        })
    }

    fn drop_where(&self, conn: u64, gone: impl Fn(&SubKey) -> bool) -> usize {
        let mut inner = self.write();
        let Some(mut set) = inner.by_conn.remove(&conn) else {
            return 0;
        };
        let dropped: Vec<SubKey> = set.iter().filter(|k| gone(k)).cloned().collect();
        for k in &dropped {
            set.remove(k);
            let segs: Vec<&str> = k.0.split('.').collect();
            inner.root.remove(&segs, conn, &k.1);
        }
        inner.patterns -= dropped.len();
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

    /// The connections a message on `topic` goes to, each once, in no
    /// particular order: every plain subscriber and one member of each
    /// queue group (which advances the group's round robin).
    pub fn recipients(&self, topic: &str) -> Vec<u64> {
        let Some((segs, n)) = split(topic) else {
            return Vec::new(); // longer than any pattern can match
        };
        let inner = self.read();
        let mut first = None;
        let mut more = Vec::new();
        inner.root.collect(&segs[..n], &mut |s| match first {
            None => first = Some(s),
            Some(_) => more.push(s),
        });
        match first {
            None => Vec::new(),
            Some(one) if more.is_empty() => pick(&[one]),
            Some(one) => {
                more.insert(0, one);
                pick(&more)
            }
        }
    }

    /// Who could receive a message on `topic` (a subject or a pattern),
    /// visiting at most `max_nodes` trie nodes.
    pub fn presence(&self, topic: &str, max_nodes: usize) -> Presence {
        let Some((segs, n)) = split(topic) else {
            return Presence::default();
        };
        let inner = self.read();
        let mut found = Vec::new();
        let mut budget = max_nodes;
        let complete = inner.root.scan(&segs[..n], &mut budget, &mut found);
        let mut plain = HashSet::new();
        let mut queues: BTreeMap<&str, HashSet<u64>> = BTreeMap::new();
        for s in &found {
            plain.extend(s.conns.iter().copied());
            for g in &s.groups {
                queues
                    .entry(&g.name)
                    .or_default()
                    .extend(g.members.iter().copied());
            }
        }
        Presence {
            subscribers: plain.len(),
            queues: queues
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.len()))
                .collect(),
            partial: !complete,
        }
    }

    /// (connections with subscriptions, subscriptions) for `STATUS`.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.by_conn.len(), inner.patterns)
    }

    /// Every connection's plain patterns, for the next generation.
    pub fn snapshot(&self) -> Vec<(u64, Vec<String>)> {
        self.read()
            .by_conn
            .iter()
            .map(|(c, ks)| {
                let plain = ks.iter().filter(|(_, q)| q.is_empty());
                (*c, plain.map(|(p, _)| p.to_string()).collect::<Vec<_>>())
            })
            .filter(|(_, ps)| !ps.is_empty())
            .collect()
    }

    /// Every queue subscription (connection, pattern, queue), for the
    /// next generation.
    pub fn queue_snapshot(&self) -> Vec<(u64, String, String)> {
        let inner = self.read();
        let mut out = Vec::new();
        for (c, ks) in &inner.by_conn {
            for (p, q) in ks.iter().filter(|(_, q)| !q.is_empty()) {
                out.push((*c, p.to_string(), q.to_string()));
            }
        }
        out
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

    /// Restores a [`Bus::queue_snapshot`].
    pub fn restore_queues(&self, qsubs: Vec<(u64, String, String)>) {
        for (conn, pattern, queue) in qsubs {
            if let Err(e) = self.subscribe_queue(conn, &[pattern], &queue) {
                log::warn!(
                    "dropping a queue subscription of conn {conn} on handover: {}",
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
            bus.read().root.exact["a"].star.as_ref().unwrap().here.conns,
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
        let deepest = vec!["s"; MAX_SEGMENTS].join(".");
        let all = Bus::new(2, 3);
        all.subscribe(4, &s(&[">"])).unwrap();
        assert_eq!(all.recipients(&deepest), [4], "the deepest topic splits");
        assert_eq!(
            split("a..b").map(|(segs, n)| segs[..n].to_vec()),
            Some(vec!["a", "", "b"])
        );
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
        let mut found = Vec::new();
        inner
            .root
            .collect(&["bench", "target"], &mut |s| found.push(s));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].conns, [2]);
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

    #[test]
    fn a_queue_group_gets_one_copy_round_robin() {
        let bus = Bus::new(10, 100);
        bus.subscribe_queue(1, &s(&["job.*"]), "w").unwrap();
        bus.subscribe_queue(2, &s(&["job.*"]), "w").unwrap();
        bus.subscribe(3, &s(&["job.>"])).unwrap();
        let mut got = [0usize; 4];
        for _ in 0..100 {
            let r = bus.recipients("job.x");
            assert_eq!(r.len(), 2, "the plain one and one member: {r:?}");
            assert!(r.contains(&3));
            for c in r {
                got[c as usize] += 1;
            }
        }
        assert_eq!(got, [0, 50, 50, 100], "round robin");
        // A second name is a second group; the same name through another
        // matching pattern is the same group (NATS groups by name).
        bus.subscribe_queue(4, &s(&["job.>"]), "w").unwrap();
        bus.subscribe_queue(5, &s(&["job.x"]), "other").unwrap();
        let mut seen = HashSet::new();
        for _ in 0..30 {
            let r = sorted(bus.recipients("job.x"));
            assert_eq!(r.len(), 3, "{r:?}");
            assert!(r.contains(&3) && r.contains(&5));
            seen.extend(r);
        }
        assert!(seen.contains(&1) && seen.contains(&2) && seen.contains(&4));
        assert_eq!(bus.counts(), (5, 5));
        assert_eq!(bus.unsubscribe_queue(4, None, "w"), 0);
        assert_eq!(bus.unsubscribe(1, Some(&s(&["job.*"]))), 1, "plain only");
        assert_eq!(bus.unsubscribe_queue(1, Some(&s(&["job.*"])), "w"), 0);
        for _ in 0..5 {
            assert_eq!(sorted(bus.recipients("job.x")), [2, 3, 5]);
        }
        for c in [2, 3, 5] {
            bus.remove_conn(c);
        }
        assert!(bus.read().root.is_empty(), "branches pruned");
        assert!(bus.subscribe_queue(1, &s(&["a"]), "bad name").is_err());
    }

    #[test]
    fn one_copy_when_plain_and_member() {
        let bus = Bus::new(10, 100);
        bus.subscribe(1, &s(&["a"])).unwrap();
        bus.subscribe_queue(1, &s(&["a"]), "q").unwrap();
        assert_eq!(bus.subscribe_queue(1, &s(&["a"]), "q").unwrap(), 2, "once");
        for _ in 0..3 {
            assert_eq!(bus.recipients("a"), [1]);
        }
        let limited = Bus::new(2, 100);
        limited.subscribe(1, &s(&["a"])).unwrap();
        limited.subscribe_queue(1, &s(&["a"]), "q").unwrap();
        let e = limited.subscribe_queue(1, &s(&["b"]), "q").unwrap_err();
        assert_eq!(e.code, code::TOO_MANY_SUBSCRIPTIONS, "queue subs count");
    }

    #[test]
    fn presence_follows_patterns() {
        let bus = Bus::new(10, 100);
        bus.subscribe(1, &s(&["svc.time"])).unwrap();
        bus.subscribe(2, &s(&["svc.*", "svc.time"])).unwrap();
        bus.subscribe_queue(3, &s(&["svc.time"]), "w").unwrap();
        bus.subscribe_queue(4, &s(&["svc.>"]), "w").unwrap();
        bus.subscribe(5, &s(&["other.x"])).unwrap();
        let p = bus.presence("svc.time", 100);
        assert_eq!(p.subscribers, 2);
        assert_eq!(p.queues.get("w"), Some(&2));
        assert!(!p.partial);
        assert_eq!(bus.presence("svc.date", 100).subscribers, 1);
        assert_eq!(bus.presence("svc.date", 100).queues.get("w"), Some(&1));
        let all = bus.presence(">", 100);
        assert_eq!((all.subscribers, all.queues["w"]), (3, 2));
        let star = bus.presence("*.x", 100);
        assert_eq!((star.subscribers, star.queues.len()), (2, 1), "{star:?}");
        assert_eq!(bus.presence("nothing.here", 100), Presence::default());
        assert!(bus.presence(">", 2).partial, "capped");
    }

    #[test]
    fn queue_snapshot_round_trip() {
        let bus = Bus::new(10, 100);
        bus.subscribe(7, &s(&["p"])).unwrap();
        bus.subscribe_queue(7, &s(&["q.*"]), "w").unwrap();
        bus.subscribe_queue(8, &s(&["q.*"]), "w").unwrap();
        let next = Bus::new(10, 100);
        next.restore(bus.snapshot());
        next.restore_queues(bus.queue_snapshot());
        assert_eq!(next.counts(), (2, 3));
        assert_eq!(next.recipients("p"), [7]);
        let a = next.recipients("q.1");
        let b = next.recipients("q.1");
        assert_eq!(sorted([a, b].concat()), [7, 8]);
    }

    #[test]
    fn a_request_message_carries_its_reply_subject() {
        let m = message_with_reply("a", "1", Some("_INBOX.x"));
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["params"]["reply"], "_INBOX.x");
        assert_eq!(v["params"]["data"], 1);
    }
}
