//! The built-in commands: `RELOAD`, `RELOAD <name>`, `STATUS`, `CLOSE`,
//! `SHUTDOWN`, `UPGRADE`, `AUTH <token>` and `RUN <module> <job>`. Each is one text
//! line; each reply line begins with `OK` or `ERR`. Parsing is pure; the
//! commands that touch the registry run on the control thread, `RUN` on a
//! job thread.

use std::sync::atomic::Ordering;

use crate::pool::AdminReply;
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
    /// Replace the worker process (leader/worker mode).
    Upgrade,
    Auth(&'a str),
    /// Run a module's job now.
    Run(&'a str, &'a str),
    Unknown,
}

impl Command<'_> {
    /// Whether the command is restricted to trusted peers.
    pub fn privileged(&self) -> bool {
        matches!(
            self,
            Command::Reload(_)
                | Command::Status
                | Command::Shutdown
                | Command::Upgrade
                | Command::Run(..)
        )
    }
}

/// Parses one line (without its terminator). Runs on the event loop that
/// read the line, which is where the test hook of [`crate::panics`] makes
/// a loop panic when armed.
pub fn parse(line: &[u8]) -> Command<'_> {
    crate::panics::inject(crate::panics::Site::Loop, line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Command::Unknown;
    };
    let mut words = line.split_ascii_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next();
    let arg2 = words.next();
    let extra = words.next().is_some();
    match (cmd, arg, arg2, extra) {
        ("RELOAD", name, None, false) => Command::Reload(name),
        ("STATUS", None, ..) => Command::Status,
        ("CLOSE", None, ..) => Command::Close,
        ("SHUTDOWN", None, ..) => Command::Shutdown,
        ("UPGRADE", None, ..) => Command::Upgrade,
        ("AUTH", Some(token), None, false) => Command::Auth(token),
        ("RUN", Some(module), Some(job), false) => Command::Run(module, job),
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
    let jobs = shared
        .registry
        .scheduler()
        .map(|s| s.status_lines())
        .unwrap_or_default();
    for l in lines.iter().chain(&jobs) {
        out.push_str(l);
        out.push('\n');
    }
    let (requests, faults) = shared.registry.totals();
    out.push_str(&format!(
        "host conns={} accepted={} requests={} faults={} loops={} threads={} uptime={}s\n",
        shared.conns.load(Ordering::Relaxed),
        shared.accepted.load(Ordering::Relaxed),
        requests,
        faults,
        shared.loops,
        shared.threads,
        shared.started.elapsed().as_secs(),
    ));
    out.push_str(&crate::worker_link::status_lines(shared.started));
    out.push_str("END\n");
    out
}

/// The `RELOAD` / `RELOAD <name>` reply.
pub fn reload(shared: &Shared, name: Option<&str>) -> String {
    if let Some(n) = name {
        crate::panics::inject(
            crate::panics::Site::Control,
            format!("RELOAD {n}").as_bytes(),
        );
    }
    let mut out = String::new();
    match name {
        Some(n) => {
            // An explicit reload is the operator's word: lift a quarantine.
            crate::worker_link::unquarantine(n);
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

/// `RUN <module> <job>`: starts the job on a job thread; its reply, `OK
/// <module>/<job> <summary>` or `ERR <module>/<job>: <reason>`, goes to
/// `reply` once the job has finished.
pub fn run(shared: &Shared, module: &str, job: &str, reply: AdminReply) {
    let label = format!("{module}/{job}");
    let Some(scheduler) = shared.registry.scheduler() else {
        return reply.send(format!("ERR {label}: jobs are not enabled\n"));
    };
    let (done, done_label) = (reply.clone(), label.clone());
    let started = scheduler.run_now(
        module,
        job,
        Box::new(move |result| {
            done.send(match result {
                Ok(summary) => format!("OK {done_label} {summary}\n"),
                Err(why) => format!("ERR {done_label}: {why}\n"),
            })
        }),
    );
    if let Err(why) = started {
        reply.send(format!("ERR {label}: {why}\n"));
    }
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
        assert_eq!(parse(b"UPGRADE"), Command::Upgrade);
        assert!(Command::Upgrade.privileged());
        assert_eq!(parse(b"AUTH s3cret"), Command::Auth("s3cret"));
        assert_eq!(parse(b"AUTH"), Command::Unknown);
        assert_eq!(parse(b"RUN cron tick"), Command::Run("cron", "tick"));
        assert_eq!(parse(b"RUN cron"), Command::Unknown);
        assert_eq!(parse(b"RUN cron tick x"), Command::Unknown);
        assert!(Command::Run("a", "b").privileged());
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
