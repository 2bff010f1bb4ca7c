//! Opening module libraries and starting generations.
//!
//! Facts that shape this file (see docs/ARCHITECTURE.md, "Reload"):
//! * `dlopen` of a path that is already loaded returns the old image, so
//!   every load is made from a fresh copy with a unique name (unlinked once
//!   mapped).
//! * `abi_stable`'s `RootModule::load_from_*` caches the first load for the
//!   life of the process, so libraries are opened with `RawLibrary` and
//!   checked with `init_root_module` instead.
//! * `dlclose` of a Rust cdylib is unsafe once its code has run (thread-local
//!   destructors, threads it spawned). A library is closed only when it was
//!   refused before any of its code ran; otherwise it stays mapped, which
//!   `STATUS` reports.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use module_api::abi::{HostServices, HostServices_TO, LogLevel, ModuleLibRef};
use module_api::{CallStatus, Protocol, ReloadMode};

use super::elf;
use crate::generation::{CallSite, Generation, ModuleStats};
use crate::router::BUILTINS;
use crate::services::Services;

/// A library that passed the ABI check and whose manifest was read, not
/// yet started.
#[derive(Clone)]
pub struct Candidate {
    pub root: ModuleLibRef,
    pub name: String,
    pub version: String,
    pub protocol: Protocol,
    pub reload: ReloadMode,
    pub bindings: Vec<Vec<u8>>,
    pub size: u64,
    /// Whether the manifest declares that the module defers work to the
    /// pool; a `Defer` from a module that did not declare it is refused.
    pub defers: bool,
}

impl Candidate {
    /// The candidate that starts the same code as `g` again.
    pub fn of(g: &Generation) -> Candidate {
        Candidate {
            root: g.root,
            name: g.name.to_string(),
            version: g.version.clone(),
            protocol: g.protocol,
            reload: g.reload,
            bindings: g.bindings.clone(),
            size: g.mapped_size,
            defers: g.defers,
        }
    }
}

/// Copies `file` to a unique name in `run_dir`, opens it, checks its ABI
/// and reads its manifest.
pub fn open(file: &Path, run_dir: &Path, seq: u64) -> Result<Candidate, String> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module");
    let copy = run_dir.join(format!("{stem}.{}.{seq}.so", std::process::id()));
    fs::copy(file, &copy).map_err(|e| format!("cannot copy to {}: {e}", copy.display()))?;
    // Check the copy, not the original: it is what gets mapped, and the
    // original may change under us.
    let image = elf::check(&copy);
    let lib = image
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|_| RawLibrary::load_at(&copy).map_err(|e| describe(&e)));
    // The mapping survives the unlink; nothing else needs the copy.
    let _ = fs::remove_file(&copy);
    // Until `init_root_module` succeeds none of the library's code ran, so
    // dropping (closing) it on these errors is safe.
    let lib =
        lib.map_err(|e| e.replace(&copy.display().to_string(), &file.display().to_string()))?;
    let size = image.map(|i| i.mapped).unwrap_or_default();
    // SAFETY: the header borrows from `lib`, which is leaked below on
    // success and so never unloaded while the header is in use.
    let header = unsafe { lib_header_from_raw_library(&lib) }.map_err(|e| describe(&e))?;
    let root = header
        .init_root_module::<ModuleLibRef>()
        .map_err(|e| describe(&e))?;
    // From here on the module's code has run: keep it mapped for good.
    std::mem::forget(lib);

    let manifest = (root.manifest())();
    let name = manifest.name.to_string();
    if !valid_name(&name) {
        return Err(format!("invalid module name {name:?}"));
    }
    let bindings: Vec<Vec<u8>> = manifest.bindings.iter().map(|b| b.to_vec()).collect();
    for b in &bindings {
        check_binding(&name, b)?;
    }
    Ok(Candidate {
        root,
        name,
        version: manifest.version.to_string(),
        protocol: manifest.protocol,
        reload: manifest.reload,
        bindings,
        size,
        defers: manifest.defers,
    })
}

/// Starts generation `gen` of a candidate with its config and the previous
/// generation's saved state.
#[allow(clippy::too_many_arguments)]
pub fn launch(
    c: &Candidate,
    gen: u64,
    stats: Arc<ModuleStats>,
    services: Arc<Services>,
    config_json: &str,
    state: &[u8],
    data_dir: PathBuf,
) -> Result<Generation, String> {
    fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    // From here on the library's code runs (start, then the questions asked
    // of the new instance, and its drop on a refusal): under the module's
    // name, so that a crash in any of it is pinned on the module and counts
    // toward its quarantine instead of reading as "not in module code".
    // Unwatched: a start may legitimately take long (a database to open, a
    // hand-over to wait for).
    let _busy = crate::worker_link::enter_unwatched(crate::worker_link::intern(&c.name));
    let host = HostServices_TO::from_value(
        HostCtx {
            name: Arc::from(c.name.as_str()),
            data_dir,
            services,
        },
        TD_Opaque,
    );
    let module =
        match (c.root.start())(host, RStr::from_str(config_json), RSlice::from_slice(state)) {
            RResult::ROk(m) => m,
            RResult::RErr(e) => return Err(format!("start failed: {e}")),
        };
    let mut g = Generation::new(
        Arc::from(c.name.as_str()),
        c.version.clone(),
        gen,
        c.protocol,
        c.reload,
        c.bindings.clone(),
        module,
        stats,
        c.size,
        c.root,
    );
    g.defers = c.defers;
    // Asked once per generation; a bad job refuses the load (dropping `g`
    // stops the module).
    let (jobs, bindings, passthrough) = g.call(CallSite::Questions, |m| {
        (
            crate::schedule::declared(m),
            m.bindings(),
            m.tls_passthrough(),
        )
    });
    g.jobs = jobs?;
    for b in bindings {
        let b = b.into_vec();
        check_binding(&c.name, &b)?;
        if !g.bindings.contains(&b) {
            g.bindings.push(b);
        }
    }
    g.tls_passthrough = passthrough.into_iter().map(|n| n.into_string()).collect();
    Ok(g)
}

/// The host's services as handed to one module.
struct HostCtx {
    /// The module's name: its log target and what pushes are tagged with.
    name: Arc<str>,
    data_dir: PathBuf,
    services: Arc<Services>,
}

fn level(l: LogLevel) -> log::Level {
    match l {
        LogLevel::Error => log::Level::Error,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Info => log::Level::Info,
        LogLevel::Debug => log::Level::Debug,
        LogLevel::Trace => log::Level::Trace,
    }
}

impl HostServices for HostCtx {
    fn log(&self, l: LogLevel, message: RStr<'_>) {
        log::logger().log(
            &log::Record::builder()
                .level(level(l))
                .target(&self.name)
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
    }

    fn log_enabled(&self, l: LogLevel) -> bool {
        let l = level(l);
        l <= log::max_level()
            && log::logger().enabled(&log::Metadata::builder().level(l).target(&self.name).build())
    }

    fn data_dir(&self) -> RString {
        self.data_dir.to_string_lossy().into_owned().into()
    }

    fn push(&self, conn: u64, data: RSlice<'_, u8>, overflow_notice: RSlice<'_, u8>) -> bool {
        self.services.push(
            &self.name,
            &[conn],
            data.as_slice(),
            overflow_notice.as_slice(),
        ) == 1
    }

    fn call(&self, module: RStr<'_>, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> CallStatus {
        self.services.call(module.as_str(), input.as_slice(), out)
    }

    fn push_many(
        &self,
        conns: RSlice<'_, u64>,
        data: RSlice<'_, u8>,
        overflow_notice: RSlice<'_, u8>,
    ) -> u32 {
        let n = self.services.push(
            &self.name,
            conns.as_slice(),
            data.as_slice(),
            overflow_notice.as_slice(),
        );
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn wait_begin(&self) -> u64 {
        crate::worker_link::wait_begin()
    }

    fn wait_end(&self, token: u64) {
        crate::worker_link::wait_end(token)
    }

    fn peer_identity(&self, conn: u64) -> RVec<RString> {
        self.services
            .peer_identity(conn)
            .iter()
            .map(|n| RString::from(n.as_str()))
            .collect()
    }
}

/// A binding must be non-empty and must not shadow a built-in command.
fn check_binding(name: &str, b: &[u8]) -> Result<(), String> {
    if b.is_empty() {
        return Err(format!("{name}: empty prefix binding"));
    }
    if BUILTINS
        .iter()
        .any(|(p, _)| b.starts_with(p) || p.starts_with(b))
    {
        return Err(format!(
            "{name}: binding {:?} collides with a built-in command",
            String::from_utf8_lossy(b)
        ));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Turns a load error into the reason shown in `ERR` lines.
fn describe(e: &LibraryError) -> String {
    match e {
        LibraryError::OpenError { err, .. } => format!("cannot open library: {err}"),
        LibraryError::GetSymbolError { .. } => {
            "not a switchyard module (no exported root module)".into()
        }
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "abi mismatch: built against module_api {actual_version}, host speaks {expected_version}"
        ),
        LibraryError::AbiInstability(details) => {
            let text = details.to_string();
            log::debug!("full abi report:\n{text}");
            format!("abi mismatch: {}", summarize_abi_report(&text))
        }
        LibraryError::InvalidAbiHeader(h) => {
            format!("abi mismatch: incompatible abi_stable header {h:?}")
        }
        other => format!("cannot load: {other}"),
    }
}

/// Condenses abi_stable's long layout report into what differs, e.g.
/// `in ModuleLib: mismatched package (expected switchyard_module_api,
/// found my_module)`.
fn summarize_abi_report(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let value_after = |i: usize, label: &str| {
        lines[i..]
            .iter()
            .position(|l| *l == label)
            .and_then(|p| lines.get(i + p + 1))
            .copied()
            .unwrap_or("?")
    };
    let ty = lines
        .iter()
        .position(|l| *l == "Layout of expected type:")
        .and_then(|i| lines[i..].iter().find_map(|l| l.strip_prefix("type:")));
    let errors: Vec<String> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let what = l.strip_prefix("Error:")?;
            Some(format!(
                "{what} (expected {}, found {})",
                value_after(i, "Expected:"),
                value_after(i, "Found:")
            ))
        })
        .take(3)
        .collect();
    match (ty, errors.is_empty()) {
        (_, true) => "the module's types have a different layout than the host's".into(),
        (Some(ty), false) => format!("in {ty}: {}", errors.join("; ")),
        (None, false) => errors.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_report_summary() {
        let report = "Compared <this>:\n  type:PrefixRef\nLayout of expected type:\n  --- Type Layout ---\n  type:ModuleLib\n  size:16\nError:mismatched package\nExpected:\n    switchyard_module_api\nFound:\n    fx_bad_abi\n";
        assert_eq!(
            summarize_abi_report(report),
            "in ModuleLib: mismatched package (expected switchyard_module_api, found fx_bad_abi)"
        );
        assert!(summarize_abi_report("nothing useful").contains("different layout"));
    }
}
