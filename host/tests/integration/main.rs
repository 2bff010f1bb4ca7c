//! The integration tests against the real `switchyard` binary (and the
//! source-tree checks), one module per area, all in ONE test binary.
//!
//! Why one binary: each file under `host/tests/` is a crate of its own,
//! compiled at the release profile with `common/` inside it and linked
//! with thin LTO; 18 of them cost CI minutes of compiling and linking for
//! a few seconds of code each. Here `common` is compiled once, and libtest
//! fills both test threads from every area instead of idling at the tail
//! of each small binary. Tests still start their own servers (each in its
//! own temporary directory, on port 0), so they do not see each other.
//!
//! Run one area with its module path, e.g.
//! `cargo test --release -p switchyard --test integration rpc_access::`.
//!
//! Kept out, as binaries of their own: `in_process.rs` (it runs a server
//! inside the test process, whose signal handlers and panic hook are
//! process-wide), `hostile/` (the hostile-client suite) and new areas'
//! files next to them.

#[path = "../common/mod.rs"]
pub mod common;

pub mod admin;
pub mod admin_socket;
pub mod attribution;
pub mod cli;
pub mod cron;
pub mod faults;
pub mod layering;
pub mod limits;
pub mod new_module;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod rpc;
pub mod rpc_access;
pub mod rpc_bus;
pub mod rpc_client;
pub mod rpc_kv;
pub mod rpc_origin;
pub mod rpc_streams;
pub mod rpc_ws;
pub mod static_files;
pub mod supervisor;
pub mod tls;
pub mod webapp;
