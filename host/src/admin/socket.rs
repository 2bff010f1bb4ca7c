//! The admin Unix socket (`[server] admin_socket`), after HAProxy's stats
//! socket: a socket file with mode 0600 that accepts every built-in command
//! from whoever can open it, whatever `admin_from`, `admin_token` and
//! `public_shutdown` say about the public port. File permissions are the
//! access control: only the server's user (and root) can connect.
//!
//! The protocol is the public port's: one command per line, at most
//! [`admin::MAX_LINE`] bytes, replies whose lines begin with `OK` or `ERR`
//! (`STATUS` ends with `END`). `AUTH <token>` answers `OK` without checking:
//! nothing needs unlocking here.
//!
//! Who does what:
//! * [`crate::admin_socket::bind`] creates the file. The leader calls it at start, before its
//!   first worker, and passes the listener to every worker it starts
//!   (`SWITCHYARD_ADMIN_FD`, see [`crate::process::worker`]), so the socket
//!   outlives worker crashes and `UPGRADE`; a `--single` process binds it
//!   itself. Whoever bound it removes the file when it exits
//!   ([`crate::admin_socket::SocketFile`]).
//! * [`serve`] runs in the worker: one `admin-socket` thread accepts, and
//!   each client gets a thread of its own, at most [`MAX_CLIENTS`] at once.
//!   `STATUS` and `RELOAD` run on the control thread, as from the public
//!   port; `RUN` and `UPGRADE` answer through a channel of [`Reply`].
//!
//! A connection is served by the worker that accepted it. After `UPGRADE`
//! (and `SHUTDOWN`) the reply is the last line on that connection: the
//! worker that sent it is draining. Reconnect to talk to the new one.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::{self, Command, Reply};
use crate::admin_socket::SocketError;
use crate::state::Shared;

/// Clients served at once; one more is answered `ERR busy` and closed.
/// Each holds a thread, and the socket is reachable only by the server's
/// own user, so the bound is about a runaway script, not an attacker.
pub const MAX_CLIENTS: usize = 16;

/// How often the accepting thread, and a client's thread waiting for its
/// next line, look at the shutdown flag: a draining worker ends at most
/// this much later because of its admin socket clients.
const TICK: Duration = Duration::from_millis(200);

/// Clients being served.
#[derive(Default)]
struct Clients {
    connected: AtomicUsize,
}

/// The admin socket being served by this process (see [`serve`]).
pub struct Serving {
    clients: Arc<Clients>,
}

impl Serving {
    /// Waits (until `deadline`) for the clients to finish: once the server
    /// drains, each is answered for the commands it has sent and then
    /// closed (see `serve_client`). The worker calls it after its event
    /// loops have ended: `UPGRADE` ends this worker just after the new one
    /// is ready, and its `OK upgrading` line must still reach the client
    /// that asked.
    pub fn finish(&self, deadline: Instant) {
        while self.clients.connected.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Serves the admin socket in this process: starts the `admin-socket`
/// thread that accepts clients until the server shuts down.
pub fn serve(shared: Arc<Shared>, listener: UnixListener) -> Result<Serving, SocketError> {
    // Non-blocking, because during an UPGRADE two workers share the socket:
    // the one that loses the race for a client must not block in accept.
    listener
        .set_nonblocking(true)
        .map_err(SocketError::Listener)?;
    let clients = Arc::new(Clients::default());
    let counts = clients.clone();
    thread::Builder::new()
        .name("admin-socket".into())
        .spawn(move || accept_loop(&shared, &listener, &counts))
        .map_err(SocketError::Thread)?;
    Ok(Serving { clients })
}

/// Accepts clients until shutdown. A draining worker (`SHUTDOWN`, the old
/// worker of an `UPGRADE`) stops accepting, so new clients reach the new
/// worker.
fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener, clients: &Arc<Clients>) {
    while !shared.shutting_down.load(Ordering::Acquire) {
        // The flag again after the wait: a client that connects after
        // this worker began draining belongs to the new worker.
        if !wait_readable(listener, TICK) || shared.shutting_down.load(Ordering::Acquire) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of descriptors, most likely: pause instead of spinning.
                log::warn!("admin socket: accept failed: {e}");
                thread::sleep(TICK);
                continue;
            }
        };
        admit(shared, stream, clients);
    }
    log::info!("admin socket: draining, no longer accepting in this worker");
}

/// Polls the listener for a client, up to `timeout`.
fn wait_readable(listener: &UnixListener, timeout: Duration) -> bool {
    crate::sys::poll_readable(&[listener.as_raw_fd()], timeout) > 0
}

/// Starts a client's thread, or answers `ERR busy` when [`MAX_CLIENTS`]
/// are being served.
fn admit(shared: &Arc<Shared>, stream: UnixStream, clients: &Arc<Clients>) {
    // The accepted socket must block: its thread reads with timeouts.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    if clients.connected.load(Ordering::Acquire) >= MAX_CLIENTS {
        log::warn!("admin socket: {MAX_CLIENTS} clients already connected; refusing one more");
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = (&stream).write_all(Reply::Busy.text().as_bytes());
        return;
    }
    let slot = Connected::new(clients.clone());
    let shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("admin-client".into())
        .spawn(move || {
            let _slot = slot;
            serve_client(&shared, &stream);
        });
    if let Err(e) = spawned {
        log::error!("admin socket: cannot start a client thread: {e}");
    }
}

/// A client's place among the [`MAX_CLIENTS`], given back on drop.
struct Connected(Arc<Clients>);

impl Connected {
    fn new(clients: Arc<Clients>) -> Connected {
        clients.connected.fetch_add(1, Ordering::AcqRel);
        Connected(clients)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the connection does after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Reads the next command.
    Keep,
    /// Closes the connection.
    Close,
    /// Starts the graceful shutdown (the reply is written first), closes.
    Shutdown,
}

/// Runs one client's commands until it closes, goes idle past
/// `idle_timeout_ms`, sends an oversized line or stops reading past
/// `send_timeout_ms`; or, once the server drains, until it has nothing
/// more under way (a command sent is still answered, then the connection
/// closes).
fn serve_client(shared: &Arc<Shared>, stream: &UnixStream) {
    let idle = shared.cfg.idle_timeout();
    // Reads wake up every tick to notice a drain.
    let _ = stream.set_read_timeout(Some(idle.min(TICK)));
    let _ = stream.set_write_timeout(Some(shared.cfg.send_timeout()));
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut partial = Vec::new();
    let mut last_line = Instant::now();
    loop {
        let line = match read_line(&mut reader, &mut partial) {
            Ok(Line::Complete(l)) => {
                last_line = Instant::now();
                l
            }
            Ok(Line::End) => return,
            Ok(Line::TooLong) => {
                log::warn!(
                    "admin socket: a command line longer than {} bytes; closing",
                    admin::MAX_LINE
                );
                let _ = writer.write_all(Reply::LineTooLong.text().as_bytes());
                return;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if partial.is_empty() && shared.shutting_down.load(Ordering::Acquire) {
                    return;
                }
                if last_line.elapsed() >= idle {
                    log::debug!("admin socket: client idle past idle_timeout_ms; closing");
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        let cmd = admin::parse(&line);
        log::info!("{} from admin socket", describe(&cmd));
        let (reply, after) = execute(shared, &cmd);
        if let Err(e) = writer.write_all(reply.text().as_bytes()) {
            log::info!("admin socket: cannot write the reply ({e}); closing");
            return;
        }
        match after {
            After::Keep if !shared.shutting_down.load(Ordering::Acquire) => {}
            After::Shutdown => return shared.shutdown(),
            _ => return,
        }
    }
}

/// One read from a client.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A command line, without its `\n` or `\r\n`. A last line without a
    /// terminator before the client's end of input counts too.
    Complete(Vec<u8>),
    /// More than [`admin::MAX_LINE`] bytes before the line's end.
    TooLong,
    /// The client closed its side.
    End,
}

/// Reads one line of at most [`admin::MAX_LINE`] bytes (terminator not
/// counted), never buffering more than that. `partial` holds what a read
/// that timed out had got of the line so far; it is empty again whenever
/// this returns `Ok`.
fn read_line(r: &mut impl BufRead, partial: &mut Vec<u8>) -> io::Result<Line> {
    let limit = admin::MAX_LINE + 2; // room for "\r\n"
    let room = limit.saturating_sub(partial.len()) as u64;
    let n = Read::take(&mut *r, room).read_until(b'\n', partial)?;
    if n == 0 && partial.is_empty() {
        return Ok(Line::End);
    }
    let mut buf = std::mem::take(partial);
    let ended = buf.last() == Some(&b'\n');
    if ended {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > admin::MAX_LINE || (!ended && buf.len() == limit) {
        return Ok(Line::TooLong);
    }
    Ok(Line::Complete(buf))
}

/// The command as the log shows it (an `AUTH` token is not logged).
fn describe(cmd: &Command) -> String {
    match cmd {
        Command::Reload(name) => format!("RELOAD {}", name.unwrap_or("(all)")),
        Command::Status => "STATUS".into(),
        Command::Close => "CLOSE".into(),
        Command::Shutdown => "SHUTDOWN".into(),
        Command::Upgrade => "UPGRADE".into(),
        Command::Auth(_) => "AUTH (not needed here)".into(),
        Command::Run(module, job) => format!("RUN {module} {job}"),
        Command::Unknown => "an unknown command".into(),
    }
}

/// Runs `cmd` for a socket client, blocking until its reply is ready.
/// Replies are the public port's, word for word.
fn execute(shared: &Arc<Shared>, cmd: &Command) -> (Reply, After) {
    match cmd {
        Command::Status => {
            let s = shared.clone();
            let reply = wait_reply(|to| {
                shared.control.run(move || {
                    let _ = to.send(admin::status(&s));
                })
            });
            (reply, After::Keep)
        }
        Command::Reload(name) => {
            let (s, name) = (shared.clone(), name.map(str::to_owned));
            let reply = wait_reply(|to| {
                shared.control.run(move || {
                    let _ = to.send(admin::reload(&s, name.as_deref()));
                })
            });
            (reply, After::Keep)
        }
        Command::Run(module, job) => {
            let reply = wait_reply(|to| {
                admin::run(shared, module, job, move |r| {
                    let _ = to.send(r);
                })
            });
            (reply, After::Keep)
        }
        Command::Upgrade => {
            let reply = wait_reply(|to| {
                admin::upgrade(shared.clone(), move |r| {
                    let _ = to.send(r);
                })
            });
            if !reply.is_ok() {
                return (reply, After::Keep);
            }
            // This worker drains now: the upgrade thread starts its
            // shutdown just after the reply. The reply waits for that
            // (briefly), so that a client that reconnects once it has read
            // it is accepted by the new worker, never by this one; and the
            // connection closes, because this worker serves no more.
            let deadline = Instant::now() + Duration::from_secs(1);
            while !shared.shutting_down.load(Ordering::Acquire) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            (reply, After::Close)
        }
        Command::Shutdown => (Reply::ShuttingDown, After::Shutdown),
        Command::Close => (Reply::Bye, After::Close),
        // Opening the socket was the authentication.
        Command::Auth(_) => (Reply::Auth(admin::AuthReply::Ok), After::Keep),
        Command::Unknown => (Reply::Unknown, After::Keep),
    }
}

/// Starts a command with a channel as its reply path and waits for the
/// reply ([`Reply::NoReply`] if the command ends without one).
fn wait_reply(start: impl FnOnce(crossbeam_channel::Sender<Reply>)) -> Reply {
    let (tx, rx) = crossbeam_channel::bounded(1);
    start(tx);
    rx.recv().unwrap_or(Reply::NoReply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Every read of `input` through the first that is not a command.
    fn lines(input: &[u8]) -> Vec<Line> {
        let mut r = BufReader::new(Cursor::new(input.to_vec()));
        let mut out = Vec::new();
        let mut partial = Vec::new();
        loop {
            let l = read_line(&mut r, &mut partial).unwrap();
            let more = matches!(l, Line::Complete(_));
            out.push(l);
            if !more {
                return out;
            }
        }
    }

    #[test]
    fn lines_end_in_lf_or_crlf_and_the_last_may_lack_one() {
        assert_eq!(
            lines(b"STATUS\nRELOAD http\r\nCLOSE"),
            [
                Line::Complete(b"STATUS".to_vec()),
                Line::Complete(b"RELOAD http".to_vec()),
                Line::Complete(b"CLOSE".to_vec()),
                Line::End,
            ]
        );
    }

    #[test]
    fn a_line_of_max_line_bytes_passes_and_one_more_byte_does_not() {
        let mut ok = vec![b'x'; admin::MAX_LINE];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(
            lines(&ok),
            [Line::Complete(vec![b'x'; admin::MAX_LINE]), Line::End]
        );
        let mut long = vec![b'x'; admin::MAX_LINE + 1];
        long.push(b'\n');
        assert_eq!(lines(&long), [Line::TooLong]);
        // No terminator in sight: refused without reading it all.
        assert_eq!(lines(&vec![b'x'; 100 * admin::MAX_LINE]), [Line::TooLong]);
    }

    /// A client whose bytes come in pieces, with read timeouts between.
    struct Trickle(Vec<io::Result<&'static [u8]>>);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0)?;
            out[..piece.len()].copy_from_slice(piece);
            Ok(piece.len())
        }
    }

    #[test]
    fn a_line_split_by_read_timeouts_is_kept_whole() {
        let timeout = || Err(io::Error::from(io::ErrorKind::WouldBlock));
        let mut r = BufReader::new(Trickle(vec![
            Ok(b"STA"),
            timeout(),
            Ok(b"TUS\nRELO"),
            timeout(),
            Ok(b"AD\n"),
        ]));
        let mut partial = Vec::new();
        assert!(read_line(&mut r, &mut partial).is_err());
        assert_eq!(partial, b"STA");
        assert_eq!(
            read_line(&mut r, &mut partial).unwrap(),
            Line::Complete(b"STATUS".to_vec())
        );
        assert!(read_line(&mut r, &mut partial).is_err());
        assert_eq!(
            read_line(&mut r, &mut partial).unwrap(),
            Line::Complete(b"RELOAD".to_vec())
        );
        assert_eq!(read_line(&mut r, &mut partial).unwrap(), Line::End);
    }

    #[test]
    fn commands_are_logged_without_tokens() {
        assert_eq!(describe(&Command::Auth("s3cret")), "AUTH (not needed here)");
        assert_eq!(describe(&Command::Reload(None)), "RELOAD (all)");
        assert_eq!(describe(&Command::Run("cron", "tick")), "RUN cron tick");
    }
}
