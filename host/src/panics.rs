//! Host panics end the worker: a panic in host code (an event loop, the
//! control thread, a pool thread, any other host thread) would otherwise
//! kill that one thread and leave a half-dead process: a loop's
//! connections gone without `on_close`, its share of new connections
//! never accepted, admin commands never answered. The panic hook logs the
//! thread, the message and the location, records them in the status page
//! for the leader, and exits the process at once, so the leader replaces
//! the worker as it does after a crash (`STATUS`: `fault ... cause=panic`).
//! With `--single` the process ends the same way.
//!
//! Panics in module code never get here: each module links its own copy of
//! the standard library, with its own hook, and the SDK catches them.
//!
//! It also holds the test hook that proves this: `SWITCHYARD_FAULT_INJECT`,
//! read once at start, inert when unset (see [`FaultInject`]).

use std::sync::OnceLock;

/// Exit status of a worker ended by a host panic (Rust's own for a panic).
pub const EXIT_PANIC: i32 = 101;

/// Test hook: `SWITCHYARD_FAULT_INJECT=<site>-panic-on:<line>`.
pub const ENV_FAULT_INJECT: &str = "SWITCHYARD_FAULT_INJECT";

/// Where an injected panic happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// An event loop, while it parses a built-in command line.
    Loop,
    /// The control thread, while it runs a built-in command.
    Control,
}

/// A fault to inject, for the tests of this module's promise: the `<site>`
/// thread panics when it handles the built-in command line `<line>`
/// exactly, e.g. `loop-panic-on:STATUS boom`. Only the process's
/// environment arms it, so no client can trigger it without the operator
/// having set the variable; the line itself is an ordinary command (here
/// `ERR unknown command`) when the variable is unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultInject {
    pub site: Site,
    pub line: Vec<u8>,
}

impl FaultInject {
    /// Parses the variable's value; `None` (with a warning) when malformed.
    pub fn parse(v: &str) -> Option<FaultInject> {
        let (site, line) = v.split_once("-panic-on:")?;
        let site = match site {
            "loop" => Site::Loop,
            "control" => Site::Control,
            _ => return None,
        };
        (!line.is_empty()).then(|| FaultInject {
            site,
            line: line.as_bytes().to_vec(),
        })
    }
}

static FAULT: OnceLock<Option<FaultInject>> = OnceLock::new();

/// Whether this process is a worker (told by `init`, so that this low
/// module need not ask the process layer above it).
static IS_WORKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the panic hook and reads `SWITCHYARD_FAULT_INJECT` once. A
/// worker removes the variable from its environment (processes modules
/// start must not inherit it); the leader keeps it, so the workers it
/// starts later are armed too.
pub fn init(is_worker: bool) {
    let fault = std::env::var(ENV_FAULT_INJECT).ok().and_then(|v| {
        let f = FaultInject::parse(&v);
        match &f {
            Some(f) => log::warn!(
                "{ENV_FAULT_INJECT} is set (a test hook): the {:?} thread panics on {:?}",
                f.site,
                String::from_utf8_lossy(&f.line)
            ),
            None => log::error!(
                "{ENV_FAULT_INJECT}={v:?} is not `loop-panic-on:<line>` or \
                 `control-panic-on:<line>`; ignored"
            ),
        }
        f
    });
    if is_worker {
        std::env::remove_var(ENV_FAULT_INJECT);
    }
    IS_WORKER.store(is_worker, std::sync::atomic::Ordering::Relaxed);
    let _ = FAULT.set(fault);
    std::panic::set_hook(Box::new(on_panic));
}

/// The test hook: panics when `line`, handled on `site`, is the armed one.
/// The panic is reported at the caller's place.
#[inline]
#[track_caller]
pub fn inject(site: Site, line: &[u8]) {
    if let Some(Some(f)) = FAULT.get() {
        if f.site == site && f.line == line {
            panic!(
                "fault injected by {ENV_FAULT_INJECT} on {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

fn on_panic(info: &std::panic::PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    let payload = info.payload();
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let at = info
        .location()
        .map_or_else(|| "an unknown place".to_string(), |l| l.to_string());
    let what = format!("thread {name} at {at}: {msg}");
    crate::guard::record_panic(&what);
    let bt = std::backtrace::Backtrace::capture();
    let bt = match bt.status() {
        std::backtrace::BacktraceStatus::Captured => format!("\n{bt}"),
        _ => String::new(),
    };
    // Why exit rather than unwind: the thread's state (a loop's
    // connections, a held lock, the control queue) is gone with it, and
    // nothing else would ever serve its share of the work.
    log::error!(
        "host panic on {what}; ending {} so that it is replaced{bt}",
        if IS_WORKER.load(std::sync::atomic::Ordering::Relaxed) {
            "the worker"
        } else {
            "the process"
        }
    );
    // `exit_now`: no destructors or atexit handlers, which could block on
    // the state the panic broke.
    crate::sys::exit_now(EXIT_PANIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_test_hook() {
        assert_eq!(
            FaultInject::parse("loop-panic-on:STATUS boom"),
            Some(FaultInject {
                site: Site::Loop,
                line: b"STATUS boom".to_vec()
            })
        );
        assert_eq!(
            FaultInject::parse("control-panic-on:RELOAD x").map(|f| f.site),
            Some(Site::Control)
        );
        assert_eq!(FaultInject::parse("loop-panic-on:"), None);
        assert_eq!(FaultInject::parse("pool-panic-on:x"), None);
        assert_eq!(FaultInject::parse("STATUS"), None);
    }

    #[test]
    fn unarmed_injection_is_inert() {
        // No `init` in unit tests: nothing is armed.
        inject(Site::Loop, b"STATUS boom");
        inject(Site::Control, b"RELOAD x");
    }
}
