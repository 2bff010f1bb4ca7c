//! Bus tokens for `[[modules.rpc.users]]`: `switchyard --new-token` makes
//! one, `switchyard --hash-token` hashes one read from stdin.
//!
//! The config never holds a token itself, only `sha256:<64 lowercase hex>`
//! of its UTF-8 bytes ([`hash`]), so a leaked config file does not leak the
//! tokens. A new token is 32 bytes from the operating system's random
//! source (`ring::rand::SystemRandom`), written as 64 lowercase hex
//! characters: 256 bits, nothing to escape in TOML, a shell or an HTTP
//! `Authorization` header. [`token_matches`] compares a secret without
//! an early exit (the admin token of `AUTH`).

use std::io::Read;

use ring::rand::{SecureRandom, SystemRandom};

/// Why `--new-token` or `--hash-token` failed; the text is what stderr
/// shows after `switchyard: `.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the system's random source failed")]
    Random,
    #[error("no token on stdin")]
    Empty,
    #[error("expected one token on one line on stdin")]
    Lines,
    #[error("cannot read the token from stdin: {0}")]
    Stdin(String),
}

/// Random bytes in a new token.
const TOKEN_BYTES: usize = 32;

/// `sha256:<64 lowercase hex>` of `token`'s UTF-8 bytes, the form
/// `token_hash` takes in the config.
pub fn hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    format!("sha256:{}", hex(digest.as_ref()))
}

/// A fresh random token (64 lowercase hex characters).
pub fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    Ok(hex(&bytes))
}

/// The two lines `--new-token` prints: the token, then the config line
/// that accepts it.
pub fn new_token_lines(token: &str) -> String {
    format!("{token}\ntoken_hash = \"{}\"\n", hash(token))
}

/// The token in what `--hash-token` read from stdin: one line, its
/// trailing `\n` or `\r\n` stripped. Empty input, or more than one line,
/// is refused rather than hashed into something nobody can send.
pub fn token_from_input(input: &str) -> Result<&str, TokenError> {
    let token = input.strip_suffix('\n').unwrap_or(input);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.contains(['\n', '\r']) {
        return Err(TokenError::Lines);
    }
    Ok(token)
}

/// `--new-token`: prints a token and its `token_hash` line.
pub fn print_new() -> Result<(), TokenError> {
    print!("{}", new_token_lines(&generate()?));
    Ok(())
}

/// `--hash-token`: reads a token from stdin and prints its hash.
pub fn print_hash_of_stdin() -> Result<(), TokenError> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| TokenError::Stdin(e.to_string()))?;
    println!("{}", hash(token_from_input(&input)?));
    Ok(())
}

/// Compares secrets without an early exit on the first difference.
pub fn token_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= (x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_sha256_vectors() {
        // FIPS 180-2 examples.
        assert_eq!(
            hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash(""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn new_tokens_are_64_hex_and_differ() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
        let lines = new_token_lines(&a);
        assert_eq!(lines, format!("{a}\ntoken_hash = \"{}\"\n", hash(&a)));
    }

    #[test]
    fn stdin_input_loses_one_line_ending_only() {
        assert_eq!(token_from_input("abc\n"), Ok("abc"));
        assert_eq!(token_from_input("abc\r\n"), Ok("abc"));
        assert_eq!(token_from_input("abc"), Ok("abc"));
        assert_eq!(token_from_input(" abc \n"), Ok(" abc "));
        assert_eq!(token_from_input("\n"), Err(TokenError::Empty));
        assert_eq!(token_from_input(""), Err(TokenError::Empty));
        assert_eq!(token_from_input("a\nb\n"), Err(TokenError::Lines));
        assert_eq!(TokenError::Empty.to_string(), "no token on stdin");
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
