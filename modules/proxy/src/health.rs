//! Active health checks: a TCP connect to every upstream of every route
//! whose `health_interval` is set, from one thread the generation owns
//! (never from an event loop). `health_fall` failures in a row mark an
//! upstream down, `health_rise` successes bring it back; each change is one
//! log line. The checks of one round run in parallel, so a blackholed
//! upstream delays no other. [`Checker::stop`] wakes and joins the thread.

use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::pool::now_ms;
use crate::route::RouteState;

/// Checks run at once, at most.
const BATCH: usize = 64;

/// The running checker of one generation.
pub struct Checker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Target {
    route: usize,
    member: usize,
    next: Instant,
    passes: u32,
    fails: u32,
}

impl Checker {
    /// Starts the thread if any route checks its upstreams.
    pub fn start(routes: Arc<Vec<RouteState>>) -> std::io::Result<Option<Checker>> {
        let now = Instant::now();
        let targets: Vec<Target> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.cfg.health.interval.is_zero())
            .flat_map(|(ri, r)| {
                (0..r.pool.members.len()).map(move |mi| Target {
                    route: ri,
                    member: mi,
                    next: now,
                    passes: 0,
                    fails: 0,
                })
            })
            .collect();
        if targets.is_empty() {
            return Ok(None);
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("proxy-health".into())
            .spawn(move || run(&routes, targets, &flag))?;
        Ok(Some(Checker {
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Stops the thread and waits for it (at most one check timeout).
    pub fn stop(&self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run(routes: &[RouteState], mut targets: Vec<Target>, stop: &(Mutex<bool>, Condvar)) {
    loop {
        let now = Instant::now();
        let due: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].next <= now)
            .collect();
        for batch in due.chunks(BATCH) {
            let results: Vec<Result<(), String>> = thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|&i| {
                        let t = &targets[i];
                        let r = &routes[t.route];
                        let addr = r.pool.members[t.member].addr;
                        let timeout = r.cfg.health.timeout;
                        s.spawn(move || {
                            TcpStream::connect_timeout(&addr, timeout)
                                .map(drop)
                                .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("check panicked".into())))
                    .collect()
            });
            for (&i, result) in batch.iter().zip(results) {
                apply(routes, &mut targets[i], result);
            }
        }
        let after = Instant::now();
        for &i in &due {
            let t = &mut targets[i];
            t.next = after + routes[t.route].cfg.health.interval;
        }
        let next = targets.iter().map(|t| t.next).min().unwrap_or(after);
        let (lock, cv) = stop;
        let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = cv
                .wait_timeout(stopped, left.min(Duration::from_secs(3600)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if *stopped {
            return;
        }
    }
}

/// Counts one check's result and logs a change of state.
fn apply(routes: &[RouteState], t: &mut Target, result: Result<(), String>) {
    let r = &routes[t.route];
    let m = &r.pool.members[t.member];
    let h = &r.cfg.health;
    match result {
        Ok(()) => {
            t.fails = 0;
            t.passes = t.passes.saturating_add(1);
            if m.health_down.load(Relaxed) && t.passes >= h.rise {
                m.health_down.store(false, Relaxed);
                m.fail_until.store(0, Relaxed);
                log::info!(
                    "route {}: upstream {} is up (health check passed {} times)",
                    r.cfg.name,
                    m.addr,
                    t.passes
                );
            } else if !m.health_down.load(Relaxed) && m.fail_until.load(Relaxed) > now_ms() {
                // It refused a client a moment ago but accepts now.
                m.fail_until.store(0, Relaxed);
                log::info!(
                    "route {}: upstream {} is up again (health check passed)",
                    r.cfg.name,
                    m.addr
                );
            }
        }
        Err(e) => {
            t.passes = 0;
            t.fails = t.fails.saturating_add(1);
            if !m.health_down.load(Relaxed) && t.fails >= h.fall {
                m.health_down.store(true, Relaxed);
                let up = r
                    .pool
                    .members
                    .iter()
                    .filter(|x| !x.health_down.load(Relaxed))
                    .count();
                log::warn!(
                    "route {}: upstream {} is down (health check failed {} times: {e}); \
                     {up} of {} upstreams up",
                    r.cfg.name,
                    m.addr,
                    t.fails,
                    r.pool.members.len()
                );
            }
        }
    }
}
