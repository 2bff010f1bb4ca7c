//! Close codes (RFC 6455 section 7.4): the ones a server sends, and which
//! codes a peer's close frame may carry.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The endpoint goes away (server shutting down).
pub const GOING_AWAY: u16 = 1001;
/// A protocol error.
pub const PROTOCOL: u16 = 1002;
/// A data type the endpoint does not accept (e.g. binary where text is
/// expected).
pub const UNSUPPORTED: u16 = 1003;
/// "No status code was present": reported locally, never sent.
pub const NO_STATUS: u16 = 1005;
/// Text that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// A policy was violated (e.g. too many fragments).
pub const POLICY: u16 = 1008;
/// A message too big to process.
pub const TOO_BIG: u16 = 1009;
/// An unexpected condition on the server.
pub const INTERNAL: u16 = 1011;

/// Whether a received close frame may carry `code`: the codes RFC 6455
/// defines for the wire (1000-1003, 1007-1011), the ones IANA registered
/// since (1012-1014), and the ranges for libraries (3000-3999) and
/// applications (4000-4999). 1004-1006 and 1015 are reserved or local
/// only; everything else is unassigned.
pub fn valid_received(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_unassigned_codes_are_refused() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1014, 3000, 4999,
        ] {
            assert!(valid_received(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!valid_received(bad), "{bad}");
        }
    }
}
