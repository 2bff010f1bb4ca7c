//! Testing a module without a host (feature `testing`): [`FakeHost`], the
//! host's services recorded in memory, and [`Harness`], which starts a
//! module on a fake host and hands it bytes the way the host would.
//!
//! Enable it for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! switchyard_module_api = { path = "../../module_api", features = ["testing"] }
//! ```
//!
//! A test then reads like a conversation with the module:
//!
//! ```
//! use module_api::testing::Harness;
//! use module_api::{http, ConnInfo, Handler, Manifest, Out, StartContext, Verdict};
//!
//! fn manifest() -> Manifest {
//!     Manifest::new("hello", "0.1.0").bind("GET /hello")
//! }
//!
//! struct Hello(String);
//!
//! fn start(ctx: StartContext<'_>) -> Result<Hello, String> {
//!     log::info!("starting");
//!     Ok(Hello(ctx.config["greeting"].as_str().unwrap_or("hi").into()))
//! }
//!
//! impl Handler for Hello {
//!     fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
//!         http::handle_simple(conn, input, out, |_, _| {
//!             (200, "text/plain", self.0.as_bytes().to_vec())
//!         })
//!     }
//! }
//!
//! let h = Harness::start(manifest, start, serde_json::json!({ "greeting": "hey" })).unwrap();
//! let request = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
//! let reply = h.send(request);
//! assert_eq!(reply.verdict, Verdict::done(request.len()));
//! let page = reply.http();
//! assert_eq!(page.status, 200);
//! assert_eq!(page.header("content-type"), Some("text/plain"));
//! assert_eq!(page.body, b"hey");
//! assert_eq!(h.host().log_lines(), ["starting"]);
//! ```
//!
//! What it does not model: the host's event loops and timing, connection
//! output budgets, and records logged from threads the module spawns (the
//! fake logger captures records of the thread that calls the harness).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};

/// `json!` and `Value` for a module's config, so a test needs no
/// dependency of its own on serde_json.
pub use serde_json::{json, Value};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RSlice, RStr, RString, RVec};

use crate::abi::{HostServices, HostServices_TO, Module};
use crate::export::Guarded;
use crate::{
    Action, CallStatus, ConnInfo, Handler, Host, JobSpec, LogLevel, Manifest, StartContext, Verdict,
};

/// A stub answering [`Host::call`] for one module name.
type CallStub = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, CallStatus> + Send + Sync>;

/// One [`Host::push`] (or one connection's share of [`Host::push_many`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The connection pushed to.
    pub conn: u64,
    /// The bytes queued for it.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Recorded {
    logs: Vec<(LogLevel, String)>,
    pushes: Vec<Push>,
    calls: HashMap<String, CallStub>,
    peers: HashMap<u64, Vec<String>>,
    gone: HashSet<u64>,
}

struct FakeState {
    data_dir: PathBuf,
    recorded: Mutex<Recorded>,
}

impl Drop for FakeState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The host's services, recorded in memory: log records, pushes, a table
/// of stubs for calls to other modules, client-certificate names per
/// connection and a fresh data directory (removed when the last clone of
/// the `FakeHost` is dropped). Clones share everything.
#[derive(Clone)]
pub struct FakeHost {
    state: Arc<FakeState>,
}

impl Default for FakeHost {
    fn default() -> FakeHost {
        FakeHost::new()
    }
}

impl FakeHost {
    /// A fake host with an empty, freshly made data directory.
    pub fn new() -> FakeHost {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let data_dir =
            std::env::temp_dir().join(format!("switchyard-module-test-{}-{n}", std::process::id()));
        // A directory left by an earlier process with the same id would
        // leak its files into this test.
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).expect("create the fake host's data directory");
        FakeHost {
            state: Arc::new(FakeState {
                data_dir,
                recorded: Mutex::new(Recorded::default()),
            }),
        }
    }

    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide what was recorded.
        self.state
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The module's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.state.data_dir
    }

    /// Every record logged so far, with its level.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.recorded().logs.clone()
    }

    /// The text of every record logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.recorded()
            .logs
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Every push so far, in order.
    pub fn pushes(&self) -> Vec<Push> {
        self.recorded().pushes.clone()
    }

    /// Answers [`Host::call`]s to `module` with `stub`; calls to a module
    /// without a stub get [`CallStatus::NoSuchModule`].
    pub fn on_call(
        &self,
        module: &str,
        stub: impl Fn(&[u8]) -> Result<Vec<u8>, CallStatus> + Send + Sync + 'static,
    ) {
        self.recorded()
            .calls
            .insert(module.to_string(), Box::new(stub));
    }

    /// The names [`Host::peer_identity`] reports for connection `conn`.
    pub fn set_peer_identity(&self, conn: u64, names: &[&str]) {
        let names = names.iter().map(|s| s.to_string()).collect();
        self.recorded().peers.insert(conn, names);
    }

    /// Connection `conn` is gone: pushes to it return `false` and are not
    /// recorded. Every other connection exists.
    pub fn disconnect(&self, conn: u64) {
        self.recorded().gone.insert(conn);
    }

    fn record_log(&self, level: LogLevel, line: String) {
        self.recorded().logs.push((level, line));
    }
}

/// What a module sees: the ABI trait over the fake host's state. It holds
/// the state weakly: a generation keeps its host handle forever (it is
/// `'static`), and must not keep the data directory alive after the test.
struct Services {
    state: Weak<FakeState>,
    data_dir: PathBuf,
}

impl Services {
    fn new(host: &FakeHost) -> Services {
        Services {
            state: Arc::downgrade(&host.state),
            data_dir: host.state.data_dir.clone(),
        }
    }

    /// The fake host, while the test still has it.
    fn host(&self) -> Option<FakeHost> {
        self.state.upgrade().map(|state| FakeHost { state })
    }

    /// A `'static` handle as `StartContext::host` carries it: one small
    /// leak per started module.
    fn leak(host: &FakeHost) -> &'static Host {
        Box::leak(Box::new(Host::new(HostServices_TO::from_value(
            Services::new(host),
            TD_Opaque,
        ))))
    }
}

impl HostServices for Services {
    fn log(&self, level: LogLevel, message: RStr<'_>) {
        if let Some(host) = self.host() {
            host.record_log(level, message.to_string());
        }
    }

    fn log_enabled(&self, _level: LogLevel) -> bool {
        true
    }

    fn data_dir(&self) -> RString {
        self.data_dir.to_string_lossy().into_owned().into()
    }

    fn push(&self, conn: u64, data: RSlice<'_, u8>, _overflow_notice: RSlice<'_, u8>) -> bool {
        let Some(host) = self.host() else {
            return false;
        };
        let mut r = host.recorded();
        if r.gone.contains(&conn) {
            return false;
        }
        r.pushes.push(Push {
            conn,
            data: data.to_vec(),
        });
        true
    }

    fn call(&self, module: RStr<'_>, input: RSlice<'_, u8>, out: &mut RVec<u8>) -> CallStatus {
        let Some(host) = self.host() else {
            return CallStatus::Unavailable;
        };
        let r = host.recorded();
        let Some(stub) = r.calls.get(module.as_str()) else {
            return CallStatus::NoSuchModule;
        };
        match stub(input.as_slice()) {
            Ok(reply) => {
                out.extend_from_copy_slice(&reply);
                CallStatus::Ok
            }
            Err(status) => status,
        }
    }

    fn push_many(
        &self,
        conns: RSlice<'_, u64>,
        data: RSlice<'_, u8>,
        overflow_notice: RSlice<'_, u8>,
    ) -> u32 {
        let sent = conns
            .iter()
            .filter(|&&c| self.push(c, data, overflow_notice))
            .count();
        u32::try_from(sent).unwrap_or(u32::MAX)
    }

    fn wait_begin(&self) -> u64 {
        0
    }

    fn wait_end(&self, _token: u64) {}

    fn peer_identity(&self, conn: u64) -> RVec<RString> {
        let Some(host) = self.host() else {
            return RVec::new();
        };
        let r = host.recorded();
        r.peers
            .get(&conn)
            .map(|names| names.iter().map(|n| RString::from(n.as_str())).collect())
            .unwrap_or_default()
    }
}

thread_local! {
    /// The fake host whose harness is running on this thread: where `log`
    /// records go.
    static CURRENT: RefCell<Option<FakeHost>> = const { RefCell::new(None) };
}

/// Sends the `log` crate's records to the calling thread's [`CURRENT`]
/// fake host.
struct TestLogger;

impl log::Log for TestLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        CURRENT.with(|c| {
            if let Some(host) = c.borrow().as_ref() {
                host.record_log(level, record.args().to_string());
            }
        });
    }

    fn flush(&self) {}
}

/// Runs `f` with `host` receiving this thread's log records.
fn logging_to<T>(host: &FakeHost, f: impl FnOnce() -> T) -> T {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // A test binary that installed its own logger keeps it.
        if log::set_logger(&TestLogger).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
    struct Restore(Option<FakeHost>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(host.clone())));
    f()
}

/// A module started on a [`FakeHost`]: send it bytes, read what it wrote.
///
/// Calls go through the same panic guards as in the host (a panicking
/// handler answers with its protocol's error and a `fault` verdict), and
/// a [`Verdict::defer`] from a module whose manifest does not declare
/// `.defers(true)` fails the test, as the host refuses it.
pub struct Harness<H> {
    module: Guarded<H>,
    manifest: Manifest,
    host: FakeHost,
    conn: ConnInfo,
}

impl<H: Handler> Harness<H> {
    /// Starts a module the way the host does, from the two functions given
    /// to [`crate::export_module!`], with `config` as its
    /// `[modules.<name>]` table and no saved state.
    pub fn start(
        manifest: fn() -> Manifest,
        start: fn(StartContext<'_>) -> Result<H, String>,
        config: serde_json::Value,
    ) -> Result<Harness<H>, String> {
        Harness::start_with(FakeHost::new(), manifest, start, config, &[])
    }

    /// [`Harness::start`] on a given fake host (stubs set beforehand) and
    /// with the state a previous generation saved.
    pub fn start_with(
        host: FakeHost,
        manifest: fn() -> Manifest,
        start: fn(StartContext<'_>) -> Result<H, String>,
        config: serde_json::Value,
        state: &[u8],
    ) -> Result<Harness<H>, String> {
        let manifest = manifest();
        let services = Services::leak(&host);
        let handler = logging_to(&host, || {
            start(StartContext {
                host: services,
                config,
                state,
            })
        })?;
        Ok(Harness::wrap(host, manifest, handler))
    }

    /// A harness around a handler built by the test itself.
    pub fn new(manifest: Manifest, handler: H) -> Harness<H> {
        Harness::wrap(FakeHost::new(), manifest, handler)
    }

    fn wrap(host: FakeHost, manifest: Manifest, handler: H) -> Harness<H> {
        Harness {
            module: Guarded {
                inner: handler,
                protocol: manifest.protocol,
            },
            manifest,
            host,
            conn: ConnInfo::new(1, "127.0.0.1:40000".parse().expect("an address"), false),
        }
    }

    /// The connection messages come from (id 1, `127.0.0.1:40000`); change
    /// it with [`Harness::set_conn`].
    pub fn conn(&self) -> &ConnInfo {
        &self.conn
    }

    /// Sends later messages as `conn` (e.g. a draining host, another peer).
    pub fn set_conn(&mut self, conn: ConnInfo) {
        self.conn = conn;
    }

    /// The fake host: logs, pushes, stubs.
    pub fn host(&self) -> &FakeHost {
        &self.host
    }

    /// The manifest the module declared.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The module's handler, to inspect its state.
    pub fn handler(&self) -> &H {
        &self.module.inner
    }

    /// `input` to `on_message`, as the event loop delivers it.
    pub fn message(&self, input: &[u8]) -> Reply {
        let mut out = RVec::new();
        let verdict = logging_to(&self.host, || {
            self.module
                .on_message(&self.conn, RSlice::from_slice(input), &mut out)
        });
        assert!(
            verdict.action != Action::Defer || self.manifest.defers,
            "module {:?} returned Verdict::defer but its manifest does not declare \
             `.defers(true)`; the host refuses that",
            self.manifest.name.as_str()
        );
        Reply::new(verdict, out)
    }

    /// `input` to `on_deferred`, as a pool thread delivers it.
    pub fn deferred(&self, input: &[u8]) -> Reply {
        let mut out = RVec::new();
        let verdict = logging_to(&self.host, || {
            self.module
                .on_deferred(&self.conn, RSlice::from_slice(input), &mut out)
        });
        Reply::new(verdict, out)
    }

    /// One message the whole way: `on_message`, and when it defers, the
    /// deferred part to `on_deferred` (the host's path). Returns the reply
    /// that answers it.
    pub fn send(&self, input: &[u8]) -> Reply {
        let first = self.message(input);
        if first.verdict.action != Action::Defer {
            return first;
        }
        let consumed = usize::try_from(first.verdict.consumed).expect("a length");
        self.deferred(&input[..consumed])
    }

    /// Runs the job `name` (as `RUN <module> <name>` does).
    pub fn run_job(&self, name: &str) -> Result<String, String> {
        logging_to(&self.host, || {
            self.module.run_job(RStr::from_str(name)).into_result()
        })
        .map(RString::into_string)
        .map_err(RString::into_string)
    }

    /// The jobs the module declares.
    pub fn jobs(&self) -> Vec<JobSpec> {
        logging_to(&self.host, || self.module.jobs()).into_vec()
    }

    /// The module's extra `STATUS` text.
    pub fn status(&self) -> String {
        logging_to(&self.host, || self.module.status()).into_string()
    }

    /// What the module hands to its next generation.
    pub fn save_state(&self) -> Vec<u8> {
        logging_to(&self.host, || self.module.save_state()).into_vec()
    }

    /// Tells the module the connection closed.
    pub fn close(&self) {
        logging_to(&self.host, || self.module.on_close(&self.conn));
    }

    /// Retires the generation (`stop`), as a reload or shutdown does.
    pub fn stop(&self) {
        logging_to(&self.host, || self.module.stop());
    }
}

/// What one call produced: the verdict and the bytes written to `out`.
#[derive(Debug)]
pub struct Reply {
    /// What the module told the host to do.
    pub verdict: Verdict,
    /// The bytes it wrote.
    pub out: Vec<u8>,
}

impl Reply {
    fn new(verdict: Verdict, out: RVec<u8>) -> Reply {
        Reply {
            verdict,
            out: out.into_vec(),
        }
    }

    /// The output as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// The output parsed as one HTTP/1.x response. Panics when it is not
    /// one: a test wants to see that. The body is what follows the head
    /// (a `Verdict::with_file` body is in `verdict.file`, not here).
    pub fn http(&self) -> HttpReply {
        let mut headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&self.out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("not an HTTP response ({other:?}): {:?}", self.text()),
        };
        HttpReply {
            status: resp.code.expect("a status code"),
            headers: resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: self.out[head_len..].to_vec(),
        }
    }
}

/// An HTTP response, parsed by [`Reply::http`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The bytes after the head.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Out, Protocol};

    struct Echo {
        host: &'static Host,
    }

    fn manifest() -> Manifest {
        Manifest::new("echo", "1.0.0")
            .bind("echo ")
            .protocol(Protocol::Raw)
            .defers(true)
    }

    fn start(ctx: StartContext<'_>) -> Result<Echo, String> {
        if ctx.config["refuse"] == true {
            return Err("refused".into());
        }
        log::warn!("state {:?}", String::from_utf8_lossy(ctx.state));
        Ok(Echo { host: ctx.host })
    }

    impl Handler for Echo {
        fn on_message(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
            let Some(end) = input.iter().position(|&b| b == b'\n') else {
                return Verdict::NEED_MORE;
            };
            match &input[..end] {
                b"echo panic" => panic!("asked to"),
                b"echo slow" => Verdict::defer(end + 1),
                b"echo push" => {
                    let pushed = self.host.push(conn.id, b"pushed", b"");
                    out.put(if pushed { "yes\n" } else { "no\n" });
                    Verdict::done(end + 1)
                }
                line => {
                    out.put(line).put("\n");
                    Verdict::done(end + 1)
                }
            }
        }

        fn on_deferred(&self, conn: &ConnInfo, input: &[u8], out: &mut Out) -> Verdict {
            let answer = self
                .host
                .call("other", input)
                .map(|reply| String::from_utf8_lossy(&reply).into_owned());
            out.put(format!(
                "{answer:?} for {:?}\n",
                self.host.peer_identity(conn)
            ));
            Verdict::done(input.len())
        }

        fn status(&self) -> String {
            format!("data_dir={}", self.host.data_dir().display())
        }

        fn run_job(&self, name: &str) -> Result<String, String> {
            match name {
                "ok" => Ok("ran".into()),
                _ => Err(format!("no job {name}")),
            }
        }
    }

    #[test]
    fn starts_sends_and_records() {
        let host = FakeHost::new();
        host.on_call("other", |input| Ok(input.to_ascii_uppercase()));
        host.set_peer_identity(1, &["bot1"]);
        let h = Harness::start_with(host, manifest, start, serde_json::json!({}), b"old").unwrap();
        assert_eq!(h.host().logs(), [(LogLevel::Warn, "state \"old\"".into())]);

        let r = h.message(b"echo hi\necho");
        assert_eq!(r.verdict, Verdict::done(8));
        assert_eq!(r.text(), "echo hi\n");
        assert_eq!(h.message(b"echo hi").verdict, Verdict::NEED_MORE);

        let r = h.send(b"echo slow\n");
        assert_eq!(r.text(), "Ok(\"ECHO SLOW\\n\") for [\"bot1\"]\n");

        assert_eq!(h.message(b"echo push\n").text(), "yes\n");
        h.host().disconnect(1);
        assert_eq!(h.message(b"echo push\n").text(), "no\n");
        assert_eq!(
            h.host().pushes(),
            [Push {
                conn: 1,
                data: b"pushed".to_vec()
            }]
        );

        assert_eq!(h.run_job("ok"), Ok("ran".into()));
        assert_eq!(h.run_job("nope"), Err("no job nope".into()));
        let dir = h.host().data_dir().to_path_buf();
        assert!(dir.is_dir());
        assert_eq!(h.status(), format!("data_dir={}", dir.display()));
        h.stop();
        drop(h);
        assert!(!dir.exists(), "the data directory outlived its fake host");
    }

    #[test]
    fn panics_are_faults_and_refusals_are_errors() {
        let h = Harness::start(manifest, start, serde_json::json!({})).unwrap();
        let r = h.message(b"echo panic\n");
        assert!(r.verdict.fault);
        assert_eq!(r.verdict.action, Action::Close);
        let refused = Harness::start(manifest, start, serde_json::json!({ "refuse": true }));
        assert_eq!(refused.err().as_deref(), Some("refused"));
    }

    #[test]
    #[should_panic(expected = "does not declare `.defers(true)`")]
    fn an_undeclared_defer_fails_the_test() {
        let h = Harness::new(
            Manifest::new("echo", "1.0.0").protocol(Protocol::Raw),
            Echo {
                host: Services::leak(&FakeHost::new()),
            },
        );
        h.message(b"echo slow\n");
    }

    #[test]
    fn parses_http_replies() {
        let r = Reply {
            verdict: Verdict::done(1),
            out: b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nnope"
                .to_vec(),
        };
        let page = r.http();
        assert_eq!(page.status, 404);
        assert_eq!(page.header("content-type"), Some("text/plain"));
        assert_eq!(page.header("x-a"), Some("1"));
        assert_eq!(page.text(), "nope");
    }
}
