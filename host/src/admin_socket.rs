//! The admin Unix socket's file (`[server] admin_socket`): created with
//! mode 0600 so that file permissions are the access control, refused if
//! the path holds something else, and removed by whoever created it.
//!
//! The leader calls [`bind`] at start, before its first worker, and passes
//! the listener to every worker it starts (`SWITCHYARD_ADMIN_FD`, see
//! [`crate::process::worker`]), so the socket outlives worker crashes and
//! `UPGRADE`; a `--single` process binds it itself. The commands served on
//! it are in [`crate::admin::socket`]. This file only touches the file
//! system, so the process layer can use it without the admin commands.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the admin socket could not be bound or served. Each names the path
/// (when there is one) and the operating system's reason; the text is the
/// startup error the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// `what` is the step: "create", "chmod", "stat" or "check".
    #[error("cannot {what} admin socket {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "admin socket {}: the path exists and is not a socket; \
         refusing to replace it (remove it or choose another path)",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error("admin socket {} is in use by another server", path.display())]
    InUse { path: PathBuf },
    #[error("admin socket {}: cannot remove the stale socket file: {source}", path.display())]
    StaleRemove { path: PathBuf, source: io::Error },
    #[error("admin socket {}: cannot tell whether a server uses it: {source}", path.display())]
    Probe { path: PathBuf, source: io::Error },
    #[error("admin socket: {0}")]
    Listener(io::Error),
    #[error("cannot start the admin socket thread: {0}")]
    Thread(io::Error),
}

impl SocketError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError {
        let path = path.to_path_buf();
        move |source| SocketError::Io { what, path, source }
    }
}

/// Mode of the socket file: read and write for the owner only.
const MODE: u32 = 0o600;

/// The socket file this process created. Dropping it removes the file,
/// unless the path no longer holds this socket (an operator removed it and
/// another server bound the same path since): that one is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if !ours {
            log::info!(
                "admin socket {} was replaced or removed meanwhile; leaving it",
                self.path.display()
            );
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => log::info!("admin socket {} removed", self.path.display()),
            Err(e) => log::warn!("cannot remove admin socket {}: {e}", self.path.display()),
        }
    }
}

/// A freshly bound admin socket: the listener to serve (or hand to the
/// workers) and the file to remove at exit.
#[derive(Debug)]
pub struct Bound {
    pub listener: UnixListener,
    pub file: SocketFile,
}

/// Creates the admin socket at `path` with mode 0600.
///
/// A file already at `path` is refused unless it is a socket. A socket
/// that answers a connection belongs to a running server: "admin socket
/// <path> is in use by another server". One that refuses is what a killed
/// server left behind: it is removed and replaced. Every error names the
/// path and the operating system's reason.
///
/// Called at start, before the process has other threads (see
/// `bind_owner_only` for why that matters).
pub fn bind(path: &Path) -> Result<Bound, SocketError> {
    clear_stale(path)?;
    let listener = bind_owner_only(path).map_err(SocketError::io("create", path))?;
    // The umask made it 0600 already; saying so again costs nothing and
    // holds on a file system that ignores the umask for sockets.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(MODE))
        .map_err(SocketError::io("chmod", path))?;
    let meta = std::fs::symlink_metadata(path).map_err(SocketError::io("stat", path))?;
    log::info!("admin socket {} (mode 0600)", path.display());
    Ok(Bound {
        listener,
        file: SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    })
}

/// Makes room for the socket at `path`: nothing there, or a stale socket
/// file that is removed. See [`bind`].
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SocketError::io("check", path)(e)),
    };
    let path_buf = || path.to_path_buf();
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket { path: path_buf() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse { path: path_buf() }),
        // Nobody listens: a server that was killed left its file.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    log::info!(
                        "admin socket {}: removed a stale socket file",
                        path.display()
                    );
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(SocketError::StaleRemove {
                    path: path_buf(),
                    source,
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SocketError::Probe {
            path: path_buf(),
            source,
        }),
    }
}

/// Binds a Unix socket whose file is born with mode 0600.
///
/// `bind(2)` creates the file with `0777 & !umask`, so the umask is set to
/// 0177 around the call: there is no moment at which the file is wider
/// than 0600, as there would be with bind-then-chmod. The umask is
/// process-wide; this runs at start before any other thread exists (the
/// leader, or a `--single` process, before its first worker or thread),
/// and even a thread creating a file meanwhile would only get a file
/// narrower than it asked for, never a wider one. The other way, binding in
/// a fresh 0700 directory and renaming into place, would leave
/// `getsockname` naming the temporary path and needs a directory next to
/// the socket that the user may not be allowed to create.
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    crate::sys::with_umask(0o177, || UnixListener::bind(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("switchyard-adminsock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bind_makes_a_0600_socket_and_removes_it_on_drop() {
        let dir = temp("mode");
        let path = dir.join("admin.sock");
        let bound = bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second bind while it listens is refused with the path.
        let err = bind(&path).unwrap_err();
        assert!(matches!(&err, SocketError::InUse { path: p } if *p == path));
        assert_eq!(
            err.to_string(),
            format!(
                "admin socket {} is in use by another server",
                path.display()
            )
        );
        drop(bound);
        assert!(!path.exists(), "the file is removed with its owner");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_regular_file_is_refused() {
        let dir = temp("stale");
        let path = dir.join("admin.sock");
        // A listener dropped without removing its file: nobody answers.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let bound = bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok(), "the new socket answers");
        drop(bound);

        std::fs::write(&path, b"not a socket").unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("exists and is not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_socket_file_replaced_meanwhile_is_left_alone() {
        let dir = temp("replaced");
        let path = dir.join("admin.sock");
        let bound = bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let other = UnixListener::bind(&path).unwrap();
        drop(bound);
        assert!(path.exists(), "another server's socket stays");
        drop(other);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
