//! Per-connection state, kept only while there is some: how far the
//! host's buffered input was already searched for a newline (a raw line
//! still arriving stays in the host's buffer, see [`crate::raw`]), the
//! start of an HTTP request whose end has not arrived, and the reply to a
//! submission the writer is working on.
//!
//! A write never makes its connection wait on the event loop: `on_message`
//! hands the lines to the writer (which commits them together with every
//! other connection's) and *defers* the connection; the host then pauses
//! it and runs `on_deferred` on its pool, which collects the reply. So
//! replies leave in request order, a connection with a write in flight is
//! busy for the host (a graceful shutdown or a peer's half-close waits for
//! the reply), and a client cannot pile up work: it has at most one
//! submission in flight.
//!
//! WebSocket connections ([`crate::ws`]) are listed in [`WsConns`], and
//! each keeps its reader ([`WsState`]) here.
//!
//! Closed connections leave a tombstone for a while, so that a
//! subscription still in the writer's queue when its connection closed is
//! not added afterwards.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard, RwLock};

use module_api::ws::Reassembler;
use serde::{Deserialize, Serialize};

const SHARDS: usize = 64;
/// Closed connection ids remembered per shard.
const TOMBSTONES: usize = 1024;

/// What is known about one connection.
#[derive(Debug, Default)]
pub struct ConnState {
    /// The start of an HTTP request whose end has not arrived (kept by
    /// [`crate::post`]; raw lines stay in the host's buffer).
    pub partial: Vec<u8>,
    /// `partial` is the start of an HTTP request.
    pub partial_http: bool,
    /// The reply of the submission in the writer, once it is there.
    pub pending: Option<Receiver<crate::types::Reply>>,
    /// Raw TCP: the first `scanned` bytes of the input the host will pass
    /// next hold no newline (the start of a line still arriving), so the
    /// next call searches only what arrived since.
    pub scanned: usize,
    /// A WebSocket connection's reader ([`crate::ws`]).
    pub ws: Option<Box<WsState>>,
}

impl ConnState {
    fn is_empty(&self) -> bool {
        self.partial.is_empty() && self.pending.is_none() && self.scanned == 0 && self.ws.is_none()
    }
}

#[derive(Default)]
struct Shard {
    states: HashMap<u64, ConnState>,
    closed: HashSet<u64>,
    closed_order: VecDeque<u64>,
}

/// The state of every connection of one generation.
pub struct Conns {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Conns {
    fn default() -> Conns {
        Conns {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// A locked shard, with the operations that need the lock held.
pub struct Locked<'a> {
    shard: MutexGuard<'a, Shard>,
}

impl Locked<'_> {
    /// Whether the connection is known to have closed.
    pub fn closed(&self, conn: u64) -> bool {
        self.shard.closed.contains(&conn)
    }
}

impl Conns {
    /// Locks the shard that holds `conn`.
    pub fn lock(&self, conn: u64) -> Locked<'_> {
        let i = ((conn ^ (conn >> 32)) as usize) % SHARDS;
        Locked {
            shard: self.shards[i].lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Takes the connection's state out for a call (hand the rest back
    /// with [`Conns::put_back`]).
    pub fn take(&self, conn: u64) -> ConnState {
        self.lock(conn)
            .shard
            .states
            .remove(&conn)
            .unwrap_or_default()
    }

    /// `Some(http)` when the connection has the start of a message kept:
    /// an HTTP request (`true`) or a line.
    pub fn partial_kind(&self, conn: u64) -> Option<bool> {
        let l = self.lock(conn);
        let st = l.shard.states.get(&conn)?;
        (!st.partial.is_empty()).then_some(st.partial_http)
    }

    /// Whether a submission's reply is to be collected.
    pub fn has_pending(&self, conn: u64) -> bool {
        let l = self.lock(conn);
        l.shard
            .states
            .get(&conn)
            .is_some_and(|st| st.pending.is_some())
    }

    /// Ends a call: stores what is left to remember. Returns `false` (and
    /// stores nothing) if the connection closed meanwhile.
    pub fn put_back(&self, conn: u64, st: ConnState) -> bool {
        let mut l = self.lock(conn);
        if l.closed(conn) {
            return false;
        }
        if !st.is_empty() {
            l.shard.states.insert(conn, st);
        }
        true
    }

    /// Forgets a closed connection and leaves a tombstone. `also` runs
    /// under the lock (to drop its subscriptions atomically with it).
    pub fn close(&self, conn: u64, also: impl FnOnce()) {
        let mut l = self.lock(conn);
        l.shard.states.remove(&conn);
        if l.shard.closed.insert(conn) {
            l.shard.closed_order.push_back(conn);
            if l.shard.closed_order.len() > TOMBSTONES {
                if let Some(old) = l.shard.closed_order.pop_front() {
                    l.shard.closed.remove(&old);
                }
            }
        }
        also();
    }

    /// The kept partial messages, for the next generation: (id, bytes,
    /// is HTTP). Call it once the writer is idle (no reply is pending).
    pub fn snapshot(&self) -> Vec<(u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (id, st) in &s.states {
                if !st.partial.is_empty() {
                    out.push((*id, st.partial.clone(), st.partial_http));
                }
            }
        }
        out
    }

    /// The connections this generation saw close (its tombstones), for
    /// the next generation: a session or state handed over for one of
    /// them must not come back to life there.
    pub fn closed_ids(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(s.closed_order.iter().copied());
        }
        out
    }

    /// Takes over a previous generation's tombstones ([`Conns::closed_ids`]).
    pub fn restore_closed(&self, ids: Vec<u64>) {
        for id in ids {
            self.close(id, || {});
        }
    }

    /// Restores a snapshot.
    pub fn restore(&self, partials: Vec<(u64, Vec<u8>, bool)>) {
        for (id, partial, partial_http) in partials {
            let st = ConnState {
                partial,
                partial_http,
                ..ConnState::default()
            };
            self.put_back(id, st);
        }
    }

    /// Number of connections with state (for `STATUS`).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).states.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which connections speak WebSocket. The count is read first, so that a
/// push on a server without WebSocket clients takes no lock.
#[derive(Default)]
pub struct WsConns {
    count: AtomicUsize,
    set: RwLock<HashSet<u64>>,
}

impl WsConns {
    /// Whether `conn` speaks WebSocket.
    pub fn contains(&self, conn: u64) -> bool {
        self.count.load(Ordering::Acquire) != 0
            && self
                .set
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&conn)
    }

    /// Whether any connection does.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0
    }

    pub fn add(&self, conn: u64) {
        let mut s = self.set.write().unwrap_or_else(|e| e.into_inner());
        if s.insert(conn) {
            self.count.store(s.len(), Ordering::Release);
        }
    }

    /// Forgets a closed connection.
    pub fn remove(&self, conn: u64) {
        if !self.any() {
            return;
        }
        let mut s = self.set.write().unwrap_or_else(|e| e.into_inner());
        if s.remove(&conn) {
            self.count.store(s.len(), Ordering::Release);
        }
    }

    /// Splits `conns` into raw ones and WebSocket ones.
    pub fn split(&self, conns: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        conns.iter().partition(|c| !s.contains(c))
    }

    /// Every WebSocket connection.
    pub fn all(&self) -> Vec<u64> {
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        s.iter().copied().collect()
    }

    /// How many connections speak WebSocket (for `STATUS`).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        !self.any()
    }
}

/// A WebSocket connection's reader ([`ConnState::ws`], see [`crate::ws`]).
#[derive(Debug)]
pub struct WsState {
    pub reasm: Reassembler,
}

/// A WebSocket connection as handed over to the next generation: the
/// message whose fragments are arriving, if any (`opcode` 1 text, 2
/// binary; 0 none).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WsSnap {
    pub id: u64,
    #[serde(default)]
    pub opcode: u8,
    #[serde(default)]
    pub fragments: usize,
    /// Hex of the fragments' bytes so far.
    #[serde(default)]
    pub partial: String,
}

/// Lines (each ending with `\n`) as one unmasked WebSocket text frame
/// each, appended to `out`: how a reply or a push reaches a WebSocket
/// connection.
pub fn ws_text_frames(lines: &[u8], out: &mut Vec<u8>) {
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let h = module_api::ws::frame::Header::new(
            true,
            module_api::ws::Opcode::Text,
            line.len(),
            None,
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_matters_and_forgets_closed() {
        let c = Conns::default();
        assert!(c.take(5).partial.is_empty());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        assert!(c.put_back(
            5,
            ConnState {
                partial: b"{\"par".to_vec(),
                pending: Some(rx),
                ..Default::default()
            }
        ));
        assert_eq!(c.partial_kind(5), Some(false));
        assert!(c.has_pending(5));
        tx.send(crate::types::Reply {
            out: b"reply".to_vec(),
            taken: 1,
            close: false,
        })
        .unwrap();
        let mut st = c.take(5);
        assert_eq!(st.pending.take().unwrap().recv().unwrap().out, b"reply");
        assert_eq!(c.partial_kind(5), None, "taken out");
        st.partial.clear();
        assert!(c.put_back(5, st));
        assert!(c.is_empty(), "nothing left to remember");

        let mut ran = false;
        c.close(6, || ran = true);
        assert!(ran);
        let st = ConnState {
            partial: b"x".to_vec(),
            ..Default::default()
        };
        assert!(!c.put_back(6, st), "closed");
        assert!(c.lock(6).closed(6));
        assert!(c.is_empty());
    }

    #[test]
    fn the_websocket_set_counts_what_it_holds() {
        let s = WsConns::default();
        assert!(!s.contains(1) && !s.any());
        s.add(1);
        s.add(1);
        s.add(2);
        assert_eq!(s.len(), 2);
        assert_eq!(s.split(&[1, 3, 2]), (vec![3], vec![1, 2]));
        s.remove(1);
        s.remove(7);
        assert!(s.contains(2) && !s.contains(1));
        assert_eq!(s.len(), 1);
        let mut out = Vec::new();
        ws_text_frames(b"{\"a\":1}\nb\r\n", &mut out);
        assert_eq!(
            out,
            [&[0x81, 7][..], b"{\"a\":1}", &[0x81, 1, b'b']].concat()
        );
    }
}
