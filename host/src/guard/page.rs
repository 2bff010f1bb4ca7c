//! The status page a worker shares with its leader: one `#[repr(C)]`
//! [`Page`] of atomics in a `memfd`, where each thread that calls into a
//! module records which module and since when ([`Slot`]), the
//! fatal-signal handler records which module a crashing thread was in,
//! and the panic hook records where host code panicked.
//!
//! The worker writes it only through [`crate::guard`]; the leader
//! (`crate::process::leader`) only reads it. Its layout is a contract
//! between two builds of the binary: after `UPGRADE` an old leader reads a
//! new worker's page, so the layout must never change (the `const`
//! assertions below pin it).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::sys;

/// Threads that can record module calls; later threads are not tracked.
pub const SLOTS: usize = 256;
/// Module names the page can hold.
pub const NAMES: usize = 128;
const NAME_LEN: usize = 64;
const PATH_LEN: usize = 448;
/// Bytes of a panic description the page keeps.
const PANIC_LEN: usize = 1024;

/// One thread's current module call.
///
/// Invariant: `since_ms` is 0 whenever `module` is 0. While in module code
/// it is the start of the call's hang clock, or 0 when the clock is off:
/// an unwatched call (a job, `stop`), or a wait that is not a hang.
#[repr(C)]
pub struct Slot {
    /// Module id (1-based index into the page's names), 0 when not in
    /// module code.
    pub module: AtomicU32,
    _pad: u32,
    /// [`now_ms`] when the watched time of the call started (shifted later
    /// by the waits it made), 0 when nothing is watched.
    pub since_ms: AtomicU64,
}

/// What [`Slot::enter`] changed, for [`Slot::leave`] to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    /// The module the thread was in before (0: none).
    prev_module: u32,
    /// Whether this call started its own clock (and must stop it again).
    own_clock: bool,
    /// An unwatched call inside a watched one pauses the caller's clock
    /// like a wait: the [`Slot::wait_begin`] token, 0 when nothing paused.
    paused: u64,
}

impl Entered {
    /// Whether [`Slot::leave`] needs the time.
    pub fn resumes_clock(&self) -> bool {
        self.paused != 0
    }
}

impl Slot {
    /// Records a call into module `id` starting at `now`. A `watched` call
    /// starts the hang clock unless one already runs: a nested call (an
    /// in-process call into another module) shares its caller's clock, so
    /// the caller is charged for the time it waits for the callee, less
    /// the callee's own waits. An unwatched call stops the clock until it
    /// returns (its time is no hang, whoever called it).
    pub fn enter(&self, id: u32, watched: bool, now: u64) -> Entered {
        let prev_module = self.module.load(Ordering::Relaxed);
        let since = self.since_ms.load(Ordering::Relaxed);
        let own_clock = watched && since == 0;
        let paused = if watched { 0 } else { self.wait_begin(now) };
        if own_clock {
            // Start time first: the leader must never see the module with
            // a stale start time.
            self.since_ms.store(now.max(1), Ordering::Release);
        }
        self.module.store(id, Ordering::Release);
        Entered {
            prev_module,
            own_clock,
            paused,
        }
    }

    /// Undoes [`Slot::enter`] at `now` (read only when
    /// [`Entered::resumes_clock`]): back to the caller's module, and its
    /// clock as the callee left it (shifted by the callee's waits).
    pub fn leave(&self, e: Entered, now: u64) {
        // Module first: the leader must never see this call's start time
        // on no module; it may briefly see the caller's module with this
        // call's start time, which is no older than the caller's own.
        self.module.store(e.prev_module, Ordering::Release);
        if e.prev_module == 0 || e.own_clock {
            self.since_ms.store(0, Ordering::Release);
        } else if e.paused != 0 {
            self.wait_end(e.paused, now);
        }
    }

    /// Pauses the clock for a wait that is not a hang. Returns the token
    /// for [`Slot::wait_end`]: 0 when no clock ran (not in module code, an
    /// unwatched call, or a wait inside a wait), otherwise one more than
    /// the watched milliseconds the call had used before the wait.
    pub fn wait_begin(&self, now: u64) -> u64 {
        if self.module.load(Ordering::Acquire) == 0 {
            return 0;
        }
        match self.since_ms.swap(0, Ordering::AcqRel) {
            0 => 0,
            since => now.saturating_sub(since) + 1,
        }
    }

    /// Resumes the clock paused by [`Slot::wait_begin`] as if the wait had
    /// not happened: the time used before the wait still counts (a call
    /// that spins between short waits is still caught), the wait does not.
    pub fn wait_end(&self, token: u64, now: u64) {
        if token == 0 || self.module.load(Ordering::Acquire) == 0 {
            return;
        }
        let used = token - 1;
        self.since_ms
            .store(now.saturating_sub(used).max(1), Ordering::Release);
    }

    /// `(module, since_ms)` when the thread is in a watched module call: a
    /// consistent reading (the same call before and after reading its
    /// start time).
    pub fn watched(&self) -> Option<(u32, u64)> {
        let m = self.module.load(Ordering::Acquire);
        let since = self.since_ms.load(Ordering::Acquire);
        let again = self.module.load(Ordering::Acquire);
        (m != 0 && m == again && since != 0).then_some((m, since))
    }
}

/// A module name and the file it was loaded from.
#[repr(C)]
pub struct NameEntry {
    name_len: AtomicU32,
    path_len: AtomicU32,
    name: [AtomicU8; NAME_LEN],
    path: [AtomicU8; PATH_LEN],
}

/// The page a worker shares with its leader (a `memfd`, zero-filled).
#[repr(C)]
pub struct Page {
    /// Module id recorded by the fatal-signal handler of the thread that
    /// crashed, 0 if that thread was not in module code.
    pub faulted: AtomicU32,
    /// The fatal signal the handler saw.
    pub fault_sig: AtomicU32,
    /// Slots handed out so far.
    pub next_slot: AtomicU32,
    _pad: u32,
    pub slots: [Slot; SLOTS],
    names: [NameEntry; NAMES],
    /// Where and why host code panicked (see [`crate::panics`]): the
    /// worker then exits, and the leader reports `cause=panic`.
    panic_len: AtomicU32,
    panic: [AtomicU8; PANIC_LEN],
}

// The layout an old leader expects of a new worker's page (and the other
// way round): these numbers must never change.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Slot>() == 16);
    assert!(offset_of!(Slot, module) == 0);
    assert!(offset_of!(Slot, since_ms) == 8);
    assert!(size_of::<NameEntry>() == 8 + NAME_LEN + PATH_LEN);
    assert!(offset_of!(NameEntry, name) == 8);
    assert!(offset_of!(NameEntry, path) == 8 + NAME_LEN);
    assert!(offset_of!(Page, faulted) == 0);
    assert!(offset_of!(Page, fault_sig) == 4);
    assert!(offset_of!(Page, next_slot) == 8);
    assert!(offset_of!(Page, slots) == 16);
    assert!(offset_of!(Page, names) == 16 + 16 * SLOTS);
    assert!(offset_of!(Page, panic_len) == 16 + 16 * SLOTS + 520 * NAMES);
    assert!(offset_of!(Page, panic) == 20 + 16 * SLOTS + 520 * NAMES);
    assert!(size_of::<Page>() == 71_704);
};

fn store_bytes(dst: &[AtomicU8], len: &AtomicU32, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(dst.len());
    for (d, &c) in dst.iter().zip(&b[..n]) {
        d.store(c, Ordering::Relaxed);
    }
    len.store(n as u32, Ordering::Release);
}

fn load_bytes(src: &[AtomicU8], len: &AtomicU32) -> String {
    let n = (len.load(Ordering::Acquire) as usize).min(src.len());
    let v: Vec<u8> = src[..n].iter().map(|c| c.load(Ordering::Relaxed)).collect();
    String::from_utf8_lossy(&v).into_owned()
}

impl Page {
    /// The name of module `id` (1-based), if recorded.
    pub fn name(&self, id: u32) -> Option<String> {
        let e = self.entry(id)?;
        let n = load_bytes(&e.name, &e.name_len);
        (!n.is_empty()).then_some(n)
    }

    /// The file module `id` was loaded from, if recorded.
    pub fn path(&self, id: u32) -> Option<PathBuf> {
        let e = self.entry(id)?;
        let p = load_bytes(&e.path, &e.path_len);
        (!p.is_empty()).then(|| PathBuf::from(p))
    }

    /// Slots in use: `(slot, module id, since_ms)` of threads now in a
    /// watched module call.
    pub fn busy(&self) -> Vec<(usize, u32, u64)> {
        let n = (self.next_slot.load(Ordering::Acquire) as usize).min(SLOTS);
        self.slots[..n]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.watched().map(|(m, since)| (i, m, since)))
            .collect()
    }

    /// The panic the worker recorded before it exited, if any.
    pub fn panic(&self) -> Option<String> {
        let p = load_bytes(&self.panic, &self.panic_len);
        (!p.is_empty()).then_some(p)
    }

    fn entry(&self, id: u32) -> Option<&NameEntry> {
        self.names.get((id as usize).checked_sub(1)?)
    }

    /// Records the name of module `id` (no-op past [`NAMES`]).
    pub(super) fn set_name(&self, id: u32, name: &str) {
        if let Some(e) = self.entry(id) {
            store_bytes(&e.name, &e.name_len, name);
        }
    }

    /// Records the file module `id` runs from (no-op past [`NAMES`]).
    pub(super) fn set_path(&self, id: u32, path: &str) {
        if let Some(e) = self.entry(id) {
            store_bytes(&e.path, &e.path_len, path);
        }
    }

    /// Records why host code panicked; the first panic wins.
    pub(super) fn set_panic(&self, what: &str) {
        if self.panic_len.load(Ordering::Acquire) == 0 {
            store_bytes(&self.panic, &self.panic_len, what);
        }
    }
}

/// A mapping of a [`Page`]; unmapped on drop.
pub struct PageMap {
    ptr: NonNull<u8>,
}

// SAFETY: the page holds only atomics, and the mapping lives as long as
// the `PageMap`; moving it to another thread moves nothing but the pointer.
unsafe impl Send for PageMap {}
// SAFETY: every access to the shared page goes through its atomics, so
// concurrent readers and writers need no further synchronisation.
unsafe impl Sync for PageMap {}

impl PageMap {
    /// Maps the page behind `fd` (which must be at least a page long).
    pub fn map(fd: RawFd) -> io::Result<PageMap> {
        let ptr = sys::map_shared(fd, std::mem::size_of::<Page>())?;
        Ok(PageMap { ptr })
    }

    /// Creates a new zeroed page: its descriptor (close-on-exec) and a
    /// mapping.
    pub fn create() -> io::Result<(OwnedFd, PageMap)> {
        let file = sys::anonymous_file(c"switchyard-status")?;
        file.set_len(std::mem::size_of::<Page>() as u64)?;
        let map = PageMap::map(file.as_raw_fd())?;
        Ok((file.into(), map))
    }

    pub fn get(&self) -> &Page {
        // SAFETY: mapped (page-aligned, `size_of::<Page>()` bytes) for as
        // long as `self` lives; every field of `Page` is an atomic or
        // padding, valid for any bytes, zeroed ones included.
        unsafe { self.ptr.cast::<Page>().as_ref() }
    }

    /// Keeps the mapping for the rest of the process.
    pub(super) fn leak(self) -> &'static Page {
        let p = self.ptr;
        std::mem::forget(self);
        // SAFETY: as in `get`, and never unmapped from now on.
        unsafe { p.cast::<Page>().as_ref() }
    }
}

impl Drop for PageMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no reference outlives
        // `self` (`get` borrows it).
        unsafe { sys::unmap(self.ptr, std::mem::size_of::<Page>()) }
    }
}

/// Milliseconds on the system-wide monotonic clock (the same in the leader
/// and the worker).
pub fn now_ms() -> u64 {
    sys::monotonic_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            module: AtomicU32::new(0),
            _pad: 0,
            since_ms: AtomicU64::new(0),
        }
    }

    /// The hang check's view: (module, age in ms) at `now`.
    fn age(s: &Slot, now: u64) -> Option<(u32, u64)> {
        s.watched().map(|(m, since)| (m, now - since))
    }
    #[test]
    fn a_call_is_watched_from_its_start_and_forgotten_after() {
        let s = slot();
        let e = s.enter(1, true, 1000);
        assert_eq!(age(&s, 1500), Some((1, 500)));
        s.leave(e, 0);
        assert_eq!(age(&s, 1600), None);
        assert_eq!(s.since_ms.load(Ordering::Relaxed), 0, "no stale start time");
    }

    #[test]
    fn a_wait_is_left_out_and_the_time_before_it_still_counts() {
        let s = slot();
        let e = s.enter(1, true, 1000);
        let t = s.wait_begin(1300);
        assert_ne!(t, 0);
        assert_eq!(age(&s, 9000), None, "a wait is not a hang");
        s.wait_end(t, 9000);
        // 300 ms before the wait, 100 after it.
        assert_eq!(age(&s, 9100), Some((1, 400)));
        s.leave(e, 0);
    }

    #[test]
    fn a_spin_between_short_waits_is_still_caught() {
        let s = slot();
        let e = s.enter(1, true, 1000);
        let mut now = 1000;
        for _ in 0..100 {
            now += 200; // spinning
            let t = s.wait_begin(now);
            now += 1; // a short wait
            s.wait_end(t, now);
        }
        assert_eq!(age(&s, now), Some((1, 20_000)));
        s.leave(e, 0);
    }

    #[test]
    fn nested_waits_end_once() {
        let s = slot();
        let e = s.enter(1, true, 1000);
        let outer = s.wait_begin(1100);
        let inner = s.wait_begin(1200);
        assert_eq!(inner, 0, "a wait inside a wait has nothing to pause");
        s.wait_end(inner, 5000);
        assert_eq!(age(&s, 5000), None, "the outer wait goes on");
        s.wait_end(outer, 6000);
        assert_eq!(age(&s, 6000), Some((1, 100)));
        s.leave(e, 0);
    }

    #[test]
    fn a_callee_shares_the_callers_clock_but_not_its_waits() {
        // Module 1 calls module 2 in-process; 2 waits for a group commit.
        let s = slot();
        let caller = s.enter(1, true, 1000);
        let callee = s.enter(2, true, 1200);
        assert_eq!(age(&s, 1300), Some((2, 300)), "the callee is named");
        let t = s.wait_begin(1300);
        s.wait_end(t, 8000);
        assert_eq!(age(&s, 8000), Some((2, 300)));
        s.leave(callee, 0);
        // Back in the caller: its 300 ms, not the callee's 6.7 s wait.
        assert_eq!(age(&s, 8100), Some((1, 400)));
        s.leave(caller, 0);
        assert_eq!(age(&s, 8100), None);
    }

    #[test]
    fn a_call_made_during_a_wait_is_watched_on_its_own() {
        let s = slot();
        let caller = s.enter(1, true, 1000);
        let t = s.wait_begin(1100);
        let callee = s.enter(2, true, 5000);
        assert_eq!(age(&s, 6000), Some((2, 1000)), "a stuck callee is caught");
        s.leave(callee, 0);
        assert_eq!(age(&s, 7000), None, "the caller's wait goes on");
        s.wait_end(t, 7000);
        assert_eq!(age(&s, 7000), Some((1, 100)));
        s.leave(caller, 0);
    }

    #[test]
    fn unwatched_calls_stay_unwatched_but_their_callees_do_not() {
        let s = slot();
        let job = s.enter(1, false, 1000);
        assert_eq!(age(&s, 99_000), None, "a job may run long");
        assert_eq!(s.wait_begin(2000), 0, "nothing to pause");
        let callee = s.enter(2, true, 3000);
        assert_eq!(age(&s, 4000), Some((2, 1000)));
        s.leave(callee, 0);
        assert_eq!(age(&s, 99_000), None);
        assert_eq!(s.module.load(Ordering::Relaxed), 1, "crashes still pinned");
        s.leave(job, 0);
        assert_eq!(s.module.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_unwatched_call_inside_a_watched_one_pauses_its_clock() {
        // A module call drops the last holder of a retired generation,
        // whose `stop` runs long.
        let s = slot();
        let call = s.enter(1, true, 1000);
        let stop = s.enter(2, false, 1200);
        assert!(stop.resumes_clock());
        assert_eq!(age(&s, 60_000), None, "stop may run long");
        assert_eq!(s.module.load(Ordering::Relaxed), 2, "crashes pinned on 2");
        s.leave(stop, 60_000);
        assert_eq!(age(&s, 60_100), Some((1, 300)));
        s.leave(call, 0);
        assert_eq!(age(&s, 60_100), None);
    }

    #[test]
    fn a_wait_outside_module_code_changes_nothing() {
        let s = slot();
        assert_eq!(s.wait_begin(1000), 0);
        s.wait_end(0, 2000);
        s.wait_end(77, 2000);
        assert_eq!(s.since_ms.load(Ordering::Relaxed), 0);
        assert_eq!(age(&s, 3000), None);
    }
}
