//! The server started in-process through the library (`switchyard::server`)
//! rather than as a child process: the same `Server::build` and `run` the
//! binary uses, here with a listener the test binds itself, so a test can
//! hold values the binary keeps private (the bound port before anything
//! listens, the result `run` returns).
//!
//! Only one test lives here: `run` installs the process's signal handlers
//! and a panic hook is process-wide, so a test binary hosts one server.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use switchyard::config::{AcceptMode, Config};
use switchyard::server::{Server, Startup};

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// One request on a fresh connection; the whole answer (the server
/// closes after it: `Connection: close`).
fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_server_built_in_process_serves_and_shuts_down() {
    let dir = std::env::temp_dir().join(format!("switchyard-inproc-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let (modules, site) = (dir.join("modules"), dir.join("site"));
    fs::create_dir_all(&modules).unwrap();
    fs::create_dir_all(&site).unwrap();
    fs::write(site.join("index.html"), "in process\n").unwrap();
    let http = workspace().join("modules/http.so");
    assert!(
        http.exists(),
        "{} missing: run `make build`",
        http.display()
    );
    fs::copy(&http, modules.join("http.so")).unwrap();

    let config = Config::parse(&format!(
        "[modules.http]\nroot = {:?}\n",
        site.display().to_string()
    ))
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::build(Startup {
        config,
        config_path: None,
        modules,
        data_dir: dir.join("data"),
        watch: false,
        listeners: vec![listener],
        addr,
        mode: AcceptMode::Shared,
        admin_listener: None,
        admin_file: None,
    })
    .expect("the server builds");
    let running = thread::spawn(move || server.run());

    let page = get(
        addr,
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200 "), "{page}");
    assert!(page.ends_with("\r\n\r\nin process\n"), "{page}");
    let missing = get(
        addr,
        "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");

    // SHUTDOWN from loopback (public_shutdown defaults to on): `run`
    // returns once the loops have drained.
    let bye = get(addr, "SHUTDOWN\n");
    assert_eq!(bye, "OK shutting down\n");
    let result = running.join().expect("run does not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after run returns"
    );
    let _ = fs::remove_dir_all(&dir);
}
