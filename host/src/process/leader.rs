//! The leader process: holds the listening sockets, runs one worker (this
//! same binary, see [`super::worker`]) that inherits them, and replaces
//! it when it dies (a crash, or a host panic: see [`crate::panics`]), hangs
//! in module code, or asks to be (`UPGRADE`, or its retired generations
//! passed `max_retained_bytes`).
//!
//! There is no readiness deadline: a worker that takes long to start (a
//! module opening a large database) is never killed for it. Until it is
//! ready the old one serves (`UPGRADE`) or connections wait in the listen
//! queue (after a crash).
//!
//! With `admin_socket` configured, the leader also holds the admin Unix
//! socket (bound before the first worker, see [`crate::admin_socket`]):
//! every worker inherits it like the listeners, so it keeps working across
//! crashes and `UPGRADE`, and the leader removes its file when it exits.
//!
//! The leader never loads modules. Its loop waits on a self-pipe written by
//! its signal handlers (`SIGCHLD`, `SIGHUP`, `SIGTERM`, `SIGINT`) and on its
//! control sockets to the workers, waking at least every 100 ms to look for
//! module calls that do not return.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::upgrade::format_upgrades;
use super::worker as link;
use crate::admin_socket::Bound;
use crate::config::Server as ServerCfg;
use crate::guard::page::{now_ms, PageMap};
use crate::quarantine::{self, Quarantined};
use crate::sys::{self, kill};

/// How often the leader looks at the workers' status pages.
const TICK: Duration = Duration::from_millis(100);
/// A worker that dies sooner than this after it was ready counts towards a
/// crash loop (restart backoff).
const QUICK_CRASH: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Serving (or starting to).
    Current,
    /// Started by `UPGRADE`, not ready yet; `requester` asked for it,
    /// `auto`matically (retained memory) or for an operator.
    Candidate { requester: u32, auto: bool },
    /// Replaced: draining, killed at the deadline.
    Retiring { deadline: Instant },
}

struct Worker {
    child: Child,
    pid: u32,
    ctl: UnixStream,
    buf: Vec<u8>,
    page: PageMap,
    spawned: Instant,
    ready_at: Option<Instant>,
    role: Role,
    /// (slot, since) of slow calls already reported.
    warned: HashSet<(usize, u64)>,
    /// Set when the leader killed it for a hang: the module and why.
    hang: Option<(u32, String)>,
}

struct Leader {
    exe: PathBuf,
    args: Vec<OsString>,
    listen_fds: Vec<RawFd>,
    /// The admin socket every worker inherits, if configured.
    admin_fd: Option<RawFd>,
    addr: SocketAddr,
    cfg: ServerCfg,
    quarantine: PathBuf,
    workers: Vec<Worker>,
    announced: bool,
    /// Crash restarts so far.
    restarts: u64,
    last_fault: String,
    /// Workers replaced on request (`UPGRADE`, automatic), for `STATUS`.
    upgrades: u64,
    auto_upgrades: u64,
    /// Consecutive quick crashes (backoff).
    quick_streak: u32,
    /// The module blamed for the last crashes, and how many in a row.
    culprit_streak: Option<(String, u32)>,
    restart_at: Option<Instant>,
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// Runs the leader until shutdown. `listeners` are already bound, and so is
/// `admin`, the admin socket; its file is removed when this returns.
pub fn lead(
    cfg: &ServerCfg,
    data_dir: &Path,
    listeners: Vec<TcpListener>,
    addr: SocketAddr,
    admin: Option<Bound>,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());

    // Signals: flags say which, the pipe wakes the loop.
    let (wake_r, wake_w) = UnixStream::pair().map_err(|e| e.to_string())?;
    wake_r.set_nonblocking(true).map_err(|e| e.to_string())?;
    wake_w.set_nonblocking(true).map_err(|e| e.to_string())?;
    let flags: Vec<(i32, Arc<AtomicBool>)> =
        [libc::SIGCHLD, libc::SIGHUP, libc::SIGTERM, libc::SIGINT]
            .into_iter()
            .map(|s| (s, Arc::new(AtomicBool::new(false))))
            .collect();
    for (sig, flag) in &flags {
        signal_hook::flag::register(*sig, flag.clone()).map_err(|e| e.to_string())?;
        let w = wake_w.try_clone().map_err(|e| e.to_string())?;
        signal_hook::low_level::pipe::register(*sig, w).map_err(|e| e.to_string())?;
    }
    let raised = |sig: i32| {
        flags
            .iter()
            .find(|(s, _)| *s == sig)
            .is_some_and(|(_, f)| f.swap(false, Ordering::SeqCst))
    };

    let mut leader = Leader {
        exe,
        args: std::env::args_os().skip(1).collect(),
        listen_fds: listeners.iter().map(|l| l.as_raw_fd()).collect(),
        admin_fd: admin.as_ref().map(|a| a.listener.as_raw_fd()),
        addr,
        cfg: cfg.clone(),
        quarantine: data_dir.join(".switchyard-quarantine"),
        workers: Vec::new(),
        announced: false,
        restarts: 0,
        last_fault: String::new(),
        upgrades: 0,
        auto_upgrades: 0,
        quick_streak: 0,
        culprit_streak: None,
        restart_at: None,
    };
    log::info!(
        "leader pid={} listening on {addr}; starting the worker",
        std::process::id()
    );
    let w = leader
        .spawn(Role::Current)
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    leader.workers.push(w);

    let result = loop {
        leader.wait(&wake_r);
        if raised(libc::SIGTERM) || raised(libc::SIGINT) {
            log::info!("leader: signal received, stopping the workers gracefully");
            leader.stop_all();
            break Ok(());
        }
        if raised(libc::SIGHUP) {
            for w in &leader.workers {
                if w.role == Role::Current {
                    log::info!("leader: SIGHUP forwarded to worker pid={}", w.pid);
                    kill(w.pid, libc::SIGHUP);
                }
            }
        }
        raised(libc::SIGCHLD);
        leader.read_controls();
        match leader.reap() {
            Ok(true) => {}
            Ok(false) => {
                leader.stop_all();
                break Ok(());
            }
            Err(e) => {
                leader.stop_all();
                break Err(e);
            }
        }
        leader.check_hangs();
        leader.retire_overdue();
        if leader.restart_at.is_some_and(|t| Instant::now() >= t) {
            leader.restart_at = None;
            match leader.spawn(Role::Current) {
                Ok(w) => leader.workers.push(w),
                Err(e) => {
                    log::error!("cannot start a worker: {e}; retrying");
                    leader.restart_at = Some(Instant::now() + MAX_BACKOFF);
                }
            }
        }
    };
    drop(listeners);
    // Every worker has exited: nothing serves the admin socket any more.
    drop(admin);
    result
}

impl Leader {
    fn spawn(&mut self, role: Role) -> io::Result<Worker> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (page_fd, page) = PageMap::create()?;
        let fds: Vec<String> = self.listen_fds.iter().map(|f| f.to_string()).collect();
        let mut inherit = self.listen_fds.clone();
        inherit.push(theirs.as_raw_fd());
        inherit.push(page_fd.as_raw_fd());
        inherit.extend(self.admin_fd);
        // A candidate reports the upgrade that starts it: it only ever
        // serves if that upgrade succeeds.
        let (upgrades, auto) = match role {
            Role::Candidate { auto, .. } => (self.upgrades + 1, self.auto_upgrades + auto as u64),
            _ => (self.upgrades, self.auto_upgrades),
        };
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env(link::ENV_LISTEN_FDS, fds.join(","))
            .env(link::ENV_CONTROL_FD, theirs.as_raw_fd().to_string())
            .env(link::ENV_STATUS_FD, page_fd.as_raw_fd().to_string())
            .env(link::ENV_QUARANTINE, &self.quarantine)
            .env(link::ENV_LAST_FAULT, &self.last_fault)
            .env(link::ENV_UPGRADES, format_upgrades(upgrades, auto));
        if let Some(fd) = self.admin_fd {
            cmd.env(link::ENV_ADMIN_FD, fd.to_string());
        }
        sys::inherit_on_exec(&mut cmd, inherit);
        let child = cmd.spawn()?;
        let pid = child.id();
        log::info!("leader: started worker pid={pid}");
        Ok(Worker {
            child,
            pid,
            ctl: ours,
            buf: Vec::new(),
            page,
            spawned: Instant::now(),
            ready_at: None,
            role,
            warned: HashSet::new(),
            hang: None,
        })
    }

    /// Sleeps until a signal, a control message or the next tick.
    fn wait(&self, wake: &UnixStream) {
        let mut fds = vec![wake.as_raw_fd()];
        fds.extend(self.workers.iter().map(|w| w.ctl.as_raw_fd()));
        let mut timeout = TICK;
        if let Some(t) = self.restart_at {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        sys::poll_readable(&fds, timeout);
        let mut sink = [0u8; 256];
        while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
    }

    fn send(w: &mut Worker, line: &str) {
        let _ = w.ctl.set_nonblocking(false);
        let _ = w.ctl.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = w.ctl.write_all(format!("{line}\n").as_bytes());
        let _ = w.ctl.set_nonblocking(true);
    }

    fn read_controls(&mut self) {
        let mut msgs = Vec::new();
        for w in &mut self.workers {
            let mut chunk = [0u8; 512];
            loop {
                match w.ctl.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => w.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            while let Some(nl) = w.buf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = w.buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                msgs.push((w.pid, line));
            }
        }
        for (pid, msg) in msgs {
            match msg.as_str() {
                "ready" => self.on_ready(pid),
                "upgrade" => self.on_upgrade(pid, false),
                "upgrade auto" => self.on_upgrade(pid, true),
                other => log::warn!("leader: worker pid={pid} sent {other:?}"),
            }
        }
    }

    fn worker(&mut self, pid: u32) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.pid == pid)
    }

    fn on_ready(&mut self, pid: u32) {
        let Some(w) = self.worker(pid) else { return };
        w.ready_at = Some(Instant::now());
        let took = w.spawned.elapsed();
        let role = w.role;
        log::info!("leader: worker pid={pid} ready in {} ms", took.as_millis());
        match role {
            Role::Current => {
                if !self.announced {
                    self.announced = true;
                    let mut out = io::stdout();
                    let _ = writeln!(out, "listening on {}", self.addr);
                    let _ = out.flush();
                }
            }
            Role::Candidate { requester, auto } => {
                self.count_upgrade(auto);
                let drain =
                    Duration::from_millis(self.cfg.shutdown_timeout_ms) + Duration::from_secs(2);
                for o in &mut self.workers {
                    if o.role == Role::Current {
                        o.role = Role::Retiring {
                            deadline: Instant::now() + drain,
                        };
                        if o.pid == requester {
                            // The old worker replies, then drains itself.
                            Self::send(o, &format!("upgraded {pid}"));
                        } else {
                            kill(o.pid, libc::SIGTERM);
                        }
                    }
                }
                if let Some(w) = self.worker(pid) {
                    w.role = Role::Current;
                }
                log::info!("leader: UPGRADE: worker pid={pid} took over");
            }
            Role::Retiring { .. } => {}
        }
    }

    fn count_upgrade(&mut self, auto: bool) {
        self.upgrades += 1;
        self.auto_upgrades += auto as u64;
    }

    fn on_upgrade(&mut self, pid: u32, auto: bool) {
        let busy = self
            .workers
            .iter()
            .any(|w| matches!(w.role, Role::Candidate { .. }));
        let is_current = self
            .workers
            .iter()
            .any(|w| w.pid == pid && w.role == Role::Current);
        let refuse = if !is_current {
            Some("this worker is being replaced already")
        } else if busy {
            Some("an upgrade is already in progress")
        } else {
            None
        };
        if let Some(why) = refuse {
            if let Some(w) = self.worker(pid) {
                Self::send(w, &format!("upgrade-failed {why}"));
            }
            return;
        }
        log::info!(
            "leader: {} requested by worker pid={pid}",
            if auto {
                "replacement (retained memory)"
            } else {
                "UPGRADE"
            }
        );
        match self.spawn(Role::Candidate {
            requester: pid,
            auto,
        }) {
            Ok(w) => self.workers.push(w),
            Err(e) => {
                if let Some(w) = self.worker(pid) {
                    Self::send(w, &format!("upgrade-failed cannot start a worker: {e}"));
                }
            }
        }
    }

    /// Reaps exited workers. `Ok(false)`: the current worker exited
    /// cleanly (a `SHUTDOWN`), so the leader ends too.
    fn reap(&mut self) -> Result<bool, String> {
        let mut i = 0;
        while i < self.workers.len() {
            let status = match self.workers[i].child.try_wait() {
                Ok(Some(s)) => s,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let w = self.workers.swap_remove(i);
            match w.role {
                Role::Retiring { .. } => {
                    log::info!("leader: old worker pid={} exited ({status})", w.pid);
                }
                Role::Candidate { requester, .. } => {
                    log::error!(
                        "leader: UPGRADE: new worker pid={} {} before it was ready",
                        w.pid,
                        describe(status)
                    );
                    let why = format!("new worker {} before it was ready", describe(status));
                    if let Some(r) = self.worker(requester) {
                        Self::send(r, &format!("upgrade-failed {why}"));
                    }
                }
                Role::Current => {
                    if status.success() && w.hang.is_none() {
                        log::info!("leader: worker pid={} exited normally; stopping", w.pid);
                        return Ok(false);
                    }
                    if !self.announced && status.signal().is_none() {
                        // A startup error (bad config, certificate...): the
                        // worker said why on stderr.
                        let panic = w.page.get().panic();
                        return Err(format!(
                            "the worker {} during startup{}",
                            describe(status),
                            panic.map_or(String::new(), |p| format!(" (host panic on {p})"))
                        ));
                    }
                    self.crashed(w, status);
                }
            }
        }
        Ok(true)
    }

    /// The current worker died: say why, maybe quarantine, restart.
    fn crashed(&mut self, w: Worker, status: ExitStatus) {
        let page = w.page.get();
        // A host panic is the host's bug: no module is blamed for it.
        let panic = page.panic().filter(|_| w.hang.is_none());
        let (culprit, how) = match &w.hang {
            Some((id, how)) => (Some(*id), Some(how.clone())),
            None if panic.is_some() => (None, None),
            None => {
                let f = page.faulted.load(Ordering::Acquire);
                (Some(f).filter(|&f| f != 0), None)
            }
        };
        let culprit_name = culprit.and_then(|id| page.name(id));
        let cause = match (&how, &panic, status.signal()) {
            (Some(_), _, _) => "hang".to_string(),
            (None, Some(_), _) => "panic".to_string(),
            (None, None, Some(sig)) => signal_name(sig),
            (None, None, None) => format!("exit={}", status.code().unwrap_or(-1)),
        };
        let mut detail = match (&culprit_name, &how, &panic) {
            (_, _, Some(p)) => format!(" after a host panic on {p}"),
            (Some(m), Some(h), _) => format!(" while module {m} {h}"),
            (Some(m), None, _) => format!(" while running module {m}"),
            (None, ..) => {
                let busy: Vec<String> = page
                    .busy()
                    .into_iter()
                    .filter_map(|(_, id, _)| page.name(id))
                    .collect();
                if busy.is_empty() {
                    " (not in module code)".to_string()
                } else {
                    format!(" (threads were in module(s) {})", busy.join(", "))
                }
            }
        };
        let lived = w.ready_at.map(|r| r.elapsed());
        if !matches!(lived, Some(d) if d >= QUICK_CRASH) {
            self.quick_streak += 1;
        } else {
            self.quick_streak = 1;
        }
        self.restarts += 1;
        let delay = match self.quick_streak {
            0 | 1 => Duration::ZERO,
            n => (Duration::from_millis(100) * (1u32 << (n - 2).min(6))).min(MAX_BACKOFF),
        };

        // Quarantine a module that crashed the worker N times in a row.
        if let (Some(id), Some(name)) = (culprit, &culprit_name) {
            let streak = match &self.culprit_streak {
                Some((n, k)) if n == name => k + 1,
                _ => 1,
            };
            self.culprit_streak = Some((name.clone(), streak));
            if streak >= self.cfg.quarantine_after.max(1) {
                self.culprit_streak = None;
                match self.quarantine(name, page.path(id), streak, &cause) {
                    Ok(()) => {
                        detail.push_str(&format!(
                            "; module {name} quarantined after {streak} crashes in a row \
                             (not loaded until its file changes or `RELOAD {name}`)"
                        ));
                    }
                    Err(e) => log::error!("leader: cannot quarantine {name}: {e}"),
                }
            }
        }
        log::error!(
            "leader: worker pid={} {}{detail}; restarting{}",
            w.pid,
            match &how {
                Some(_) => "was killed: hung".to_string(),
                None => describe(status),
            },
            if delay.is_zero() {
                String::new()
            } else {
                format!(" in {} ms (crash loop)", delay.as_millis())
            }
        );
        self.last_fault = format!(
            "pid={} cause={cause} module={} restarts={}",
            w.pid,
            culprit_name.as_deref().unwrap_or("-"),
            self.restarts
        );
        drop(w);
        // A worker started by UPGRADE takes over at once.
        let candidate = self.workers.iter_mut().find_map(|w| match w.role {
            Role::Candidate { auto, .. } => Some((w, auto)),
            _ => None,
        });
        if let Some((c, auto)) = candidate {
            c.role = Role::Current;
            self.count_upgrade(auto);
            return;
        }
        if delay.is_zero() {
            match self.spawn(Role::Current) {
                Ok(w) => self.workers.push(w),
                Err(e) => {
                    log::error!("cannot start a worker: {e}; retrying");
                    self.restart_at = Some(Instant::now() + MAX_BACKOFF);
                }
            }
        } else {
            self.restart_at = Some(Instant::now() + delay);
        }
    }

    fn quarantine(
        &self,
        name: &str,
        path: Option<PathBuf>,
        crashes: u32,
        cause: &str,
    ) -> io::Result<()> {
        let path = path.ok_or_else(|| io::Error::other("its file is unknown"))?;
        let entry = Quarantined::of(name, path, crashes, cause)?;
        let mut all = quarantine::read(&self.quarantine);
        all.retain(|e| e.name != name);
        all.push(entry);
        quarantine::write(&self.quarantine, &all)
    }

    /// Reports slow module calls; kills a worker stuck past `hang_kill_ms`.
    fn check_hangs(&mut self) {
        let now = now_ms();
        let (warn, kill_ms) = (self.cfg.hang_warn_ms, self.cfg.hang_kill_ms);
        for w in &mut self.workers {
            if w.hang.is_some() {
                continue;
            }
            let page = w.page.get();
            for (slot, id, since) in page.busy() {
                let age = now.saturating_sub(since);
                let name = page.name(id).unwrap_or_else(|| format!("#{id}"));
                if kill_ms > 0 && age >= kill_ms {
                    log::error!(
                        "leader: worker pid={}: a call into module {name} has not returned \
                         for {age} ms (hang_kill_ms={kill_ms}); killing the worker",
                        w.pid
                    );
                    w.hang = Some((id, format!("hung for {age} ms")));
                    kill(w.pid, libc::SIGKILL);
                    break;
                }
                if warn > 0 && age >= warn && w.warned.insert((slot, since)) {
                    log::warn!(
                        "leader: worker pid={}: a call into module {name} has been running \
                         for {age} ms (hang_warn_ms={warn})",
                        w.pid
                    );
                }
            }
        }
    }

    /// Kills old workers that did not finish draining in time.
    fn retire_overdue(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            if let Role::Retiring { deadline } = w.role {
                if now >= deadline {
                    log::warn!(
                        "leader: old worker pid={} still draining; killing it",
                        w.pid
                    );
                    kill(w.pid, libc::SIGKILL);
                    w.role = Role::Retiring {
                        deadline: now + Duration::from_secs(3600),
                    };
                }
            }
        }
    }

    /// SIGTERM to every worker; waits for them (bounded), then SIGKILL.
    fn stop_all(&mut self) {
        for w in &self.workers {
            kill(w.pid, libc::SIGTERM);
        }
        let deadline = Instant::now()
            + Duration::from_millis(self.cfg.shutdown_timeout_ms)
            + Duration::from_secs(2);
        while !self.workers.is_empty() {
            self.workers
                .retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_)) | Err(_)));
            if Instant::now() >= deadline {
                for w in &mut self.workers {
                    log::warn!("leader: worker pid={} did not stop; killing it", w.pid);
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                }
                self.workers.clear();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::info!("leader: stopped");
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(sig), _) => format!("was killed by {}", signal_name(sig)),
        (None, Some(c)) => format!("exited with status {c}"),
        _ => format!("ended ({status})"),
    }
}
