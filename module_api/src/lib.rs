//! # Writing a Switchyard module
//!
//! A module is a `cdylib` crate that the `switchyard` host loads at run time
//! from its `modules/` directory. The host reads the first bytes of every
//! connection, picks the module whose prefix matches (longest wins) and
//! calls it with the buffered input. This crate is the only one a module
//! author needs:
//!
//! * the [`Handler`] trait you implement and the [`export_module!`] macro
//!   that exports it;
//! * [`Out`], the buffer replies are written into;
//! * [`http`] (request parsing, response writing, and [`http::framing`],
//!   the one strict, incremental HTTP/1.1 framing every HTTP reader uses)
//!   and [`web`] (a router with request and response types built on it);
//! * [`tls`] (the ClientHello's SNI name);
//! * `testing` (feature `testing`): a fake host and a harness that drive
//!   your handler in a plain `cargo test`;
//! * the stable ABI ([`abi`]) the host checks at load time. A module never
//!   names abi_stable itself: [`export_module!`] reaches it through this
//!   crate, so a module is always built against the host's version.
//!
//! ## Start here
//!
//! `make new-module NAME=hello` copies `templates/module/` (a complete,
//! tested HTTP module) to `modules/hello/`, renames it and adds it to the
//! workspace. `make` builds and installs it; `curl localhost:8080/hello/`
//! answers. `cargo test -p hello` runs its tests.
//!
//! ## The contract
//!
//! * `manifest()` says who you are: name, version, the byte prefixes you
//!   bind (e.g. `b"GET /hello"`), your [`Protocol`] and [`ReloadMode`], and
//!   whether you defer work ([`Manifest::defers`]): the host refuses a
//!   [`Verdict::defer`] from a module that did not declare it.
//! * `start(ctx)` builds one *generation* of your module from its config
//!   (`[modules.<name>]` in the host's TOML config, as JSON) and from the
//!   previous generation's saved state. Return `Err` to refuse the load.
//! * [`Handler::on_message`] gets the connection's buffered bytes, starting
//!   at a message boundary. Return [`Verdict::NEED_MORE`] until a whole
//!   message is there; then append the reply to `out` and return
//!   [`Verdict::done`] with the message's length (the host routes the next
//!   message afresh) or [`Verdict::close`]. Never block here: return
//!   [`Verdict::defer`] and do blocking work in [`Handler::on_deferred`],
//!   which runs on the host's worker pool (`-threads N`).
//! * A panic never crosses into the host: it is caught, answered with the
//!   protocol's error (HTTP 500) and counted as a fault in `STATUS`.
//! * `log` macros go to the host's log.
//!
//! ## Writing the reply: [`Out`]
//!
//! `out` is the host's buffer, seen as an [`Out`]. Append with
//! `out.extend_from_slice(..)`, [`Out::put`], `write!` (`io::Write` or
//! `fmt::Write`): each is one `memcpy`. Everything else of the underlying
//! `RVec<u8>` (`len`, `truncate`, ...) is there through `Deref`, and a
//! helper taking `&mut RVec<u8>` accepts `out` unchanged.
//!
//! ## Which HTTP level to use
//!
//! From the least to the most code of your own:
//!
//! 1. [`http::handle_simple`]: one closure gets each complete request and
//!    returns `(status, content type, body)`. Framing, refusals (400, 413,
//!    414, 431, 501), HEAD and keep-alive are done for you. It runs on the
//!    event loop, so the closure must not block; no routing, bodies up to
//!    1 MiB ([`http::SIMPLE_LIMITS`]), replies built whole in memory.
//! 2. [`web::Router`]: method and path patterns to handlers, path
//!    parameters, query strings, forms, JSON, cookies, escaped HTML; 404,
//!    405 and OPTIONS answered for you. By default each request is deferred
//!    to the worker pool (so handlers may block on a database; declare
//!    `.defers(true)`); [`web::Router::inline`] answers on the event loop.
//!    Bodies are buffered whole, up to [`web::Limits::max_body`] (64 KiB by
//!    default); no streaming and no interim `100 Continue`.
//! 3. [`http::framing`] directly: you get the framing verdict (partial,
//!    complete with its length, refused with its status) and do the rest:
//!    parsing, writing, keep-alive, file bodies ([`Verdict::with_file`]),
//!    shared bodies, pipelining. The `http` module (static files) is built
//!    this way; use it when the two levels above get in the way.
//!
//! ## WebSocket
//!
//! [`ws`] has everything RFC 6455 asks of a server, without sockets:
//!
//! 1. Bind the upgrade's prefix (`.bind("GET /chat/ws")`). In
//!    `on_message`, parse the head with [`http::parse_request`] (return
//!    [`Verdict::NEED_MORE`] while it is partial), check the path, call
//!    [`ws::handshake::check`] (it answers 400, 405 or 426 through
//!    [`ws::handshake::Refusal::write`]) and [`ws::handshake::origin_allowed`]
//!    (refuse a foreign browser `Origin` with 403: a page elsewhere must not
//!    use the user's browser to reach you), then write
//!    [`ws::handshake::write_accept`] and return
//!    `Verdict::keep(head_len).watch_close()`. Remember the connection
//!    id as a WebSocket one, with a [`ws::Reassembler`] of its own.
//! 2. From then on the connection's bytes come to you. Call
//!    [`ws::Reassembler::next`] on the input until it says
//!    [`ws::Step::Partial`] (leave those bytes with the host, which bounds
//!    them by `max_message_size`), summing `consumed`; act on each
//!    [`ws::Event`]: a text or binary message, a ping (answer a pong with
//!    [`ws::frame::encode`]), a close (echo its code, then
//!    [`Verdict::close`]). On an error ([`ws::Fail`]) send a close frame
//!    with its code ([`ws::frame::close_payload`]) and close. Return
//!    `Verdict::keep(consumed).watch_close()`.
//! 3. Frames you send are unmasked: [`ws::frame::encode`], or
//!    [`ws::frame::Header`] followed by the payload when it is already
//!    in place. Pushes ([`Host::push_many`]) must be frames too.
//!
//! The rpc module's `modules/rpc/src/ws.rs` is a complete example
//! (deferred replies, pushes, handover across a reload).
//!
//! ## Testing
//!
//! With `switchyard_module_api = { path = "..", features = ["testing"] }`
//! in `[dev-dependencies]`, `testing::Harness::start(manifest, start,
//! config)` starts your module on a `testing::FakeHost` (captured log
//! lines and pushes, stubs for calls to other modules, client-certificate
//! names, a temporary data directory). `harness.send(request)` returns the
//! verdict and bytes, and `reply.http()` parses a response. Panics,
//! deferral and undeclared-defer refusals behave as in the host.
//!
//! ## A complete module
//!
//! `Cargo.toml` (the module's only dependency is this crate):
//!
//! ```toml
//! [package]
//! name = "hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! switchyard_module_api = { path = "../../module_api" }
//!
//! [dev-dependencies]
//! switchyard_module_api = { path = "../../module_api", features = ["testing"] }
//! ```
//!
//! (`rlib` lets the crate's own `tests/` link it.) `src/lib.rs`:
//!
//! ```
//! use module_api::{http, ConnInfo, Handler, Manifest, Out, StartContext, Verdict};
//!
//! pub fn manifest() -> Manifest {
//!     Manifest::new("hello", env!("CARGO_PKG_VERSION")).bind("GET /hello")
//! }
//!
//! pub struct Hello {
//!     greeting: String,
//! }
//!
//! pub fn start(ctx: StartContext<'_>) -> Result<Hello, String> {
//!     let greeting = ctx.config["greeting"].as_str().unwrap_or("hello").to_string();
//!     Ok(Hello { greeting })
//! }
//!
//! impl Handler for Hello {
//!     fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
//!         // Waits for a whole request (strict HTTP/1.1 framing, bodies
//!         // included), answers a malformed one with its status and closes,
//!         // and handles keep-alive (a draining host closes after this).
//!         http::handle_simple(conn, input, out, |_req, _body| {
//!             (200, "text/plain", self.greeting.as_bytes().to_vec())
//!         })
//!     }
//! }
//!
//! module_api::export_module!(manifest = manifest, start = start);
//! # fn main() {
//! #     use module_api::testing::Harness;
//! #     let h = Harness::start(manifest, start, serde_json::json!({})).unwrap();
//! #     let page = h.send(b"GET /hello HTTP/1.1\r\n\r\n").http();
//! #     assert_eq!((page.status, page.body.as_slice()), (200, &b"hello"[..]));
//! # }
//! ```
//!
//! Outside this repository's `make`, build it with `cargo build --release`,
//! copy `target/release/libhello.so` into the host's `modules/` directory
//! under a temporary name, rename it to `hello.so` and send `RELOAD` (or
//! run the host with `--watch`).

pub mod abi;
pub mod export;
pub mod http;
mod out;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod web;
pub mod ws;

/// abi_stable, re-exported so that [`export_module!`] and a module's code
/// use the very version the host was built with; a module crate never
/// depends on it directly.
#[doc(hidden)]
pub use abi_stable;

pub use abi::{
    Action, CallStatus, ConnInfo, FileBody, JobSpec, LogLevel, Manifest, Protocol, ProxyEvent,
    ProxyEventKind, ReloadMode, SharedBody, Upstream, Verdict,
};
pub use abi_stable::std_types::RVec;
pub use export::{Handler, StartContext};
pub use out::Out;

use std::path::PathBuf;

use abi::HostBox;

/// The host's services as a module sees them.
pub struct Host {
    raw: HostBox,
}

impl Host {
    pub(crate) fn new(raw: HostBox) -> Host {
        Host { raw }
    }

    /// The raw ABI handle.
    pub fn raw(&self) -> &HostBox {
        &self.raw
    }

    /// The module's data directory; the host creates it before `start`.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.raw.data_dir().as_str())
    }

    /// Queues bytes for a connection (server push); see
    /// [`abi::HostServices::push`].
    pub fn push(&self, conn: u64, data: &[u8], overflow_notice: &[u8]) -> bool {
        use abi_stable::std_types::RSlice;
        self.raw.push(
            conn,
            RSlice::from_slice(data),
            RSlice::from_slice(overflow_notice),
        )
    }

    /// The names on the verified client certificate of connection `conn`
    /// (mutual TLS); empty without one. See
    /// [`abi::HostServices::peer_identity`].
    pub fn peer_identity(&self, conn: &ConnInfo) -> Vec<String> {
        self.raw
            .peer_identity(conn.id)
            .into_iter()
            .map(|s| s.into_string())
            .collect()
    }

    /// Queues the same bytes for many connections, copied once; see
    /// [`abi::HostServices::push_many`]. Returns how many exist.
    pub fn push_many(&self, conns: &[u64], data: &[u8], overflow_notice: &[u8]) -> usize {
        use abi_stable::std_types::RSlice;
        self.raw.push_many(
            RSlice::from_slice(conns),
            RSlice::from_slice(data),
            RSlice::from_slice(overflow_notice),
        ) as usize
    }

    /// Runs `f`, a wait that is not a hang (a group commit, a hand-over,
    /// another thread's answer), with the host's hang detection paused for
    /// the calling thread; see [`abi::HostServices::wait_begin`]. Keep
    /// loops and computation outside: a stuck computation must still be
    /// caught.
    pub fn wait<T>(&self, f: impl FnOnce() -> T) -> T {
        struct End<'a>(&'a HostBox, u64);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                self.0.wait_end(self.1);
            }
        }
        let _end = End(&self.raw, self.raw.wait_begin());
        f()
    }

    /// Calls another module in-process with one complete message; see
    /// [`abi::HostServices::call`]. Blocks: use it from `on_deferred` or a
    /// job only.
    pub fn call(&self, module: &str, input: &[u8]) -> Result<Vec<u8>, CallStatus> {
        use abi_stable::std_types::{RSlice, RStr};
        let mut out = RVec::new();
        match self
            .raw
            .call(RStr::from_str(module), RSlice::from_slice(input), &mut out)
        {
            CallStatus::Ok => Ok(out.into_vec()),
            other => Err(other),
        }
    }
}

impl Manifest {
    /// A manifest with no bindings, `overlap` reload, HTTP protocol.
    pub fn new(name: &str, version: &str) -> Manifest {
        Manifest {
            name: name.into(),
            version: version.into(),
            bindings: RVec::new(),
            reload: ReloadMode::Overlap,
            protocol: Protocol::Http,
            defers: false,
        }
    }

    /// Adds a prefix binding.
    pub fn bind(mut self, prefix: impl AsRef<[u8]>) -> Manifest {
        self.bindings.push(prefix.as_ref().into());
        self
    }

    /// Sets the protocol.
    pub fn protocol(mut self, protocol: Protocol) -> Manifest {
        self.protocol = protocol;
        self
    }

    /// Sets the reload mode.
    pub fn reload(mut self, mode: ReloadMode) -> Manifest {
        self.reload = mode;
        self
    }

    /// Declares that the module defers work to the pool.
    pub fn defers(mut self, defers: bool) -> Manifest {
        self.defers = defers;
        self
    }
}
