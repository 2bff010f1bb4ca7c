//! Messages from frames (RFC 6455 section 5.4): a [`Reassembler`] joins
//! the fragments of a text or binary message, lets control frames come in
//! between, checks that text is UTF-8 and bounds what it holds.

use super::close;
use super::frame::{self, Decoded, Fail, Frame, Opcode};

/// What a [`Reassembler`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame (1009 beyond).
    pub max_frame: u64,
    /// Largest message, all its fragments together (1009 beyond).
    pub max_message: usize,
    /// Most frames one message may come in (1008 beyond): empty
    /// continuation frames cost work but no bytes.
    pub max_fragments: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
            max_fragments: 1024,
        }
    }
}

/// One thing the peer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message (checked UTF-8).
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    /// Answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer closes: its code (`None`: the frame had none, reported as
    /// 1005) and reason. Answer with a close frame (echo the code), then
    /// close the connection.
    Close(Option<u16>, String),
}

/// What [`Reassembler::next`] found at the start of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No whole frame yet: wait for more input.
    Partial,
    /// A frame of `consumed` bytes was taken; `event` is what it completed
    /// (`None` for a fragment of an unfinished message).
    Frame {
        consumed: usize,
        event: Option<Event>,
    },
}

/// Joins frames into messages: the state of one connection's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassembler {
    limits: Limits,
    /// The type of the message whose fragments are arriving.
    kind: Option<Opcode>,
    /// Its payload so far, unmasked.
    buf: Vec<u8>,
    /// Frames it came in so far.
    fragments: usize,
}

impl Reassembler {
    /// A connection's reader, for client (masked) frames.
    pub fn new(limits: Limits) -> Reassembler {
        Reassembler {
            limits,
            kind: None,
            buf: Vec::new(),
            fragments: 0,
        }
    }

    /// The unfinished message: its type, the bytes so far and the number
    /// of frames they came in (to hand a connection over, see
    /// [`Reassembler::resume`]).
    pub fn unfinished(&self) -> Option<(Opcode, &[u8], usize)> {
        self.kind.map(|k| (k, &self.buf[..], self.fragments))
    }

    /// A reader that continues an unfinished message ([`Reassembler::unfinished`]);
    /// `kind` must be text or binary.
    pub fn resume(limits: Limits, kind: Opcode, bytes: Vec<u8>, fragments: usize) -> Reassembler {
        let data = matches!(kind, Opcode::Text | Opcode::Binary);
        Reassembler {
            limits,
            kind: data.then_some(kind),
            buf: if data { bytes } else { Vec::new() },
            fragments: if data { fragments } else { 0 },
        }
    }

    /// Decodes the frame at the start of `input` and takes it.
    pub fn next(&mut self, input: &[u8]) -> Result<Step, Fail> {
        let limits = frame::Limits {
            max_payload: self.limits.max_frame,
            masked: true,
        };
        match frame::decode(input, &limits)? {
            Decoded::Partial => Ok(Step::Partial),
            Decoded::Frame(f) => Ok(Step::Frame {
                consumed: f.len,
                event: self.push(&f)?,
            }),
        }
    }

    /// Takes one decoded frame.
    pub fn push(&mut self, f: &Frame<'_>) -> Result<Option<Event>, Fail> {
        let payload = || {
            let mut v = Vec::with_capacity(f.payload.len());
            f.unmask_into(&mut v);
            v
        };
        let kind = match f.opcode {
            Opcode::Ping => return Ok(Some(Event::Ping(payload()))),
            Opcode::Pong => return Ok(Some(Event::Pong(payload()))),
            Opcode::Close => return close_event(payload()).map(Some),
            Opcode::Continuation => self.kind.ok_or(Fail::new(
                close::PROTOCOL,
                "a continuation frame without a message to continue",
            ))?,
            Opcode::Text | Opcode::Binary if self.kind.is_some() => {
                return Err(Fail::new(
                    close::PROTOCOL,
                    "a new message before the last one's final fragment",
                ))
            }
            data => data,
        };
        if self.buf.len() + f.payload.len() > self.limits.max_message {
            return Err(Fail::new(close::TOO_BIG, "message too large"));
        }
        self.fragments += 1;
        if self.fragments > self.limits.max_fragments {
            return Err(Fail::new(close::POLICY, "too many fragments"));
        }
        self.kind = Some(kind);
        f.unmask_into(&mut self.buf);
        if !f.fin {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.buf);
        self.kind = None;
        self.fragments = 0;
        match kind {
            Opcode::Text => String::from_utf8(bytes)
                .map(|s| Some(Event::Text(s)))
                .map_err(|_| Fail::new(close::INVALID_DATA, "text that is not UTF-8")),
            _ => Ok(Some(Event::Binary(bytes))),
        }
    }
}

/// A close frame's payload: empty, or a valid code and a UTF-8 reason.
fn close_event(p: Vec<u8>) -> Result<Event, Fail> {
    match p.len() {
        0 => Ok(Event::Close(None, String::new())),
        1 => Err(Fail::new(close::PROTOCOL, "a close frame of one byte")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !close::valid_received(code) {
                return Err(Fail::new(close::PROTOCOL, "an invalid close code"));
            }
            let reason = String::from_utf8(p[2..].to_vec())
                .map_err(|_| Fail::new(close::INVALID_DATA, "a close reason that is not UTF-8"))?;
            Ok(Event::Close(Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::encode_masked;

    const KEY: [u8; 4] = [1, 2, 3, 4];

    fn frame(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_masked(fin, op, payload, KEY, &mut v);
        v
    }

    /// Every event of `input`, or the first failure.
    fn events(r: &mut Reassembler, input: &[u8]) -> Result<Vec<Event>, Fail> {
        let mut pos = 0;
        let mut out = Vec::new();
        while let Step::Frame { consumed, event } = r.next(&input[pos..])? {
            pos += consumed;
            out.extend(event);
        }
        Ok(out)
    }

    #[test]
    fn joins_fragments_around_control_frames() {
        let mut r = Reassembler::new(Limits::default());
        let input = [
            frame(false, Opcode::Text, b"{\"a\""),
            frame(true, Opcode::Ping, b"p"),
            frame(false, Opcode::Continuation, b":"),
            frame(true, Opcode::Pong, b""),
            frame(true, Opcode::Continuation, b"1}"),
            frame(true, Opcode::Binary, &[0xff, 0]),
            frame(true, Opcode::Close, &[0x03, 0xe8, b'b', b'y', b'e']),
        ]
        .concat();
        assert_eq!(
            events(&mut r, &input).unwrap(),
            [
                Event::Ping(b"p".to_vec()),
                Event::Pong(Vec::new()),
                Event::Text("{\"a\":1}".into()),
                Event::Binary(vec![0xff, 0]),
                Event::Close(Some(1000), "bye".into()),
            ]
        );
        assert_eq!(r.unfinished(), None);
    }

    #[test]
    fn an_unfinished_message_can_move_to_another_reader() {
        let mut r = Reassembler::new(Limits::default());
        assert_eq!(
            events(&mut r, &frame(false, Opcode::Text, b"ab")).unwrap(),
            []
        );
        let (kind, bytes, n) = r.unfinished().unwrap();
        let mut s = Reassembler::resume(Limits::default(), kind, bytes.to_vec(), n);
        assert_eq!(
            events(&mut s, &frame(true, Opcode::Continuation, b"c")).unwrap(),
            [Event::Text("abc".into())]
        );
    }

    #[test]
    fn refuses_broken_sequences_and_data() {
        let fail = |input: Vec<u8>, limits: Limits| {
            events(&mut Reassembler::new(limits), &input)
                .unwrap_err()
                .code
        };
        let l = Limits::default();
        assert_eq!(
            fail(frame(true, Opcode::Continuation, b"x"), l),
            close::PROTOCOL
        );
        let twice = [
            frame(false, Opcode::Text, b"a"),
            frame(true, Opcode::Text, b"b"),
        ]
        .concat();
        assert_eq!(fail(twice, l), close::PROTOCOL);
        assert_eq!(
            fail(frame(true, Opcode::Text, &[0xc3, 0x28]), l),
            close::INVALID_DATA
        );
        // UTF-8 is judged on the whole message: a character split across
        // fragments is fine.
        let split = [
            frame(false, Opcode::Text, &[0xc3]),
            frame(true, Opcode::Continuation, &[0xa9]),
        ]
        .concat();
        assert_eq!(
            events(&mut Reassembler::new(l), &split).unwrap(),
            [Event::Text("é".into())]
        );
        let small = Limits {
            max_frame: 100,
            max_message: 10,
            max_fragments: 3,
        };
        assert_eq!(
            fail(frame(true, Opcode::Text, &[b'a'; 101]), small),
            close::TOO_BIG
        );
        assert_eq!(
            fail(frame(true, Opcode::Text, &[b'a'; 11]), small),
            close::TOO_BIG
        );
        let growing = [
            frame(false, Opcode::Text, &[b'a'; 6]),
            frame(true, Opcode::Continuation, &[b'a'; 5]),
        ]
        .concat();
        assert_eq!(fail(growing, small), close::TOO_BIG);
        let many: Vec<u8> = [frame(false, Opcode::Text, b"")]
            .into_iter()
            .chain((0..3).map(|_| frame(false, Opcode::Continuation, b"")))
            .flatten()
            .collect();
        assert_eq!(fail(many, small), close::POLICY);
        // Close frames: one byte, a reserved code, a reason not UTF-8.
        assert_eq!(fail(frame(true, Opcode::Close, &[3]), l), close::PROTOCOL);
        assert_eq!(
            fail(frame(true, Opcode::Close, &[0x03, 0xed]), l),
            close::PROTOCOL
        );
        assert_eq!(
            fail(frame(true, Opcode::Close, &[0x03, 0xe8, 0xff]), l),
            close::INVALID_DATA
        );
        assert_eq!(
            events(&mut Reassembler::new(l), &frame(true, Opcode::Close, b"")).unwrap(),
            [Event::Close(None, String::new())]
        );
    }
}
