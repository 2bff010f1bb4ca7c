//! Per-user limits: a request-rate bucket shared by all of a user's
//! connections, and the count of raw TCP connections logged in as it.
//!
//! The rate bucket is the generic cell rate algorithm, which behaves as a
//! token bucket (`rate` tokens a second, holding at most one second's
//! worth) but keeps one number, the "theoretical arrival time", in an
//! atomic: a call is a compare-and-swap, with no lock that every
//! connection of a busy user would contend on.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since the first use, a monotonic clock for the buckets.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A token bucket of `rate` calls a second, burst one second's worth.
#[derive(Debug)]
pub struct RateBucket {
    /// Nanoseconds between two calls at the steady rate.
    interval: u64,
    /// How far ahead of now the arrival time may run (the burst).
    tolerance: u64,
    /// When the bucket is full again, in [`now_ns`] time.
    tat: AtomicU64,
}

impl RateBucket {
    /// `rate` calls a second; `rate` must be positive.
    pub fn new(rate: u32) -> RateBucket {
        let interval = 1_000_000_000 / u64::from(rate.max(1));
        RateBucket {
            interval,
            // A full bucket admits `rate` calls at once.
            tolerance: interval * u64::from(rate.max(1) - 1),
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one token at time `now` (ns); `false` when the bucket is
    /// empty (the call is refused and takes nothing).
    pub fn take(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Raw TCP connections logged in as one user, up to a maximum (0: no
/// limit).
#[derive(Debug, Default)]
pub struct ConnCount {
    max: u32,
    now: AtomicU32,
}

impl ConnCount {
    pub fn new(max: u32) -> ConnCount {
        ConnCount {
            max,
            now: AtomicU32::new(0),
        }
    }

    /// Counts one more connection; `false` (and counts nothing) at the
    /// limit. `force` counts it anyway (a connection carried over a
    /// reload keeps its login even if the limit was lowered).
    pub fn enter(&self, force: bool) -> bool {
        let mut n = self.now.load(Ordering::Relaxed);
        loop {
            if !force && self.max > 0 && n >= self.max {
                return false;
            }
            match self
                .now
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => n = seen,
            }
        }
    }

    pub fn leave(&self) {
        let _ = self
            .now
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn current(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u32 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn bucket_bursts_one_second_then_refills_at_the_rate() {
        let b = RateBucket::new(10);
        let t0 = 5 * S;
        let admitted = (0..25).filter(|_| b.take(t0)).count();
        assert_eq!(admitted, 10, "burst = one second's worth");
        assert!(!b.take(t0 + S / 20), "half a token later: still empty");
        assert!(b.take(t0 + S / 10), "one interval later: one token");
        assert!(!b.take(t0 + S / 10));
        // Idle for long: full again, never more than the burst.
        let t1 = t0 + 100 * S;
        assert_eq!((0..25).filter(|_| b.take(t1)).count(), 10);
    }

    #[test]
    fn bucket_of_one_per_second() {
        let b = RateBucket::new(1);
        assert!(b.take(S));
        assert!(!b.take(S + S / 2));
        assert!(b.take(2 * S));
    }

    #[test]
    fn bucket_is_shared_across_threads() {
        let b = RateBucket::new(1000);
        let now = 10 * S;
        let n: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).filter(|_| b.take(now)).count()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(n, 1000);
    }

    #[test]
    fn connection_count() {
        let c = ConnCount::new(2);
        assert!(c.enter(false));
        assert!(c.enter(false));
        assert!(!c.enter(false));
        assert!(c.enter(true), "carried over a reload");
        assert_eq!(c.current(), 3);
        c.leave();
        c.leave();
        assert!(c.enter(false));
        let unlimited = ConnCount::new(0);
        assert!((0..1000).all(|_| unlimited.enter(false)));
    }
}
