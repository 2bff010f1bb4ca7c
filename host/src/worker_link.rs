//! The worker's side of the leader/worker process model (see
//! [`crate::supervisor`] for the leader's).
//!
//! A worker is this same binary started by the leader with a few
//! environment variables naming descriptors it inherited:
//! * `SWITCHYARD_LISTEN_FDS`: the listening sockets (comma-separated), used
//!   instead of binding;
//! * `SWITCHYARD_ADMIN_FD`: the admin Unix socket (`[server] admin_socket`)
//!   when one is configured, bound by the leader and served by the worker
//!   (see [`crate::admin_socket`]);
//! * `SWITCHYARD_CONTROL_FD`: a socket pair to the leader, one text line per
//!   message (`ready`, `upgrade` up; `upgraded <pid>`, `upgrade-failed
//!   <why>` down);
//! * `SWITCHYARD_STATUS_FD`: a shared [`Page`] where each thread that calls
//!   into a module records which module and since when (two atomic stores
//!   per call), so the leader can name the module a dead worker was running
//!   and notice a call that never returns;
//! * `SWITCHYARD_QUARANTINE`: the quarantine file, consulted at load;
//! * `SWITCHYARD_LAST_FAULT`: why the previous worker died, for `STATUS`;
//! * `SWITCHYARD_UPGRADES`: `<upgrades> <auto_upgrades>`, how many times
//!   the leader has replaced a worker on request so far, for `STATUS`.
//!
//! It also replaces the worker from inside: `UPGRADE`, and the automatic
//! replacement when retired generations hold more than
//! `max_retained_bytes` ([`retained_over`]).
//!
//! Without them (`--single`, or tests of the single process) every function
//! here is a cheap no-op, except the `worker` line of `STATUS`.

use std::cell::Cell;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::pool::AdminReply;
use crate::state::Shared;

pub const ENV_LISTEN_FDS: &str = "SWITCHYARD_LISTEN_FDS";
pub const ENV_ADMIN_FD: &str = "SWITCHYARD_ADMIN_FD";
pub const ENV_CONTROL_FD: &str = "SWITCHYARD_CONTROL_FD";
pub const ENV_STATUS_FD: &str = "SWITCHYARD_STATUS_FD";
pub const ENV_QUARANTINE: &str = "SWITCHYARD_QUARANTINE";
pub const ENV_LAST_FAULT: &str = "SWITCHYARD_LAST_FAULT";
pub const ENV_UPGRADES: &str = "SWITCHYARD_UPGRADES";

// ---------------------------------------------------------------------------
// The shared status page.

/// Threads that can record module calls; later threads are not tracked.
pub const SLOTS: usize = 256;
/// Module names the page can hold.
pub const NAMES: usize = 128;
const NAME_LEN: usize = 64;
const PATH_LEN: usize = 448;

/// One thread's current module call.
///
/// Invariant: `since_ms` is 0 whenever `module` is 0. While in module code
/// it is the start of the call's hang clock, or 0 when the clock is off:
/// an unwatched call (a job, `stop`), or a wait that is not a hang.
#[repr(C)]
pub struct Slot {
    /// Module id (1-based index into `names`), 0 when not in module code.
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

/// Bytes of a panic description the page keeps.
const PANIC_LEN: usize = 1024;

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
        let e = self.names.get((id as usize).checked_sub(1)?)?;
        let n = load_bytes(&e.name, &e.name_len);
        (!n.is_empty()).then_some(n)
    }

    /// The file module `id` was loaded from, if recorded.
    pub fn path(&self, id: u32) -> Option<PathBuf> {
        let e = self.names.get((id as usize).checked_sub(1)?)?;
        let p = load_bytes(&e.path, &e.path_len);
        (!p.is_empty()).then(|| PathBuf::from(p))
    }

    /// Slots in use: `(slot, module id, since_ms)` of threads now in module
    /// code.
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
}

/// A mapping of a [`Page`]; unmapped on drop.
pub struct PageMap {
    ptr: *mut Page,
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
        // SAFETY: a fresh shared mapping of a descriptor we were given;
        // every field of `Page` is valid when zeroed.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Page>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PageMap { ptr: p.cast() })
    }

    /// Creates a new zeroed page: its descriptor (close-on-exec) and a
    /// mapping.
    pub fn create() -> io::Result<(std::os::fd::OwnedFd, PageMap)> {
        use std::os::fd::AsRawFd;
        let file = anonymous_file()?;
        file.set_len(std::mem::size_of::<Page>() as u64)?;
        let map = PageMap::map(file.as_raw_fd())?;
        Ok((file.into(), map))
    }

    pub fn get(&self) -> &Page {
        // SAFETY: mapped for as long as `self` lives; atomics only.
        unsafe { &*self.ptr }
    }

    /// Keeps the mapping for the rest of the process.
    fn leak(self) -> &'static Page {
        let p = self.ptr;
        std::mem::forget(self);
        // SAFETY: never unmapped from now on.
        unsafe { &*p }
    }
}

impl Drop for PageMap {
    fn drop(&mut self) {
        // SAFETY: unmaps what `map` mapped; no reference outlives `self`.
        unsafe {
            libc::munmap(self.ptr.cast(), std::mem::size_of::<Page>());
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn anonymous_file() -> io::Result<fs::File> {
    // SAFETY: a NUL-terminated name; we own the returned descriptor.
    let fd = unsafe { libc::memfd_create(c"switchyard-status".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn anonymous_file() -> io::Result<fs::File> {
    let path = std::env::temp_dir().join(format!(
        "switchyard-status-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = fs::remove_file(&path);
    Ok(f)
}

/// Milliseconds on the system-wide monotonic clock (the same in the leader
/// and the worker).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

// ---------------------------------------------------------------------------
// The worker's link to its leader.

struct Link {
    listen_fds: Mutex<Option<Vec<RawFd>>>,
    /// The admin socket's listener, until [`take_admin_socket`].
    admin_fd: Mutex<Option<RawFd>>,
    ctl: Mutex<UnixStream>,
    replies: Mutex<Receiver<String>>,
    quarantine: Option<PathBuf>,
    last_fault: Option<String>,
    /// Worker replacements on request so far: (all, automatic).
    upgrades: (u64, u64),
}

static LINK: OnceLock<Link> = OnceLock::new();
static PAGE: OnceLock<&'static Page> = OnceLock::new();
/// Interned module names; a module's id is its index + 1.
static NAMES_TABLE: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's slot in the page; `u32::MAX` until assigned,
    /// `u32::MAX - 1` when the page is full.
    static SLOT: Cell<u32> = const { Cell::new(u32::MAX) };
}

fn env_fd(name: &str) -> Option<RawFd> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Reads the worker environment, if the leader started us. Must run
/// before any other thread starts (it edits the environment).
pub fn init() {
    let Some(fds) = std::env::var(ENV_LISTEN_FDS).ok() else {
        return;
    };
    let listen_fds: Vec<RawFd> = fds
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let admin_fd = env_fd(ENV_ADMIN_FD);
    let ctl_fd = env_fd(ENV_CONTROL_FD);
    let page_fd = env_fd(ENV_STATUS_FD);
    let quarantine = std::env::var_os(ENV_QUARANTINE).map(PathBuf::from);
    let last_fault = std::env::var(ENV_LAST_FAULT).ok().filter(|s| !s.is_empty());
    let upgrades = std::env::var(ENV_UPGRADES)
        .ok()
        .and_then(|v| parse_upgrades(&v))
        .unwrap_or_default();
    for v in [
        ENV_LISTEN_FDS,
        ENV_ADMIN_FD,
        ENV_CONTROL_FD,
        ENV_STATUS_FD,
        ENV_QUARANTINE,
        ENV_LAST_FAULT,
        ENV_UPGRADES,
    ] {
        std::env::remove_var(v);
    }
    // What we inherited must not leak into processes modules start.
    for &fd in listen_fds.iter().chain(&admin_fd) {
        set_cloexec(fd);
    }
    if let Some(fd) = page_fd {
        set_cloexec(fd);
        match PageMap::map(fd) {
            Ok(m) => {
                let _ = PAGE.set(m.leak());
                install_fault_handlers();
            }
            Err(e) => eprintln!("switchyard worker: cannot map the status page: {e}"),
        }
        // SAFETY: the mapping stays; the descriptor is ours to close.
        unsafe { libc::close(fd) };
    }
    let Some(ctl_fd) = ctl_fd else { return };
    set_cloexec(ctl_fd);
    // SAFETY: the leader handed us this descriptor; nothing else owns it.
    let ctl = unsafe { UnixStream::from_raw_fd(ctl_fd) };
    let (tx, rx) = crossbeam_channel::unbounded();
    if let Ok(reader) = ctl.try_clone() {
        let _ = std::thread::Builder::new()
            .name("leader-link".into())
            .spawn(move || read_leader(reader, tx));
    }
    let _ = LINK.set(Link {
        listen_fds: Mutex::new(Some(listen_fds)),
        admin_fd: Mutex::new(admin_fd),
        ctl: Mutex::new(ctl),
        replies: Mutex::new(rx),
        quarantine,
        last_fault,
        upgrades,
    });
}

/// Reads `SWITCHYARD_UPGRADES` (`<upgrades> <auto_upgrades>`).
fn parse_upgrades(v: &str) -> Option<(u64, u64)> {
    let mut it = v.split_ascii_whitespace().map(|n| n.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

/// `SWITCHYARD_UPGRADES` for a worker (see [`parse_upgrades`]).
pub fn format_upgrades(all: u64, auto: u64) -> String {
    format!("{all} {auto}")
}

fn read_leader(reader: UnixStream, tx: Sender<String>) {
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let _ = tx.send(line);
    }
    // The leader is gone; PR_SET_PDEATHSIG ends us where it exists.
    log::warn!("the leader closed its link to this worker");
}

/// Whether this process is a worker started by a leader.
pub fn is_worker() -> bool {
    LINK.get().is_some()
}

/// The listening sockets inherited from the leader (once).
pub fn take_listeners() -> Option<Vec<TcpListener>> {
    let fds = LINK.get()?.listen_fds.lock().take()?;
    Some(
        fds.into_iter()
            // SAFETY: the leader passed these listening sockets to us.
            .map(|fd| unsafe { TcpListener::from_raw_fd(fd) })
            .collect(),
    )
}

/// The admin socket inherited from the leader (once); `None` when the
/// leader has none (no `admin_socket` configured) or this is no worker.
pub fn take_admin_socket() -> Option<UnixListener> {
    let fd = LINK.get()?.admin_fd.lock().take()?;
    // SAFETY: the leader passed this listening Unix socket to us; nothing
    // else in this process owns the descriptor.
    Some(unsafe { UnixListener::from_raw_fd(fd) })
}

fn send(line: &str) -> io::Result<()> {
    let Some(link) = LINK.get() else {
        return Err(io::Error::other("not a worker"));
    };
    let mut ctl = link.ctl.lock();
    ctl.write_all(line.as_bytes())?;
    ctl.write_all(b"\n")
}

/// Tells the leader this worker is serving.
pub fn ready() {
    if let Err(e) = send("ready") {
        log::error!("cannot tell the leader this worker is ready: {e}");
    }
}

/// A module's id for [`enter`]; the same name always gets the same id.
pub fn intern(name: &str) -> u32 {
    let mut names = NAMES_TABLE.lock();
    if let Some(i) = names.iter().position(|n| n == name) {
        return i as u32 + 1;
    }
    names.push(name.to_string());
    let id = names.len() as u32;
    if let Some(page) = PAGE.get() {
        if let Some(e) = page.names.get(id as usize - 1) {
            store_bytes(&e.name, &e.name_len, name);
        }
    }
    id
}

/// Records the file module `name` runs from (for the quarantine).
pub fn loaded(name: &str, file: &Path) {
    let id = intern(name);
    if let Some(e) = PAGE.get().and_then(|p| p.names.get(id as usize - 1)) {
        let abs = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        store_bytes(&e.path, &e.path_len, &abs.to_string_lossy());
    }
}

/// While alive, the calling thread is recorded as running module `id`.
pub struct Busy {
    slot: Option<(&'static Slot, Entered)>,
}

/// The calling thread's slot, assigned on first use; `None` without a
/// page or when every slot is taken.
fn my_slot(page: &'static Page) -> Option<&'static Slot> {
    let idx = SLOT.with(|s| {
        let mut v = s.get();
        if v == u32::MAX {
            let n = page.next_slot.fetch_add(1, Ordering::AcqRel);
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

fn enter_slot(id: u32, watched: bool) -> Busy {
    Busy {
        slot: PAGE
            .get()
            .and_then(|p| my_slot(p))
            .map(|slot| (slot, slot.enter(id, watched, now_ms()))),
    }
}

/// Marks the calling thread as running module `id` until the guard drops,
/// with the hang clock running (see [`Slot::enter`]).
#[inline]
pub fn enter(id: u32) -> Busy {
    enter_slot(id, true)
}

/// Like [`enter`], for module code that may legitimately run long (a
/// scheduled job, a generation's `stop`, even when a module call leads to
/// it): a crash in it is attributed to the module, but the leader's hang
/// check leaves it alone.
pub fn enter_unwatched(id: u32) -> Busy {
    enter_slot(id, false)
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
        if page.panic_len.load(Ordering::Acquire) == 0 {
            store_bytes(&page.panic, &page.panic_len, what);
        }
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

/// Records which module the crashing thread was running, then dies of the
/// same signal with the default action.
extern "C" fn on_fatal(sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
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
    // SAFETY: async-signal-safe calls only. The signal is blocked while
    // this handler runs, so the raised one is delivered, with the default
    // action, as soon as it returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn install_fault_handlers() {
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGABRT,
        libc::SIGILL,
        libc::SIGFPE,
    ] {
        // SAFETY: installs a handler that only does async-signal-safe work;
        // SA_ONSTACK lets it run on the alternate stack Rust sets up for
        // its threads (a stack overflow still gets recorded).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fatal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

// ---------------------------------------------------------------------------
// Quarantine.

/// One quarantined module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub name: String,
    pub path: PathBuf,
    pub len: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub crashes: u32,
    pub reason: String,
}

impl Quarantined {
    /// Whether `path` still holds the same file.
    fn matches(&self, path: &Path) -> bool {
        let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        abs == self.path
            && fs::metadata(&abs).is_ok_and(|m| {
                m.len() == self.len && mtime_ns(&m) == self.mtime_ns && m.ino() == self.ino
            })
    }
}

pub fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Reads a quarantine file (missing means empty).
pub fn read_quarantine(file: &Path) -> Vec<Quarantined> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 7 {
                return None;
            }
            Some(Quarantined {
                name: f[0].into(),
                path: f[1].into(),
                len: f[2].parse().ok()?,
                mtime_ns: f[3].parse().ok()?,
                ino: f[4].parse().ok()?,
                crashes: f[5].parse().ok()?,
                reason: f[6].into(),
            })
        })
        .collect()
}

/// Writes a quarantine file atomically (temporary file, then rename).
pub fn write_quarantine(file: &Path, entries: &[Quarantined]) -> io::Result<()> {
    if entries.is_empty() {
        return match fs::remove_file(file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let mut text = String::new();
    for q in entries {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            clean(&q.name),
            clean(&q.path.to_string_lossy()),
            q.len,
            q.mtime_ns,
            q.ino,
            q.crashes,
            clean(&q.reason)
        ));
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, file)
}

/// The `ERR` line when `file` is quarantined, for the registry to report
/// instead of loading it.
pub fn quarantined(file: &Path) -> Option<String> {
    let q = LINK.get()?.quarantine.as_ref()?;
    read_quarantine(q)
        .into_iter()
        .find(|e| e.matches(file))
        .map(|e| {
            format!(
                "ERR {}: quarantined after {} crashes ({}); change the file or RELOAD {} to load it again",
                e.name, e.crashes, e.reason, e.name
            )
        })
}

/// `RELOAD <name>`: lifts the quarantine of module (or file stem) `name`.
pub fn unquarantine(name: &str) {
    let Some(q) = LINK.get().and_then(|l| l.quarantine.as_ref()) else {
        return;
    };
    let all = read_quarantine(q);
    let keep: Vec<Quarantined> = all
        .iter()
        .filter(|e| e.name != name && e.path.file_stem() != Some(std::ffi::OsStr::new(name)))
        .cloned()
        .collect();
    if keep.len() != all.len() {
        log::info!("{name}: quarantine lifted by an explicit RELOAD");
        if let Err(e) = write_quarantine(q, &keep) {
            log::error!("cannot update {}: {e}", q.display());
        }
    }
}

// ---------------------------------------------------------------------------
// STATUS and UPGRADE.

/// The `STATUS` lines after the `host` line: `worker pid=<pid>
/// uptime=<N>s upgrades=<N> auto_upgrades=<N>` (replacements on request
/// since the leader started, the automatic ones among them), then `fault ...` (why the previous worker died) and one
/// `quarantined <name> ...` line per quarantined module.
pub fn status_lines(started: Instant) -> String {
    let (upgrades, auto) = LINK.get().map_or((0, 0), |l| l.upgrades);
    let mut out = format!(
        "worker pid={} uptime={}s upgrades={upgrades} auto_upgrades={auto}\n",
        std::process::id(),
        started.elapsed().as_secs()
    );
    if let Some(link) = LINK.get() {
        if let Some(f) = &link.last_fault {
            out.push_str(&format!("fault {f}\n"));
        }
        if let Some(q) = &link.quarantine {
            for e in read_quarantine(q) {
                out.push_str(&format!(
                    "quarantined {} crashes={} reason=\"{}\"\n",
                    e.name,
                    e.crashes,
                    e.reason.replace('"', "'")
                ));
            }
        }
    }
    out
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

/// `UPGRADE`: replaces the worker (see [`replace`]) and answers `OK
/// upgrading: new worker pid=<pid>` or `ERR upgrade: <why>` to `reply`.
pub fn upgrade(shared: Arc<Shared>, reply: AdminReply) {
    replace(
        shared,
        Replace::Upgrade,
        Box::new(move |r: Replaced| {
            reply.send(match r {
                Ok(pid) => format!("OK upgrading: new worker pid={pid}\n"),
                Err(why) => format!("ERR upgrade: {why}\n"),
            });
        }),
    );
}

/// Whether an automatic replacement is under way (at most one at a time).
static AUTO_REPLACING: AtomicBool = AtomicBool::new(false);

/// Called on the control thread after every reload with the bytes retired
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
    let Some(link) = LINK.get() else {
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

    #[test]
    fn a_thread_without_a_slot_takes_none_to_wait() {
        // A real page, as in a worker (the only test that sets one).
        let (_fd, map) = PageMap::create().unwrap();
        let _ = PAGE.set(map.leak());
        let page = *PAGE.get().unwrap();
        std::thread::spawn(move || {
            // A module's own thread, never in a module call.
            let taken = page.next_slot.load(Ordering::Relaxed);
            assert_eq!(wait_begin(), 0);
            wait_end(0);
            assert_eq!(SLOT.with(|s| s.get()), u32::MAX, "no slot assigned");
            assert_eq!(page.next_slot.load(Ordering::Relaxed), taken);
            // In a module call it gets one, and its wait pauses the clock.
            let busy = enter(7);
            let idx = SLOT.with(|s| s.get()) as usize;
            assert!(page.busy().iter().any(|&(i, m, _)| i == idx && m == 7));
            let t = wait_begin();
            assert_ne!(t, 0);
            assert!(!page.busy().iter().any(|&(i, ..)| i == idx));
            wait_end(t);
            assert!(page.busy().iter().any(|&(i, m, _)| i == idx && m == 7));
            drop(busy);
            assert!(!page.busy().iter().any(|&(i, ..)| i == idx));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn upgrade_counts_round_trip() {
        assert_eq!(parse_upgrades(&format_upgrades(3, 2)), Some((3, 2)));
        assert_eq!(parse_upgrades("x"), None);
        assert_eq!(parse_upgrades(""), None);
    }
}
