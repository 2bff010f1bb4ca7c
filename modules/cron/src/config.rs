//! The `[modules.cron]` table, checked when a generation starts. Every
//! error names the job and the field, e.g. `job "tick": timeout: ...`, so a
//! bad config is refused at load with a reason the operator can act on.
//! (The schedule itself is checked by the host, which owns the parser.)

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

/// Default limit on a command's run time.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default limit on an `http` job (connect, send, response head).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default module that `publish` jobs call.
pub const DEFAULT_BUS: &str = "rpc";

/// One configured job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    /// The schedule as handed to the host (with `CRON_TZ=<zone> ` in front
    /// when the job sets `timezone`).
    pub schedule: String,
    pub task: Task,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Command(Command),
    Http(Http),
    Publish(Publish),
}

/// Runs a program (no shell unless the program is one).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Program and arguments.
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// Added to the host's environment.
    pub env: Vec<(String, String)>,
    /// The process group is killed after this.
    pub timeout: Duration,
}

/// `GET` of a loopback URL; a 2xx status is success.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub url: String,
    /// `127.0.0.1`, `::1` or `localhost`.
    pub host: String,
    pub port: u16,
    /// Path and query.
    pub path: String,
    pub timeout: Duration,
}

/// A message published on the bus through another module's in-process
/// entry (a JSON-RPC `bus.publish` call).
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The module called (`rpc` unless `module` says otherwise).
    pub module: String,
    pub topic: String,
    pub data: Value,
}

const KEYS: &[&str] = &[
    "name", "schedule", "timezone", "command", "cwd", "env", "timeout", "http", "publish", "data",
    "module",
];

/// Reads the module's table (`{"jobs": [...]}`; `{}` means no jobs).
pub fn parse(config: &Value) -> Result<Vec<Job>, String> {
    let table = config.as_object().ok_or("[modules.cron] must be a table")?;
    if let Some(k) = table.keys().find(|k| *k != "jobs") {
        return Err(format!(
            "unknown key {k:?} in [modules.cron] (jobs are [[modules.cron.jobs]] tables)"
        ));
    }
    let list = match table.get("jobs") {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("jobs: must be an array of tables ([[modules.cron.jobs]])".into()),
    };
    let mut jobs: Vec<Job> = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let job = parse_job(i, v)?;
        if jobs.iter().any(|j| j.name == job.name) {
            return Err(format!("job {:?}: name: declared twice", job.name));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

fn parse_job(index: usize, v: &Value) -> Result<Job, String> {
    let t = v
        .as_object()
        .ok_or_else(|| format!("jobs[{index}]: must be a table"))?;
    let name = match t.get("name") {
        None => return Err(format!("jobs[{index}]: name: missing")),
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(_) => {
            return Err(format!(
                "jobs[{index}]: name: must be a non-empty string without spaces (at most 64 bytes)"
            ))
        }
    };
    let err = |field: &str, why: String| format!("job {name:?}: {field}: {why}");
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("job {name:?}: unknown field {k:?}"));
    }
    let text = |field: &str| -> Result<Option<&str>, String> {
        match t.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(err(field, "must be a string".into())),
        }
    };

    let mut schedule = text("schedule")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("schedule", "missing".into()))?
        .to_string();
    if let Some(zone) = text("timezone")? {
        if zone.is_empty() || zone.contains(char::is_whitespace) {
            return Err(err("timezone", format!("{zone:?} is not a zone name")));
        }
        if schedule.starts_with("CRON_TZ=") || schedule.starts_with("TZ=") {
            return Err(err(
                "timezone",
                "set either timezone or a CRON_TZ= prefix, not both".into(),
            ));
        }
        schedule = format!("CRON_TZ={zone} {schedule}");
    }

    let kinds: Vec<&str> = ["command", "http", "publish"]
        .into_iter()
        .filter(|k| t.contains_key(*k))
        .collect();
    if kinds.len() != 1 {
        return Err(format!(
            "job {name:?}: needs exactly one of command, http, publish (found {})",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            }
        ));
    }
    let only = |fields: &[&str], kind: &str| -> Result<(), String> {
        match fields.iter().find(|f| t.contains_key(**f)) {
            Some(f) => Err(err(f, format!("does not apply to {kind} jobs"))),
            None => Ok(()),
        }
    };
    let timeout = |default: Duration| -> Result<Duration, String> {
        match text("timeout")? {
            None => Ok(default),
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(err("timeout", "must be positive".into())),
                Err(e) => Err(err("timeout", format!("bad duration {s:?}: {e}"))),
            },
        }
    };

    let task = match kinds[0] {
        "command" => {
            only(&["data", "module"], "command")?;
            Task::Command(Command {
                argv: argv(&t["command"]).map_err(|e| err("command", e))?,
                cwd: text("cwd")?.map(PathBuf::from),
                env: env(t.get("env")).map_err(|e| err("env", e))?,
                timeout: timeout(DEFAULT_COMMAND_TIMEOUT)?,
            })
        }
        "http" => {
            only(&["cwd", "env", "data", "module"], "http")?;
            let url = text("http")?.unwrap_or_default();
            let (host, port, path) = parse_url(url).map_err(|e| err("http", e))?;
            Task::Http(Http {
                url: url.to_string(),
                host,
                port,
                path,
                timeout: timeout(DEFAULT_HTTP_TIMEOUT)?,
            })
        }
        _ => {
            only(&["cwd", "env", "timeout"], "publish")?;
            let topic = text("publish")?.unwrap_or_default();
            if topic.is_empty() {
                return Err(err("publish", "the topic must not be empty".into()));
            }
            let module = text("module")?.unwrap_or(DEFAULT_BUS);
            if module.is_empty() {
                return Err(err("module", "must not be empty".into()));
            }
            Task::Publish(Publish {
                module: module.to_string(),
                topic: topic.to_string(),
                data: t.get("data").cloned().unwrap_or(Value::Null),
            })
        }
    };
    Ok(Job {
        name,
        schedule,
        task,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn argv(v: &Value) -> Result<Vec<String>, String> {
    let shape = "must be an array of strings, the program and its arguments \
                 (for a shell, write [\"sh\", \"-c\", \"...\"])";
    let list = v.as_array().ok_or(shape)?;
    let argv = list
        .iter()
        .map(|a| a.as_str().map(str::to_string))
        .collect::<Option<Vec<String>>>()
        .ok_or(shape)?;
    match argv.first() {
        None => Err("is empty; it needs at least the program".into()),
        Some(p) if p.is_empty() => Err("the program name is empty".into()),
        Some(_) if argv.iter().any(|a| a.contains('\0')) => Err("contains a NUL byte".into()),
        Some(_) => Ok(argv),
    }
}

fn env(v: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let table: &Map<String, Value> = v.as_object().ok_or("must be a table of NAME = value")?;
    table
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(format!("bad variable name {k:?}"));
            }
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("{k}: must be a string, number or boolean")),
            };
            if value.contains('\0') {
                return Err(format!("{k}: contains a NUL byte"));
            }
            Ok((k.clone(), value))
        })
        .collect()
}

/// Splits `http://<loopback host>[:port]/path` into host, port and path.
/// Only loopback hosts are accepted: these jobs are health pings of local
/// services, not a way to reach other machines.
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{url:?}: the path contains spaces or control characters"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{url:?}: user information is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "{url:?}: only loopback hosts are allowed (127.0.0.0/8, [::1], localhost)"
        ));
    }
    Ok((host.to_ascii_lowercase(), port, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(job: Value) -> Result<Job, String> {
        parse(&json!({ "jobs": [job] })).map(|mut v| v.remove(0))
    }

    #[test]
    fn the_contract_example() {
        let j = one(json!({
            "name": "tick",
            "schedule": "* * * * * *",
            "command": ["sh", "-c", "date >> /tmp/ticks"],
            "timeout": "10s",
        }))
        .unwrap();
        assert_eq!(j.schedule, "* * * * * *");
        let Task::Command(c) = j.task else {
            panic!("not a command")
        };
        assert_eq!(c.argv, ["sh", "-c", "date >> /tmp/ticks"]);
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn kinds_and_defaults() {
        let j =
            one(json!({"name": "p", "schedule": "@every 5s", "http": "http://127.0.0.1:9/h?x=1"}))
                .unwrap();
        assert_eq!(
            j.task,
            Task::Http(Http {
                url: "http://127.0.0.1:9/h?x=1".into(),
                host: "127.0.0.1".into(),
                port: 9,
                path: "/h?x=1".into(),
                timeout: DEFAULT_HTTP_TIMEOUT,
            })
        );
        let j = one(json!({"name": "b", "schedule": "@hourly", "publish": "t", "data": {"a": 1}, "timezone": "Europe/Paris"}))
            .unwrap();
        assert_eq!(j.schedule, "CRON_TZ=Europe/Paris @hourly");
        assert_eq!(
            j.task,
            Task::Publish(Publish {
                module: "rpc".into(),
                topic: "t".into(),
                data: json!({"a": 1}),
            })
        );
        assert!(parse(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_job_and_the_field() {
        let cases = [
            (
                json!({"schedule": "@hourly", "command": ["true"]}),
                "jobs[0]: name: missing",
            ),
            (
                json!({"name": "a b", "schedule": "@hourly", "command": ["true"]}),
                "jobs[0]: name:",
            ),
            (
                json!({"name": "x", "command": ["true"]}),
                "job \"x\": schedule: missing",
            ),
            (
                json!({"name": "x", "schedule": "@hourly"}),
                "job \"x\": needs exactly one of command, http, publish (found none)",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": ["true"], "http": "http://127.0.0.1/"}),
                "found command, http",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": "date"}),
                "job \"x\": command: must be an array",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": []}),
                "job \"x\": command: is empty",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": ["true"], "timeout": "10 parsecs"}),
                "job \"x\": timeout: bad duration",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": ["true"], "timeout": "0s"}),
                "job \"x\": timeout: must be positive",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": ["true"], "timout": "1s"}),
                "job \"x\": unknown field \"timout\"",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": ["true"], "env": {"A": [1]}}),
                "job \"x\": env: A:",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "command": ["true"], "data": 1}),
                "job \"x\": data: does not apply",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "http": "http://10.0.0.1/"}),
                "job \"x\": http: \"http://10.0.0.1/\": only loopback",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "http": "https://127.0.0.1/"}),
                "job \"x\": http: \"https://127.0.0.1/\": only http://",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "http": "http://127.0.0.1:99999/"}),
                "bad port",
            ),
            (
                json!({"name": "x", "schedule": "@hourly", "publish": ""}),
                "job \"x\": publish: the topic",
            ),
        ];
        for (job, want) in cases {
            let e = one(job.clone()).expect_err(&job.to_string());
            assert!(e.contains(want), "{job}: got {e:?}, want {want:?}");
        }
        let dup = json!({"jobs": [
            {"name": "x", "schedule": "@hourly", "command": ["true"]},
            {"name": "x", "schedule": "@hourly", "command": ["true"]},
        ]});
        assert_eq!(parse(&dup).unwrap_err(), "job \"x\": name: declared twice");
        assert!(parse(&json!({"job": []}))
            .unwrap_err()
            .contains("unknown key \"job\""));
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://[::1]:8080").unwrap(),
            ("::1".into(), 8080, "/".into())
        );
        assert_eq!(
            parse_url("http://LocalHost/a/b#frag").unwrap(),
            ("localhost".into(), 80, "/a/b".into())
        );
        assert_eq!(
            parse_url("http://127.0.0.2:81?q").unwrap(),
            ("127.0.0.2".into(), 81, "/?q".into())
        );
        assert!(parse_url("http://example.com/").is_err());
        assert!(parse_url("http://user@127.0.0.1/").is_err());
        assert!(parse_url("http://127.0.0.1/a b").is_err());
    }
}
