//! Which subjects the streams cover: the check that two streams never
//! overlap (a published subject belongs to at most one stream, as in
//! JetStream), the stream covering a topic, and the process-wide
//! [`covered`] set the event loops ask when routing a `bus.publish`.
//!
//! Why process-wide: `methods::needs_writer` sees the caller and the
//! value cache, not the core, and its call sites belong to the
//! transports. Every generation registers its streams' patterns under its
//! own id; two generations alive at once (a reload) share one database
//! and so the same streams. A stale entry costs at most one trip to the
//! writer, which decides with the core's own streams.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use crate::access::pattern::Pattern;
use crate::jsonrpc::RpcError;

static COVERED: RwLock<BTreeMap<u64, Vec<Pattern>>> = RwLock::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Generations with at least one stream: while 0, a publish costs one
/// atomic load here (no lock, no params parsed).
static ANY: AtomicUsize = AtomicUsize::new(0);

/// Whether any stream exists in any generation.
pub fn any() -> bool {
    ANY.load(Ordering::Relaxed) > 0
}

/// Whether some stream of some generation covers `topic`.
pub fn covered(topic: &str) -> bool {
    let all = COVERED.read().unwrap_or_else(|e| e.into_inner());
    all.values().flatten().any(|p| p.matches(topic))
}

/// One generation's entry in [`covered`]; removed when dropped.
#[derive(Debug)]
pub struct Registration(u64);

impl Registration {
    pub fn new() -> Self {
        Registration(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// Replaces this generation's patterns.
    pub fn set(&self, subjects: impl Iterator<Item = String>) {
        let ps: Vec<Pattern> = subjects.filter_map(|s| Pattern::parse(&s).ok()).collect();
        let mut all = COVERED.write().unwrap_or_else(|e| e.into_inner());
        if ps.is_empty() {
            all.remove(&self.0);
        } else {
            all.insert(self.0, ps);
        }
        ANY.store(all.len(), Ordering::Relaxed);
    }
}

impl Default for Registration {
    fn default() -> Self {
        Registration::new()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut all = COVERED.write().unwrap_or_else(|e| e.into_inner());
        all.remove(&self.0);
        ANY.store(all.len(), Ordering::Relaxed);
    }
}

/// Whether one subject could match both patterns.
pub fn overlap(a: &str, b: &str) -> bool {
    Pattern::parse(a).is_ok_and(|p| p.overlaps(b))
}

/// Whether the concrete `topic` matches `pattern`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    Pattern::parse(pattern).is_ok_and(|p| p.matches(topic))
}

/// Whether every subject `sub` (a pattern) can match is inside `pattern`.
pub fn covers(pattern: &str, sub: &str) -> bool {
    Pattern::parse(pattern).is_ok_and(|p| p.covers(sub))
}

/// -32602 unless `s` is a valid topic (or pattern) that is also a NATS
/// subject: no whitespace nor control characters.
pub fn check_subject(s: &str, pattern: bool) -> Result<(), RpcError> {
    crate::bus::check_topic(s, pattern)?;
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RpcError::invalid_params(format!(
            "bad subject {s:?}: segments cannot contain spaces or control characters"
        )));
    }
    Ok(())
}

/// -32602 unless `name` is a valid stream or consumer name
/// (`[A-Za-z0-9_-]{1,64}`, also a valid JetStream name).
pub fn check_name(what: &str, name: &str) -> Result<(), RpcError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params(format!(
            "bad {what} name {name:?}: 1 to 64 of A-Z a-z 0-9 _ -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_names() {
        assert!(overlap("a.>", "a.b"));
        assert!(overlap("a.*", "*.b"));
        assert!(!overlap("a.*", "a.b.c"));
        assert!(!overlap("orders.>", "payments.>"));
        assert!(matches("a.*", "a.x"));
        assert!(!matches("a.*", "a.x.y"));
        assert!(covers("a.>", "a.b.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(check_name("stream", "ORDERS_1-x").is_ok());
        assert!(check_subject("a.*", true).is_ok());
        assert!(check_subject("a b", false).is_err());
        assert!(check_subject("a.\u{7}", false).is_err());
        assert!(check_subject("a.*", false).is_err());
        for bad in ["", "a.b", "a b", "ä", &"x".repeat(65)] {
            assert!(check_name("stream", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registrations_cover_until_dropped() {
        let r = Registration::new();
        r.set(["zz-index-test.>".to_string()].into_iter());
        assert!(covered("zz-index-test.a"));
        drop(r);
        assert!(!covered("zz-index-test.a"));
    }
}
