//! Proxied connections: a module answers `Action::Proxy` and the host
//! connects to the upstream without blocking, then relays bytes both ways.
//!
//! One session owns the upstream socket and one bounded [`Buffer`] per
//! direction (client to upstream, upstream to client). A full buffer stops
//! reading its source, so memory per session is bounded whatever the peers
//! do; a side's EOF is passed on as a write shutdown once its buffer
//! drained (half-close); the session ends when both directions are shut.
//!
//! A buffer is either a kernel pipe that `splice(2)` fills from one socket
//! and empties into the other (Linux, plain TCP: the bytes never enter user
//! space) or, as the portable fallback, a user-space [`Pipe`] that `read`
//! and `write` go through. Either way the bytes the host had already read
//! before the hand-off go out first.
//!
//! Sockets are edge-triggered: each side's [`Ready`] flags are cleared when
//! a call says `WouldBlock` and set again only by the next event, so a
//! session makes no call that is known to find nothing.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use module_api::Upstream;

use crate::generation::Generation;
use crate::sys::KernelPipe;

/// Rounds of moving bytes a session gets per turn before it yields to the
/// loop's other connections (it is resumed after the next poll).
const MAX_RELAY_ROUNDS: usize = 16;

/// A bounded byte queue between two sockets, in user space.
pub struct Pipe {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// What moving bytes did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub bytes: usize,
    /// The source reached EOF.
    pub eof: bool,
    /// The socket said `WouldBlock`: wait for its next event.
    pub blocked: bool,
}

impl Pipe {
    pub fn new(capacity: usize, initial: &[u8]) -> Pipe {
        let mut buf = vec![0; capacity.max(initial.len())];
        buf[..initial.len()].copy_from_slice(initial);
        Pipe {
            buf,
            start: 0,
            end: initial.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Reads from `src` until it would block, hits EOF, or the pipe is full.
    pub fn fill(&mut self, src: &mut impl Read) -> io::Result<Moved> {
        let mut moved = Moved::default();
        loop {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            if self.end == self.buf.len() {
                if self.start == 0 {
                    return Ok(moved); // full: backpressure
                }
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    moved.eof = true;
                    return Ok(moved);
                }
                Ok(n) => {
                    self.end += n;
                    moved.bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    moved.blocked = true;
                    return Ok(moved);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes to `dst` until the pipe is empty or `dst` would block.
    pub fn drain(&mut self, dst: &mut impl Write) -> io::Result<Moved> {
        let mut moved = Moved::default();
        while self.start < self.end {
            match dst.write(&self.buf[self.start..self.end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    moved.bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    moved.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// One direction through a kernel pipe: `splice(2)` from the source socket
/// into the pipe, and from the pipe into the destination socket.
pub struct Spliced {
    /// Bytes already in user space when the session started (read before
    /// the proxy decision, or written by the module): they go out first.
    head: Vec<u8>,
    head_pos: usize,
    pipe: KernelPipe,
    /// Bytes in the pipe now.
    held: usize,
    /// At most this many bytes wait in `head` and the pipe together.
    bound: usize,
}

impl Spliced {
    pub fn new(pipe: KernelPipe, bound: usize, initial: &[u8]) -> Spliced {
        Spliced {
            head: initial.to_vec(),
            head_pos: 0,
            pipe,
            held: 0,
            bound,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0 && self.head_pos == self.head.len()
    }

    /// One `splice` from `src` into the pipe, of at most the room left
    /// under the bound (none when full: backpressure). The relay loop calls
    /// again while anything moves.
    pub fn fill(&mut self, src: &TcpStream) -> io::Result<Moved> {
        let mut moved = Moved::default();
        let queued = self.held + (self.head.len() - self.head_pos);
        let room = self.bound.saturating_sub(queued);
        if room == 0 {
            return Ok(moved);
        }
        loop {
            match self.pipe.splice_in(src.as_raw_fd(), room) {
                Ok(0) => moved.eof = true,
                Ok(n) => {
                    self.held += n;
                    moved.bytes = n;
                }
                // With bytes in the pipe, `WouldBlock` may mean a pipe full
                // of small segments rather than an empty socket: the socket
                // stays ready, and is tried again once the pipe drained.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => moved.blocked = self.held == 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(moved);
        }
    }

    /// Writes the head, then splices the pipe into `dst`, until both are
    /// empty or `dst` would block.
    pub fn drain(&mut self, dst: &mut TcpStream) -> io::Result<Moved> {
        let mut moved = Moved::default();
        while self.head_pos < self.head.len() {
            match dst.write(&self.head[self.head_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head_pos += n;
                    moved.bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    moved.blocked = true;
                    return Ok(moved);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.head.is_empty() {
            self.head = Vec::new();
            self.head_pos = 0;
        }
        while self.held > 0 {
            match self.pipe.splice_out(dst.as_raw_fd(), self.held) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.held -= n;
                    moved.bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    moved.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// One direction's bounded buffer.
pub enum Buffer {
    /// Through user space (`read`/`write`): TLS-terminated connections,
    /// platforms without `splice`, `proxy_splice = false`, or when no pipe
    /// could be made.
    Copy(Pipe),
    /// Through a kernel pipe (`splice`).
    Splice(Spliced),
}

impl Buffer {
    /// The two buffers of a new session, `initial` queued towards the
    /// upstream. Splices when asked and possible; a failure to make the
    /// pipes (e.g. `EMFILE`) falls back to copying.
    pub fn pair(splice: bool, bound: usize, initial: &[u8], conn_id: u64) -> (Buffer, Buffer) {
        if splice {
            match (KernelPipe::new(bound), KernelPipe::new(bound)) {
                (Ok(up), Ok(down)) => {
                    return (
                        Buffer::Splice(Spliced::new(up, bound, initial)),
                        Buffer::Splice(Spliced::new(down, bound, &[])),
                    )
                }
                (Err(e), _) | (_, Err(e)) => {
                    log::debug!("conn {conn_id}: no pipe to splice through ({e}), copying");
                }
            }
        }
        (
            Buffer::Copy(Pipe::new(bound, initial)),
            Buffer::Copy(Pipe::new(bound, &[])),
        )
    }

    pub fn is_spliced(&self) -> bool {
        matches!(self, Buffer::Splice(_))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Buffer::Copy(p) => p.is_empty(),
            Buffer::Splice(s) => s.is_empty(),
        }
    }

    fn fill(&mut self, src: &mut TcpStream) -> io::Result<Moved> {
        match self {
            Buffer::Copy(p) => p.fill(src),
            Buffer::Splice(s) => s.fill(src),
        }
    }

    fn drain(&mut self, dst: &mut TcpStream) -> io::Result<Moved> {
        match self {
            Buffer::Copy(p) => p.drain(dst),
            Buffer::Splice(s) => s.drain(dst),
        }
    }
}

/// What the events and calls so far say about one socket.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub read: bool,
    pub write: bool,
}

impl Ready {
    /// Unknown: try both.
    pub const BOTH: Ready = Ready {
        read: true,
        write: true,
    };

    /// Records an event (an error or hang-up makes the next call find out).
    pub fn note(&mut self, event: &mio::event::Event) {
        let err = event.is_error();
        self.read |= event.is_readable() || event.is_read_closed() || err;
        self.write |= event.is_writable() || event.is_write_closed() || err;
    }
}

/// A proxied connection's upstream side and relay state.
pub struct Session {
    /// The generation that proxied it; it keeps the session until it ends.
    pub gen: Arc<Generation>,
    pub upstream: Upstream,
    pub sock: TcpStream,
    pub connected: bool,
    /// Connect attempts so far (bounded, whatever the module answers).
    pub attempts: u32,
    /// Client bytes buffered before the first connect, replayed on retry.
    pub initial: Vec<u8>,
    pub started: Instant,
    pub last_activity: Instant,
    /// Client to upstream.
    pub up: Buffer,
    /// Upstream to client.
    pub down: Buffer,
    pub client_ready: Ready,
    pub upstream_ready: Ready,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub client_eof: bool,
    pub upstream_eof: bool,
    /// Write side of the upstream shut (client EOF passed on).
    pub up_shut: bool,
    /// Write side of the client shut (upstream EOF passed on).
    pub down_shut: bool,
    /// Connection slots the session holds beyond its client socket (its
    /// upstream socket, and its pipes when spliced), given back when it
    /// ends: see [`Session::extra_slots`].
    pub slots: usize,
    /// Marks the upstream socket's local address as ours while the session
    /// lives, so that a proxy route pointing back at our own port does not
    /// turn into an admin by address (see `admin::self_forward`).
    pub own: Option<crate::access::OwnUpstream>,
}

impl Session {
    /// Slots (descriptors) a session takes beyond the client's: the
    /// upstream socket, plus two pipes of two descriptors when spliced.
    pub fn extra_slots(spliced: bool) -> usize {
        if spliced {
            5
        } else {
            1
        }
    }
}

/// What a relay round found.
pub enum Relay {
    /// Keep going.
    Open,
    /// Both directions are shut: the session is over.
    Done,
    /// Bytes still moving after `MAX_RELAY_ROUNDS`: call again after the
    /// next poll (no event would repeat it).
    Yield,
}

impl Session {
    /// Whether a non-blocking connect finished, and how.
    pub fn check_connected(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if let Some(e) = self.sock.take_error()? {
            return Err(e);
        }
        match self.sock.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves bytes both ways until nothing more can move now (or the
    /// turn is over).
    pub fn relay(&mut self, client: &mut TcpStream, now: Instant) -> io::Result<Relay> {
        for _ in 0..MAX_RELAY_ROUNDS {
            let mut progress = false;
            // Client to upstream.
            if !self.client_eof && self.client_ready.read {
                let m = self.up.fill(client)?;
                self.client_eof = m.eof;
                self.client_ready.read = !m.blocked;
                progress |= m.bytes > 0 || m.eof;
            }
            if !self.up.is_empty() && self.upstream_ready.write {
                let m = self.up.drain(&mut self.sock)?;
                self.upstream_ready.write = !m.blocked;
                self.bytes_up += m.bytes as u64;
                progress |= m.bytes > 0;
            }
            if self.client_eof && self.up.is_empty() && !self.up_shut {
                let _ = self.sock.shutdown(Shutdown::Write);
                self.up_shut = true;
            }
            // Upstream to client.
            if !self.upstream_eof && self.upstream_ready.read {
                let m = self.down.fill(&mut self.sock)?;
                self.upstream_eof = m.eof;
                self.upstream_ready.read = !m.blocked;
                progress |= m.bytes > 0 || m.eof;
            }
            if !self.down.is_empty() && self.client_ready.write {
                let m = self.down.drain(client)?;
                self.client_ready.write = !m.blocked;
                self.bytes_down += m.bytes as u64;
                progress |= m.bytes > 0;
            }
            if self.upstream_eof && self.down.is_empty() && !self.down_shut {
                let _ = client.shutdown(Shutdown::Write);
                self.down_shut = true;
            }
            if self.up_shut && self.down_shut {
                return Ok(Relay::Done);
            }
            if !progress {
                return Ok(Relay::Open);
            }
            self.last_activity = now;
        }
        Ok(Relay::Yield)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_is_bounded_and_keeps_order() {
        let mut p = Pipe::new(8, b"ab");
        let mut src: &[u8] = b"cdefghijkl";
        let m = p.fill(&mut src).unwrap();
        assert_eq!(m.bytes, 6);
        assert!(!m.eof);
        let mut out = Vec::new();
        assert_eq!(p.drain(&mut out).unwrap().bytes, 8);
        assert_eq!(out, b"abcdefgh");
        let m = p.fill(&mut src).unwrap();
        assert_eq!((m.bytes, m.eof), (4, true));
        p.drain(&mut out).unwrap();
        assert_eq!(out, b"abcdefghijkl");
    }
}
