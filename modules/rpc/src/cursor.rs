//! `kv.keys` cursors: where a listing stopped by `max_keys_scan` goes on,
//! sealed so that the client learns nothing from it. The position is the
//! last key examined, which is usually one the caller may not read; the
//! cursor is that key encrypted and authenticated (ChaCha20-Poly1305) with
//! a key made at random when the module is loaded, so a cursor is valid
//! until the next reload (then -32602: list again from the start).

use std::sync::OnceLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::jsonrpc::RpcError;

const AAD: &[u8] = b"switchyard kv.keys cursor";

fn sealer() -> &'static (LessSafeKey, SystemRandom) {
    static KEY: OnceLock<(LessSafeKey, SystemRandom)> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = SystemRandom::new();
        let mut k = [0u8; 32];
        rng.fill(&mut k).expect("the system's random source");
        let key = UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte key");
        (LessSafeKey::new(key), rng)
    })
}

/// Seals the position `after` (a key) into a cursor.
pub fn seal(after: &str) -> String {
    let (key, rng) = sealer();
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).expect("the system's random source");
    let mut data = after.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(AAD),
        &mut data,
    )
    .expect("a key fits");
    let mut out = crate::hex::to_hex(&nonce);
    out.push_str(&crate::hex::to_hex(&data));
    out
}

/// The position a cursor holds; -32602 for one this generation did not
/// make (forged, damaged, or from before a reload).
pub fn open(cursor: &str) -> Result<String, RpcError> {
    let bad = || {
        RpcError::invalid_params(
            "cursor is not valid here (from before a reload, or damaged); list again from the start",
        )
    };
    if cursor.len() % 2 != 0 || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut bytes = crate::hex::from_hex(cursor);
    if bytes.len() < NONCE_LEN {
        return Err(bad());
    }
    let mut data = bytes.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| bad())?;
    let (key, _) = sealer();
    let plain = key
        .open_in_place(nonce, Aad::from(AAD), &mut data)
        .map_err(|_| bad())?;
    String::from_utf8(plain.to_vec()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_hide_the_key() {
        let c = seal("shared.secret.plan");
        assert!(!c.contains("736563726574"), "not the key in hex");
        assert_ne!(seal("shared.secret.plan"), c, "a fresh nonce each time");
        assert_eq!(open(&c).unwrap(), "shared.secret.plan");
        let mut forged = c.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        assert!(open(std::str::from_utf8(&forged).unwrap()).is_err());
        assert!(open("zz").is_err());
        assert!(open("").is_err());
    }
}
