//! Fuzzes chunked body decoding (`module_api::http::framing`): the input
//! is a chunked body after a fixed request head. Never a panic; a body the
//! framing accepts decodes to its announced length and ends where the
//! framing says; feeding it one byte at a time gives the same answer with
//! linear work; `http::chunked_body_len` agrees.

#![no_main]

use libfuzzer_sys::fuzz_target;
use module_api::http;
use module_api::http::framing::{self, Body, Frame, FrameState, Limits};

const HEAD: &[u8] = b"POST /f HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n";

fuzz_target!(|body: &[u8]| {
    let limits = Limits {
        max_head: 1024,
        max_target: 256,
        max_body: 1 << 16,
        require_host: true,
    };
    let mut msg = HEAD.to_vec();
    msg.extend_from_slice(body);
    let whole = framing::frame(&msg, &limits, &mut FrameState::default());
    if let Frame::Complete {
        head_len,
        body: framed,
        total_len,
    } = whole
    {
        assert_eq!(head_len, HEAD.len());
        assert!(total_len <= msg.len());
        let Body::Chunked { data_len } = framed else {
            panic!("a chunked head framed as {framed:?}");
        };
        let data = framing::decode_chunked(&msg[head_len..total_len], &limits)
            .expect("a body frame() accepted must decode");
        assert_eq!(data.len() as u64, data_len);
        // No size limit there, so it may only accept more.
        assert_eq!(http::chunked_body_len(body), Ok(Some(total_len - head_len)));
    }

    let mut state = FrameState::default();
    let mut last = Frame::Partial { head_len: None };
    let mut end = HEAD.len();
    while end < msg.len() {
        end += 1;
        last = framing::frame(&msg[..end], &limits, &mut state);
        if !matches!(last, Frame::Partial { .. }) {
            break;
        }
    }
    match (whole, last) {
        (Frame::Complete { .. }, _) | (_, Frame::Complete { .. }) => assert_eq!(whole, last),
        (Frame::Refused(a), Frame::Refused(b)) => assert_eq!(a.status, b.status),
        _ => {}
    }
    // One byte per call: each byte examined a bounded number of times.
    assert!(state.work() <= 4 * msg.len() as u64 + 256);
});
