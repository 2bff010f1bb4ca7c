//! Framing for the web layer: is a whole request buffered yet? The SDK's
//! one set of strict HTTP/1.1 rules ([`crate::http::framing`]) with the
//! web layer's [`Limits`], and the [`Refusal`] a request gets when it
//! breaks them.

use abi_stable::std_types::RVec;

use super::Response;
use crate::http::framing;
use crate::ConnInfo;

/// Size limits for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers); beyond it, 431.
    pub max_head: usize,
    /// Largest request body after chunked decoding; beyond it, 413.
    pub max_body: usize,
}

impl Default for Limits {
    /// 16 KiB of head, 64 KiB of body.
    fn default() -> Limits {
        Limits {
            max_head: 16 * 1024,
            max_body: 64 * 1024,
        }
    }
}

impl Limits {
    /// The framing limits these stand for: the target may be as long as
    /// the head, and HTTP/1.1 requests need `Host`.
    pub fn framing(&self) -> framing::Limits {
        framing::Limits {
            max_head: self.max_head,
            max_target: self.max_head,
            max_body: self.max_body as u64,
            require_host: true,
        }
    }
}

/// A request the framework answers itself, before any handler: the status
/// and what is wrong. The connection is closed afterwards, since where the
/// next request would start is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 413, 414, 431 or 501.
    pub status: u16,
    /// Why, for the JSON error body.
    pub message: &'static str,
}

impl Refusal {
    pub(super) const fn new(status: u16, message: &'static str) -> Refusal {
        Refusal { status, message }
    }

    /// The response: a JSON error, `Connection: close`.
    pub fn write(&self, out: &mut RVec<u8>, head_only: bool) {
        Response::error(self.status, self.message).write(out, false, false, head_only);
    }
}

impl From<framing::Refusal> for Refusal {
    fn from(r: framing::Refusal) -> Refusal {
        Refusal::new(r.status, r.reason)
    }
}

/// The outcome of [`frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// Not all of the request is here yet: wait for more bytes.
    Partial,
    /// The first `n` bytes are one whole request, body included.
    Complete(usize),
    /// The request breaks the protocol or a limit: answer and close.
    Refused(Refusal),
}

impl From<framing::Frame> for Framed {
    fn from(f: framing::Frame) -> Framed {
        match f {
            framing::Frame::Partial { .. } => Framed::Partial,
            framing::Frame::Complete { total_len, .. } => Framed::Complete(total_len),
            framing::Frame::Refused(r) => Framed::Refused(r.into()),
        }
    }
}

/// Finds where the request at the start of `input` ends, by the SDK's one
/// set of framing rules ([`crate::http::framing`]). Pure and from scratch:
/// a handler that sees a message grow over several calls should use
/// [`frame_conn`], which resumes where the last call stopped.
///
/// Refuses: malformed heads and framing (a `Content-Length` that is not
/// digits, both `Content-Length` and `Transfer-Encoding`, chunked
/// HTTP/1.0, broken chunks, a missing `Host` in HTTP/1.1) with 400, an
/// overlong target with 414, heads over [`Limits::max_head`] or with too
/// many headers with 431, transfer codings other than `chunked` with 501,
/// and bodies over [`Limits::max_body`] with 413 as soon as their declared
/// size is known.
pub fn frame(input: &[u8], limits: &Limits) -> Framed {
    framing::frame(
        input,
        &limits.framing(),
        &mut framing::FrameState::default(),
    )
    .into()
}

/// [`frame`] for the message buffered on connection `conn`, resuming
/// where the previous call on the same message stopped (see
/// [`framing::frame_conn`]): linear work however the bytes arrive.
pub fn frame_conn(conn: &ConnInfo, input: &[u8], limits: &Limits) -> Framed {
    framing::frame_conn(conn.id, input, &limits.framing()).into()
}
