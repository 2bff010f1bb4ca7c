//! Platform-specific calls, each with a portable fallback: `SO_REUSEPORT`
//! listeners and `sendfile(2)`.

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
