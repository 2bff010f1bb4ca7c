//! `--watch`: reloads modules when files in the modules directory are
//! created, replaced or removed.
//!
//! Events are debounced: a reload runs once the directory has been quiet
//! for the debounce interval, so a burst of writes causes one reload.
//! Installers should write to a hidden temporary name (`.name.so.tmp`) and
//! rename it into place; hidden names are ignored, and a rename is atomic,
//! so the loader never sees half a file. A file written in place is still
//! only read after the writes stopped, and a truncated file is refused by
//! the loader with the running generation kept.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{unbounded, RecvTimeoutError};
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};

use crate::registry::is_module_file;
use crate::state::Shared;

/// Why `--watch` could not start; the text is the startup error.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start the file watcher: {0}")]
    Watcher(notify::Error),
    #[error("cannot watch {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("{0}")]
    Thread(std::io::Error),
}

/// Quiet time before a burst of file events triggers one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

fn relevant(event: &notify::Event) -> bool {
    let kind_matters = match event.kind {
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        // Reading a file (the registry copies each one it loads) must not
        // trigger a reload; only a writer closing it does.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        _ => false,
    };
    kind_matters && event.paths.iter().any(|p| is_module_file(p))
}

/// Starts watching `dir`; reloads run on the control thread.
pub fn start(shared: Arc<Shared>, dir: PathBuf) -> Result<(), WatchError> {
    let (tx, rx) = unbounded();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(WatchError::Watcher)?;
    if let Err(source) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        return Err(WatchError::Watch { dir, source });
    }
    log::info!("watching {} for module changes", dir.display());
    thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let _watcher = watcher; // dropping it would stop the events
            loop {
                match rx.recv() {
                    Ok(Ok(ev)) if relevant(&ev) => {}
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        log::warn!("file watcher: {e}");
                        continue;
                    }
                    Err(_) => return,
                }
                // Wait for the directory to go quiet.
                loop {
                    match rx.recv_timeout(DEBOUNCE) {
                        Ok(_) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                log::info!("module files changed: reloading");
                let s = shared.clone();
                shared.control.run(move || {
                    s.registry.reload_all();
                });
            }
        })
        .map_err(WatchError::Thread)?;
    Ok(())
}
