//! The module registry: keeps one current generation per module, loads,
//! reloads and removes modules, and publishes the route table.
//!
//! Every change is validated before anything is swapped: a file that fails
//! to open, fails the ABI check or fails to start is refused (a failed
//! [`ReloadOutcome`], an `ERR` line in the reply) and the running
//! generation keeps serving.
//!
//! * `overlap` modules: the new generation starts with the old one's saved
//!   state, the table swaps atomically, and the old generation stops when
//!   its last connection lets go (or when the drain timeout closes them).
//! * `exclusive` modules: new messages get "unavailable, retry" while the
//!   old generation drains, saves its state and stops; then the new one
//!   starts with that state. If it fails to start, the old code is started
//!   again with the same state.
//!
//! All mutation happens on the control thread, one operation at a time.

mod elf;

mod loader;

mod outcome;

pub use outcome::{LoadError, Pass, ReloadOutcome, ReloadReport, Summary};

use crate::generation::{CallSite, Generation, ModuleStats};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use module_api::{CallStatus, Protocol, ReloadMode};
use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::router::{RouteTable, SharedTable, Target};
use crate::services::Services;
use crate::tls::Tls;
use loader::Candidate;

/// What identifies a version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// Exclusive modules in the middle of a reload.
    reloading: BTreeSet<String>,
}

/// What `STATUS` reads without waiting for a reload in progress.
#[derive(Default)]
struct View {
    current: Weak<Generation>,
    retiring: Vec<Weak<Generation>>,
    reloading: bool,
}

/// Loads, reloads and removes modules; owns the route table.
pub struct Registry {
    dir: PathBuf,
    run_dir: PathBuf,
    data_dir: PathBuf,
    config_path: Option<PathBuf>,
    drain_timeout: Duration,
    state: Mutex<State>,
    views: RwLock<BTreeMap<String, View>>,
    table: Arc<SharedTable>,
    seq: AtomicU64,
    services: Arc<Services>,
    /// Told about every change, to run the current generations' jobs.
    jobs: JobsHook,
    /// Host subsystems that follow the config file (TLS certificates): run
    /// on every `RELOAD` with the config then in force.
    config_hook: ConfigHook,
    /// Told the SNI names modules take undecrypted, on every change.
    tls: Arc<Tls>,
    /// Told, after every reload, the bytes retired generations hold.
    retired: Sender<u64>,
}

/// What the registry is connected to, all of it handed in at construction
/// (`server.rs` builds it). The parts above the registry (the job
/// scheduler, the admin settings, the worker's replacement) are reached
/// through a hook or a channel, so the registry imports none of them.
pub struct Links {
    /// What the modules' host handles call back into.
    pub services: Arc<Services>,
    /// The route table the registry publishes and the event loops read.
    pub table: Arc<SharedTable>,
    /// TLS termination, which must leave modules' passthrough names alone.
    pub tls: Arc<Tls>,
    /// See [`JobsHook`].
    pub jobs: JobsHook,
    /// See [`ConfigHook`].
    pub config_hook: ConfigHook,
    /// Gets, after every reload (sent from the thread that ran it, the
    /// control thread), how many bytes of module libraries retired
    /// generations keep mapped: the worker replaces itself past
    /// `max_retained_bytes`.
    pub retired: Sender<u64>,
}

/// Told every module's current generation and whether it is reloading
/// exclusively, each time the route table changes (none at shutdown): the
/// job scheduler follows it.
pub type JobsHook = Box<
    dyn for<'a> Fn(&mut dyn Iterator<Item = (&'a str, &'a Arc<Generation>, bool)>) + Send + Sync,
>;

/// What else `RELOAD` must refresh from the config (the admin settings,
/// TLS certificates); its outcome (if any) is part of the reply.
pub type ConfigHook = Box<dyn Fn(&Config) -> Option<ReloadOutcome> + Send + Sync>;

fn file_label(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.display().to_string())
}

impl Registry {
    /// Creates the registry; call [`Registry::load_all`] next.
    pub fn new(
        dir: PathBuf,
        data_dir: PathBuf,
        config: Config,
        config_path: Option<PathBuf>,
        links: Links,
    ) -> std::io::Result<Registry> {
        let run_dir = dir.join(".run");
        fs::create_dir_all(&run_dir)?;
        fs::create_dir_all(&data_dir)?;
        Ok(Registry {
            dir,
            run_dir,
            data_dir,
            config_path,
            drain_timeout: config.server.drain_timeout(),
            state: Mutex::new(State {
                config,
                ..State::default()
            }),
            views: RwLock::new(BTreeMap::new()),
            table: links.table,
            seq: AtomicU64::new(0),
            services: links.services,
            jobs: links.jobs,
            config_hook: links.config_hook,
            tls: links.tls,
            retired: links.retired,
        })
    }

    /// Bytes of module libraries mapped with no current generation running
    /// from them: replaced or removed generations (draining or stopped)
    /// and refused candidates whose code ran. Libraries are never unmapped,
    /// so only a new worker returns them.
    fn retired_bytes(state: &State) -> u64 {
        state.stats.values().map(|s| s.retired_bytes()).sum()
    }

    /// Reports the retired bytes once a reload is done. Nobody listening
    /// (the receiver gone at shutdown) is not an error.
    fn after_reload(&self, state: &State) {
        let _ = self.retired.send(Self::retired_bytes(state));
    }

    /// The route table the event loops read.
    pub fn table(&self) -> Arc<SharedTable> {
        self.table.clone()
    }

    /// The modules directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Module libraries in the directory, sorted by file name. Names
    /// starting with a dot are installers' temporary files and are skipped.
    fn scan(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_module_file(p) && p.is_file())
            .collect();
        files.sort();
        Ok(files)
    }

    fn open(&self, file: &Path) -> Result<Candidate, LoadError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        loader::open(file, &self.run_dir, seq).map_err(|e| LoadError::Load(e.to_string()))
    }

    /// Starts the next generation of `c`.
    fn launch(
        &self,
        state: &mut State,
        c: &Candidate,
        file: &Path,
        saved: &[u8],
    ) -> Result<Generation, LoadError> {
        // The leader quarantines the file a crash is pinned on: record it
        // before the module's start runs, which may be what crashes.
        crate::guard::ModuleId::loaded(&c.name, file);
        let gen = state.gens.get(&c.name).copied().unwrap_or(0) + 1;
        let stats = state.stats.entry(c.name.clone()).or_default().clone();
        let config_json = state.config.module_json(&c.name);
        let g = loader::launch(
            c,
            gen,
            stats,
            self.services.clone(),
            &config_json,
            saved,
            self.data_dir.join(&c.name),
        )
        .map_err(|e| LoadError::Load(e.to_string()))?;
        // Bindings the module added from its configuration.
        Self::check_conflicts(state, &c.name, &g.bindings)?;
        state.gens.insert(c.name.clone(), gen);
        Ok(g)
    }

    /// Refuses a module whose bindings clash with another loaded module's,
    /// unless `[server.routes]` names the owner of the prefix.
    fn check_conflicts(state: &State, name: &str, bindings: &[Vec<u8>]) -> Result<(), LoadError> {
        let routes = &state.config.server.routes;
        for (other, slot) in &state.modules {
            if other == name {
                continue;
            }
            for b in bindings {
                let key = String::from_utf8_lossy(b);
                if slot.current.bindings.contains(b) && !routes.contains_key(key.as_ref()) {
                    return Err(LoadError::Conflict {
                        prefix: key.into_owned(),
                        first: other.clone(),
                        second: name.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Builds and publishes the route table and the status view.
    fn publish(&self, state: &State) {
        let routes = &state.config.server.routes;
        let target = |name: &str, g: &Arc<Generation>| {
            if state.reloading.contains(name) {
                Target::Unavailable(g.protocol)
            } else {
                Target::Module(g.clone())
            }
        };
        let mut bindings: Vec<(Vec<u8>, Target)> = Vec::new();
        for (name, slot) in &state.modules {
            for b in &slot.current.bindings {
                let owner = routes.get(String::from_utf8_lossy(b).as_ref());
                if owner.is_none_or(|o| o == name) {
                    bindings.push((b.clone(), target(name, &slot.current)));
                }
            }
        }
        for (prefix, owner) in routes {
            if let Some(slot) = state.modules.get(owner) {
                let p = prefix.as_bytes().to_vec();
                if !bindings.iter().any(|(b, _)| *b == p) {
                    bindings.push((p, target(owner, &slot.current)));
                }
            }
        }
        for (prefix, protocol) in &state.removed {
            if !bindings.iter().any(|(b, _)| b == prefix) {
                bindings.push((prefix.clone(), Target::Unavailable(*protocol)));
            }
        }
        let by_name = state
            .modules
            .iter()
            .map(|(name, slot)| (slot.current.name.clone(), target(name, &slot.current)))
            .collect();
        self.table.swap(RouteTable::new(bindings, by_name));
        self.tls.set_passthrough(
            state
                .modules
                .values()
                .flat_map(|slot| slot.current.tls_passthrough.iter())
                .map(|n| n.to_ascii_lowercase())
                .collect(),
        );
        (self.jobs)(
            &mut state
                .modules
                .iter()
                .map(|(name, slot)| (name.as_str(), &slot.current, state.reloading.contains(name))),
        );

        let mut views = self.views.write();
        views.retain(|name, v| {
            v.retiring.retain(|w| w.strong_count() > 0);
            state.modules.contains_key(name) || !v.retiring.is_empty()
        });
        for (name, slot) in &state.modules {
            let v = views.entry(name.clone()).or_default();
            if !Weak::ptr_eq(&v.current, &Arc::downgrade(&slot.current)) {
                let old = std::mem::replace(&mut v.current, Arc::downgrade(&slot.current));
                if old.strong_count() > 0 {
                    v.retiring.push(old);
                }
            }
            v.reloading = state.reloading.contains(name);
        }
    }

    /// Makes `gen` the current generation of its module.
    fn install(&self, state: &mut State, file: &Path, gen: Generation) -> ReloadOutcome {
        crate::guard::ModuleId::loaded(&gen.name, file);
        let outcome = ReloadOutcome::Loaded {
            name: gen.name.to_string(),
            gen: gen.gen,
            version: gen.version.to_string(),
        };
        for b in &gen.bindings {
            state.removed.remove(b);
        }
        let config_json = state.config.module_json(&gen.name);
        let name = gen.name.to_string();
        let old = state.modules.insert(
            name,
            Slot {
                current: Arc::new(gen),
                file: file.to_path_buf(),
                sig: file_sig(file).unwrap_or_default(),
                config_json,
            },
        );
        if let Some(old) = old {
            old.current.retire(self.drain_timeout);
        }
        self.publish(state);
        outcome
    }

    /// Accounts for a library whose code ran but that was refused: it stays
    /// mapped (see `loader`), so it counts as retained.
    fn refused(&self, state: &mut State, c: &Candidate, why: LoadError) -> LoadError {
        let stats = state.stats.entry(c.name.clone()).or_default();
        stats.retained.fetch_add(1, Ordering::Relaxed);
        stats.retained_bytes.fetch_add(c.size, Ordering::Relaxed);
        why
    }

    /// Loads a module file that no module runs from yet.
    fn add(&self, state: &mut State, file: &Path) -> ReloadOutcome {
        let label = file_label(file);
        let result = self.open(file).and_then(|c| {
            let checked = if state.modules.contains_key(&c.name) {
                Err(LoadError::AlreadyLoaded(c.name.clone()))
            } else {
                Self::check_conflicts(state, &c.name, &c.bindings)
            };
            checked
                .and_then(|()| self.launch(state, &c, file, &[]))
                .map_err(|e| self.refused(state, &c, e))
        });
        match result {
            Ok(g) => self.install(state, file, g),
            Err(error) => ReloadOutcome::Failed { label, error },
        }
    }

    /// Replaces module `name` with the code now in `file`.
    fn replace(&self, state: &mut State, name: &str, file: &Path) -> ReloadOutcome {
        let failed = |error| ReloadOutcome::Failed {
            label: name.to_string(),
            error,
        };
        let c = match self.open(file).and_then(|c| {
            let checked = if c.name != name {
                Err(LoadError::OtherModule(c.name.clone()))
            } else {
                Self::check_conflicts(state, &c.name, &c.bindings)
            };
            match checked {
                Ok(()) => Ok(c),
                Err(e) => Err(self.refused(state, &c, e)),
            }
        }) {
            Ok(c) => c,
            Err(e) => return failed(e),
        };
        let old = state.modules[name].current.clone();
        if c.reload == ReloadMode::Exclusive || old.reload == ReloadMode::Exclusive {
            return self.replace_exclusive(state, name, file, c, old);
        }
        let saved = old.call(CallSite::SaveState, |m| m.save_state());
        drop(old);
        match self.launch(state, &c, file, &saved) {
            Ok(g) => self.install(state, file, g),
            Err(e) => failed(self.refused(state, &c, e)),
        }
    }

    /// The exclusive sequence: unavailable, drain, save, stop, start.
    fn replace_exclusive(
        &self,
        state: &mut State,
        name: &str,
        file: &Path,
        c: Candidate,
        old: Arc<Generation>,
    ) -> ReloadOutcome {
        log::info!("{name}: exclusive reload, draining gen={}", old.gen);
        state.reloading.insert(name.to_string());
        self.publish(state);
        old.retire(self.drain_timeout);
        // Holders: the slot and `old`; anything more is a connection or a
        // loop's route table not yet refreshed.
        let deadline = Instant::now() + self.drain_timeout + Duration::from_secs(1);
        while Arc::strong_count(&old) > 2 {
            if Instant::now() >= deadline {
                log::warn!(
                    "{name}: gen={} still has {} users after the drain timeout; starting the new one anyway",
                    old.gen,
                    Arc::strong_count(&old) - 2
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let saved = old.call(CallSite::SaveState, |m| m.save_state());
        let previous = Candidate::of(&old);
        let slot = state
            .modules
            .remove(name)
            .expect("slot of a module being reloaded");
        drop(slot);
        drop(old); // stops the old generation (the last holder, normally)
        match self.launch(state, &c, file, &saved) {
            Ok(g) => {
                state.reloading.remove(name);
                self.install(state, file, g)
            }
            Err(e) => {
                let e = self.refused(state, &c, e);
                let restored = self.launch(state, &previous, file, &saved);
                state.reloading.remove(name);
                match restored {
                    Ok(g) => {
                        let gen = g.gen;
                        self.install(state, file, g);
                        ReloadOutcome::Restored {
                            name: name.to_string(),
                            error: e,
                            gen,
                        }
                    }
                    Err(restart) => {
                        for b in &previous.bindings {
                            state.removed.insert(b.clone(), previous.protocol);
                        }
                        self.publish(state);
                        ReloadOutcome::Down {
                            name: name.to_string(),
                            error: e,
                            restart,
                        }
                    }
                }
            }
        }
    }

    /// Removes module `name` (its file is gone): its prefixes answer
    /// "unavailable" and the generation drains.
    fn remove(&self, state: &mut State, name: &str) -> ReloadOutcome {
        let Some(slot) = state.modules.remove(name) else {
            return ReloadOutcome::NotLoaded {
                name: name.to_string(),
            };
        };
        for b in &slot.current.bindings {
            state.removed.insert(b.clone(), slot.current.protocol);
        }
        slot.current.retire(self.drain_timeout);
        log::info!("{name}: file removed, draining gen={}", slot.current.gen);
        drop(slot);
        self.publish(state);
        ReloadOutcome::Removed {
            name: name.to_string(),
        }
    }

    /// Loads every module in the directory (generation 1 each). Bad files
    /// are reported and skipped.
    pub fn load_all(&self) -> ReloadReport {
        self.sync(Pass::Load)
    }

    /// `RELOAD`: re-reads the config file, reloads the modules whose file or
    /// config changed, loads new files and removes modules whose file is
    /// gone. One outcome per module (and per config step), then a summary.
    pub fn reload_all(&self) -> ReloadReport {
        self.sync(Pass::Reload)
    }

    fn sync(&self, pass: Pass) -> ReloadReport {
        let reload = pass == Pass::Reload;
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut out = Vec::new();
        let (mut loaded, mut unchanged, mut removed, mut failed) = (0, 0, 0, 0);
        if reload {
            if let Some(path) = &self.config_path {
                match Config::load(path) {
                    Ok(cfg) => state.config = cfg,
                    Err(e) => {
                        failed += 1;
                        out.push(ReloadOutcome::ConfigKept(e));
                    }
                }
            }
            if let Some(o) = (self.config_hook)(&state.config) {
                if !o.is_ok() {
                    failed += 1;
                }
                out.push(o);
            }
        }
        let files = match self.scan() {
            Ok(f) => f,
            Err(error) => {
                // Nothing was looked at: the reply is this one line, no
                // summary. (The config steps above are dropped with it,
                // as they always were.)
                let o = ReloadOutcome::ScanFailed {
                    dir: self.dir.clone(),
                    error,
                };
                return ReloadReport {
                    outcomes: vec![o.log()],
                    summary: None,
                };
            }
        };

        let gone: Vec<String> = state
            .modules
            .iter()
            .filter(|(_, s)| !files.contains(&s.file))
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            out.push(self.remove(state, &name));
            removed += 1;
        }

        for file in &files {
            let existing = state
                .modules
                .iter()
                .find(|(_, s)| &s.file == file)
                .map(|(n, s)| (n.clone(), s.sig, s.config_json.clone(), s.current.gen));
            let o = match existing {
                Some((name, sig, cfg, gen))
                    if file_sig(file).ok() == Some(sig)
                        && cfg == state.config.module_json(&name) =>
                {
                    unchanged += 1;
                    ReloadOutcome::Unchanged { name, gen }
                }
                Some((name, ..)) => self.replace(state, &name, file),
                None => match crate::quarantine::quarantined(file) {
                    Some(q) => ReloadOutcome::Quarantined {
                        name: q.name,
                        crashes: q.crashes,
                        reason: q.reason,
                    },
                    None => self.add(state, file),
                },
            };
            if !o.is_ok() {
                failed += 1;
            } else if !o.is_unchanged() {
                loaded += 1;
            }
            out.push(o);
        }
        self.publish(state);
        let summary = Summary {
            pass,
            loaded,
            unchanged,
            removed,
            failed,
        };
        let outcomes = out.into_iter().map(ReloadOutcome::log).collect();
        summary.log();
        if reload {
            self.after_reload(state);
        }
        ReloadReport {
            outcomes,
            summary: Some(summary),
        }
    }

    /// `RELOAD <name>`: forces a new generation of one module (or loads
    /// `<name>.so` when no such module runs yet).
    pub fn reload_one(&self, name: &str) -> ReloadOutcome {
        let mut state = self.state.lock();
        let state = &mut *state;
        // The module's config table may have changed too.
        if let Some(path) = &self.config_path {
            match Config::load(path) {
                Ok(cfg) => state.config = cfg,
                Err(error) => {
                    return ReloadOutcome::ConfigRefused {
                        name: name.to_string(),
                        error,
                    }
                    .log()
                }
            }
        }
        let running = state.modules.get(name).map(|s| s.file.clone());
        let file = running
            .clone()
            .unwrap_or_else(|| self.dir.join(format!("{name}.so")));
        if !file.is_file() {
            return ReloadOutcome::NoFile {
                name: name.to_string(),
                path: file,
            }
            .log();
        }
        let outcome = match running {
            Some(_) => self.replace(state, name, &file),
            None => self.add(state, &file),
        }
        .log();
        self.after_reload(state);
        outcome
    }

    /// One `STATUS` line per module, sorted by name. Does not wait for a
    /// reload in progress.
    pub fn status_lines(&self) -> Vec<String> {
        let views = self.views.read();
        views
            .iter()
            .filter_map(|(name, v)| {
                let g = v.current.upgrade()?;
                let s = &g.stats;
                let draining = v.retiring.iter().filter(|w| w.strong_count() > 0).count();
                let state = if v.reloading {
                    "reloading"
                } else if draining > 0 {
                    "draining"
                } else {
                    "running"
                };
                let mut line = format!(
                    "{name} v{} gen={} state={state} conns={} requests={} faults={} \
                     mode={} draining={draining} retained={} retained_bytes={}",
                    g.version,
                    g.gen,
                    s.conns.load(Ordering::Relaxed).max(0),
                    s.requests.load(Ordering::Relaxed),
                    s.faults.load(Ordering::Relaxed),
                    g.mode_name(),
                    s.retained.load(Ordering::Relaxed),
                    s.retained_bytes.load(Ordering::Relaxed),
                );
                let extra = g.call(CallSite::Status, |m| m.status());
                if !extra.is_empty() {
                    line.push(' ');
                    line.push_str(extra.as_str());
                }
                Some(line)
            })
            .collect()
    }

    /// The current generation of module `name`, for in-process calls and
    /// close notifications.
    pub fn current(&self, name: &str) -> Result<Arc<Generation>, CallStatus> {
        let views = self.views.read();
        let v = views.get(name).ok_or(CallStatus::NoSuchModule)?;
        if v.reloading {
            return Err(CallStatus::Unavailable);
        }
        v.current.upgrade().ok_or(CallStatus::Unavailable)
    }

    /// Requests and faults summed over all modules ever loaded.
    pub fn totals(&self) -> (u64, u64) {
        let views = self.views.read();
        views
            .values()
            .filter_map(|v| v.current.upgrade())
            .fold((0, 0), |(r, f), g| {
                (
                    r + g.stats.requests.load(Ordering::Relaxed),
                    f + g.stats.faults.load(Ordering::Relaxed),
                )
            })
    }

    /// Stops every module (at shutdown).
    pub fn clear(&self) {
        let mut state = self.state.lock();
        (self.jobs)(&mut std::iter::empty());
        state.modules.clear();
        state.removed.clear();
        self.table
            .swap(RouteTable::new(Vec::new(), Default::default()));
        self.views.write().clear();
    }
}

/// Whether `path` names a module library the registry should load:
/// `*.so`, not hidden (installers write `.name.so.tmp` first, then rename).
pub fn is_module_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "so")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
}

#[cfg(test)]
mod tests {
    //! The registry's passes without any module library: what it answers
    //! for a missing file, a file that is not a library, an unreadable
    //! directory and a bad config file. Loading real modules is covered
    //! through the binary (`host/tests/integration/reload.rs`).

    use super::*;
    use crate::config::ConfigError;

    /// A registry over a fresh directory; `config` is written to a config
    /// file when given.
    fn registry(tag: &str, config: Option<&str>) -> (Registry, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-registry-unit-{tag}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        let modules = dir.join("modules");
        fs::create_dir_all(&modules).unwrap();
        let config_path = config.map(|text| {
            let p = dir.join("switchyard.toml");
            fs::write(&p, text).unwrap();
            p
        });
        let table = Arc::new(crate::router::SharedTable::new(Vec::new()));
        let r = Registry::new(
            modules,
            dir.join("data"),
            Config::default(),
            config_path,
            Links {
                services: Services::new(
                    Arc::new(Vec::new()),
                    crate::services::PushPending::new(1, 1 << 20),
                    table.clone(),
                ),
                table,
                tls: Arc::new(Tls::default()),
                jobs: Box::new(|_| {}),
                config_hook: Box::new(|_| None),
                retired: crossbeam_channel::unbounded().0,
            },
        )
        .unwrap();
        (r, dir)
    }

    #[test]
    fn an_empty_directory_reloads_to_zero_counts() {
        let (r, dir) = registry("empty", None);
        let report = r.reload_all();
        assert!(report.outcomes.is_empty());
        assert!(report.is_ok());
        let s = report.summary.unwrap();
        assert_eq!(s.pass, Pass::Reload);
        assert_eq!((s.loaded, s.unchanged, s.removed, s.failed), (0, 0, 0, 0));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_module_file_is_refused_by_name() {
        let (r, dir) = registry("missing", None);
        let o = r.reload_one("nosuch");
        let expected = r.dir().join("nosuch.so");
        assert!(matches!(
            &o,
            ReloadOutcome::NoFile { name, path } if name == "nosuch" && *path == expected
        ));
        assert!(!o.is_ok());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_is_not_a_library_is_refused_and_counted() {
        let (r, dir) = registry("junk", None);
        fs::write(r.dir().join("junk.so"), b"not an ELF file").unwrap();
        // Hidden and non-`.so` names are not module files at all.
        fs::write(r.dir().join(".junk.so.tmp"), b"x").unwrap();
        fs::write(r.dir().join("notes.txt"), b"x").unwrap();
        let report = r.load_all();
        assert_eq!(report.outcomes.len(), 1, "{report}");
        assert!(matches!(
            &report.outcomes[0],
            ReloadOutcome::Failed { label, error: LoadError::Load(_) } if label == "junk.so"
        ));
        let summary = report.summary.unwrap();
        assert_eq!(summary.pass, Pass::Load);
        assert_eq!((summary.loaded, summary.failed), (0, 1));
        assert!(!summary.is_ok() && !report.is_ok());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_directory_stops_the_pass_without_a_summary() {
        let (r, dir) = registry("gone", None);
        fs::remove_dir_all(r.dir()).unwrap();
        let report = r.reload_all();
        assert!(report.summary.is_none());
        assert!(matches!(
            report.outcomes.as_slice(),
            [ReloadOutcome::ScanFailed { dir, .. }] if dir == r.dir()
        ));
        assert!(!report.is_ok());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_config_file_keeps_the_previous_config() {
        let (r, dir) = registry("config", Some("[server]\nmax_connections = 0\n"));
        let report = r.reload_all();
        assert!(matches!(
            report.outcomes.first(),
            Some(ReloadOutcome::ConfigKept(ConfigError::Bad { .. }))
        ));
        assert_eq!(report.summary.map(|s| s.failed), Some(1));
        // The reason names the setting (its full line is pinned in
        // admin/render.rs).
        let why = report.outcomes[0].to_string();
        assert!(
            why.contains("server.max_connections must be at least 1"),
            "{why}"
        );
        let one = r.reload_one("http");
        assert!(matches!(
            &one,
            ReloadOutcome::ConfigRefused { name, error: ConfigError::Bad { .. } } if name == "http"
        ));
        let _ = fs::remove_dir_all(dir);
    }
}
