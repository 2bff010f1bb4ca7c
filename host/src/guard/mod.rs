//! The call guard: the worker-side code that records, in the status page
//! shared with the leader ([`page`]), which module each thread is running
//! and since when, so that the leader can name the module a dead worker
//! was running (and quarantine it) and notice a call that never returns.
//!
//! This is the only code that writes the page's slots. Every call into
//! module code goes through [`ModuleId::enter`]: through
//! `Generation::call` (`crate::generation`) once a generation exists, and
//! directly only in the loader, for the library's manifest and `start`,
//! which run before there is one.
//!
//! Without a page (`--single`, or unit tests) every function here is a
//! cheap no-op: module calls then cost one relaxed load of a `OnceLock`.

pub mod page;

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use parking_lot::Mutex;

use crate::sys;
use page::{now_ms, Entered, Page, PageMap, Slot, SLOTS};

static PAGE: OnceLock<&'static Page> = OnceLock::new();
/// Interned module names; a module's id is its index + 1.
static NAMES_TABLE: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's slot in the page; `u32::MAX` until assigned,
    /// `u32::MAX - 1` when the page is full.
    static SLOT: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// Starts recording into the page behind `fd` (which the leader created
/// and passed down) and installs the fatal-signal handlers that pin a
/// crash on the module the crashing thread was running. Runs once, in a
/// worker, before any module is loaded. Errors are said on stderr: the
/// worker still serves, without crash attribution.
pub fn init(fd: OwnedFd) {
    match PageMap::map(fd.as_raw_fd()) {
        Ok(m) => {
            let _ = PAGE.set(m.leak());
            if let Err(e) = sys::on_fatal_signals(on_fatal) {
                eprintln!("switchyard worker: cannot install the fault handlers: {e}");
            }
        }
        Err(e) => eprintln!("switchyard worker: cannot map the status page: {e}"),
    }
    // The mapping stays; the descriptor closes here.
    drop(fd);
}

/// Whether the leader's hang check times a module call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// On a request's path: a call that runs past `hang_kill_ms` is a hang.
    Watched,
    /// May legitimately run long (a job, `start`, `stop`): a crash is still
    /// pinned on the module, but the hang check leaves it alone.
    Unwatched,
}

/// A module as the status page knows it: its interned name. The same
/// name always gets the same id, across generations and reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleId(u32);

impl ModuleId {
    /// The id of module `name`, recording the name in the page the first
    /// time.
    pub fn intern(name: &str) -> ModuleId {
        let mut names = NAMES_TABLE.lock();
        if let Some(i) = names.iter().position(|n| n == name) {
            return ModuleId(i as u32 + 1);
        }
        names.push(name.to_string());
        let id = names.len() as u32;
        if let Some(page) = PAGE.get() {
            page.set_name(id, name);
        }
        ModuleId(id)
    }

    /// The id of module `name`, also recording `file` as the file it runs
    /// from: what the leader quarantines when a crash is pinned on it.
    /// Record it before the module's code first runs (its `start` may be
    /// what crashes).
    pub fn loaded(name: &str, file: &Path) -> ModuleId {
        let id = ModuleId::intern(name);
        if let Some(page) = PAGE.get() {
            let abs = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
            page.set_path(id.0, &abs.to_string_lossy());
        }
        id
    }

    /// Runs `f`, which calls into this module's code, with the calling
    /// thread recorded as running the module: a crash meanwhile is pinned
    /// on it, and with [`Clock::Watched`] the leader's hang check times
    /// the call. Nested calls (an in-process call into another module)
    /// name the callee while it runs and share the caller's clock (see
    /// [`Slot::enter`]).
    #[inline]
    pub fn enter<R>(self, clock: Clock, f: impl FnOnce() -> R) -> R {
        let _busy = busy(self.0, clock == Clock::Watched);
        f()
    }
}

/// While alive, the calling thread is recorded as running a module.
struct Busy {
    slot: Option<(&'static Slot, Entered)>,
}

#[inline]
fn busy(id: u32, watched: bool) -> Busy {
    Busy {
        slot: PAGE
            .get()
            .and_then(|p| my_slot(p))
            .map(|slot| (slot, slot.enter(id, watched, now_ms()))),
    }
}

impl Drop for Busy {
    #[inline]
    fn drop(&mut self) {
        if let Some((slot, entered)) = self.slot {
            let now = if entered.resumes_clock() { now_ms() } else { 0 };
            slot.leave(entered, now);
        }
    }
}

/// The calling thread's slot, assigned on first use; `None` when every
/// slot is taken.
fn my_slot(page: &'static Page) -> Option<&'static Slot> {
    let idx = SLOT.with(|s| {
        let mut v = s.get();
        if v == u32::MAX {
            let n = page
                .next_slot
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            v = if (n as usize) < SLOTS {
                n
            } else {
                u32::MAX - 1
            };
            s.set(v);
        }
        v
    });
    page.slots.get(idx as usize)
}

/// The calling thread's slot if it has one already: a thread that never
/// called into a module (a module's own thread) gets none.
fn assigned_slot() -> Option<&'static Slot> {
    let page = PAGE.get()?;
    page.slots.get(SLOT.with(|s| s.get()) as usize)
}

/// Starts a wait that is not a hang on the calling thread (see
/// `HostServices::wait_begin`): the leader's hang check skips the thread
/// until [`wait_end`] gets the returned token back. The module stays
/// recorded, so a crash meanwhile is still pinned on it. A thread that is
/// not in a module call (a module's own thread) is not watched anyway:
/// token 0, and no slot is taken for it.
pub fn wait_begin() -> u64 {
    assigned_slot().map_or(0, |slot| slot.wait_begin(now_ms()))
}

/// Ends a wait begun by [`wait_begin`]: the call's clock runs again, with
/// the wait left out of it (see [`Slot::wait_end`]).
pub fn wait_end(token: u64) {
    if let Some(slot) = assigned_slot() {
        slot.wait_end(token, now_ms());
    }
}

/// Records in the page why host code panicked, for the leader to report
/// once the worker has exited (see [`crate::panics`]). The first panic
/// wins.
pub fn record_panic(what: &str) {
    if let Some(page) = PAGE.get() {
        page.set_panic(what);
    }
}

/// Records which module the crashing thread was running, then dies of the
/// same signal with the default action. Async-signal-safe: atomics and a
/// thread-local `Cell` with a const initialiser only.
extern "C" fn on_fatal(sig: libc::c_int) {
    use std::sync::atomic::Ordering;
    if let Some(page) = PAGE.get() {
        let idx = SLOT.with(|s| s.get()) as usize;
        if let Some(slot) = page.slots.get(idx) {
            let m = slot.module.load(Ordering::Acquire);
            if m != 0 {
                let _ = page
                    .faulted
                    .compare_exchange(0, m, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        page.fault_sig.store(sig as u32, Ordering::Release);
    }
    sys::die_of(sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_without_a_slot_takes_none_to_wait() {
        // A real page, as in a worker (the only test that sets one).
        let (_fd, map) = PageMap::create().unwrap();
        let _ = PAGE.set(map.leak());
        let page = *PAGE.get().unwrap();
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            // A module's own thread, never in a module call.
            let taken = page.next_slot.load(Ordering::Relaxed);
            assert_eq!(wait_begin(), 0);
            wait_end(0);
            assert_eq!(SLOT.with(|s| s.get()), u32::MAX, "no slot assigned");
            assert_eq!(page.next_slot.load(Ordering::Relaxed), taken);
            // In a module call it gets one, and its wait pauses the clock.
            ModuleId(7).enter(Clock::Watched, || {
                let idx = SLOT.with(|s| s.get()) as usize;
                assert!(page.busy().iter().any(|&(i, m, _)| i == idx && m == 7));
                let t = wait_begin();
                assert_ne!(t, 0);
                assert!(!page.busy().iter().any(|&(i, ..)| i == idx));
                wait_end(t);
                assert!(page.busy().iter().any(|&(i, m, _)| i == idx && m == 7));
            });
            let idx = SLOT.with(|s| s.get()) as usize;
            assert!(!page.busy().iter().any(|&(i, ..)| i == idx));
        })
        .join()
        .unwrap();
    }
}
