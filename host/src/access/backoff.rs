//! The per-peer `AUTH` backoff: after a failed `AUTH`, further attempts
//! from the same peer are refused unchecked for a window that starts at
//! `auth_backoff_ms` and doubles with each failure in a row (capped at
//! [`MAX_FACTOR`] times it). A success clears the peer.
//!
//! Peers are keyed by IPv4 address, or by IPv6 /64 (one host usually owns a
//! whole /64, so keying by full address would hand it 2^64 fresh slates).
//! The table is bounded ([`MAX_PEERS`]): a spray of source addresses evicts
//! expired entries first, then the oldest in a batch, so memory stays flat
//! and the cost per attempt bounded. Nothing
//! here sleeps: a locked peer is answered at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Peers remembered at most.
pub const MAX_PEERS: usize = 4096;
/// The window stops doubling at this multiple of `auth_backoff_ms`.
pub const MAX_FACTOR: u32 = 64;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures in a row.
    failures: u32,
    /// Attempts are refused until then.
    until: Instant,
    /// Forgotten after then (a quiet period as long as the longest window
    /// after the lock ends): an old typo does not double tomorrow's wait.
    forget_at: Instant,
}

/// The backoff table shared by the event loops.
#[derive(Debug)]
pub struct AuthBackoff {
    peers: Mutex<HashMap<IpAddr, Entry>>,
    capacity: usize,
}

impl Default for AuthBackoff {
    fn default() -> Self {
        AuthBackoff::with_capacity(MAX_PEERS)
    }
}

/// The key a peer is remembered under.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl AuthBackoff {
    pub fn with_capacity(capacity: usize) -> AuthBackoff {
        AuthBackoff {
            peers: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// How much longer `ip` is locked out, if it is.
    pub fn locked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let peers = self.peers.lock();
        let e = peers.get(&key(ip))?;
        (now < e.until).then(|| e.until - now)
    }

    /// Records a failed `AUTH` from `ip` and returns the window it opens.
    /// `base` zero: no backoff (nothing is remembered).
    pub fn failed(&self, ip: IpAddr, base: Duration, now: Instant) -> Duration {
        if base.is_zero() {
            return Duration::ZERO;
        }
        let k = key(ip);
        let mut peers = self.peers.lock();
        let previous = peers
            .get(&k)
            .filter(|e| now < e.forget_at)
            .map_or(0, |e| e.failures);
        if !peers.contains_key(&k) && peers.len() >= self.capacity {
            make_room(&mut peers, now);
        }
        let failures = previous.saturating_add(1);
        let factor = 1u32 << (failures - 1).min(MAX_FACTOR.trailing_zeros());
        let window = base * factor;
        peers.insert(
            k,
            Entry {
                failures,
                until: now + window,
                forget_at: now + window + base * MAX_FACTOR,
            },
        );
        window
    }

    /// A successful `AUTH` from `ip`: its count starts over.
    pub fn succeeded(&self, ip: IpAddr) {
        self.peers.lock().remove(&key(ip));
    }

    /// Peers remembered now.
    pub fn len(&self) -> usize {
        self.peers.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops forgotten entries; if none was, the sixteenth whose locks end
/// first. Evicting in a batch keeps a spray of new addresses at a bounded
/// cost per attempt (one scan of the table per `len / 16` newcomers, not
/// one per newcomer).
fn make_room(peers: &mut HashMap<IpAddr, Entry>, now: Instant) {
    let before = peers.len();
    peers.retain(|_, e| now < e.forget_at);
    if peers.len() < before {
        return;
    }
    let mut ends: Vec<Instant> = peers.values().map(|e| e.until).collect();
    let n = (ends.len() / 16).max(1);
    let (_, cut, _) = ends.select_nth_unstable(n - 1);
    let cut = *cut;
    let mut left = n;
    peers.retain(|_, e| {
        if left > 0 && e.until <= cut {
            left -= 1;
            false
        } else {
            true
        }
    });
    log::warn!(
        "AUTH backoff: {} peers remembered, forgetting the {n} whose locks end first          (a spray of failing addresses)",
        before
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(500);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn window_doubles_and_caps() {
        let t = AuthBackoff::default();
        let now = Instant::now();
        let a = ip("192.0.2.1");
        let windows: Vec<u128> = (0..10)
            .map(|_| t.failed(a, BASE, now).as_millis())
            .collect();
        assert_eq!(
            windows,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000, 32000]
        );
        assert_eq!(t.locked(a, now), Some(BASE * 64));
        assert_eq!(t.locked(a, now + BASE * 64), None);
        assert_eq!(t.locked(ip("192.0.2.2"), now), None);
    }

    #[test]
    fn success_resets_and_quiet_forgets() {
        let t = AuthBackoff::default();
        let now = Instant::now();
        let a = ip("192.0.2.1");
        t.failed(a, BASE, now);
        t.failed(a, BASE, now);
        t.succeeded(a);
        assert_eq!(t.locked(a, now), None);
        assert_eq!(t.failed(a, BASE, now), BASE);
        // After the lock and a quiet 64 × base, the count starts over.
        let later = now + BASE + BASE * 64;
        assert_eq!(t.failed(a, BASE, later), BASE);
    }

    #[test]
    fn mapped_and_same_64_share_an_entry() {
        let t = AuthBackoff::default();
        let now = Instant::now();
        t.failed(ip("::ffff:10.0.0.1"), BASE, now);
        assert!(t.locked(ip("10.0.0.1"), now).is_some());
        t.failed(ip("2001:db8:1:2::1"), BASE, now);
        assert!(t.locked(ip("2001:db8:1:2:ffff::9"), now).is_some());
        assert!(t.locked(ip("2001:db8:1:3::1"), now).is_none());
    }

    #[test]
    fn zero_base_means_no_backoff() {
        let t = AuthBackoff::default();
        let now = Instant::now();
        assert_eq!(
            t.failed(ip("192.0.2.1"), Duration::ZERO, now),
            Duration::ZERO
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_spray_of_addresses_stays_bounded() {
        let t = AuthBackoff::with_capacity(64);
        let now = Instant::now();
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.failed(a, BASE, now + Duration::from_micros(i as u64));
            assert!(t.len() <= 64);
        }
        // The newest are remembered; the oldest were evicted.
        assert!(t.locked(ip("10.0.39.15"), now).is_some());
        assert!(t.locked(ip("10.0.0.0"), now).is_none());
    }

    #[test]
    fn full_size_spray_stays_at_max_peers() {
        let t = AuthBackoff::default();
        let now = Instant::now();
        for i in 0..100_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.failed(a, BASE, now + Duration::from_micros(i as u64));
        }
        assert!(t.len() <= MAX_PEERS && t.len() > MAX_PEERS - MAX_PEERS / 16);
    }
}
