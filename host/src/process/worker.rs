//! The worker's side of the control link to its leader.
//!
//! A worker is this same binary started by the leader with a few
//! environment variables naming what it inherited:
//! * `SWITCHYARD_LISTEN_FDS`: the listening sockets (comma-separated), used
//!   instead of binding;
//! * `SWITCHYARD_ADMIN_FD`: the admin Unix socket (`[server] admin_socket`)
//!   when one is configured, bound by the leader and served by the worker
//!   (see [`crate::admin_socket`]);
//! * `SWITCHYARD_CONTROL_FD`: a socket pair to the leader, one text line per
//!   message (`ready`, `upgrade`, `upgrade auto` up; `upgraded <pid>`,
//!   `upgrade-failed <why>` down);
//! * `SWITCHYARD_STATUS_FD`: the status page the call guard writes (see
//!   [`crate::guard`]);
//! * `SWITCHYARD_QUARANTINE`: the quarantine file, consulted at load (see
//!   [`crate::quarantine`]);
//! * `SWITCHYARD_LAST_FAULT`: why the previous worker died, for `STATUS`;
//! * `SWITCHYARD_UPGRADES`: `<upgrades> <auto_upgrades>`, how many times
//!   the leader has replaced a worker on request so far, for `STATUS`.
//!
//! Without them (`--single`, or tests of the single process) every function
//! here is a cheap no-op, except the `worker` line of `STATUS`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::upgrade::parse_upgrades;
use crate::sys;

pub const ENV_LISTEN_FDS: &str = "SWITCHYARD_LISTEN_FDS";
pub const ENV_ADMIN_FD: &str = "SWITCHYARD_ADMIN_FD";
pub const ENV_CONTROL_FD: &str = "SWITCHYARD_CONTROL_FD";
pub const ENV_STATUS_FD: &str = "SWITCHYARD_STATUS_FD";
pub const ENV_QUARANTINE: &str = "SWITCHYARD_QUARANTINE";
pub const ENV_LAST_FAULT: &str = "SWITCHYARD_LAST_FAULT";
pub const ENV_UPGRADES: &str = "SWITCHYARD_UPGRADES";

/// What the worker got from its leader.
pub(super) struct Link {
    listen_fds: Mutex<Option<Vec<RawFd>>>,
    /// The admin socket's listener, until [`take_admin_socket`].
    admin_fd: Mutex<Option<RawFd>>,
    ctl: Mutex<UnixStream>,
    /// Lines from the leader, read by the `leader-link` thread; locked by
    /// the one replacement under way (see `super::upgrade::replace`).
    pub(super) replies: Mutex<Receiver<String>>,
    last_fault: Option<String>,
    /// Worker replacements on request so far: (all, automatic).
    upgrades: (u64, u64),
}

static LINK: OnceLock<Link> = OnceLock::new();

/// The link, when this process is a worker.
pub(super) fn link() -> Option<&'static Link> {
    LINK.get()
}

fn env_fd(name: &str) -> Option<RawFd> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn cloexec(fd: RawFd) {
    if let Err(e) = sys::set_cloexec(fd) {
        eprintln!("switchyard worker: cannot mark descriptor {fd} close-on-exec: {e}");
    }
}

/// Reads the worker environment, if the leader started us. Must run
/// before any other thread starts (it edits the environment).
pub fn init() {
    let Some(fds) = std::env::var(ENV_LISTEN_FDS).ok() else {
        return;
    };
    let listen_fds: Vec<RawFd> = fds
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let admin_fd = env_fd(ENV_ADMIN_FD);
    let ctl_fd = env_fd(ENV_CONTROL_FD);
    let page_fd = env_fd(ENV_STATUS_FD);
    let quarantine = std::env::var_os(ENV_QUARANTINE).map(PathBuf::from);
    let last_fault = std::env::var(ENV_LAST_FAULT).ok().filter(|s| !s.is_empty());
    let upgrades = std::env::var(ENV_UPGRADES)
        .ok()
        .and_then(|v| parse_upgrades(&v))
        .unwrap_or_default();
    for v in [
        ENV_LISTEN_FDS,
        ENV_ADMIN_FD,
        ENV_CONTROL_FD,
        ENV_STATUS_FD,
        ENV_QUARANTINE,
        ENV_LAST_FAULT,
        ENV_UPGRADES,
    ] {
        std::env::remove_var(v);
    }
    // What we inherited must not leak into processes modules start.
    for &fd in listen_fds.iter().chain(&admin_fd) {
        cloexec(fd);
    }
    if let Some(fd) = page_fd {
        // SAFETY: the leader handed us this descriptor; nothing else in
        // this process owns it.
        crate::guard::init(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    if let Some(q) = quarantine {
        crate::quarantine::set_file(q);
    }
    let Some(ctl_fd) = ctl_fd else { return };
    cloexec(ctl_fd);
    // SAFETY: the leader handed us this descriptor; nothing else owns it.
    let ctl = unsafe { UnixStream::from_raw_fd(ctl_fd) };
    let (tx, rx) = crossbeam_channel::unbounded();
    if let Ok(reader) = ctl.try_clone() {
        let _ = std::thread::Builder::new()
            .name("leader-link".into())
            .spawn(move || read_leader(reader, tx));
    }
    let _ = LINK.set(Link {
        listen_fds: Mutex::new(Some(listen_fds)),
        admin_fd: Mutex::new(admin_fd),
        ctl: Mutex::new(ctl),
        replies: Mutex::new(rx),
        last_fault,
        upgrades,
    });
}

fn read_leader(reader: UnixStream, tx: Sender<String>) {
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let _ = tx.send(line);
    }
    // The leader is gone; PR_SET_PDEATHSIG ends us where it exists.
    log::warn!("the leader closed its link to this worker");
}

/// Whether this process is a worker started by a leader.
pub fn is_worker() -> bool {
    LINK.get().is_some()
}

/// The listening sockets inherited from the leader (once).
pub fn take_listeners() -> Option<Vec<TcpListener>> {
    let fds = LINK.get()?.listen_fds.lock().take()?;
    Some(
        fds.into_iter()
            // SAFETY: the leader passed these listening sockets to us.
            .map(|fd| unsafe { TcpListener::from_raw_fd(fd) })
            .collect(),
    )
}

/// The admin socket inherited from the leader (once); `None` when the
/// leader has none (no `admin_socket` configured) or this is no worker.
pub fn take_admin_socket() -> Option<UnixListener> {
    let fd = LINK.get()?.admin_fd.lock().take()?;
    // SAFETY: the leader passed this listening Unix socket to us; nothing
    // else in this process owns the descriptor.
    Some(unsafe { UnixListener::from_raw_fd(fd) })
}

/// Sends one line to the leader.
pub(super) fn send(line: &str) -> io::Result<()> {
    let Some(link) = LINK.get() else {
        return Err(io::Error::other("not a worker"));
    };
    let mut ctl = link.ctl.lock();
    ctl.write_all(line.as_bytes())?;
    ctl.write_all(b"\n")
}

/// Tells the leader this worker is serving.
pub fn ready() {
    if let Err(e) = send("ready") {
        log::error!("cannot tell the leader this worker is ready: {e}");
    }
}

/// The `STATUS` lines after the `host` line: `worker pid=<pid>
/// uptime=<N>s upgrades=<N> auto_upgrades=<N>` (replacements on request
/// since the leader started, the automatic ones among them), then `fault
/// ...` (why the previous worker died) and one `quarantined <name> ...`
/// line per quarantined module.
pub fn status_lines(started: Instant) -> String {
    let (upgrades, auto) = LINK.get().map_or((0, 0), |l| l.upgrades);
    let mut out = format!(
        "worker pid={} uptime={}s upgrades={upgrades} auto_upgrades={auto}\n",
        std::process::id(),
        started.elapsed().as_secs()
    );
    if let Some(link) = LINK.get() {
        if let Some(f) = &link.last_fault {
            out.push_str(&format!("fault {f}\n"));
        }
        out.push_str(&crate::quarantine::status_lines());
    }
    out
}
