//! Fuzzes the ClientHello reader (`module_api::tls::sni`), which the host
//! and the proxy module run on the first bytes of every connection to
//! decide whether it is TLS and which name it asks for.
//!
//! Two checks per input:
//! * Arbitrary bytes: no panic; a name, when found, is non-empty, lower
//!   case, printable, no trailing dot (what the reader keeps); and the answer for any
//!   shorter piece of a record is `Incomplete` or the same as for the whole
//!   (bytes arrive a few at a time, and the host decides on the first
//!   answer that is not `Incomplete`).
//! * Round trip: the input also becomes a host name (its bytes mapped
//!   onto letters, digits, `-` and `.`); `client_hello(Some(name))` must
//!   read back as that name in lower case, and so must every split of it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use module_api::tls::{client_hello, sni, Sni};

/// Longest name the round trip builds (a DNS name is at most 253).
const MAX_NAME: usize = 253;

/// The characters a generated name is drawn from.
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.";

/// A kept name: non-empty, printable ASCII without space, `/` or `\\`,
/// lower case, no trailing dot (see `tls::host_name`).
fn check_name(name: &str) {
    assert!(!name.is_empty());
    assert!(!name.ends_with('.'), "name {name:?}");
    assert!(
        name.bytes()
            .all(|c| c.is_ascii_graphic() && !c.is_ascii_uppercase() && c != b'/' && c != b'\\'),
        "name {name:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let whole = sni(data);
    if let Sni::Hello(Some(name)) = &whole {
        check_name(name);
    }
    if whole != Sni::Incomplete {
        // Every prefix is undecided or already says the same thing. The
        // answer can only be NotTls early (a wrong record header), which
        // stays true for the whole.
        for cut in 0..data.len() {
            let part = sni(&data[..cut]);
            assert!(
                part == Sni::Incomplete || part == whole,
                "{cut} bytes: {part:?}, all {}: {whole:?}",
                data.len()
            );
        }
    }

    let name: String = data
        .iter()
        .take(MAX_NAME)
        .map(|&b| NAME_CHARS[b as usize % NAME_CHARS.len()] as char)
        .collect();
    if name.is_empty() {
        return;
    }
    let record = client_hello(Some(&name));
    // Names are kept lower-cased, without trailing dots (the root label);
    // a name of dots alone is no name.
    let kept = name.trim_end_matches('.').to_ascii_lowercase();
    let want = Sni::Hello(Some(kept).filter(|n| !n.is_empty()));
    assert_eq!(sni(&record), want, "round trip of {name:?}");
    for cut in 0..record.len() {
        assert_eq!(
            sni(&record[..cut]),
            Sni::Incomplete,
            "{name:?} cut at {cut}"
        );
    }
});
