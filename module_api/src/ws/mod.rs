//! WebSocket (RFC 6455) for modules, with no sockets and no dependency:
//! the opening [`handshake`], [`frame`] decoding and encoding, a
//! [`message::Reassembler`] that joins fragments and checks what the RFC
//! asks a server to check, and the [`close`] codes. A module keeps the
//! connection (`Verdict::keep(..).watch_close()`) after answering the
//! upgrade and feeds each call's input to its reassembler; see the crate
//! documentation ("WebSocket") for the whole recipe.

mod base64;
pub mod close;
pub mod frame;
pub mod handshake;
pub mod message;
mod sha1;

pub use frame::{Fail, Opcode};
pub use message::{Event, Limits, Reassembler, Step};

/// Base64 of `bytes` (RFC 4648), e.g. a client's `Sec-WebSocket-Key`.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::encode(bytes)
}
