//! The one place admin text is written: every reply of the built-in
//! commands ([`Reply`]) and every registry outcome line
//! ([`ReloadOutcome`], [`Summary`]), as `Display`. The registry logs its
//! outcomes with these same impls, so a log line and a reply line never
//! drift apart.
//!
//! The bytes are a contract: `host/tests` parse them (`parse_reload`,
//! `Status` in `host/tests/common`) and operators' scripts read them. The
//! golden tests below pin each shape byte for byte; change one only with
//! the tests and `docs/ARCHITECTURE.md`.

use std::fmt::{self, Display, Formatter};

use super::{AuthReply, HostStats, Reply, StatusPage};
use crate::registry::{Pass, ReloadOutcome, ReloadReport, Summary};

impl Reply {
    /// The reply's bytes, as they go on the wire.
    pub fn text(&self) -> String {
        self.to_string()
    }
}

impl Display for Reply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Bye => f.write_str("OK bye\n"),
            Reply::ShuttingDown => f.write_str("OK shutting down\n"),
            Reply::ShutdownDisabled => f.write_str(
                "ERR SHUTDOWN is disabled on this port; use the admin socket or SIGTERM\n",
            ),
            Reply::Forbidden => f.write_str("ERR forbidden\n"),
            Reply::Unknown => f.write_str("ERR unknown command\n"),
            Reply::LineTooLong => f.write_str("ERR line too long\n"),
            Reply::Busy => f.write_str("ERR busy\n"),
            Reply::NoReply => f.write_str("ERR the command ended without a reply\n"),
            Reply::Auth(a) => a.fmt(f),
            Reply::Status(page) => page.fmt(f),
            Reply::Reload(report) => report.fmt(f),
            Reply::ReloadOne(outcome) => writeln!(f, "{outcome}"),
            Reply::Job {
                label,
                result: Ok(summary),
            } => writeln!(f, "OK {label} {summary}"),
            Reply::Job {
                label,
                result: Err(why),
            } => writeln!(f, "ERR {label}: {why}"),
            Reply::Upgrade(Ok(pid)) => writeln!(f, "OK upgrading: new worker pid={pid}"),
            Reply::Upgrade(Err(why)) => writeln!(f, "ERR upgrade: {why}"),
        }
    }
}

impl Display for AuthReply {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            AuthReply::Ok => f.write_str("OK\n"),
            AuthReply::Forbidden => f.write_str("ERR forbidden\n"),
            AuthReply::NoToken => f.write_str("ERR no admin token is configured\n"),
            AuthReply::BadToken => f.write_str("ERR bad token\n"),
            AuthReply::Locked(left) => writeln!(
                f,
                "ERR AUTH locked for {} ms after failed attempts",
                left.as_millis().max(1)
            ),
            AuthReply::TooMany => f.write_str("ERR too many failed AUTH attempts\n"),
        }
    }
}

/// `OK status`, the module and job lines, the `host` line, the worker's
/// lines, `END`.
impl Display for StatusPage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("OK status\n")?;
        for line in self.modules.iter().chain(&self.jobs) {
            writeln!(f, "{line}")?;
        }
        self.host.fmt(f)?;
        f.write_str(&self.worker)?;
        f.write_str("END\n")
    }
}

impl Display for HostStats {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "host conns={} accepted={} requests={} faults={} loops={} threads={} uptime={}s",
            self.conns,
            self.accepted,
            self.requests,
            self.faults,
            self.loops,
            self.threads,
            self.uptime_s
        )
    }
}

/// One line per outcome, then the summary (when the pass got that far).
impl Display for ReloadReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for o in &self.outcomes {
            writeln!(f, "{o}")?;
        }
        match &self.summary {
            Some(s) => writeln!(f, "{s}"),
            None => Ok(()),
        }
    }
}

/// `OK reload: 1 loaded, 2 unchanged, 0 removed, 0 failed` (`ERR` when
/// something failed; `load:` on the first pass). No newline: it is also a
/// log line.
impl Display for Summary {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let status = if self.is_ok() { "OK" } else { "ERR" };
        let verb = match self.pass {
            Pass::Load => "load",
            Pass::Reload => "reload",
        };
        write!(
            f,
            "{status} {verb}: {} loaded, {} unchanged, {} removed, {} failed",
            self.loaded, self.unchanged, self.removed, self.failed
        )
    }
}

/// One outcome line, without the newline (it is also a log line).
impl Display for ReloadOutcome {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ReloadOutcome::Loaded { name, gen, version } => {
                write!(f, "OK {name} gen={gen} v{version}")
            }
            ReloadOutcome::Unchanged { name, gen } => write!(f, "OK {name} unchanged gen={gen}"),
            ReloadOutcome::Removed { name } => write!(f, "OK {name} removed"),
            ReloadOutcome::NotLoaded { name } => write!(f, "ERR {name}: not loaded"),
            ReloadOutcome::Failed { label, error } => write!(f, "ERR {label}: {error}"),
            ReloadOutcome::Restored { name, error, gen } => write!(
                f,
                "ERR {name}: {error}; the previous code was started again as gen={gen}"
            ),
            ReloadOutcome::Down {
                name,
                error,
                restart,
            } => write!(
                f,
                "ERR {name}: {error}; restarting the previous code failed too ({restart}); \
                 the module is down"
            ),
            ReloadOutcome::Quarantined {
                name,
                crashes,
                reason,
            } => write!(
                f,
                "ERR {name}: quarantined after {crashes} crashes ({reason}); change the file or \
                 RELOAD {name} to load it again"
            ),
            ReloadOutcome::ConfigKept(e) => {
                write!(f, "ERR config: {e}; keeping the previous config")
            }
            ReloadOutcome::ConfigRefused { name, error } => {
                write!(f, "ERR {name}: config: {error}; nothing reloaded")
            }
            ReloadOutcome::NoFile { name, path } => {
                write!(f, "ERR {name}: no such module file {}", path.display())
            }
            ReloadOutcome::ScanFailed { dir, error } => {
                write!(f, "ERR reload: cannot read {}: {error}", dir.display())
            }
            ReloadOutcome::Tls(Ok(Some(n))) => write!(f, "OK tls: {n} certificate(s)"),
            ReloadOutcome::Tls(Ok(None)) => f.write_str("OK tls: off"),
            ReloadOutcome::Tls(Err(e)) => {
                write!(f, "ERR tls: {e}; keeping the certificates in force")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Golden replies: each string is copied from what the host answered
    //! before replies were typed (and from `host/tests`), byte for byte.

    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigError;
    use crate::registry::LoadError;
    use crate::tls::TlsError;

    fn text(r: Reply) -> String {
        r.text()
    }

    #[test]
    fn fixed_replies() {
        assert_eq!(text(Reply::Bye), "OK bye\n");
        assert_eq!(text(Reply::ShuttingDown), "OK shutting down\n");
        assert_eq!(
            text(Reply::ShutdownDisabled),
            "ERR SHUTDOWN is disabled on this port; use the admin socket or SIGTERM\n"
        );
        assert_eq!(text(Reply::Forbidden), "ERR forbidden\n");
        assert_eq!(text(Reply::Unknown), "ERR unknown command\n");
        assert_eq!(text(Reply::LineTooLong), "ERR line too long\n");
        assert_eq!(text(Reply::Busy), "ERR busy\n");
        assert_eq!(
            text(Reply::NoReply),
            "ERR the command ended without a reply\n"
        );
    }

    #[test]
    fn auth_replies() {
        let auth = |a| text(Reply::Auth(a));
        assert_eq!(auth(AuthReply::Ok), "OK\n");
        assert_eq!(auth(AuthReply::Forbidden), "ERR forbidden\n");
        assert_eq!(
            auth(AuthReply::NoToken),
            "ERR no admin token is configured\n"
        );
        assert_eq!(auth(AuthReply::BadToken), "ERR bad token\n");
        assert_eq!(
            auth(AuthReply::Locked(Duration::from_millis(100))),
            "ERR AUTH locked for 100 ms after failed attempts\n"
        );
        // Under a millisecond left still reads as 1 ms, never 0.
        assert_eq!(
            auth(AuthReply::Locked(Duration::from_micros(10))),
            "ERR AUTH locked for 1 ms after failed attempts\n"
        );
        assert_eq!(
            auth(AuthReply::TooMany),
            "ERR too many failed AUTH attempts\n"
        );
    }

    #[test]
    fn status_page() {
        let page = StatusPage {
            modules: vec![
                "http v0.1.0 gen=1 state=running conns=0 requests=3 faults=0 mode=overlap \
                 draining=0 retained=0 retained_bytes=0"
                    .into(),
            ],
            jobs: vec!["job cron/tick next_in=1s runs=0 failures=0 last=never".into()],
            host: HostStats {
                conns: 1,
                accepted: 2,
                requests: 3,
                faults: 0,
                loops: 2,
                threads: 4,
                uptime_s: 5,
            },
            worker: "worker pid=7 uptime=5s upgrades=0 auto_upgrades=0\n".into(),
        };
        assert_eq!(
            text(Reply::Status(page)),
            "OK status\n\
             http v0.1.0 gen=1 state=running conns=0 requests=3 faults=0 mode=overlap \
             draining=0 retained=0 retained_bytes=0\n\
             job cron/tick next_in=1s runs=0 failures=0 last=never\n\
             host conns=1 accepted=2 requests=3 faults=0 loops=2 threads=4 uptime=5s\n\
             worker pid=7 uptime=5s upgrades=0 auto_upgrades=0\n\
             END\n"
        );
        let empty = StatusPage {
            modules: Vec::new(),
            jobs: Vec::new(),
            host: HostStats::default(),
            worker: String::new(),
        };
        assert_eq!(
            text(Reply::Status(empty)),
            "OK status\nhost conns=0 accepted=0 requests=0 faults=0 loops=0 threads=0 \
             uptime=0s\nEND\n"
        );
    }

    fn loaded(name: &str, gen: u64) -> ReloadOutcome {
        ReloadOutcome::Loaded {
            name: name.into(),
            gen,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn module_outcome_lines() {
        let one = |o| text(Reply::ReloadOne(o));
        assert_eq!(one(loaded("fx_line", 1)), "OK fx_line gen=1 v0.1.0\n");
        assert_eq!(
            one(ReloadOutcome::Unchanged {
                name: "http".into(),
                gen: 1
            }),
            "OK http unchanged gen=1\n"
        );
        assert_eq!(
            one(ReloadOutcome::Removed { name: "rpc".into() }),
            "OK rpc removed\n"
        );
        assert_eq!(
            one(ReloadOutcome::NotLoaded { name: "x".into() }),
            "ERR x: not loaded\n"
        );
        assert_eq!(
            one(ReloadOutcome::Failed {
                label: "fx_ver".into(),
                error: LoadError::Load("abi mismatch".into()),
            }),
            "ERR fx_ver: abi mismatch\n"
        );
        assert_eq!(
            one(ReloadOutcome::Failed {
                label: "b.so".into(),
                error: LoadError::AlreadyLoaded("a".into()),
            }),
            "ERR b.so: module a is already loaded from another file\n"
        );
        assert_eq!(
            one(ReloadOutcome::Failed {
                label: "a".into(),
                error: LoadError::OtherModule("b".into()),
            }),
            "ERR a: the file now holds module \"b\"\n"
        );
        assert_eq!(
            one(ReloadOutcome::Failed {
                label: "cron.so".into(),
                error: LoadError::Conflict {
                    prefix: "GET /x".into(),
                    first: "http".into(),
                    second: "cron".into(),
                },
            }),
            "ERR cron.so: prefix \"GET /x\" is bound by both http and cron; \
             assign it to one of them in [server.routes]\n"
        );
        assert_eq!(
            one(ReloadOutcome::Restored {
                name: "fx_excl".into(),
                error: LoadError::Load("start failed".into()),
                gen: 3,
            }),
            "ERR fx_excl: start failed; the previous code was started again as gen=3\n"
        );
        assert_eq!(
            one(ReloadOutcome::Down {
                name: "fx_excl".into(),
                error: LoadError::Load("a".into()),
                restart: LoadError::Load("b".into()),
            }),
            "ERR fx_excl: a; restarting the previous code failed too (b); the module is down\n"
        );
        let quarantined = "ERR fx_crash: quarantined after 3 crashes (segv); change the file \
                           or RELOAD fx_crash to load it again";
        assert_eq!(
            one(ReloadOutcome::Quarantined {
                name: "fx_crash".into(),
                crashes: 3,
                reason: "segv".into(),
            }),
            format!("{quarantined}\n")
        );
        assert_eq!(
            one(ReloadOutcome::NoFile {
                name: "nosuchmodule".into(),
                path: PathBuf::from("/m/nosuchmodule.so"),
            }),
            "ERR nosuchmodule: no such module file /m/nosuchmodule.so\n"
        );
    }

    #[test]
    fn config_and_tls_lines() {
        let bad = ConfigError::Bad {
            path: PathBuf::from("/c/s.toml"),
            source: Box::new(ConfigError::Invalid(
                "server.max_connections must be at least 1".into(),
            )),
        };
        assert_eq!(
            ReloadOutcome::ConfigKept(bad).to_string(),
            "ERR config: bad config /c/s.toml: server.max_connections must be at least 1; \
             keeping the previous config"
        );
        let missing = ConfigError::Read {
            path: PathBuf::from("/c/s.toml"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(ReloadOutcome::ConfigRefused {
            name: "http".into(),
            error: missing,
        }
        .to_string()
        .starts_with("ERR http: config: cannot read config /c/s.toml: "));
        assert_eq!(
            ReloadOutcome::Tls(Ok(Some(3))).to_string(),
            "OK tls: 3 certificate(s)"
        );
        assert_eq!(ReloadOutcome::Tls(Ok(None)).to_string(), "OK tls: off");
        assert_eq!(
            ReloadOutcome::Tls(Err(TlsError::NoCa {
                path: PathBuf::from("/c/ca.pem")
            }))
            .to_string(),
            "ERR tls: no certificate in client_ca /c/ca.pem; keeping the certificates in force"
        );
        assert_eq!(
            ReloadOutcome::ScanFailed {
                dir: PathBuf::from("/m"),
                error: std::io::Error::other("gone"),
            }
            .to_string(),
            "ERR reload: cannot read /m: gone"
        );
    }

    #[test]
    fn reload_reports() {
        let summary = |pass, failed| Summary {
            pass,
            loaded: 1,
            unchanged: 2,
            removed: 0,
            failed,
        };
        let report = ReloadReport {
            outcomes: vec![
                loaded("http", 2),
                ReloadOutcome::Unchanged {
                    name: "cron".into(),
                    gen: 1,
                },
            ],
            summary: Some(summary(Pass::Reload, 0)),
        };
        assert!(report.is_ok());
        assert_eq!(report.loaded(), 1);
        assert_eq!(
            text(Reply::Reload(report)),
            "OK http gen=2 v0.1.0\nOK cron unchanged gen=1\n\
             OK reload: 1 loaded, 2 unchanged, 0 removed, 0 failed\n"
        );
        assert_eq!(
            summary(Pass::Reload, 1).to_string(),
            "ERR reload: 1 loaded, 2 unchanged, 0 removed, 1 failed"
        );
        assert_eq!(
            summary(Pass::Load, 0).to_string(),
            "OK load: 1 loaded, 2 unchanged, 0 removed, 0 failed"
        );
        let stopped = ReloadReport {
            outcomes: vec![ReloadOutcome::ScanFailed {
                dir: PathBuf::from("/m"),
                error: std::io::Error::other("gone"),
            }],
            summary: None,
        };
        assert!(!stopped.is_ok());
        assert_eq!(
            text(Reply::Reload(stopped)),
            "ERR reload: cannot read /m: gone\n"
        );
    }

    #[test]
    fn job_and_upgrade_replies() {
        let job = |result| {
            text(Reply::Job {
                label: "cron/once".into(),
                result,
            })
        };
        assert_eq!(
            job(Ok("exit status 0: hi".into())),
            "OK cron/once exit status 0: hi\n"
        );
        assert_eq!(
            job(Err("already running".into())),
            "ERR cron/once: already running\n"
        );
        assert_eq!(
            job(Err("jobs are not enabled".into())),
            "ERR cron/once: jobs are not enabled\n"
        );
        assert_eq!(
            text(Reply::Upgrade(Ok(42))),
            "OK upgrading: new worker pid=42\n"
        );
        assert_eq!(
            text(Reply::Upgrade(Err(
                "needs the leader process (this server runs with --single)".into()
            ))),
            "ERR upgrade: needs the leader process (this server runs with --single)\n"
        );
    }
}
