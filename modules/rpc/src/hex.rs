//! Lowercase hex, for bytes that travel inside text: the partial
//! messages a reload hands over ([`crate::handoff`] state) and the sealed
//! `kv.keys` cursors ([`crate::cursor`]). A leaf: it imports nothing from
//! the crate.

/// `b` as lowercase hex, two digits a byte.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of `s`, read two hex digits at a time; a pair that is not
/// hex is skipped (a trailing odd digit too).
pub fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&all)), all);
        assert_eq!(to_hex(b"\0{\xff"), "007bff");
        assert_eq!(from_hex("7bzz0"), b"{");
    }
}
