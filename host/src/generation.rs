//! A generation: one started instance of a module, shared by every
//! connection routed to it until its message ends.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use module_api::abi::{ModuleBox, ModuleLibRef};
use module_api::{Protocol, ReloadMode};

use crate::guard::{Clock, ModuleId};

/// Counters that live as long as the module name, across generations.
#[derive(Default)]
pub struct ModuleStats {
    /// Connections currently routed to the module (mid-message).
    pub conns: AtomicI64,
    pub requests: AtomicU64,
    pub faults: AtomicU64,
    /// Retired generations whose libraries stay mapped.
    pub retained: AtomicU64,
    pub retained_bytes: AtomicU64,
    /// Library bytes of replaced generations still draining (retained
    /// once they stop).
    pub draining_bytes: AtomicU64,
}

impl ModuleStats {
    /// Bytes of this module's libraries that stay mapped with no current
    /// generation running from them: retained and still draining.
    pub fn retired_bytes(&self) -> u64 {
        self.retained_bytes.load(Ordering::Relaxed) + self.draining_bytes.load(Ordering::Relaxed)
    }
}

/// One loaded instance of a module. Connections hold an `Arc` to the
/// generation they were routed to until their message ends; the module is
/// stopped when the last holder lets go.
pub struct Generation {
    pub name: Arc<str>,
    pub version: String,
    pub gen: u64,
    pub protocol: Protocol,
    pub reload: ReloadMode,
    pub bindings: Vec<Vec<u8>>,
    /// The started module. Reached only through [`Generation::call`];
    /// dropped (inside the guard) by `Drop`.
    module: ManuallyDrop<ModuleBox>,
    pub stats: Arc<ModuleStats>,
    /// Size of the library file: what stays mapped after retirement.
    pub mapped_size: u64,
    /// The library's root module; the library is never unmapped, so this
    /// stays valid and can start the same code again.
    pub root: ModuleLibRef,
    /// The scheduled jobs it declared (checked at load).
    pub jobs: Vec<crate::schedule::Declared>,
    /// TLS names the module takes undecrypted (asked after start).
    pub tls_passthrough: Vec<String>,
    /// Whether its manifest declares that it defers work to the pool.
    pub defers: bool,
    /// Milliseconds since [`epoch`] after which connections still on this
    /// generation are closed; 0 while it is current.
    drain_deadline_ms: AtomicU64,
    /// The module's id in the worker's status page (see [`crate::guard`]).
    id: ModuleId,
}

/// Which entry point of a module a call goes to. Every call into module
/// code names one (see [`Generation::call`]), so crash attribution, the
/// hang check and fault counting cover all of them the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallSite {
    /// `on_message`: a connection's bytes.
    Message,
    /// `on_deferred`: a deferred message finishing on the pool.
    Deferred,
    /// `proxy_event`: a proxied session's data or end.
    ProxyEvent,
    /// `on_close`.
    Close,
    /// A call from another module through `HostServices::call`.
    InProcess,
    /// `jobs`, `bindings`, `tls_passthrough`: asked once after start.
    Questions,
    /// `status`: a line for `STATUS`.
    Status,
    /// `save_state` before a reload hands over.
    SaveState,
    /// A scheduled job.
    Job,
    /// `stop`, when the last holder of the generation lets go.
    Stop,
}

impl CallSite {
    /// Whether the leader's hang check times the call. Jobs, `stop` and
    /// `save_state` may legitimately run long (a backup, a flush), so they
    /// are not timed; everything on a request's path is, and so is
    /// `status` (a module that hangs there would hang `STATUS`).
    pub const fn clock(self) -> Clock {
        match self {
            CallSite::Job | CallSite::Stop | CallSite::SaveState => Clock::Unwatched,
            _ => Clock::Watched,
        }
    }

    /// The name used in log lines.
    pub const fn name(self) -> &'static str {
        match self {
            CallSite::Message => "on_message",
            CallSite::Deferred => "on_deferred",
            CallSite::ProxyEvent => "proxy_event",
            CallSite::Close => "on_close",
            CallSite::InProcess => "in-process call",
            CallSite::Questions => "load questions",
            CallSite::Status => "status",
            CallSite::SaveState => "save_state",
            CallSite::Job => "job",
            CallSite::Stop => "stop",
        }
    }
}

/// The reference point for drain deadlines.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Generation {
    /// The one way into the module's code. `site` says which entry point
    /// is called; it decides whether the leader's hang check watches the
    /// call (see [`CallSite::clock`]). While `call` runs, this thread is
    /// recorded as running the module (see [`ModuleId::enter`]), so a
    /// crash is pinned on it and counts toward its quarantine.
    #[inline]
    pub fn call<R>(&self, site: CallSite, call: impl FnOnce(&ModuleBox) -> R) -> R {
        let r = self.id.enter(site.clock(), || call(&self.module));
        // What was kept for this call's length is over (the push batches
        // of `services`).
        crate::calls::finished();
        r
    }

    /// Counts a fault of the module (a panic caught by the module's
    /// export guard, or a broken protocol rule) and logs it once, naming
    /// the call site: the one place a module's fault counter moves.
    pub fn count_fault(&self, site: CallSite, detail: &dyn std::fmt::Display) {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        log::error!(
            "{} gen={} fault in {}: {detail}",
            self.name,
            self.gen,
            site.name()
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        version: String,
        gen: u64,
        protocol: Protocol,
        reload: ReloadMode,
        bindings: Vec<Vec<u8>>,
        module: ModuleBox,
        stats: Arc<ModuleStats>,
        mapped_size: u64,
        root: ModuleLibRef,
    ) -> Generation {
        epoch();
        Generation {
            id: ModuleId::intern(&name),
            name,
            version,
            gen,
            protocol,
            reload,
            bindings,
            module: ManuallyDrop::new(module),
            stats,
            mapped_size,
            root,
            jobs: Vec::new(),
            tls_passthrough: Vec::new(),
            defers: false,
            drain_deadline_ms: AtomicU64::new(0),
        }
    }

    /// Marks the generation as replaced: connections still on it after
    /// `drain` are closed by their event loops.
    pub fn retire(&self, drain: Duration) {
        let at = (Instant::now() + drain).duration_since(epoch()).as_millis() as u64;
        let before = self.drain_deadline_ms.swap(at.max(1), Ordering::AcqRel);
        if before == 0 {
            self.stats
                .draining_bytes
                .fetch_add(self.mapped_size, Ordering::Relaxed);
        }
    }

    /// Whether the drain deadline has passed.
    pub fn drain_expired(&self, now: Instant) -> bool {
        let d = self.drain_deadline_ms.load(Ordering::Acquire);
        d != 0 && now.duration_since(epoch()).as_millis() as u64 >= d
    }

    pub fn mode_name(&self) -> &'static str {
        match self.reload {
            ReloadMode::Overlap => "overlap",
            ReloadMode::Exclusive => "exclusive",
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        log::info!("{} gen={} stopped", self.name, self.gen);
        // `stop`, then the box's destructor (the module's own drop code):
        // both are module code, so both run under its name.
        let module = &mut self.module;
        self.id.enter(CallSite::Stop.clock(), || {
            module.stop();
            // SAFETY: the only place the box is dropped, once, while the
            // generation itself is dropped: nothing reaches it afterwards.
            unsafe { ManuallyDrop::drop(module) };
        });
        if self.drain_deadline_ms.load(Ordering::Acquire) != 0 {
            self.stats
                .draining_bytes
                .fetch_sub(self.mapped_size, Ordering::Relaxed);
        }
        self.stats.retained.fetch_add(1, Ordering::Relaxed);
        self.stats
            .retained_bytes
            .fetch_add(self.mapped_size, Ordering::Relaxed);
    }
}
