//! TLS termination on the shared port: certificates generated at test time
//! (a test CA and leaf certificates from rcgen), a rustls client that checks
//! which certificate the server presented, and `curl --cacert`.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

// --- certificates ------------------------------------------------------------

/// A test certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate signed by a [`Ca`].
#[derive(Clone)]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for these names (DNS names or IP addresses).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client certificate: subject CN `cn`, these subject alternative
    /// names, extended key usage clientAuth.
    fn client(&self, cn: &str, sans: Vec<SanType>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        Arc::new(roots)
    }
}

/// The certificates of the config contract: a default one (localhost,
/// 127.0.0.1 and `*.example.test`), one for `a.example.test` by SNI, and
/// one for the wildcard `*.b.example.test`.
struct Pki {
    ca: Ca,
    default: Leaf,
    a: Leaf,
    b: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("switchyard test CA");
        let default = ca.leaf(&["localhost", "127.0.0.1", "*.example.test"]);
        let a = ca.leaf(&["a.example.test"]);
        let b = ca.leaf(&["*.b.example.test"]);
        Pki { ca, default, a, b }
    }

    /// A server with the contract's `[server.tls]` (relative paths, next
    /// to the config file) plus `extra_tls` lines in `[server.tls]`.
    fn server(&self, modules: &[&str], extra_tls: &str) -> ServerBuilder {
        ServerBuilder::new(modules)
            .tag("tls")
            .config_file("tls/cert.pem", self.default.cert_pem.clone())
            .config_file("tls/key.pem", self.default.key_pem.clone())
            .config_file("tls/a.pem", self.a.cert_pem.clone())
            .config_file("tls/a.key", self.a.key_pem.clone())
            .config_file("tls/b.pem", self.b.cert_pem.clone())
            .config_file("tls/b.key", self.b.key_pem.clone())
            .toml(&format!(
                r#"
[server.tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
{extra_tls}
[[server.tls.sni]]
names = ["a.example.test"]
cert = "tls/a.pem"
key = "tls/a.key"

[[server.tls.sni]]
names = ["*.b.example.test"]
cert = "tls/b.pem"
key = "tls/b.key"
"#
            ))
    }
}

// --- a rustls client ---------------------------------------------------------

fn client_config(
    roots: &Arc<RootCertStore>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

fn default_client_config(roots: &Arc<RootCertStore>) -> Arc<ClientConfig> {
    client_config(
        roots,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &[b"http/1.1"],
    )
}

/// `name` is the SNI name to send, or an IP address (then no SNI is sent).
fn server_name(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A TLS client connection, handshake done, reading through the common
/// client's buffer and parsers.
struct TlsClient {
    c: Client<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, cfg: &Arc<ClientConfig>, name: &str) -> Result<TlsClient, String> {
        let conn = ClientConnection::new(cfg.clone(), server_name(name))
            .map_err(|e| format!("client session: {e}"))?;
        let mut s = StreamOwned::new(conn, tcp(addr));
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("TLS handshake for {name:?}: {e}"))?;
        }
        Ok(TlsClient {
            c: Client::from_stream(s),
        })
    }

    fn must(addr: SocketAddr, cfg: &Arc<ClientConfig>, name: &str) -> TlsClient {
        Self::connect(addr, cfg, name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The client's TLS session.
    fn session(&self) -> &ClientConnection {
        &self.c.stream.conn
    }

    /// The DER of the certificate the server presented.
    fn peer_der(&self) -> Vec<u8> {
        let certs: &[CertificateDer<'_>] = self
            .session()
            .peer_certificates()
            .expect("no peer certificate");
        certs[0].to_vec()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.c.send(bytes);
    }

    fn read_line(&mut self) -> String {
        self.c.read_line()
    }

    fn try_read_line(&mut self) -> Result<String, String> {
        self.c.try_read_line()
    }

    fn read_response(&mut self) -> Response {
        self.c.read_response(false)
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        self.read_response()
    }
}

/// A `Connection: close` GET over a new TLS connection.
fn tls_get(addr: SocketAddr, cfg: &Arc<ClientConfig>, name: &str, path: &str) -> Response {
    let mut c = TlsClient::must(addr, cfg, name);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes());
    c.read_response()
}

/// A `Connection: close` GET over a new plaintext connection.
fn plain_get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    c.read_response(false)
}

/// The raw ClientHello record(s) a rustls client sends first.
fn client_hello(cfg: &Arc<ClientConfig>, name: &str) -> Vec<u8> {
    let mut conn = ClientConnection::new(cfg.clone(), server_name(name)).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16);
    out
}

/// Waits up to `within` for the peer to close; returns how long it took.
/// Bytes sent before the close (a TLS alert) are allowed and returned.
fn wait_closed(s: &mut TcpStream, within: Duration) -> Result<(Duration, Vec<u8>), String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(format!(
                "still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return Ok((start.elapsed(), got)),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return Ok((start.elapsed(), got))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("read error {e}")),
        }
    }
}

fn assert_index(resp: &Response, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.status_line);
    assert_eq!(resp.text(), INDEX_HTML, "{what}: body");
}

// --- tests -------------------------------------------------------------------

#[test]
fn curl_gets_the_static_page_over_https() {
    let pki = Pki::new();
    let srv = pki.server(&["http"], "").start();
    let dir = temp_dir("tls-curl");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pki.ca.pem()).unwrap();
    let port = srv.addr.port();
    for name in ["localhost", "a.example.test", "x.b.example.test"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("{name}:{port}:127.0.0.1"))
            .args(["-w", "\n%{http_code} %{http_version} %{ssl_verify_result}"])
            .arg(format!("https://{name}:{port}/"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("curl is needed for this test (apt-get install curl): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "curl https://{name}:{port}/ failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (body, meta) = stdout.rsplit_once('\n').unwrap();
        assert_eq!(meta, "200 1.1 0", "curl https://{name}:{port}/");
        assert_eq!(body, INDEX_HTML, "curl https://{name}:{port}/ body");
    }
    // Plaintext on the same port, also through curl.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), INDEX_HTML);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sni_selects_the_certificate() {
    let pki = Pki::new();
    let srv = pki.server(&["http"], "").start();
    let cfg = default_client_config(&pki.ca.roots());
    for (name, want, which) in [
        ("a.example.test", &pki.a, "the a.example.test certificate"),
        (
            "x.b.example.test",
            &pki.b,
            "the *.b.example.test certificate",
        ),
        (
            "other.example.test",
            &pki.default,
            "the default certificate",
        ),
        ("localhost", &pki.default, "the default certificate"),
        // An IP address: the client sends no SNI at all.
        (
            "127.0.0.1",
            &pki.default,
            "the default certificate (no SNI)",
        ),
    ] {
        let mut c = TlsClient::must(srv.addr, &cfg, name);
        assert!(c.peer_der() == want.der, "SNI {name:?} should get {which}");
        assert_eq!(
            c.session().alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "ALPN for {name:?}"
        );
        assert_index(&c.get("/"), name);
        assert_index(&c.get("/"), name); // keep-alive
    }

    // A wildcard covers one label only: y.x.b.example.test is not
    // *.b.example.test, so it gets the default certificate (which does not
    // cover it either: the client refuses it).
    let c = TlsClient::connect(srv.addr, &cfg, "y.x.b.example.test");
    assert!(
        c.is_err(),
        "a two-label match for *.b.example.test was accepted"
    );

    // TLS 1.2 alone works; ALPN offering h2 first still settles on http/1.1.
    let cfg12 = client_config(
        &pki.ca.roots(),
        &[&rustls::version::TLS12],
        &[b"h2", b"http/1.1"],
    );
    let mut c = TlsClient::must(srv.addr, &cfg12, "a.example.test");
    assert_eq!(
        c.session().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(c.session().alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(c.peer_der() == pki.a.der);
    assert_index(&c.get("/"), "TLS 1.2");
    let cfg13 = client_config(&pki.ca.roots(), &[&rustls::version::TLS13], &[]);
    let mut c = TlsClient::must(srv.addr, &cfg13, "a.example.test");
    assert_eq!(
        c.session().protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_index(&c.get("/"), "TLS 1.3");
}

#[test]
fn json_rpc_and_raw_lines_over_tls() {
    let pki = Pki::new();
    let rpc = workspace().join("modules/rpc.so").is_file();
    let modules: &[&str] = if rpc {
        &["http", "fx_line", "rpc"]
    } else {
        &["http", "fx_line"]
    };
    let srv = pki.server(modules, "").start();
    let cfg = default_client_config(&pki.ca.roots());

    // A non-HTTP line protocol, several messages on one TLS connection.
    let mut c = TlsClient::must(srv.addr, &cfg, "a.example.test");
    for _ in 0..3 {
        c.send(b"PING\n");
        assert_eq!(c.read_line(), "PONG");
    }
    c.send(b"PING\nPING\n");
    assert_eq!(c.read_line(), "PONG");
    assert_eq!(c.read_line(), "PONG");

    if !rpc {
        eprintln!("note: modules/rpc.so is missing (run `make`); JSON-RPC over TLS not checked");
        return;
    }
    let mut c = TlsClient::must(srv.addr, &cfg, "localhost");
    c.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"sys.ping\",\"id\":1}\n");
    let line = c.read_line();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["id"], 1, "{line}");
    assert_eq!(v["result"], "pong", "{line}");
    // Pipelined, on the same connection (the rpc module keeps it).
    c.send(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"kv.set\",\"params\":{\"key\":\"tls\",\"value\":42},\"id\":2}\n\
          {\"jsonrpc\":\"2.0\",\"method\":\"kv.get\",\"params\":{\"key\":\"tls\"},\"id\":3}\n",
    );
    let set: serde_json::Value = serde_json::from_str(&c.read_line()).unwrap();
    assert_eq!(set["id"], 2, "{set}");
    assert!(set.get("error").is_none(), "{set}");
    let get: serde_json::Value = serde_json::from_str(&c.read_line()).unwrap();
    assert_eq!(get["id"], 3, "{get}");
    assert_eq!(get["result"], 42, "{get}");

    // Pushes to a TLS connection: a burst of published messages, which the
    // host coalesces into few writes, arrives complete and in order
    // through the session's records.
    c.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"bus.subscribe\",\"params\":{\"topics\":[\"tls.burst\"]},\"id\":4}\n");
    let sub: serde_json::Value = serde_json::from_str(&c.read_line()).unwrap();
    assert_eq!(sub["result"], 1, "{sub}");
    let mut p = TlsClient::must(srv.addr, &cfg, "localhost");
    let burst = 300;
    let mut lines = String::new();
    for i in 0..burst {
        lines.push_str(&format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"bus.publish\",\"params\":{{\"topic\":\"tls.burst\",\"data\":{i}}},\"id\":{i}}}\n"
        ));
    }
    p.send(lines.as_bytes());
    for i in 0..burst {
        let r: serde_json::Value = serde_json::from_str(&p.read_line()).unwrap();
        assert_eq!(
            (r["id"].as_u64(), r["result"].as_u64()),
            (Some(i), Some(1)),
            "{r}"
        );
    }
    for i in 0..burst {
        let m: serde_json::Value = serde_json::from_str(&c.read_line()).unwrap();
        assert_eq!(m["method"], "bus.message", "{m}");
        assert_eq!(m["params"]["data"], i, "message {i} in order: {m}");
    }
}

#[test]
fn admin_commands_over_tls() {
    let pki = Pki::new();
    let srv = pki.server(&["http"], "").start();
    let cfg = default_client_config(&pki.ca.roots());
    let mut c = TlsClient::must(srv.addr, &cfg, "localhost");
    c.send(b"STATUS\n");
    let first = c.read_line();
    assert_eq!(first, "OK status");
    let mut raw = format!("{first}\n");
    loop {
        let l = c.read_line();
        raw.push_str(&l);
        raw.push('\n');
        if l == "END" {
            break;
        }
    }
    let st = Status::parse(&raw);
    st.expect("http");
    // The connection stays usable after an admin reply.
    assert_index(&c.get("/"), "GET after STATUS on the same TLS connection");

    let mut c = TlsClient::must(srv.addr, &cfg, "localhost");
    c.send(b"RELOAD\n");
    let mut reply = String::new();
    loop {
        let l = c.read_line();
        reply.push_str(&l);
        reply.push('\n');
        if l.starts_with("OK reload:") || l.starts_with("ERR reload:") {
            break;
        }
    }
    let (lines, [_, _, _, failed]) = parse_reload(&reply);
    assert_eq!(failed, 0, "{reply}");
    assert!(
        lines.iter().any(|l| l == "OK tls: 3 certificate(s)"),
        "RELOAD over TLS: {reply}"
    );
}

#[test]
fn plaintext_and_tls_clients_on_the_same_port_at_once() {
    let pki = Pki::new();
    let srv = pki
        .server(&["http"], "")
        .file("big.bin", pseudo_random(1 << 20, 7))
        .start();
    let cfg = default_client_config(&pki.ca.roots());
    let addr = srv.addr;

    // One of each, open side by side, their requests interleaved.
    let mut plain = srv.connect();
    let mut tls = TlsClient::must(addr, &cfg, "a.example.test");
    for i in 0..20 {
        if i % 2 == 0 {
            plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            tls.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        } else {
            tls.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        assert_index(&tls.read_response(), "tls");
        assert_index(&plain.read_response(false), "plain");
    }
    // Pipelined requests over TLS, and a file large enough to need many
    // writes (the TLS path cannot use sendfile).
    tls.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_index(&tls.read_response(), "pipelined 1");
    let big = tls.read_response();
    assert_eq!(big.status, 200);
    assert!(
        big.body == pseudo_random(1 << 20, 7),
        "big.bin over TLS differs"
    );
    assert_index(&tls.read_response(), "pipelined 3");

    // Many clients of both kinds at once.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let cfg = cfg.clone();
            thread::spawn(move || {
                for round in 0..10 {
                    if (t + round) % 2 == 0 {
                        let mut c = Client::connect(addr);
                        for _ in 0..5 {
                            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                            assert_index(&c.read_response(false), "plain client");
                        }
                    } else {
                        let name = ["localhost", "a.example.test", "z.b.example.test"][round % 3];
                        let mut c = TlsClient::must(addr, &cfg, name);
                        for _ in 0..5 {
                            assert_index(&c.get("/"), "tls client");
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = srv.status();
    assert_eq!(st.expect("http").faults, 0);
}

#[test]
fn garbage_client_hellos_are_closed_without_harm() {
    let pki = Pki::new();
    let srv = pki.server(&["http"], "handshake_timeout_ms = 2000").start();
    let cfg = default_client_config(&pki.ca.roots());
    let mut established = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert_index(&established.get("/"), "before");
    let mut plain = srv.connect();
    plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_index(&plain.read_response(false), "plain before");

    // A real ClientHello with its body scrambled after the SNI parse
    // would see it: the host starts a session, rustls rejects it.
    let real = client_hello(&cfg, "a.example.test");
    let mut scrambled = real.clone();
    let n = scrambled.len();
    for b in &mut scrambled[n - 40..] {
        *b ^= 0x5a;
    }
    let mut wrong_type = real.clone();
    wrong_type[5] = 2; // a ServerHello where the ClientHello should be
    let mut bad_version = real.clone();
    bad_version[1] = 0x02;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short record", b"\x16\x03\x01\x00\x05hello".to_vec()),
        ("zero-length record", b"\x16\x03\x01\x00\x00".to_vec()),
        ("record too long", b"\x16\x03\x01\xff\xffxxxxxxxx".to_vec()),
        ("random body", {
            let mut v = b"\x16\x03\x01\x01\x00".to_vec();
            v.extend(pseudo_random(256, 99));
            v
        }),
        ("scrambled ClientHello", scrambled),
        ("handshake of the wrong type", wrong_type),
        ("bad record version", bad_version),
        ("ClientHello then junk records", {
            let mut v = real.clone();
            v.extend_from_slice(b"\x17\x03\x03\x00\x10");
            v.extend(pseudo_random(16, 5));
            v
        }),
    ];
    for (what, bytes) in &cases {
        let mut s = tcp(srv.addr);
        let _ = s.write_all(bytes);
        match wait_closed(&mut s, Duration::from_secs(5)) {
            Ok((_, got)) => assert!(
                got.is_empty() || got[0] == 0x15 || got[0] == 0x16,
                "{what}: the server answered {:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(e) => panic!("{what}: {e}"),
        }
        // Everyone else is still served.
        assert_index(&established.get("/"), what);
        plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_index(&plain.read_response(false), what);
    }
    assert_index(
        &tls_get(srv.addr, &cfg, "x.b.example.test", "/"),
        "a new TLS connection after the garbage",
    );
    assert!(
        srv.wait_log(Duration::from_secs(2), |l| !l.contains("panicked")),
        "the host panicked"
    );
}

/// Sends `bytes` and then nothing; the connection must be closed by the
/// handshake timeout (500 ms) while other clients are served.
fn assert_stall_closed(srv: &Server, cfg: &Arc<ClientConfig>, bytes: &[u8], what: &str) {
    let mut stalled = tcp(srv.addr);
    stalled.write_all(bytes).unwrap();
    let start = Instant::now();
    // Others are served during the stall, TLS and plaintext.
    let others = {
        let (addr, cfg, what) = (srv.addr, cfg.clone(), what.to_string());
        thread::spawn(move || {
            for _ in 0..5 {
                assert_index(&tls_get(addr, &cfg, "a.example.test", "/"), &what);
                assert_index(&plain_get(addr, "/"), &what);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    wait_closed(&mut stalled, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what}: not closed by handshake_timeout_ms = 500: {e}"));
    let took = start.elapsed();
    others
        .join()
        .expect("another client was not served during the stall");
    assert!(
        took >= Duration::from_millis(400),
        "{what}: closed after {took:?}, before the handshake timeout (500 ms)"
    );
    assert!(
        took < Duration::from_millis(3000),
        "{what}: closed only after {took:?} (handshake_timeout_ms = 500)"
    );
}

#[test]
fn stalled_handshake_after_the_client_hello_times_out() {
    let pki = Pki::new();
    let srv = pki.server(&["http"], "handshake_timeout_ms = 500").start();
    let cfg = default_client_config(&pki.ca.roots());
    let hello = client_hello(&cfg, "a.example.test");
    assert_stall_closed(&srv, &cfg, &hello, "a whole ClientHello, then silence");
}

#[test]
fn half_a_client_hello_times_out() {
    let pki = Pki::new();
    // first_bytes_timeout_ms stays at its default (10 s): a TLS handshake
    // that stalls is bounded by the handshake timeout.
    let srv = pki.server(&["http"], "handshake_timeout_ms = 500").start();
    let cfg = default_client_config(&pki.ca.roots());
    let hello = client_hello(&cfg, "a.example.test");
    assert_stall_closed(&srv, &cfg, &hello[..hello.len() / 2], "half a ClientHello");
}

#[test]
fn reload_rotates_certificates() {
    let pki = Pki::new();
    let srv = pki.server(&["http"], "").start();
    let cfg = default_client_config(&pki.ca.roots());
    let mut old_session = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert!(old_session.peer_der() == pki.a.der);
    assert_index(&old_session.get("/"), "before rotation");

    // New files in place, then RELOAD.
    let tls_dir = srv.dir.join("tls");
    let a2 = pki.ca.leaf(&["a.example.test"]);
    let default2 = pki.ca.leaf(&["localhost", "127.0.0.1", "*.example.test"]);
    write_atomically(&tls_dir.join("a.pem"), &a2.cert_pem);
    write_atomically(&tls_dir.join("a.key"), &a2.key_pem);
    write_atomically(&tls_dir.join("cert.pem"), &default2.cert_pem);
    write_atomically(&tls_dir.join("key.pem"), &default2.key_pem);
    let reply = srv.admin("RELOAD");
    let (lines, [_, _, _, failed]) = parse_reload(&reply);
    assert_eq!(failed, 0, "{reply}");
    assert!(
        lines.iter().any(|l| l == "OK tls: 3 certificate(s)"),
        "RELOAD reply: {reply}"
    );
    let c = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert!(
        c.peer_der() == a2.der,
        "a new handshake still gets the old certificate"
    );
    let c = TlsClient::must(srv.addr, &cfg, "127.0.0.1");
    assert!(
        c.peer_der() == default2.der,
        "default certificate not rotated"
    );
    let c = TlsClient::must(srv.addr, &cfg, "q.b.example.test");
    assert!(c.peer_der() == pki.b.der, "unchanged certificate changed");
    // The session established before the reload goes on.
    for _ in 0..3 {
        assert_index(&old_session.get("/"), "established session after rotation");
    }

    // A broken certificate: ERR, and the certificates in force stay.
    write_atomically(
        &tls_dir.join("a.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let reply = srv.admin("RELOAD");
    let (lines, [_, _, _, failed]) = parse_reload(&reply);
    assert!(failed >= 1, "{reply}");
    let err = lines
        .iter()
        .find(|l| l.starts_with("ERR tls: "))
        .unwrap_or_else(|| panic!("no `ERR tls:` line in {reply}"));
    assert!(
        err.contains("a.pem") && err.ends_with("; keeping the certificates in force"),
        "{err}"
    );
    let c = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert!(
        c.peer_der() == a2.der,
        "a failed reload changed the certificate"
    );

    // A missing key, a key that does not match: the same.
    std::fs::remove_file(tls_dir.join("a.pem")).unwrap();
    write_atomically(&tls_dir.join("a.pem"), &a2.cert_pem);
    write_atomically(&tls_dir.join("a.key"), &pki.b.key_pem);
    let reply = srv.admin("RELOAD");
    let (lines, [_, _, _, failed]) = parse_reload(&reply);
    assert!(failed >= 1, "mismatched key accepted: {reply}");
    assert!(lines.iter().any(|l| l.starts_with("ERR tls: ")), "{reply}");
    std::fs::remove_file(tls_dir.join("a.key")).unwrap();
    let reply = srv.admin("RELOAD");
    let (lines, [_, _, _, failed]) = parse_reload(&reply);
    assert!(failed >= 1, "missing key accepted: {reply}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ERR tls: ") && l.contains("a.key")),
        "{reply}"
    );
    let c = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert!(c.peer_der() == a2.der);
    assert_index(
        &old_session.get("/"),
        "established session after failed reloads",
    );

    // Fixed again.
    let a3 = pki.ca.leaf(&["a.example.test"]);
    write_atomically(&tls_dir.join("a.pem"), &a3.cert_pem);
    write_atomically(&tls_dir.join("a.key"), &a3.key_pem);
    let reply = srv.admin("RELOAD");
    let (_, [_, _, _, failed]) = parse_reload(&reply);
    assert_eq!(failed, 0, "{reply}");
    let c = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert!(c.peer_der() == a3.der);
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs the binary with this config until it exits (it must, quickly).
fn run_to_exit(dir: &Path, config: &str) -> (Option<i32>, String) {
    let cfg_path = dir.join("switchyard.toml");
    std::fs::write(&cfg_path, config).unwrap();
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "-port",
            "0",
            "--bind",
            "127.0.0.1",
            "-threads",
            "1",
            "--modules",
        ])
        .arg(dir.join("modules"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&cfg_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchyard kept running with a bad TLS config:\n{config}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn a_bad_certificate_is_a_startup_error() {
    let pki = Pki::new();
    let dir = temp_dir("tls-start");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/cert.pem"), &pki.default.cert_pem).unwrap();
    std::fs::write(dir.join("tls/key.pem"), &pki.default.key_pem).unwrap();
    std::fs::write(dir.join("tls/a.key"), &pki.b.key_pem).unwrap();
    std::fs::write(dir.join("tls/a.pem"), &pki.a.cert_pem).unwrap();
    std::fs::write(dir.join("tls/junk.pem"), "hello\n").unwrap();
    for (what, tls, needle) in [
        (
            "missing certificate",
            "[server.tls]\ncert = \"tls/missing.pem\"\nkey = \"tls/key.pem\"\n",
            "missing.pem",
        ),
        (
            "missing key",
            "[server.tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/nokey.pem\"\n",
            "nokey.pem",
        ),
        (
            "no certificate in the file",
            "[server.tls]\ncert = \"tls/junk.pem\"\nkey = \"tls/key.pem\"\n",
            "junk.pem",
        ),
        (
            "key of another certificate (SNI entry)",
            "[server.tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n\
             [[server.tls.sni]]\nnames = [\"a.example.test\"]\ncert = \"tls/a.pem\"\nkey = \"tls/a.key\"\n",
            "a.key",
        ),
        (
            "cert without key",
            "[server.tls]\ncert = \"tls/cert.pem\"\n",
            "key",
        ),
    ] {
        let (code, err) = run_to_exit(&dir, tls);
        assert_eq!(code, Some(2), "{what}: exit status; stderr:\n{err}");
        let msg = err
            .lines()
            .find(|l| l.starts_with("switchyard: "))
            .unwrap_or_else(|| panic!("{what}: no `switchyard: ...` message on stderr:\n{err}"));
        assert!(msg.contains(needle), "{what}: message does not name {needle}: {msg}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_tls_config_a_client_hello_is_just_unrouted() {
    let pki = Pki::new();
    let srv = Server::start(&["http"]);
    let cfg = default_client_config(&pki.ca.roots());
    let mut s = tcp(srv.addr);
    s.write_all(&client_hello(&cfg, "localhost")).unwrap();
    let (_, got) = wait_closed(&mut s, Duration::from_secs(5)).unwrap();
    assert!(got.is_empty(), "answered {got:?}");
    assert_index(&srv.get("/"), "plaintext without TLS configured");
    assert!(TlsClient::connect(srv.addr, &cfg, "localhost").is_err());
}

/// A TLS server standing in for a proxy upstream: answers each line with
/// `UPSTREAM <sni>`, with its own certificate.
fn tls_upstream(leaf: &Leaf) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let chain = vec![CertificateDer::from(leaf.der.clone())];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let cfg = cfg.clone();
            thread::spawn(move || {
                sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut s = StreamOwned::new(conn, sock);
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while let Ok(1) = s.read(&mut b) {
                    line.push(b[0]);
                    if b[0] == b'\n' {
                        let sni = s.conn.server_name().unwrap_or("-").to_string();
                        if s.write_all(format!("UPSTREAM {sni}\n").as_bytes()).is_err() {
                            return;
                        }
                        let _ = s.flush();
                        line.clear();
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn proxy_passthrough_names_are_not_terminated() {
    if !workspace().join("modules/proxy.so").is_file() {
        eprintln!("note: modules/proxy.so is missing (run `make`); passthrough not checked");
        return;
    }
    let pki = Pki::new();
    let upstream_leaf =
        pki.ca
            .leaf(&["pass.example.test", "x.wild.example.test", "a.example.test"]);
    let upstream = tls_upstream(&upstream_leaf);
    let srv = pki
        .server(&["http", "proxy"], "")
        .toml(&format!(
            r#"
[[modules.proxy.routes]]
sni = "pass.example.test"
upstreams = ["{upstream}"]

[[modules.proxy.routes]]
sni = "*.wild.example.test"
upstreams = ["{upstream}"]
"#
        ))
        .start();
    let cfg = default_client_config(&pki.ca.roots());
    for name in ["pass.example.test", "x.wild.example.test"] {
        let mut c = TlsClient::connect(srv.addr, &cfg, name)
            .unwrap_or_else(|e| panic!("passthrough {name}: {e}"));
        assert!(
            c.peer_der() == upstream_leaf.der,
            "{name} is a proxy passthrough name: the host must not terminate it"
        );
        c.send(b"hello\n");
        assert_eq!(c.read_line(), format!("UPSTREAM {name}"));
    }
    // Names with a certificate here are still terminated here, on the
    // same port, at the same time.
    let mut c = TlsClient::must(srv.addr, &cfg, "a.example.test");
    assert!(c.peer_der() == pki.a.der);
    assert_index(&c.get("/"), "terminated next to passthrough");
    let c = TlsClient::must(srv.addr, &cfg, "other.example.test");
    assert!(c.peer_der() == pki.default.der);
}

// --- mutual TLS --------------------------------------------------------------

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

fn email(s: &str) -> SanType {
    SanType::Rfc822Name(s.try_into().unwrap())
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// Presents `chain` with the key of `key_pem`, as given: no check that
/// they match or even parse (rustls' `with_client_auth_cert` would refuse
/// a garbage chain before sending it).
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for AnyClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client config trusting `roots` that presents `chain` (leaf first)
/// signed with `key_pem`, for the given TLS versions.
fn client_cert_config_with(
    roots: &Arc<RootCertStore>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    chain: Vec<Vec<u8>>,
    key_pem: &str,
) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let signing = ring::sign::any_supported_type(&key).unwrap();
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(Arc::new(AnyClientCert(Arc::new(certified)))),
    )
}

/// A client config that presents `leaf` (TLS 1.3 and 1.2).
fn client_cert_config(roots: &Arc<RootCertStore>, leaf: &Leaf) -> Arc<ClientConfig> {
    client_cert_config_with(
        roots,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        vec![leaf.der.clone()],
        &leaf.key_pem,
    )
}

/// The client certificates of the mutual TLS tests: `bot1` and `bot2`
/// from the CA named in `client_ca`, `stranger` from another CA.
struct Clients {
    ca: Ca,
    other_ca: Ca,
    bot1: Leaf,
    bot2: Leaf,
    stranger: Leaf,
}

/// What the whoami fixture answers for bot1 (CN, then DNS, e-mail, URI).
const BOT1_NAMES: &str =
    "whoami bot1,bot1.example.test,bots.example.test,bot1@example.test,spiffe://example.test/bot1";

impl Clients {
    fn new() -> Clients {
        let ca = Ca::new("switchyard test client CA");
        let other_ca = Ca::new("some other CA");
        // Listed out of the contract's order: the host sorts them.
        let bot1 = ca.client(
            "bot1",
            vec![
                uri("spiffe://example.test/bot1"),
                dns("bot1.example.test"),
                email("bot1@example.test"),
                dns("bots.example.test"),
                dns("bot1"),
            ],
        );
        let bot2 = ca.client("bot2", vec![]);
        let stranger = other_ca.client("bot1", vec![dns("bot1.example.test")]);
        Clients {
            ca,
            other_ca,
            bot1,
            bot2,
            stranger,
        }
    }

    /// A server with the whoami fixture, `client_ca = "tls/clients.pem"`
    /// holding this CA, and `client_auth = <mode>` unless `None`.
    fn server(&self, pki: &Pki, mode: Option<&str>) -> Server {
        let auth = mode.map_or(String::new(), |m| format!("client_auth = \"{m}\"\n"));
        pki.server(
            &["fx_whoami"],
            &format!("client_ca = \"tls/clients.pem\"\n{auth}"),
        )
        .config_file("tls/clients.pem", self.ca.pem())
        .start()
    }
}

/// Asks the whoami fixture over a new TLS connection; `Err` says how the
/// connection failed (handshake, or no answer after it).
fn whoami(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> Result<String, String> {
    let mut c = TlsClient::connect(addr, cfg, "a.example.test")?;
    // TLS 1.3: the client's side of the handshake is over before the
    // server has looked at its certificate; a refusal shows on this read.
    c.c.send_lenient(b"WHOAMI\n");
    c.try_read_line()
}

/// A refused client: no whoami line, whatever the version.
fn assert_refused(addr: SocketAddr, cfg: &Arc<ClientConfig>, what: &str) -> String {
    match whoami(addr, cfg) {
        Ok(line) => panic!("{what}: accepted, answered {line:?}"),
        Err(e) => e,
    }
}

#[test]
fn mtls_required_admits_only_certificates_from_client_ca() {
    let pki = Pki::new();
    let clients = Clients::new();
    let srv = clients.server(&pki, Some("required"));
    let roots = pki.ca.roots();

    // Signed by client_ca: admitted, its names in the contract's order.
    let bot1 = client_cert_config(&roots, &clients.bot1);
    assert_eq!(whoami(srv.addr, &bot1).unwrap(), BOT1_NAMES);
    let mut c = TlsClient::must(srv.addr, &bot1, "a.example.test");
    for _ in 0..3 {
        c.send(b"WHOAMI\n");
        assert_eq!(c.read_line(), BOT1_NAMES, "keep-alive");
    }
    // Whatever the SNI name (and so the server certificate).
    for name in ["x.b.example.test", "localhost", "127.0.0.1"] {
        let mut c = TlsClient::must(srv.addr, &bot1, name);
        c.send(b"WHOAMI\n");
        assert_eq!(c.read_line(), BOT1_NAMES, "SNI {name}");
    }
    let bot2 = client_cert_config(&roots, &clients.bot2);
    assert_eq!(whoami(srv.addr, &bot2).unwrap(), "whoami bot2");

    // No certificate: the handshake fails, TLS 1.3 and 1.2 alike.
    let anon = default_client_config(&roots);
    let e = assert_refused(srv.addr, &anon, "no certificate (TLS 1.3)");
    assert!(e.contains("CertificateRequired"), "TLS 1.3 refusal: {e}");
    let anon12 = client_config(&roots, &[&rustls::version::TLS12], &[]);
    let e = TlsClient::connect(srv.addr, &anon12, "a.example.test")
        .err()
        .expect("no certificate (TLS 1.2): handshake completed");
    assert!(e.contains("CertificateRequired"), "TLS 1.2 refusal: {e}");
    assert!(
        srv.wait_log(Duration::from_secs(5), |l| l.lines().any(|l| {
            l.contains("tls handshake failed")
                && l.contains("from 127.0.0.1:")
                && l.contains("no certificates")
        })),
        "the refusal is not logged with the peer and the reason"
    );

    // Signed by another CA (same names): refused.
    let stranger = client_cert_config(&roots, &clients.stranger);
    let e = assert_refused(srv.addr, &stranger, "certificate from another CA");
    assert!(e.contains("UnknownCA"), "{e}");
    let stranger12 = client_cert_config_with(
        &roots,
        &[&rustls::version::TLS12],
        vec![clients.stranger.der.clone()],
        &clients.stranger.key_pem,
    );
    assert!(TlsClient::connect(srv.addr, &stranger12, "a.example.test").is_err());
    // A CA certificate is not a client certificate.
    let ca_as_client = client_cert_config_with(
        &roots,
        &[&rustls::version::TLS13],
        vec![clients.ca.cert.der().to_vec()],
        &clients.ca.key.serialize_pem(),
    );
    assert_refused(srv.addr, &ca_as_client, "the CA's own certificate");

    // Plaintext on the same port is not TLS: no certificate, no names.
    let mut plain = srv.connect();
    plain.send(b"WHOAMI\n");
    assert_eq!(plain.read_line(), "whoami -");
    // And the admitted session is still served.
    c.send(b"WHOAMI\n");
    assert_eq!(c.read_line(), BOT1_NAMES);
}

#[test]
fn mtls_optional_lets_anonymous_clients_in() {
    let pki = Pki::new();
    let clients = Clients::new();
    // client_ca alone: optional.
    let srv = clients.server(&pki, None);
    let roots = pki.ca.roots();
    assert_eq!(
        whoami(srv.addr, &default_client_config(&roots)).unwrap(),
        "whoami -"
    );
    assert_eq!(
        whoami(
            srv.addr,
            &client_config(&roots, &[&rustls::version::TLS12], &[])
        )
        .unwrap(),
        "whoami -",
        "TLS 1.2 without a certificate"
    );
    assert_eq!(
        whoami(srv.addr, &client_cert_config(&roots, &clients.bot1)).unwrap(),
        BOT1_NAMES
    );
    // A certificate that is presented must verify, even when optional.
    let stranger = client_cert_config(&roots, &clients.stranger);
    assert_refused(srv.addr, &stranger, "optional, certificate from another CA");
    // Spelled out, the same.
    let srv = clients.server(&pki, Some("optional"));
    assert_eq!(
        whoami(srv.addr, &default_client_config(&roots)).unwrap(),
        "whoami -"
    );
    assert_eq!(
        whoami(srv.addr, &client_cert_config(&roots, &clients.bot2)).unwrap(),
        "whoami bot2"
    );
}

/// Waits until the whoami fixture, asked over `asker`, says connection
/// `id` has no names.
fn wait_forgotten(asker: &mut TlsClient, id: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        asker.send(format!("WHOAMI OF {id}\n").as_bytes());
        let line = asker.read_line();
        if line == "whoami -" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: conn {id} still has {line:?} 5 s after closing"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn conn_id(c: &mut TlsClient) -> String {
    c.send(b"WHOAMI ID\n");
    let line = c.read_line();
    line.strip_prefix("id ")
        .unwrap_or_else(|| panic!("WHOAMI ID answered {line:?}"))
        .to_string()
}

#[test]
fn mtls_identity_is_forgotten_when_the_connection_closes() {
    let pki = Pki::new();
    let clients = Clients::new();
    let srv = clients.server(&pki, None);
    let roots = pki.ca.roots();
    let bot1 = client_cert_config(&roots, &clients.bot1);
    let mut asker = TlsClient::must(srv.addr, &default_client_config(&roots), "a.example.test");
    let own = conn_id(&mut asker);
    asker.send(format!("WHOAMI OF {own}\n").as_bytes());
    assert_eq!(asker.read_line(), "whoami -", "an anonymous connection");

    // Closed by the client.
    let mut c = TlsClient::must(srv.addr, &bot1, "a.example.test");
    let id = conn_id(&mut c);
    asker.send(format!("WHOAMI OF {id}\n").as_bytes());
    assert_eq!(
        asker.read_line().replace("whoami ", ""),
        BOT1_NAMES.replace("whoami ", ""),
        "the names are recorded by connection id while it is open"
    );
    drop(c);
    wait_forgotten(&mut asker, &id, "closed by the client");

    // Closed by the server: the built-in CLOSE, and an unrouted line.
    let mut c = TlsClient::must(srv.addr, &bot1, "a.example.test");
    let id = conn_id(&mut c);
    c.send(b"CLOSE\n");
    let _ = c.try_read_line();
    wait_forgotten(&mut asker, &id, "CLOSE");
    let mut c = TlsClient::must(srv.addr, &bot1, "a.example.test");
    let id = conn_id(&mut c);
    c.send(b"(no module binds this)\n");
    if let Ok(line) = c.try_read_line() {
        panic!("an unrouted line is answered: {line:?}");
    }
    wait_forgotten(&mut asker, &id, "no module for the line");

    // Many in a row: not one of them keeps its names (the map does not
    // grow with closed connections).
    let ids: Vec<String> = (0..20)
        .map(|_| {
            let mut c = TlsClient::must(srv.addr, &bot1, "a.example.test");
            conn_id(&mut c)
        })
        .collect();
    for id in &ids {
        wait_forgotten(&mut asker, id, "one of 20 short connections");
    }
    // A new connection starts without names of its own.
    let mut anon = TlsClient::must(srv.addr, &default_client_config(&roots), "a.example.test");
    anon.send(b"WHOAMI\n");
    assert_eq!(anon.read_line(), "whoami -");
}

#[test]
fn mtls_reload_changes_who_is_accepted() {
    let pki = Pki::new();
    let clients = Clients::new();
    let srv = clients.server(&pki, Some("required"));
    let roots = pki.ca.roots();
    let bot1 = client_cert_config(&roots, &clients.bot1);
    let stranger = client_cert_config(&roots, &clients.stranger);
    let mut before = TlsClient::must(srv.addr, &bot1, "a.example.test");
    before.send(b"WHOAMI\n");
    assert_eq!(before.read_line(), BOT1_NAMES);
    assert_refused(srv.addr, &stranger, "before the reload");

    // client_ca now holds only the other CA.
    let path = srv.dir.join("tls/clients.pem");
    write_atomically(&path, &clients.other_ca.pem());
    let reply = srv.admin("RELOAD");
    let (lines, [_, _, _, failed]) = parse_reload(&reply);
    assert_eq!(failed, 0, "{reply}");
    assert!(lines.iter().any(|l| l.starts_with("OK tls: ")), "{reply}");
    assert_eq!(
        whoami(srv.addr, &stranger).unwrap(),
        "whoami bot1,bot1.example.test"
    );
    assert_refused(srv.addr, &bot1, "bot1 after its CA was removed");
    // A session established before the reload keeps its names.
    before.send(b"WHOAMI\n");
    assert_eq!(before.read_line(), BOT1_NAMES, "established session");

    // Both CAs in one file: both admitted.
    write_atomically(
        &path,
        &format!("{}{}", clients.ca.pem(), clients.other_ca.pem()),
    );
    let reply = srv.admin("RELOAD");
    assert_eq!(parse_reload(&reply).1[3], 0, "{reply}");
    assert_eq!(whoami(srv.addr, &bot1).unwrap(), BOT1_NAMES);
    assert_eq!(
        whoami(srv.addr, &stranger).unwrap(),
        "whoami bot1,bot1.example.test"
    );

    // A broken CA file: ERR naming it, and the settings in force stay.
    for (what, contents) in [
        ("junk", "not a certificate\n".to_string()),
        (
            "bad base64",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into(),
        ),
        ("a key, no certificate", clients.bot2.key_pem.clone()),
    ] {
        write_atomically(&path, &contents);
        let reply = srv.admin("RELOAD");
        let (lines, [_, _, _, failed]) = parse_reload(&reply);
        assert!(failed >= 1, "{what}: {reply}");
        let err = lines
            .iter()
            .find(|l| l.starts_with("ERR tls: "))
            .unwrap_or_else(|| panic!("{what}: no `ERR tls:` line in {reply}"));
        assert!(
            err.contains("clients.pem") && err.ends_with("; keeping the certificates in force"),
            "{what}: {err}"
        );
        assert_eq!(whoami(srv.addr, &bot1).unwrap(), BOT1_NAMES, "{what}");
        assert!(whoami(srv.addr, &stranger).is_ok(), "{what}");
        assert!(
            whoami(srv.addr, &default_client_config(&roots)).is_err(),
            "{what}: required no longer in force"
        );
    }
    std::fs::remove_file(&path).unwrap();
    let reply = srv.admin("RELOAD");
    assert!(
        reply.contains("ERR tls: cannot read client_ca") && reply.contains("clients.pem"),
        "missing file: {reply}"
    );
    assert_eq!(whoami(srv.addr, &bot1).unwrap(), BOT1_NAMES);
}

#[test]
fn mtls_config_errors_refuse_to_start() {
    let pki = Pki::new();
    let clients = Clients::new();
    let dir = temp_dir("tls-mtls-start");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/cert.pem"), &pki.default.cert_pem).unwrap();
    std::fs::write(dir.join("tls/key.pem"), &pki.default.key_pem).unwrap();
    std::fs::write(dir.join("tls/clients.pem"), clients.ca.pem()).unwrap();
    std::fs::write(dir.join("tls/junk.pem"), "hello\n").unwrap();
    let base = "[server.tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n";
    for (what, extra, needles) in [
        (
            "client_auth without client_ca",
            "client_auth = \"required\"\n",
            &["client_auth", "client_ca is not"][..],
        ),
        (
            "client_auth optional without client_ca",
            "client_auth = \"optional\"\n",
            &["client_auth", "client_ca is not"][..],
        ),
        (
            "missing client_ca",
            "client_ca = \"tls/nothere.pem\"\n",
            &["nothere.pem"][..],
        ),
        (
            "client_ca without a certificate in it",
            "client_ca = \"tls/junk.pem\"\n",
            &["junk.pem", "no certificate"][..],
        ),
        (
            "unknown client_auth",
            "client_ca = \"tls/clients.pem\"\nclient_auth = \"sometimes\"\n",
            &["sometimes", "optional", "required"][..],
        ),
    ] {
        let (code, err) = run_to_exit(&dir, &format!("{base}{extra}"));
        assert_eq!(code, Some(2), "{what}: exit status; stderr:\n{err}");
        // From the `switchyard: ...` line on (a TOML error spans lines).
        let at = err
            .find("switchyard: ")
            .unwrap_or_else(|| panic!("{what}: no `switchyard: ...` message on stderr:\n{err}"));
        let msg = &err[at..];
        for n in needles {
            assert!(msg.contains(n), "{what}: message does not say {n:?}: {msg}");
        }
    }
    // client_ca without any server certificate.
    let (code, err) = run_to_exit(&dir, "[server.tls]\nclient_ca = \"tls/clients.pem\"\n");
    assert_eq!(code, Some(2), "client_ca alone; stderr:\n{err}");
    assert!(
        err.contains("client_ca needs a server certificate"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mtls_hostile_client_chains_are_closed_and_the_server_serves_on() {
    let pki = Pki::new();
    let clients = Clients::new();
    let srv = clients.server(&pki, Some("required"));
    let roots = pki.ca.roots();
    let bot1 = client_cert_config(&roots, &clients.bot1);
    let mut established = TlsClient::must(srv.addr, &bot1, "a.example.test");
    established.send(b"WHOAMI\n");
    assert_eq!(established.read_line(), BOT1_NAMES);

    let leaf = clients.bot1.der.clone();
    let ca = clients.ca.cert.der().to_vec();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        // Past rustls' limit on one handshake message (64 KiB).
        ("a 200 KB chain", {
            let mut v = vec![leaf.clone()];
            v.extend(std::iter::repeat_n(ca.clone(), 200_000 / ca.len()));
            v
        }),
        // Within the limit, but far longer than any real chain. rustls
        // looks only at the certificates it needs to build a path, so
        // this one (and garbage after a good leaf) verifies.
        ("a chain of 100 certificates", {
            let mut v = vec![leaf.clone()];
            v.extend(std::iter::repeat_n(ca.clone(), 100));
            v
        }),
        ("a garbage certificate", vec![pseudo_random(1000, 7)]),
        ("an empty certificate", vec![Vec::new()]),
        (
            "garbage after a good leaf",
            vec![leaf.clone(), pseudo_random(60_000, 8)],
        ),
        ("a truncated leaf", vec![leaf[..leaf.len() / 2].to_vec()]),
    ];
    for (what, chain) in cases {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let cfg =
                client_cert_config_with(&roots, &[version], chain.clone(), &clients.bot1.key_pem);
            let what = format!("{what} ({:?})", version.version);
            let start = Instant::now();
            match whoami(srv.addr, &cfg) {
                Ok(line) => {
                    // Only a chain that verifies may get in (rustls skips
                    // extra certificates it does not need).
                    assert!(
                        what.starts_with("a chain of 100") || what.starts_with("garbage after"),
                        "{what}: accepted, answered {line:?}"
                    );
                    assert_eq!(line, BOT1_NAMES, "{what}");
                }
                Err(e) => assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{what}: took {:?} to fail: {e}",
                    start.elapsed()
                ),
            }
            // The server goes on: the established session and a new one.
            established.send(b"WHOAMI\n");
            assert_eq!(established.read_line(), BOT1_NAMES, "{what}");
            assert_eq!(whoami(srv.addr, &bot1).unwrap(), BOT1_NAMES, "{what}");
        }
    }
    assert!(
        srv.wait_log(Duration::from_secs(1), |l| !l.contains("panicked")),
        "the host panicked"
    );
}

/// The rpc bus maps a verified client certificate to its user: `bot1`'s
/// certificate logs in as `bot1` (no token) and is held to bot1's
/// permissions, over raw lines and `POST /rpc`; a client without a
/// certificate (`optional`) or with one no user claims is not logged in.
#[test]
fn mtls_certificate_logs_in_as_its_rpc_user() {
    let pki = Pki::new();
    let clients = Clients::new();
    let srv = pki
        .server(
            &["rpc"],
            "client_ca = \"tls/clients.pem\"\nclient_auth = \"optional\"\n",
        )
        .config_file("tls/clients.pem", clients.ca.pem())
        .toml(
            r#"
[[modules.rpc.users]]
name = "bot1"
certs = ["bot1.example.test"]
[modules.rpc.users.permissions]
kv_read = ["bot1.>"]
kv_write = ["bot1.>"]
"#,
        )
        .start();
    let roots = pki.ca.roots();
    let call = |c: &mut TlsClient, line: &str| -> serde_json::Value {
        c.send(format!("{line}\n").as_bytes());
        serde_json::from_str(&c.read_line()).unwrap()
    };

    let bot1 = client_cert_config(&roots, &clients.bot1);
    let mut c = TlsClient::must(srv.addr, &bot1, "a.example.test");
    let me = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"sys.whoami","params":{},"id":1}"#,
    );
    assert_eq!(me["result"]["user"], "bot1", "{me}");
    assert_eq!(me["result"]["auth"], "cert", "{me}");
    let set = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"kv.set","params":{"key":"bot1.x","value":7},"id":2}"#,
    );
    assert_eq!(set["result"], true, "{set}");
    let get = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"kv.get","params":{"key":"bot1.x"},"id":3}"#,
    );
    assert_eq!(get["result"], 7, "{get}");
    let denied = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"kv.get","params":{"key":"bot2.x"},"id":4}"#,
    );
    assert_eq!(denied["error"]["code"], -32061, "{denied}");
    let msg = denied["error"]["message"].as_str().unwrap();
    assert!(msg.contains("kv.get") && msg.contains("bot2.x"), "{msg}");

    // POST /rpc over the same kind of connection: the certificate is the
    // credential, no Authorization header needed.
    let body = r#"{"jsonrpc":"2.0","method":"kv.get","params":{"key":"bot1.x"},"id":5}"#;
    c.send(
        format!(
            "POST /rpc HTTP/1.1\r\nHost: a.example.test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"], 7, "{v}");

    // No certificate (client_auth optional): connected, not logged in.
    let anon = default_client_config(&roots);
    let mut a = TlsClient::must(srv.addr, &anon, "a.example.test");
    let me = call(
        &mut a,
        r#"{"jsonrpc":"2.0","method":"sys.whoami","params":{},"id":1}"#,
    );
    assert_eq!(me["result"]["user"], serde_json::Value::Null, "{me}");
    let refused = call(
        &mut a,
        r#"{"jsonrpc":"2.0","method":"kv.get","params":{"key":"bot1.x"},"id":2}"#,
    );
    assert_eq!(refused["error"]["code"], -32060, "{refused}");

    // A verified certificate that no user claims (bot2) logs in as no one.
    let bot2 = client_cert_config(&roots, &clients.bot2);
    let mut b = TlsClient::must(srv.addr, &bot2, "a.example.test");
    let refused = call(
        &mut b,
        r#"{"jsonrpc":"2.0","method":"kv.get","params":{"key":"bot1.x"},"id":1}"#,
    );
    assert_eq!(refused["error"]["code"], -32060, "{refused}");
}
