//! Hostile clients: one test (or more) per way a single client could hurt
//! the others, each against the real binary over real sockets. The
//! numbered items are those of the hardening work (reply amplification,
//! dying event loops, kv limits, pub/sub cost, timeouts, descriptors, HTTP
//! strictness, ABI soundness, hang detection, reload memory, push leaks,
//! connection slots, routing details, disk).
//!
//! One file per area, so each reads on its own.

#[path = "../common/mod.rs"]
pub mod common;

mod admin;
mod host;
mod http;
mod kv;
mod rpc;
mod rpc_access;
mod supervisor;
