//! Upstream servers for the proxy tests, on loopback: an echo server that
//! can be killed like a crash, and an address nothing listens on.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

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
