//! Running one job: a command, an HTTP ping or a bus message. Each runs on
//! a host job thread and may block; each returns a one-line summary or the
//! reason it failed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use module_api::{CallStatus, Host};
use serde_json::{json, Value};

use crate::config::{Command, Http, Publish};

/// Bytes of each output stream kept for the log.
pub const OUTPUT_LIMIT: usize = 4096;
/// How long to wait for the output pipes to close once the process ended
/// (a background grandchild may hold them open).
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// Runs a command in its own process group, captures the start of its
/// output into the log and kills the group when the timeout passes.
pub fn command(job: &str, c: &Command) -> Result<String, String> {
    if let Some(dir) = &c.cwd {
        if !dir.is_dir() {
            return Err(format!("cwd {}: not a directory", dir.display()));
        }
    }
    let mut cmd = std::process::Command::new(&c.argv[0]);
    cmd.args(&c.argv[1..])
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &c.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", c.argv[0]))?;
    let pid = child.id();
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("cron-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait());
        })
        .map_err(|e| format!("cannot wait for the process: {e}"))?;

    let (status, timed_out) = match rx.recv_timeout(c.timeout) {
        Ok(status) => (status, false),
        Err(_) => {
            // The whole group: a shell's children die with it.
            // SAFETY: kill(2) on the process group we created; its leader
            // is not reaped yet (the waiter has not returned).
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
            (
                rx.recv()
                    .unwrap_or_else(|_| Err(std::io::Error::other("waiter gone"))),
                true,
            )
        }
    };
    let out = stdout.recv_timeout(PIPE_GRACE).unwrap_or_default();
    let err = stderr.recv_timeout(PIPE_GRACE).unwrap_or_default();
    log_output(job, "stdout", &out);
    log_output(job, "stderr", &err);

    let status = status.map_err(|e| format!("cannot wait for the process: {e}"))?;
    if timed_out {
        return Err(format!(
            "timed out after {}, killed",
            humantime::format_duration(c.timeout)
        ));
    }
    if status.success() {
        Ok(match first_line(&out.kept) {
            Some(l) => format!("exit status 0: {l}"),
            None => "exit status 0".to_string(),
        })
    } else {
        Err(match first_line(&err.kept) {
            Some(l) => format!("{}: {l}", describe(status)),
            None => describe(status),
        })
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// The start of one output stream and its total size.
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    total: usize,
}

/// Reads a pipe to its end on a thread, keeping the first
/// [`OUTPUT_LIMIT`] bytes (the rest is read and dropped so that the
/// process never blocks on a full pipe).
fn capture(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Output> {
    let (tx, rx) = mpsc::channel();
    let Some(mut pipe) = pipe else {
        let _ = tx.send(Output::default());
        return rx;
    };
    let spawned = thread::Builder::new()
        .name("cron-output".into())
        .spawn(move || {
            let mut out = Output::default();
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = OUTPUT_LIMIT.saturating_sub(out.kept.len());
                        out.kept.extend_from_slice(&buf[..n.min(room)]);
                        out.total += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(out);
        });
    if let Err(e) = spawned {
        log::warn!("cannot capture output: {e}");
    }
    rx
}

fn log_output(job: &str, stream: &str, out: &Output) {
    if out.total == 0 {
        return;
    }
    let text = String::from_utf8_lossy(&out.kept);
    for line in text.lines() {
        log::info!("job {job} {stream}| {line}");
    }
    if out.total > out.kept.len() {
        log::info!(
            "job {job} {stream}: {} more bytes not shown",
            out.total - out.kept.len()
        );
    }
}

fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(120).collect())
}

/// `GET`s a loopback URL; 2xx is success. The status is the summary.
pub fn http(h: &Http) -> Result<String, String> {
    let deadline = Instant::now() + h.timeout;
    let addrs: Vec<SocketAddr> = (h.host.as_str(), h.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", h.host))?
        .filter(|a| a.ip().is_loopback())
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{} does not resolve to a loopback address", h.host))?;
    let mut s = TcpStream::connect_timeout(addr, h.timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let host_header = match (h.host.contains(':'), h.port) {
        (true, 80) => format!("[{}]", h.host),
        (true, p) => format!("[{}]:{p}", h.host),
        (false, 80) => h.host.clone(),
        (false, p) => format!("{}:{p}", h.host),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: switchyard-cron/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        h.path,
        env!("CARGO_PKG_VERSION")
    );
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;

    // Read the status line (the rest of the response does not matter).
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let line = loop {
        if let Some(nl) = head.iter().position(|&b| b == b'\n') {
            break String::from_utf8_lossy(&head[..nl]).trim_end().to_string();
        }
        if head.len() > 8192 {
            return Err("no status line in the first 8 KiB".into());
        }
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => return Err("the server closed without a response".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "no response within {}: {e}",
                    humantime::format_duration(h.timeout)
                ))
            }
            Err(e) => return Err(format!("cannot read the response: {e}")),
        }
    };
    let mut parts = line.splitn(3, ' ');
    let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => code,
        _ => return Err(format!("bad status line {line:?}")),
    };
    let reason = parts.next().unwrap_or("").trim();
    let summary = format!("HTTP {status} {reason}").trim_end().to_string();
    if (200..300).contains(&status) {
        Ok(summary)
    } else {
        Err(summary)
    }
}

/// Publishes `data` on `topic` by calling the bus module in-process with a
/// JSON-RPC `bus.publish` request.
pub fn publish(host: &Host, p: &Publish, id: u64) -> Result<String, String> {
    let request = json!({
        "jsonrpc": "2.0",
        "method": "bus.publish",
        "params": {"topic": p.topic, "data": p.data},
        "id": id,
    });
    let mut line = request.to_string().into_bytes();
    line.push(b'\n');
    let reply = host.call(&p.module, &line).map_err(|status| match status {
        CallStatus::NoSuchModule => format!("no module {:?} is running", p.module),
        CallStatus::Unavailable => format!("module {} is reloading or removed", p.module),
        CallStatus::Incomplete => format!("module {} did not take the request", p.module),
        CallStatus::Fault => format!("module {} faulted", p.module),
        CallStatus::Ok => unreachable!("Ok is not an error"),
    })?;
    let text = String::from_utf8_lossy(&reply);
    let first = text.lines().next().unwrap_or("").trim();
    let reply: Value = serde_json::from_str(first)
        .map_err(|e| format!("module {} answered {first:?}: {e}", p.module))?;
    if let Some(err) = reply.get("error") {
        let msg = err["message"]
            .as_str()
            .map_or_else(|| err.to_string(), str::to_string);
        return Err(format!("{}: {msg}", p.module));
    }
    match reply.get("result") {
        Some(Value::Null) | None => Ok(format!("published to {:?}", p.topic)),
        Some(r) => Ok(format!("published to {:?}: {r}", p.topic)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cmd(argv: &[&str], timeout_ms: u64) -> Command {
        Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: vec![("CRON_TEST".into(), "yes".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[test]
    fn commands() {
        assert_eq!(
            command("t", &cmd(&["sh", "-c", "echo $CRON_TEST"], 5000)),
            Ok("exit status 0: yes".into())
        );
        assert_eq!(
            command("t", &cmd(&["sh", "-c", "echo no >&2; exit 3"], 5000)),
            Err("exit status 3: no".into())
        );
        let t0 = Instant::now();
        let e = command("t", &cmd(&["sh", "-c", "sleep 5; echo late"], 200)).unwrap_err();
        assert!(e.starts_with("timed out after 200ms"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert!(command("t", &cmd(&["/no/such/program"], 1000))
            .unwrap_err()
            .starts_with("cannot run"));
        let mut c = cmd(&["pwd"], 1000);
        c.cwd = Some(PathBuf::from("/"));
        assert_eq!(command("t", &c), Ok("exit status 0: /".into()));
        c.cwd = Some(PathBuf::from("/no/such/dir"));
        assert!(command("t", &c).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn output_is_bounded() {
        let r = command("t", &cmd(&["sh", "-c", "head -c 100000 /dev/zero"], 5000));
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn http_status() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            for (i, s) in l.incoming().take(2).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap();
                assert!(buf[..n].starts_with(b"GET /ping HTTP/1.1\r\n"));
                let status = if i == 0 { "200 OK" } else { "503 Busy" };
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let h = Http {
            url: String::new(),
            host: "127.0.0.1".into(),
            port,
            path: "/ping".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(http(&h), Ok("HTTP 200 OK".into()));
        assert_eq!(http(&h), Err("HTTP 503 Busy".into()));
        server.join().unwrap();
    }
}
