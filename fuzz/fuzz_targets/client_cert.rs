//! Fuzzes the reader of names on a client certificate
//! (`switchyard::tls::identity::names`), which the host runs on every
//! verified client certificate (mutual TLS) and whose output modules use
//! to map a connection to a user.
//!
//! Checks per input, beyond "no panic":
//! * the answer is the same when asked twice (no hidden state);
//! * every name is non-empty, without control characters, appears once,
//!   and is found byte for byte in the input (names are read, never
//!   made up or rewritten);
//! * a certificate that reads is refused once a byte is appended (nothing
//!   may follow the certificate).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::tls::identity::names;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let first = names(data);
    assert_eq!(first, names(data), "not deterministic");
    let Ok(found) = first else {
        return;
    };
    for (i, n) in found.iter().enumerate() {
        assert!(!n.is_empty(), "empty name in {found:?}");
        assert!(
            !n.chars().any(char::is_control),
            "control character in {n:?}"
        );
        assert!(!found[..i].contains(n), "{n:?} twice in {found:?}");
        assert!(contains(data, n.as_bytes()), "{n:?} is not in the input");
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(names(&longer).is_err(), "a trailing byte was accepted");
});
