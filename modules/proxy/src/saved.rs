//! What a generation hands the next one on reload: each route's counters
//! (so `STATUS` does not start from zero) and each upstream's health (so
//! the new routes do not send clients to an upstream known to be down).
//! Matched by route name and upstream address; anything else starts fresh.
//! Connections that stay on the old generation after the hand-over are
//! counted there only.

use std::sync::atomic::Ordering::Relaxed;

use serde_json::{json, Map, Value};

use crate::route::RouteState;

/// Serializes the routes' state.
pub fn save(routes: &[RouteState], now: u64) -> Vec<u8> {
    let mut out = Map::new();
    for r in routes {
        let s = &r.stats;
        let mut ups = Map::new();
        for m in &r.pool.members {
            ups.insert(
                m.addr.to_string(),
                json!({
                    "down": m.health_down.load(Relaxed),
                    "failed_ms": m.fail_until.load(Relaxed).saturating_sub(now),
                }),
            );
        }
        out.insert(
            r.cfg.name.clone(),
            json!({
                "conns": s.conns.load(Relaxed),
                "failed": s.failed.load(Relaxed),
                "bytes_up": s.bytes_up.load(Relaxed),
                "bytes_down": s.bytes_down.load(Relaxed),
                "upstreams": ups,
            }),
        );
    }
    serde_json::to_vec(&json!({ "v": 1, "routes": out })).unwrap_or_default()
}

/// Applies a previous generation's state (ignored when it is not ours).
pub fn restore(routes: &[RouteState], bytes: &[u8], now: u64) {
    let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    if v["v"] != 1 {
        return;
    }
    for r in routes {
        let old = &v["routes"][r.cfg.name.as_str()];
        if !old.is_object() {
            continue;
        }
        let s = &r.stats;
        for (field, counter) in [
            ("conns", &s.conns),
            ("failed", &s.failed),
            ("bytes_up", &s.bytes_up),
            ("bytes_down", &s.bytes_down),
        ] {
            counter.store(old[field].as_u64().unwrap_or(0), Relaxed);
        }
        for m in &r.pool.members {
            let u = &old["upstreams"][m.addr.to_string().as_str()];
            // Only health checks bring an upstream back up.
            if u["down"] == true && !r.cfg.health.interval.is_zero() {
                m.health_down.store(true, Relaxed);
            }
            let left = u["failed_ms"].as_u64().unwrap_or(0);
            if left > 0 {
                m.fail_until.store(now + left, Relaxed);
            }
        }
    }
}
