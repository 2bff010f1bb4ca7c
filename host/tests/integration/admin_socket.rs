//! The admin Unix socket (`[server] admin_socket`) through the real binary:
//! its file and mode, every command answered whatever `admin_from` says,
//! `SHUTDOWN` stopping the leader, the socket outliving a worker crash and
//! `UPGRADE`, `--single` binding it itself, stale and busy socket files at
//! start, the line and client limits; and the `--new-token` /
//! `--hash-token` tools.

use crate::common;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::supervision::{alive, worker_pid};
use common::{temp_dir, Client, Server, ServerBuilder, Status, BIN, IO_TIMEOUT};

/// `admin::MAX_LINE` in the host.
const MAX_LINE: usize = 1024;
/// `admin::socket::MAX_CLIENTS` in the host.
const MAX_CLIENTS: usize = 16;

/// A client of the admin socket at `path`, with the usual timeouts.
fn connect(path: &Path) -> Client<UnixStream> {
    let stream =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Client::from_stream(stream)
}

/// Asserts that the server closes `c` with nothing more to say (call it
/// after reading the last reply line).
fn assert_closed(c: &mut Client<UnixStream>) {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = [0u8; 256];
    match c.stream.read(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("still open; got {:?}", String::from_utf8_lossy(&rest[..n])),
        Err(e) => panic!("not closed: {e}"),
    }
}

/// Sends `cmd` on a new connection and reads its whole reply.
fn ask(path: &Path, cmd: &str) -> String {
    let mut c = connect(path);
    c.send(format!("{cmd}\n").as_bytes());
    c.read_admin_reply(cmd)
}

/// A server (leader and worker) with its admin socket at `path`.
fn server_with_socket(path: &Path, extra: &[&str]) -> Server {
    let mut b = ServerBuilder::new(&["http"])
        .tag("adminsock")
        .server(&format!("admin_socket = {:?}", path.to_str().unwrap()));
    for line in extra {
        b = b.server(line);
    }
    b.start()
}

/// A fresh directory and the socket path in it.
fn socket_path(tag: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(tag);
    let path = dir.join("admin.sock");
    (dir, path)
}

#[test]
fn socket_is_0600_and_answers_every_command_with_admin_off_on_the_port() {
    let (_dir, path) = socket_path("as-mode");
    let s = server_with_socket(&path, &["admin_from = []"]);
    let meta = std::fs::symlink_metadata(&path).expect("the socket file exists after start");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{meta:?}");

    let raw = ask(&path, "STATUS");
    assert!(raw.starts_with("OK status\n"), "{raw}");
    assert!(raw.ends_with("END\n"), "{raw}");
    let st = Status::parse(&raw);
    assert_eq!(st.expect("http").gen, 1, "{raw}");

    // Several commands on one connection, answered in order.
    let mut c = connect(&path);
    c.send(b"AUTH whatever\r\nNOPE\nRUN nosuch job\nCLOSE\n");
    assert_eq!(c.read_line(), "OK");
    assert_eq!(c.read_line(), "ERR unknown command");
    let run = c.read_line();
    assert!(run.starts_with("ERR nosuch/job: "), "{run}");
    assert_eq!(c.read_line(), "OK bye");
    assert_closed(&mut c);

    assert!(
        s.wait_log(Duration::from_secs(2), |l| l
            .contains("STATUS from admin socket")
            && l.contains("RUN nosuch job from admin socket")
            && l.contains("AUTH (not needed here) from admin socket")
            && !l.contains("whatever")),
        "{}",
        s.log()
    );
}

/// With `admin_from = []`, `STATUS` on the public port is forbidden
/// while the socket answers it.
#[test]
fn admin_from_empty_forbids_the_port_but_not_the_socket() {
    let (_dir, path) = socket_path("as-from");
    let s = server_with_socket(&path, &["admin_from = []"]);
    assert_eq!(s.admin("STATUS"), "ERR forbidden\n");
    let reply = ask(&path, "STATUS");
    assert!(
        reply.starts_with("OK status\n") && reply.ends_with("END\n"),
        "{reply:?}"
    );
}

#[test]
fn reload_over_the_socket() {
    let (_dir, path) = socket_path("as-reload");
    let s = server_with_socket(&path, &[]);
    let reply = ask(&path, "RELOAD http");
    assert!(reply.starts_with("OK http gen=2 v"), "{reply:?}");
    let reply = ask(&path, "RELOAD");
    assert!(
        reply.ends_with("OK reload: 0 loaded, 1 unchanged, 0 removed, 0 failed\n"),
        "{reply:?}"
    );
    assert_eq!(s.status().expect("http").gen, 2);
    assert!(
        s.log().contains("RELOAD http from admin socket"),
        "{}",
        s.log()
    );
}

#[test]
fn run_over_the_socket_answers_when_the_job_has_finished() {
    let (_dir, path) = socket_path("as-run");
    let _s = ServerBuilder::new(&["cron"])
        .tag("adminsock-run")
        .server(&format!("admin_socket = {:?}", path.to_str().unwrap()))
        .toml(
            r#"
[[modules.cron.jobs]]
name = "once"
schedule = "0 0 1 1 *"
command = ["sh", "-c", "sleep 0.3; echo hi"]
"#,
        )
        .start();
    let started = Instant::now();
    assert_eq!(
        ask(&path, "RUN cron once"),
        "OK cron/once exit status 0: hi\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        ask(&path, "RUN cron nope"),
        "ERR cron/nope: module cron has no job \"nope\"\n"
    );
}

#[test]
fn shutdown_over_the_socket_stops_the_leader_and_removes_the_file() {
    let (_dir, path) = socket_path("as-shutdown");
    let mut s = server_with_socket(&path, &[]);
    let worker = s.worker_pid();
    assert_eq!(ask(&path, "SHUTDOWN"), "OK shutting down\n");
    let status = s
        .wait_exit(Duration::from_secs(15))
        .expect("the leader exits after SHUTDOWN on the admin socket");
    assert!(status.success(), "{status:?}");
    assert!(!alive(worker), "worker {worker} still running");
    assert!(!path.exists(), "{} left behind", path.display());
    assert!(
        s.log().contains("SHUTDOWN from admin socket"),
        "{}",
        s.log()
    );
}

#[test]
fn a_single_process_binds_serves_and_removes_the_socket_itself() {
    let (_dir, path) = socket_path("as-single");
    let mut s = ServerBuilder::new(&["http"])
        .tag("adminsock-single")
        .server(&format!("admin_socket = {:?}", path.to_str().unwrap()))
        .arg("--single")
        .start();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{meta:?}");
    let st = Status::parse(&ask(&path, "STATUS"));
    assert_eq!(worker_pid(&st), s.pid(), "the process itself serves");
    assert_eq!(
        ask(&path, "UPGRADE"),
        "ERR upgrade: needs the leader process (this server runs with --single)\n"
    );
    assert_eq!(ask(&path, "SHUTDOWN"), "OK shutting down\n");
    let status = s.wait_exit(Duration::from_secs(15)).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn the_socket_outlives_a_worker_crash_and_an_upgrade() {
    let (_dir, path) = socket_path("as-upgrade");
    let s = server_with_socket(&path, &[]);
    let first = worker_pid(&Status::parse(&ask(&path, "STATUS")));

    // A crash: the leader starts a new worker on the same socket.
    // SAFETY: kill(2) on the worker this test started.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGKILL) }, 0);
    let second = wait_for_worker(&path, first);

    // UPGRADE over the socket: the reply names the new worker, and the
    // connection ends (its worker drains).
    let mut c = connect(&path);
    c.send(b"UPGRADE\n");
    let reply = c.read_line();
    let third: u32 = reply
        .strip_prefix("OK upgrading: new worker pid=")
        .unwrap_or_else(|| panic!("{reply:?}; log:\n{}", s.log()))
        .parse()
        .unwrap();
    assert_ne!(third, second);
    assert_closed(&mut c);
    let st = Status::parse(&ask(&path, "STATUS"));
    assert_eq!(worker_pid(&st), third, "{}", st.raw);
    assert!(path.exists());
}

/// Polls `STATUS` on the socket until a worker other than `old` answers.
fn wait_for_worker(path: &Path, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stream) = UnixStream::connect(path) {
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut c = Client::from_stream(stream);
            c.send_lenient(b"STATUS\n");
            let mut raw = String::new();
            while let Ok(l) = c.try_read_line() {
                raw.push_str(&l);
                raw.push('\n');
                if l == "END" {
                    let pid = worker_pid(&Status::parse(&raw));
                    if pid != old {
                        return pid;
                    }
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "no new worker within 10 s");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stale_socket_file_is_replaced_at_start() {
    let (_dir, path) = socket_path("as-stale");
    // What a killed server leaves: a socket file nobody listens on.
    drop(UnixListener::bind(&path).unwrap());
    assert!(UnixStream::connect(&path).is_err());

    let mut s = server_with_socket(&path, &[]);
    assert!(ask(&path, "STATUS").ends_with("END\n"));
    assert!(
        s.log().contains("removed a stale socket file"),
        "{}",
        s.log()
    );

    // A leader killed outright leaves its file too; once its worker is
    // gone as well (PR_SET_PDEATHSIG), the next start replaces it.
    let worker = s.worker_pid();
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(worker) {
        assert!(
            Instant::now() < deadline,
            "worker {worker} outlived its leader"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(path.exists(), "SIGKILL leaves the file");
    // The file is stale once nothing answers on it. The kernel may take a
    // moment after the processes are gone; under a full test run a start
    // right away has met a socket still answering ("in use by another
    // server", the refusal `a_second_server_on_the_same_socket_refuses_to_start` checks).
    let deadline = Instant::now() + Duration::from_secs(5);
    while UnixStream::connect(&path).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the killed server's socket still answers"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let s2 = server_with_socket(&path, &[]);
    let st = Status::parse(&ask(&path, "STATUS"));
    assert_eq!(worker_pid(&st), s2.worker_pid());
}

/// Runs the binary with its admin socket at `path` and waits for it to
/// exit (it must fail at start): (exit code, stderr).
fn start_expecting_failure(path: &Path) -> (Option<i32>, String) {
    let dir = temp_dir("as-refused");
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        format!("[server]\nadmin_socket = {:?}\n", path.to_str().unwrap()),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    let mut child = Command::new(BIN)
        .args(["-port", "0", "--bind", "127.0.0.1", "--config"])
        .arg(&config)
        .arg("--modules")
        .arg(dir.join("modules"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second server did not exit");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_server_on_the_same_socket_refuses_to_start() {
    let (dir, path) = socket_path("as-busy");
    let _s = server_with_socket(&path, &[]);
    let (code, stderr) = start_expecting_failure(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let want = format!(
        "switchyard: admin socket {} is in use by another server",
        path.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    // The first server's socket is untouched.
    assert!(ask(&path, "STATUS").ends_with("END\n"));

    // A path held by something that is not a socket is never replaced.
    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let (code, stderr) = start_expecting_failure(&file);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn an_oversized_line_is_refused_and_closed() {
    let (_dir, path) = socket_path("as-line");
    let s = server_with_socket(&path, &[]);
    // Exactly MAX_LINE bytes is still a line (an unknown command).
    let mut c = connect(&path);
    let mut line = vec![b'x'; MAX_LINE];
    line.push(b'\n');
    c.send(&line);
    assert_eq!(c.read_line(), "ERR unknown command");
    // One more byte is not.
    let mut line = vec![b'x'; MAX_LINE + 1];
    line.push(b'\n');
    c.send(&line);
    assert_eq!(c.read_line(), "ERR line too long");
    assert_closed(&mut c);
    // Endless bytes without a newline: refused without reading them all.
    let mut c = connect(&path);
    c.send_lenient(&vec![b'y'; 64 * MAX_LINE]);
    assert_eq!(c.read_line(), "ERR line too long");
    assert!(s.log().contains("longer than 1024 bytes"), "{}", s.log());
}

#[test]
fn the_seventeenth_client_is_told_busy() {
    let (_dir, path) = socket_path("as-clients");
    let s = server_with_socket(&path, &[]);
    let mut clients: Vec<Client<UnixStream>> = (0..MAX_CLIENTS)
        .map(|_| {
            let mut c = connect(&path);
            c.send(b"AUTH x\n");
            assert_eq!(c.read_line(), "OK");
            c
        })
        .collect();
    let mut extra = connect(&path);
    assert_eq!(extra.read_line(), "ERR busy");
    assert_closed(&mut extra);
    assert!(
        s.log().contains("16 clients already connected"),
        "{}",
        s.log()
    );

    // The ones admitted still work...
    clients[3].send(b"STATUS\n");
    assert!(clients[3].read_admin_reply("STATUS").ends_with("END\n"));
    // ...and when one leaves, its place is free again.
    clients.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = connect(&path);
        c.send_lenient(b"AUTH x\n");
        match c.try_read_line().as_deref() {
            Ok("OK") => break,
            Ok("ERR busy") if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn new_token_prints_a_token_and_its_config_line() {
    let out = Command::new(BIN).arg("--new-token").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    let token = lines[0];
    assert_eq!(token.len(), 64, "{token:?}");
    assert!(
        token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{token:?}"
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lines[1], format!("token_hash = \"sha256:{hex}\""));

    // --hash-token gives the same hash for the same token.
    assert_eq!(hash_token(&format!("{token}\n")), format!("sha256:{hex}\n"));
    // Two runs, two tokens.
    let again = Command::new(BIN).arg("--new-token").output().unwrap();
    assert_ne!(String::from_utf8(again.stdout).unwrap(), text);
}

/// Runs `--hash-token` with `input` on stdin; its stdout.
fn hash_token(input: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("--hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn hash_token_reads_one_line_from_stdin() {
    // SHA-256("abc"), FIPS 180-2.
    let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
    assert_eq!(hash_token("abc\n"), abc);
    assert_eq!(hash_token("abc"), abc);
    assert_eq!(hash_token("abc\r\n"), abc);
    let out = Command::new(BIN)
        .arg("--hash-token")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token on stdin"),
        "{out:?}"
    );
}
