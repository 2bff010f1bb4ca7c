//! Conditional requests (RFC 9110 §13) for GET and HEAD.
//!
//! Evaluated in the RFC's order: `If-Match`, else `If-Unmodified-Since`
//! (412 when they fail); then `If-None-Match`, else `If-Modified-Since`
//! (304 when the client's copy is current). `If-Range` is checked
//! separately, only when a `Range` is about to be honoured.

/// The validators of the representation being served.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// The strong entity tag, quotes included: `"5f1a-20"`.
    pub etag: &'a [u8],
    /// Last modification, in whole seconds since the Unix epoch.
    pub mtime: u64,
}

/// The conditional headers of a request (raw values).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
}

/// The result of evaluating [`Conditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve the representation.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

impl Conditions<'_> {
    /// Whether the request has any conditional header at all.
    pub fn any(&self) -> bool {
        self.if_match.is_some()
            || self.if_none_match.is_some()
            || self.if_modified_since.is_some()
            || self.if_unmodified_since.is_some()
    }

    /// Evaluates the conditions against `v`.
    pub fn evaluate(&self, v: &Validators<'_>) -> Verdict {
        if let Some(list) = self.if_match {
            if !list_matches(list, v.etag, true) {
                return Verdict::PreconditionFailed;
            }
        } else if let Some(date) = self.if_unmodified_since.and_then(parse_date) {
            if v.mtime > date {
                return Verdict::PreconditionFailed;
            }
        }
        if let Some(list) = self.if_none_match {
            if list_matches(list, v.etag, false) {
                return Verdict::NotModified;
            }
        } else if let Some(date) = self.if_modified_since.and_then(parse_date) {
            if v.mtime <= date {
                return Verdict::NotModified;
            }
        }
        Verdict::Proceed
    }
}

/// Whether an `If-Range` value still names the representation, so the
/// range may be served (otherwise the whole representation is sent). An
/// entity tag must match strongly; a date must equal `Last-Modified`.
pub fn if_range_holds(value: &[u8], v: &Validators<'_>) -> bool {
    let value = value.trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        let mut tags = EntityTags { rest: value };
        matches!(tags.next(), Some(Tag { weak: false, opaque }) if opaque == v.etag)
            && tags.next().is_none()
    } else {
        parse_date(value) == Some(v.mtime)
    }
}

/// Whether the `If-Match`/`If-None-Match` list `list` names `etag`, with
/// strong (`If-Match`) or weak (`If-None-Match`) comparison. `*` matches
/// any existing representation; a malformed list matches nothing.
fn list_matches(list: &[u8], etag: &[u8], strong: bool) -> bool {
    if list.trim_ascii() == b"*" {
        return true;
    }
    EntityTags { rest: list }.any(|t| t.opaque == etag && !(strong && t.weak))
}

fn parse_date(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// One entity tag from a list; `opaque` keeps its quotes.
#[derive(Debug, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Iterates over a comma-separated list of entity tags, stopping at the
/// first malformed element.
struct EntityTags<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for EntityTags<'a> {
    type Item = Tag<'a>;

    fn next(&mut self) -> Option<Tag<'a>> {
        let start = self
            .rest
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b','))?;
        let mut s = &self.rest[start..];
        let weak = s.starts_with(b"W/");
        if weak {
            s = &s[2..];
        }
        if s.first() != Some(&b'"') {
            self.rest = &[];
            return None;
        }
        let Some(close) = s[1..].iter().position(|&b| b == b'"') else {
            self.rest = &[];
            return None;
        };
        let (opaque, rest) = s.split_at(close + 2);
        self.rest = rest;
        Some(Tag { weak, opaque })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Validators<'static> = Validators {
        etag: b"\"abc-10\"",
        mtime: 1_700_000_000,
    };
    // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
    const AT: &[u8] = b"Tue, 14 Nov 2023 22:13:20 GMT";
    const BEFORE: &[u8] = b"Tue, 14 Nov 2023 22:13:19 GMT";

    fn cond<'a>(
        im: Option<&'a [u8]>,
        inm: Option<&'a [u8]>,
        ims: Option<&'a [u8]>,
        ius: Option<&'a [u8]>,
    ) -> Verdict {
        Conditions {
            if_match: im,
            if_none_match: inm,
            if_modified_since: ims,
            if_unmodified_since: ius,
        }
        .evaluate(&V)
    }

    #[test]
    fn none_match() {
        assert_eq!(
            cond(None, Some(b"\"abc-10\""), None, None),
            Verdict::NotModified
        );
        assert_eq!(
            cond(None, Some(b"\"x\", W/\"abc-10\""), None, None),
            Verdict::NotModified
        );
        assert_eq!(cond(None, Some(b"*"), None, None), Verdict::NotModified);
        assert_eq!(
            cond(None, Some(b"\"abc-11\""), None, None),
            Verdict::Proceed
        );
        assert_eq!(cond(None, Some(b"abc-10"), None, None), Verdict::Proceed);
    }

    #[test]
    fn none_match_beats_modified_since() {
        // A current date but a stale tag: the tag decides.
        assert_eq!(
            cond(None, Some(b"\"old\""), Some(AT), None),
            Verdict::Proceed
        );
    }

    #[test]
    fn modified_since() {
        assert_eq!(cond(None, None, Some(AT), None), Verdict::NotModified);
        assert_eq!(cond(None, None, Some(BEFORE), None), Verdict::Proceed);
        assert_eq!(cond(None, None, Some(b"yesterday"), None), Verdict::Proceed);
    }

    #[test]
    fn preconditions() {
        assert_eq!(
            cond(Some(b"\"abc-10\""), None, None, None),
            Verdict::Proceed
        );
        assert_eq!(
            cond(Some(b"W/\"abc-10\""), None, None, None),
            Verdict::PreconditionFailed
        );
        assert_eq!(cond(Some(b"*"), None, None, None), Verdict::Proceed);
        assert_eq!(
            cond(None, None, None, Some(BEFORE)),
            Verdict::PreconditionFailed
        );
        assert_eq!(cond(None, None, None, Some(AT)), Verdict::Proceed);
    }

    #[test]
    fn if_range() {
        assert!(if_range_holds(b"\"abc-10\"", &V));
        assert!(!if_range_holds(b"W/\"abc-10\"", &V));
        assert!(!if_range_holds(b"\"other\"", &V));
        assert!(if_range_holds(AT, &V));
        assert!(!if_range_holds(BEFORE, &V));
        assert!(!if_range_holds(b"junk", &V));
    }

    #[test]
    fn tag_lists() {
        let tags: Vec<_> = EntityTags {
            rest: b" \"a,b\" ,W/\"c\",, \"d\"",
        }
        .collect();
        assert_eq!(
            tags,
            [
                Tag {
                    weak: false,
                    opaque: b"\"a,b\""
                },
                Tag {
                    weak: true,
                    opaque: b"\"c\""
                },
                Tag {
                    weak: false,
                    opaque: b"\"d\""
                },
            ]
        );
        assert_eq!(
            EntityTags {
                rest: b"\"a\" junk"
            }
            .count(),
            1
        );
    }
}
