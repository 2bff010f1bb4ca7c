//! Fuzzes the host's job schedule parser (`switchyard::schedule::Schedule`:
//! cron expressions through croner, `@every <duration>`, `CRON_TZ=`/`TZ=`
//! prefixes) and the next-run computation.
//!
//! Any text is refused with a message or accepted, never a panic. For an
//! accepted schedule, the next run is computed from instants chosen to be
//! awkward (the epoch, a leap day, the nights clocks change in Europe and
//! the US, the ends of the representable range) and followed for a few
//! runs: each next run is strictly later than the instant asked about,
//! and an interval keeps its phase (`prev + k * interval`). A computation
//! that loops is caught by libFuzzer's `-timeout`, which scripts/fuzz.sh
//! sets low for this target.

#![no_main]

use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use switchyard::schedule::Schedule;

/// Runs followed from each starting instant.
const RUNS: usize = 3;

fn starts() -> Vec<Timestamp> {
    let mut out: Vec<Timestamp> = [
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999Z",
        // Europe/Paris springs forward at 01:00 UTC, falls back at 01:00 UTC.
        "2024-03-31T00:59:59Z",
        "2024-10-27T00:30:00Z",
        // America/New_York springs forward at 07:00 UTC.
        "2024-03-10T06:59:30Z",
        "9999-12-30T21:59:00Z",
    ]
    .iter()
    .map(|s| s.parse().expect("a start instant"))
    .collect();
    out.push(Timestamp::MIN);
    out.push(Timestamp::MAX - SignedDuration::from_secs(1));
    out
}

/// Whether the schedule is an `@every` interval (after an optional zone).
fn is_interval(text: &str) -> bool {
    let mut rest = text.trim();
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r
                .split_once(char::is_whitespace)
                .map_or("", |(_, a)| a.trim_start());
            break;
        }
    }
    rest.starts_with("@every")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let schedule = match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.is_empty(), "an empty error message");
            return;
        }
    };
    let every = is_interval(text);
    for start in starts() {
        let mut now = start;
        let mut prev: Option<Timestamp> = None;
        let mut last_step: Option<SignedDuration> = None;
        for _ in 0..RUNS {
            let Some(next) = schedule.next_after(now, prev) else {
                break;
            };
            assert!(next > now, "{text:?}: next {next} is not after {now}");
            if let (true, Some(p)) = (every, prev) {
                // Served 5 ms late, the next run is one period after the
                // previous due time: every step is the same.
                let step = next.duration_since(p);
                assert!(
                    last_step.is_none_or(|s| s == step),
                    "{text:?}: step {step:?} after {last_step:?}"
                );
                last_step = Some(step);
            }
            prev = Some(next);
            // Served a little late, as the scheduler thread would.
            now = next
                .checked_add(SignedDuration::from_millis(5))
                .unwrap_or(next);
        }
        // A due time in the future is ignored, never trusted.
        let future = start.checked_add(SignedDuration::from_hours(1)).ok();
        if let Some(next) = schedule.next_after(start, future) {
            assert!(next > start, "{text:?}: {next} is not after {start}");
        }
    }
});
