//! A test client over a real socket: sends bytes, reads lines, admin
//! replies and HTTP responses (pipelined, chunked) with a timeout on every
//! read, so a misbehaving server fails a test instead of hanging it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest any single socket read may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection with a read buffer (responses may be pipelined):
/// plain TCP, or any other byte stream (a TLS session in the TLS tests).
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (panics on failure).
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Client::over_tcp(stream)
    }

    /// Like [`Client::connect`], from a socket bound to address `src`.
    pub fn connect_from(addr: SocketAddr, src: &str) -> Client {
        use socket2::{Domain, Socket, Type};
        let local = SocketAddr::new(src.parse().unwrap(), 0);
        let sock = Socket::new(Domain::for_address(local), Type::STREAM, None).unwrap();
        sock.bind(&local.into())
            .unwrap_or_else(|e| panic!("bind {local}: {e}"));
        sock.connect_timeout(&addr.into(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr} from {src}: {e}"));
        Client::over_tcp(sock.into())
    }

    /// A client on a connected socket, with the read and write timeouts
    /// every test relies on and Nagle off (requests go out at once).
    fn over_tcp(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client::from_stream(stream)
    }

    /// Waits (up to `timeout`) for the server to close the connection.
    /// `Ok` if it closed (EOF or reset) without sending anything more, `Err`
    /// with what happened otherwise.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<(), String> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut got = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 4096];
        let r = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    break Ok(())
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break Err(format!("still open after {timeout:?}"))
                }
                Err(e) => break Err(format!("read error {e}")),
            }
        };
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Ok(()) if got.is_empty() => Ok(()),
            Ok(()) => Err(format!(
                "closed, but first sent {:?}",
                String::from_utf8_lossy(&got)
            )),
            Err(e) => Err(format!("{e}; received {:?}", String::from_utf8_lossy(&got))),
        }
    }

    /// Reads one line (without its line ending) if it completes within
    /// `wait`: `Ok(None)` when it does not (what came of it stays
    /// buffered), `Err` when the connection ends or fails first.
    pub fn read_line_within(&mut self, wait: Duration) -> Result<Option<String>, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(line) = self.take_line() {
                return Ok(Some(line));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let filled = self.read_more();
            self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            match filled {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "connection closed before a full line; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) => return Err(self.read_error(&e)),
            }
        }
    }

    /// Whether response bytes are already waiting (does not block).
    pub fn has_data(&self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        self.stream.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = self.stream.peek(&mut b);
        self.stream.set_nonblocking(false).unwrap();
        matches!(r, Ok(n) if n > 0)
    }
}

impl<S: Read + Write> Client<S> {
    /// Writes all of `bytes` (panics on error).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush())
            .unwrap_or_else(|e| panic!("write to server: {e}"));
    }

    /// Writes `bytes`, ignoring errors (the server may close early).
    pub fn send_lenient(&mut self, bytes: &[u8]) {
        let _ = self
            .stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush());
    }

    /// Wraps an already connected stream (timeouts as the caller set them).
    pub fn from_stream(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; `Ok(false)` on EOF.
    fn read_more(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A TLS session closed without close_notify.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// A read error told with what was buffered before it.
    fn read_error(&self, e: &std::io::Error) -> String {
        format!(
            "read from server: {e} (buffered so far: {:?})",
            String::from_utf8_lossy(&self.buf)
        )
    }

    /// Like [`Client::read_more`], the error told as text.
    fn try_fill(&mut self) -> Result<bool, String> {
        self.read_more().map_err(|e| self.read_error(&e))
    }

    /// Reads more bytes into the buffer; false on EOF, panics on error.
    fn fill(&mut self) -> bool {
        self.try_fill().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Takes one whole buffered line (through `\n`) without its line
    /// ending, if there is one.
    fn take_line(&mut self) -> Option<String> {
        let i = self.buf.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=i).collect();
        let s = String::from_utf8_lossy(&line);
        Some(s.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Reads one line (through `\n`), returned without the line ending.
    pub fn read_line(&mut self) -> String {
        loop {
            if let Some(line) = self.take_line() {
                return line;
            }
            if !self.fill() {
                panic!(
                    "connection closed before a full line; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Like [`Client::read_line`] but returns what went wrong (EOF, error,
    /// timeout) instead of panicking.
    pub fn try_read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(line) = self.take_line() {
                return Ok(line);
            }
            if !self.try_fill()? {
                return Err(format!(
                    "connection closed before a full line; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
    }

    /// Reads the reply to an admin command (see [`Server::admin`]).
    pub fn read_admin_reply(&mut self, cmd: &str) -> String {
        let cmd = cmd.trim();
        let mut out = String::new();
        loop {
            let line = self.read_line();
            out.push_str(&line);
            out.push('\n');
            let done = if cmd == "STATUS" {
                line == "END" || (out.len() == line.len() + 1 && line.starts_with("ERR"))
            } else if cmd == "RELOAD" {
                line.starts_with("OK reload:") || line.starts_with("ERR reload:")
            } else {
                true
            };
            if done {
                return out;
            }
        }
    }

    /// Reads one HTTP response. `head_only`: the request was HEAD (no body
    /// follows whatever the headers say). Panics on EOF, error or timeout.
    pub fn read_response(&mut self, head_only: bool) -> Response {
        self.try_read_response(head_only)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Client::read_response`] but returns what went wrong.
    pub fn try_read_response(&mut self, head_only: bool) -> Result<Response, String> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.try_fill()? {
                return Err(format!(
                    "connection closed before a full response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            let (n, v) = l
                .split_once(':')
                .ok_or_else(|| format!("bad header line {l:?}"))?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            status_line,
            headers,
            body: Vec::new(),
        };
        let no_body = head_only || status == 204 || status == 304 || status / 100 == 1;
        if no_body {
            return Ok(resp);
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length {len:?}"))?;
            while self.buf.len() < len {
                if !self.try_fill()? {
                    return Err(format!(
                        "connection closed after {} of {len} body bytes",
                        self.buf.len()
                    ));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            resp.body = self.read_chunked();
        } else {
            // Close-delimited.
            while self.try_fill()? {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                // Trailers, then the blank line.
                while !self.read_line().is_empty() {}
                return body;
            }
            while self.buf.len() < size + 2 {
                assert!(self.fill(), "connection closed inside a chunk");
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads exactly `n` bytes (what is buffered first); panics on EOF,
    /// error or timeout.
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill(),
                "connection closed after {} of {n} bytes",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
