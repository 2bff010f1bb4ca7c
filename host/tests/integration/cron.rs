//! Scheduled jobs and the `cron` module, against the real binary: jobs on a
//! one-second schedule write files, ping a local HTTP endpoint and publish
//! on a bus; `STATUS` shows them, `RUN` starts one now, reloads hand the
//! schedule over, bad configs are refused.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Marks where the test's cron jobs start in the config file.
const MARK: &str = "# cron jobs\n";
/// Upper bound for waiting on something a 1 s schedule does.
const WAIT: Duration = Duration::from_secs(8);

/// A server running `modules` with `jobs` (TOML) after [`MARK`].
fn start(tag: &str, modules: &[&str], jobs: &str) -> Server {
    ServerBuilder::new(modules)
        .tag(tag)
        .toml(&format!("{MARK}{jobs}"))
        .start()
}

/// Replaces the jobs in the server's config file (for `RELOAD`).
fn set_jobs(s: &Server, jobs: &str) {
    let path = s.dir.join("switchyard.toml");
    let text = fs::read_to_string(&path).unwrap();
    let head = &text[..text.find(MARK).expect("config has the cron mark")];
    fs::write(&path, format!("{head}{MARK}{jobs}")).unwrap();
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A temporary directory for the jobs' files (paths without spaces).
/// A job `slow` due every second that runs `secs` seconds in `out`: it
/// appends `overlap` to `out/events` if it finds another run going, and
/// `done` when it finishes.
fn slow_job(out: &Path, secs: &str) -> String {
    format!(
        r#"
[[modules.cron.jobs]]
name = "slow"
schedule = "* * * * * *"
cwd = "{}"
command = ["sh", "-c", "if [ -e running ]; then echo overlap >> events; fi; touch running; sleep {secs}; rm -f running; echo done >> events"]
"#,
        out.display()
    )
}

fn out_dir(tag: &str) -> PathBuf {
    let d = temp_dir(tag);
    assert!(!d.to_str().unwrap().contains([' ', '"', '\'']));
    d
}

/// Polls `STATUS` until job `name` satisfies `pred`; panics after `WAIT`.
fn wait_job(s: &Server, name: &str, what: &str, pred: impl Fn(&JobStatus) -> bool) -> Status {
    let st = s.wait_status(WAIT, |st| st.job(name).is_some_and(&pred));
    assert!(
        st.job(name).is_some_and(&pred),
        "job {name}: {what} did not happen within {WAIT:?}:\n{}",
        st.raw
    );
    st
}

#[test]
fn command_job_runs_on_a_seconds_schedule() {
    let out = out_dir("cron-out");
    let ticks = out.join("ticks");
    // The config contract, as written (with a private file).
    let s = start(
        "cron-tick",
        &["cron"],
        &format!(
            r#"
[[modules.cron.jobs]]
name = "tick"
schedule = "* * * * * *"              # 6 fields: with seconds
command = ["sh", "-c", "date >> {}"]
timeout = "10s"
"#,
            ticks.display()
        ),
    );
    thread::sleep(Duration::from_millis(3500));
    let n = lines(&ticks).len();
    assert!(n >= 3, "{n} ticks after 3.5 s:\n{}", s.log());

    let st = s.status();
    st.assert_exact_format();
    assert_eq!(st.expect("cron").field("jobs"), Some("1"));
    let j = st.expect_job("cron/tick");
    assert_eq!(j.get("schedule"), "* * * * * *");
    assert!(j.num("runs") >= 3, "{}", j.line);
    assert_eq!(j.num("failed"), 0, "{}", j.line);
    assert_eq!(j.num("skipped"), 0, "{}", j.line);
    assert_eq!(j.get("result"), "ok", "{}", j.line);
    assert_eq!(j.get("message"), "exit status 0");
    assert!(j.get("last_start").ends_with('Z'), "{}", j.line);
    assert!(j.get("next").ends_with('Z'), "{}", j.line);
    assert!(j.num("duration_ms") < 1000, "{}", j.line);
    let _ = fs::remove_dir_all(out);
}

#[test]
fn a_job_slower_than_its_period_is_skipped_not_overlapped() {
    let out = out_dir("cron-out");
    let s = start("cron-slow", &["cron"], &slow_job(&out, "2.3"));
    let st = wait_job(&s, "cron/slow", "two skipped runs", |j| {
        j.num("skipped") >= 2 && j.num("runs") >= 1
    });
    let j = st.expect_job("cron/slow");
    assert_eq!(j.num("failed"), 0, "{}", j.line);
    let events = lines(&out.join("events"));
    assert!(
        !events.iter().any(|l| l == "overlap"),
        "runs overlapped: {events:?}"
    );
    assert!(s.log().contains("skipped: already running"), "{}", s.log());
    let _ = fs::remove_dir_all(out);
}

#[test]
fn failing_and_timed_out_jobs_are_recorded_as_failed() {
    let out = out_dir("cron-out");
    let s = start(
        "cron-fail",
        &["cron"],
        &format!(
            r#"
[[modules.cron.jobs]]
name = "fail"
schedule = "* * * * * *"
command = ["sh", "-c", "echo oops >&2; exit 3"]

[[modules.cron.jobs]]
name = "hang"
schedule = "0 0 1 1 *"
cwd = "{}"
command = ["sh", "-c", "echo $$ > hang.pid; exec sleep 30"]
timeout = "300ms"
"#,
            out.display()
        ),
    );
    let st = wait_job(&s, "cron/fail", "a failure", |j| j.num("failed") >= 2);
    let fail = st.expect_job("cron/fail");
    assert_eq!(fail.get("result"), "failed", "{}", fail.line);
    assert_eq!(fail.get("message"), "exit status 3: oops");
    assert_eq!(fail.num("runs"), fail.num("failed"), "{}", fail.line);

    assert_eq!(
        s.admin("RUN cron hang"),
        "ERR cron/hang: timed out after 300ms, killed\n"
    );
    let st = s.status();
    let hang = st.expect_job("cron/hang");
    assert_eq!(hang.get("result"), "failed", "{}", hang.line);
    assert_eq!(hang.get("message"), "timed out after 300ms, killed");
    let ms = hang.num("duration_ms");
    assert!((300..2000).contains(&ms), "{}", hang.line);
    // The process was killed, not left behind.
    let pid = fs::read_to_string(out.join("hang.pid")).unwrap();
    let cmdline = fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).starts_with("sleep"),
        "the timed-out process {} still runs",
        pid.trim()
    );

    assert!(s.wait_log(WAIT, |l| l.contains("job fail stderr| oops")));
    assert!(s.log().contains("job cron/fail (gen=1): failed after"));
    // The schedule goes on after failures, and the host is fine.
    let before = s.status().expect_job("cron/fail").num("runs");
    wait_job(&s, "cron/fail", "another run", |j| j.num("runs") > before);
    assert_eq!(s.status().expect("cron").faults, 0);
    let _ = fs::remove_dir_all(out);
}

/// A loopback HTTP endpoint: `/health` answers 200, anything else 500.
/// Records request lines; stops when dropped.
struct Endpoint {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Endpoint {
    fn start() -> Endpoint {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut c, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let line = text.lines().next().unwrap_or("").to_string();
                let status = if line.starts_with("GET /health ") {
                    "200 OK"
                } else {
                    "500 Internal Server Error"
                };
                seen2.lock().unwrap().push(line);
                let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nhi");
            }
        });
        Endpoint { port, seen, stop }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn http_jobs_ping_a_loopback_endpoint() {
    let ep = Endpoint::start();
    let s = start(
        "cron-http",
        &["cron"],
        &format!(
            r#"
[[modules.cron.jobs]]
name = "ping"
schedule = "* * * * * *"
http = "http://127.0.0.1:{port}/health"

[[modules.cron.jobs]]
name = "broken"
schedule = "* * * * * *"
http = "http://localhost:{port}/broken"
timeout = "2s"
"#,
            port = ep.port
        ),
    );
    let st = wait_job(&s, "cron/ping", "two pings", |j| j.num("runs") >= 2);
    let ping = st.expect_job("cron/ping");
    assert_eq!(ping.get("result"), "ok", "{}", ping.line);
    assert_eq!(ping.get("message"), "HTTP 200 OK");
    let st = wait_job(&s, "cron/broken", "a failure", |j| j.num("failed") >= 1);
    let broken = st.expect_job("cron/broken");
    assert_eq!(broken.get("message"), "HTTP 500 Internal Server Error");
    let seen = ep.seen.lock().unwrap().clone();
    assert!(
        seen.iter().filter(|l| *l == "GET /health HTTP/1.1").count() >= 2,
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l == "GET /broken HTTP/1.1"), "{seen:?}");
}

#[test]
fn publish_jobs_reach_bus_subscribers_and_panicking_jobs_are_counted() {
    let s = start(
        "cron-bus",
        &["cron", "fx_bus"],
        r#"
[modules.fx_bus]
boom = "* * * * * *"

[[modules.cron.jobs]]
name = "announce"
schedule = "* * * * * *"
publish = "news"
data = { n = 42, text = "hello" }
module = "fx_bus"

[[modules.cron.jobs]]
name = "nobus"
schedule = "0 0 1 1 *"
publish = "news"
"#,
    );
    let mut sub = s.connect();
    sub.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"bus.subscribe\",\"params\":{\"topic\":\"news\"},\"id\":1}\n");
    assert_eq!(sub.read_line(), r#"{"id":1,"jsonrpc":"2.0","result":true}"#);
    let msg: serde_json::Value = serde_json::from_str(&sub.read_line()).unwrap();
    assert_eq!(msg["method"], "bus.message");
    assert_eq!(msg["params"]["topic"], "news");
    assert_eq!(
        msg["params"]["data"],
        serde_json::json!({"n": 42, "text": "hello"})
    );

    let st = wait_job(&s, "cron/announce", "a delivery", |j| {
        j.get("message").contains("delivered")
    });
    let j = st.expect_job("cron/announce");
    assert_eq!(j.get("message"), r#"published to "news": {"delivered":1}"#);
    // The default bus module (rpc) is not loaded here.
    assert_eq!(
        s.admin("RUN cron nobus"),
        "ERR cron/nobus: no module \"rpc\" is running\n"
    );

    // A panicking job is caught, logged and counted; its schedule goes on.
    let st = wait_job(&s, "fx_bus/boom", "two panics", |j| j.num("failed") >= 2);
    let boom = st.expect_job("fx_bus/boom");
    assert_eq!(boom.get("message"), "job panicked");
    assert_eq!(boom.num("runs"), boom.num("failed"));
    assert!(s.log().contains("job fx_bus/boom (gen=1): failed after"));
}

#[test]
fn run_starts_a_job_now() {
    let out = out_dir("cron-out");
    let s = start(
        "cron-run",
        &["cron"],
        &format!(
            r#"
[[modules.cron.jobs]]
name = "once"
schedule = "0 0 1 1 *"
cwd = "{}"
command = ["sh", "-c", "echo ran >> once; echo hi"]

[[modules.cron.jobs]]
name = "slow"
schedule = "@every 1h"
command = ["sleep", "1"]
"#,
            out.display()
        ),
    );
    let st = s.status();
    let once = st.expect_job("cron/once");
    assert_eq!(once.get("result"), "never");
    assert_eq!(once.get("last_start"), "-");
    assert_eq!(once.num("runs"), 0);

    assert_eq!(s.admin("RUN cron once"), "OK cron/once exit status 0: hi\n");
    assert_eq!(lines(&out.join("once")), ["ran"]);
    let once = s.status().expect_job("cron/once").clone();
    assert_eq!(once.num("runs"), 1);
    assert_eq!(once.get("result"), "ok");
    assert!(
        once.get("next").ends_with("-01-01T00:00:00Z"),
        "{}",
        once.line
    );

    // No overlap through RUN either.
    let mut first = s.connect();
    first.send(b"RUN cron slow\n");
    let st = wait_job(&s, "cron/slow", "the run to start", |j| {
        j.get("state") == "running"
    });
    assert_eq!(st.expect_job("cron/slow").get("state"), "running");
    assert_eq!(s.admin("RUN cron slow"), "ERR cron/slow: already running\n");
    assert_eq!(first.read_line(), "OK cron/slow exit status 0");

    assert_eq!(
        s.admin("RUN cron nope"),
        "ERR cron/nope: module cron has no job \"nope\"\n"
    );
    assert_eq!(
        s.admin("RUN nosuch once"),
        "ERR nosuch/once: no module \"nosuch\" with jobs\n"
    );
    assert_eq!(s.admin("RUN cron"), "ERR unknown command\n");
    let _ = fs::remove_dir_all(out);
}

#[test]
fn reloading_cron_mid_schedule_neither_misses_nor_doubles_runs() {
    let out = out_dir("cron-out");
    let job = |extra: &str| {
        format!(
            r#"
[[modules.cron.jobs]]
name = "tick"
schedule = "* * * * * *"
cwd = "{}"
command = ["sh", "-c", "date +%s >> ticks"]
{extra}
"#,
            out.display()
        )
    };
    let s = start("cron-reload", &["cron"], &job(""));
    let ticks = out.join("ticks");
    let deadline = Instant::now() + WAIT;
    while lines(&ticks).len() < 2 {
        assert!(Instant::now() < deadline, "no ticks:\n{}", s.log());
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(400));
    // A forced reload (same code), then one caused by a changed table.
    assert_eq!(
        s.admin("RELOAD cron"),
        format!("OK cron gen=2 v{}\n", "0.1.0")
    );
    thread::sleep(Duration::from_millis(1300));
    set_jobs(&s, &job("env = { CHANGED = \"1\" }"));
    let (lines_, counts) = parse_reload(&s.admin("RELOAD"));
    assert_eq!(counts, [1, 0, 0, 0], "{lines_:?}");
    thread::sleep(Duration::from_millis(1800));

    let st = s.status();
    assert_eq!(st.expect("cron").gen, 3);
    let j = st.expect_job("cron/tick");
    let secs: Vec<u64> = lines(&ticks).iter().map(|l| l.parse().unwrap()).collect();
    assert!(secs.len() >= 5, "{secs:?}");
    for w in secs.windows(2) {
        assert!(w[1] > w[0], "a doubled run: {secs:?}");
        assert!(w[1] - w[0] <= 2, "more than one period missed: {secs:?}");
    }
    // Counters carry over to the new generations.
    let runs = j.num("runs");
    assert!(
        runs as usize >= secs.len() - 1 && runs as usize <= secs.len() + 1,
        "runs={runs}, lines={}",
        secs.len()
    );
    assert_eq!(j.num("skipped"), 0, "{}", j.line);
    let _ = fs::remove_dir_all(out);
}

#[test]
fn a_run_in_progress_finishes_on_the_old_generation() {
    let out = out_dir("cron-out");
    let s = start("cron-handover", &["cron"], &slow_job(&out, "1.5"));
    wait_job(&s, "cron/slow", "a run to start", |j| {
        j.get("state") == "running"
    });
    assert_eq!(s.admin("RELOAD cron"), "OK cron gen=2 v0.1.0\n");
    let done = |gen: u32| format!("job cron/slow (gen={gen}): ok");
    assert!(
        s.wait_log(WAIT, |l| l.contains(&done(2))),
        "gen=2 never ran the job:\n{}",
        s.log()
    );
    let log = s.log();
    // The old generation finished its run, then stopped (the run held it).
    let finished = log.find(&done(1)).expect("gen=1 finished its run");
    let stopped = log.find("cron gen=1 stopped").expect("gen=1 stopped");
    assert!(finished < stopped, "{log}");
    let events = lines(&out.join("events"));
    assert!(!events.iter().any(|l| l == "overlap"), "{events:?}");
    let _ = fs::remove_dir_all(out);
}

#[test]
fn bad_schedules_and_job_configs_are_refused_at_load() {
    let job = |body: &str| format!("[[modules.cron.jobs]]\nname = \"bad\"\n{body}\n");
    // At start: the module is not loaded, the log names the job and field.
    let s = start(
        "cron-bad",
        &["cron"],
        &job("schedule = \"61 * * * *\"\ncommand = [\"true\"]"),
    );
    assert!(
        s.log().contains("ERR cron.so: job \"bad\": schedule: "),
        "{}",
        s.log()
    );
    assert!(s.status().module("cron").is_none());

    let good = job("schedule = \"@every 1h\"\ncommand = [\"true\"]");
    set_jobs(&s, &good);
    assert_eq!(parse_reload(&s.admin("RELOAD")).1, [1, 0, 0, 0]);

    let cases = [
        ("schedule = \"* * * *\"\ncommand = [\"true\"]", "job \"bad\": schedule: 4 fields"),
        ("schedule = \"@every 10 parsecs\"\ncommand = [\"true\"]", "job \"bad\": schedule: bad interval"),
        ("schedule = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\ncommand = [\"true\"]", "job \"bad\": schedule: unknown time zone \"Mars/Olympus\""),
        ("command = [\"true\"]", "job \"bad\": schedule: missing"),
        ("schedule = \"@hourly\"", "job \"bad\": needs exactly one of command, http, publish"),
        ("schedule = \"@hourly\"\ncommand = \"date\"", "job \"bad\": command: must be an array of strings"),
        ("schedule = \"@hourly\"\ncommand = [\"true\"]\ntimeout = \"soon\"", "job \"bad\": timeout: bad duration"),
        ("schedule = \"@hourly\"\nhttp = \"http://192.0.2.1/\"", "job \"bad\": http: \"http://192.0.2.1/\": only loopback"),
        ("schedule = \"@hourly\"\ncommand = [\"true\"]\nshedule = \"x\"", "job \"bad\": unknown field \"shedule\""),
        ("schedule = \"@hourly\"\ncommand = [\"true\"]\n[[modules.cron.jobs]]\nname = \"bad\"\nschedule = \"@hourly\"\ncommand = [\"true\"]", "job \"bad\": name: declared twice"),
    ];
    for (body, want) in cases {
        set_jobs(&s, &job(body));
        let reply = s.admin("RELOAD");
        let (lines_, counts) = parse_reload(&reply);
        assert_eq!(counts[3], 1, "{body:?} was accepted: {reply}");
        assert!(
            lines_
                .iter()
                .any(|l| l.starts_with("ERR cron: ") && l.contains(want)),
            "{body:?}: want {want:?} in {reply}"
        );
    }
    // The running generation kept serving with its jobs.
    let st = s.status();
    assert_eq!(st.expect("cron").gen, 1);
    assert_eq!(st.expect_job("cron/bad").get("schedule"), "@every 1h");
}

/// Against the real `rpc` module, when it is built: a publish job's message
/// reaches a `bus.subscribe` connection.
#[test]
fn publish_through_the_rpc_module() {
    if !workspace().join("modules/rpc.so").is_file() {
        eprintln!("modules/rpc.so is not built; skipping");
        return;
    }
    let s = start(
        "cron-rpc",
        &["cron", "rpc"],
        r#"
[[modules.cron.jobs]]
name = "announce"
schedule = "0 0 1 1 *"
publish = "news"
data = { n = 7 }
"#,
    );
    let mut sub = s.connect();
    sub.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"bus.subscribe\",\"params\":{\"topic\":\"news\"},\"id\":1}\n");
    let ack: serde_json::Value = serde_json::from_str(&sub.read_line()).unwrap();
    assert!(ack.get("error").is_none(), "{ack}");
    let reply = s.admin("RUN cron announce");
    assert!(
        reply.starts_with("OK cron/announce published to \"news\""),
        "{reply}"
    );
    let msg: serde_json::Value = serde_json::from_str(&sub.read_line()).unwrap();
    assert_eq!(msg["params"]["topic"], "news", "{msg}");
    assert_eq!(msg["params"]["data"], serde_json::json!({"n": 7}), "{msg}");
}
