//! Scheduled jobs: at each due time the host calls a module's job entry
//! point ([`Module::run_job`]) on a small pool of job threads, never on an
//! event loop.
//!
//! * A generation declares its jobs once, after start ([`Module::jobs`]).
//!   The loader checks them with [`crate::schedule::declared`], so a bad name or schedule
//!   refuses the load with an error naming the job and the field.
//! * One scheduler thread keeps the next due time of every job and sleeps
//!   until the earliest one (at most [`MAX_SLEEP`], so that a change of the
//!   wall clock is noticed).
//! * A job never overlaps itself: when it is due while its previous run is
//!   still going, that run is skipped and counted. A job that fails or
//!   panics is logged and counted; its schedule goes on.
//! * Reload: the registry tells the scheduler about every change of the
//!   route table ([`Scheduler::sync`]). Jobs are matched by name across
//!   generations: a run in progress finishes on the old generation (it
//!   holds an `Arc` to it), and the new generation keeps the job's next due
//!   time and counters, so no run is doubled or lost. While a module reloads
//!   exclusively its jobs are paused; jobs of a removed module are dropped.
//!
//! What a schedule may say, and how it is parsed, is `schedule.rs`.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use abi_stable::std_types::{RResult, RStr};
use crossbeam_channel::{unbounded, Receiver, Sender};
use jiff::Timestamp;
use parking_lot::{Condvar, Mutex};

use crate::generation::{CallSite, Generation};
use crate::schedule::Schedule;

/// Longest the scheduler thread sleeps between looks at the clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Longest result message kept for `STATUS`.
const MAX_MESSAGE: usize = 200;

/// Why a job could not be started, by `RUN` or at its due time. The
/// texts are part of `RUN`'s `ERR` reply and of the "skipped" log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("shutting down")]
    ShuttingDown,
    /// No module of that name has jobs.
    #[error("no module {0:?} with jobs")]
    NoSuchModule(String),
    #[error("module {module} has no job {job:?}")]
    NoSuchJob { module: String, job: String },
    /// The module is reloading exclusively; its jobs are paused.
    #[error("{0} is reloading; try again")]
    Reloading(String),
    /// The generation the jobs belong to has stopped.
    #[error("{0} is not running")]
    NotRunning(Arc<str>),
    /// The job's previous run has not finished (a job never overlaps
    /// itself).
    #[error("already running")]
    AlreadyRunning,
    #[error("the job threads have stopped")]
    JobThreadsStopped,
}

/// Called with a job's outcome (by `RUN`).
pub type Reply = Box<dyn FnOnce(Result<String, String>) + Send>;

/// What `STATUS` shows about a job; lives across generations.
#[derive(Default)]
struct Record {
    last_start: Option<Timestamp>,
    last_ms: u64,
    /// `None` before the first run ends.
    last_ok: Option<bool>,
    message: String,
    runs: u64,
    skipped: u64,
    failed: u64,
}

/// The part of a job its runs share with the scheduler.
#[derive(Default)]
struct JobState {
    running: AtomicBool,
    record: Mutex<Record>,
}

struct Entry {
    text: String,
    schedule: Schedule,
    next: Option<Timestamp>,
    state: Arc<JobState>,
}

/// One module's jobs and the generation they run on.
struct ModuleJobs {
    name: Arc<str>,
    gen: Weak<Generation>,
    /// Reloading exclusively: no new runs.
    paused: bool,
    jobs: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct State {
    modules: BTreeMap<String, ModuleJobs>,
    stopping: bool,
}

struct Task {
    gen: Arc<Generation>,
    module: Arc<str>,
    job: String,
    state: Arc<JobState>,
    reply: Option<Reply>,
}

/// The scheduler thread, the job threads and the job table.
pub struct Scheduler {
    state: Mutex<State>,
    wake: Condvar,
    tasks: Sender<Task>,
}

impl Scheduler {
    /// Starts the scheduler thread and `threads` job threads.
    pub fn start(threads: usize) -> Arc<Scheduler> {
        let (tx, rx) = unbounded::<Task>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("job-{i}"))
                .spawn(move || work(rx))
                .expect("spawn job thread");
        }
        let s = Arc::new(Scheduler {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            tasks: tx,
        });
        let me = s.clone();
        thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || me.run())
            .expect("spawn scheduler thread");
        s
    }

    /// Brings the job table in line with the registry: `(name, current
    /// generation, reloading exclusively)` for every module. Modules not
    /// listed lose their jobs.
    pub fn sync<'a>(&self, modules: impl Iterator<Item = (&'a str, &'a Arc<Generation>, bool)>) {
        let mut st = self.state.lock();
        let now = Timestamp::now();
        let mut listed = Vec::new();
        for (name, gen, paused) in modules {
            listed.push(name.to_string());
            let known = st.modules.get(name);
            let same_gen = known.is_some_and(|m| std::ptr::eq(m.gen.as_ptr(), Arc::as_ptr(gen)));
            if same_gen && known.is_some_and(|m| m.paused == paused) {
                continue;
            }
            let mut old = st.modules.remove(name).map(|m| m.jobs).unwrap_or_default();
            let mut jobs = BTreeMap::new();
            for d in &gen.jobs {
                let entry = match old.remove(&d.name) {
                    // Same job, same schedule: keep its next due time, so
                    // the new generation takes over without a gap or a
                    // double run.
                    Some(e) if e.text == d.text => Entry {
                        schedule: d.schedule.clone(),
                        ..e
                    },
                    other => Entry {
                        text: d.text.clone(),
                        schedule: d.schedule.clone(),
                        next: d.schedule.next_after(now, None),
                        state: other.map(|e| e.state).unwrap_or_default(),
                    },
                };
                jobs.insert(d.name.clone(), entry);
            }
            for job in old.keys() {
                log::info!("job {name}/{job}: no longer declared by gen={}", gen.gen);
            }
            if !same_gen && !jobs.is_empty() {
                log::debug!("{name} gen={}: {} scheduled jobs", gen.gen, jobs.len());
            }
            st.modules.insert(
                name.to_string(),
                ModuleJobs {
                    name: gen.name.clone(),
                    gen: Arc::downgrade(gen),
                    paused,
                    jobs,
                },
            );
        }
        st.modules.retain(|name, _| listed.contains(name));
        self.wake.notify_all();
    }

    /// `RUN <module> <job>`: runs the job now on a job thread; `reply` gets
    /// its outcome. Refused (with the reason) when there is no such job,
    /// the module is reloading, or the job is already running.
    pub fn run_now(&self, module: &str, job: &str, reply: Reply) -> Result<(), RunError> {
        let st = self.state.lock();
        if st.stopping {
            return Err(RunError::ShuttingDown);
        }
        let m = st
            .modules
            .get(module)
            .filter(|m| !m.jobs.is_empty())
            .ok_or_else(|| RunError::NoSuchModule(module.to_string()))?;
        let e = m.jobs.get(job).ok_or_else(|| RunError::NoSuchJob {
            module: module.to_string(),
            job: job.to_string(),
        })?;
        if m.paused {
            return Err(RunError::Reloading(module.to_string()));
        }
        self.dispatch(m, job, e, Some(reply))
    }

    /// Hands a due job to a job thread unless it is still running.
    fn dispatch(
        &self,
        m: &ModuleJobs,
        job: &str,
        e: &Entry,
        reply: Option<Reply>,
    ) -> Result<(), RunError> {
        let gen = m
            .gen
            .upgrade()
            .ok_or_else(|| RunError::NotRunning(m.name.clone()))?;
        if e.state.running.swap(true, Ordering::AcqRel) {
            return Err(RunError::AlreadyRunning);
        }
        let task = Task {
            gen,
            module: m.name.clone(),
            job: job.to_string(),
            state: e.state.clone(),
            reply,
        };
        if let Err(back) = self.tasks.send(task) {
            back.0.state.running.store(false, Ordering::Release);
            return Err(RunError::JobThreadsStopped);
        }
        Ok(())
    }

    /// The scheduler thread: starts due jobs, then sleeps until the next.
    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if st.stopping {
                return;
            }
            let now = Timestamp::now();
            let mut earliest: Option<Timestamp> = None;
            for m in st.modules.values_mut() {
                let jobs = std::mem::take(&mut m.jobs);
                for (job, mut e) in jobs {
                    if let Some(due) = e.next.filter(|d| *d <= now) {
                        if m.paused {
                            log::debug!("job {}/{job}: not run, the module is reloading", m.name);
                        } else if let Err(why) = self.dispatch(m, &job, &e, None) {
                            e.state.record.lock().skipped += 1;
                            log::warn!("job {}/{job}: run at {due} skipped: {why}", m.name);
                        }
                        e.next = e.schedule.next_after(now, Some(due));
                    }
                    earliest = match (earliest, e.next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    m.jobs.insert(job, e);
                }
            }
            let wait = earliest
                .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            if !wait.is_zero() {
                self.wake.wait_for(&mut st, wait);
            }
        }
    }

    /// One `STATUS` line per job, sorted by module and job:
    /// `job <module>/<job> schedule="<expr>" state=<idle|running|paused>
    /// last_start=<RFC 3339|-> duration_ms=<N> result=<never|ok|failed>
    /// next=<RFC 3339|-> runs=<N> skipped=<N> failed=<N> message="<text>"`.
    pub fn status_lines(&self) -> Vec<String> {
        let st = self.state.lock();
        let mut out = Vec::new();
        for (module, m) in &st.modules {
            for (job, e) in &m.jobs {
                let r = e.state.record.lock();
                let state = if e.state.running.load(Ordering::Acquire) {
                    "running"
                } else if m.paused {
                    "paused"
                } else {
                    "idle"
                };
                let result = match r.last_ok {
                    None => "never",
                    Some(true) => "ok",
                    Some(false) => "failed",
                };
                out.push(format!(
                    "job {module}/{job} schedule={} state={state} last_start={} duration_ms={} \
                     result={result} next={} runs={} skipped={} failed={} message={}",
                    quote(&e.text),
                    time(r.last_start, true),
                    r.last_ms,
                    time(e.next.filter(|_| !m.paused), false),
                    r.runs,
                    r.skipped,
                    r.failed,
                    quote(&r.message),
                ));
            }
        }
        out
    }

    /// Stops starting jobs and waits up to `grace` for the running ones.
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut st = self.state.lock();
        st.stopping = true;
        self.wake.notify_all();
        loop {
            let running: Vec<String> = st
                .modules
                .iter()
                .flat_map(|(module, m)| {
                    m.jobs
                        .iter()
                        .filter(|(_, e)| e.state.running.load(Ordering::Acquire))
                        .map(move |(job, _)| format!("{module}/{job}"))
                })
                .collect();
            if running.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "shutdown: jobs still running after the grace period: {}",
                    running.join(", ")
                );
                return;
            }
            parking_lot::MutexGuard::unlocked(&mut st, || thread::sleep(Duration::from_millis(20)));
        }
    }
}

/// A job thread: runs tasks, records their outcome.
fn work(rx: Receiver<Task>) {
    for task in rx {
        let Task {
            gen,
            module,
            job,
            state,
            reply,
        } = task;
        state.record.lock().last_start = Some(Timestamp::now());
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // Jobs may run long: a crash is pinned on the module, a long
            // run is not a hang.
            gen.call(CallSite::Job, |m| m.run_job(RStr::from_str(&job)))
        }));
        let result = match outcome {
            Ok(RResult::ROk(s)) => Ok(one_line(s.as_str())),
            Ok(RResult::RErr(e)) => Err(one_line(e.as_str())),
            Err(_) => Err("job panicked".into()),
        };
        let ms = t0.elapsed().as_millis() as u64;
        {
            let mut r = state.record.lock();
            r.runs += 1;
            r.last_ms = ms;
            r.last_ok = Some(result.is_ok());
            match &result {
                Ok(summary) => {
                    log::info!(
                        "job {module}/{job} (gen={}): ok in {ms} ms: {summary}",
                        gen.gen
                    );
                    r.message = summary.clone();
                }
                Err(why) => {
                    log::error!(
                        "job {module}/{job} (gen={}): failed after {ms} ms: {why}",
                        gen.gen
                    );
                    r.failed += 1;
                    r.message = why.clone();
                }
            }
            let keep = floor_char_boundary(&r.message, MAX_MESSAGE);
            r.message.truncate(keep);
        }
        // Let go of the generation before the job counts as finished: a
        // retired generation stops here, before its successor may run the
        // job.
        drop(gen);
        state.running.store(false, Ordering::Release);
        if let Some(reply) = reply {
            reply(result);
        }
    }
}

/// Collapses line breaks so that a summary fits on one reply line.
fn one_line(s: &str) -> String {
    s.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// A double-quoted value with `"` and `\` escaped.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// RFC 3339 in UTC (milliseconds when `millis`), or `-`.
fn time(t: Option<Timestamp>, millis: bool) -> String {
    match t {
        None => "-".into(),
        Some(t) if millis => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn run_errors_read_as_before() {
        let cases = [
            (RunError::ShuttingDown, "shutting down"),
            (
                RunError::NoSuchModule("m".into()),
                r#"no module "m" with jobs"#,
            ),
            (
                RunError::NoSuchJob {
                    module: "m".into(),
                    job: "j".into(),
                },
                r#"module m has no job "j""#,
            ),
            (RunError::Reloading("m".into()), "m is reloading; try again"),
            (RunError::NotRunning("m".into()), "m is not running"),
            (RunError::AlreadyRunning, "already running"),
            (RunError::JobThreadsStopped, "the job threads have stopped"),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(one_line("a\nb\r\n\nc"), "a b c");
        assert_eq!(time(None, true), "-");
        assert_eq!(
            time(Some(ts("2024-05-01T12:00:00.25Z")), true),
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(
            time(Some(ts("2024-05-01T12:00:00.25Z")), false),
            "2024-05-01T12:00:00Z"
        );
        assert_eq!(floor_char_boundary("héllo", 2), 1);
    }
}
