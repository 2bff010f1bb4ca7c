//! Platform-specific calls, each with a portable fallback: `SO_REUSEPORT`
//! listeners, `sendfile(2)`, `splice(2)` through a pipe, and the
//! descriptor limit.

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

/// Writes `buf` to the socket with `MSG_MORE`: a response head that a
/// `sendfile` follows leaves in the same segments as the file's first bytes
/// instead of going out alone (what `TCP_CORK` does, without two
/// `setsockopt` calls per response).
#[cfg(any(target_os = "linux", target_os = "android"))]
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
