//! A connection's output: the write buffer modules append to, the shared
//! body and file range a verdict may add after it, and pushed bytes waiting
//! for them to finish. Owns how they are written to the socket, plainly
//! (vectored writes, `sendfile`) or through a TLS session.

use std::io::{self, Write};
use std::os::fd::AsRawFd;

use abi_stable::std_types::RVec;
use mio::net::TcpStream;
use module_api::abi::{FileBody, SharedBody};

use crate::sys;

/// A write buffer or push queue whose capacity grew past this for a large
/// message is freed once empty rather than kept for the next one, so a
/// connection that once carried a big answer does not hold it forever.
pub const KEEP_OUT_CAPACITY: usize = 64 * 1024;

/// A file range still to be sent after the write buffer. Dropping it
/// closes the descriptor or hands it back to the module that lent it.
struct PendingFile {
    file: FileBody,
    offset: u64,
    remaining: u64,
}

/// `pread(2)`: the TLS path and in-process calls, where `sendfile` cannot
/// be used.
pub fn read_at(fd: i32, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    crate::sys::read_at(fd, buf, offset)
}

/// Everything a connection still has to send, in order: `buf[pos..]`,
/// then `body[body_pos..]`, then `file`; `pushes` join `buf` only once no
/// body or file is in the way (a push never splits a response).
#[derive(Default)]
pub struct Output {
    buf: RVec<u8>,
    pos: usize,
    pushes: Vec<u8>,
    body: Option<SharedBody>,
    body_pos: usize,
    file: Option<PendingFile>,
}

impl Output {
    /// Whether any byte is waiting (not counting a TLS session's records).
    #[inline]
    pub fn has_unsent(&self) -> bool {
        self.pos < self.buf.len()
            || self.body.is_some()
            || self.file.is_some()
            || !self.pushes.is_empty()
    }

    /// Whether the write buffer itself still has unsent bytes.
    #[inline]
    pub fn head_unsent(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Whether a shared body or a file range is being sent.
    #[inline]
    pub fn streaming(&self) -> bool {
        self.body.is_some() || self.file.is_some()
    }

    /// Unsent bytes (write buffer, shared body, file range, queued
    /// pushes): what the output budget and the push backlog limit count.
    #[inline]
    pub fn backlog(&self) -> usize {
        (self.buf.len() - self.pos)
            + self.body.as_ref().map_or(0, |b| b.len() - self.body_pos)
            + self.file.as_ref().map_or(0, |f| f.remaining as usize)
            + self.pushes.len()
    }

    /// The write buffer's length: where a module call's output starts.
    #[inline]
    pub fn mark(&self) -> usize {
        self.buf.len()
    }

    /// The bytes appended since `mark`, removed from the buffer.
    pub fn take_since(&mut self, mark: usize) -> Vec<u8> {
        let taken = self.buf[mark..].to_vec();
        self.buf.truncate(mark);
        taken
    }

    /// The write buffer, for appending a reply.
    #[inline]
    pub fn buf_mut(&mut self) -> &mut RVec<u8> {
        &mut self.buf
    }

    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Installs a pooled write buffer when this one holds no allocation.
    #[inline]
    pub fn give_buf(&mut self, buf: RVec<u8>) {
        debug_assert_eq!(self.buf.capacity(), 0);
        self.buf = buf;
    }

    /// Takes the write buffer away (emptied), for the loop's pool.
    pub fn take_buf(&mut self) -> RVec<u8> {
        self.pos = 0;
        let mut buf = std::mem::replace(&mut self.buf, RVec::new());
        buf.clear();
        buf
    }

    /// Adds a verdict's shared body and file range after the buffer.
    pub fn set_bodies(&mut self, body: SharedBody, file: FileBody) {
        if body.is_some() {
            self.body = Some(body);
            self.body_pos = 0;
        }
        if file.is_some() {
            let (offset, remaining) = (file.offset(), file.len());
            self.file = Some(PendingFile {
                file,
                offset,
                remaining,
            });
        }
    }

    /// Queues pushed bytes unless that would take the backlog over `cap`.
    #[inline]
    pub fn push(&mut self, data: &[u8], cap: usize) -> bool {
        if self.backlog() + data.len() > cap {
            return false;
        }
        self.pushes.extend_from_slice(data);
        true
    }

    /// Queues bytes after whatever is waiting, whatever the backlog (the
    /// notice sent before a connection is closed).
    pub fn push_anyway(&mut self, data: &[u8]) {
        self.pushes.extend_from_slice(data);
    }

    /// Moves queued pushes into the write buffer once no body or file is
    /// in the way (pushes never split a response).
    pub fn release_pushes(&mut self) -> bool {
        if self.pushes.is_empty() || self.streaming() {
            return false;
        }
        self.buf.extend_from_copy_slice(&self.pushes);
        self.pushes.clear();
        if self.pushes.capacity() > KEEP_OUT_CAPACITY {
            self.pushes = Vec::new();
        }
        true
    }

    /// Frees a write buffer that grew large for one message once it is
    /// empty (see [`KEEP_OUT_CAPACITY`]).
    #[inline]
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > KEEP_OUT_CAPACITY {
            self.buf = RVec::new();
        }
    }

    /// Writes the buffer, then any shared body (together, with one
    /// vectored write), then any file range, until done or `WouldBlock`.
    /// Returns whether any byte went out.
    pub fn write_plain(&mut self, sock: &mut TcpStream) -> io::Result<bool> {
        let mut progress = false;
        loop {
            let head = &self.buf[self.pos..];
            let body = self
                .body
                .as_ref()
                .map_or(&[][..], |b| &b.bytes()[self.body_pos..]);
            if head.is_empty() && body.is_empty() {
                break;
            }
            let result = if body.is_empty() && self.file.is_some() {
                sys::send_more(sock.as_raw_fd(), head)
            } else if body.is_empty() {
                sock.write(head)
            } else {
                sock.write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(body)])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    progress = true;
                    let from_head = n.min(head.len());
                    self.pos += from_head;
                    n -= from_head;
                    self.body_pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.pos = 0;
        if self.body.take().is_some() {
            self.body_pos = 0;
        }
        if let Some(f) = &mut self.file {
            let fd = sock.as_raw_fd();
            while f.remaining > 0 {
                match sys::sendfile(fd, f.file.fd(), &mut f.offset, f.remaining) {
                    Ok(0) => {
                        // The file shrank under us: the response is now
                        // short, so the connection cannot be reused.
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file truncated while sending",
                        ));
                    }
                    Ok(n) => {
                        f.remaining -= n as u64;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.file = None;
        }
        Ok(progress)
    }

    /// Encrypts the output into `tls` and writes its records to `sock`,
    /// until done or `WouldBlock`. Returns whether any record went out.
    pub fn write_tls(
        &mut self,
        tls: &mut rustls::ServerConnection,
        sock: &mut TcpStream,
    ) -> io::Result<bool> {
        let mut progress = false;
        let mut scratch = [0u8; 16 * 1024];
        loop {
            // Plaintext in, as much as the session buffers.
            let mut moved = 0;
            if self.pos < self.buf.len() {
                moved = tls.writer().write(&self.buf[self.pos..])?;
                self.pos += moved;
            } else if let Some(b) = &self.body {
                moved = tls.writer().write(&b.bytes()[self.body_pos..])?;
                self.body_pos += moved;
                if self.body_pos >= b.len() {
                    self.body = None;
                    self.body_pos = 0;
                }
            } else if let Some(f) = &mut self.file {
                let want = (f.remaining as usize).min(scratch.len());
                if want > 0 {
                    let n = read_at(f.file.fd(), &mut scratch[..want], f.offset)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file truncated while sending",
                        ));
                    }
                    moved = tls.writer().write(&scratch[..n])?;
                    f.offset += moved as u64;
                    f.remaining -= moved as u64;
                }
                if f.remaining == 0 {
                    self.file = None;
                }
            }
            // Records out.
            while tls.wants_write() {
                match tls.write_tls(sock) {
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.pos >= self.buf.len() && !self.streaming() {
                self.buf.clear();
                self.pos = 0;
                return Ok(progress);
            }
            if moved == 0 {
                return Ok(progress);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_and_take_since() {
        let mut out = Output::default();
        out.buf_mut().extend_from_copy_slice(b"earlier ");
        let mark = out.mark();
        out.buf_mut().extend_from_copy_slice(b"PROXY header");
        assert_eq!(out.take_since(mark), b"PROXY header");
        assert_eq!(&out.buf_mut()[..], b"earlier ");
        assert_eq!(out.backlog(), 8);
        // Nothing appended: nothing taken.
        assert!(out.take_since(out.mark()).is_empty());
    }

    #[test]
    fn push_over_the_cap_is_refused() {
        let mut out = Output::default();
        out.buf_mut().extend_from_copy_slice(&[b'x'; 60]);
        assert!(out.push(&[b'p'; 40], 100));
        assert_eq!(out.backlog(), 100);
        assert!(!out.push(b"p", 100), "one byte over the cap");
        assert_eq!(out.backlog(), 100, "a refused push queues nothing");
        out.push_anyway(b"bye");
        assert_eq!(out.backlog(), 103);
        // Pushes join the buffer: no body or file in the way.
        assert!(out.release_pushes());
        assert_eq!(out.buf_mut().len(), 103);
        assert!(!out.release_pushes(), "nothing left to release");
    }

    #[test]
    fn take_buf_leaves_nothing_unsent() {
        let mut out = Output::default();
        out.buf_mut().extend_from_copy_slice(b"abc");
        let buf = out.take_buf();
        assert!(buf.is_empty());
        assert!(buf.capacity() >= 3);
        assert!(!out.has_unsent());
        assert_eq!(out.capacity(), 0);
        out.give_buf(buf);
        assert!(out.capacity() >= 3);
    }
}
