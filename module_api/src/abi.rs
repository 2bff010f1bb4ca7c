//! The stable ABI between the host and a module.
//!
//! Everything here crosses the `dlopen` boundary, so every type is
//! `#[repr(C)]` and derives [`StableAbi`]: the host checks the layout of the
//! whole tree of types when it loads a library and refuses a module whose
//! layout differs, naming the mismatch. Module authors normally do not touch
//! this file; they implement [`crate::Handler`] and use
//! [`crate::export_module!`].
//!
//! Evolution rules: [`ModuleLib`] is a prefix type, so new fields may be
//! appended after the last one (old modules then lack them and the host must
//! check with the `*_opt` accessors). The [`Module`] and [`HostServices`]
//! traits carry a `last_prefix_field` method for the same reason. Anything
//! else that changes is a breaking change and bumps this crate's minor
//! version, which the host refuses with a version mismatch.

#![allow(non_local_definitions)] // emitted by `#[sabi_trait]`

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// How the host swaps a module's generations on reload.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    /// The new generation starts beside the old one; in-flight messages
    /// finish on the old one. Zero failed requests. The default.
    Overlap = 0,
    /// Only one generation may run at a time (it holds an exclusive
    /// resource). New messages get "unavailable, retry" while it reloads.
    Exclusive = 1,
}

/// The wire protocol a module speaks, so the host can answer for it
/// ("503 Service Unavailable" for HTTP, an error object for JSON-RPC).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x requests.
    Http = 0,
    /// Newline-delimited JSON-RPC 2.0.
    JsonRpc = 1,
    /// Anything else: the host can only close the connection.
    Raw = 2,
}

/// What a module declares about itself; read once per load.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Manifest {
    /// Module name; also the name of its `[modules.<name>]` config table and
    /// what `RELOAD <name>` and `STATUS` call it.
    pub name: RString,
    /// The module's own version, shown by `STATUS` and `RELOAD`.
    pub version: RString,
    /// Byte prefixes that route a connection's next message to this module.
    pub bindings: RVec<RVec<u8>>,
    /// How reloads of this module are sequenced.
    pub reload: ReloadMode,
    /// The protocol the module speaks (for replies the host makes for it).
    pub protocol: Protocol,
    /// Whether the module ever answers [`Action::Defer`].
    pub defers: bool,
}

/// What the host should do after a module call.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The message is incomplete: call again when more bytes arrived.
    /// Nothing may be written to `out` and `consumed` must be 0.
    NeedMore = 0,
    /// The response is in `out` (and `file`); the first `consumed` input
    /// bytes were the message. The connection goes back to the router,
    /// which routes the next message afresh (keep-alive, pipelining).
    Done = 1,
    /// Like `Done`, but close the connection once the output is flushed.
    Close = 2,
    /// The first `consumed` bytes are a complete message that must be
    /// handled off the event loop: the host calls
    /// [`Module::on_deferred`] with exactly those bytes on its worker pool.
    /// Nothing may be written to `out`.
    Defer = 3,
    /// Like `Done`, but the connection's next message comes to this module
    /// again whatever its first bytes (a stream protocol that owns the
    /// connection, e.g. JSON-RPC lines). After a reload it goes to the new
    /// generation.
    Keep = 4,
    /// Hand the connection to an upstream server: the host connects to
    /// `upstream` without blocking, sends `out` first (e.g. a PROXY protocol
    /// header), then every byte it has buffered from the client, and relays
    /// both ways until both sides closed. `consumed` must be 0. The host
    /// reports the outcome through [`Module::proxy_event`]; the connection
    /// stays on this generation until it closes.
    Proxy = 5,
}

/// An upstream server's address for [`Action::Proxy`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// IPv4 in the first 4 bytes, or IPv6.
    pub ip: [u8; 16],
    pub port: u16,
    pub is_v6: bool,
}

impl Upstream {
    /// No upstream.
    pub const NONE: Upstream = Upstream {
        ip: [0; 16],
        port: 0,
        is_v6: false,
    };

    /// The upstream at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Upstream {
        let (ip, port, is_v6) = encode_addr(addr);
        Upstream { ip, port, is_v6 }
    }

    /// Its socket address.
    pub fn addr(&self) -> std::net::SocketAddr {
        decode_addr(self.ip, self.port, self.is_v6)
    }
}

/// What happened to a proxied connection (see [`Module::proxy_event`]).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyEventKind {
    /// The upstream accepted the connection; relaying started.
    Connected = 0,
    /// Connecting failed (refused, unreachable or timed out). The verdict
    /// returned for this event may name another upstream (`Proxy`) or give
    /// up (`Close`, with an optional reply to the client in `out`).
    Failed = 1,
    /// The session ended; the byte counts are final.
    Closed = 2,
}

/// A proxied connection's event.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyEvent {
    pub kind: ProxyEventKind,
    pub upstream: Upstream,
    /// Bytes relayed from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes relayed from the upstream to the client.
    pub bytes_down: u64,
}

/// A byte range of an open file that the host sends after `out` (with
/// `sendfile(2)` where the platform has it). Either the body owns `fd` and
/// closes it when dropped ([`FileBody::owned`]), or the module keeps the
/// descriptor open in a shared owner and the host calls `release(owner)`
/// once it is done ([`FileBody::from_arc`]: no `dup`/`close` per response).
///
/// The fields are private, so safe code cannot make the host close or read
/// a descriptor the body does not own:
///
/// ```compile_fail
/// let body = module_api::FileBody { fd: 0, offset: 0, len: 10, owner: std::ptr::null(), release: None };
/// ```
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FileBody {
    /// Open file descriptor, or -1 for none.
    fd: i32,
    /// First byte to send.
    offset: u64,
    /// Number of bytes to send.
    len: u64,
    /// Passed to `release`.
    owner: *const u8,
    /// Frees `owner` (which keeps `fd` open); `None` when the body owns
    /// `fd` itself.
    release: Option<extern "C" fn(owner: *const u8)>,
}

// SAFETY: `from_arc` only accepts owners that are `Send + Sync`,
// `from_raw_parts` makes its caller promise the same, and an owned
// descriptor may be closed from any thread.
unsafe impl Send for FileBody {}

impl FileBody {
    /// No file.
    pub const NONE: FileBody = FileBody {
        fd: -1,
        offset: 0,
        len: 0,
        owner: std::ptr::null(),
        release: None,
    };

    /// Sends `len` bytes from `offset` of `file`, which the body now owns.
    #[cfg(unix)]
    pub fn owned(file: std::fs::File, offset: u64, len: u64) -> FileBody {
        use std::os::fd::IntoRawFd;
        FileBody {
            fd: file.into_raw_fd(),
            offset,
            len,
            owner: std::ptr::null(),
            release: None,
        }
    }

    /// Sends `len` bytes from `offset` of the file `owner` keeps open; the
    /// `Arc` is released when the host has sent them.
    #[cfg(unix)]
    pub fn from_arc<T>(owner: std::sync::Arc<T>, offset: u64, len: u64) -> FileBody
    where
        T: std::os::fd::AsFd + Send + Sync + 'static,
    {
        use std::os::fd::AsRawFd;
        extern "C" fn release<T>(owner: *const u8) {
            // SAFETY: `owner` came from `Arc::into_raw` below and is
            // released exactly once, by `Drop`.
            unsafe { drop(std::sync::Arc::from_raw(owner as *const T)) }
        }
        let fd = owner.as_fd().as_raw_fd();
        FileBody {
            fd,
            offset,
            len,
            owner: std::sync::Arc::into_raw(owner) as *const u8,
            release: Some(release::<T>),
        }
    }

    /// A body from raw parts, for hosts and foreign-language glue.
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor (or -1 for none) that stays open
    /// until the body is dropped. With `release` set, `owner` keeps `fd`
    /// open, may be released from any thread, and `release(owner)` is
    /// called exactly once, on drop; without it, the body owns `fd` and
    /// closes it on drop, so nothing else may close it.
    pub unsafe fn from_raw_parts(
        fd: i32,
        offset: u64,
        len: u64,
        owner: *const u8,
        release: Option<extern "C" fn(owner: *const u8)>,
    ) -> FileBody {
        FileBody {
            fd,
            offset,
            len,
            owner,
            release,
        }
    }

    /// Whether there is a file to send.
    pub fn is_some(&self) -> bool {
        self.fd >= 0
    }

    /// The descriptor to read from (-1 for none); it stays open while the
    /// body lives.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The first byte to send.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes to send.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Two file bodies are equal when they send the same range of the same
/// descriptor.
impl PartialEq for FileBody {
    fn eq(&self, other: &FileBody) -> bool {
        (self.fd, self.offset, self.len) == (other.fd, other.offset, other.len)
    }
}

impl Eq for FileBody {}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.owner);
        } else if self.fd >= 0 {
            #[cfg(unix)]
            // SAFETY: without an owner the body owns `fd` (see `owned`).
            drop(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(self.fd) });
        }
        self.fd = -1;
    }
}

/// Bytes owned by the module that the host sends after `out` without
/// copying them (a cached file, say). The host calls `release(owner)` once
/// it is done with them, on any thread. Build one with
/// [`SharedBody::from_arc`].
///
/// The fields are private, so safe code cannot point the host at memory
/// it does not own:
///
/// ```compile_fail
/// let body = module_api::SharedBody {
///     ptr: 0x1000 as *const u8,
///     len: 1 << 30,
///     owner: std::ptr::null(),
///     release: None,
/// };
/// ```
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct SharedBody {
    /// First byte, valid until `release` is called.
    ptr: *const u8,
    /// Number of bytes.
    len: u64,
    /// Passed to `release`.
    owner: *const u8,
    /// Frees `owner`; `None` for no body.
    release: Option<extern "C" fn(owner: *const u8)>,
}

// SAFETY: `from_arc` only accepts owners that are `Send + Sync`,
// `from_raw_parts` makes its caller promise the same, and the bytes are
// immutable while shared.
unsafe impl Send for SharedBody {}

impl SharedBody {
    /// No body.
    pub const NONE: SharedBody = SharedBody {
        ptr: std::ptr::null(),
        len: 0,
        owner: std::ptr::null(),
        release: None,
    };

    /// Shares `owner`'s bytes in `range` with the host; the `Arc` is
    /// released when the host has sent them.
    pub fn from_arc<T>(owner: std::sync::Arc<T>, range: std::ops::Range<usize>) -> SharedBody
    where
        T: AsRef<[u8]> + Send + Sync + 'static,
    {
        extern "C" fn release<T>(owner: *const u8) {
            // SAFETY: `owner` came from `Arc::into_raw` below and is
            // released exactly once by the host.
            unsafe { drop(std::sync::Arc::from_raw(owner as *const T)) }
        }
        let bytes = &(*owner).as_ref()[range];
        let (ptr, len) = (bytes.as_ptr(), bytes.len() as u64);
        SharedBody {
            ptr,
            len,
            owner: std::sync::Arc::into_raw(owner) as *const u8,
            release: Some(release::<T>),
        }
    }

    /// A body from raw parts, for hosts and foreign-language glue.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` must be readable and unchanged until
    /// `release(owner)` is called, which happens exactly once, on drop,
    /// possibly on another thread. With `release` `None` the body is empty
    /// whatever `ptr` and `len` say.
    pub unsafe fn from_raw_parts(
        ptr: *const u8,
        len: u64,
        owner: *const u8,
        release: Option<extern "C" fn(owner: *const u8)>,
    ) -> SharedBody {
        if release.is_none() {
            return SharedBody::NONE;
        }
        SharedBody {
            ptr,
            len,
            owner,
            release,
        }
    }

    /// Whether there is a body.
    pub fn is_some(&self) -> bool {
        self.release.is_some()
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The shared bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.ptr.is_null() || self.release.is_none() {
            return &[];
        }
        // SAFETY: `ptr..ptr+len` stays valid until `release` (see type doc).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len as usize) }
    }
}

/// Two bodies are equal when they share the same bytes.
impl PartialEq for SharedBody {
    fn eq(&self, other: &SharedBody) -> bool {
        self.ptr == other.ptr && self.len == other.len && self.is_some() == other.is_some()
    }
}

impl Eq for SharedBody {}

impl Drop for SharedBody {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.owner);
        }
    }
}

/// A module's answer to one call.
#[repr(C)]
#[derive(StableAbi, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What to do next.
    pub action: Action,
    /// Input bytes that made up the message (see [`Action`]).
    pub consumed: u64,
    /// Optional shared bytes sent after `out` (before `file`).
    pub body: SharedBody,
    /// Optional file body sent after `out` and `body`.
    pub file: FileBody,
    /// Set by the SDK when the module panicked: the host counts a fault.
    pub fault: bool,
    /// Ask for [`Module::on_close`] when this connection closes, even if it
    /// is then between messages (e.g. it subscribed to pushes).
    pub watch_close: bool,
    /// Where [`Action::Proxy`] connects.
    pub upstream: Upstream,
}

impl Verdict {
    /// Wait for more input.
    pub const NEED_MORE: Verdict = Verdict {
        action: Action::NeedMore,
        consumed: 0,
        body: SharedBody::NONE,
        file: FileBody::NONE,
        fault: false,
        watch_close: false,
        upstream: Upstream::NONE,
    };

    /// The message was `consumed` bytes and its answer is in `out`.
    pub fn done(consumed: usize) -> Verdict {
        Verdict {
            action: Action::Done,
            consumed: consumed as u64,
            ..Self::NEED_MORE
        }
    }

    /// Like [`Verdict::done`], but keep the connection with this module.
    pub fn keep(consumed: usize) -> Verdict {
        Verdict {
            action: Action::Keep,
            consumed: consumed as u64,
            ..Self::NEED_MORE
        }
    }

    /// Answer, then close the connection.
    pub fn close(consumed: usize) -> Verdict {
        Verdict {
            action: Action::Close,
            consumed: consumed as u64,
            ..Self::NEED_MORE
        }
    }

    /// Handle the first `consumed` bytes on the worker pool.
    pub fn defer(consumed: usize) -> Verdict {
        Verdict {
            action: Action::Defer,
            consumed: consumed as u64,
            ..Self::NEED_MORE
        }
    }

    /// Attach a file body (sent after `out`).
    pub fn with_file(mut self, file: FileBody) -> Verdict {
        self.file = file;
        self
    }

    /// Relay the connection to `upstream` (see [`Action::Proxy`]).
    pub fn proxy(upstream: std::net::SocketAddr) -> Verdict {
        Verdict {
            action: Action::Proxy,
            upstream: Upstream::new(upstream),
            ..Self::NEED_MORE
        }
    }

    /// Ask for `on_close` when this connection closes.
    pub fn watch_close(mut self) -> Verdict {
        self.watch_close = true;
        self
    }

    /// Attach shared bytes (sent after `out`, without a copy).
    pub fn with_body(mut self, body: SharedBody) -> Verdict {
        self.body = body;
        self
    }
}

/// The connection a call is about. `id` is unique for the life of the
/// process and is what [`HostServices::push`] takes.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Host-wide unique connection id.
    pub id: u64,
    /// Peer address: IPv4 in the first 4 bytes, or IPv6.
    pub peer_ip: [u8; 16],
    /// Peer port.
    pub peer_port: u16,
    /// `true` when `peer_ip` holds an IPv6 address.
    pub is_v6: bool,
    /// `true` when the host terminated TLS for this connection.
    pub tls: bool,
    /// The local (destination) address the client connected to, in the
    /// same encoding as the peer; all zero when unknown.
    pub local_ip: [u8; 16],
    pub local_port: u16,
    pub local_is_v6: bool,
    /// `true` once the host is draining (shutdown or `UPGRADE`): the
    /// connection closes after the message being answered, so a
    /// request/response protocol should tell its client so (HTTP:
    /// `Connection: close`) and the client reconnects to the new worker
    /// instead of racing a close.
    pub draining: bool,
    /// The output budget for this call: once `out.len()` reaches this,
    /// answer no further pipelined message in the same call. Return the
    /// verdict for the messages answered so far (`consumed` = their
    /// length); the host calls again with the rest once the connection's
    /// unsent output has drained below its high-water mark. The first
    /// message of a call is always answered, so a call makes progress.
    /// `u64::MAX` when the caller sets no limit.
    pub out_limit: u64,
    /// `true` when the peer is a socket this same server opened as a proxy
    /// upstream (a proxy route pointing back at our own port): its address
    /// is local, but the client behind it is not. Never trust such a
    /// connection by its address (the host's admin checks do not; the rpc
    /// bus's protected mode does not).
    pub self_forwarded: bool,
}

impl ConnInfo {
    /// The peer's socket address.
    pub fn peer(&self) -> std::net::SocketAddr {
        decode_addr(self.peer_ip, self.peer_port, self.is_v6)
    }

    /// Builds the info for a peer address.
    pub fn new(id: u64, peer: std::net::SocketAddr, tls: bool) -> ConnInfo {
        let (peer_ip, peer_port, is_v6) = encode_addr(peer);
        ConnInfo {
            id,
            peer_ip,
            peer_port,
            is_v6,
            tls,
            local_ip: [0; 16],
            local_port: 0,
            local_is_v6: false,
            draining: false,
            out_limit: u64::MAX,
            self_forwarded: false,
        }
    }

    /// Whether `out` has reached this call's output budget (see
    /// [`ConnInfo::out_limit`]).
    pub fn out_full(&self, out_len: usize) -> bool {
        out_len as u64 >= self.out_limit
    }

    /// Sets the local address.
    pub fn with_local(mut self, local: std::net::SocketAddr) -> ConnInfo {
        (self.local_ip, self.local_port, self.local_is_v6) = encode_addr(local);
        self
    }

    /// The local address, when the host knows it.
    pub fn local(&self) -> Option<std::net::SocketAddr> {
        if self.local_port == 0 && self.local_ip == [0; 16] {
            return None;
        }
        Some(decode_addr(
            self.local_ip,
            self.local_port,
            self.local_is_v6,
        ))
    }
}

/// A socket address as the ABI carries it: IPv4 in the first 4 bytes of
/// `ip`, or IPv6, plus the port.
fn encode_addr(addr: std::net::SocketAddr) -> ([u8; 16], u16, bool) {
    let mut ip = [0u8; 16];
    let is_v6 = match addr.ip() {
        std::net::IpAddr::V4(v4) => {
            ip[..4].copy_from_slice(&v4.octets());
            false
        }
        std::net::IpAddr::V6(v6) => {
            ip = v6.octets();
            true
        }
    };
    (ip, addr.port(), is_v6)
}

/// The inverse of [`encode_addr`].
fn decode_addr(ip: [u8; 16], port: u16, is_v6: bool) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = if is_v6 {
        IpAddr::V6(Ipv6Addr::from(ip))
    } else {
        IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
    };
    std::net::SocketAddr::new(ip, port)
}

/// Log levels, as in the `log` crate.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Services the host offers a running module.
#[sabi_trait]
pub trait HostServices: Send + Sync {
    /// Writes a record into the host's log, attributed to the module.
    fn log(&self, level: LogLevel, message: RStr<'_>);
    /// Whether a record at `level` would be written at all.
    fn log_enabled(&self, level: LogLevel) -> bool;
    /// The module's data directory (created by the host).
    fn data_dir(&self) -> RString;
    /// Queues `data` for connection `conn` (server push), to be written
    /// between messages. Returns `false` when no such connection exists.
    /// When the connection's unsent output exceeds the host's push backlog
    /// limit, the host writes `overflow_notice` instead and closes it (the
    /// module then sees `on_close`). Never blocks.
    fn push(&self, conn: u64, data: RSlice<'_, u8>, overflow_notice: RSlice<'_, u8>) -> bool;
    /// Calls another module's request/response entry in-process with one
    /// complete message, as if it came from a loopback connection; its reply
    /// is appended to `out`. May block (deferred handlers run inline), so
    /// call it only from `on_deferred` or a job.
    fn call(&self, module: RStr<'_>, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> CallStatus;
    /// Like [`HostServices::push`] for many connections at once: the host
    /// copies `data` once and shares it between them, and checks each
    /// connection's backlog before queueing a copy for its socket. Returns
    /// how many of `conns` exist. Never blocks.
    fn push_many(
        &self,
        conns: RSlice<'_, u64>,
        data: RSlice<'_, u8>,
        overflow_notice: RSlice<'_, u8>,
    ) -> u32;
    /// The calling thread starts a wait that is not a hang (waiting for a
    /// group commit, a hand-over, another thread's answer): the host's
    /// hang detection leaves it alone until [`HostServices::wait_end`] is
    /// called with the token this returns. A crash meanwhile is still
    /// attributed to the module.
    fn wait_begin(&self) -> u64;
    /// Ends the wait begun by [`HostServices::wait_begin`].
    #[sabi(last_prefix_field)]
    fn wait_end(&self, token: u64);
    /// The names of the verified client certificate connection `conn`
    /// presented during a TLS handshake the host terminated (mutual TLS,
    /// `[server.tls] client_auth`): the subject's common name first (when
    /// it has one), then the subject alternative names (DNS names, e-mail
    /// addresses, URIs), each once. Empty when the connection presented no
    /// certificate, is not TLS, or no longer exists. Cheap (one map look-up);
    /// a module that maps certificates to users asks once per connection.
    fn peer_identity(&self, conn: u64) -> RVec<RString>;
}

/// The outcome of [`HostServices::call`].
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// The module answered; its reply is in `out`.
    Ok = 0,
    /// No module of that name is running.
    NoSuchModule = 1,
    /// The module is reloading exclusively or was removed.
    Unavailable = 2,
    /// The input was not one complete message for that module.
    Incomplete = 3,
    /// The module faulted (panicked).
    Fault = 4,
}

/// A scheduled job a module declares (see [`Module::jobs`]).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Name, unique within the module; `RUN <module> <name>` runs it now.
    pub name: RString,
    /// A cron expression (5 fields, or 6 with seconds first) or an interval
    /// such as `@every 30s`.
    pub schedule: RString,
}

/// The host-side handle a module receives at start.
pub type HostBox = HostServices_TO<'static, RBox<()>>;

/// One running instance (generation) of a module. Called concurrently from
/// every event loop and pool thread.
#[sabi_trait]
pub trait Module: Send + Sync {
    /// Called on an event loop with the connection's buffered input, which
    /// starts at a message boundary. Must not block.
    fn on_message(&self, conn: &ConnInfo, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> Verdict;
    /// Called on a worker-pool thread with the message a previous
    /// `on_message` deferred. May block. Must answer `Done` or `Close`.
    fn on_deferred(&self, conn: &ConnInfo, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> Verdict;
    /// Serializes the state handed to the next generation's start.
    fn save_state(&self) -> RVec<u8>;
    /// Called once when the generation retires, after its last message.
    fn stop(&self);
    /// Extra module-specific text for `STATUS` (one line, may be empty).
    fn status(&self) -> RString;
    /// A connection closed that was routed to this module or that it pushed
    /// to.
    fn on_close(&self, conn: &ConnInfo);
    /// The scheduled jobs of this generation (asked once after start).
    fn jobs(&self) -> RVec<JobSpec>;
    /// Runs job `name` on a host pool thread (may block). `Ok` carries a
    /// one-line summary of the result, `Err` the reason it failed.
    fn run_job(&self, name: RStr<'_>) -> RResult<RString, RString>;
    /// TLS server names this module takes encrypted, as they are (SNI
    /// passthrough): the host does not terminate TLS for them even when it
    /// has a certificate. Asked after start.
    fn tls_passthrough(&self) -> RVec<RString>;
    /// A connection this module proxied connected, failed to connect, or
    /// ended. Called on an event loop: must not block. Only the verdict for
    /// `Failed` is used (retry elsewhere with `Proxy`, or `Close`).
    fn proxy_event(&self, conn: &ConnInfo, event: ProxyEvent, out: &mut RVec<u8>) -> Verdict;
    /// Prefixes bound from the module's configuration, asked after start
    /// and added to the manifest's (e.g. a proxy's configured routes).
    #[sabi(last_prefix_field)]
    fn bindings(&self) -> RVec<RVec<u8>>;
}

/// A boxed module instance as it crosses the boundary.
pub type ModuleBox = Module_TO<'static, RBox<()>>;

/// The root module every Switchyard module library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ModuleLibRef)))]
#[sabi(missing_field(panic))]
pub struct ModuleLib {
    /// The module's manifest.
    pub manifest: extern "C" fn() -> Manifest,
    /// Starts a generation. `config` is the module's `[modules.<name>]`
    /// table as JSON (`{}` when absent); `state` is what the previous
    /// generation's `save_state` returned (empty on first start).
    #[sabi(last_prefix_field)]
    pub start: extern "C" fn(
        host: HostBox,
        config: RStr<'_>,
        state: RSlice<'_, u8>,
    ) -> RResult<ModuleBox, RString>,
}

impl RootModule for ModuleLibRef {
    declare_root_module_statics! {ModuleLibRef}
    const BASE_NAME: &'static str = "switchyard_module";
    const NAME: &'static str = "switchyard_module";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
