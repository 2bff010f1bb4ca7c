//! The module registry: loads module libraries, keeps one current
//! generation per module, reloads them and publishes the route table.
//!
//! Facts that shape this file (see DESIGN.md, "Reload"):
//! * `dlopen` of a path that is already loaded returns the old image, so
//!   every generation is loaded from a fresh copy with a unique name.
//! * `abi_stable`'s `RootModule::load_from_*` caches the first load for the
//!   life of the process, so libraries are opened with `RawLibrary` and
//!   checked with `init_root_module` instead.
//! * `dlclose` of a Rust cdylib is unsafe in general, so a retired
//!   generation's library stays mapped; `STATUS` reports what is retained.

use std::collections::BTreeMap;
use std::fs;
use std::mem::ManuallyDrop;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RStr, RString};
use module_api::abi::{HostServices, HostServices_TO, LogLevel, ModuleBox, ModuleLibRef};
use module_api::{Protocol, ReloadMode};
use parking_lot::Mutex;

use crate::config::Config;
use crate::router::{RouteTable, SharedTable, Target, BUILTINS};

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
}

/// One loaded instance of a module. Connections hold an `Arc` to the
/// generation they were routed to until their message ends; the module is
/// stopped when the last holder lets go.
pub struct Generation {
    pub name: String,
    pub version: String,
    pub gen: u64,
    pub protocol: Protocol,
    pub reload: ReloadMode,
    pub bindings: Vec<Vec<u8>>,
    pub module: ModuleBox,
    pub stats: Arc<ModuleStats>,
    /// Size of the library file, what stays mapped after retirement.
    pub mapped_size: u64,
    /// Never closed: see the module doc.
    _lib: ManuallyDrop<RawLibrary>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        log::info!("{} gen={} stopped", self.name, self.gen);
        self.module.stop();
        self.stats.retained.fetch_add(1, Ordering::Relaxed);
        self.stats
            .retained_bytes
            .fetch_add(self.mapped_size, Ordering::Relaxed);
    }
}

/// What identifies a version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSig {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

fn file_sig(path: &Path) -> std::io::Result<FileSig> {
    let m = fs::metadata(path)?;
    Ok(FileSig {
        len: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        ino: m.ino(),
    })
}

struct Slot {
    current: Arc<Generation>,
    file: PathBuf,
    sig: FileSig,
    config_json: String,
}

#[derive(Default)]
struct State {
    config: Config,
    modules: BTreeMap<String, Slot>,
    /// Last generation number per module name (kept across removal).
    gens: BTreeMap<String, u64>,
    /// Stats per module name (kept across removal).
    stats: BTreeMap<String, Arc<ModuleStats>>,
    /// Prefixes of removed modules: answered "unavailable".
    removed: BTreeMap<Vec<u8>, Protocol>,
}

/// The host's handle given to each module generation.
struct HostCtx {
    target: String,
    data_dir: PathBuf,
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
                .target(&self.target)
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
    }

    fn log_enabled(&self, l: LogLevel) -> bool {
        let l = level(l);
        l <= log::max_level()
            && log::logger().enabled(
                &log::Metadata::builder()
                    .level(l)
                    .target(&self.target)
                    .build(),
            )
    }

    fn data_dir(&self) -> RString {
        self.data_dir.to_string_lossy().into_owned().into()
    }
}

/// Loads, reloads and removes modules; owns the route table.
pub struct Registry {
    dir: PathBuf,
    run_dir: PathBuf,
    data_dir: PathBuf,
    config_path: Option<PathBuf>,
    state: Mutex<State>,
    table: Arc<SharedTable>,
    seq: AtomicU64,
}

/// The outcome of one module's load or reload, as a reply line.
pub struct Outcome {
    pub ok: bool,
    pub line: String,
}

impl Outcome {
    fn ok(line: String) -> Outcome {
        Outcome { ok: true, line }
    }
    fn err(line: String) -> Outcome {
        Outcome { ok: false, line }
    }
}

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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Registry {
    /// Creates the registry; call [`Registry::load_all`] next.
    pub fn new(
        dir: PathBuf,
        data_dir: PathBuf,
        config: Config,
        config_path: Option<PathBuf>,
    ) -> std::io::Result<Registry> {
        let run_dir = dir.join(".run");
        fs::create_dir_all(&run_dir)?;
        fs::create_dir_all(&data_dir)?;
        Ok(Registry {
            dir,
            run_dir,
            data_dir,
            config_path,
            state: Mutex::new(State {
                config,
                ..State::default()
            }),
            table: Arc::new(SharedTable::new(RouteTable::new(Vec::new()))),
            seq: AtomicU64::new(0),
        })
    }

    /// The route table the event loops read.
    pub fn table(&self) -> Arc<SharedTable> {
        self.table.clone()
    }

    /// Module libraries in the directory, sorted by file name.
    fn scan(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "so")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
                    && p.is_file()
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Opens a private copy of `file`, checks its ABI and reads its manifest.
    /// Does not start it.
    fn open(&self, file: &Path) -> Result<(RawLibrary, ModuleLibRef, u64), String> {
        let size = fs::metadata(file)
            .map_err(|e| format!("cannot stat: {e}"))?
            .len();
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("module");
        let copy = self.run_dir.join(format!(
            "{stem}.{}.{}.so",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        fs::copy(file, &copy).map_err(|e| format!("cannot copy to {}: {e}", copy.display()))?;
        let lib = RawLibrary::load_at(&copy);
        // The mapping survives the unlink; nothing else needs the copy.
        let _ = fs::remove_file(&copy);
        let lib = lib.map_err(|e| describe(&e))?;
        // SAFETY: the header borrows from `lib`, which is never unloaded.
        let header = unsafe { lib_header_from_raw_library(&lib) }.map_err(|e| describe(&e))?;
        let root = header
            .init_root_module::<ModuleLibRef>()
            .map_err(|e| describe(&e))?;
        Ok((lib, root, size))
    }

    /// Opens and starts a generation of the module in `file`.
    fn start(
        &self,
        state: &mut State,
        file: &Path,
        expect_name: Option<&str>,
        saved: Option<&Generation>,
    ) -> Result<Generation, String> {
        let (lib, root, size) = self.open(file)?;
        let manifest = (root.manifest())();
        let name = manifest.name.to_string();
        if !valid_name(&name) {
            return Err(format!("invalid module name {name:?}"));
        }
        if let Some(expect) = expect_name {
            if expect != name {
                return Err(format!(
                    "file now holds module {name:?}, expected {expect:?}"
                ));
            }
        }
        let bindings: Vec<Vec<u8>> = manifest.bindings.iter().map(|b| b.to_vec()).collect();
        for b in &bindings {
            if b.is_empty() {
                return Err("empty prefix binding".into());
            }
            if BUILTINS
                .iter()
                .any(|(p, _)| b.starts_with(p) || p.starts_with(b))
            {
                return Err(format!(
                    "binding {:?} collides with a built-in command",
                    String::from_utf8_lossy(b)
                ));
            }
        }
        self.check_conflicts(state, &name, &bindings)?;

        let data_dir = self.data_dir.join(&name);
        fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
        let host = HostServices_TO::from_value(
            HostCtx {
                target: name.clone(),
                data_dir,
            },
            TD_Opaque,
        );
        let host: module_api::abi::HostBox = host;
        let config_json = state.config.module_json(&name);
        let saved_state = saved.map(|g| g.module.save_state()).unwrap_or_default();
        let module = match (root.start())(
            host,
            RStr::from_str(&config_json),
            RSlice::from_slice(&saved_state),
        ) {
            RResult::ROk(m) => m,
            RResult::RErr(e) => return Err(format!("start failed: {e}")),
        };
        let gen = state.gens.entry(name.clone()).or_insert(0);
        *gen += 1;
        let stats = state.stats.entry(name.clone()).or_default().clone();
        Ok(Generation {
            name,
            version: manifest.version.to_string(),
            gen: *gen,
            protocol: manifest.protocol,
            reload: manifest.reload,
            bindings,
            module,
            stats,
            mapped_size: size,
            _lib: ManuallyDrop::new(lib),
        })
    }

    /// Refuses a module whose bindings clash with another loaded module's,
    /// unless `[server.routes]` names the owner of the prefix.
    fn check_conflicts(
        &self,
        state: &State,
        name: &str,
        bindings: &[Vec<u8>],
    ) -> Result<(), String> {
        let routes = &state.config.server.routes;
        for (other, slot) in &state.modules {
            if other == name {
                continue;
            }
            for b in bindings {
                if slot.current.bindings.contains(b) {
                    let key = String::from_utf8_lossy(b);
                    if !routes.contains_key(key.as_ref()) {
                        return Err(format!(
                            "prefix {key:?} is bound by both {other} and {name}; \
                             assign it to one of them in [server.routes]"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds and publishes the route table from the current state.
    fn publish(&self, state: &State) {
        let routes = &state.config.server.routes;
        let mut bindings: Vec<(Vec<u8>, Target)> = Vec::new();
        for (name, slot) in &state.modules {
            for b in &slot.current.bindings {
                let owner = routes.get(String::from_utf8_lossy(b).as_ref());
                if owner.is_none_or(|o| o == name) {
                    bindings.push((b.clone(), Target::Module(slot.current.clone())));
                }
            }
        }
        for (prefix, owner) in routes {
            if let Some(slot) = state.modules.get(owner) {
                let p = prefix.as_bytes().to_vec();
                if !bindings.iter().any(|(b, _)| *b == p) {
                    bindings.push((p, Target::Module(slot.current.clone())));
                }
            }
        }
        for (prefix, protocol) in &state.removed {
            if !bindings.iter().any(|(b, _)| b == prefix) {
                bindings.push((prefix.clone(), Target::Unavailable(*protocol)));
            }
        }
        self.table.swap(RouteTable::new(bindings));
    }

    fn install(&self, state: &mut State, file: &Path, gen: Generation) -> Outcome {
        let line = format!("OK {} gen={} v{}", gen.name, gen.gen, gen.version);
        for b in &gen.bindings {
            state.removed.remove(b);
        }
        let sig = file_sig(file).unwrap_or(FileSig {
            len: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 0,
        });
        let config_json = state.config.module_json(&gen.name);
        state.modules.insert(
            gen.name.clone(),
            Slot {
                current: Arc::new(gen),
                file: file.to_path_buf(),
                sig,
                config_json,
            },
        );
        Outcome::ok(line)
    }

    fn file_label(file: &Path) -> String {
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string())
    }

    /// Loads every module in the directory (generation 1 each). Bad files
    /// are reported and skipped.
    pub fn load_all(&self) -> Vec<Outcome> {
        self.reload_all(false)
    }

    /// `RELOAD`: re-reads the config file, reloads modules whose file or
    /// config changed, loads new files and removes modules whose file is
    /// gone. One outcome per module touched, then a summary.
    pub fn reload_all(&self, reread_config: bool) -> Vec<Outcome> {
        let mut state = self.state.lock();
        let mut out = Vec::new();
        if reread_config {
            if let Some(path) = &self.config_path {
                match Config::load(path) {
                    Ok(cfg) => state.config = cfg,
                    Err(e) => out.push(Outcome::err(format!(
                        "ERR config: {e}; keeping the old one"
                    ))),
                }
            }
        }
        let files = match self.scan() {
            Ok(f) => f,
            Err(e) => {
                out.push(Outcome::err(format!(
                    "ERR reload: cannot read {}: {e}",
                    self.dir.display()
                )));
                return out;
            }
        };
        let (mut loaded, mut unchanged, mut removed, mut failed) = (0, 0, 0, 0);

        // Modules whose file disappeared.
        let gone: Vec<String> = state
            .modules
            .iter()
            .filter(|(_, s)| !files.contains(&s.file))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            if let Some(slot) = state.modules.remove(&name) {
                for b in &slot.current.bindings {
                    state.removed.insert(b.clone(), slot.current.protocol);
                }
                log::info!("{name}: file removed, draining gen={}", slot.current.gen);
                out.push(Outcome::ok(format!("OK {name} removed")));
                removed += 1;
            }
        }

        for file in &files {
            let existing = state
                .modules
                .iter()
                .find(|(_, s)| &s.file == file)
                .map(|(n, s)| (n.clone(), s.sig, s.config_json.clone(), s.current.clone()));
            let sig = file_sig(file).ok();
            let outcome = match existing {
                Some((name, old_sig, old_cfg, current))
                    if Some(old_sig) == sig && old_cfg == state.config.module_json(&name) =>
                {
                    unchanged += 1;
                    Outcome::ok(format!("OK {name} unchanged gen={}", current.gen))
                }
                Some((name, _, _, current)) => {
                    match self.start(&mut state, file, Some(&name), Some(&current)) {
                        Ok(gen) => {
                            loaded += 1;
                            self.install(&mut state, file, gen)
                        }
                        Err(e) => {
                            failed += 1;
                            Outcome::err(format!("ERR {name}: {e}"))
                        }
                    }
                }
                None => {
                    let label = Self::file_label(file);
                    match self.start(&mut state, file, None, None) {
                        Ok(gen) if state.modules.contains_key(&gen.name) => {
                            failed += 1;
                            let msg = format!(
                                "ERR {label}: module {} is already loaded from another file",
                                gen.name
                            );
                            drop(gen);
                            Outcome::err(msg)
                        }
                        Ok(gen) => {
                            loaded += 1;
                            self.install(&mut state, file, gen)
                        }
                        Err(e) => {
                            failed += 1;
                            Outcome::err(format!("ERR {label}: {e}"))
                        }
                    }
                }
            };
            out.push(outcome);
        }
        self.publish(&state);
        let verb = if reread_config { "reload" } else { "load" };
        let summary = format!(
            "{verb}: {loaded} loaded, {unchanged} unchanged, {removed} removed, {failed} failed"
        );
        out.push(if failed == 0 {
            Outcome::ok(format!("OK {summary}"))
        } else {
            Outcome::err(format!("ERR {summary}"))
        });
        for o in &out {
            if o.ok {
                log::info!("{}", o.line);
            } else {
                log::error!("{}", o.line);
            }
        }
        out
    }

    /// `RELOAD <name>`: forces a new generation of one module (or loads
    /// `<name>.so` when no such module runs yet).
    pub fn reload_one(&self, name: &str) -> Outcome {
        let mut state = self.state.lock();
        let (file, current) = match state.modules.get(name) {
            Some(s) => (s.file.clone(), Some(s.current.clone())),
            None => (self.dir.join(format!("{name}.so")), None),
        };
        if !file.is_file() {
            let o = Outcome::err(format!(
                "ERR {name}: no such module (no file {})",
                file.display()
            ));
            log::error!("{}", o.line);
            return o;
        }
        let o = match self.start(
            &mut state,
            &file,
            current.as_ref().map(|_| name),
            current.as_deref(),
        ) {
            Ok(gen) => {
                let o = self.install(&mut state, &file, gen);
                self.publish(&state);
                o
            }
            Err(e) => Outcome::err(format!("ERR {name}: {e}")),
        };
        if o.ok {
            log::info!("{}", o.line);
        } else {
            log::error!("{}", o.line);
        }
        o
    }

    /// One `STATUS` line per module, sorted by name.
    pub fn status_lines(&self) -> Vec<String> {
        let state = self.state.lock();
        state
            .modules
            .iter()
            .map(|(name, slot)| {
                let g = &slot.current;
                let s = &g.stats;
                let extra = g.module.status();
                let mut line = format!(
                    "{name} v{} gen={} state=running mode={} conns={} requests={} faults={} retained={} retained_bytes={}",
                    g.version,
                    g.gen,
                    match g.reload {
                        ReloadMode::Overlap => "overlap",
                        ReloadMode::Exclusive => "exclusive",
                    },
                    s.conns.load(Ordering::Relaxed).max(0),
                    s.requests.load(Ordering::Relaxed),
                    s.faults.load(Ordering::Relaxed),
                    s.retained.load(Ordering::Relaxed),
                    s.retained_bytes.load(Ordering::Relaxed),
                );
                if !extra.is_empty() {
                    line.push(' ');
                    line.push_str(extra.as_str());
                }
                line
            })
            .collect()
    }

    /// Stops every module (at shutdown).
    pub fn clear(&self) {
        let mut state = self.state.lock();
        state.modules.clear();
        state.removed.clear();
        self.table.swap(RouteTable::new(Vec::new()));
    }
}

impl Registry {
    /// Requests and faults summed over all modules ever loaded.
    pub fn totals(&self) -> (u64, u64) {
        let state = self.state.lock();
        state.stats.values().fold((0, 0), |(r, f), s| {
            (
                r + s.requests.load(Ordering::Relaxed),
                f + s.faults.load(Ordering::Relaxed),
            )
        })
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
