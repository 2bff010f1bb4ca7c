//! Proxied connections: a module answers `Action::Proxy` and the host
//! connects to the upstream without blocking, then relays bytes both ways.
//!
//! One session owns the upstream socket and two bounded pipes (client to
//! upstream, upstream to client). A full pipe stops reading its source, so
//! memory per session is bounded whatever the peers do; a side's EOF is
//! passed on as a write shutdown once its pipe drained (half-close); the
//! session ends when both directions are shut.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use module_api::Upstream;

use crate::registry::Generation;

/// A bounded byte queue between two sockets.
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes to `dst` until the pipe is empty or `dst` would block.
    pub fn drain(&mut self, dst: &mut impl Write) -> io::Result<usize> {
        let mut n_total = 0;
        while self.start < self.end {
            match dst.write(&self.buf[self.start..self.end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    n_total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n_total)
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
    pub up: Pipe,
    /// Upstream to client.
    pub down: Pipe,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub client_eof: bool,
    pub upstream_eof: bool,
    /// Write side of the upstream shut (client EOF passed on).
    pub up_shut: bool,
    /// Write side of the client shut (upstream EOF passed on).
    pub down_shut: bool,
}

/// What a relay round found.
pub enum Relay {
    /// Keep going.
    Open,
    /// Both directions are shut: the session is over.
    Done,
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

    /// Moves bytes both ways until nothing more can move now.
    pub fn relay(&mut self, client: &mut TcpStream, now: Instant) -> io::Result<Relay> {
        loop {
            let mut progress = false;
            if !self.client_eof {
                let m = self.up.fill(client)?;
                self.client_eof = m.eof;
                progress |= m.bytes > 0 || m.eof;
            }
            let n = self.up.drain(&mut self.sock)?;
            self.bytes_up += n as u64;
            progress |= n > 0;
            if self.client_eof && self.up.is_empty() && !self.up_shut {
                let _ = self.sock.shutdown(Shutdown::Write);
                self.up_shut = true;
            }
            if !self.upstream_eof {
                let m = self.down.fill(&mut self.sock)?;
                self.upstream_eof = m.eof;
                progress |= m.bytes > 0 || m.eof;
            }
            let n = self.down.drain(client)?;
            self.bytes_down += n as u64;
            progress |= n > 0;
            if self.upstream_eof && self.down.is_empty() && !self.down_shut {
                let _ = client.shutdown(Shutdown::Write);
                self.down_shut = true;
            }
            if progress {
                self.last_activity = now;
            } else {
                break;
            }
        }
        Ok(if self.up_shut && self.down_shut {
            Relay::Done
        } else {
            Relay::Open
        })
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
        p.drain(&mut out).unwrap();
        assert_eq!(out, b"abcdefgh");
        let m = p.fill(&mut src).unwrap();
        assert_eq!((m.bytes, m.eof), (4, true));
        p.drain(&mut out).unwrap();
        assert_eq!(out, b"abcdefghijkl");
    }
}
