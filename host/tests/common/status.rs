//! The `STATUS` reply, parsed: module lines, job lines, the host and
//! worker lines after them, the proxy module's routes; and the `RELOAD`
//! reply's outcome lines and summary counts.

use std::net::SocketAddr;

/// One module line of `STATUS`.
#[derive(Debug, Clone)]
pub struct ModuleStatus {
    pub name: String,
    pub version: String,
    pub gen: u64,
    pub state: String,
    pub conns: u64,
    pub requests: u64,
    pub faults: u64,
    pub line: String,
}

/// A parsed `STATUS` reply. Parsing checks the framing (`OK status`,
/// module lines sorted by name, the `host` line, `END`) and reads fields by
/// key; [`Status::assert_exact_format`] checks the field order too.
#[derive(Debug)]
pub struct Status {
    pub modules: Vec<ModuleStatus>,
    /// The `job <module>/<job> ...` lines (after the modules).
    pub jobs: Vec<JobStatus>,
    /// The `host ...` line.
    pub host_line: String,
    /// The lines between the `host` line and `END`: `worker pid=<pid>
    /// uptime=<N>s`, `fault ...`, `quarantined ...`.
    pub after: Vec<String>,
    pub raw: String,
}

impl Status {
    pub fn parse(raw: &str) -> Status {
        let lines: Vec<&str> = raw.lines().collect();
        assert!(lines.len() >= 3, "STATUS reply too short: {raw:?}");
        assert_eq!(lines[0], "OK status", "STATUS reply: {raw:?}");
        assert_eq!(*lines.last().unwrap(), "END", "STATUS reply: {raw:?}");
        // The `host` line, then (leader/worker mode) `worker ...`, `fault
        // ...` and `quarantined ...` lines, then `END`.
        let host_idx = lines
            .iter()
            .rposition(|l| l.starts_with("host "))
            .unwrap_or(lines.len() - 2);
        let host_line = lines[host_idx];
        assert!(host_line.starts_with("host "), "host line: {host_line:?}");
        let after: Vec<String> = lines[host_idx + 1..lines.len() - 1]
            .iter()
            .map(|l| l.to_string())
            .collect();
        for l in &after {
            assert!(
                ["worker ", "fault ", "quarantined "]
                    .iter()
                    .any(|p| l.starts_with(p)),
                "unexpected STATUS line after the host line: {l:?} in {raw:?}"
            );
        }
        let body = &lines[1..host_idx];
        let first_job = body.iter().position(|l| is_job_line(l));
        let (module_lines, job_lines) = body.split_at(first_job.unwrap_or(body.len()));
        let modules: Vec<ModuleStatus> =
            module_lines.iter().map(|l| parse_module_line(l)).collect();
        let jobs: Vec<JobStatus> = job_lines.iter().map(|l| JobStatus::parse(l)).collect();
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "STATUS modules not sorted by name: {raw:?}");
        Status {
            modules,
            jobs,
            host_line: host_line.to_string(),
            after,
            raw: raw.to_string(),
        }
    }

    /// Asserts every line has exactly the contract's fields in order:
    /// `<name> v<version> gen=<N> state=<s> conns=<N> requests=<N>
    /// faults=<N>[ <extra>]` and `host conns=<N> accepted=<N> requests=<N>
    /// faults=<N> loops=<N> threads=<N> uptime=<N>s`.
    pub fn assert_exact_format(&self) {
        for m in &self.modules {
            let t: Vec<&str> = m.line.splitn(8, ' ').collect();
            let keys: Vec<&str> = t
                .iter()
                .skip(2)
                .take(5)
                .map(|tok| tok.split('=').next().unwrap())
                .collect();
            assert_eq!(
                keys,
                ["gen", "state", "conns", "requests", "faults"],
                "STATUS module line not in the contract's format: {:?}",
                m.line
            );
        }
        let t: Vec<&str> = self.host_line.split(' ').collect();
        let keys: Vec<&str> = t[1..]
            .iter()
            .map(|tok| tok.split('=').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["conns", "accepted", "requests", "faults", "loops", "threads", "uptime"],
            "STATUS host line not in the contract's format: {:?}",
            self.host_line
        );
        for (i, tok) in t[1..].iter().enumerate() {
            let v = tok.split_once('=').unwrap().1;
            let v = if i == 6 {
                v.strip_suffix('s').unwrap_or("uptime without s")
            } else {
                v
            };
            assert!(
                v.parse::<u64>().is_ok(),
                "host line field {tok:?} not a number: {:?}",
                self.host_line
            );
        }
    }

    /// The line for module `name`, if listed.
    pub fn module(&self, name: &str) -> Option<&ModuleStatus> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// The line for module `name`; panics if it is not listed.
    pub fn expect(&self, name: &str) -> &ModuleStatus {
        self.module(name)
            .unwrap_or_else(|| panic!("module {name} not in STATUS:\n{}", self.raw))
    }

    /// A numeric field of the host line (`uptime` without its `s`).
    pub fn host_field(&self, key: &str) -> u64 {
        kv(&self.host_line, key)
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or_else(|| panic!("host line has no numeric {key}=: {:?}", self.host_line))
    }

    /// The line of job `<module>/<job>`, if listed.
    pub fn job(&self, name: &str) -> Option<&JobStatus> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The line of job `<module>/<job>`; panics if it is not listed.
    pub fn expect_job(&self, name: &str) -> &JobStatus {
        self.job(name)
            .unwrap_or_else(|| panic!("job {name} not in STATUS:\n{}", self.raw))
    }

    /// The proxy module's routes, parsed from its STATUS line.
    pub fn proxy_routes(&self) -> Vec<ProxyRoute> {
        let line = &self.expect("proxy").line;
        let mut tokens = line.split(' ').skip_while(|t| !t.starts_with("routes="));
        let count: usize = tokens
            .next()
            .and_then(|t| t["routes=".len()..].parse().ok())
            .unwrap_or_else(|| panic!("proxy STATUS line without routes=N: {line:?}"));
        let routes: Vec<ProxyRoute> = tokens
            .map(|t| {
                let (name, rest) = t
                    .split_once(":active=")
                    .unwrap_or_else(|| panic!("proxy route token {t:?}"));
                let (fields, ups) = rest
                    .split_once(",upstreams=")
                    .unwrap_or_else(|| panic!("proxy route token {t:?}"));
                let fields = format!("active={fields}")
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.parse().unwrap())
                    })
                    .collect();
                let upstreams = ups
                    .split('+')
                    .map(|u| {
                        let (addr, inner) = u.split_once('(').unwrap();
                        let inner = inner.trim_end_matches(')');
                        let mut parts = inner.split(',');
                        let state = parts.next().unwrap().to_string();
                        let num = |p: Option<&str>, k: &str| -> u64 {
                            p.and_then(|p| p.strip_prefix(k))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or_else(|| panic!("proxy upstream {u:?}"))
                        };
                        let w = num(parts.next(), "w=");
                        let active = num(parts.next(), "active=");
                        (addr.to_string(), state, w, active)
                    })
                    .collect();
                ProxyRoute {
                    name: name.to_string(),
                    fields,
                    upstreams,
                }
            })
            .collect();
        assert_eq!(routes.len(), count, "proxy STATUS line: {line:?}");
        routes
    }

    /// The proxy route called `name`.
    pub fn proxy_route(&self, name: &str) -> ProxyRoute {
        self.proxy_routes()
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no proxy route {name} in STATUS:\n{}", self.raw))
    }
}

/// The value of the first `key=value` token of `line`.
fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// `<name> v<version> gen=<N> state=<s> conns=<N> requests=<N> faults=<N>[ <extra>]`,
/// read by key (the order is checked by [`Status::assert_exact_format`]).
fn parse_module_line(line: &str) -> ModuleStatus {
    let bad = |why: &str| -> ! { panic!("STATUS module line {line:?}: {why}") };
    let mut t = line.split(' ');
    let name = t.next().unwrap_or_else(|| bad("empty"));
    let version = t
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .unwrap_or_else(|| bad("no v<version> after the name"));
    let num = |key: &str| -> u64 {
        kv(line, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| bad(&format!("no numeric {key}=")))
    };
    let state = kv(line, "state").unwrap_or_else(|| bad("no state="));
    if !["running", "reloading", "draining"].contains(&state) {
        bad("unknown state");
    }
    ModuleStatus {
        name: name.to_string(),
        version: version.to_string(),
        gen: num("gen"),
        state: state.to_string(),
        conns: num("conns"),
        requests: num("requests"),
        faults: num("faults"),
        line: line.to_string(),
    }
}

impl ModuleStatus {
    /// The raw value of a `key=value` field (module extras included).
    pub fn field(&self, key: &str) -> Option<&str> {
        kv(&self.line, key)
    }

    /// A numeric `key=value` field; panics if missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        self.field(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("STATUS module line has no numeric {key}=: {:?}", self.line))
    }
}

/// Splits a `RELOAD` reply into lines, checking the summary line's format.
/// Returns (per-module lines, [loaded, unchanged, removed, failed]).
pub fn parse_reload(reply: &str) -> (Vec<String>, [u64; 4]) {
    let lines: Vec<String> = reply.lines().map(str::to_string).collect();
    let summary = lines.last().expect("empty RELOAD reply");
    let rest = summary
        .strip_prefix("OK reload: ")
        .or_else(|| summary.strip_prefix("ERR reload: "))
        .unwrap_or_else(|| panic!("RELOAD summary line {summary:?}"));
    let nums: Vec<u64> = rest
        .split(", ")
        .zip(["loaded", "unchanged", "removed", "failed"])
        .map(|(part, word)| {
            let (n, w) = part
                .split_once(' ')
                .unwrap_or_else(|| panic!("RELOAD summary {summary:?}"));
            assert_eq!(w, word, "RELOAD summary {summary:?}");
            n.parse()
                .unwrap_or_else(|_| panic!("RELOAD summary {summary:?}"))
        })
        .collect();
    assert_eq!(nums.len(), 4, "RELOAD summary {summary:?}");
    let failed = nums[3];
    assert_eq!(
        summary.starts_with("ERR"),
        failed > 0,
        "RELOAD summary must start with ERR exactly when something failed: {summary:?}"
    );
    (
        lines[..lines.len() - 1].to_vec(),
        [nums[0], nums[1], nums[2], nums[3]],
    )
}

/// Whether a `STATUS` line is a job line: `job <module>/<job> ...`.
fn is_job_line(line: &str) -> bool {
    line.starts_with("job ") && line.split(' ').nth(1).is_some_and(|t| t.contains('/'))
}

/// One `job <module>/<job> key=value ...` line of `STATUS`; values may be
/// double-quoted with `\"` and `\\` escapes.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// `<module>/<job>`.
    pub name: String,
    pub fields: Vec<(String, String)>,
    pub line: String,
}

impl JobStatus {
    pub fn parse(line: &str) -> JobStatus {
        let bad = |why: &str| -> ! { panic!("STATUS job line {line:?}: {why}") };
        let rest = line
            .strip_prefix("job ")
            .unwrap_or_else(|| bad("no job prefix"));
        let (name, mut rest) = rest.split_once(' ').unwrap_or_else(|| bad("no fields"));
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once('=')
                .unwrap_or_else(|| bad("field without ="));
            let (value, after) = if let Some(q) = after.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => v.push(chars.next().unwrap_or_else(|| bad("escape")).1),
                        Some((i, '"')) => break i + 1,
                        Some((_, c)) => v.push(c),
                        None => bad("unterminated quote"),
                    }
                };
                (v, &q[end..])
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            fields.push((key.to_string(), value));
            rest = after.strip_prefix(' ').unwrap_or(after);
        }
        for key in [
            "schedule",
            "state",
            "last_start",
            "duration_ms",
            "result",
            "next",
            "runs",
            "skipped",
            "failed",
            "message",
        ] {
            if !fields.iter().any(|(k, _)| k == key) {
                bad(&format!("no {key}="));
            }
        }
        JobStatus {
            name: name.to_string(),
            fields,
            line: line.to_string(),
        }
    }

    /// A field's (unquoted) value; panics if missing.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("STATUS job line has no {key}=: {:?}", self.line))
    }

    /// A numeric field; panics if missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("STATUS job line: {key}= is not a number: {:?}", self.line))
    }
}

/// One route of the proxy module's `STATUS` text:
/// `NAME:active=N,conns=N,...,upstreams=ADDR(STATE,w=N,active=N)+...`.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    pub name: String,
    pub fields: Vec<(String, u64)>,
    /// (address, state, weight, active).
    pub upstreams: Vec<(String, String, u64, u64)>,
}

impl ProxyRoute {
    /// A numeric route field (`active`, `conns`, `failed`, `bytes_up`, ...).
    pub fn num(&self, key: &str) -> u64 {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("proxy route {} has no {key}: {self:?}", self.name))
    }

    /// The state of upstream `addr` (`up`, `down`, `failed`).
    pub fn state(&self, addr: SocketAddr) -> &str {
        let a = addr.to_string();
        self.upstreams
            .iter()
            .find(|u| u.0 == a)
            .map(|u| u.1.as_str())
            .unwrap_or_else(|| panic!("proxy route {} has no upstream {a}: {self:?}", self.name))
    }
}
