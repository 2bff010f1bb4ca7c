//! Job schedules, the pure half of scheduled jobs: parsing a schedule,
//! finding its next due time, and checking the jobs a generation declares.
//! The runtime that acts on them (threads, the job table, `RUN`) is
//! `scheduler.rs`; keeping this part apart lets the registry and
//! `generation.rs` name a [`Declared`] job without depending on it.
//!
//! Schedules ([`Schedule::parse`]): a cron expression with 5 fields
//! (minute hour day-of-month month day-of-week) or 6 (seconds first),
//! parsed by `croner`, which also takes names (`MON`, `JAN`), `L`, `W`, `#`
//! and nicknames such as `@hourly`; or an interval, `@every 30s` (any
//! `humantime` duration of at least one second). Times are UTC unless the
//! schedule starts with `CRON_TZ=<IANA zone>` (or `TZ=<zone>`), e.g.
//! `CRON_TZ=Europe/Paris 0 3 * * *`.

use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use module_api::abi::ModuleBox;

/// Longest job name.
const MAX_NAME: usize = 64;

/// When a job is due.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<croner::Cron>),
    Every(SignedDuration),
}

impl Schedule {
    /// Parses a schedule (see the module doc). The error says what is wrong
    /// without repeating the schedule.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let mut rest = text.trim();
        let mut tz = TimeZone::UTC;
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(r) = rest.strip_prefix(prefix) {
                let (name, after) = r
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("{prefix}<zone> must be followed by an expression"))?;
                tz = TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?}: {e}"))?;
                rest = after.trim_start();
                break;
            }
        }
        if rest.is_empty() {
            return Err("empty schedule".into());
        }
        let kind = if let Some(every) = rest.strip_prefix("@every") {
            let every = every.trim();
            let d = humantime::parse_duration(every)
                .map_err(|e| format!("bad interval {every:?} after @every: {e}"))?;
            if d < Duration::from_secs(1) {
                return Err(format!("interval {every:?} is shorter than 1s"));
            }
            Kind::Every(SignedDuration::try_from(d).map_err(|_| "interval too long".to_string())?)
        } else {
            let fields = rest.split_whitespace().count();
            if !rest.starts_with('@') && !(5..=6).contains(&fields) {
                return Err(format!(
                    "{fields} fields; a cron expression has 5 (minute hour day month weekday) \
                     or 6 (seconds first)"
                ));
            }
            // croner reads an empty list element ("1,,2", a lone ",") as
            // nothing: a field of only that never matches, and finding
            // that out below took 3.7 s of CPU here for `* , * * *`
            // (found by the cron fuzz target). Malformed either way.
            if let Some(f) = rest
                .split_whitespace()
                .find(|f| f.split(',').any(str::is_empty))
            {
                return Err(format!("field {f:?} has an empty list element"));
            }
            let cron = CronParser::builder()
                .seconds(Seconds::Optional)
                .year(Year::Disallowed)
                .build()
                .parse(rest)
                .map_err(|e| format!("{rest:?}: {e}"))?;
            Kind::Cron(Box::new(cron))
        };
        let s = Schedule { kind, tz };
        if s.next_after(Timestamp::now(), None).is_none() {
            return Err("the expression never matches".into());
        }
        Ok(s)
    }

    /// The first due time after `now`. `prev` is the due time just served
    /// (intervals keep their phase: `prev + k * interval`).
    pub fn next_after(&self, now: Timestamp, prev: Option<Timestamp>) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(d) => {
                let base = prev.filter(|p| *p <= now).unwrap_or(now);
                let (behind, period) = (now.duration_since(base).as_nanos(), d.as_nanos());
                let ahead = (behind / period + 1).checked_mul(period)?;
                base.checked_add(SignedDuration::from_nanos(i64::try_from(ahead).ok()?))
                    .ok()
            }
            Kind::Cron(c) => c
                .find_next_occurrence(&now.to_zoned(self.tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }
}

/// A job a generation declared, checked at load.
#[derive(Debug, Clone)]
pub struct Declared {
    pub name: String,
    /// The schedule as the module wrote it (shown by `STATUS`).
    pub text: String,
    pub schedule: Schedule,
}

/// Asks a freshly started generation for its jobs and checks them: names
/// unique, non-empty, without spaces; schedules valid. The error names
/// the job and the field, e.g. `job "tick": schedule: ...`.
pub fn declared(module: &ModuleBox) -> Result<Vec<Declared>, String> {
    let mut out: Vec<Declared> = Vec::new();
    for spec in module.jobs() {
        let name = spec.name.as_str();
        let bad_name = if name.is_empty() {
            Some("empty")
        } else if name.len() > MAX_NAME {
            Some("longer than 64 bytes")
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("contains spaces or control characters")
        } else if out.iter().any(|d| d.name == name) {
            Some("declared twice")
        } else {
            None
        };
        if let Some(why) = bad_name {
            return Err(format!("job {name:?}: name: {why}"));
        }
        let text = spec.schedule.as_str().trim();
        let schedule = Schedule::parse(text).map_err(|e| format!("job {name:?}: schedule: {e}"))?;
        out.push(Declared {
            name: name.to_string(),
            text: text.to_string(),
            schedule,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_and_six_fields() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let n = s.next_after(ts("2024-05-01T12:07:30Z"), None).unwrap();
        assert_eq!(n, ts("2024-05-01T12:15:00Z"));
        let s = Schedule::parse("* * * * * *").unwrap();
        let n = s.next_after(ts("2024-05-01T12:07:30.5Z"), None).unwrap();
        assert_eq!(n, ts("2024-05-01T12:07:31Z"));
        let n = s.next_after(ts("2024-05-01T12:07:31Z"), None).unwrap();
        assert_eq!(n, ts("2024-05-01T12:07:32Z"));
        let s = Schedule::parse("@hourly").unwrap();
        let n = s.next_after(ts("2024-05-01T12:07:30Z"), None).unwrap();
        assert_eq!(n, ts("2024-05-01T13:00:00Z"));
    }

    #[test]
    fn intervals_keep_their_phase() {
        let s = Schedule::parse("@every 30s").unwrap();
        let now = ts("2024-05-01T12:00:00Z");
        assert_eq!(s.next_after(now, None), Some(ts("2024-05-01T12:00:30Z")));
        let due = ts("2024-05-01T12:00:30Z");
        let late = ts("2024-05-01T12:00:30.2Z");
        assert_eq!(
            s.next_after(late, Some(due)),
            Some(ts("2024-05-01T12:01:00Z"))
        );
        // Far behind (the clock jumped): the next period after now.
        let later = ts("2024-05-01T12:05:10Z");
        assert_eq!(
            s.next_after(later, Some(due)),
            Some(ts("2024-05-01T12:05:30Z"))
        );
    }

    #[test]
    fn time_zones() {
        let s = Schedule::parse("CRON_TZ=Europe/Paris 0 3 * * *").unwrap();
        // 03:00 in Paris in May is 01:00 UTC.
        let n = s.next_after(ts("2024-05-01T00:00:00Z"), None).unwrap();
        assert_eq!(n, ts("2024-05-01T01:00:00Z"));
        assert!(Schedule::parse("TZ=Nowhere/Special 0 3 * * *")
            .unwrap_err()
            .contains("unknown time zone"));
    }

    #[test]
    fn bad_schedules() {
        for (text, expect) in [
            ("", "empty"),
            ("* * * *", "4 fields"),
            ("* * * * * * *", "7 fields"),
            ("61 * * * *", ""),
            ("@every", "bad interval"),
            ("@every 10 parsecs", "bad interval"),
            ("@every 500ms", "shorter than 1s"),
            ("0 0 31 2 *", "never matches"),
            ("@fortnightly", ""),
            ("* , * * *", "empty list element"),
            ("1,,2 * * * *", "empty list element"),
            ("0 0 1, * *", "empty list element"),
        ] {
            let e = Schedule::parse(text).expect_err(text);
            assert!(e.contains(expect), "{text:?}: {e}");
        }
    }
}
