//! Starting the real `switchyard` binary for a test: [`ServerBuilder`]
//! describes the directory (site, modules, config file, command line), and
//! [`Server`] runs it on an ephemeral loopback port, reads its log, installs
//! and replaces module files, and opens clients to it. Servers are killed
//! when their [`Server`] drops; if the test failed, the server's log is
//! printed and its directory kept.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{supervision, Client, Response, Status};

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

/// Asserts the path exists (a readable message otherwise).
pub fn assert_exists(p: &Path) {
    assert!(p.exists(), "{} does not exist", p.display());
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

    /// Writes a file relative to the server's own directory, where its
    /// config file lives (e.g. `tls/cert.pem`, so that a config line
    /// `cert = "tls/cert.pem"` finds it as written).
    pub fn config_file(self, rel: &str, contents: impl Into<Vec<u8>>) -> Self {
        // `file` writes under `<dir>/site`, which exists by then.
        self.file(&format!("../{rel}"), contents)
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
