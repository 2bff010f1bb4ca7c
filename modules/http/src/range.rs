//! `Range: bytes=...` (RFC 9110 §14) for one representation of known length.
//!
//! Only single ranges are answered with 206. A request for several ranges
//! is answered with the whole representation (200), which RFC 9110 allows;
//! it is refused with 416 only when none of its ranges is satisfiable.
//! A header with another unit or bad syntax is ignored (200), as the RFC
//! requires for unknown units and permits for invalid ones.

/// What to send for a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the whole representation (200).
    Full,
    /// Send bytes `start..=end` (206).
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */<len>`.
    Unsatisfiable,
}

/// Evaluates a `Range` header value against a representation of `len`
/// bytes.
pub fn evaluate(header: &[u8], len: u64) -> Outcome {
    let header = header.trim_ascii();
    let Some(unit_end) = header.iter().position(|&b| b == b'=') else {
        return Outcome::Full;
    };
    if !header[..unit_end]
        .trim_ascii()
        .eq_ignore_ascii_case(b"bytes")
    {
        return Outcome::Full;
    }
    let set = &header[unit_end + 1..];
    let mut satisfiable: Option<(u64, u64)> = None;
    let mut count = 0usize;
    for spec in set.split(|&b| b == b',') {
        let spec = spec.trim_ascii();
        if spec.is_empty() {
            // Empty list elements are allowed by the list syntax.
            continue;
        }
        count += 1;
        match spec_range(spec, len) {
            Spec::Invalid => return Outcome::Full,
            Spec::Unsatisfiable => {}
            Spec::Range(s, e) => {
                satisfiable.get_or_insert((s, e));
            }
        }
    }
    match (count, satisfiable) {
        (0, _) => Outcome::Full,
        (_, None) => Outcome::Unsatisfiable,
        (1, Some((start, end))) => Outcome::Partial { start, end },
        (_, Some(_)) => Outcome::Full,
    }
}

enum Spec {
    Invalid,
    Unsatisfiable,
    Range(u64, u64),
}

fn spec_range(spec: &[u8], len: u64) -> Spec {
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return Spec::Invalid;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        // `-n`: the last n bytes (a huge n means all of them).
        let Some(n) = number(last) else {
            return Spec::Invalid;
        };
        let n = n.unwrap_or(u64::MAX);
        return if n == 0 || len == 0 {
            Spec::Unsatisfiable
        } else {
            Spec::Range(len - n.min(len), len - 1)
        };
    }
    // `a-` or `a-b`; a position past u64::MAX is past any end.
    let Some(start) = number(first) else {
        return Spec::Invalid;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) => end.unwrap_or(u64::MAX),
            None => return Spec::Invalid,
        }
    };
    match start {
        Some(start) if end < start => Spec::Invalid,
        Some(start) if start < len => Spec::Range(start, end.min(len - 1)),
        _ => Spec::Unsatisfiable,
    }
}

/// Parses a run of ASCII digits: `None` when empty or not all digits,
/// `Some(None)` when the value overflows `u64`.
fn number(s: &[u8]) -> Option<Option<u64>> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::Outcome::*;
    use super::*;

    fn ev(h: &str, len: u64) -> Outcome {
        evaluate(h.as_bytes(), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(ev("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(ev("bytes=2-5", 10), Partial { start: 2, end: 5 });
        assert_eq!(ev("bytes=2-50", 10), Partial { start: 2, end: 9 });
        assert_eq!(ev("bytes=7-", 10), Partial { start: 7, end: 9 });
        assert_eq!(ev("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(ev("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(ev(" BYTES = 1-2 ", 10), Partial { start: 1, end: 2 });
        assert_eq!(
            ev("bytes=3-99999999999999999999999", 10),
            Partial { start: 3, end: 9 }
        );
        assert_eq!(
            ev("bytes=-99999999999999999999999", 10),
            Partial { start: 0, end: 9 }
        );
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(ev("bytes=10-", 10), Unsatisfiable);
        assert_eq!(ev("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(ev("bytes=-0", 10), Unsatisfiable);
        assert_eq!(ev("bytes=0-", 0), Unsatisfiable);
        assert_eq!(ev("bytes=-5", 0), Unsatisfiable);
        assert_eq!(ev("bytes=99999999999999999999999-", 10), Unsatisfiable);
        assert_eq!(ev("bytes=20-30, 40-", 10), Unsatisfiable);
    }

    #[test]
    fn ignored() {
        assert_eq!(ev("items=0-1", 10), Full);
        assert_eq!(ev("bytes=5-2", 10), Full);
        assert_eq!(ev("bytes=a-b", 10), Full);
        assert_eq!(ev("bytes=-", 10), Full);
        assert_eq!(ev("bytes=", 10), Full);
        assert_eq!(ev("bytes=1", 10), Full);
        assert_eq!(ev("bytes=+1-2", 10), Full);
        assert_eq!(ev("garbage", 10), Full);
    }

    #[test]
    fn multiple_ranges_get_the_whole_body() {
        assert_eq!(ev("bytes=0-1, 4-5", 10), Full);
        assert_eq!(ev("bytes=0-1, 40-50", 10), Full);
        assert_eq!(ev("bytes=0-1,", 10), Partial { start: 0, end: 1 });
    }
}
