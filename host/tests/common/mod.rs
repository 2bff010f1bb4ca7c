//! Shared helpers for the integration tests: start the real `switchyard`
//! binary on an ephemeral loopback port in a fresh temporary directory, talk
//! HTTP and admin commands to it over real sockets, read its log.
//!
//! One file per concern; everything is re-exported here, so a test writes
//! `use common::{Server, ServerBuilder, ...}`. Each test binary declares it
//! as `pub mod common;`: its items are then public API of the binary, not
//! dead code in the binaries that use only part of it.
//!
//! * `server`: starting the binary ([`ServerBuilder`], [`Server`]) and the
//!   paths it uses (workspace, module files, temporary directories).
//! * `client`: [`Client`] and the HTTP [`Response`] it reads.
//! * `rpc`: [`Rpc`], the JSON-RPC client of the rpc module's line
//!   transport, and the `POST /rpc` helpers.
//! * `status`: the parsed `STATUS` and `RELOAD` replies.
//! * `upstreams`: upstream servers for the proxy tests.
//! * `random`: deterministic test data and the hash that checks it.
//! * `process`: memory, processes and descriptors read from `/proc`.
//! * `supervision`: the leader/worker tests' helpers.

pub mod client;
pub mod process;
pub mod random;
pub mod rpc;
pub mod server;
pub mod status;
pub mod supervision;
pub mod upstreams;

pub use client::*;
pub use rpc::*;
pub use server::*;
pub use status::*;
pub use {process::*, random::*, upstreams::*};
