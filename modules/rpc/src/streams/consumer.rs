//! One durable consumer's state: its config, what is acknowledged (the
//! floor plus a sparse set above it: the only part that is persisted),
//! what is delivered and waiting for an ack (`pending`, in memory), the
//! next sequence never looked at, and the connections attached to it
//! (its members, served round robin). Pure logic; reading messages and
//! pushing them is `mod.rs`'s.
//!
//! Everything below `next_seq` that is not pending is done: acknowledged,
//! filtered out, or terminated after `max_deliver` deliveries. So the
//! floor is just below the oldest pending sequence (or `next_seq`), and
//! only acks above it need to be remembered.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock::TimerId;

pub use crate::stream_sql::ConsumerConfig;

/// A delivered, unacknowledged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The member it went to; 0: pulled with `stream.fetch`, or given back
    /// (its member left, or a nak) and waiting for a member.
    pub member: u64,
    pub deliveries: u32,
    /// When it is delivered again.
    pub deadline: Instant,
}

/// One consumer.
#[derive(Debug)]
pub struct Consumer {
    pub cfg: ConsumerConfig,
    pub created_ms: u64,
    pub floor: u64,
    /// Acknowledged sequences above the floor.
    pub acked: BTreeSet<u64>,
    pub next_seq: u64,
    pub pending: BTreeMap<u64, Pending>,
    pub members: Vec<u64>,
    /// Round-robin position in `members`.
    pub cursor: usize,
    /// The armed redelivery timer and its deadline.
    pub timer: Option<(TimerId, Instant)>,
    /// Messages dropped after `max_deliver` deliveries.
    pub terminated: u64,
}

/// A consumer's in-memory state, handed to the next generation on a
/// reload so that nothing is delivered twice.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConsumerSnap {
    pub stream: String,
    pub consumer: String,
    pub next_seq: u64,
    /// `(seq, member, deliveries, ms until redelivery)`.
    pub pending: Vec<(u64, u64, u32, u64)>,
    pub members: Vec<u64>,
    pub acked: Vec<u64>,
    #[serde(default)]
    pub terminated: u64,
}

impl Consumer {
    pub fn new(cfg: ConsumerConfig, created_ms: u64, floor: u64, acked: BTreeSet<u64>) -> Self {
        Consumer {
            cfg,
            created_ms,
            floor,
            acked,
            next_seq: floor + 1,
            pending: BTreeMap::new(),
            members: Vec::new(),
            cursor: 0,
            timer: None,
            terminated: 0,
        }
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.ack_wait_ms)
    }

    /// Whether another message may be delivered (`max_ack_pending`).
    pub fn has_room(&self) -> bool {
        self.pending.len() < self.cfg.max_ack_pending
    }

    /// Acknowledges `seq`: `true` if it was pending.
    pub fn ack(&mut self, seq: u64) -> bool {
        if self.pending.remove(&seq).is_none() {
            return false;
        }
        self.acked.insert(seq);
        self.settle();
        true
    }

    /// Drops `seq` for good (delivered `max_deliver` times, or no longer
    /// stored): done as if acknowledged.
    pub fn terminate(&mut self, seq: u64) {
        if self.pending.remove(&seq).is_some() {
            self.acked.insert(seq);
            self.settle();
        }
    }

    /// Moves the floor up to just below the oldest pending sequence (or
    /// `next_seq`) and forgets the acks it passed.
    pub fn settle(&mut self) {
        let top = self
            .pending
            .keys()
            .next()
            .map_or(self.next_seq, |s| *s)
            .saturating_sub(1);
        self.floor = self.floor.max(top);
        let floor = self.floor;
        self.acked = self.acked.split_off(&(floor + 1));
    }

    /// The next member, round robin, preferring one other than `not`
    /// when there are several; `None` without members.
    pub fn next_member(&mut self, not: u64) -> Option<u64> {
        if self.members.is_empty() {
            return None;
        }
        let n = self.members.len();
        for _ in 0..n {
            self.cursor = (self.cursor + 1) % n;
            let m = self.members[self.cursor];
            if m != not || n == 1 {
                return Some(m);
            }
        }
        Some(self.members[self.cursor])
    }

    /// Attaches `conn`; `false` if it already was.
    pub fn attach(&mut self, conn: u64) -> bool {
        if self.members.contains(&conn) {
            return false;
        }
        self.members.push(conn);
        true
    }

    /// Detaches `conn`; its pending messages become due at once (for
    /// the other members). Returns whether it was attached.
    pub fn detach(&mut self, conn: u64, now: Instant) -> bool {
        let Some(i) = self.members.iter().position(|m| *m == conn) else {
            return false;
        };
        self.members.remove(i);
        for p in self.pending.values_mut() {
            if p.member == conn {
                p.member = 0;
                p.deadline = now;
            }
        }
        true
    }

    /// Pending sequences whose redelivery is due at `now`, oldest first.
    pub fn due(&self, now: Instant) -> Vec<u64> {
        self.pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect()
    }

    /// The earliest redelivery deadline.
    pub fn earliest(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Whether one more delivery of a message delivered `deliveries`
    /// times is allowed.
    pub fn may_redeliver(&self, deliveries: u32) -> bool {
        self.cfg.max_deliver < 0 || i64::from(deliveries) < self.cfg.max_deliver
    }

    /// The in-memory state, for a reload.
    pub fn snapshot(&self, now: Instant) -> ConsumerSnap {
        ConsumerSnap {
            stream: self.cfg.stream.clone(),
            consumer: self.cfg.name.clone(),
            next_seq: self.next_seq,
            pending: self
                .pending
                .iter()
                .map(|(s, p)| {
                    let left = p.deadline.saturating_duration_since(now).as_millis() as u64;
                    (*s, p.member, p.deliveries, left)
                })
                .collect(),
            members: self.members.clone(),
            acked: self.acked.iter().copied().collect(),
            terminated: self.terminated,
        }
    }

    /// Takes over a predecessor's in-memory state.
    pub fn restore(&mut self, s: &ConsumerSnap, now: Instant) {
        self.next_seq = self.next_seq.max(s.next_seq);
        self.acked.extend(s.acked.iter().copied());
        for (seq, member, deliveries, left) in &s.pending {
            self.pending.insert(
                *seq,
                Pending {
                    member: *member,
                    deliveries: *deliveries,
                    deadline: now + Duration::from_millis(*left),
                },
            );
        }
        self.members = s.members.clone();
        self.terminated = s.terminated;
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(floor: u64) -> Consumer {
        let cfg = ConsumerConfig {
            stream: "s".into(),
            name: "c".into(),
            filter: None,
            deliver: "\"all\"".into(),
            ack_wait_ms: 1000,
            max_deliver: 2,
            max_ack_pending: 3,
        };
        Consumer::new(cfg, 0, floor, BTreeSet::new())
    }

    fn deliver(c: &mut Consumer, seq: u64, member: u64, now: Instant) {
        c.pending.insert(
            seq,
            Pending {
                member,
                deliveries: 1,
                deadline: now + c.ack_wait(),
            },
        );
        c.next_seq = seq + 1;
    }

    #[test]
    fn the_floor_follows_the_oldest_pending_message() {
        let now = Instant::now();
        let mut c = consumer(0);
        for s in 1..=3 {
            deliver(&mut c, s, 7, now);
        }
        assert!(!c.has_room(), "max_ack_pending 3");
        assert!(c.ack(2));
        assert!(!c.ack(2), "acked once only");
        assert_eq!(
            (c.floor, c.acked.iter().copied().collect::<Vec<_>>()),
            (0, vec![2])
        );
        assert!(c.ack(1));
        assert_eq!(c.floor, 2, "1 and 2 done; 3 pending");
        assert!(c.acked.is_empty());
        assert!(c.ack(3));
        assert_eq!(c.floor, 3);
        assert!(!c.ack(9), "never delivered");
    }

    #[test]
    fn members_round_robin_and_leave_their_messages_due() {
        let now = Instant::now();
        let mut c = consumer(0);
        assert_eq!(c.next_member(0), None);
        assert!(c.attach(1));
        assert!(c.attach(2));
        assert!(!c.attach(2));
        let picks: Vec<u64> = (0..4).map(|_| c.next_member(0).unwrap()).collect();
        assert_eq!(picks, [2, 1, 2, 1]);
        assert_eq!(c.next_member(1), Some(2), "another member preferred");
        deliver(&mut c, 1, 1, now);
        deliver(&mut c, 2, 2, now);
        assert!(c.due(now).is_empty());
        assert!(c.detach(1, now));
        assert!(!c.detach(1, now));
        assert_eq!(c.due(now), [1], "member 1's message is due at once");
        assert_eq!(c.pending[&1].member, 0);
        assert!(c.may_redeliver(1));
        assert!(!c.may_redeliver(2), "max_deliver 2");
        c.terminate(1);
        assert_eq!(c.floor, 1);
    }

    #[test]
    fn a_snapshot_restores_the_same_state() {
        let now = Instant::now();
        let mut c = consumer(4);
        c.attach(9);
        deliver(&mut c, 5, 9, now);
        deliver(&mut c, 6, 9, now);
        c.ack(6);
        let snap = c.snapshot(now);
        let mut next = consumer(4);
        next.acked.insert(6);
        next.restore(&snap, now);
        assert_eq!(next.next_seq, 7);
        assert_eq!(next.pending.keys().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(next.members, [9]);
        assert_eq!(next.floor, 4);
        assert!(next.acked.contains(&6));
    }
}
