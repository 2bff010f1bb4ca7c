//! Unit tests of `Conn`'s transitions, on real loopback sockets and a
//! generation whose module answers nothing (no library is loaded).

use std::io::Write;
use std::net::{TcpListener, TcpStream as StdStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, RResult, RSlice, RStr, RString, RVec};
use module_api::abi::{HostBox, JobSpec, Module, ModuleBox, ModuleLib, Module_TO};
use module_api::{ConnInfo, Manifest, Protocol, ProxyEvent, ReloadMode, Verdict};

use super::*;
use crate::generation::{Generation, ModuleStats};

/// A module that is never called by these tests' transitions.
struct Silent;

impl Module for Silent {
    fn on_message(&self, _: &ConnInfo, _: RSlice<'_, u8>, _: &mut RVec<u8>) -> Verdict {
        Verdict::NEED_MORE
    }
    fn on_deferred(&self, _: &ConnInfo, _: RSlice<'_, u8>, _: &mut RVec<u8>) -> Verdict {
        Verdict::close(0)
    }
    fn save_state(&self) -> RVec<u8> {
        RVec::new()
    }
    fn stop(&self) {}
    fn status(&self) -> RString {
        RString::new()
    }
    fn on_close(&self, _: &ConnInfo) {}
    fn jobs(&self) -> RVec<JobSpec> {
        RVec::new()
    }
    fn run_job(&self, _: RStr<'_>) -> RResult<RString, RString> {
        RErr("no jobs".into())
    }
    fn tls_passthrough(&self) -> RVec<RString> {
        RVec::new()
    }
    fn proxy_event(&self, _: &ConnInfo, _: ProxyEvent, _: &mut RVec<u8>) -> Verdict {
        Verdict::close(0)
    }
    fn bindings(&self) -> RVec<RVec<u8>> {
        RVec::new()
    }
}

extern "C" fn manifest() -> Manifest {
    Manifest::new("silent", "0")
}

extern "C" fn start(_: HostBox, _: RStr<'_>, _: RSlice<'_, u8>) -> RResult<ModuleBox, RString> {
    RErr("not startable".into())
}

fn generation() -> Arc<Generation> {
    let module: ModuleBox = Module_TO::from_value(Silent, TD_Opaque);
    let root = ModuleLib { manifest, start }.leak_into_prefix();
    Arc::new(Generation::new(
        "silent".into(),
        "0".into(),
        1,
        Protocol::Raw,
        ReloadMode::Overlap,
        Vec::new(),
        module,
        Arc::new(ModuleStats::default()),
        0,
        root,
    ))
}

/// A connection on the accepted side of a loopback pair, and its peer.
fn pair() -> (Conn, StdStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = StdStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (sock, addr) = listener.accept().expect("accept");
    sock.set_nonblocking(true).unwrap();
    let sock = mio::net::TcpStream::from_std(sock);
    let conn = Conn::new(sock, ConnInfo::new(7, addr, false), Instant::now());
    (conn, peer)
}

/// Reads what `peer` sent into `conn` (waiting for it to arrive).
fn read_all(conn: &mut Conn, want: usize) {
    if !conn.rbuf().is_attached() {
        conn.attach_read_buffer(vec![0; READ_BUF]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while conn.input().len() < want && Instant::now() < deadline {
        conn.flags.read_ready = true;
        match conn.read(1 << 20).expect("read") {
            ReadResult::Read(_) => std::thread::sleep(Duration::from_millis(2)),
            ReadResult::Full => panic!("buffer full"),
        }
    }
    assert_eq!(conn.input().len(), want);
}

#[test]
fn defer_then_resume() {
    let (mut conn, mut peer) = pair();
    let g = generation();
    peer.write_all(b"ONE\nTWO\n").unwrap();
    read_all(&mut conn, 8);
    let now = Instant::now();
    conn.begin_message(true, now);
    assert_eq!(conn.msg_start(), Some(now));
    conn.route_to(g.clone());
    g.stats.conns.fetch_add(1, Ordering::Relaxed);

    let msg = conn.defer(g.clone(), 4);
    assert_eq!(msg, b"ONE\n");
    assert_eq!(conn.input(), b"TWO\n", "the next message stays buffered");
    assert!(matches!(conn.stage(), Stage::Deferred(_)));
    assert!(conn.paused(usize::MAX), "input waits while deferred");
    assert!(!conn.idle());

    let back = conn.resume(b"one\n").expect("it was deferred");
    assert!(Arc::ptr_eq(&back, &g));
    assert!(matches!(conn.stage(), Stage::Routing));
    assert_eq!(&conn.out_mut()[..], b"one\n");
    conn.finish_message(&back, Verdict::done(4), now);
    assert_eq!(g.stats.requests.load(Ordering::Relaxed), 1);
    assert_eq!(g.stats.conns.load(Ordering::Relaxed), 0);
    assert_eq!(conn.msg_start(), Some(now), "TWO\\n is a message begun");
    assert!(conn.sticky().is_none());

    // Not deferred any more: a second completion changes nothing.
    assert!(conn.resume(b"late").is_none());
    assert_eq!(&conn.out_mut()[..], b"one\n");
}

#[test]
fn keep_sticks_and_watch_close_watches_once() {
    let (mut conn, _peer) = pair();
    let g = generation();
    let mut v = Verdict::keep(0);
    v.watch_close = true;
    conn.route_to(g.clone());
    conn.finish_message(&g, v, Instant::now());
    assert_eq!(conn.sticky(), Some("silent"));
    conn.watch(&g.name);
    assert_eq!(conn.watchers().len(), 1);
    conn.route_to(g.clone());
    conn.finish_message(&g, Verdict::done(0), Instant::now());
    assert!(conn.sticky().is_none(), "Done hands the connection back");
    assert!(!conn.is_closing());
    conn.route_to(g.clone());
    conn.finish_message(&g, Verdict::close(0), Instant::now());
    assert!(conn.is_closing());
}

#[test]
fn close_after_output_waits_for_the_output() {
    let (mut conn, mut peer) = pair();
    conn.out_mut().extend_from_copy_slice(b"bye\n");
    conn.close_after_output();
    assert!(conn.is_closing());
    assert!(conn.pending_output(), "the reply is still to be sent");
    assert!(!conn.idle());
    assert!(conn.flush().expect("flush"));
    assert!(!conn.pending_output());
    assert!(conn.idle() && conn.is_closing(), "now it may close");
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut peer, &mut got).unwrap();
    assert_eq!(&got, b"bye\n");
}

#[test]
fn peer_closed_with_empty_input_reads_eof() {
    let (mut conn, peer) = pair();
    drop(peer);
    conn.peer_closed();
    conn.attach_read_buffer(vec![0; READ_BUF]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !conn.is_eof() && Instant::now() < deadline {
        conn.flags.read_ready = true;
        assert!(matches!(conn.read(READ_BUF), Ok(ReadResult::Read(0))));
    }
    assert!(conn.is_eof());
    assert!(conn.input().is_empty());
    assert!(conn.idle(), "nothing in flight: the loop closes it");
    assert!(
        conn.detach_read_buffer().is_some(),
        "an empty buffer goes back"
    );
}

#[test]
fn output_mark_and_take_output_since() {
    let (mut conn, _peer) = pair();
    conn.out_mut()
        .extend_from_copy_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    let mark = conn.output_mark();
    conn.out_mut().extend_from_copy_slice(b"PROXY TCP4 ...\r\n");
    assert_eq!(conn.take_output_since(mark), b"PROXY TCP4 ...\r\n");
    assert_eq!(conn.output_mark(), mark);
    assert_eq!(conn.backlog(), mark);
}

#[test]
fn push_over_the_cap_is_refused() {
    let (mut conn, _peer) = pair();
    assert!(conn.push(b"12345", 10));
    assert!(conn.push(b"67890", 10));
    assert!(!conn.push(b"x", 10));
    assert_eq!(conn.backlog(), 10);
    conn.push_notice_and_close(b"!\n");
    assert!(conn.is_closing());
    assert_eq!(conn.backlog(), 12);
    assert!(conn.release_pushes());
}

#[test]
fn tls_is_checked_once() {
    let (mut conn, _peer) = pair();
    assert!(!conn.tls_checked());
    conn.mark_tls_checked();
    assert!(conn.tls_checked());
    assert!(!conn.is_tls() && !conn.tls_handshaking());
    // No TLS here: never a client certificate.
    assert!(conn.take_client_cert().is_none());
    assert!(!conn.has_identity());
}

#[test]
fn draining_answer_is_noted_only_while_draining() {
    let (mut conn, _peer) = pair();
    conn.note_answer();
    assert!(!conn.answered_draining());
    conn.mark_draining();
    assert!(conn.info().draining);
    conn.note_answer();
    assert!(conn.answered_draining());
}

#[test]
fn budget_decisions() {
    // Nothing waiting: the whole budget.
    assert_eq!(out_limit(0, 0, 1000), 1000);
    // Earlier answers still in the buffer count.
    assert_eq!(out_limit(300, 300, 1000), 1000);
    assert_eq!(out_limit(300, 700, 1000), 600);
    // Over budget: no room at all (the module answers one message).
    assert_eq!(out_limit(50, 5000, 1000), 50);
    assert!(!over_budget(1000, 1000));
    assert!(over_budget(1001, 1000));
    assert!(!over_budget(0, 0));
}
