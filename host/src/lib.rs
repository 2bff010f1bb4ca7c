//! `switchyard`: a hot-reloadable module router (the host as a library;
//! `main.rs` only calls [`main`]).
//!
//! The parts, each in its own file:
//! * [`server`]: startup, top-down: every long-lived value built once, in
//!   order, then the threads started; and the graceful shutdown.
//! * [`state`]: the state the loops, admin commands and control link share.
//! * [`cli`] and [`config`]: command line and TOML configuration.
//! * [`generation`]: one started instance of a module, and the one guarded
//!   way into its code.
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
//! * [`scheduler`]: modules' scheduled jobs, run on job threads;
//!   [`schedule`]: what a schedule says and when it is due (pure).
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

pub mod access;
pub mod admin;
pub mod admin_socket;
pub mod calls;
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
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod services;
pub mod state;
pub mod sys;
pub mod tls;
pub mod token;
pub mod watch;

use std::process::ExitCode;

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
    match server::run(args) {
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
