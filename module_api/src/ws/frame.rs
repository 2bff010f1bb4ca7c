//! One WebSocket frame (RFC 6455 section 5.2): decoding with every check
//! the RFC asks of a server, and encoding (unmasked as a server sends,
//! masked as a client does).
//!
//! [`decode`] looks at buffered bytes and tells whether a whole frame is
//! there ([`Decoded::Partial`] is not an error: wait for more). It never
//! copies: the [`Frame`] borrows the payload, still masked; unmask it with
//! [`unmask`] into a buffer of your own.

use super::close;

/// A frame's opcode (RFC 6455 section 5.2); the reserved ones are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl Opcode {
    /// The opcode for the low nibble `v`, `None` when reserved.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong: they may come between the fragments of a
    /// message, must not be fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        self as u8 >= 8
    }
}

/// A frame that cannot be accepted: close the connection with `code`
/// (send a close frame with it first), `why` says what was wrong (for the
/// log and the close frame's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub code: u16,
    pub why: &'static str,
}

impl Fail {
    pub const fn new(code: u16, why: &'static str) -> Fail {
        Fail { code, why }
    }
}

/// What [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame; a larger one fails with 1009 as soon
    /// as its header is there.
    pub max_payload: u64,
    /// Frames must be masked (a server reading a client); otherwise they
    /// must not be (a client reading a server).
    pub masked: bool,
}

/// A whole frame in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: Opcode,
    /// The masking key, if the frame has one.
    pub mask: Option<[u8; 4]>,
    /// The payload as sent (still masked).
    pub payload: &'a [u8],
    /// The frame's length in the input, header included.
    pub len: usize,
}

impl Frame<'_> {
    /// The payload unmasked, appended to `out`.
    pub fn unmask_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.payload);
        if let Some(key) = self.mask {
            unmask(&mut out[start..], key);
        }
    }
}

/// The result of [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not a whole frame yet.
    Partial,
    Frame(Frame<'a>),
}

/// XORs `data` with the masking key (RFC 6455 section 5.3); applying it
/// twice gives the data back.
pub fn unmask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Decodes the frame at the start of `buf`. Fails with 1002 when a
/// reserved bit is set, the opcode is reserved, a control frame is
/// fragmented or longer than 125 bytes, the mask is missing (or present,
/// for `masked: false`), or the length is not in its shortest form or has
/// the top bit of its 64-bit form set; with 1009 when the payload is over
/// `limits.max_payload`.
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Result<Decoded<'a>, Fail> {
    let [b0, b1, ..] = *buf else {
        return Ok(Decoded::Partial);
    };
    if b0 & 0x70 != 0 {
        return Err(Fail::new(close::PROTOCOL, "reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0f).ok_or(Fail::new(close::PROTOCOL, "reserved opcode"))?;
    let masked = b1 & 0x80 != 0;
    if masked != limits.masked {
        return Err(Fail::new(
            close::PROTOCOL,
            if limits.masked {
                "client frames must be masked"
            } else {
                "server frames must not be masked"
            },
        ));
    }
    let short = u64::from(b1 & 0x7f);
    if opcode.is_control() && (!fin || short > 125) {
        return Err(Fail::new(
            close::PROTOCOL,
            "control frames must be whole and at most 125 bytes",
        ));
    }
    let (len, mut pos) = match short {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(Decoded::Partial);
            };
            let n = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if n < 126 {
                return Err(Fail::new(
                    close::PROTOCOL,
                    "length not in its shortest form",
                ));
            }
            (n, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(Decoded::Partial);
            };
            let n = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
            if n >> 63 != 0 {
                return Err(Fail::new(close::PROTOCOL, "length with its top bit set"));
            }
            if n <= 0xffff {
                return Err(Fail::new(
                    close::PROTOCOL,
                    "length not in its shortest form",
                ));
            }
            (n, 10)
        }
        n => (n, 2),
    };
    if len > limits.max_payload {
        return Err(Fail::new(close::TOO_BIG, "frame too large"));
    }
    let mask = if masked {
        let Some(k) = buf.get(pos..pos + 4) else {
            return Ok(Decoded::Partial);
        };
        pos += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    // `len <= max_payload`, which a caller sets to what fits in memory.
    let Ok(len) = usize::try_from(len) else {
        return Err(Fail::new(close::TOO_BIG, "frame too large"));
    };
    let Some(payload) = buf.get(pos..).and_then(|rest| rest.get(..len)) else {
        return Ok(Decoded::Partial);
    };
    Ok(Decoded::Frame(Frame {
        fin,
        opcode,
        mask,
        payload,
        len: pos + len,
    }))
}

/// A frame header: at most 14 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; 14],
    len: u8,
}

impl Header {
    /// The header for a payload of `len` bytes, with the given masking key
    /// (the payload that follows must then be masked with it).
    pub fn new(fin: bool, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) -> Header {
        let mut bytes = [0u8; 14];
        bytes[0] = (u8::from(fin) << 7) | opcode as u8;
        let m = if mask.is_some() { 0x80 } else { 0 };
        let mut n = match len {
            0..=125 => {
                bytes[1] = m | len as u8;
                2
            }
            126..=0xffff => {
                bytes[1] = m | 126;
                bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = m | 127;
                bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        if let Some(k) = mask {
            bytes[n..n + 4].copy_from_slice(&k);
            n += 4;
        }
        Header {
            bytes,
            len: n as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Appends a whole, unmasked frame (what a server sends) to `out`.
pub fn encode(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(Header::new(true, opcode, payload.len(), None).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a frame masked with `key` (what a client sends), whole or not
/// (`fin`): for tests, benchmarks and clients.
pub fn encode_masked(fin: bool, opcode: Opcode, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    out.extend_from_slice(Header::new(fin, opcode, payload.len(), Some(key)).as_bytes());
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], key);
}

/// A close frame's payload: the code, then the reason cut to fit the 125
/// bytes of a control frame (at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(&reason.as_bytes()[..end]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Limits = Limits {
        max_payload: 1 << 20,
        masked: true,
    };
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn frame(buf: &[u8]) -> Frame<'_> {
        match decode(buf, &SERVER) {
            Ok(Decoded::Frame(f)) => f,
            other => panic!("{other:?}"),
        }
    }

    /// The examples of RFC 6455 section 5.7.
    #[test]
    fn rfc_6455_examples() {
        let hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let client = Limits {
            masked: false,
            ..SERVER
        };
        let Ok(Decoded::Frame(f)) = decode(&hello, &client) else {
            panic!()
        };
        assert_eq!(
            (f.fin, f.opcode, f.payload, f.len),
            (true, Opcode::Text, &b"Hello"[..], 7)
        );
        let mut out = Vec::new();
        encode(Opcode::Text, b"Hello", &mut out);
        assert_eq!(out, hello);

        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let f = frame(&masked);
        let mut text = Vec::new();
        f.unmask_into(&mut text);
        assert_eq!(text, b"Hello");
        let mut out = Vec::new();
        encode_masked(true, Opcode::Text, b"Hello", KEY, &mut out);
        assert_eq!(out, masked);

        // Fragments: "Hel" then "lo".
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let Ok(Decoded::Frame(f)) = decode(&first, &client) else {
            panic!()
        };
        assert!(!f.fin);
        // A 256-byte binary message and a 64 KiB one use the 16- and
        // 64-bit lengths.
        let mut out = Vec::new();
        encode(Opcode::Binary, &[0; 256], &mut out);
        assert_eq!(out[..4], [0x82, 0x7e, 0x01, 0x00]);
        let mut out = Vec::new();
        encode(Opcode::Binary, &vec![0; 65536], &mut out);
        assert_eq!(out[..10], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn partial_until_the_whole_frame_is_there() {
        for len in [0, 5, 125, 126, 1000, 70_000] {
            let payload = vec![b'x'; len];
            let mut buf = Vec::new();
            encode_masked(true, Opcode::Binary, &payload, KEY, &mut buf);
            for cut in 0..buf.len().min(200) {
                assert_eq!(
                    decode(&buf[..cut], &SERVER),
                    Ok(Decoded::Partial),
                    "{len} {cut}"
                );
            }
            assert_eq!(decode(&buf[..buf.len() - 1], &SERVER), Ok(Decoded::Partial));
            buf.extend_from_slice(b"next");
            let f = frame(&buf);
            assert_eq!(f.len, buf.len() - 4);
            let mut back = Vec::new();
            f.unmask_into(&mut back);
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn refuses_what_the_rfc_refuses() {
        let fail = |buf: &[u8]| decode(buf, &SERVER).unwrap_err().code;
        // Reserved bits, reserved opcodes.
        for b0 in [0xc1, 0xa1, 0x91, 0x83, 0x87, 0x8b, 0x8f] {
            assert_eq!(fail(&[b0, 0x80, 0, 0, 0, 0]), close::PROTOCOL, "{b0:x}");
        }
        // Unmasked from a client.
        assert_eq!(fail(&[0x81, 0x00]), close::PROTOCOL);
        // A fragmented or long control frame.
        assert_eq!(fail(&[0x09, 0x80]), close::PROTOCOL);
        assert_eq!(fail(&[0x89, 0xfe, 0, 126]), close::PROTOCOL);
        // Lengths not in their shortest form, the 64-bit top bit.
        assert_eq!(fail(&[0x82, 0xfe, 0, 125]), close::PROTOCOL);
        assert_eq!(
            fail(&[0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            close::PROTOCOL
        );
        assert_eq!(
            fail(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            close::PROTOCOL
        );
        // Over the limit: refused from the header alone.
        assert_eq!(
            fail(&[0x82, 0xff, 0, 0, 0, 0, 0, 0x20, 0, 0]),
            close::TOO_BIG
        );
        assert_eq!(
            fail(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            close::TOO_BIG
        );
        // A server frame must not be masked.
        let client = Limits {
            masked: false,
            ..SERVER
        };
        assert_eq!(
            decode(&[0x81, 0x80, 0, 0, 0, 0], &client).unwrap_err().code,
            close::PROTOCOL
        );
    }

    #[test]
    fn unmask_is_its_own_inverse_at_any_length_and_offset() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut d = data.clone();
            unmask(&mut d, KEY);
            if len > 0 {
                assert_ne!(d, data);
                assert_eq!(d[0], KEY[0]);
            }
            unmask(&mut d, KEY);
            assert_eq!(d, data);
        }
    }

    #[test]
    fn close_payload_fits_a_control_frame() {
        assert_eq!(close_payload(1000, ""), [0x03, 0xe8]);
        let long = "é".repeat(100);
        let p = close_payload(1009, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
