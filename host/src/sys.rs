//! Platform-specific calls, each with a portable fallback where one
//! exists: `SO_REUSEPORT` listeners, `sendfile(2)`, `splice(2)` through a
//! pipe, the descriptor limit, and the process-model primitives (the
//! shared status page's mapping, fatal-signal handlers, signals to
//! workers, what a worker inherits across `exec`).
//!
//! The one file that calls `libc` functions: everything else in the host
//! uses the safe wrappers here, so every raw system call and its `SAFETY`
//! argument can be reviewed in one place.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Opens a non-blocking listening socket. With `reuseport`, several
/// sockets may bind the same address and the kernel spreads connections
/// across them (where the platform supports it).
pub fn listen(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    let _ = reuseport;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Whether this platform can give each event loop its own listener.
pub const HAS_REUSEPORT: bool = cfg!(all(
    unix,
    not(any(target_os = "solaris", target_os = "illumos"))
));

/// Starts a non-blocking connect to `addr` from a socket first bound to
/// `(addr.ip(), 0)`, so that its local address is fixed before the
/// connect begins: `before_connect` gets that address (and its result is
/// returned with the socket) while no packet has left yet, so whoever
/// accepts the connection on one of our own listeners, however quickly,
/// finds what it recorded. `None` when `addr`'s IP is not an address of
/// this machine (the bind fails); the caller then connects normally.
/// Binding claims the ephemeral port for this socket alone, so use it only
/// where it matters (a destination that may be ourselves), not for every
/// upstream.
pub fn connect_from_own_address<T>(
    addr: SocketAddr,
    before_connect: impl FnOnce(SocketAddr) -> T,
) -> io::Result<Option<(std::net::TcpStream, T)>> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    let from = SocketAddr::new(addr.ip(), 0);
    match sock.bind(&from.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return Ok(None),
        Err(e) => return Err(e),
    }
    let local = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
    let marked = before_connect(local);
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(Some((sock.into(), marked)))
}

/// Writes `buf` to the socket with `MSG_MORE`: a response head that a
/// `sendfile` follows leaves in the same segments as the file's first bytes
/// instead of going out alone (what `TCP_CORK` does, without two
/// `setsockopt` calls per response).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn send_more(sock: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length; `sock` is an open socket.
    let n = unsafe {
        libc::send(
            sock,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_MORE | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Portable fallback: a plain write.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn send_more(sock: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: as above.
    let n = unsafe { libc::write(sock, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends up to `len` bytes of `file` starting at `*offset` to the socket,
/// advancing `*offset`. Returns the bytes sent (0 means end of file).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn sendfile(sock: RawFd, file: RawFd, offset: &mut u64, len: u64) -> io::Result<usize> {
    let count = len.min(1 << 30) as usize;
    let mut off = *offset as libc::off_t;
    // SAFETY: both descriptors are open for the duration of the call and
    // `off` is a valid pointer.
    let n = unsafe { libc::sendfile(sock, file, &mut off, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = off as u64;
    Ok(n as usize)
}

/// Portable fallback: `pread` into a stack buffer, then `write`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn sendfile(sock: RawFd, file: RawFd, offset: &mut u64, len: u64) -> io::Result<usize> {
    let mut buf = [0u8; 64 * 1024];
    let want = (len as usize).min(buf.len());
    // SAFETY: `buf` is valid for `want` bytes; descriptors are open.
    let n = unsafe { libc::pread(file, buf.as_mut_ptr().cast(), want, *offset as libc::off_t) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Ok(0);
    }
    let w = unsafe { libc::write(sock, buf.as_ptr().cast(), n as usize) };
    if w < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset += w as u64;
    Ok(w as usize)
}

/// A kernel pipe between two sockets for `splice(2)`: bytes move socket →
/// pipe → socket without being copied into user space. Both ends are
/// non-blocking and close-on-exec, and are closed when it is dropped.
/// Elsewhere than Linux [`KernelPipe::new`] fails and callers copy through
/// user space. Splicing into a socket whose peer is gone gives `EPIPE`
/// (the Rust runtime ignores `SIGPIPE`).
#[cfg(any(target_os = "linux", target_os = "android"))]
pub struct KernelPipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

/// Linux's default pipe capacity (16 pages of 4 KiB).
#[cfg(any(target_os = "linux", target_os = "android"))]
const DEFAULT_PIPE_SIZE: usize = 64 * 1024;

#[cfg(any(target_os = "linux", target_os = "android"))]
impl KernelPipe {
    /// Opens a pipe and asks for a capacity of `size` bytes (the kernel
    /// rounds up to a power of two pages; a refusal, e.g. above
    /// `/proc/sys/fs/pipe-max-size` without privileges, keeps the default).
    /// Callers bound what they put in it themselves.
    pub fn new(size: usize) -> io::Result<KernelPipe> {
        use std::os::fd::FromRawFd;
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open descriptors owned by no one else.
        let pipe = unsafe {
            KernelPipe {
                read: std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                write: std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            }
        };
        if size != DEFAULT_PIPE_SIZE {
            use std::os::fd::AsRawFd;
            let want = size.min(libc::c_int::MAX as usize) as libc::c_int;
            // SAFETY: fcntl on a descriptor we own.
            if unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, want) } < 0 {
                log::debug!(
                    "pipe capacity {size} refused ({}), keeping the default",
                    io::Error::last_os_error()
                );
            }
        }
        Ok(pipe)
    }

    /// Moves up to `len` bytes from the socket `src` into the pipe. 0 means
    /// the socket's peer finished sending; `WouldBlock` that the socket has
    /// nothing now *or* that the pipe is full.
    pub fn splice_in(&self, src: RawFd, len: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        splice(src, self.write.as_raw_fd(), len)
    }

    /// Moves up to `len` bytes from the pipe to the socket `dst`.
    /// `WouldBlock` (with bytes in the pipe) means the socket is full.
    pub fn splice_out(&self, dst: RawFd, len: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        splice(self.read.as_raw_fd(), dst, len)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors, no offsets (both are a socket or a pipe).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Portable fallback: no pipe can be made, so callers copy through user
/// space.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub struct KernelPipe {
    _never: std::convert::Infallible,
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl KernelPipe {
    pub fn new(_size: usize) -> io::Result<KernelPipe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice(2) is Linux only",
        ))
    }

    pub fn splice_in(&self, _src: RawFd, _len: usize) -> io::Result<usize> {
        match self._never {}
    }

    pub fn splice_out(&self, _dst: RawFd, _len: usize) -> io::Result<usize> {
        match self._never {}
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a process may do so
/// without privileges) and returns `(old soft, new soft)`. An unlimited
/// hard limit is taken as 1,048,576 (what Linux allows per process by
/// default, `fs.nr_open`).
// `rlim_t` is `u64` on Linux but not on every platform.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let old = lim.rlim_cur as u64;
    let want = if lim.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < want {
        lim.rlim_cur = want;
        // SAFETY: as above; the soft limit stays within the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur as u64))
}

/// Whether an `accept` failed because descriptors (or kernel memory for
/// them) ran out: the listener backs off instead of spinning on it.
pub fn is_descriptor_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// `pread(2)`: reads up to `buf.len()` bytes of `fd` at `offset`, without
/// moving its file position.
pub fn read_at(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: `buf` is valid for its length; the caller keeps `fd` open.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits up to `timeout` until one of `fds` is readable (or hung up).
/// Returns how many are; 0 on timeout or when interrupted by a signal.
pub fn poll_readable(fds: &[RawFd], timeout: std::time::Duration) -> usize {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: `polled` is a valid array of `polled.len()` entries for the
    // duration of the call.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    n.max(0) as usize
}

/// Runs `f` with the process's file-mode creation mask set to `mask`, then
/// puts the previous mask back. The mask is process-wide: a file another
/// thread creates meanwhile gets it too.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask(2) only swaps the process's file-mode mask; it cannot
    // fail and touches no memory of ours.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let out = f();
    // SAFETY: as above; puts the previous mask back.
    unsafe { libc::umask(old) };
    out
}

/// Marks `fd` close-on-exec, so processes started later (by modules) do
/// not inherit it.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a plain descriptor number; an unknown one fails
    // with EBADF and changes nothing.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends signal `sig` to process `pid` (a child not reaped yet, so the
/// pid cannot have been reused). A process that is gone already is no
/// error worth reporting: the caller reaps it next.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory arguments.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Ends the process at once with `code`, without running destructors or
/// `atexit` handlers (which could block on state a panic broke).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Milliseconds on the system-wide monotonic clock: the same clock in
/// every process of the machine (the leader compares a worker's readings
/// with its own).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// A new anonymous file, close-on-exec, for memory shared with a child
/// process; `name` shows in `/proc/<pid>/fd`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn anonymous_file(name: &std::ffi::CStr) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated name; we own the returned descriptor.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Portable fallback: a temporary file, unlinked at once.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn anonymous_file(name: &std::ffi::CStr) -> io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "{}-{}-{:?}",
        name.to_string_lossy(),
        std::process::id(),
        std::time::Instant::now()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// Maps `len` bytes of `fd` shared and read-write. The mapping outlives
/// the descriptor; release it with [`unmap`].
pub fn map_shared(fd: RawFd, len: usize) -> io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: a fresh mapping at an address the kernel chooses: it aliases
    // no memory of ours. What the bytes mean is the caller's business.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Releases a mapping made by [`map_shared`].
///
/// # Safety
/// `ptr` and `len` must be exactly what [`map_shared`] returned and was
/// given, and no reference into the mapping may be used afterwards.
pub unsafe fn unmap(ptr: std::ptr::NonNull<u8>, len: usize) {
    // SAFETY: the caller upholds the contract above.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), len);
    }
}

/// The signals that mean the process is dying of a fault of its own code.
pub const FATAL_SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGILL,
    libc::SIGFPE,
];

/// Runs `handler(sig)` when one of [`FATAL_SIGNALS`] arrives, on the
/// thread's alternate signal stack when it has one (Rust sets one up for
/// its threads, so a stack overflow is handled too). The handler must do
/// only async-signal-safe work and end with [`die_of`].
pub fn on_fatal_signals(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    for sig in FATAL_SIGNALS {
        // SAFETY: `sa` is fully initialised (zeroed, then the fields we
        // need); the handler has the signature `sa_handler` expects, as
        // SA_SIGINFO is not set.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// From a fatal-signal handler: dies of `sig` with its default action
/// (the exit status and core dump the signal would have given).
/// Async-signal-safe.
pub fn die_of(sig: i32) {
    // SAFETY: signal(2) and raise(3) are async-signal-safe. The signal is
    // blocked while its handler runs, so the raised one is delivered, with
    // the default action, as soon as the handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Arranges for the child `cmd` starts to inherit `fds` (they stay open
/// across its `exec`) and, where the platform can, to be killed when this
/// process dies: a worker must not outlive a leader that was killed.
pub fn inherit_on_exec(cmd: &mut std::process::Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and
    // makes only async-signal-safe calls (fcntl, prctl, getppid, _exit);
    // it allocates nothing and takes no lock (`fds` was allocated before
    // the fork and is only read).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let _ = parent;
            Ok(())
        });
    }
}
