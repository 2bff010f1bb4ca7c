//! `switchyard`: a hot-reloadable module router (the host as a library;
//! `main.rs` only calls [`main`]).
//!
//! The parts, each in its own file:
//! * [`cli`] and [`config`]: command line and TOML configuration.
//! * [`registry`]: loads module libraries through the stable ABI, keeps one
//!   current generation per module, reloads them, builds the route table.
//! * [`router`]: the route table, longest byte-prefix match.
//! * [`reactor`] and [`conn`]: the mio event loops and the connections.
//! * [`pool`]: the worker pool for blocking module work, the control thread
//!   for admin work, and the mailboxes back to the loops.
//! * [`proxy`]: relaying connections that a module hands to an upstream.
//! * [`admin`]: the built-in commands.
//! * [`admin_socket`]: the admin Unix socket, the same commands for whoever
//!   may open the file.
//! * [`scheduler`]: modules' scheduled jobs, run on job threads.
//! * [`services`]: what modules call back into (push, in-process calls).
//! * [`watch`]: `--watch`, reloading when module files change.
//! * [`tls`]: TLS termination with rustls, chosen by SNI.
//! * [`sys`]: platform-specific calls (`SO_REUSEPORT`, `sendfile`).
//! * [`process`]: the leader process that holds the sockets and restarts a
//!   crashed worker, and the worker's side of it; [`guard`]: the record of
//!   which module each worker thread is running; [`quarantine`]: modules
//!   that keep crashing the worker.
//! * [`panics`]: a panic in host code ends the worker (the leader replaces
//!   it) instead of leaving a half-dead process.
//! * [`token`]: `--new-token` and `--hash-token`, bus tokens and the hashes
//!   the config stores.

pub mod admin;
pub mod admin_socket;
pub mod cli;
pub mod config;
pub mod conn;
pub mod generation;
pub mod guard;
pub mod panics;
pub mod pool;
pub mod process;
pub mod proxy;
pub mod quarantine;
pub mod reactor;
pub mod registry;
pub mod router;
pub mod scheduler;
pub mod services;
pub mod state;
pub mod sys;
pub mod tls;
pub mod token;
pub mod watch;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;

use crate::config::{AcceptMode, Config};
use crate::pool::{Control, Mailbox, Pool};
use crate::reactor::EventLoop;
use crate::registry::Registry;
use crate::scheduler::Scheduler;
use crate::services::Services;
use crate::state::Shared;

/// The process entry: parses the command line, then leads or serves.
pub fn main() -> ExitCode {
    process::worker::init();
    let args = cli::parse();
    if let Some(tool) = args.tool() {
        return run_tool(tool);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    panics::init(process::worker::is_worker());
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("switchyard: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a one-shot command (`--new-token`, `--hash-token`) instead of the
/// server.
fn run_tool(tool: cli::Tool) -> ExitCode {
    let done = match tool {
        cli::Tool::NewToken => token::print_new(),
        cli::Tool::HashToken => token::print_hash_of_stdin(),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: cli::Args) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let server = &mut config.server;
    if let Some(p) = args.port {
        server.port = p;
    }
    if let Some(t) = args.threads {
        if t == 0 {
            return Err("-threads must be at least 1".into());
        }
        server.threads = t;
    }
    if let Some(b) = &args.bind {
        server.bind = b.clone();
    }
    let ip: IpAddr = server
        .bind
        .parse()
        .map_err(|e| format!("bad bind address {:?}: {e}", server.bind))?;
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
    let (listeners, addr) = match process::worker::take_listeners() {
        Some(inherited) => inherited_listeners(inherited, &mut loops)?,
        None => open_listeners(ip, server.port, mode, loops)?,
    };
    // The admin socket, likewise: a worker serves the one its leader
    // bound; the leader, or a --single process, binds it now, while it has
    // no other thread (see `admin_socket::bind`), and removes the file
    // when it exits (`admin_file`).
    let (admin_listener, admin_file) = match process::worker::take_admin_socket() {
        Some(inherited) => (Some(inherited), None),
        None => match &server.admin_socket {
            Some(path) if !process::worker::is_worker() => {
                let bound = admin_socket::bind(path).map_err(|e| e.to_string())?;
                (Some(bound.listener), Some(bound.file))
            }
            _ => (None, None),
        },
    };
    if !args.single && !process::worker::is_worker() {
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data"));
        let admin = admin_listener
            .zip(admin_file)
            .map(|(listener, file)| admin_socket::Bound { listener, file });
        return process::leader::lead(&config.server, &data_dir, listeners, addr, admin);
    }

    fit_descriptor_limit(&mut config.server, loops);

    let mut polls = Vec::with_capacity(loops);
    let mut mailboxes = Vec::with_capacity(loops);
    let mut inboxes = Vec::with_capacity(loops);
    for _ in 0..loops {
        let (poll, waker) = EventLoop::poll_and_waker().map_err(|e| e.to_string())?;
        let (tx, rx) = unbounded();
        polls.push(poll);
        mailboxes.push(Mailbox { tx, waker });
        inboxes.push(rx);
    }
    let mailboxes = Arc::new(mailboxes);
    let services = Services::new();
    let push_pending = services::PushPending::new(loops, config.server.max_pending_push_bytes);
    services.set_mailboxes(mailboxes.clone(), push_pending.clone());

    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("data"));
    let registry = Arc::new(
        Registry::new(
            args.modules.clone(),
            data_dir,
            config.clone(),
            args.config.clone(),
            services.clone(),
        )
        .map_err(|e| format!("cannot prepare {}: {e}", args.modules.display()))?,
    );
    services.set_registry(&registry);

    // TLS: a bad certificate is a startup error; on RELOAD it is an ERR
    // line and the certificates in force stay.
    let tls = Arc::new(tls::Tls::default());
    let tls_base = args
        .config
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    registry.set_tls(tls.clone());
    if let Some(n) = tls_load(&tls, &config.server.tls, &tls_base).map_err(|e| e.to_string())? {
        log::info!("tls: {n} certificate(s) loaded");
    }
    // Admin settings: a bad `admin_from` was refused by `Config::load`.
    let admin = Arc::new(admin::LiveAccess::new(
        admin::AdminAccess::new(&config.server, 0).map_err(|e| e.to_string())?,
    ));
    {
        let tls = tls.clone();
        let admin = admin.clone();
        registry.set_config_hook(Box::new(move |cfg: &Config| {
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
        }));
    }
    let scheduler = Scheduler::start(config.server.threads.max(2));
    registry.set_scheduler(scheduler.clone());
    registry
        .table()
        .set_wakers(mailboxes.iter().map(|m| m.waker.clone()).collect());
    let loaded = registry.load_all().loaded();
    if loaded == 0 {
        log::warn!("no modules loaded from {}", args.modules.display());
    }

    let threads = config.server.threads;
    let shared = Arc::new(Shared {
        cfg: config.server.clone(),
        table: registry.table(),
        registry: registry.clone(),
        tls,
        services: services.clone(),
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

    // Past `max_retained_bytes` the worker replaces itself (checked on the
    // control thread after every reload).
    {
        let weak = Arc::downgrade(&shared);
        let limit = config.server.max_retained_bytes;
        registry.set_retired_hook(Box::new(move |retired| {
            if let Some(shared) = weak.upgrade() {
                process::upgrade::retained_over(&shared, retired, limit);
            }
        }));
    }

    let mut handles = Vec::with_capacity(loops);
    for (idx, ((poll, listener), inbox)) in
        polls.into_iter().zip(listeners).zip(inboxes).enumerate()
    {
        let el = EventLoop::new(idx, poll, listener, shared.clone(), inbox)
            .map_err(|e| format!("cannot start event loop: {e}"))?;
        handles.push(
            thread::Builder::new()
                .name(format!("loop-{idx}"))
                .spawn(move || el.run())
                .map_err(|e| e.to_string())?,
        );
    }
    signals(shared.clone())?;
    let admin_serving = match admin_listener {
        Some(listener) => {
            Some(admin_socket::serve(shared.clone(), listener).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    if args.watch || config.server.watch {
        watch::start(shared.clone(), registry.dir().to_path_buf()).map_err(|e| e.to_string())?;
    }

    log::info!(
        "listening on {addr} ({loops} event loops, {mode:?} accept, {threads} pool threads)"
    );
    if process::worker::is_worker() {
        // The leader prints `listening on` once its first worker is ready.
        process::worker::ready();
    } else {
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on {addr}");
        let _ = stdout.flush();
    }

    for h in handles {
        let _ = h.join();
    }
    let grace = Duration::from_millis(config.server.shutdown_timeout_ms);
    if let Some(admin) = &admin_serving {
        admin.finish(Instant::now() + grace);
    }
    scheduler.shutdown(grace);
    registry.clear();
    drop(admin_file);
    log::info!("shutdown complete");
    Ok(())
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
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), String> {
    let mut listeners = Vec::with_capacity(loops);
    let first = sys::listen(SocketAddr::new(ip, port), mode == AcceptMode::Reuseport)
        .map_err(|e| format!("cannot listen on {ip}:{}: {e}", port))?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    listeners.push(first);
    for _ in 1..loops {
        let l = match mode {
            AcceptMode::Reuseport => sys::listen(addr, true),
            AcceptMode::Shared => listeners[0].try_clone(),
        }
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

/// A worker's listeners, inherited from its leader: one per event loop
/// (the loop count follows them), or a single one every loop shares.
fn inherited_listeners(
    inherited: Vec<std::net::TcpListener>,
    loops: &mut usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), String> {
    let first = inherited.first().ok_or("the leader passed no listener")?;
    let addr = first.local_addr().map_err(|e| e.to_string())?;
    if inherited.len() > 1 {
        *loops = inherited.len();
        return Ok((inherited, addr));
    }
    let mut listeners = inherited;
    for _ in 1..*loops {
        let l = listeners[0].try_clone().map_err(|e| e.to_string())?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

/// Loads the TLS settings; `None` when TLS is off.
fn tls_load(
    tls: &tls::Tls,
    settings: &tls::TlsSettings,
    base: &std::path::Path,
) -> Result<Option<usize>, tls::TlsError> {
    let n = tls.load(settings, base)?;
    Ok(settings.enabled().then_some(n))
}

/// SIGHUP reloads; SIGTERM and SIGINT shut down gracefully.
fn signals(shared: Arc<Shared>) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
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
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
