//! Starting and stopping a serving process, read top-down.
//!
//! [`run`] merges the command line into the configuration and opens the
//! listening sockets (and the admin socket) first, so that a busy port
//! fails before any module starts. A leader process then hands them to
//! `process/leader.rs`; a worker, or a `--single` process, builds a
//! [`Server`] and runs it.
//!
//! [`Server::build`] constructs every long-lived value once, in the order
//! they depend on each other: the loops' mailboxes and wakers, the push
//! counters, the route table and host services, the job scheduler, TLS and
//! the admin settings, the registry (which loads the modules), the pool and
//! the control thread, the shared state, and the event loops. Each value is
//! handed what it needs when it is made, never wired in afterwards; the
//! parts above the registry hear from it through a hook or a channel (see
//! `registry::Links`). [`Server::run`] starts the threads, announces the
//! address, waits for the loops to end and shuts the rest down.

use std::io::Write;
use std::net::{AddrParseError, IpAddr, SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use mio::Poll;

use crate::access::{AdminAccess, LiveAccess};
use crate::admin_socket::{self, SocketFile};
use crate::cli::Args;
use crate::config::{self, AcceptMode, Config};
use crate::pool::{Completion, Control, Mailbox, Pool};
use crate::process::{leader, upgrade, worker};
use crate::reactor::EventLoop;
use crate::registry::{self, ConfigHook, Links, Registry};
use crate::router::SharedTable;
use crate::scheduler::Scheduler;
use crate::services::{PushPending, Services};
use crate::state::Shared;
use crate::tls::{Tls, TlsSettings};
use crate::{sys, watch};

/// Why the server could not start. `main` prints it as `switchyard:
/// <text>` and exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read or is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("-threads must be at least 1")]
    NoThreads,
    #[error("bad bind address {addr:?}: {source}")]
    BadBind {
        addr: String,
        source: AddrParseError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// A worker started without the listeners its leader should pass.
    #[error("the leader passed no listener")]
    NoListener,
    /// The admin socket could not be bound or served.
    #[error("{0}")]
    AdminSocket(#[from] crate::admin_socket::SocketError),
    /// The leader process failed (see `process/leader.rs`).
    #[error("{0}")]
    Leader(String),
    /// The modules directory, its `.run` directory or the data directory
    /// could not be created.
    #[error("cannot prepare {}: {source}", dir.display())]
    Prepare {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A certificate or key in `[server.tls]` could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The admin settings (`admin_token`, `admin_from`) are invalid.
    #[error("{0}")]
    AdminSettings(crate::config::ConfigError),
    #[error("cannot start event loop: {0}")]
    EventLoop(std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// `--watch` could not start watching the modules directory.
    #[error("{0}")]
    Watch(#[from] crate::watch::WatchError),
    /// Any other failure of the operating system (a poll instance, a
    /// thread, a socket address).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Starts the process's part: merges the command line into the config,
/// opens the sockets, then leads (the default) or serves (a worker, or
/// `--single`) until shutdown.
pub fn run(args: Args) -> Result<(), Error> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(Error::Config)?,
        None => Config::default(),
    };
    let server = &mut config.server;
    if let Some(p) = args.port {
        server.port = p;
    }
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(Error::NoThreads);
        }
        server.threads = t;
    }
    if let Some(b) = &args.bind {
        server.bind = b.clone();
    }
    let ip: IpAddr = server.bind.parse().map_err(|source| Error::BadBind {
        addr: server.bind.clone(),
        source,
    })?;
    let mut loops = match server.event_loops {
        0 => thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(256); // connection ids carry the loop index in 8 bits
    let mode = if sys::HAS_REUSEPORT {
        server.accept
    } else {
        AcceptMode::Shared
    };

    // Listen first so that a busy port fails before modules start. A
    // worker serves on the sockets its leader opened.
    let (listeners, addr) = match worker::take_listeners() {
        Some(inherited) => inherited_listeners(inherited, &mut loops)?,
        None => open_listeners(ip, server.port, mode, loops)?,
    };
    // The admin socket, likewise: a worker serves the one its leader
    // bound; the leader, or a --single process, binds it now, while it has
    // no other thread (see `admin_socket::bind`), and removes the file
    // when it exits (`admin_file`).
    let (admin_listener, admin_file) = match worker::take_admin_socket() {
        Some(inherited) => (Some(inherited), None),
        None => match &server.admin_socket {
            Some(path) if !worker::is_worker() => {
                let bound = admin_socket::bind(path).map_err(Error::AdminSocket)?;
                (Some(bound.listener), Some(bound.file))
            }
            _ => (None, None),
        },
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("data"));
    if !args.single && !worker::is_worker() {
        let admin = admin_listener
            .zip(admin_file)
            .map(|(listener, file)| admin_socket::Bound { listener, file });
        return leader::lead(&config.server, &data_dir, listeners, addr, admin)
            .map_err(Error::Leader);
    }

    fit_descriptor_limit(&mut config.server, loops);
    let watch = args.watch || config.server.watch;
    Server::build(Startup {
        config,
        config_path: args.config,
        modules: args.modules,
        data_dir,
        watch,
        listeners,
        addr,
        mode,
        admin_listener,
        admin_file,
    })?
    .run()
}

/// What [`Server::build`] starts from: the merged config, the paths the
/// command line named, and the sockets already open.
pub struct Startup {
    pub config: Config,
    /// The config file, re-read on every `RELOAD`.
    pub config_path: Option<PathBuf>,
    /// The modules directory.
    pub modules: PathBuf,
    /// The directory each module's data directory is made in.
    pub data_dir: PathBuf,
    /// Reload by itself when module files change (`--watch`).
    pub watch: bool,
    /// One listener per event loop (clones of one when accepts are
    /// shared).
    pub listeners: Vec<TcpListener>,
    pub addr: SocketAddr,
    pub mode: AcceptMode,
    /// The admin socket to serve, if any.
    pub admin_listener: Option<UnixListener>,
    /// The admin socket's file when this process bound it: removed at
    /// exit.
    pub admin_file: Option<SocketFile>,
}

/// A serving process, built and not yet running.
pub struct Server {
    shared: Arc<Shared>,
    /// The event loops, each with its listener and mailbox.
    loops: Vec<EventLoop>,
    admin_listener: Option<UnixListener>,
    admin_file: Option<SocketFile>,
    watch: bool,
    mode: AcceptMode,
}

impl Server {
    /// Constructs everything, in dependency order, and loads the modules.
    pub fn build(s: Startup) -> Result<Server, Error> {
        let Startup {
            config,
            config_path,
            modules,
            data_dir,
            watch,
            listeners,
            addr,
            mode,
            admin_listener,
            admin_file,
        } = s;
        let loops = listeners.len();
        let threads = config.server.threads;

        // The loops' mailboxes and wakers come first: services push
        // through them, and the route table wakes the loops on a swap.
        let mut polls = Vec::with_capacity(loops);
        let mut mailboxes = Vec::with_capacity(loops);
        let mut inboxes = Vec::with_capacity(loops);
        for _ in 0..loops {
            let (poll, waker) = EventLoop::poll_and_waker()?;
            let (tx, rx) = unbounded();
            polls.push(poll);
            mailboxes.push(Mailbox::new(tx, waker));
            inboxes.push(rx);
        }
        let mailboxes = Arc::new(mailboxes);
        let push_pending = PushPending::new(loops, config.server.max_pending_push_bytes);
        let table = Arc::new(SharedTable::new(
            mailboxes.iter().map(|m| m.waker.clone()).collect(),
        ));
        let services = Services::new(mailboxes.clone(), push_pending.clone(), table.clone());
        let scheduler = Scheduler::start(threads.max(2));

        // TLS: a bad certificate is a startup error; on RELOAD it is an ERR
        // line and the certificates in force stay.
        let tls = Arc::new(Tls::default());
        let tls_base = config_path
            .as_ref()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_default();
        if let Some(n) = tls_load(&tls, &config.server.tls, &tls_base).map_err(Error::Tls)? {
            log::info!("tls: {n} certificate(s) loaded");
        }
        // Admin settings: a bad `admin_from` was refused by `Config::load`.
        let admin = Arc::new(LiveAccess::new(
            AdminAccess::new(&config.server, 0).map_err(Error::AdminSettings)?,
        ));

        let (retired_tx, retired_rx) = unbounded();
        let jobs = scheduler.clone();
        let links = Links {
            services: services.clone(),
            table: table.clone(),
            tls: tls.clone(),
            jobs: Box::new(move |modules| jobs.sync(modules)),
            config_hook: follow_config(admin.clone(), tls.clone(), tls_base),
            retired: retired_tx,
        };
        let registry = Registry::new(
            modules.clone(),
            data_dir,
            config.clone(),
            config_path,
            links,
        )
        .map_err(|source| Error::Prepare {
            dir: modules.clone(),
            source,
        })?;
        let registry = Arc::new(registry);
        let outcomes = registry.load_all();
        let loaded = outcomes.loaded();
        if loaded == 0 {
            log::warn!("no modules loaded from {}", modules.display());
        }

        let shared = Arc::new(Shared {
            cfg: config.server.clone(),
            table,
            registry,
            scheduler,
            tls,
            services,
            pool: Pool::start(threads, mailboxes.clone()),
            control: Control::start(),
            mailboxes,
            push_pending,
            admin,
            auth_backoff: Default::default(),
            own_upstreams: Default::default(),
            listen_addr: addr,
            per_ip: Default::default(),
            buffered: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            next_conn_id: AtomicU64::new(1),
            started: Instant::now(),
            loops,
            threads,
        });
        follow_retired(&shared, retired_rx, config.server.max_retained_bytes)?;

        let loops = event_loops(&shared, polls, listeners, inboxes)?;
        Ok(Server {
            shared,
            loops,
            admin_listener,
            admin_file,
            watch,
            mode,
        })
    }

    /// Starts the event loops, the signal handler, the admin socket and
    /// the watcher; announces the address; returns after a graceful
    /// shutdown.
    pub fn run(self) -> Result<(), Error> {
        let Server {
            shared,
            loops,
            admin_listener,
            admin_file,
            watch,
            mode,
        } = self;
        let mut handles = Vec::with_capacity(loops.len());
        for (idx, el) in loops.into_iter().enumerate() {
            handles.push(
                thread::Builder::new()
                    .name(format!("loop-{idx}"))
                    .spawn(move || el.run())?,
            );
        }
        signals(shared.clone())?;
        let admin_serving = match admin_listener {
            Some(listener) => Some(
                crate::admin::socket::serve(shared.clone(), listener)
                    .map_err(Error::AdminSocket)?,
            ),
            None => None,
        };
        if watch {
            watch::start(shared.clone(), shared.registry.dir().to_path_buf())
                .map_err(Error::Watch)?;
        }

        let (addr, loops, threads) = (shared.listen_addr, shared.loops, shared.threads);
        log::info!(
            "listening on {addr} ({loops} event loops, {mode:?} accept, {threads} pool threads)"
        );
        if worker::is_worker() {
            // The leader prints `listening on` once its first worker is ready.
            worker::ready();
        } else {
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "listening on {addr}");
            let _ = stdout.flush();
        }

        for h in handles {
            let _ = h.join();
        }
        let grace = Duration::from_millis(shared.cfg.shutdown_timeout_ms);
        if let Some(admin) = &admin_serving {
            admin.finish(Instant::now() + grace);
        }
        shared.scheduler.shutdown(grace);
        shared.registry.clear();
        drop(admin_file);
        log::info!("shutdown complete");
        Ok(())
    }
}

/// What `RELOAD` refreshes from the config besides the modules: the admin
/// settings, then the TLS certificates (whose outcome line joins the
/// reply).
fn follow_config(admin: Arc<LiveAccess>, tls: Arc<Tls>, tls_base: PathBuf) -> ConfigHook {
    Box::new(move |cfg: &Config| {
        // The admin settings follow the file at once; the config was
        // validated, so this cannot fail on a file `load` accepted.
        match admin.apply(&cfg.server) {
            Ok(changes) => {
                for c in changes {
                    log::info!("RELOAD: {c}");
                }
            }
            Err(e) => log::error!("RELOAD: admin settings kept: {e}"),
        }
        if !cfg.server.tls.enabled() && !tls.active() {
            return None;
        }
        Some(registry::ReloadOutcome::Tls(tls_load(
            &tls,
            &cfg.server.tls,
            &tls_base,
        )))
    })
}

/// Past `max_retained_bytes` the worker replaces itself: the registry
/// sends the retired bytes after every reload, and this thread checks
/// them. It holds the state weakly, so it never keeps a stopped server
/// alive, and ends when the registry (the sender) is gone.
fn follow_retired(shared: &Arc<Shared>, retired: Receiver<u64>, limit: u64) -> Result<(), Error> {
    let weak = Arc::downgrade(shared);
    thread::Builder::new()
        .name("retained".into())
        .spawn(move || {
            for bytes in retired {
                if let Some(shared) = weak.upgrade() {
                    upgrade::retained_over(&shared, bytes, limit);
                }
            }
        })?;
    Ok(())
}

/// Makes one event loop per listener, each with its poll instance and
/// mailbox.
fn event_loops(
    shared: &Arc<Shared>,
    polls: Vec<Poll>,
    listeners: Vec<TcpListener>,
    inboxes: Vec<Receiver<Completion>>,
) -> Result<Vec<EventLoop>, Error> {
    polls
        .into_iter()
        .zip(listeners)
        .zip(inboxes)
        .enumerate()
        .map(|(idx, ((poll, listener), inbox))| {
            EventLoop::new(idx, poll, listener, shared.clone(), inbox).map_err(Error::EventLoop)
        })
        .collect()
}

/// Descriptors kept out of `max_connections` for everything else the
/// worker opens: listeners, epoll and waker descriptors, module libraries,
/// files being served, SQLite databases with their journals, pipes.
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft descriptor limit to the hard one and clamps
/// `max_connections` to what it allows (one descriptor per connection; a
/// proxied session's upstream socket, and its pipes with `proxy_splice`,
/// count as further connections), with a warning when clamped.
fn fit_descriptor_limit(server: &mut config::Server, loops: usize) {
    let limit = match sys::raise_nofile_limit() {
        Ok((old, new)) => {
            if new != old {
                log::info!("descriptor limit (RLIMIT_NOFILE) raised from {old} to {new}");
            } else {
                log::info!("descriptor limit (RLIMIT_NOFILE) is {new}");
            }
            new
        }
        Err(e) => {
            log::warn!("cannot read or raise the descriptor limit: {e}");
            return;
        }
    };
    let reserve = RESERVED_DESCRIPTORS + 4 * loops as u64;
    let fits = limit.saturating_sub(reserve).max(1);
    if server.max_connections as u64 > fits {
        log::warn!(
            "max_connections {} is more than the descriptor limit {limit} allows \
             ({reserve} kept for files, modules and databases): using {fits}",
            server.max_connections
        );
        server.max_connections = fits as usize;
    }
}

/// Opens the listening sockets: one per event loop with `SO_REUSEPORT`,
/// otherwise one shared by every loop.
fn open_listeners(
    ip: IpAddr,
    port: u16,
    mode: AcceptMode,
    loops: usize,
) -> Result<(Vec<TcpListener>, SocketAddr), Error> {
    let mut listeners = Vec::with_capacity(loops);
    let first = sys::listen(SocketAddr::new(ip, port), mode == AcceptMode::Reuseport).map_err(
        |source| Error::Listen {
            addr: format!("{ip}:{port}"),
            source,
        },
    )?;
    let addr = first.local_addr()?;
    listeners.push(first);
    for _ in 1..loops {
        let l = match mode {
            AcceptMode::Reuseport => sys::listen(addr, true),
            AcceptMode::Shared => listeners[0].try_clone(),
        }
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

/// A worker's listeners, inherited from its leader: one per event loop
/// (the loop count follows them), or a single one every loop shares.
fn inherited_listeners(
    inherited: Vec<TcpListener>,
    loops: &mut usize,
) -> Result<(Vec<TcpListener>, SocketAddr), Error> {
    let first = inherited.first().ok_or(Error::NoListener)?;
    let addr = first.local_addr()?;
    if inherited.len() > 1 {
        *loops = inherited.len();
        return Ok((inherited, addr));
    }
    let mut listeners = inherited;
    for _ in 1..*loops {
        let l = listeners[0].try_clone()?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

/// Loads the TLS settings; `None` when TLS is off.
fn tls_load(
    tls: &Tls,
    settings: &TlsSettings,
    base: &Path,
) -> Result<Option<usize>, crate::tls::TlsError> {
    let n = tls.load(settings, base)?;
    Ok(settings.enabled().then_some(n))
}

/// SIGHUP reloads; SIGTERM and SIGINT shut down gracefully.
fn signals(shared: Arc<Shared>) -> Result<(), Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]).map_err(Error::Signals)?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        log::info!("SIGHUP: reloading");
                        let s = shared.clone();
                        shared.control.run(move || {
                            s.registry.reload_all();
                        });
                    }
                    _ => {
                        log::info!("signal {sig}: graceful shutdown");
                        shared.shutdown();
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_before() {
        let refused = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let bad_ip = "1.2.3".parse::<IpAddr>().unwrap_err();
        let cases = [
            (Error::NoThreads, "-threads must be at least 1".to_string()),
            (
                Error::BadBind {
                    addr: "1.2.3".into(),
                    source: bad_ip.clone(),
                },
                format!("bad bind address \"1.2.3\": {bad_ip}"),
            ),
            (
                Error::Listen {
                    addr: "127.0.0.1:80".into(),
                    source: refused(),
                },
                format!("cannot listen on 127.0.0.1:80: {}", refused()),
            ),
            (
                Error::NoListener,
                "the leader passed no listener".to_string(),
            ),
            (
                Error::Prepare {
                    dir: PathBuf::from("mods"),
                    source: refused(),
                },
                format!("cannot prepare mods: {}", refused()),
            ),
            (
                Error::EventLoop(refused()),
                format!("cannot start event loop: {}", refused()),
            ),
            (
                Error::Signals(refused()),
                format!("cannot install signal handlers: {}", refused()),
            ),
            (
                Error::Config(crate::config::ConfigError::Invalid("bad file".into())),
                "bad file".to_string(),
            ),
            (Error::Io(refused()), refused().to_string()),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn inherited_listener_is_shared_by_every_loop() {
        let one = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = one.local_addr().unwrap();
        let mut loops = 3;
        let (all, got) = inherited_listeners(vec![one], &mut loops).unwrap();
        assert_eq!((all.len(), got, loops), (3, addr, 3));
        let mut loops = 2;
        assert!(matches!(
            inherited_listeners(Vec::new(), &mut loops),
            Err(Error::NoListener)
        ));
    }
}
