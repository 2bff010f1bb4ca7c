//! The glue between a module author's [`Handler`] and the stable ABI: panic
//! guards around every entry point, the logger bridge and the root-module
//! export macro.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RBox, RErr, ROk, RResult, RSlice, RStr, RString, RVec},
};

use crate::abi::{
    Action, ConnInfo, HostBox, JobSpec, LogLevel, Manifest, Module, ModuleBox, Module_TO, Protocol,
    ProxyEvent, Verdict,
};
use crate::out::Out;

/// What a module author implements: one value per generation, shared by
/// every event loop and pool thread (so it must be `Send + Sync`).
///
/// `input` always starts at a message boundary; answer with a [`Verdict`]:
/// [`Verdict::NEED_MORE`] until a whole message is buffered, then write the
/// reply into `out` and return [`Verdict::done`] with the message length.
/// Never block in `on_message`: return [`Verdict::defer`] and do the
/// blocking work in `on_deferred`, which runs on the host's worker pool.
pub trait Handler: Send + Sync + 'static {
    /// Handles buffered input on an event loop.
    fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict;

    /// Handles a deferred message on a pool thread (may block).
    fn on_deferred(&self, _conn: &ConnInfo, input: &[u8], _out: &mut Out) -> Verdict {
        Verdict::close(input.len())
    }

    /// State handed to the next generation on reload.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// The generation is retiring: flush and release what it holds.
    fn stop(&self) {}

    /// Extra text for `STATUS`.
    fn status(&self) -> String {
        String::new()
    }

    /// A connection routed to this module (or pushed to) closed.
    fn on_close(&self, _conn: &ConnInfo) {}

    /// Scheduled jobs; asked once after start.
    fn jobs(&self) -> Vec<JobSpec> {
        Vec::new()
    }

    /// Runs a job (on a pool thread; may block).
    fn run_job(&self, name: &str) -> Result<String, String> {
        Err(format!("no job named {name:?}"))
    }

    /// TLS server names to pass through undecrypted (e.g. a TCP proxy's
    /// SNI routes); asked after start.
    fn tls_passthrough(&self) -> Vec<String> {
        Vec::new()
    }

    /// A proxied connection's event (see [`crate::abi::Action::Proxy`]).
    /// Runs on an event loop: never block. For `Failed`, return another
    /// `Verdict::proxy(..)` to retry or `Verdict::close(0)` to give up.
    fn proxy_event(&self, _conn: &ConnInfo, _event: ProxyEvent, _out: &mut Out) -> Verdict {
        Verdict::close(0)
    }

    /// Prefixes bound from configuration (added to the manifest's); asked
    /// once after start.
    fn bindings(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// What `start` receives.
pub struct StartContext<'a> {
    /// Host services (logging, data directory, push, calls). It lives as
    /// long as the generation, so a handler may keep it.
    pub host: &'static crate::Host,
    /// The module's `[modules.<name>]` table (an empty object when absent).
    pub config: serde_json::Value,
    /// The previous generation's saved state, empty on a first start.
    pub state: &'a [u8],
}

/// A handler behind the panic guards: what the host calls, and what
/// `testing::Harness` drives so a test sees the same fault handling.
pub(crate) struct Guarded<H> {
    pub(crate) inner: H,
    pub(crate) protocol: Protocol,
}

impl<H> Guarded<H> {
    /// Replaces whatever the panicking call wrote (after `keep` bytes, which
    /// hold earlier pipelined replies) with the protocol's error.
    fn fault(&self, input_len: usize, out: &mut RVec<u8>, keep: usize) -> Verdict {
        out.truncate(keep);
        match self.protocol {
            Protocol::Http => crate::http::write_simple(
                out,
                500,
                "text/plain; charset=utf-8",
                b"500 Internal Server Error\n",
                false,
                false,
            ),
            Protocol::JsonRpc => out.extend_from_copy_slice(
                br#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"internal error"},"id":null}
"#,
            ),
            Protocol::Raw => {}
        }
        Verdict {
            action: Action::Close,
            consumed: input_len as u64,
            fault: true,
            ..Verdict::NEED_MORE
        }
    }
}

fn guard<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

impl<H: Handler> Module for Guarded<H> {
    fn on_message(&self, conn: &ConnInfo, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> Verdict {
        let (len, keep) = (input.len(), out.len());
        guard(|| {
            self.inner
                .on_message(conn, input.as_slice(), Out::from_mut(out))
        })
        .unwrap_or_else(|| self.fault(len, out, keep))
    }

    fn on_deferred(&self, conn: &ConnInfo, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> Verdict {
        let (len, keep) = (input.len(), out.len());
        guard(|| {
            self.inner
                .on_deferred(conn, input.as_slice(), Out::from_mut(out))
        })
        .unwrap_or_else(|| self.fault(len, out, keep))
    }

    fn save_state(&self) -> RVec<u8> {
        guard(|| self.inner.save_state()).unwrap_or_default().into()
    }

    fn stop(&self) {
        let _ = guard(|| self.inner.stop());
    }

    fn status(&self) -> RString {
        guard(|| self.inner.status())
            .unwrap_or_else(|| "status panicked".to_string())
            .into()
    }

    fn on_close(&self, conn: &ConnInfo) {
        let _ = guard(|| self.inner.on_close(conn));
    }

    fn jobs(&self) -> RVec<JobSpec> {
        guard(|| self.inner.jobs()).unwrap_or_default().into()
    }

    fn tls_passthrough(&self) -> RVec<RString> {
        guard(|| self.inner.tls_passthrough())
            .unwrap_or_default()
            .into_iter()
            .map(RString::from)
            .collect()
    }

    fn proxy_event(&self, conn: &ConnInfo, event: ProxyEvent, out: &mut RVec<u8>) -> Verdict {
        let keep = out.len();
        guard(|| self.inner.proxy_event(conn, event, Out::from_mut(out))).unwrap_or_else(|| {
            out.truncate(keep);
            Verdict {
                action: Action::Close,
                fault: true,
                ..Verdict::NEED_MORE
            }
        })
    }

    fn bindings(&self) -> RVec<RVec<u8>> {
        guard(|| self.inner.bindings())
            .unwrap_or_default()
            .into_iter()
            .map(RVec::from)
            .collect()
    }

    fn run_job(&self, name: RStr<'_>) -> RResult<RString, RString> {
        match guard(|| self.inner.run_job(name.as_str())) {
            Some(Ok(s)) => ROk(s.into()),
            Some(Err(e)) => RErr(e.into()),
            None => RErr("job panicked".into()),
        }
    }
}

/// Forwards the module's `log` records into the host's log.
struct Bridge;

static HOST: OnceLock<crate::Host> = OnceLock::new();

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        HOST.get()
            .is_some_and(|h| h.raw().log_enabled(level_of(metadata.level())))
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Some(h) = HOST.get() {
            let level = level_of(record.level());
            if h.raw().log_enabled(level) {
                let msg = record.args().to_string();
                h.raw().log(level, RStr::from_str(&msg));
            }
        }
    }

    fn flush(&self) {}
}

fn level_of(l: log::Level) -> LogLevel {
    match l {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

#[doc(hidden)]
pub fn manifest_guard(f: fn() -> Manifest) -> Manifest {
    guard(f).unwrap_or_else(|| Manifest {
        name: "<panicked>".into(),
        version: "0".into(),
        bindings: RVec::new(),
        reload: crate::abi::ReloadMode::Overlap,
        protocol: Protocol::Raw,
        defers: false,
    })
}

#[doc(hidden)]
pub fn start_guard<H: Handler>(
    host: HostBox,
    config: RStr<'_>,
    state: RSlice<'_, u8>,
    manifest: fn() -> Manifest,
    start: fn(StartContext<'_>) -> Result<H, String>,
) -> RResult<ModuleBox, RString> {
    let run = || -> Result<ModuleBox, String> {
        let protocol = manifest().protocol;
        // Each generation is a fresh copy of the library, so these statics
        // are this generation's own.
        let host = HOST.get_or_init(|| crate::Host::new(host));
        if log::set_logger(&Bridge).is_ok() {
            let max = [
                (LogLevel::Trace, log::LevelFilter::Trace),
                (LogLevel::Debug, log::LevelFilter::Debug),
                (LogLevel::Info, log::LevelFilter::Info),
                (LogLevel::Warn, log::LevelFilter::Warn),
                (LogLevel::Error, log::LevelFilter::Error),
            ]
            .into_iter()
            .find(|(l, _)| host.raw().log_enabled(*l))
            .map_or(log::LevelFilter::Off, |(_, f)| f);
            log::set_max_level(max);
        }
        let config: serde_json::Value =
            serde_json::from_str(config.as_str()).map_err(|e| format!("bad config: {e}"))?;
        let inner = start(StartContext {
            host,
            config,
            state: state.as_slice(),
        })?;
        Ok(Module_TO::from_ptr(
            RBox::new(Guarded { inner, protocol }),
            TD_Opaque,
        ))
    };
    match guard(run) {
        Some(Ok(m)) => ROk(m),
        Some(Err(e)) => RErr(e.into()),
        None => RErr("start panicked".into()),
    }
}

/// The exported name of the root module's header, the one symbol the
/// host looks up in a module library: abi_stable's mangled
/// `ROOT_MODULE_LOADER_NAME` (a unit test below holds the two equal).
/// [`export_module!`] writes it out because an item's name in a macro
/// cannot come from a constant.
#[doc(hidden)]
pub const ROOT_HEADER_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Exports a module: names the function that returns its [`Manifest`] and
/// the function that starts a generation (returning a [`Handler`]).
///
/// The crate must be a `cdylib`. It needs no dependency but this one: the
/// macro reaches abi_stable through `module_api`'s own re-export, so a
/// module can never be built against a different abi_stable than the host.
///
/// What it expands to is what abi_stable's `#[export_root_module]`
/// generates, spelled with `$crate::abi_stable` paths (that attribute
/// names `::abi_stable`, which only resolves in a crate that depends on it):
/// the root-module function, and a `#[no_mangle]` static holding the
/// library header whose layout and version the host checks before it
/// calls anything.
#[macro_export]
macro_rules! export_module {
    (manifest = $manifest:path, start = $start:path $(,)?) => {
        /// The module's root: the two entry points the host calls.
        pub fn switchyard_root_module() -> $crate::abi::ModuleLibRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            extern "C" fn __switchyard_manifest() -> $crate::abi::Manifest {
                $crate::export::manifest_guard($manifest)
            }
            extern "C" fn __switchyard_start(
                host: $crate::abi::HostBox,
                config: $crate::abi_stable::std_types::RStr<'_>,
                state: $crate::abi_stable::std_types::RSlice<'_, u8>,
            ) -> $crate::abi_stable::std_types::RResult<
                $crate::abi::ModuleBox,
                $crate::abi_stable::std_types::RString,
            > {
                $crate::export::start_guard(host, config, state, $manifest, $start)
            }
            $crate::abi::ModuleLib {
                manifest: __switchyard_manifest,
                start: __switchyard_start,
            }
            .leak_into_prefix()
        }

        // The name must equal `$crate::export::ROOT_HEADER_SYMBOL`.
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        #[doc(hidden)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            extern "C" fn __switchyard_erased_root() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(switchyard_root_module)
            }
            // SAFETY: the constructor returns the `PrefixRef` of
            // `ModuleLibRef`, the type named here, as `from_constructor`
            // requires (abi_stable's loader erases it the same way for
            // `#[export_root_module]`).
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::abi::ModuleLibRef>(
                    __switchyard_erased_root,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_symbol_is_abi_stables() {
        assert_eq!(
            super::ROOT_HEADER_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
