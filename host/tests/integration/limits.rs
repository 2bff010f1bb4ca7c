//! Connection limits. (Idle connections are closed to make room for new
//! ones: see `hostile/host.rs`; here the slots are busy.)

use crate::common;

use std::time::{Duration, Instant};

use common::{Client, ServerBuilder, INDEX_HTML};

/// Whether a connection is refused or closed without being served: either
/// the connect fails, or a request on it gets no response.
fn refused_or_closed(addr: std::net::SocketAddr) -> Result<(), String> {
    let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Ok(());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut c = Client::from_stream(stream);
    c.send_lenient(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    match c.expect_closed(Duration::from_secs(3)) {
        Ok(()) => Ok(()),
        // Left in the backlog, never accepted: not served either.
        Err(e) if e.starts_with("still open") && e.ends_with("received \"\"") => Ok(()),
        Err(e) => Err(e),
    }
}

#[test]
fn max_connections_refuses_the_excess() {
    let s = ServerBuilder::new(&["http"])
        .server("max_connections = 2")
        .start();
    let mut a = s.connect();
    let mut b = s.connect();
    for c in [&mut a, &mut b] {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response(false).text(), INDEX_HTML);
        // A request in flight: not idle, so not closed to make room.
        c.send(b"GET /index.html HTTP/1.1\r\n");
    }
    std::thread::sleep(Duration::from_millis(200));

    refused_or_closed(s.addr).expect("a third connection was served");

    // The first two still work.
    for c in [&mut a, &mut b] {
        c.send(b"Host: x\r\n\r\n");
        assert_eq!(c.read_response(false).text(), INDEX_HTML);
    }

    // Once one closes, a new connection is served again.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = s.connect();
        c.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        c.send_lenient(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if c.try_read_response(false).is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection served after one of the two closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
