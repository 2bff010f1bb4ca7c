//! Command-line arguments.
//!
//! Old users type `-port 8080 -threads 4` (single dash, long name), as the
//! original C++ server took them; clap only knows `--port`, so those two
//! spellings are rewritten before parsing.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

/// Hot-reloadable module router: one port, many modules, routed by the
/// first bytes of each message.
#[derive(Parser, Debug, Clone)]
#[command(name = "switchyard", version, about, long_about = None)]
pub struct Args {
    /// TCP port to listen on (also `-port N`); 0 picks a free port.
    #[arg(long)]
    pub port: Option<u16>,

    /// Worker-pool threads for blocking module work (also `-threads N`).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Address to bind [default: 0.0.0.0].
    #[arg(long)]
    pub bind: Option<String>,

    /// Directory the module libraries (`*.so`) are loaded from.
    #[arg(long, default_value = "modules")]
    pub modules: PathBuf,

    /// Optional TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Directory under which each module gets its data directory
    /// [default: data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Reload modules when their files in the modules directory change.
    #[arg(long)]
    pub watch: bool,

    /// Run in one process, without the leader that restarts a crashed
    /// worker (for debugging, and where `fork` is unavailable).
    #[arg(long)]
    pub single: bool,

    /// Print a new random bus token (64 hex characters) and, on a second
    /// line, the config line that accepts it, `token_hash = "sha256:..."`;
    /// then exit.
    #[arg(long, conflicts_with = "hash_token")]
    pub new_token: bool,

    /// Read one token from stdin and print its `sha256:...` hash (what
    /// `token_hash` holds); then exit.
    #[arg(long)]
    pub hash_token: bool,
}

/// A one-shot command that runs instead of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    NewToken,
    HashToken,
}

impl Args {
    /// The one-shot command asked for, if any.
    pub fn tool(&self) -> Option<Tool> {
        match (self.new_token, self.hash_token) {
            (true, _) => Some(Tool::NewToken),
            (_, true) => Some(Tool::HashToken),
            _ => None,
        }
    }
}

/// Rewrites `-port`/`-threads` (and `-port=N`) into their `--` forms.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            for name in ["port", "threads"] {
                let single = format!("-{name}");
                if s == single || s.starts_with(&format!("{single}=")) {
                    return OsString::from(format!("-{s}"));
                }
            }
            a
        })
        .collect()
}

/// Parses the process arguments.
pub fn parse() -> Args {
    Args::parse_from(normalize(std::env::args_os()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_forms() {
        let a = Args::parse_from(normalize(
            [
                "switchyard",
                "-port",
                "9000",
                "-threads=3",
                "--bind",
                "127.0.0.1",
            ]
            .map(OsString::from),
        ));
        assert_eq!(a.port, Some(9000));
        assert_eq!(a.threads, Some(3));
        assert_eq!(a.bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(a.tool(), None);
    }

    #[test]
    fn token_tools() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(normalize(args.iter().map(OsString::from)))
                .map(|a| a.tool())
                .map_err(|e| e.kind())
        };
        assert_eq!(
            parse(&["switchyard", "--new-token"]),
            Ok(Some(Tool::NewToken))
        );
        assert_eq!(
            parse(&["switchyard", "--hash-token"]),
            Ok(Some(Tool::HashToken))
        );
        assert_eq!(
            parse(&["switchyard", "--new-token", "--hash-token"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
    }
}
