//! The `proxy` module end to end: the real host and `proxy.so`, real
//! upstream servers on loopback started by each test (echo servers on
//! threads, `openssl s_server` for TLS passthrough), real clients.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// `[modules.proxy]` with `top` lines, then one route table per entry.
fn proxy_toml(top: &str, routes: &[String]) -> String {
    let mut s = format!("[modules.proxy]\n{top}\n");
    for r in routes {
        s.push_str("\n[[modules.proxy.routes]]\n");
        s.push_str(r);
        s.push('\n');
    }
    s
}

fn addrs(ups: &[&EchoUpstream]) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!("[{}]", list.join(", "))
}

fn start_proxy(tag: &str, toml: &str) -> Server {
    ServerBuilder::new(&["proxy"]).tag(tag).toml(toml).start()
}

/// Both relays: `proxy_splice` on (kernel pipes) and off (user space).
const RELAYS: [bool; 2] = [true, false];

/// A proxy with `proxy_splice` set.
fn start_relay(tag: &str, splice: bool, toml: &str) -> Server {
    let tag = format!("{tag}-{}", if splice { "splice" } else { "copy" });
    ServerBuilder::new(&["proxy"])
        .tag(&tag)
        .server(&format!("proxy_splice = {splice}"))
        .toml(toml)
        .start()
}

/// Opens a connection through the proxy, sends `first` and returns the
/// client and the tag of the upstream that greeted it.
fn open(server: &Server, first: &str) -> (Client, String) {
    let mut c = server.connect();
    c.send(first.as_bytes());
    let tag = c.read_line();
    (c, tag)
}

#[test]
fn prefix_route_reaches_an_echo_server() {
    let up = EchoUpstream::start("A");
    let server = start_proxy(
        "proxy-prefix",
        &proxy_toml(
            "",
            &[format!("prefix = \"ECHO\"\nupstreams = {}", addrs(&[&up]))],
        ),
    );
    let (mut c, tag) = open(&server, "ECHO hello\n");
    assert_eq!(tag, "A");
    assert_eq!(c.read_line(), "ECHO hello");
    c.send(b"second line\n");
    assert_eq!(c.read_line(), "second line");
    let st = server.status();
    st.assert_exact_format();
    let r = st.proxy_route("ECHO");
    assert_eq!(r.num("active"), 1, "{}", st.raw);
    assert_eq!(r.state(up.addr), "up");
    drop(c);
    // Counters after the session ends: bytes each way.
    let st = server.wait_status(IO_TIMEOUT, |s| s.proxy_route("ECHO").num("active") == 0);
    let r = st.proxy_route("ECHO");
    assert_eq!(r.num("active"), 0, "{}", st.raw);
    assert_eq!(r.num("conns"), 1);
    assert_eq!(r.num("bytes_up"), 23, "{}", st.raw);
    assert!(r.num("bytes_down") >= 2 + 23, "{}", st.raw);
    // Other bytes are not proxied: nothing else is bound.
    let mut c = server.connect();
    c.send(b"HELLO\n");
    c.expect_closed(IO_TIMEOUT).unwrap();
}

#[test]
fn proxy_protocol_headers_carry_the_client_address() {
    let up = EchoUpstream::start("A");
    let server = start_proxy(
        "proxy-pp",
        &proxy_toml(
            "",
            &[
                format!(
                    "prefix = \"PP1\"\nproxy_protocol = \"v1\"\nupstreams = {}",
                    addrs(&[&up])
                ),
                format!(
                    "prefix = \"PP2\"\nproxy_protocol = \"v2\"\nupstreams = {}",
                    addrs(&[&up])
                ),
            ],
        ),
    );
    let (mut c, _) = open(&server, "PP1\n");
    let local = c.stream.local_addr().unwrap();
    let dst = c.stream.peer_addr().unwrap();
    assert_eq!(
        c.read_line(),
        format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}",
            local.port(),
            dst.port()
        )
    );
    assert_eq!(c.read_line(), "PP1");

    let (mut c, _) = open(&server, "PP2\n");
    let local = c.stream.local_addr().unwrap();
    let h = c.read_bytes(28 + 4);
    assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
    let dst = c.stream.peer_addr().unwrap();
    assert_eq!(&h[16..20], &[127, 0, 0, 1]);
    assert_eq!(&h[20..24], &[127, 0, 0, 1]);
    assert_eq!(&h[24..26], &local.port().to_be_bytes());
    assert_eq!(&h[26..28], &dst.port().to_be_bytes());
    assert_eq!(&h[28..], b"PP2\n");
}

#[test]
fn half_close_reaches_the_upstream_and_its_reply_comes_back() {
    let up = EchoUpstream::start("A");
    for splice in RELAYS {
        let server = start_relay(
            "proxy-half",
            splice,
            &proxy_toml(
                "",
                &[format!("prefix = \"ECHO\"\nupstreams = {}", addrs(&[&up]))],
            ),
        );
        let (mut c, _) = open(&server, "ECHO half\n");
        assert_eq!(c.read_line(), "ECHO half");
        c.send(b"more\n");
        c.stream.shutdown(Shutdown::Write).unwrap();
        // The upstream sees EOF only through the proxy's half-close, and
        // answers after it.
        assert_eq!(c.read_line(), "more");
        assert_eq!(c.read_line(), "BYE 15");
        c.expect_closed(IO_TIMEOUT).unwrap();
    }
}

#[test]
fn weighted_round_robin_over_three_upstreams() {
    let ups = [
        EchoUpstream::start("A"),
        EchoUpstream::start("B"),
        EchoUpstream::start("C"),
    ];
    let server = start_proxy(
        "proxy-weights",
        &proxy_toml(
            "",
            &[format!(
                "prefix = \"ECHO\"\nupstreams = {}\nweights = [5, 3, 2]",
                addrs(&[&ups[0], &ups[1], &ups[2]])
            )],
        ),
    );
    let mut counts = [0usize; 3];
    for i in 0..300 {
        let (mut c, tag) = open(&server, &format!("ECHO {i}\n"));
        assert_eq!(c.read_line(), format!("ECHO {i}"));
        counts[(tag.as_bytes()[0] - b'A') as usize] += 1;
    }
    // Smooth weighted round-robin is exact over whole cycles; allow 5%.
    for (got, want) in counts.iter().zip([150, 90, 60]) {
        assert!(
            got.abs_diff(want) <= 15,
            "distribution {counts:?}, want about [150, 90, 60]"
        );
    }
}

#[test]
fn least_conn_sends_new_connections_to_the_idle_upstream() {
    let ups = [EchoUpstream::start("A"), EchoUpstream::start("B")];
    let server = start_proxy(
        "proxy-leastconn",
        &proxy_toml(
            "",
            &[format!(
                "prefix = \"ECHO\"\nbalance = \"least_conn\"\nupstreams = {}",
                addrs(&[&ups[0], &ups[1]])
            )],
        ),
    );
    let mut held: Vec<(Client, String)> = (0..4).map(|_| open(&server, "ECHO\n")).collect();
    let on_a = held.iter().filter(|(_, t)| t == "A").count();
    assert_eq!(on_a, 2, "4 connections over 2 idle upstreams split 2/2");
    held.retain(|(_, t)| t != "A");
    let st = server.wait_status(IO_TIMEOUT, |s| {
        s.proxy_route("ECHO").upstreams[0].3 == 0 && s.proxy_route("ECHO").num("active") == 2
    });
    assert_eq!(st.proxy_route("ECHO").upstreams[0].3, 0, "{}", st.raw);
    for _ in 0..2 {
        let (c, tag) = open(&server, "ECHO\n");
        assert_eq!(
            tag, "A",
            "the upstream with no connections gets the next ones"
        );
        held.push((c, tag));
    }
}

#[test]
fn a_killed_upstream_is_marked_down_skipped_and_taken_back() {
    let mut ups = [
        EchoUpstream::start("A"),
        EchoUpstream::start("B"),
        EchoUpstream::start("C"),
    ];
    let server = start_proxy(
        "proxy-health",
        &proxy_toml(
            "health_interval = \"100ms\"\nhealth_timeout = \"500ms\"\nhealth_rise = 1\nhealth_fall = 1",
            &[format!(
                "prefix = \"ECHO\"\nupstreams = {}",
                addrs(&[&ups[0], &ups[1], &ups[2]])
            )],
        ),
    );
    let mut seen = [0usize; 3];
    for _ in 0..9 {
        let (_, tag) = open(&server, "ECHO\n");
        seen[(tag.as_bytes()[0] - b'A') as usize] += 1;
    }
    assert_eq!(seen, [3, 3, 3]);

    let b_addr = ups[1].addr;
    ups[1].kill();
    assert!(
        server.wait_log(IO_TIMEOUT, |l| l
            .contains(&format!("upstream {b_addr} is down"))),
        "no 'is down' line for {b_addr}"
    );
    assert_eq!(server.status().proxy_route("ECHO").state(b_addr), "down");
    for i in 0..30 {
        let (mut c, tag) = open(&server, &format!("ECHO {i}\n"));
        assert_ne!(tag, "B", "a down upstream got connection {i}");
        assert_eq!(c.read_line(), format!("ECHO {i}"));
    }

    ups[1] = EchoUpstream::start_on(b_addr, "B");
    assert!(
        server.wait_log(IO_TIMEOUT, |l| l
            .contains(&format!("upstream {b_addr} is up"))),
        "no 'is up' line for {b_addr}"
    );
    let tags: Vec<String> = (0..6).map(|_| open(&server, "ECHO\n").1).collect();
    assert!(
        tags.iter().any(|t| t == "B"),
        "B never used again: {tags:?}"
    );
}

#[test]
fn failed_connects_move_on_and_all_down_closes_promptly() {
    let live = EchoUpstream::start("L");
    let (dead1, dead2) = (dead_addr(), dead_addr());
    let server = start_proxy(
        "proxy-down",
        &proxy_toml(
            "",
            &[
                // Passive only: a refused connect moves on to the next one.
                format!(
                    "prefix = \"MIX\"\nupstreams = [\"{dead1}\", \"{}\"]",
                    live.addr
                ),
                format!(
                    "prefix = \"DEAD\"\nupstreams = [\"{dead1}\", \"{dead2}\"]\nretries = 1\n\
                     health_interval = \"100ms\"\nhealth_fall = 1"
                ),
            ],
        ),
    );
    for _ in 0..4 {
        let (mut c, tag) = open(&server, "MIX\n");
        assert_eq!(tag, "L");
        assert_eq!(c.read_line(), "MIX");
    }
    let st = server.status();
    assert_eq!(st.proxy_route("MIX").state(dead1), "failed", "{}", st.raw);

    let st = server.wait_status(IO_TIMEOUT, |s| {
        let r = s.proxy_route("DEAD");
        r.state(dead1) == "down" && r.state(dead2) == "down"
    });
    assert_eq!(st.proxy_route("DEAD").state(dead2), "down", "{}", st.raw);
    for _ in 0..5 {
        let t = Instant::now();
        let mut c = server.connect();
        c.send(b"DEAD\n");
        c.expect_closed(IO_TIMEOUT).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "all-down close took {:?}",
            t.elapsed()
        );
    }
    assert!(server.wait_log(IO_TIMEOUT, |l| l
        .contains("route DEAD: all 2 upstreams are down")));
    assert!(server.status().proxy_route("DEAD").num("failed") >= 5);
}

#[test]
fn sni_routes_pass_tls_through_to_openssl_servers() {
    let dir = temp_dir("proxy-sni");
    let db = SServer::start(&dir, "db.example.test");
    let web = SServer::start(&dir, "web.example.test");
    let server = start_proxy(
        "proxy-sni",
        &proxy_toml(
            "",
            &[
                format!("sni = \"db.example.test\"\nupstreams = [\"{}\"]", db.addr),
                format!("sni = \"*.example.test\"\nupstreams = [\"{}\"]", web.addr),
                format!("prefix = \"ECHO\"\nupstreams = [\"{}\"]", dead_addr()),
            ],
        ),
    );
    let (ok, out, err) = s_client(server.addr, "db.example.test");
    assert!(
        ok && out.contains("HTTP/1.0 200 ok"),
        "stdout {out}\nstderr {err}"
    );
    assert!(err.contains("CN = db.example.test"), "{err}");
    let (ok, out, err) = s_client(server.addr, "www.example.test");
    assert!(
        ok && out.contains("HTTP/1.0 200 ok"),
        "stdout {out}\nstderr {err}"
    );
    assert!(err.contains("CN = web.example.test"), "{err}");
    // No route and no default: closed without a handshake.
    let (ok, out, _) = s_client(server.addr, "other.test");
    assert!(
        !ok || !out.contains("200 ok"),
        "unrouted name got an answer: {out}"
    );
    assert!(server.wait_log(IO_TIMEOUT, |l| l
        .contains("no route for server name \"other.test\"")));
    let st = server.status();
    assert_eq!(
        st.proxy_route("db.example.test").num("conns"),
        1,
        "{}",
        st.raw
    );
    assert_eq!(
        st.proxy_route("*.example.test").num("conns"),
        1,
        "{}",
        st.raw
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sni_default_route_takes_unknown_names() {
    let dir = temp_dir("proxy-sni-default");
    let db = SServer::start(&dir, "db.example.test");
    let fallback = SServer::start(&dir, "fallback.test");
    let server = start_proxy(
        "proxy-sni-default",
        &proxy_toml(
            "default_route = \"fallback\"",
            &[
                format!("sni = \"db.example.test\"\nupstreams = [\"{}\"]", db.addr),
                format!("name = \"fallback\"\nupstreams = [\"{}\"]", fallback.addr),
            ],
        ),
    );
    let (ok, _, err) = s_client(server.addr, "db.example.test");
    assert!(ok && err.contains("CN = db.example.test"), "{err}");
    let (ok, _, err) = s_client(server.addr, "anything.else");
    assert!(ok && err.contains("CN = fallback.test"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn host_tls_termination_and_sni_passthrough_share_the_port() {
    let dir = temp_dir("proxy-sni-term");
    let db = SServer::start(&dir, "db.example.test");
    // The host's own certificate, for every name nobody passes through.
    let (cert, key) = self_signed(&dir, "switchyard.test");
    let toml = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{}",
        cert.display(),
        key.display(),
        proxy_toml(
            "",
            &[format!(
                "sni = \"db.example.test\"\nupstreams = [\"{}\"]",
                db.addr
            )]
        )
    );
    let server = start_proxy("proxy-sni-term", &toml);
    let (ok, out, err) = s_client(server.addr, "db.example.test");
    assert!(
        ok && out.contains("HTTP/1.0 200 ok"),
        "stdout {out}\nstderr {err}"
    );
    assert!(
        err.contains("CN = db.example.test"),
        "passed through: {err}"
    );
    let (_, _, err) = s_client(server.addr, "other.example.test");
    assert!(
        err.contains("CN = switchyard.test"),
        "terminated by the host: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn transfers_100_mib_each_way_intact_with_bounded_memory_on_both_relays() {
    transfer_both_ways("proxy-bulk", &[], 100 << 20);
    transfer_both_ways("proxy-bulk-splice", &["proxy_splice = true"], 100 << 20);
}

#[test]
fn a_small_buffer_bounds_each_direction_and_still_moves_everything() {
    // 1 KiB per direction: a pipe of one page holding at most 1 KiB, so
    // every few KiB the relay stops reading a side until its peer drains.
    transfer_both_ways(
        "proxy-bulk-small",
        &["proxy_buffer_size = 1024", "proxy_splice = true"],
        8 << 20,
    );
    transfer_both_ways(
        "proxy-bulk-small-copy",
        &["proxy_buffer_size = 1024", "proxy_splice = false"],
        8 << 20,
    );
}

/// Streams `size` pseudo-random bytes each way at once through a proxy
/// with these `[server]` lines, and checks counts, checksums, the proxy's
/// memory and its byte counters.
fn transfer_both_ways(tag: &str, server_lines: &[&str], size: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    // The upstream: hashes what it reads, sends its own stream, at once.
    let upstream = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = s.try_clone().unwrap();
        let reader = thread::spawn(move || {
            let mut h = Fnv::default();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0usize;
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        h.update(&buf[..k]);
                        n += k;
                    }
                    Err(e) => panic!("upstream read after {n} bytes: {e}"),
                }
            }
            (n, h.0)
        });
        let sent = send_stream(&s, size, 0xfeed);
        s.shutdown(Shutdown::Write).unwrap();
        (reader.join().unwrap(), sent)
    });
    let mut builder = ServerBuilder::new(&["proxy"]).tag(tag).toml(&proxy_toml(
        "",
        &[format!("prefix = \"BULK\"\nupstreams = [\"{up_addr}\"]")],
    ));
    for line in server_lines {
        builder = builder.server(line);
    }
    let server = builder.start();
    let rss_before = rss_kib(server.pid());
    let client = TcpStream::connect(server.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = client.try_clone().unwrap();
    head.write_all(b"BULK").unwrap();
    let mut r = client.try_clone().unwrap();
    let client_reader = thread::spawn(move || {
        let mut h = Fnv::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0usize;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    h.update(&buf[..k]);
                    n += k;
                }
                Err(e) => panic!("client read after {n} bytes: {e}"),
            }
        }
        (n, h.0)
    });
    let pid = server.pid();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let sampler = thread::spawn(move || {
        let mut peak = 0;
        while !done2.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(rss_kib(pid));
            thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let mut prefixed = Fnv::default();
    prefixed.update(b"BULK");
    let (_, sent_by_client) = send_stream_after(&client, size, 0xbeef, prefixed);
    client.shutdown(Shutdown::Write).unwrap();
    let (got_down, hash_down) = client_reader.join().unwrap();
    let ((got_up, hash_up), (_, sent_by_upstream)) = upstream.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    assert_eq!(got_up, size + 4, "bytes that reached the upstream");
    assert_eq!(hash_up, sent_by_client, "client → upstream bytes changed");
    assert_eq!(got_down, size, "bytes that reached the client");
    assert_eq!(
        hash_down, sent_by_upstream,
        "upstream → client bytes changed"
    );
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024,
        "proxy RSS grew by {growth} KiB (from {rss_before} to {peak}) for a {} MiB stream",
        size >> 20
    );
    let st = server.wait_status(IO_TIMEOUT, |s| s.proxy_route("BULK").num("active") == 0);
    let r = st.proxy_route("BULK");
    assert_eq!(r.num("bytes_up"), (size + 4) as u64, "{}", st.raw);
    assert_eq!(r.num("bytes_down"), size as u64, "{}", st.raw);
}

/// Pipe descriptors open in the server's processes.
fn pipes(server: &Server) -> usize {
    open_descriptors(server.pid(), "pipe:")
}

/// Waits (bounded) until the server holds `want` pipe descriptors.
fn wait_pipes(server: &Server, want: usize) -> usize {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let n = pipes(server);
        if n == want || Instant::now() > deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn spliced_sessions_hold_two_pipes_and_every_ending_closes_them() {
    let up = EchoUpstream::start("A");
    let dead = dead_addr();
    let server = start_relay(
        "proxy-fds",
        true,
        &proxy_toml(
            "",
            &[
                format!("prefix = \"ECHO\"\nupstreams = {}", addrs(&[&up])),
                // Refused connects: the session (and its pipes) is dropped
                // before the module gives up.
                format!("prefix = \"DEAD\"\nupstreams = [\"{dead}\"]\nretries = 0"),
            ],
        ),
    );
    let baseline = pipes(&server);

    // 40 sessions open at once: two pipes (four descriptors) each.
    let mut held: Vec<Client> = (0..40)
        .map(|i| {
            let (mut c, _) = open(&server, &format!("ECHO {i}\n"));
            assert_eq!(c.read_line(), format!("ECHO {i}"));
            c
        })
        .collect();
    assert_eq!(
        wait_pipes(&server, baseline + 40 * 4),
        baseline + 40 * 4,
        "40 spliced sessions over a baseline of {baseline} pipe descriptors"
    );
    // Every way a session ends: the client closes outright, the client
    // half-closes and the upstream closes after its goodbye, the client
    // resets.
    for (i, mut c) in held.drain(..).enumerate() {
        match i % 3 {
            0 => drop(c),
            1 => {
                c.stream.shutdown(Shutdown::Write).unwrap();
                assert!(c.read_line().starts_with("BYE "));
                c.expect_closed(IO_TIMEOUT).unwrap();
            }
            _ => {
                let sock = socket2::SockRef::from(&c.stream);
                sock.set_linger(Some(Duration::ZERO)).unwrap();
                drop(c);
            }
        }
    }
    // Many short sessions, one after another, and failed connects.
    for i in 0..200 {
        let (mut c, _) = open(&server, &format!("ECHO short {i}\n"));
        assert_eq!(c.read_line(), format!("ECHO short {i}"));
    }
    for _ in 0..20 {
        let mut c = server.connect();
        c.send(b"DEAD\n");
        c.expect_closed(IO_TIMEOUT).unwrap();
    }
    let st = server.wait_status(IO_TIMEOUT, |s| s.proxy_route("ECHO").num("active") == 0);
    assert_eq!(st.proxy_route("ECHO").num("active"), 0, "{}", st.raw);
    assert_eq!(
        wait_pipes(&server, baseline),
        baseline,
        "pipe descriptors left after every session ended"
    );
}

#[test]
fn an_idle_session_is_closed_on_both_relays() {
    let up = EchoUpstream::start("A");
    for splice in RELAYS {
        let server = ServerBuilder::new(&["proxy"])
            .tag(&format!("proxy-idle-{splice}"))
            .server(&format!("proxy_splice = {splice}"))
            .server("proxy_idle_timeout_ms = 300")
            .toml(&proxy_toml(
                "",
                &[format!("prefix = \"ECHO\"\nupstreams = {}", addrs(&[&up]))],
            ))
            .start();
        let baseline = pipes(&server);
        let (mut c, _) = open(&server, "ECHO idle\n");
        assert_eq!(c.read_line(), "ECHO idle");
        // Closed by the host with no EOF from either peer.
        c.expect_closed(IO_TIMEOUT).unwrap();
        assert_eq!(wait_pipes(&server, baseline), baseline, "splice {splice}");
    }
}

#[test]
fn no_pipes_when_splice_is_off() {
    let up = EchoUpstream::start("A");
    let server = ServerBuilder::new(&["proxy"])
        .tag("proxy-nosplice")
        .server("proxy_splice = false")
        .toml(&proxy_toml(
            "",
            &[format!("prefix = \"ECHO\"\nupstreams = {}", addrs(&[&up]))],
        ))
        .start();
    let baseline = pipes(&server);
    let mut held: Vec<Client> = (0..5)
        .map(|i| {
            let (mut c, _) = open(&server, &format!("ECHO {i}\n"));
            assert_eq!(c.read_line(), format!("ECHO {i}"));
            c
        })
        .collect();
    assert_eq!(pipes(&server), baseline, "the copy path opened pipes");
    for c in &mut held {
        c.send(b"again\n");
        assert_eq!(c.read_line(), "again");
    }
}

#[test]
fn without_descriptors_for_pipes_the_session_copies_instead() {
    let up = EchoUpstream::start("A");
    let server = ServerBuilder::new(&["proxy"])
        .tag("proxy-emfile")
        .arg("--single")
        .server("proxy_splice = true")
        .toml(&proxy_toml(
            "",
            &[format!("prefix = \"ECHO\"\nupstreams = {}", addrs(&[&up]))],
        ))
        .start();
    // One session first, so that whatever the first proxied connection
    // allocates once is there before the descriptors are counted.
    let baseline = pipes(&server);
    let (mut c, _) = open(&server, "ECHO warm\n");
    assert_eq!(c.read_line(), "ECHO warm");
    drop(c);
    assert_eq!(wait_pipes(&server, baseline), baseline);
    let pid = server.pid();
    let fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // New descriptors take the lowest free numbers under the limit: leave
    // four free ones, room for the client's socket, the upstream's and one
    // pipe end, so that pipe2 fails with EMFILE for one pipe or both.
    let free_under =
        |limit: u64| limit - fds.iter().filter(|&&f| (f as u64) < limit).count() as u64;
    let mut limit = 0;
    while free_under(limit) < 4 {
        limit += 1;
    }
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit(2) on our own child with a valid struct.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    let (mut c, tag) = open(&server, "ECHO fallback\n");
    assert_eq!(tag, "A");
    assert_eq!(c.read_line(), "ECHO fallback");
    let payload = pseudo_random(256 * 1024, 7);
    let mut w = c.stream.try_clone().unwrap();
    let sent = payload.clone();
    let writer = thread::spawn(move || w.write_all(&sent).unwrap());
    assert!(
        c.read_bytes(payload.len()) == payload,
        "echoed bytes differ"
    );
    writer.join().unwrap();
    assert_eq!(pipes(&server), baseline, "a pipe was opened past the limit");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        c.read_line(),
        format!("BYE {}", "ECHO fallback\n".len() + payload.len())
    );
}

#[test]
fn bytes_read_before_the_hand_off_go_first_then_the_rest_in_order() {
    let up = EchoUpstream::start("A");
    for splice in RELAYS {
        bytes_read_first(&up, splice);
    }
}

fn bytes_read_first(up: &EchoUpstream, splice: bool) {
    let server = start_relay(
        "proxy-first",
        splice,
        &proxy_toml(
            "",
            &[format!(
                "prefix = \"ECHO\"\nproxy_protocol = \"v1\"\nupstreams = {}",
                addrs(&[up])
            )],
        ),
    );
    for round in 0..3u64 {
        // One write: the host reads the prefix and a good part of what
        // follows before the module decides; the rest is still in the
        // socket and moves through the pipe.
        let mut payload = b"ECHO ".to_vec();
        payload.extend(pseudo_random(600 * 1024 + round as usize * 4099, round));
        let mut c = server.connect();
        let local = c.stream.local_addr().unwrap();
        let dst = c.stream.peer_addr().unwrap();
        let mut w = c.stream.try_clone().unwrap();
        let sent = payload.clone();
        let writer = thread::spawn(move || w.write_all(&sent).unwrap());
        assert_eq!(c.read_line(), "A");
        // The module's header first, then the client's bytes, intact.
        assert_eq!(
            c.read_line(),
            format!(
                "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}",
                local.port(),
                dst.port()
            )
        );
        let got = c.read_bytes(payload.len());
        assert!(
            got == payload,
            "splice {splice} round {round}: the echoed bytes differ"
        );
        writer.join().unwrap();
    }
}

#[test]
fn an_upstream_half_close_reaches_the_client_which_can_still_send() {
    for splice in RELAYS {
        upstream_half_close(splice);
    }
}

fn upstream_half_close(splice: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    // Greets, shuts its sending side, then reads what comes until EOF.
    let upstream = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"hello, no more from me\n").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let server = start_relay(
        "proxy-half-up",
        splice,
        &proxy_toml(
            "",
            &[format!("prefix = \"HALF\"\nupstreams = [\"{up_addr}\"]")],
        ),
    );
    let mut c = server.connect();
    c.send(b"HALF\n");
    assert_eq!(c.read_line(), "hello, no more from me");
    // EOF: the upstream's shutdown was passed on...
    c.expect_closed(IO_TIMEOUT).unwrap();
    // ...and this side still flows.
    let tail = pseudo_random(300 * 1024, 3);
    c.stream.write_all(&tail).unwrap();
    c.stream.shutdown(Shutdown::Write).unwrap();
    let got = upstream.join().unwrap();
    let mut want = b"HALF\n".to_vec();
    want.extend_from_slice(&tail);
    assert!(
        got == want,
        "upstream got {} bytes, want {}",
        got.len(),
        want.len()
    );
}

#[test]
fn reload_keeps_50_established_sessions_on_the_old_routes() {
    let a = EchoUpstream::start("A");
    let b = EchoUpstream::start("B");
    let route = |u: &EchoUpstream| format!("prefix = \"ECHO\"\nupstreams = [\"{}\"]", u.addr);
    let server = start_proxy("proxy-reload", &proxy_toml("", &[route(&a)]));
    let mut held: Vec<Client> = (0..50)
        .map(|i| {
            let (mut c, tag) = open(&server, &format!("ECHO {i}\n"));
            assert_eq!(tag, "A");
            assert_eq!(c.read_line(), format!("ECHO {i}"));
            c
        })
        .collect();
    let st = server.wait_status(IO_TIMEOUT, |s| s.proxy_route("ECHO").num("active") == 50);
    assert_eq!(st.proxy_route("ECHO").num("active"), 50, "{}", st.raw);

    // New routes: ECHO now goes to B.
    let config = server.dir.join("switchyard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    let reply = server.admin("RELOAD");
    let (lines, [loaded, ..]) = parse_reload(&reply);
    assert_eq!(loaded, 1, "{reply}");
    assert!(
        lines.iter().any(|l| l.starts_with("OK proxy gen=2")),
        "{reply}"
    );

    // New connections take the new route, during and after the old ones.
    let (mut fresh, tag) = open(&server, "ECHO new\n");
    assert_eq!(tag, "B");
    assert_eq!(fresh.read_line(), "ECHO new");
    let ping = |held: &mut [Client], round: usize| {
        for (i, c) in held.iter_mut().enumerate() {
            let msg = format!("round {round} conn {i}\n");
            c.send(msg.as_bytes());
            assert_eq!(format!("{}\n", c.read_line()), msg, "old session {i} broke");
        }
    };
    ping(&mut held, 0);
    // A new library, forced: another generation; the sessions stay put.
    server.change_module("proxy");
    let reply = server.admin("RELOAD proxy");
    assert!(reply.starts_with("OK proxy gen=3"), "{reply}");
    ping(&mut held, 1);
    let (_, tag) = open(&server, "ECHO newer\n");
    assert_eq!(tag, "B");
    ping(&mut held, 2);
    for c in &mut held {
        c.stream.shutdown(Shutdown::Write).unwrap();
        assert!(c.read_line().starts_with("BYE "));
    }
    drop(held);
    let st = server.status();
    assert_eq!(st.expect("proxy").gen, 3, "{}", st.raw);
}

#[test]
fn a_bad_config_is_refused_on_reload_and_the_old_routes_keep_serving() {
    let a = EchoUpstream::start("A");
    let server = start_proxy(
        "proxy-badcfg",
        &proxy_toml(
            "",
            &[format!("prefix = \"ECHO\"\nupstreams = [\"{}\"]", a.addr)],
        ),
    );
    let config = server.dir.join("switchyard.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("upstreams = ", "upstream = ")).unwrap();
    let reply = server.admin("RELOAD");
    assert!(
        reply.contains("ERR proxy") && reply.contains("route \"ECHO\": unknown key \"upstream\""),
        "{reply}"
    );
    let (mut c, tag) = open(&server, "ECHO still\n");
    assert_eq!(tag, "A");
    assert_eq!(c.read_line(), "ECHO still");
}

// ---- helpers -------------------------------------------------------------

/// Writes `len` pseudo-random bytes; returns (bytes, FNV of them).
fn send_stream(s: &TcpStream, len: usize, seed: u64) -> (usize, u64) {
    send_stream_after(s, len, seed, Fnv::default())
}

fn send_stream_after(mut s: &TcpStream, len: usize, seed: u64, mut h: Fnv) -> (usize, u64) {
    let mut state = seed;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        fill_pseudo(&mut buf[..n], &mut state);
        h.update(&buf[..n]);
        s.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    (len, h.0)
}

/// A self-signed certificate and key for `name` in `dir`.
fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed for the SNI tests (Debian package openssl)");
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

/// An `openssl s_server -www` with a self-signed certificate for `name`.
struct SServer {
    addr: SocketAddr,
    child: std::process::Child,
}

impl SServer {
    fn start(dir: &Path, name: &str) -> SServer {
        let (cert, key) = self_signed(dir, name);
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn openssl s_server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "openssl s_server did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        SServer { addr, child }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_client -servername NAME` through the proxy, sending one
/// HTTP request; (success, stdout, stderr).
fn s_client(addr: SocketAddr, name: &str) -> (bool, String, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ])
        .args(["-brief", "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
