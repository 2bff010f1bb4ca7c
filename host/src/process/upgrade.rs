//! Replacing the worker from inside: `UPGRADE`, and the automatic
//! replacement when retired generations hold more than
//! `max_retained_bytes` ([`retained_over`]). The worker asks its leader
//! (see [`super::leader`]) for a new worker on the same sockets and, once
//! that one is ready, drains and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::worker::{is_worker, link, send};
use crate::state::Shared;

/// Reads `SWITCHYARD_UPGRADES` (`<upgrades> <auto_upgrades>`).
pub(super) fn parse_upgrades(v: &str) -> Option<(u64, u64)> {
    let mut it = v.split_ascii_whitespace().map(|n| n.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// `SWITCHYARD_UPGRADES` for a worker (see [`parse_upgrades`]).
pub fn format_upgrades(all: u64, auto: u64) -> String {
    format!("{all} {auto}")
}

/// Longest an `UPGRADE` waits for the new worker before it answers `ERR`
/// (the replacement may still complete later; see [`replace`]).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the worker is being replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// An operator's `UPGRADE`.
    Upgrade,
    /// Retired generations passed `max_retained_bytes`.
    Retained,
}

/// How a replacement ended: the new worker's pid, or why there is none.
pub type Replaced = Result<u32, String>;

/// Whether an automatic replacement is under way (at most one at a time).
static AUTO_REPLACING: AtomicBool = AtomicBool::new(false);

/// Called after every reload (on the `retained` thread, which the registry
/// tells through a channel; see `server.rs`) with the bytes retired
/// generations hold (`retired`): past `limit` (0 = off) the worker is
/// replaced the way `UPGRADE` does it, which returns that memory. At most
/// one replacement at a time; a failed one is tried again after the next
/// reload.
pub fn retained_over(shared: &Arc<Shared>, retired: u64, limit: u64) {
    if limit == 0 || retired <= limit || shared.shutting_down.load(Ordering::Acquire) {
        return;
    }
    if AUTO_REPLACING.swap(true, Ordering::AcqRel) {
        return;
    }
    if !is_worker() {
        // Said once: the flag stays set.
        log::warn!(
            "retained generations hold {retired} bytes > max_retained_bytes={limit}, \
             but this server runs with --single and cannot replace itself; \
             restart it to return the memory"
        );
        return;
    }
    log::warn!(
        "retained generations hold {retired} bytes > max_retained_bytes={limit}: \
         replacing the worker"
    );
    replace(
        shared.clone(),
        Replace::Retained,
        Box::new(|r: Replaced| match r {
            Ok(pid) => log::info!("worker pid={pid} took over; this one drains and exits"),
            Err(why) => {
                log::error!(
                    "replacing the worker failed: {why}; trying again after the next reload"
                );
                AUTO_REPLACING.store(false, Ordering::Release);
            }
        }),
    );
}

/// Asks the leader for a new worker on the same sockets; once it is ready,
/// reports its pid to `done` and shuts this worker down gracefully (the
/// new one already accepts). `done` gets an error when the leader refuses
/// or is unreachable, or after [`UPGRADE_TIMEOUT`]; in that last case the
/// thread keeps listening, so a new worker that becomes ready later still
/// takes over cleanly instead of finding this one serving on.
pub fn replace(shared: Arc<Shared>, why: Replace, done: Box<dyn FnOnce(Replaced) + Send>) {
    let Some(link) = link() else {
        return done(Err(
            "needs the leader process (this server runs with --single)".into(),
        ));
    };
    let spawned = std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            // One replacement at a time: another one may still be waiting
            // for its new worker (past UPGRADE_TIMEOUT, without an end).
            let Some(replies) = link.replies.try_lock() else {
                return done(Err(
                    "a replacement of this worker is already under way".into()
                ));
            };
            while replies.try_recv().is_ok() {}
            let request = match why {
                Replace::Upgrade => "upgrade",
                Replace::Retained => "upgrade auto",
            };
            if let Err(e) = send(request) {
                return done(Err(format!("leader unreachable: {e}")));
            }
            let mut done = Some(done);
            let answer = match replies.recv_timeout(UPGRADE_TIMEOUT) {
                Ok(l) => Some(l),
                Err(_) => {
                    if let Some(d) = done.take() {
                        d(Err(format!(
                            "the new worker is not ready after {} s; it takes over when it is",
                            UPGRADE_TIMEOUT.as_secs()
                        )));
                    }
                    replies.recv().ok()
                }
            };
            match answer {
                Some(l) if l.starts_with("upgraded ") => {
                    let pid = l["upgraded ".len()..].trim();
                    log::info!("{why:?}: worker pid={pid} is ready; this worker drains and exits");
                    if let Some(d) = done {
                        d(Ok(pid.parse().unwrap_or(0)));
                    }
                    shared.shutdown();
                }
                Some(l) => {
                    let why = l.strip_prefix("upgrade-failed ").unwrap_or(&l);
                    if let Some(d) = done {
                        d(Err(why.to_string()));
                    }
                }
                None => {
                    if let Some(d) = done {
                        d(Err("the leader closed the link".into()));
                    }
                }
            }
        });
    if spawned.is_err() {
        log::error!("{why:?}: cannot start a thread to replace the worker");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_counts_round_trip() {
        assert_eq!(parse_upgrades(&format_upgrades(3, 2)), Some((3, 2)));
        assert_eq!(parse_upgrades("x"), None);
        assert_eq!(parse_upgrades(""), None);
    }
}
