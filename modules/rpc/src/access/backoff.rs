//! The per-address brake on guessing tokens: each failed authentication
//! checked outside a pause opens a pause for its address
//! (`auth_backoff_ms`, doubling with each failure inside the previous
//! pause's reach, capped at `auth_backoff_max_ms`). During a pause a
//! presented token is still checked, so one guesser behind a shared
//! address (a NAT, a local TLS terminator) does not lock out the clients
//! that know their token: a correct one is accepted as usual; a wrong one
//! is refused with the wait, logged at debug only, does not extend the
//! pause, and still counts toward its connection's `max_auth_failures`
//! (the caller, [`super::Access`], does that). Peers are keyed by IPv4
//! address, or by IPv6 /64 (one host usually owns a whole /64; an
//! IPv4-mapped address is its IPv4 address), as the host's admin backoff.
//! The table holds at most `auth_backoff_peers` keys; when full, expired
//! entries go first, then the one whose pause ends soonest.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// The key a peer is remembered under: its IPv4 address, or its IPv6 /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the pause ends (ns, [`super::limit::now_ns`] time).
    until: u64,
    /// The length of the last pause (ns).
    delay: u64,
}

/// Failed-authentication pauses per peer address.
#[derive(Debug)]
pub struct Backoff {
    base: u64,
    max: u64,
    capacity: usize,
    map: Mutex<HashMap<IpAddr, Entry>>,
}

impl Backoff {
    /// `base_ms` = 0 turns the pause off.
    pub fn new(base_ms: u64, max_ms: u64, capacity: usize) -> Backoff {
        Backoff {
            base: base_ms.saturating_mul(1_000_000),
            max: max_ms.max(base_ms).saturating_mul(1_000_000),
            capacity: capacity.max(1),
            map: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds left in `ip`'s pause at `now`, if it is paused.
    pub fn remaining_ms(&self, ip: IpAddr, now: u64) -> Option<u64> {
        if self.base == 0 {
            return None;
        }
        let e = *self.map().get(&key(ip))?;
        (e.until > now).then(|| (e.until - now).div_ceil(1_000_000))
    }

    /// Records a failure from `ip` at `now`; returns the new pause (ms).
    pub fn fail(&self, ip: IpAddr, now: u64) -> u64 {
        if self.base == 0 {
            return 0;
        }
        let ip = key(ip);
        let mut map = self.map();
        let delay = match map.get(&ip) {
            // Failing again soon after a pause: twice as long.
            Some(e) if now < e.until.saturating_add(e.delay) => {
                e.delay.saturating_mul(2).min(self.max)
            }
            _ => self.base,
        };
        if !map.contains_key(&ip) && map.len() >= self.capacity {
            map.retain(|_, e| e.until.saturating_add(e.delay) > now);
            if map.len() >= self.capacity {
                let soonest = map.iter().min_by_key(|(_, e)| e.until).map(|(ip, _)| *ip);
                if let Some(old) = soonest {
                    map.remove(&old);
                }
            }
        }
        map.insert(
            ip,
            Entry {
                until: now.saturating_add(delay),
                delay,
            },
        );
        delay / 1_000_000
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn pauses_double_and_are_capped() {
        let b = Backoff::new(500, 2000, 16);
        let t = 1000 * MS;
        assert_eq!(b.remaining_ms(ip(1), t), None);
        assert_eq!(b.fail(ip(1), t), 500);
        assert_eq!(b.remaining_ms(ip(1), t), Some(500));
        assert_eq!(b.remaining_ms(ip(1), t + 499 * MS), Some(1));
        assert_eq!(b.remaining_ms(ip(1), t + 500 * MS), None);
        assert_eq!(b.remaining_ms(ip(2), t), None, "per address");
        assert_eq!(b.fail(ip(1), t + 600 * MS), 1000);
        assert_eq!(b.fail(ip(1), t + 700 * MS), 2000);
        assert_eq!(b.fail(ip(1), t + 800 * MS), 2000, "capped");
        // Quiet for long: back to the base.
        assert_eq!(b.fail(ip(1), t + 100_000 * MS), 500);
    }

    #[test]
    fn the_table_is_bounded() {
        let b = Backoff::new(500, 500, 4);
        for n in 0..100 {
            b.fail(ip(n), (1000 + u64::from(n)) * MS);
            assert!(b.len() <= 4);
        }
        assert!(
            b.remaining_ms(ip(99), 1099 * MS).is_some(),
            "the newest stays"
        );
    }

    #[test]
    fn ipv6_peers_share_their_64() {
        let b = Backoff::new(500, 2000, 16);
        let at = |s: &str| s.parse::<IpAddr>().unwrap();
        let t = 1000 * MS;
        b.fail(at("2001:db8:1:2::1"), t);
        assert!(b.remaining_ms(at("2001:db8:1:2:ffff::9"), t).is_some());
        assert!(b.remaining_ms(at("2001:db8:1:3::1"), t).is_none());
        b.fail(at("::ffff:10.0.0.1"), t);
        assert!(b.remaining_ms(at("10.0.0.1"), t).is_some(), "mapped");
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn zero_turns_it_off() {
        let b = Backoff::new(0, 0, 4);
        assert_eq!(b.fail(ip(1), MS), 0);
        assert_eq!(b.remaining_ms(ip(1), MS), None);
    }
}
