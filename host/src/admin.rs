//! The built-in commands: `RELOAD`, `RELOAD <name>`, `STATUS`, `CLOSE`,
//! `SHUTDOWN` and `AUTH <token>`. Each is one text line; each reply line
//! begins with `OK` or `ERR`. Parsing is pure; the commands that touch the
//! registry run on the control thread.

use std::sync::atomic::Ordering;

use crate::reactor::Shared;

/// Longest command line accepted.
pub const MAX_LINE: usize = 1024;

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Reload(Option<&'a str>),
    Status,
    Close,
    Shutdown,
    Auth(&'a str),
    Unknown,
}

impl Command<'_> {
    /// Whether the command is restricted to trusted peers.
    pub fn privileged(&self) -> bool {
        matches!(
            self,
            Command::Reload(_) | Command::Status | Command::Shutdown
        )
    }
}

/// Parses one line (without its terminator).
pub fn parse(line: &[u8]) -> Command<'_> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Command::Unknown;
    };
    let mut words = line.split_ascii_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next();
    let extra = words.next().is_some();
    match (cmd, arg, extra) {
        ("RELOAD", name, false) => Command::Reload(name),
        ("STATUS", None, _) => Command::Status,
        ("CLOSE", None, _) => Command::Close,
        ("SHUTDOWN", None, _) => Command::Shutdown,
        ("AUTH", Some(token), false) => Command::Auth(token),
        _ => Command::Unknown,
    }
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

/// The `STATUS` reply.
pub fn status(shared: &Shared) -> String {
    let lines = shared.registry.status_lines();
    let mut out = String::from("OK status\n");
    for l in &lines {
        out.push_str(l);
        out.push('\n');
    }
    let (requests, faults) = shared.registry.totals();
    out.push_str(&format!(
        "host conns={} accepted={} requests={} faults={} loops={} threads={} uptime={}s\nEND\n",
        shared.conns.load(Ordering::Relaxed),
        shared.accepted.load(Ordering::Relaxed),
        requests,
        faults,
        shared.loops,
        shared.threads,
        shared.started.elapsed().as_secs(),
    ));
    out
}

/// The `RELOAD` / `RELOAD <name>` reply.
pub fn reload(shared: &Shared, name: Option<&str>) -> String {
    let mut out = String::new();
    match name {
        Some(n) => {
            out.push_str(&shared.registry.reload_one(n).line);
            out.push('\n');
        }
        None => {
            for o in shared.registry.reload_all() {
                out.push_str(&o.line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse(b"RELOAD"), Command::Reload(None));
        assert_eq!(parse(b"RELOAD http"), Command::Reload(Some("http")));
        assert_eq!(parse(b"RELOAD a b"), Command::Unknown);
        assert_eq!(parse(b"STATUS"), Command::Status);
        assert_eq!(parse(b"STATUSX"), Command::Unknown);
        assert_eq!(parse(b"AUTH s3cret"), Command::Auth("s3cret"));
        assert_eq!(parse(b"AUTH"), Command::Unknown);
        assert!(Command::Shutdown.privileged());
        assert!(!Command::Close.privileged());
    }

    #[test]
    fn tokens() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }
}
