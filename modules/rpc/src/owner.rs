//! Which generation, in which process, owns the data: an exclusive
//! `flock(2)` on `<db>.lock`.
//!
//! The in-memory copy of the store is only right while one writer changes
//! the database. Within a process the reload handover guarantees that
//! (see [`crate::handoff`]): the lock's file descriptor is handed to the
//! successor, which `dup`s it. Across processes — a worker replaced by
//! `UPGRADE` that still drains, a second server started on the same data
//! directory by mistake — the lock makes the newcomer wait (in *standby*:
//! requests wait, nothing is read or written) until the holder is gone,
//! then load the database as it is at that moment.
//!
//! `flock` locks belong to the open file description, so two generations
//! of one process opening the file each see each other's lock too.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped (with every `dup` of it closed).
#[derive(Debug)]
pub struct Owner {
    file: File,
}

impl Owner {
    /// The lock file of a database.
    pub fn lock_path(db: &Path) -> PathBuf {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        db.with_file_name(name)
    }

    /// Takes the lock if nobody holds it; `None` if somebody does.
    pub fn try_acquire(path: &Path) -> Result<Option<Owner>, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(Owner { file }));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(format!("cannot lock {}: {e}", path.display()))
        }
    }

    /// Takes over the lock a predecessor in this process holds on `fd`;
    /// `None` if `fd` is not that lock file.
    pub fn adopt(fd: i32, path: &Path) -> Option<Owner> {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor (or fails); it
        // does not touch `fd` itself.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if new < 0 {
            return None;
        }
        // SAFETY: `new` is a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(new) };
        let same = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        same.then_some(Owner { file })
    }

    /// The descriptor to hand to a successor.
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_hands_over() {
        let dir = crate::testdir::TestDir::new("owner");
        let path = Owner::lock_path(&dir.path().join("x.sqlite"));
        assert!(path.ends_with("x.sqlite.lock"));
        let a = Owner::try_acquire(&path).unwrap().expect("free");
        assert!(Owner::try_acquire(&path).unwrap().is_none(), "held");
        let b = Owner::adopt(a.fd(), &path).expect("same file");
        drop(a);
        assert!(
            Owner::try_acquire(&path).unwrap().is_none(),
            "still held by the dup"
        );
        drop(b);
        assert!(Owner::try_acquire(&path).unwrap().is_some(), "released");
        let other = dir.path().join("other");
        std::fs::write(&other, "").unwrap();
        let f = File::open(&other).unwrap();
        assert!(
            Owner::adopt(f.as_raw_fd(), &path).is_none(),
            "not the lock file"
        );
    }
}
