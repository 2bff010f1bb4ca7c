//! The local addresses of the upstream sockets this server has open, so
//! that a proxy route pointing back at our own port does not make whoever
//! is on the far side of that proxy an admin by address: the connection
//! the loop accepts from such a socket comes from a loopback (or local)
//! address, but it carries a remote client's bytes.
//!
//! Each upstream socket whose destination port is our own listening port
//! (only those can reach our listener) holds an [`OwnUpstream`] mark from
//! before its connect starts: the socket is bound first, so its local
//! address is known before any packet leaves. Other upstreams are not
//! marked, so their ports, reused by a local client, are never mistaken
//! for ours. When the session ends the mark is not dropped at once but
//! *retired* for [`LINGER`]: the connection our listener accepted from
//! that socket may still sit in the accept queue, or hold bytes the proxy
//! relayed just before the session ended (a client that sends a command
//! and resets at once), and it must still be recognised. The event loop
//! also asks at accept and keeps the answer for the connection's life
//! (`ConnInfo::self_forwarded`), so the linger only has to cover the time
//! between an upstream connect and our accept. A local client that reuses
//! a retired port within the linger is merely not an admin by address
//! (the safe side). Live marks are bounded by `max_connections`, retired
//! ones by [`MAX_RETIRED`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long an ended session's upstream address is still recognised.
pub const LINGER: Duration = Duration::from_secs(30);

/// Retired addresses kept at most; past it the oldest are forgotten first.
pub const MAX_RETIRED: usize = 1 << 16;

/// The set, shared by the event loops.
#[derive(Debug, Default)]
pub struct OwnUpstreams {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashSet<SocketAddr>,
    /// Retired address -> when it stops counting.
    retired: HashMap<SocketAddr, Instant>,
    /// The same, oldest first, for expiry (an address retired twice has
    /// two entries; only the one matching `retired` removes it).
    order: VecDeque<(SocketAddr, Instant)>,
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some(&(a, until)) = self.order.front() {
            if until > now && self.order.len() <= MAX_RETIRED {
                break;
            }
            self.order.pop_front();
            if self.retired.get(&a) == Some(&until) {
                self.retired.remove(&a);
            }
        }
    }
}

impl OwnUpstreams {
    /// Marks `local` (an upstream socket's local address) as ours until the
    /// returned mark is dropped, and for [`LINGER`] after.
    pub fn mark(self: &Arc<Self>, local: SocketAddr) -> OwnUpstream {
        let local = canonical(local);
        let mut inner = self.inner.lock();
        inner.expire(Instant::now());
        inner.live.insert(local);
        inner.retired.remove(&local);
        OwnUpstream {
            set: self.clone(),
            local,
        }
    }

    /// Whether `peer` is the local end of one of our upstream sockets, open
    /// now or ended within [`LINGER`].
    pub fn contains(&self, peer: SocketAddr) -> bool {
        let peer = canonical(peer);
        let mut inner = self.inner.lock();
        if inner.live.contains(&peer) {
            return true;
        }
        inner.expire(Instant::now());
        inner.retired.contains_key(&peer)
    }

    /// Open upstream sockets marked now (retired ones not counted).
    pub fn len(&self) -> usize {
        self.inner.lock().live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn retire(&self, local: SocketAddr, now: Instant) {
        let mut inner = self.inner.lock();
        inner.live.remove(&local);
        let until = now + LINGER;
        inner.retired.insert(local, until);
        inner.order.push_back((local, until));
        inner.expire(now);
    }
}

/// A dual-stack listener reports an IPv4 peer as `::ffff:a.b.c.d`.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One upstream socket's entry in [`OwnUpstreams`]; retires it on drop.
#[derive(Debug)]
pub struct OwnUpstream {
    set: Arc<OwnUpstreams>,
    local: SocketAddr,
}

impl Drop for OwnUpstream {
    fn drop(&mut self) {
        self.set.retire(self.local, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_outlive_their_socket_by_the_linger() {
        let set = Arc::new(OwnUpstreams::default());
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mark = set.mark(a);
        assert!(set.contains(a));
        assert!(set.contains("[::ffff:127.0.0.1]:40000".parse().unwrap()));
        assert!(!set.contains("127.0.0.1:40001".parse().unwrap()));
        drop(mark);
        // Ended, but a connection accepted from it may still be queued.
        assert!(set.contains(a));
        assert!(set.is_empty());
        // Past the linger it is forgotten.
        let later = Instant::now() + LINGER + Duration::from_secs(1);
        set.inner.lock().expire(later);
        assert!(!set.contains(a));
    }

    #[test]
    fn a_port_marked_again_is_not_expired_by_its_old_retirement() {
        let set = Arc::new(OwnUpstreams::default());
        let a: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        drop(set.mark(a));
        let again = set.mark(a);
        set.inner
            .lock()
            .expire(Instant::now() + LINGER + Duration::from_secs(1));
        assert!(set.contains(a), "live again");
        drop(again);
        assert!(set.contains(a), "retired again, lingering");
    }

    #[test]
    fn retired_marks_are_bounded() {
        let set = Arc::new(OwnUpstreams::default());
        for i in 0..(MAX_RETIRED + 100) {
            let port = (i % 60_000) as u16 + 1;
            let ip = std::net::Ipv4Addr::from(0x7f00_0000 + (i / 60_000) as u32 + 1);
            drop(set.mark(SocketAddr::new(ip.into(), port)));
        }
        let inner = set.inner.lock();
        assert!(inner.order.len() <= MAX_RETIRED, "{}", inner.order.len());
        assert!(inner.retired.len() <= MAX_RETIRED);
    }
}
