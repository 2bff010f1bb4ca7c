//! A route at run time: its settings, its pool, its counters, and the
//! compact text `STATUS` shows for it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::Route;
use crate::pool::Pool;

/// Counters of one route.
#[derive(Default)]
pub struct Stats {
    /// Connections proxied and not yet closed (connecting included).
    pub active: AtomicU64,
    /// Connections an upstream accepted.
    pub conns: AtomicU64,
    /// Connections closed because no upstream was usable or accepted.
    pub failed: AtomicU64,
    /// Bytes client → upstream, of closed connections.
    pub bytes_up: AtomicU64,
    /// Bytes upstream → client, of closed connections.
    pub bytes_down: AtomicU64,
}

/// One log line per second at most for a repeating event; counts the rest.
#[derive(Default)]
pub struct Throttle {
    /// When the last line was logged (`now_ms`, never 0); 0: never.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(n)`: log now, mentioning the `n` events not logged since the
    /// last line. `None`: stay quiet.
    pub fn allow(&self, now_ms: u64) -> Option<u64> {
        let last = self.last.load(Relaxed);
        // `last == 0`: never logged (the clock starts near 0).
        if (last == 0 || now_ms.saturating_sub(last) >= 1000)
            && self
                .last
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// " (N more since the last such line)" when lines were suppressed.
pub fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last such line)")
    }
}

/// A configured route with its live state.
pub struct RouteState {
    pub cfg: Route,
    pub pool: Pool,
    pub stats: Stats,
    /// For "all upstreams down" and "no upstream accepted" lines.
    pub throttle: Throttle,
}

impl RouteState {
    pub fn new(cfg: Route) -> RouteState {
        RouteState {
            pool: Pool::new(&cfg),
            cfg,
            stats: Stats::default(),
            throttle: Throttle::default(),
        }
    }

    /// `NAME:active=N,conns=N,failed=N,bytes_up=N,bytes_down=N,upstreams=ADDR(STATE,w=N,active=N)+...`
    /// (no spaces: `STATUS` shows one line per module).
    pub fn status(&self, now: u64, out: &mut String) {
        let s = &self.stats;
        let _ = write!(
            out,
            "{}:active={},conns={},failed={},bytes_up={},bytes_down={},upstreams=",
            self.cfg.name,
            s.active.load(Relaxed),
            s.conns.load(Relaxed),
            s.failed.load(Relaxed),
            s.bytes_up.load(Relaxed),
            s.bytes_down.load(Relaxed),
        );
        for (i, m) in self.pool.members.iter().enumerate() {
            let _ = write!(
                out,
                "{}{}({},w={},active={})",
                if i > 0 { "+" } else { "" },
                m.addr,
                m.state(now).as_str(),
                m.weight,
                m.active.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_event_then_once_a_second() {
        let t = Throttle::default();
        assert_eq!(t.allow(1), Some(0));
        assert_eq!(t.allow(2), None);
        assert_eq!(t.allow(999), None);
        assert_eq!(t.allow(1001), Some(2));
        assert_eq!(t.allow(1500), None);
    }
}
