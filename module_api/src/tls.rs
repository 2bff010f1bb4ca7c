//! TLS helpers for modules: reading a ClientHello far enough to learn its
//! SNI server name (for routing TLS connections without decrypting them).
//! The host uses the same parser to decide what it terminates.

/// The outcome of looking at the first bytes of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Sni {
    /// Not enough bytes yet.
    Incomplete,
    /// Not a TLS ClientHello.
    NotTls,
    /// A ClientHello, with its server name if it sent one.
    Hello(Option<String>),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Parses the SNI name from the first TLS record of a connection. Names
/// are lower-cased without a trailing dot; any printable-ASCII name is
/// kept (`_dmarc.example` too), and an unusable one (empty, over 255
/// bytes, spaces, `/`, non-ASCII) gives `Hello(None)`: still TLS. Only
/// the first record is read (a ClientHello split over several records
/// is answered `Hello(None)`: no name).
pub fn sni(input: &[u8]) -> Sni {
    if input.is_empty() {
        return Sni::Incomplete;
    }
    if input[0] != 0x16 {
        return Sni::NotTls;
    }
    if input.len() < 5 {
        return Sni::Incomplete;
    }
    if input[1] != 0x03 {
        return Sni::NotTls;
    }
    let len = u16::from_be_bytes([input[3], input[4]]) as usize;
    if len == 0 || len > 16384 + 2048 {
        return Sni::NotTls;
    }
    if input.len() < 5 + len {
        return Sni::Incomplete;
    }
    match parse_hello(&input[5..5 + len]) {
        Some(name) => Sni::Hello(name),
        None => Sni::NotTls,
    }
}

/// `Some(None)`: a ClientHello without SNI (or not all in this record).
fn parse_hello(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { b: record };
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let body_len = r.u24()?;
    if r.b.len() < body_len {
        return Some(None); // continues in the next record
    }
    let mut r = Reader {
        b: &r.b[..body_len],
    };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.b.is_empty() {
        return Some(None); // no extensions
    }
    let mut exts = Reader { b: r.vec16()? };
    while !exts.b.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader { b: data };
        let mut names = Reader { b: list.vec16()? };
        while !names.b.is_empty() {
            let name_type = names.u8()?;
            let name = names.vec16()?;
            if name_type == 0 {
                return Some(host_name(name));
            }
        }
        return Some(None);
    }
    Some(None)
}

/// The SNI host name as the router matches it (lower case), or `None`
/// when it is unusable. Real clients send more than RFC 1123 letters,
/// digits and hyphens (`_dmarc.example`, `a_b.test`, a trailing dot), so
/// only what cannot be a name is refused: empty, over 255 bytes, or a byte
/// outside printable ASCII, a space, `/` or `\`. A refused name still
/// leaves the connection a TLS one, just without a name to route by.
fn host_name(name: &[u8]) -> Option<String> {
    let ok = |c: &u8| c.is_ascii_graphic() && *c != b'/' && *c != b'\\';
    if name.is_empty() || name.len() > 255 || !name.iter().all(ok) {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    Some(name.trim_end_matches('.').to_ascii_lowercase()).filter(|n| !n.is_empty())
}

/// A minimal TLS ClientHello record, with an SNI extension naming `name`
/// when given, and an unrelated extension after it: for tests of code
/// that routes by [`sni`] (here, in modules, in integration tests).
pub fn client_hello(name: Option<&str>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    let mut exts = Vec::new();
    if let Some(n) = name {
        let mut entry = vec![0u8];
        entry.extend_from_slice(&(n.len() as u16).to_be_bytes());
        entry.extend_from_slice(n.as_bytes());
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        exts.extend_from_slice(&[0, 0]);
        exts.extend_from_slice(&(list.len() as u16).to_be_bytes());
        exts.extend_from_slice(&list);
    }
    // An unrelated extension after it.
    exts.extend_from_slice(&[0, 0x2b, 0, 3, 2, 3, 4]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_name() {
        let rec = client_hello(Some("DB.example.test"));
        assert_eq!(sni(&rec), Sni::Hello(Some("db.example.test".into())));
        assert_eq!(sni(&client_hello(None)), Sni::Hello(None));
        for cut in 0..rec.len() {
            assert_eq!(sni(&rec[..cut]), Sni::Incomplete, "cut at {cut}");
        }
        assert_eq!(sni(b"GET / HTTP/1.1\r\n"), Sni::NotTls);
    }

    #[test]
    fn names_real_clients_send() {
        for (sent, seen) in [
            ("_dmarc.example", "_dmarc.example"),
            ("a_b.test", "a_b.test"),
            ("Example.COM.", "example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(
                sni(&client_hello(Some(sent))),
                Sni::Hello(Some(seen.into()))
            );
        }
        // Unusable names: still TLS, just no name.
        for bad in ["", "a b", "a/b", "caf\u{e9}.test", "a\0b", "."] {
            assert_eq!(sni(&client_hello(Some(bad))), Sni::Hello(None), "{bad:?}");
        }
        let long = "a".repeat(256);
        assert_eq!(sni(&client_hello(Some(&long))), Sni::Hello(None));
    }

    #[test]
    fn survives_garbage() {
        // Every byte flipped in turn, and random-ish records: never a
        // panic, never a read past the end.
        let rec = client_hello(Some("a.example.test"));
        for i in 5..rec.len() {
            for v in [0u8, 0xff, 0x7f] {
                let mut m = rec.clone();
                m[i] = v;
                let _ = sni(&m);
            }
        }
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut m = vec![0x16, 0x03, 0x01, 0x00, 0x40];
            for _ in 0..0x40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                m.push(x as u8);
            }
            let _ = sni(&m);
        }
    }
}
