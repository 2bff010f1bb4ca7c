//! Fuzzes `module_api::ws`: WebSocket frame decoding and message
//! reassembly (what the rpc module runs on every byte a WebSocket client
//! sends), and the frame encoders.
//!
//! The first input byte chooses where the rest is split in two, as if it
//! had arrived in two reads; the host keeps unconsumed bytes buffered, as
//! here. Checked:
//! * no panic, and every frame consumes at least one byte and no more
//!   than is buffered;
//! * the events (and the failure, if any) are the same whether the input
//!   arrives whole or split, and so is what stays buffered (unless it
//!   failed: the connection is closed then);
//! * a text event is UTF-8 (it is a `String`), no message is over the
//!   limit, and a failure carries a close code a server may send;
//! * `decode(encode_masked(x))` and `decode(encode(x))` give `x` back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use module_api::ws::frame::{self, Decoded, Opcode};
use module_api::ws::{close, Event, Fail, Limits, Reassembler, Step};

const LIMITS: Limits = Limits {
    max_frame: 4096,
    max_message: 8192,
    max_fragments: 8,
};

/// Feeds `chunks` one after the other; returns the events, the failure
/// and the bytes left buffered (none after a failure).
fn run(chunks: &[&[u8]]) -> (Vec<Event>, Option<Fail>, usize) {
    let mut r = Reassembler::new(LIMITS);
    let mut buf = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match r.next(&buf) {
                Ok(Step::Partial) => break,
                Ok(Step::Frame { consumed, event }) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    buf.drain(..consumed);
                    if let Some(e) = event {
                        match &e {
                            Event::Text(t) => assert!(t.len() <= LIMITS.max_message),
                            Event::Binary(b) => assert!(b.len() <= LIMITS.max_message),
                            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
                            Event::Close(code, _) => {
                                assert!(code.is_none_or(close::valid_received))
                            }
                        }
                        events.push(e);
                    }
                }
                Err(f) => {
                    assert!(matches!(
                        f.code,
                        close::PROTOCOL | close::INVALID_DATA | close::POLICY | close::TOO_BIG
                    ));
                    // The connection ends here: what was buffered, or
                    // would have arrived, does not matter.
                    return (events, Some(f), 0);
                }
            }
        }
    }
    (events, None, buf.len())
}

fn round_trip(opcode: Opcode, fin: bool, payload: &[u8], key: [u8; 4]) {
    let limits = |masked| frame::Limits {
        max_payload: u64::MAX >> 1,
        masked,
    };
    let mut enc = Vec::new();
    frame::encode_masked(fin, opcode, payload, key, &mut enc);
    let Ok(Decoded::Frame(f)) = frame::decode(&enc, &limits(true)) else {
        panic!("masked frame not decoded");
    };
    let mut back = Vec::new();
    f.unmask_into(&mut back);
    assert_eq!(
        (f.fin, f.opcode, f.len, &back[..]),
        (fin, opcode, enc.len(), payload)
    );
    if fin {
        let mut enc = Vec::new();
        frame::encode(opcode, payload, &mut enc);
        let Ok(Decoded::Frame(f)) = frame::decode(&enc, &limits(false)) else {
            panic!("server frame not decoded");
        };
        assert_eq!((f.opcode, f.payload, f.len), (opcode, payload, enc.len()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(first) * input.len() / 255;
    let whole = run(&[input]);
    let parts = run(&[&input[..split], &input[split..]]);
    assert_eq!(whole, parts, "split at {split}");

    let opcode = [
        Opcode::Text,
        Opcode::Binary,
        Opcode::Continuation,
        Opcode::Close,
        Opcode::Ping,
        Opcode::Pong,
    ][usize::from(first % 6)];
    let control = opcode.is_control();
    let payload = if control {
        &input[..input.len().min(125)]
    } else {
        input
    };
    let key = [first, first.wrapping_mul(7), 0x5a, first ^ 0xff];
    round_trip(opcode, control || first & 0x40 != 0, payload, key);
});
