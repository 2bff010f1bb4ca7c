//! A route's upstream pool: which upstream the next connection goes to,
//! and which upstreams are usable.
//!
//! * Balancing: smooth weighted round-robin (nginx's: every pick adds each
//!   usable upstream's weight to its running score, takes the highest and
//!   subtracts the total from it, which interleaves 5:1:1 as
//!   `a a b a c a a` rather than `a a a a a b c`), or least connections
//!   relative to weight with round-robin among equals.
//! * A connection counts as active on an upstream from the moment it is
//!   picked (connecting included) until it fails or closes, so
//!   `least_conn` sees connections still being set up.
//! * Usable: not marked down by active health checks, and not within
//!   `fail_timeout` of a refused connect (passive health).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::config::{Balance, Route};

/// Milliseconds on the module's monotonic clock (never 0).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One upstream of one route.
pub struct Member {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Connections picked for it that have not failed or closed.
    pub active: AtomicU32,
    /// Connections it accepted.
    pub conns: AtomicU64,
    /// Connects to it that failed.
    pub failures: AtomicU64,
    /// Marked down by active health checks.
    pub health_down: AtomicBool,
    /// Skipped until this time (`now_ms`) after a failed connect; 0: not.
    pub fail_until: AtomicU64,
}

/// The state an upstream is shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    /// Down by health checks.
    Down,
    /// Skipped for a while after a failed connect.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Failed => "failed",
        }
    }
}

impl Member {
    pub fn state(&self, now: u64) -> State {
        if self.health_down.load(Relaxed) {
            State::Down
        } else if self.fail_until.load(Relaxed) > now {
            State::Failed
        } else {
            State::Up
        }
    }

    fn usable(&self, now: u64) -> bool {
        self.state(now) == State::Up
    }
}

/// The upstreams of one route.
pub struct Pool {
    pub members: Vec<Member>,
    balance: Balance,
    fail_timeout_ms: u64,
    /// Smooth weighted round-robin scores, one per member.
    scores: Mutex<Vec<i64>>,
}

impl Pool {
    pub fn new(route: &Route) -> Pool {
        Pool {
            members: route
                .upstreams
                .iter()
                .map(|u| Member {
                    addr: u.addr,
                    weight: u.weight,
                    active: AtomicU32::new(0),
                    conns: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    health_down: AtomicBool::new(false),
                    fail_until: AtomicU64::new(0),
                })
                .collect(),
            balance: route.balance,
            fail_timeout_ms: route.fail_timeout.as_millis() as u64,
            scores: Mutex::new(vec![0; route.upstreams.len()]),
        }
    }

    /// Picks a usable upstream not in `tried` (a bit per member index) and
    /// counts the connection as active on it. `None`: none is left.
    pub fn pick(&self, now: u64, tried: u64) -> Option<usize> {
        let ok = |i: usize| tried & (1 << i) == 0 && self.members[i].usable(now);
        // Least connections first narrows the candidates to the least
        // loaded (relative to weight); round-robin then chooses among them.
        let least = match self.balance {
            Balance::RoundRobin => None,
            Balance::LeastConn => {
                let load = |i: usize| {
                    let m = &self.members[i];
                    (u64::from(m.active.load(Relaxed)), u64::from(m.weight))
                };
                let mut best: Option<(u64, u64)> = None;
                for i in (0..self.members.len()).filter(|&i| ok(i)) {
                    let (a, w) = load(i);
                    if best.is_none_or(|(ba, bw)| a * bw < ba * w) {
                        best = Some((a, w));
                    }
                }
                Some(best?)
            }
        };
        let chosen = {
            let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
            let mut total = 0i64;
            let mut chosen: Option<usize> = None;
            for (i, m) in self.members.iter().enumerate() {
                if !ok(i) {
                    continue;
                }
                if let Some((ba, bw)) = least {
                    if u64::from(m.active.load(Relaxed)) * bw != ba * u64::from(m.weight) {
                        continue;
                    }
                }
                scores[i] += i64::from(m.weight);
                total += i64::from(m.weight);
                if chosen.is_none_or(|c| scores[i] > scores[c]) {
                    chosen = Some(i);
                }
            }
            let c = chosen?;
            scores[c] -= total;
            c
        };
        self.members[chosen].active.fetch_add(1, Relaxed);
        Some(chosen)
    }

    /// Whether any upstream is usable now.
    pub fn any_usable(&self, now: u64) -> bool {
        self.members.iter().any(|m| m.usable(now))
    }

    /// A connection picked for member `i` is gone (failed or closed).
    pub fn release(&self, i: usize) {
        let _ = self.members[i]
            .active
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// Member `i` accepted a connection: it works, whatever a failed
    /// connect said a moment ago.
    pub fn connected(&self, i: usize) {
        let m = &self.members[i];
        m.conns.fetch_add(1, Relaxed);
        if m.fail_until.load(Relaxed) != 0 {
            m.fail_until.store(0, Relaxed);
        }
    }

    /// A connect to member `i` failed. Returns `true` when that newly
    /// takes it out of rotation (for one log line, not one per failure).
    pub fn failed(&self, i: usize, now: u64) -> bool {
        let m = &self.members[i];
        m.failures.fetch_add(1, Relaxed);
        if self.fail_timeout_ms == 0 {
            return false;
        }
        let was = m.fail_until.swap(now + self.fail_timeout_ms, Relaxed);
        was <= now && !m.health_down.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use serde_json::json;

    fn pool(route: serde_json::Value) -> Pool {
        let c = parse(&json!({ "routes": [route] })).unwrap();
        Pool::new(&c.routes[0])
    }

    fn ups(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let p = pool(json!({"prefix": "A", "upstreams": ups(3), "weights": [5, 1, 1]}));
        let seq: Vec<usize> = (0..7).map(|_| p.pick(1, 0).unwrap()).collect();
        // nginx's documented sequence for 5:1:1.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[p.pick(1, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn skips_tried_down_and_failed() {
        let p = pool(json!({"prefix": "A", "upstreams": ups(3), "fail_timeout": "1s"}));
        p.members[1].health_down.store(true, Relaxed);
        for _ in 0..10 {
            assert_ne!(p.pick(100, 0), Some(1));
        }
        assert_eq!(p.pick(100, 0b101), None);
        assert!(p.failed(0, 100));
        assert!(!p.failed(0, 150), "one log line per outage");
        assert_eq!(p.members[0].state(200), State::Failed);
        for _ in 0..10 {
            assert_eq!(p.pick(200, 0), Some(2));
        }
        assert!(!p.any_usable(200) || p.members[2].usable(200));
        p.members[2].health_down.store(true, Relaxed);
        assert!(!p.any_usable(200));
        assert_eq!(p.pick(200, 0), None);
        // The failure expires.
        assert_eq!(p.members[0].state(1151), State::Up);
        assert_eq!(p.pick(1151, 0), Some(0));
        // A success clears it early.
        p.failed(0, 2000);
        p.connected(0);
        assert_eq!(p.members[0].state(2001), State::Up);
    }

    #[test]
    fn least_conn_prefers_the_least_loaded() {
        let p = pool(json!({"prefix": "A", "upstreams": ups(2), "balance": "least_conn"}));
        let a = p.pick(1, 0).unwrap();
        let b = p.pick(1, 0).unwrap();
        assert_ne!(a, b);
        p.pick(1, 0).unwrap();
        p.pick(1, 0).unwrap();
        assert_eq!(p.members[0].active.load(Relaxed), 2);
        assert_eq!(p.members[1].active.load(Relaxed), 2);
        p.release(0);
        p.release(0);
        assert_eq!(p.pick(1, 0), Some(0));
        assert_eq!(p.pick(1, 0), Some(0));
        // Weighted: 3:1 -> member 0 takes three before member 1 takes one more.
        let p = pool(
            json!({"prefix": "A", "upstreams": ups(2), "weights": [3, 1], "balance": "least_conn"}),
        );
        let mut counts = [0; 2];
        for _ in 0..8 {
            counts[p.pick(1, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [6, 2]);
        p.release(1);
        p.release(1);
        p.release(1); // never below zero
        assert_eq!(p.members[1].active.load(Relaxed), 0);
    }
}
