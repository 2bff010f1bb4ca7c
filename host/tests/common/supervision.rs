//! Helpers for the tests of the leader/worker model: the worker's line in
//! `STATUS`, waiting for a replacement worker, and client load that counts
//! every refused connection and failed request while workers come and go.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Client, Server, Status, INDEX_HTML};

/// `worker pid=<pid> ...` from `STATUS`.
pub fn worker_pid(st: &Status) -> u32 {
    st.after
        .iter()
        .find_map(|l| l.strip_prefix("worker pid="))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no `worker pid=` line in STATUS:\n{}", st.raw))
}

pub fn line<'a>(st: &'a Status, prefix: &str) -> Option<&'a str> {
    st.after
        .iter()
        .find(|l| l.starts_with(prefix))
        .map(|s| s.as_str())
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// Polls `STATUS` until a worker other than `old` answers.
pub fn wait_new_worker(s: &Server, old: u32) -> Status {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = s.connect();
        c.send_lenient(b"STATUS\n");
        if let Ok(first) = c.try_read_line() {
            let mut raw = format!("{first}\n");
            while let Ok(l) = c.try_read_line() {
                raw.push_str(&l);
                raw.push('\n');
                if l == "END" {
                    break;
                }
            }
            if raw.ends_with("END\n") {
                let st = Status::parse(&raw);
                if worker_pid(&st) != old {
                    return st;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new worker within 5 s; log:\n{}",
            s.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Clients looping on `GET /`, one new connection per request.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    connect_errors: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    told_close: Arc<AtomicU64>,
    handles: Vec<JoinHandle<()>>,
}

impl Load {
    /// `clients` threads asking for `/` back to back: with `keep_alive`, on
    /// one connection until the server says `Connection: close` (then on a
    /// new one); otherwise one request per connection.
    pub fn start(addr: SocketAddr, clients: usize, keep_alive: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let connect_errors = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let told_close = Arc::new(AtomicU64::new(0));
        let handles = (0..clients)
            .map(|_| {
                let (stop, ok, ce, failed, told_close) = (
                    stop.clone(),
                    ok.clone(),
                    connect_errors.clone(),
                    failed.clone(),
                    told_close.clone(),
                );
                thread::spawn(move || {
                    let request: &[u8] = if keep_alive {
                        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                    } else {
                        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        else {
                            ce.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        let mut c = Client::from_stream(stream);
                        // One connection: requests until it is told to close.
                        loop {
                            let resp = match c.stream.write_all(request) {
                                Ok(()) => c.try_read_response(false).ok(),
                                Err(_) => None,
                            };
                            let Some(r) =
                                resp.filter(|r| r.status == 200 && r.body == INDEX_HTML.as_bytes())
                            else {
                                failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            };
                            ok.fetch_add(1, Ordering::Relaxed);
                            let close = r
                                .header("connection")
                                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                            if close && keep_alive {
                                told_close.fetch_add(1, Ordering::Relaxed);
                            }
                            if close || !keep_alive || stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            connect_errors,
            failed,
            told_close,
            handles,
        }
    }

    /// Stops the clients: (ok, connect errors, failed requests, responses
    /// that said `Connection: close` to a keep-alive client).
    pub fn finish(self) -> (u64, u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.connect_errors.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.told_close.load(Ordering::Relaxed),
        )
    }
}

/// A numeric field of the `worker ...` line of `STATUS` (e.g.
/// `auto_upgrades`); panics when missing.
pub fn worker_field(st: &Status, key: &str) -> u64 {
    line(st, "worker ")
        .and_then(|l| {
            l.split(' ')
                .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key}= on the worker line:\n{}", st.raw))
}
