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

use super::elf::{self, ElfError};
use crate::generation::{CallSite, Generation, ModuleStats};
use crate::guard::{Clock, ModuleId};
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

/// Why a module file was not loaded. The texts are what `ERR` lines show
/// after the file's name (the registry formats them with `{}`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot copy to {}: {source}", path.display())]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// `dlopen` refused the file: the dynamic loader's reason.
    #[error("cannot open library: {0}")]
    Open(String),
    #[error("not a switchyard module (no exported root module)")]
    NotAModule,
    /// The library speaks another version of the module ABI: what differs.
    #[error("abi mismatch: {0}")]
    Abi(String),
    /// Any other refusal from `abi_stable`.
    #[error("cannot load: {0}")]
    Library(String),
    #[error("invalid module name {0:?}")]
    InvalidName(String),
    #[error("{module}: empty prefix binding")]
    EmptyBinding { module: String },
    #[error("{module}: binding {binding:?} collides with a built-in command")]
    BuiltinBinding { module: String, binding: String },
    #[error("cannot create data dir {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The module's `start` returned an error: its reason.
    #[error("start failed: {0}")]
    Start(String),
    /// A job the module declared is invalid (see `crate::scheduler`).
    #[error("{0}")]
    Jobs(String),
}

impl LoadError {
    /// The same error with the temporary copy's path replaced by the
    /// module file's in the loader's reason, so that `ERR` names the file
    /// the operator installed.
    fn naming(self, copy: &Path, file: &Path) -> LoadError {
        let fix = |s: String| s.replace(&copy.display().to_string(), &file.display().to_string());
        match self {
            LoadError::Open(s) => LoadError::Open(fix(s)),
            LoadError::Abi(s) => LoadError::Abi(fix(s)),
            LoadError::Library(s) => LoadError::Library(fix(s)),
            other => other,
        }
    }
}

/// Copies `file` to a unique name in `run_dir`, opens it, checks its ABI
/// and reads its manifest.
pub fn open(file: &Path, run_dir: &Path, seq: u64) -> Result<Candidate, LoadError> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("module");
    let copy = run_dir.join(format!("{stem}.{}.{seq}.so", std::process::id()));
    fs::copy(file, &copy).map_err(|source| LoadError::Copy {
        path: copy.clone(),
        source,
    })?;
    // Check the copy, not the original: it is what gets mapped, and the
    // original may change under us.
    let image = match elf::check(&copy) {
        Ok(image) => image,
        Err(e) => {
            let _ = fs::remove_file(&copy);
            return Err(e.into());
        }
    };
    // From `dlopen` on, the library's own code runs (its constructors,
    // abi_stable's root-module initialisation, `manifest`) before its
    // name is known: under the file's stem, with the file recorded, so
    // that a crash in any of it is pinned on this file and counts toward
    // its quarantine. Unwatched, like `start`.
    ModuleId::loaded(stem, file).enter(Clock::Unwatched, || open_checked(file, &copy, image.mapped))
}

/// The rest of [`open`], once the copy passed the structural check:
/// `dlopen`, the ABI check, the manifest.
fn open_checked(file: &Path, copy: &Path, size: u64) -> Result<Candidate, LoadError> {
    let lib = RawLibrary::load_at(copy);
    // The mapping survives the unlink; nothing else needs the copy.
    let _ = fs::remove_file(copy);
    // Until `init_root_module` succeeds none of the library's Rust code
    // ran, so dropping (closing) it on these errors is safe.
    let lib = lib.map_err(|e| describe(&e).naming(copy, file))?;
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
        return Err(LoadError::InvalidName(name));
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
) -> Result<Generation, LoadError> {
    fs::create_dir_all(&data_dir).map_err(|source| LoadError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let host = HostServices_TO::from_value(
        HostCtx {
            name: Arc::from(c.name.as_str()),
            data_dir,
            services,
        },
        TD_Opaque,
    );
    // `start` runs before there is a generation: under the module's name
    // (whose file the registry recorded), so that a crash in it is pinned
    // on the module and counts toward its quarantine instead of reading as
    // "not in module code". Unwatched: a start may legitimately take long
    // (a database to open, a hand-over to wait for). The error text is
    // read (and the module's string dropped) inside the guard too.
    let module = ModuleId::intern(&c.name).enter(Clock::Unwatched, || {
        match (c.root.start())(host, RStr::from_str(config_json), RSlice::from_slice(state)) {
            RResult::ROk(m) => Ok(m),
            RResult::RErr(e) => Err(LoadError::Start(e.to_string())),
        }
    })?;
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
    // stops the module, under its name).
    let (jobs, bindings, passthrough) = g.call(CallSite::Questions, |m| {
        (
            crate::schedule::declared(m),
            m.bindings(),
            m.tls_passthrough(),
        )
    });
    g.jobs = jobs.map_err(LoadError::Jobs)?;
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
        crate::guard::wait_begin()
    }

    fn wait_end(&self, token: u64) {
        crate::guard::wait_end(token)
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
fn check_binding(name: &str, b: &[u8]) -> Result<(), LoadError> {
    if b.is_empty() {
        return Err(LoadError::EmptyBinding {
            module: name.to_string(),
        });
    }
    if BUILTINS
        .iter()
        .any(|(p, _)| b.starts_with(p) || p.starts_with(b))
    {
        return Err(LoadError::BuiltinBinding {
            module: name.to_string(),
            binding: String::from_utf8_lossy(b).into_owned(),
        });
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

/// Turns `abi_stable`'s refusal into ours.
fn describe(e: &LibraryError) -> LoadError {
    match e {
        LibraryError::OpenError { err, .. } => LoadError::Open(err.to_string()),
        LibraryError::GetSymbolError { .. } => LoadError::NotAModule,
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadError::Abi(format!(
            "built against module_api {actual_version}, host speaks {expected_version}"
        )),
        LibraryError::AbiInstability(details) => {
            let text = details.to_string();
            log::debug!("full abi report:\n{text}");
            LoadError::Abi(summarize_abi_report(&text))
        }
        LibraryError::InvalidAbiHeader(h) => {
            LoadError::Abi(format!("incompatible abi_stable header {h:?}"))
        }
        other => LoadError::Library(other.to_string()),
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
