//! The local addresses of the upstream sockets this server has open, so
//! that a proxy route pointing back at our own port does not make whoever
//! is on the far side of that proxy an admin by address: the connection
//! the loop accepts from such a socket comes from a loopback (or local)
//! address, but it carries a remote client's bytes.
//!
//! Each upstream socket holds an [`OwnUpstream`] mark from the moment its
//! connect is started (the kernel picks the local port then, before a byte
//! can flow) until it is dropped with its session, so the set holds exactly
//! the sockets open now and is bounded by `max_connections`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The set, shared by the event loops.
#[derive(Debug, Default)]
pub struct OwnUpstreams {
    addrs: Mutex<HashSet<SocketAddr>>,
}

impl OwnUpstreams {
    /// Marks `local` (an upstream socket's local address) as ours until the
    /// returned mark is dropped.
    pub fn mark(self: &Arc<Self>, local: SocketAddr) -> OwnUpstream {
        self.addrs.lock().insert(canonical(local));
        OwnUpstream {
            set: self.clone(),
            local,
        }
    }

    /// Whether `peer` is the local end of one of our upstream sockets.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        self.addrs.lock().contains(&canonical(peer))
    }

    pub fn len(&self) -> usize {
        self.addrs.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dual-stack listener reports an IPv4 peer as `::ffff:a.b.c.d`.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One upstream socket's entry in [`OwnUpstreams`]; removes it on drop.
#[derive(Debug)]
pub struct OwnUpstream {
    set: Arc<OwnUpstreams>,
    local: SocketAddr,
}

impl Drop for OwnUpstream {
    fn drop(&mut self) {
        self.set.addrs.lock().remove(&canonical(self.local));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_live_as_long_as_their_socket() {
        let set = Arc::new(OwnUpstreams::default());
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mark = set.mark(a);
        assert!(set.contains(a));
        assert!(set.contains("[::ffff:127.0.0.1]:40000".parse().unwrap()));
        assert!(!set.contains("127.0.0.1:40001".parse().unwrap()));
        drop(mark);
        assert!(!set.contains(a));
        assert!(set.is_empty());
    }
}
