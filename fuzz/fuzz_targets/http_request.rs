//! Fuzzes the SDK's HTTP/1.1 request framing (`module_api::http::framing`)
//! with whole requests: never a panic, lengths inside the input, the same
//! answer whether the bytes arrive at once or in pieces (resuming one
//! state), chunked bodies that decode to the announced length, and the web
//! layer's parser agreeing with the framing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use module_api::http::framing::{self, Body, Frame, FrameState, Limits};
use module_api::web;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the policy and the piece size; the rest is the
    // request.
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head: 2048,
        max_target: 512,
        max_body: 4096,
        require_host: knob & 1 == 1,
    };
    let whole = framing::frame(input, &limits, &mut FrameState::default());
    if let Frame::Complete {
        head_len,
        body,
        total_len,
    } = whole
    {
        assert!(head_len <= total_len && total_len <= input.len());
        match body {
            Body::Length(n) => assert_eq!(head_len as u64 + n, total_len as u64),
            Body::Chunked { data_len } => {
                let decoded = framing::decode_chunked(&input[head_len..total_len], &limits)
                    .expect("a body frame() accepted must decode");
                assert_eq!(decoded.len() as u64, data_len);
            }
        }
        let web_limits = web::Limits {
            max_head: 2048,
            max_body: 4096,
        };
        if limits.require_host {
            // The web layer frames with the same rules (its target limit is
            // its head limit, so it may accept a longer target).
            if let Ok(req) = web::Request::parse(input, &web_limits) {
                assert_eq!(req.len(), total_len);
            }
        }
    }

    // The same bytes in pieces, one state: the pieces never accept what
    // the whole refuses, and agree on every complete request.
    let step = usize::from(knob >> 1).max(1);
    let mut state = FrameState::default();
    let mut end = 0;
    let mut last = Frame::Partial { head_len: None };
    while end < input.len() {
        end = (end + step).min(input.len());
        last = framing::frame(&input[..end], &limits, &mut state);
        if !matches!(last, Frame::Partial { .. }) {
            break;
        }
    }
    if let Frame::Complete { total_len, .. } = last {
        let again = framing::frame(&input[..end], &limits, &mut FrameState::default());
        assert_eq!(last, again, "pieces and whole disagree");
        assert!(total_len <= end);
    }
    // Work stays linear in the bytes seen.
    assert!(state.work() <= 8 * (input.len() as u64 + 64) * 4);
});
