//! `proxy`: Switchyard's L4 proxy. Hands a connection to an upstream
//! server, picked by the connection's first bytes (a configured prefix such
//! as `SSH-`) or, for TLS, by the ClientHello's server name (SNI), which it
//! reads without decrypting anything. The host does the relaying; this
//! module decides where each connection goes and keeps the books.
//!
//! The parts:
//!
//! * [`config`]: the `[modules.proxy]` table, checked at start (every
//!   error names the route and field).
//! * [`matcher`]: first bytes → route (longest prefix; SNI exact, then
//!   `*.` wildcard, then the default route).
//! * [`pool`]: an upstream pool: smooth weighted round-robin or least
//!   connections, over the upstreams that are up.
//! * [`health`]: active TCP-connect checks on a thread of the module's.
//! * [`proxy_protocol`]: the PROXY v1/v2 header for upstreams that want it.
//! * [`sessions`]: connection id → (route, upstream) for `proxy_event`.
//! * [`route`]: per-route counters and the `STATUS` text.
//! * [`saved`]: counters and upstream health handed across reloads.
//!
//! A connection's life: `on_message` picks a route and an upstream and
//! answers `Proxy` (with the PROXY header in `out` if the route sends one).
//! The host connects; `proxy_event(Failed)` marks that upstream failed for
//! `fail_timeout` and answers `Proxy` to the next one (at most `retries`
//! more) or `Close`; `Connected` and `Closed` keep the counters. A
//! connection stays with the generation that proxied it, so a reload
//! changes where new connections go and leaves established ones alone.
//!
//! Config (`[modules.proxy]`; every key but `routes` is optional, and every
//! key but `routes`/`default_route` may also be set per route):
//!
//! ```toml
//! [modules.proxy]
//! balance = "round_robin"      # or "least_conn"
//! retries = 2                  # other upstreams tried after a failed connect
//! fail_timeout = "10s"         # a refused upstream is skipped this long ("0": never)
//! health_interval = "2s"       # TCP connect check every 2 s ("0" or absent: off)
//! health_timeout = "1s"
//! health_rise = 2              # passes that bring a down upstream up
//! health_fall = 2              # failures that take an up upstream down
//! proxy_protocol = "off"       # "v1" or "v2": send the PROXY header
//! default_route = "fallback"   # TLS whose server name no sni route takes
//!
//! [[modules.proxy.routes]]
//! prefix = "ECHO"              # first bytes; \xHH escapes for other bytes
//! upstreams = ["127.0.0.1:7001", "127.0.0.1:7002"]
//!
//! [[modules.proxy.routes]]
//! sni = "*.example.test"       # TLS passthrough by server name
//! upstreams = ["127.0.0.1:8443", { addr = "127.0.0.1:8444", weight = 3 }]
//!
//! [[modules.proxy.routes]]
//! name = "fallback"            # no prefix or sni: only the default route
//! upstreams = ["127.0.0.1:9443"]
//! default = true               # same as default_route = "fallback"
//! ```
//!
//! The module binds every route's prefix, and the TLS record prefix
//! (`\x16\x03`) when it has `sni` routes or a default route. It tells the
//! host to pass its `sni` names through undecrypted.

pub mod config;
pub mod health;
pub mod matcher;
pub mod pool;
pub mod proxy_protocol;
pub mod route;
pub mod saved;
pub mod sessions;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use module_api::{
    ConnInfo, Handler, Manifest, Out, Protocol, ProxyEvent, ProxyEventKind, RVec, ReloadMode,
    StartContext, Verdict,
};

use config::{Config, Match};
use matcher::{Decision, Matcher, Refusal};
use pool::now_ms;
use route::{more, RouteState, Throttle};
use sessions::{Session, Sessions};

/// One generation of the module.
pub struct Proxy {
    config: Config,
    matcher: Matcher,
    routes: Arc<Vec<RouteState>>,
    sessions: Sessions,
    health: Option<health::Checker>,
    /// For lines about connections no route takes.
    refused: Throttle,
}

/// The manifest: no static bindings; the routes' prefixes come from the
/// config through [`Handler::bindings`].
pub fn manifest() -> Manifest {
    Manifest::new("proxy", env!("CARGO_PKG_VERSION"))
        .protocol(Protocol::Raw)
        .reload(ReloadMode::Overlap)
}

fn start(ctx: StartContext<'_>) -> Result<Proxy, String> {
    let mut p = Proxy::new(&ctx.config, ctx.state)?;
    p.start_health()?;
    for r in p.routes.iter() {
        let what = match &r.cfg.matcher {
            Match::Prefix(_) => "prefix",
            Match::Sni(_) => "sni",
            Match::DefaultOnly => "default",
        };
        log::info!(
            "route {} ({what}) -> {} upstream(s), {:?}{}",
            r.cfg.name,
            r.pool.members.len(),
            r.cfg.balance,
            if r.cfg.health.interval.is_zero() {
                String::new()
            } else {
                format!(", health check every {:?}", r.cfg.health.interval)
            }
        );
    }
    Ok(p)
}

impl Proxy {
    /// A generation from the `[modules.proxy]` table (as JSON) and the
    /// previous generation's saved state; no health checks yet (see
    /// [`Proxy::start_health`]).
    pub fn new(config: &serde_json::Value, saved: &[u8]) -> Result<Proxy, String> {
        let config = config::parse(config)?;
        let routes: Vec<RouteState> = config.routes.iter().cloned().map(RouteState::new).collect();
        saved::restore(&routes, saved, now_ms());
        Ok(Proxy {
            matcher: Matcher::new(&config),
            config,
            routes: Arc::new(routes),
            sessions: Sessions::default(),
            health: None,
            refused: Throttle::default(),
        })
    }

    /// Starts the health-check thread if any route has checks on.
    pub fn start_health(&mut self) -> Result<(), String> {
        self.health = health::Checker::start(self.routes.clone())
            .map_err(|e| format!("cannot start the health-check thread: {e}"))?;
        Ok(())
    }

    /// The routes, in config order.
    pub fn routes(&self) -> &[RouteState] {
        &self.routes
    }

    /// The parsed config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Proxied connections this generation is tracking.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Starts a connection on route `ri`: picks an upstream and answers
    /// `Proxy`, or `Close` when none is up.
    fn open(&self, conn: &ConnInfo, ri: usize, out: &mut RVec<u8>) -> Verdict {
        let r = &self.routes[ri];
        let now = now_ms();
        let Some(mi) = r.pool.pick(now, 0) else {
            r.stats.failed.fetch_add(1, Relaxed);
            if let Some(n) = r.throttle.allow(now) {
                log::warn!(
                    "route {}: all {} upstreams are down; closing the connection from {}{}",
                    r.cfg.name,
                    r.pool.members.len(),
                    conn.peer(),
                    more(n)
                );
            }
            return Verdict::close(0);
        };
        let session = Session {
            route: ri as u32,
            member: mi as u32,
            tried: 1 << mi,
            attempts: 1,
        };
        r.stats.active.fetch_add(1, Relaxed);
        if let Some(old) = self.sessions.insert(conn.id, session) {
            // The host reused an id we still track: settle the old one.
            self.finish(old, 0, 0);
        }
        self.proxy_to(conn, r, mi, out)
    }

    fn proxy_to(&self, conn: &ConnInfo, r: &RouteState, mi: usize, out: &mut RVec<u8>) -> Verdict {
        proxy_protocol::write(r.cfg.proxy_protocol, conn.peer(), conn.local(), out);
        Verdict::proxy(r.pool.members[mi].addr)
    }

    /// A session ended: release its upstream, count its bytes.
    fn finish(&self, s: Session, up: u64, down: u64) {
        let r = &self.routes[s.route as usize];
        r.pool.release(s.member as usize);
        dec(&r.stats.active);
        r.stats.bytes_up.fetch_add(up, Relaxed);
        r.stats.bytes_down.fetch_add(down, Relaxed);
    }

    fn on_failed(&self, conn: &ConnInfo, event: &ProxyEvent, out: &mut RVec<u8>) -> Verdict {
        let Some(s) = self.sessions.get(conn.id) else {
            return Verdict::close(0);
        };
        let r = &self.routes[s.route as usize];
        let now = now_ms();
        let mi = s.member as usize;
        r.pool.release(mi);
        if r.pool.failed(mi, now) {
            log::warn!(
                "route {}: upstream {} refused a connection (or timed out); skipping it for {:?}",
                r.cfg.name,
                event.upstream.addr(),
                r.cfg.fail_timeout
            );
        }
        let next = if s.attempts <= r.cfg.retries {
            r.pool.pick(now, s.tried)
        } else {
            None
        };
        match next {
            Some(ni) => {
                self.sessions.update(conn.id, |s| {
                    s.member = ni as u32;
                    s.tried |= 1 << ni;
                    s.attempts += 1;
                });
                self.proxy_to(conn, r, ni, out)
            }
            None => {
                if self.sessions.remove(conn.id).is_some() {
                    dec(&r.stats.active);
                }
                r.stats.failed.fetch_add(1, Relaxed);
                if let Some(n) = r.throttle.allow(now) {
                    log::warn!(
                        "route {}: no upstream accepted the connection from {} after {} attempt(s); closing it{}",
                        r.cfg.name,
                        conn.peer(),
                        s.attempts,
                        more(n)
                    );
                }
                Verdict::close(0)
            }
        }
    }

    fn on_closed(&self, conn: &ConnInfo, event: &ProxyEvent) {
        match self.sessions.remove(conn.id) {
            Some(s) => self.finish(s, event.bytes_up, event.bytes_down),
            None => {
                // Not ours any more (given up on): count the bytes on the
                // first route with that upstream.
                let addr = event.upstream.addr();
                if let Some(r) = self
                    .routes
                    .iter()
                    .find(|r| r.pool.members.iter().any(|m| m.addr == addr))
                {
                    r.stats.bytes_up.fetch_add(event.bytes_up, Relaxed);
                    r.stats.bytes_down.fetch_add(event.bytes_down, Relaxed);
                }
            }
        }
    }
}

/// Decrements a gauge, never below zero.
fn dec(n: &std::sync::atomic::AtomicU64) {
    let _ = n.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
}

impl Handler for Proxy {
    fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
        if conn.tls {
            // The host terminated TLS for this connection: it does not
            // proxy those (pass the name through instead, with an sni route).
            if let Some(n) = self.refused.allow(now_ms()) {
                log::warn!(
                    "closing a TLS connection from {} that the host decrypted: the proxy \
                     relays TLS undecrypted only (sni routes){}",
                    conn.peer(),
                    more(n)
                );
            }
            return Verdict::close(0);
        }
        match self.matcher.decide(input) {
            Decision::NeedMore => Verdict::NEED_MORE,
            Decision::Route(ri) => self.open(conn, ri, out),
            Decision::Refuse(why) => {
                if let Some(n) = self.refused.allow(now_ms()) {
                    let why = match why {
                        Refusal::NoPrefix => "no route matches its first bytes".to_string(),
                        Refusal::NotTls => "it starts like TLS but is not a ClientHello".into(),
                        Refusal::NoSniRoute(Some(name)) => {
                            format!("no route for server name {name:?} and no default route")
                        }
                        Refusal::NoSniRoute(None) => {
                            "its ClientHello names no server and there is no default route".into()
                        }
                    };
                    log::info!(
                        "closing the connection from {}: {why}{}",
                        conn.peer(),
                        more(n)
                    );
                }
                Verdict::close(0)
            }
        }
    }

    fn proxy_event(&self, conn: &ConnInfo, event: ProxyEvent, out: &mut Out) -> Verdict {
        match event.kind {
            ProxyEventKind::Connected => {
                if let Some(s) = self.sessions.get(conn.id) {
                    let r = &self.routes[s.route as usize];
                    r.pool.connected(s.member as usize);
                    r.stats.conns.fetch_add(1, Relaxed);
                }
                Verdict::close(0)
            }
            ProxyEventKind::Failed => self.on_failed(conn, &event, out),
            ProxyEventKind::Closed => {
                self.on_closed(conn, &event);
                Verdict::close(0)
            }
        }
    }

    fn on_close(&self, conn: &ConnInfo) {
        // Normally `proxy_event(Closed)` settled it already.
        if let Some(s) = self.sessions.remove(conn.id) {
            self.finish(s, 0, 0);
        }
    }

    fn bindings(&self) -> Vec<Vec<u8>> {
        self.matcher.bindings()
    }

    fn tls_passthrough(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter_map(|r| match &r.cfg.matcher {
                Match::Sni(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn status(&self) -> String {
        let now = now_ms();
        let mut s = format!("routes={}", self.routes.len());
        for r in self.routes.iter() {
            s.push(' ');
            r.status(now, &mut s);
        }
        s
    }

    fn save_state(&self) -> Vec<u8> {
        saved::save(&self.routes, now_ms())
    }

    fn stop(&self) {
        if let Some(h) = &self.health {
            h.stop();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The thread must not outlive the generation's code.
        self.stop();
    }
}

module_api::export_module!(manifest = manifest, start = start);

#[cfg(test)]
mod tests;
