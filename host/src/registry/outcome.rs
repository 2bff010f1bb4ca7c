//! What a load, reload or removal came to, as values: one
//! [`ReloadOutcome`] per module (or per config step), and a
//! [`ReloadReport`] for a whole `RELOAD`. Callers ask the values
//! (`is_ok`, `is_loaded`, `is_unchanged`) instead of reading text; the
//! text (`OK …` / `ERR …` lines, which the registry also logs) is written
//! only by `admin/render.rs`, through the `Display` impls there.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::tls::TlsError;

/// Why a module file was refused; the running generation (if any) keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Opening, checking or starting the library failed (the loader's
    /// words).
    #[error("{0}")]
    Load(String),
    /// Another file already runs a module of this name.
    #[error("module {0} is already loaded from another file")]
    AlreadyLoaded(String),
    /// `RELOAD` found a different module in a module's file.
    #[error("the file now holds module {0:?}")]
    OtherModule(String),
    /// Two modules bind the same prefix and `[server.routes]` names no
    /// owner.
    #[error(
        "prefix {prefix:?} is bound by both {first} and {second}; \
         assign it to one of them in [server.routes]"
    )]
    Conflict {
        prefix: String,
        first: String,
        second: String,
    },
}

/// The outcome of one step of a load or reload.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new generation of `name` serves.
    Loaded {
        name: String,
        gen: u64,
        version: String,
    },
    /// Neither the file nor the module's config changed.
    Unchanged { name: String, gen: u64 },
    /// The file is gone: the prefixes answer "unavailable", the generation
    /// drains.
    Removed { name: String },
    /// `RELOAD <name>` of a module that does not run.
    NotLoaded { name: String },
    /// The file (named by `label`: the module or the file name) was
    /// refused; whatever ran keeps running.
    Failed { label: String, error: LoadError },
    /// An exclusive reload failed and the previous code was started again
    /// as generation `gen`.
    Restored {
        name: String,
        error: LoadError,
        gen: u64,
    },
    /// An exclusive reload failed and so did restarting the previous code:
    /// the module is down.
    Down {
        name: String,
        error: LoadError,
        restart: LoadError,
    },
    /// The leader quarantined module `name`'s file after `crashes`
    /// crashes in a row (the last one's `reason`).
    Quarantined {
        name: String,
        crashes: u32,
        reason: String,
    },
    /// `RELOAD` could not read the config file; the previous config stays.
    ConfigKept(ConfigError),
    /// `RELOAD <name>` could not read the config file; nothing reloaded.
    ConfigRefused { name: String, error: ConfigError },
    /// `RELOAD <name>` with neither a running module nor `<name>.so`.
    NoFile { name: String, path: PathBuf },
    /// The modules directory could not be listed.
    ScanFailed { dir: PathBuf, error: std::io::Error },
    /// TLS certificates re-read on `RELOAD`: how many are in force (`None`:
    /// TLS is off), or why the ones in force stay.
    Tls(Result<Option<usize>, TlsError>),
}

impl ReloadOutcome {
    /// Whether the step succeeded (its line starts with `OK`).
    pub fn is_ok(&self) -> bool {
        match self {
            ReloadOutcome::Loaded { .. }
            | ReloadOutcome::Unchanged { .. }
            | ReloadOutcome::Removed { .. } => true,
            ReloadOutcome::Tls(r) => r.is_ok(),
            _ => false,
        }
    }

    /// Whether a new generation was started and serves.
    pub fn is_loaded(&self) -> bool {
        matches!(self, ReloadOutcome::Loaded { .. })
    }

    /// Whether the module was left as it was.
    pub fn is_unchanged(&self) -> bool {
        matches!(self, ReloadOutcome::Unchanged { .. })
    }

    /// Logs the outcome's line: info when it succeeded, error when not.
    pub(super) fn log(self) -> ReloadOutcome {
        if self.is_ok() {
            log::info!("{self}");
        } else {
            log::error!("{self}");
        }
        self
    }
}

/// Whether a report is of the first load or of a `RELOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Load,
    Reload,
}

/// The counts on the last line of a load or `RELOAD` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub pass: Pass,
    pub loaded: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub failed: usize,
}

impl Summary {
    /// Whether nothing failed (the line starts with `OK`).
    pub fn is_ok(&self) -> bool {
        self.failed == 0
    }

    /// Logs the summary line: info when nothing failed, error when not.
    pub(super) fn log(&self) {
        if self.is_ok() {
            log::info!("{self}");
        } else {
            log::error!("{self}");
        }
    }
}

/// A whole load or `RELOAD`: the steps in order, then the counts.
#[derive(Debug)]
pub struct ReloadReport {
    pub outcomes: Vec<ReloadOutcome>,
    /// `None` when the pass stopped before any module (the directory could
    /// not be read): the reply is that one line.
    pub summary: Option<Summary>,
}

impl ReloadReport {
    /// New generations started by the pass.
    pub fn loaded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_loaded()).count()
    }

    /// Whether every step succeeded.
    pub fn is_ok(&self) -> bool {
        self.summary.is_some_and(|s| s.is_ok()) && self.outcomes.iter().all(|o| o.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(name: &str, gen: u64) -> ReloadOutcome {
        ReloadOutcome::Loaded {
            name: name.into(),
            gen,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn outcome_questions() {
        assert!(loaded("a", 1).is_ok() && loaded("a", 1).is_loaded());
        let same = ReloadOutcome::Unchanged {
            name: "a".into(),
            gen: 1,
        };
        assert!(same.is_ok() && same.is_unchanged() && !same.is_loaded());
        let restored = ReloadOutcome::Restored {
            name: "a".into(),
            error: LoadError::Load("x".into()),
            gen: 2,
        };
        assert!(!restored.is_ok() && !restored.is_loaded());
        assert!(!ReloadOutcome::Tls(Err(TlsError::HalfPair)).is_ok());
        assert!(ReloadOutcome::Tls(Ok(None)).is_ok());
    }

    #[test]
    fn a_report_is_ok_only_when_every_step_is() {
        let summary = Summary {
            pass: Pass::Reload,
            loaded: 1,
            unchanged: 0,
            removed: 0,
            failed: 1,
        };
        let report = ReloadReport {
            outcomes: vec![loaded("a", 2), ReloadOutcome::Tls(Err(TlsError::HalfPair))],
            summary: Some(summary),
        };
        assert!(!report.is_ok());
        assert_eq!(report.loaded(), 1);
        let fine = ReloadReport {
            outcomes: vec![loaded("a", 2)],
            summary: Some(Summary {
                failed: 0,
                ..summary
            }),
        };
        assert!(fine.is_ok());
    }
}
