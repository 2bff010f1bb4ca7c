//! The quarantine: module files that crashed the worker `quarantine_after`
//! times in a row are not loaded again until the file changes or an
//! operator sends `RELOAD <name>`.
//!
//! The list is a small tab-separated file in the data directory
//! (`.switchyard-quarantine`). The leader (`crate::process::leader`)
//! writes it when it blames a crash on a module; the worker reads it at
//! load and for `STATUS`, and rewrites it when `RELOAD <name>` lifts an
//! entry. An entry names the file by path, size, mtime and inode, so a new
//! build of the module is loaded normally.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The worker's quarantine file, from the leader (unset with `--single`:
/// nothing is ever quarantined then).
static FILE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the quarantine file this worker consults (once, at start).
pub fn set_file(file: PathBuf) {
    let _ = FILE.set(file);
}

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
    /// The entry for module `name` running from `path` (absolute), which
    /// crashed the worker `crashes` times in a row, the last time of
    /// `reason`: the file as it is now.
    pub fn of(name: &str, path: PathBuf, crashes: u32, reason: &str) -> io::Result<Quarantined> {
        let m = fs::metadata(&path)?;
        Ok(Quarantined {
            name: name.to_string(),
            path,
            len: m.len(),
            mtime_ns: mtime_ns(&m),
            ino: m.ino(),
            crashes,
            reason: reason.to_string(),
        })
    }

    /// Whether `path` still holds the same file.
    fn matches(&self, path: &Path) -> bool {
        let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        abs == self.path
            && fs::metadata(&abs).is_ok_and(|m| {
                m.len() == self.len && mtime_ns(&m) == self.mtime_ns && m.ino() == self.ino
            })
    }
}

/// A file's modification time in nanoseconds since the epoch.
pub fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// Reads a quarantine file (missing means empty).
pub fn read(file: &Path) -> Vec<Quarantined> {
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
pub fn write(file: &Path, entries: &[Quarantined]) -> io::Result<()> {
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

/// The quarantine entry that holds `file` back, if any: the registry
/// reports it (see `admin/render.rs`) instead of loading the file.
pub fn quarantined(file: &Path) -> Option<Quarantined> {
    let q = FILE.get()?;
    read(q).into_iter().find(|e| e.matches(file))
}

/// `RELOAD <name>`: lifts the quarantine of module (or file stem) `name`.
pub fn unquarantine(name: &str) {
    let Some(q) = FILE.get() else {
        return;
    };
    let all = read(q);
    let keep: Vec<Quarantined> = all
        .iter()
        .filter(|e| e.name != name && e.path.file_stem() != Some(std::ffi::OsStr::new(name)))
        .cloned()
        .collect();
    if keep.len() != all.len() {
        log::info!("{name}: quarantine lifted by an explicit RELOAD");
        if let Err(e) = write(q, &keep) {
            log::error!("cannot update {}: {e}", q.display());
        }
    }
}

/// The `quarantined <name> crashes=<N> reason="<why>"` lines of `STATUS`,
/// one per quarantined module.
pub fn status_lines() -> String {
    let Some(q) = FILE.get() else {
        return String::new();
    };
    read(q)
        .into_iter()
        .map(|e| {
            format!(
                "quarantined {} crashes={} reason=\"{}\"\n",
                e.name,
                e.crashes,
                e.reason.replace('"', "'")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_round_trips_and_an_empty_one_removes_the_file() {
        let file = std::env::temp_dir().join(format!("sy-quarantine-{}", std::process::id()));
        let lib = fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        let mut e = Quarantined::of("fx", lib.clone(), 3, "SIGSEGV").unwrap();
        assert!(e.matches(&lib), "the file as it is now matches");
        e.reason = "two\tfields\nand lines".into();
        write(&file, std::slice::from_ref(&e)).unwrap();
        let back = read(&file);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].reason, "two fields and lines", "kept on one line");
        assert_eq!((back[0].crashes, back[0].ino), (3, e.ino));
        write(&file, &[]).unwrap();
        assert!(!file.exists());
        assert!(read(&file).is_empty(), "a missing file is an empty list");
    }
}
