//! `cron`: runs the jobs declared in `[modules.cron]` on the host's
//! scheduler.
//!
//! The module binds no prefix. It declares its jobs to the host
//! ([`Handler::jobs`]); the host's scheduler calls [`Handler::run_job`] on
//! a job thread at each due time, never runs a job twice at once (a run
//! that is due while the previous one is still going is skipped and
//! counted), and shows every job in `STATUS`. `RUN cron <job>` runs one
//! now. The parts:
//!
//! * [`config`]: the jobs table, checked at start (errors name the job and
//!   the field).
//! * [`run`]: what a job does: a `command` (a program and its arguments, no
//!   shell unless you write `sh -c`, killed with its process group after
//!   `timeout`, the first 4 KiB of its output logged), an `http` GET of a
//!   loopback URL (2xx is success), or a `publish` of a message on the
//!   bus through the `rpc` module's in-process entry.
//!
//! ```toml
//! [[modules.cron.jobs]]
//! name = "tick"
//! schedule = "* * * * * *"              # 6 fields: with seconds
//! command = ["sh", "-c", "date >> /tmp/ticks"]
//! timeout = "10s"                       # default 1h
//! cwd = "/srv/app"                      # optional
//! env = { RUST_LOG = "info" }           # optional, added to the host's
//!
//! [[modules.cron.jobs]]
//! name = "health"
//! schedule = "@every 30s"
//! http = "http://127.0.0.1:8080/health" # loopback only; timeout default 10s
//!
//! [[modules.cron.jobs]]
//! name = "nightly"
//! schedule = "0 3 * * *"                # 5 fields: minute granularity
//! timezone = "Europe/Paris"             # default UTC
//! publish = "maintenance"               # the bus topic
//! data = { kind = "nightly" }           # any TOML value, sent as JSON
//! module = "rpc"                        # the bus module (default)
//! ```
//!
//! A reload (new code or a changed table) hands the schedule over to the
//! new generation without a missed or doubled run: the host matches jobs
//! by name.

pub mod config;
pub mod run;

use std::sync::atomic::{AtomicU64, Ordering};

use module_api::{
    ConnInfo, Handler, Host, JobSpec, Manifest, Out, Protocol, StartContext, Verdict,
};

use config::{Job, Task};

/// The module's manifest: no bindings, jobs only.
pub fn manifest() -> Manifest {
    Manifest::new("cron", env!("CARGO_PKG_VERSION")).protocol(Protocol::Raw)
}

/// One generation: the configured jobs.
pub struct Cron {
    host: &'static Host,
    jobs: Vec<Job>,
    /// JSON-RPC ids of `publish` calls.
    seq: AtomicU64,
}

fn start(ctx: StartContext<'_>) -> Result<Cron, String> {
    let jobs = config::parse(&ctx.config)?;
    log::info!("{} jobs configured", jobs.len());
    Ok(Cron {
        host: ctx.host,
        jobs,
        seq: AtomicU64::new(1),
    })
}

impl Handler for Cron {
    fn on_message(&self, _conn: &ConnInfo, input: &[u8], _out: &mut Out) -> Verdict {
        // Never routed to: the module binds no prefix.
        Verdict::close(input.len())
    }

    fn jobs(&self) -> Vec<JobSpec> {
        self.jobs
            .iter()
            .map(|j| JobSpec {
                name: j.name.as_str().into(),
                schedule: j.schedule.as_str().into(),
            })
            .collect()
    }

    fn run_job(&self, name: &str) -> Result<String, String> {
        let job = self
            .jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| format!("no job named {name:?}"))?;
        match &job.task {
            Task::Command(c) => run::command(&job.name, c),
            Task::Http(h) => run::http(h),
            Task::Publish(p) => {
                run::publish(self.host, p, self.seq.fetch_add(1, Ordering::Relaxed))
            }
        }
    }

    fn status(&self) -> String {
        format!("jobs={}", self.jobs.len())
    }
}

module_api::export_module!(manifest = manifest, start = start);
