//! A generation: one started instance of a module, shared by every
//! connection routed to it until its message ends.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use module_api::abi::{ModuleBox, ModuleLibRef};
use module_api::{Protocol, ReloadMode};

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
    pub module: ModuleBox,
    pub stats: Arc<ModuleStats>,
    /// Size of the library file: what stays mapped after retirement.
    pub mapped_size: u64,
    /// The library's root module; the library is never unmapped, so this
    /// stays valid and can start the same code again.
    pub root: ModuleLibRef,
    /// The scheduled jobs it declared (checked at load).
    pub jobs: Vec<crate::scheduler::Declared>,
    /// TLS names the module takes undecrypted (asked after start).
    pub tls_passthrough: Vec<String>,
    /// Milliseconds since [`epoch`] after which connections still on this
    /// generation are closed; 0 while it is current.
    drain_deadline_ms: AtomicU64,
    /// The module's id in the worker's status page (see `worker_link`).
    pub slot_id: u32,
}

/// The reference point for drain deadlines.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Generation {
    /// Calls into the module with this thread recorded as running it: a
    /// crash is pinned on the module, and a call that does not return
    /// trips the leader's hang check.
    #[inline]
    pub fn enter<R>(&self, call: impl FnOnce(&ModuleBox) -> R) -> R {
        let _busy = crate::worker_link::enter(self.slot_id);
        call(&self.module)
    }

    /// Like [`Generation::enter`], for calls that may legitimately run
    /// long (a job, `save_state`, `stop`): no hang check.
    pub fn enter_unwatched<R>(&self, call: impl FnOnce(&ModuleBox) -> R) -> R {
        let _busy = crate::worker_link::enter_unwatched(self.slot_id);
        call(&self.module)
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
        let slot_id = crate::worker_link::intern(&name);
        Generation {
            slot_id,
            name,
            version,
            gen,
            protocol,
            reload,
            bindings,
            module,
            stats,
            mapped_size,
            root,
            jobs: Vec::new(),
            tls_passthrough: Vec::new(),
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
        self.enter_unwatched(|m| m.stop());
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
