//! Shared helpers for the integration tests: start the real `switchyard`
//! binary on an ephemeral loopback port in a fresh temporary directory, talk
//! HTTP and admin commands to it over real sockets, read its log.
//!
//! Every socket read has a timeout, so a misbehaving server fails a test
//! instead of hanging it. Servers are killed when their [`Server`] drops; if
//! the test failed, the server's log is printed and its directory kept.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod supervision;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any single socket read may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The contents of the default `index.html` every test site has.
pub const INDEX_HTML: &str = "<!doctype html>\n<title>switchyard test</title>\n<h1>index</h1>\n";

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The built `.so` of a module: shipped modules from `modules/<name>.so`,
/// test fixtures (`fx_*`) from `target/fixtures/<name>.so`.
pub fn module_file(name: &str) -> PathBuf {
    let ws = workspace();
    let path = if name.starts_with("fx_") {
        ws.join("target/fixtures").join(format!("{name}.so"))
    } else {
        ws.join("modules").join(format!("{name}.so"))
    };
    assert!(
        path.is_file(),
        "module {name}: {} is missing; run `make` first",
        path.display()
    );
    path
}

/// A fresh, empty, unique temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "switchyard-test-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free loopback port (bound then released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Describes a server to start. The site directory always exists (with an
/// `index.html`) and the config always sets `[modules.http] root` to it.
pub struct ServerBuilder {
    tag: String,
    /// (fixture or shipped module, file stem it is installed as).
    modules: Vec<(String, String)>,
    extra_args: Vec<String>,
    server_toml: Vec<String>,
    routes: Vec<(String, String)>,
    extra_toml: String,
    cli: Option<Vec<String>>,
    threads: u32,
    files: Vec<(String, Vec<u8>)>,
    envs: Vec<(String, String)>,
}

impl ServerBuilder {
    /// A server loading these modules (shipped or `fx_*` fixtures).
    pub fn new(modules: &[&str]) -> ServerBuilder {
        ServerBuilder {
            tag: "srv".into(),
            modules: modules
                .iter()
                .map(|s| (s.to_string(), s.to_string()))
                .collect(),
            extra_args: Vec::new(),
            server_toml: Vec::new(),
            routes: Vec::new(),
            extra_toml: String::new(),
            cli: None,
            threads: 2,
            files: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Names the temporary directory (helps when reading leftovers).
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.into();
        self
    }

    /// Also installs module `module` (shipped or `fx_*`) as `<stem>.so`,
    /// e.g. fixture `fx_ver1` as `fx_ver.so`.
    pub fn module_as(mut self, module: &str, stem: &str) -> Self {
        self.modules.push((module.into(), stem.into()));
        self
    }

    /// Appends a command-line argument (after the defaults or [`Self::cli`]).
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds a `key = value` line to `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.server_toml.push(line.into());
        self
    }

    /// Adds a `[server.routes]` entry.
    pub fn route(mut self, prefix: &str, module: &str) -> Self {
        self.routes.push((prefix.into(), module.into()));
        self
    }

    /// Appends raw TOML (module tables other than `[modules.http]`).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra_toml.push_str(text);
        self.extra_toml.push('\n');
        self
    }

    /// `-threads N` (default 2).
    pub fn threads(mut self, n: u32) -> Self {
        self.threads = n;
        self
    }

    /// Replaces the default `-port 0 --bind 127.0.0.1 -threads N` arguments
    /// (`--modules`, `--data-dir` and `--config` are always passed).
    pub fn cli(mut self, args: &[&str]) -> Self {
        self.cli = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets an environment variable for the server process (test hooks
    /// such as `SWITCHYARD_FAULT_INJECT`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Writes a file (path relative to the site root) before start.
    pub fn file(mut self, rel: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((rel.into(), contents.into()));
        self
    }

    /// Starts the server and waits for its `listening on` line.
    pub fn start(self) -> Server {
        let dir = temp_dir(&self.tag);
        let modules_dir = dir.join("modules");
        let site = dir.join("site");
        let data = dir.join("data");
        fs::create_dir_all(&modules_dir).unwrap();
        fs::create_dir_all(&site).unwrap();
        fs::write(site.join("index.html"), INDEX_HTML).unwrap();
        for (rel, contents) in &self.files {
            let p = site.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, contents).unwrap();
        }
        for (m, stem) in &self.modules {
            fs::copy(module_file(m), modules_dir.join(format!("{stem}.so"))).unwrap();
        }

        let mut config = String::from("[server]\n");
        for line in &self.server_toml {
            config.push_str(line);
            config.push('\n');
        }
        if !self.routes.is_empty() {
            config.push_str("\n[server.routes]\n");
            for (prefix, module) in &self.routes {
                config.push_str(&format!("{} = {}\n", toml_str(prefix), toml_str(module)));
            }
        }
        config.push_str(&format!(
            "\n[modules.http]\nroot = {}\n\n",
            toml_str(site.to_str().unwrap())
        ));
        config.push_str(&self.extra_toml);
        let config_path = dir.join("switchyard.toml");
        fs::write(&config_path, &config).unwrap();

        let mut args: Vec<String> = match self.cli {
            Some(a) => a,
            None => vec![
                "-port".into(),
                "0".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "-threads".into(),
                self.threads.to_string(),
            ],
        };
        args.extend(self.extra_args.iter().cloned());
        args.extend([
            "--modules".into(),
            modules_dir.to_str().unwrap().into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
            "--config".into(),
            config_path.to_str().unwrap().into(),
        ]);

        let stderr_path = dir.join("stderr.log");
        let child = Command::new(BIN)
            .args(&args)
            .current_dir(&dir)
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn switchyard");
        let mut server = Server {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            site,
            modules_dir,
            stderr_path,
            exited: None,
        };

        // Read stdout on a thread: the first `listening on` line comes back
        // through the channel, the rest is drained so the pipe never fills.
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = server.child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        server.addr = a
                            .trim()
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address in stdout line {line:?}: {e}"));
                        break;
                    }
                }
                Err(_) => panic!(
                    "switchyard did not print `listening on ADDR` within {START_TIMEOUT:?} \
                     (exit: {:?}); log:\n{}",
                    server.child.try_wait(),
                    server.log()
                ),
            }
        }
        server
    }
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A running `switchyard` process.
pub struct Server {
    child: Child,
    /// The address from the `listening on` line.
    pub addr: SocketAddr,
    /// The server's temporary directory (its working directory).
    pub dir: PathBuf,
    /// The http module's document root.
    pub site: PathBuf,
    /// The `--modules` directory.
    pub modules_dir: PathBuf,
    stderr_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Starts a server with these modules and the default config.
    pub fn start(modules: &[&str]) -> Server {
        ServerBuilder::new(modules).start()
    }

    /// The server's stderr (its log) so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (up to `timeout`) until the log satisfies `pred`.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.log()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes a file under the site root.
    pub fn write_site(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.site.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    /// Installs a module's `.so` into the modules directory the way an
    /// installer should: write under a temporary name, then rename.
    pub fn install_module(&self, name: &str) {
        let bytes = fs::read(module_file(name)).unwrap();
        self.put_module_bytes(name, &bytes);
    }

    /// Replaces an installed module's file by a changed but equivalent one
    /// (same library, a few bytes appended after the ELF image), so the
    /// host sees a new file.
    pub fn change_module(&self, name: &str) {
        let path = self.modules_dir.join(format!("{name}.so"));
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(format!("\0changed {:?}\0", SystemTime::now()).as_bytes());
        self.put_module_bytes(name, &bytes);
    }

    /// Installs module `module`'s `.so` (shipped or `fx_*`) as `<stem>.so`
    /// (write to a hidden temporary name, then rename).
    pub fn install_module_as(&self, module: &str, stem: &str) {
        let bytes = fs::read(module_file(module)).unwrap();
        self.put_module_bytes(stem, &bytes);
    }

    /// Installs arbitrary bytes as `<stem>.so` (write to a hidden temporary
    /// name, then rename).
    pub fn put_module_bytes(&self, name: &str, bytes: &[u8]) {
        let tmp = self.modules_dir.join(format!(".{name}.so.tmp"));
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, self.modules_dir.join(format!("{name}.so"))).unwrap();
    }

    /// Deletes an installed module's file.
    pub fn remove_module(&self, name: &str) {
        fs::remove_file(self.modules_dir.join(format!("{name}.so"))).unwrap();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGTERM`, ...) to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped
        // (we only reap in `wait_exit` / drop).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.exited = Some(st);
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A new connection to the server with read/write timeouts set.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Like [`Server::connect`], from a socket bound to `src` first (any
    /// 127.x.y.z works on Linux loopback), so the server sees a peer other
    /// than 127.0.0.1.
    pub fn connect_from(&self, src: &str) -> Client {
        Client::connect_from(self.addr, src)
    }

    /// Sends one raw request on a new connection and reads one response.
    pub fn request(&self, raw: impl AsRef<[u8]>) -> Response {
        let mut c = self.connect();
        c.send(raw.as_ref());
        let head_only = raw.as_ref().starts_with(b"HEAD ");
        c.read_response(head_only)
    }

    /// `GET <path>` on a new connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
    }

    /// `GET <path>` with extra header lines (each without CRLF).
    pub fn get_with(&self, path: &str, headers: &[&str]) -> Response {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        self.request(req)
    }

    /// Sends one admin command on a new connection and returns the whole
    /// reply: through `END` for `STATUS`, through the summary line for
    /// `RELOAD` (all), one line otherwise.
    pub fn admin(&self, cmd: &str) -> String {
        let mut c = self.connect();
        c.send(format!("{cmd}\n").as_bytes());
        c.read_admin_reply(cmd)
    }

    /// `STATUS`, parsed.
    pub fn status(&self) -> Status {
        Status::parse(&self.admin("STATUS"))
    }

    /// The worker process (the one that runs modules and holds the data),
    /// from `STATUS`'s `worker pid=<pid> ...` line.
    pub fn worker_pid(&self) -> u32 {
        supervision::worker_pid(&self.status())
    }

    /// Polls `STATUS` (up to `timeout`) until `pred` holds; returns the last.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status();
            if pred(&st) || Instant::now() > deadline {
                return st;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.log();
            let tail = &log[log.len().saturating_sub(8000)..];
            eprintln!(
                "---- switchyard log ({}, dir kept) ----\n{tail}\n---- end of log ----",
                self.stderr_path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A client connection with a read buffer (responses may be pipelined):
/// plain TCP, or any other byte stream (a TLS session in the TLS tests).
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
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
        let stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
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
    fn try_fill(&mut self) -> Result<bool, String> {
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
                Err(e) => {
                    return Err(format!(
                        "read from server: {e} (buffered so far: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ))
                }
            }
        }
    }

    /// Reads more bytes into the buffer; false on EOF, panics on error.
    fn fill(&mut self) -> bool {
        self.try_fill().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one line (through `\n`), returned without the line ending.
    pub fn read_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line).into_owned();
                return s.trim_end_matches(['\r', '\n']).to_string();
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
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line).into_owned();
                return Ok(s.trim_end_matches(['\r', '\n']).to_string());
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
}

impl Client {
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

/// One module line of `STATUS`.
#[derive(Debug, Clone)]
pub struct ModuleStatus {
    pub name: String,
    pub version: String,
    pub gen: u64,
    pub state: String,
    pub conns: u64,
    pub requests: u64,
    pub faults: u64,
    pub line: String,
}

/// A parsed `STATUS` reply. Parsing checks the framing (`OK status`,
/// module lines sorted by name, the `host` line, `END`) and reads fields by
/// key; [`Status::assert_exact_format`] checks the field order too.
#[derive(Debug)]
pub struct Status {
    pub modules: Vec<ModuleStatus>,
    /// The `job <module>/<job> ...` lines (after the modules).
    pub jobs: Vec<JobStatus>,
    /// The `host ...` line.
    pub host_line: String,
    /// The lines between the `host` line and `END`: `worker pid=<pid>
    /// uptime=<N>s`, `fault ...`, `quarantined ...`.
    pub after: Vec<String>,
    pub raw: String,
}

impl Status {
    pub fn parse(raw: &str) -> Status {
        let lines: Vec<&str> = raw.lines().collect();
        assert!(lines.len() >= 3, "STATUS reply too short: {raw:?}");
        assert_eq!(lines[0], "OK status", "STATUS reply: {raw:?}");
        assert_eq!(*lines.last().unwrap(), "END", "STATUS reply: {raw:?}");
        // The `host` line, then (leader/worker mode) `worker ...`, `fault
        // ...` and `quarantined ...` lines, then `END`.
        let host_idx = lines
            .iter()
            .rposition(|l| l.starts_with("host "))
            .unwrap_or(lines.len() - 2);
        let host_line = lines[host_idx];
        assert!(host_line.starts_with("host "), "host line: {host_line:?}");
        let after: Vec<String> = lines[host_idx + 1..lines.len() - 1]
            .iter()
            .map(|l| l.to_string())
            .collect();
        for l in &after {
            assert!(
                ["worker ", "fault ", "quarantined "]
                    .iter()
                    .any(|p| l.starts_with(p)),
                "unexpected STATUS line after the host line: {l:?} in {raw:?}"
            );
        }
        let body = &lines[1..host_idx];
        let first_job = body.iter().position(|l| is_job_line(l));
        let (module_lines, job_lines) = body.split_at(first_job.unwrap_or(body.len()));
        let modules: Vec<ModuleStatus> =
            module_lines.iter().map(|l| parse_module_line(l)).collect();
        let jobs: Vec<JobStatus> = job_lines.iter().map(|l| JobStatus::parse(l)).collect();
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "STATUS modules not sorted by name: {raw:?}");
        Status {
            modules,
            jobs,
            host_line: host_line.to_string(),
            after,
            raw: raw.to_string(),
        }
    }

    /// Asserts every line has exactly the contract's fields in order:
    /// `<name> v<version> gen=<N> state=<s> conns=<N> requests=<N>
    /// faults=<N>[ <extra>]` and `host conns=<N> accepted=<N> requests=<N>
    /// faults=<N> loops=<N> threads=<N> uptime=<N>s`.
    pub fn assert_exact_format(&self) {
        for m in &self.modules {
            let t: Vec<&str> = m.line.splitn(8, ' ').collect();
            let keys: Vec<&str> = t
                .iter()
                .skip(2)
                .take(5)
                .map(|tok| tok.split('=').next().unwrap())
                .collect();
            assert_eq!(
                keys,
                ["gen", "state", "conns", "requests", "faults"],
                "STATUS module line not in the contract's format: {:?}",
                m.line
            );
        }
        let t: Vec<&str> = self.host_line.split(' ').collect();
        let keys: Vec<&str> = t[1..]
            .iter()
            .map(|tok| tok.split('=').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["conns", "accepted", "requests", "faults", "loops", "threads", "uptime"],
            "STATUS host line not in the contract's format: {:?}",
            self.host_line
        );
        for (i, tok) in t[1..].iter().enumerate() {
            let v = tok.split_once('=').unwrap().1;
            let v = if i == 6 {
                v.strip_suffix('s').unwrap_or("uptime without s")
            } else {
                v
            };
            assert!(
                v.parse::<u64>().is_ok(),
                "host line field {tok:?} not a number: {:?}",
                self.host_line
            );
        }
    }

    /// The line for module `name`, if listed.
    pub fn module(&self, name: &str) -> Option<&ModuleStatus> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The line for module `name`; panics if it is not listed.
    pub fn expect(&self, name: &str) -> &ModuleStatus {
        self.module(name)
            .unwrap_or_else(|| panic!("module {name} not in STATUS:\n{}", self.raw))
    }

    /// A numeric field of the host line (`uptime` without its `s`).
    pub fn host_field(&self, key: &str) -> u64 {
        kv(&self.host_line, key)
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or_else(|| panic!("host line has no numeric {key}=: {:?}", self.host_line))
    }
}

/// The value of the first `key=value` token of `line`.
fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// `<name> v<version> gen=<N> state=<s> conns=<N> requests=<N> faults=<N>[ <extra>]`,
/// read by key (the order is checked by [`Status::assert_exact_format`]).
fn parse_module_line(line: &str) -> ModuleStatus {
    let bad = |why: &str| -> ! { panic!("STATUS module line {line:?}: {why}") };
    let mut t = line.split(' ');
    let name = t.next().unwrap_or_else(|| bad("empty"));
    let version = t
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .unwrap_or_else(|| bad("no v<version> after the name"));
    let num = |key: &str| -> u64 {
        kv(line, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| bad(&format!("no numeric {key}=")))
    };
    let state = kv(line, "state").unwrap_or_else(|| bad("no state="));
    if !["running", "reloading", "draining"].contains(&state) {
        bad("unknown state");
    }
    ModuleStatus {
        name: name.to_string(),
        version: version.to_string(),
        gen: num("gen"),
        state: state.to_string(),
        conns: num("conns"),
        requests: num("requests"),
        faults: num("faults"),
        line: line.to_string(),
    }
}

impl ModuleStatus {
    /// The raw value of a `key=value` field (module extras included).
    pub fn field(&self, key: &str) -> Option<&str> {
        kv(&self.line, key)
    }

    /// A numeric `key=value` field; panics if missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        self.field(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("STATUS module line has no numeric {key}=: {:?}", self.line))
    }
}

/// Splits a `RELOAD` reply into lines, checking the summary line's format.
/// Returns (per-module lines, [loaded, unchanged, removed, failed]).
pub fn parse_reload(reply: &str) -> (Vec<String>, [u64; 4]) {
    let lines: Vec<String> = reply.lines().map(str::to_string).collect();
    let summary = lines.last().expect("empty RELOAD reply");
    let rest = summary
        .strip_prefix("OK reload: ")
        .or_else(|| summary.strip_prefix("ERR reload: "))
        .unwrap_or_else(|| panic!("RELOAD summary line {summary:?}"));
    let nums: Vec<u64> = rest
        .split(", ")
        .zip(["loaded", "unchanged", "removed", "failed"])
        .map(|(part, word)| {
            let (n, w) = part
                .split_once(' ')
                .unwrap_or_else(|| panic!("RELOAD summary {summary:?}"));
            assert_eq!(w, word, "RELOAD summary {summary:?}");
            n.parse()
                .unwrap_or_else(|_| panic!("RELOAD summary {summary:?}"))
        })
        .collect();
    assert_eq!(nums.len(), 4, "RELOAD summary {summary:?}");
    let failed = nums[3];
    assert_eq!(
        summary.starts_with("ERR"),
        failed > 0,
        "RELOAD summary must start with ERR exactly when something failed: {summary:?}"
    );
    (
        lines[..lines.len() - 1].to_vec(),
        [nums[0], nums[1], nums[2], nums[3]],
    )
}

/// Asserts the path exists (a readable message otherwise).
pub fn assert_exists(p: &Path) {
    assert!(p.exists(), "{} does not exist", p.display());
}

/// Whether a `STATUS` line is a job line: `job <module>/<job> ...`.
fn is_job_line(line: &str) -> bool {
    line.starts_with("job ") && line.split(' ').nth(1).is_some_and(|t| t.contains('/'))
}

/// One `job <module>/<job> key=value ...` line of `STATUS`; values may be
/// double-quoted with `\"` and `\\` escapes.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// `<module>/<job>`.
    pub name: String,
    pub fields: Vec<(String, String)>,
    pub line: String,
}

impl JobStatus {
    pub fn parse(line: &str) -> JobStatus {
        let bad = |why: &str| -> ! { panic!("STATUS job line {line:?}: {why}") };
        let rest = line
            .strip_prefix("job ")
            .unwrap_or_else(|| bad("no job prefix"));
        let (name, mut rest) = rest.split_once(' ').unwrap_or_else(|| bad("no fields"));
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once('=')
                .unwrap_or_else(|| bad("field without ="));
            let (value, after) = if let Some(q) = after.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => v.push(chars.next().unwrap_or_else(|| bad("escape")).1),
                        Some((i, '"')) => break i + 1,
                        Some((_, c)) => v.push(c),
                        None => bad("unterminated quote"),
                    }
                };
                (v, &q[end..])
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            fields.push((key.to_string(), value));
            rest = after.strip_prefix(' ').unwrap_or(after);
        }
        for key in [
            "schedule",
            "state",
            "last_start",
            "duration_ms",
            "result",
            "next",
            "runs",
            "skipped",
            "failed",
            "message",
        ] {
            if !fields.iter().any(|(k, _)| k == key) {
                bad(&format!("no {key}="));
            }
        }
        JobStatus {
            name: name.to_string(),
            fields,
            line: line.to_string(),
        }
    }

    /// A field's (unquoted) value; panics if missing.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("STATUS job line has no {key}=: {:?}", self.line))
    }

    /// A numeric field; panics if missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("STATUS job line: {key}= is not a number: {:?}", self.line))
    }
}

impl Status {
    /// The line of job `<module>/<job>`, if listed.
    pub fn job(&self, name: &str) -> Option<&JobStatus> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The line of job `<module>/<job>`; panics if it is not listed.
    pub fn expect_job(&self, name: &str) -> &JobStatus {
        self.job(name)
            .unwrap_or_else(|| panic!("job {name} not in STATUS:\n{}", self.raw))
    }
}

impl ServerBuilder {
    /// Writes a file relative to the server's own directory, where its
    /// config file lives (e.g. `tls/cert.pem`, so that a config line
    /// `cert = "tls/cert.pem"` finds it as written).
    pub fn config_file(self, rel: &str, contents: impl Into<Vec<u8>>) -> Self {
        // `file` writes under `<dir>/site`, which exists by then.
        self.file(&format!("../{rel}"), contents)
    }
}

// ---- Proxy tests: upstream servers on loopback, STATUS fields, RSS ----

/// A TCP upstream for proxy tests, on its own threads: greets every
/// connection with `<tag>\n`, echoes what it reads, and at EOF writes
/// `BYE <bytes received>\n` and closes (so a half-closed client still gets
/// a reply). [`EchoUpstream::kill`] stops it like a crash: the port refuses
/// connections and open ones are reset.
pub struct EchoUpstream {
    pub addr: SocketAddr,
    pub tag: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    accepted: std::sync::Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoUpstream {
    /// On a free loopback port.
    pub fn start(tag: &str) -> EchoUpstream {
        EchoUpstream::start_on("127.0.0.1:0".parse().unwrap(), tag)
    }

    /// On `addr` (retried for a few seconds while the port is busy, e.g.
    /// to restart a killed upstream on its old port).
    pub fn start_on(addr: SocketAddr, tag: &str) -> EchoUpstream {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind upstream {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let (stop2, open2, accepted2, tag2) = (
            stop.clone(),
            open.clone(),
            accepted.clone(),
            tag.to_string(),
        );
        let thread = thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                accepted2.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = s.try_clone() {
                    open2.lock().unwrap().push(c);
                }
                let tag = tag2.clone();
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                    if s.write_all(format!("{tag}\n").as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut n = 0usize;
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(k) => {
                                n += k;
                                if s.write_all(&buf[..k]).is_err() {
                                    return;
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => return,
                        }
                    }
                    let _ = s.write_all(format!("BYE {n}\n").as_bytes());
                    let _ = s.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        EchoUpstream {
            addr,
            tag: tag.to_string(),
            stop,
            open,
            accepted,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far (health checks included).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening (the port then refuses connections) and resets
    /// every open connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = t.join();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address nothing listens on (bound, then released).
pub fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One route of the proxy module's `STATUS` text:
/// `NAME:active=N,conns=N,...,upstreams=ADDR(STATE,w=N,active=N)+...`.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    pub name: String,
    pub fields: Vec<(String, u64)>,
    /// (address, state, weight, active).
    pub upstreams: Vec<(String, String, u64, u64)>,
}

impl ProxyRoute {
    /// A numeric route field (`active`, `conns`, `failed`, `bytes_up`, ...).
    pub fn num(&self, key: &str) -> u64 {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("proxy route {} has no {key}: {self:?}", self.name))
    }

    /// The state of upstream `addr` (`up`, `down`, `failed`).
    pub fn state(&self, addr: SocketAddr) -> &str {
        let a = addr.to_string();
        self.upstreams
            .iter()
            .find(|u| u.0 == a)
            .map(|u| u.1.as_str())
            .unwrap_or_else(|| panic!("proxy route {} has no upstream {a}: {self:?}", self.name))
    }
}

impl Status {
    /// The proxy module's routes, parsed from its STATUS line.
    pub fn proxy_routes(&self) -> Vec<ProxyRoute> {
        let line = &self.expect("proxy").line;
        let mut tokens = line.split(' ').skip_while(|t| !t.starts_with("routes="));
        let count: usize = tokens
            .next()
            .and_then(|t| t["routes=".len()..].parse().ok())
            .unwrap_or_else(|| panic!("proxy STATUS line without routes=N: {line:?}"));
        let routes: Vec<ProxyRoute> = tokens
            .map(|t| {
                let (name, rest) = t
                    .split_once(":active=")
                    .unwrap_or_else(|| panic!("proxy route token {t:?}"));
                let (fields, ups) = rest
                    .split_once(",upstreams=")
                    .unwrap_or_else(|| panic!("proxy route token {t:?}"));
                let fields = format!("active={fields}")
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.parse().unwrap())
                    })
                    .collect();
                let upstreams = ups
                    .split('+')
                    .map(|u| {
                        let (addr, inner) = u.split_once('(').unwrap();
                        let inner = inner.trim_end_matches(')');
                        let mut parts = inner.split(',');
                        let state = parts.next().unwrap().to_string();
                        let num = |p: Option<&str>, k: &str| -> u64 {
                            p.and_then(|p| p.strip_prefix(k))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or_else(|| panic!("proxy upstream {u:?}"))
                        };
                        let w = num(parts.next(), "w=");
                        let active = num(parts.next(), "active=");
                        (addr.to_string(), state, w, active)
                    })
                    .collect();
                ProxyRoute {
                    name: name.to_string(),
                    fields,
                    upstreams,
                }
            })
            .collect();
        assert_eq!(routes.len(), count, "proxy STATUS line: {line:?}");
        routes
    }

    /// The proxy route called `name`.
    pub fn proxy_route(&self, name: &str) -> ProxyRoute {
        self.proxy_routes()
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no proxy route {name} in STATUS:\n{}", self.raw))
    }
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process in bytes (0 when it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    rss_kib(pid) * 1024
}

/// 64-bit FNV-1a, for checking that bulk transfers arrive intact.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Fills `buf` with the next bytes of a xorshift stream.
pub fn fill_pseudo(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

impl Client {
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

/// `pid` and its descendants (modules may run in a worker process).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        for task in std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// Descriptors open in `pid` and its descendants on a file whose path
/// contains `needle`.
pub fn open_descriptors(pid: u32, needle: &str) -> usize {
    process_tree(pid)
        .iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains(needle))
        .count()
}
