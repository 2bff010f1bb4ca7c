//! Permission patterns: the bus's subject syntax applied to keys and
//! subjects alike, and the three questions access control asks of them.
//!
//! A pattern is dot-separated segments; `*` stands for exactly one
//! segment and a last segment `>` for one or more (as in [`crate::bus`]).
//! * [`Pattern::matches`]: is this key or topic (no wildcards) inside it?
//! * [`Pattern::covers`]: is every topic a subscription pattern can
//!   receive inside it? (`events.>` covers `events.a.*`, `events.*` does
//!   not cover `events.>`.)
//! * [`Pattern::overlaps`]: could one topic match both? A subscription
//!   that overlaps a denied pattern could receive a denied subject, so it
//!   is refused.
//!
//! All three walk the two segment lists once; no allocation after the
//! pattern is compiled.

use std::fmt;

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `>`: one or more segments (always last).
    Rest,
}

/// A compiled permission pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    segs: Box<[Seg]>,
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A pattern's segments as `Seg`s, borrowed (for a subscription pattern
/// checked against compiled ones).
fn segs_of(text: &str) -> impl Iterator<Item = SegRef<'_>> + Clone {
    text.split('.').map(|s| match s {
        "*" => SegRef::One,
        ">" => SegRef::Rest,
        lit => SegRef::Lit(lit),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegRef<'a> {
    Lit(&'a str),
    One,
    Rest,
}

impl Seg {
    fn as_ref(&self) -> SegRef<'_> {
        match self {
            Seg::Lit(s) => SegRef::Lit(s),
            Seg::One => SegRef::One,
            Seg::Rest => SegRef::Rest,
        }
    }
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        crate::bus::check_topic(text, true).map_err(|e| e.message.into_owned())?;
        let segs = segs_of(text)
            .map(|s| match s {
                SegRef::Lit(l) => Seg::Lit(l.into()),
                SegRef::One => Seg::One,
                SegRef::Rest => Seg::Rest,
            })
            .collect();
        Ok(Pattern {
            text: text.into(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The literal start every key the pattern matches begins with: its
    /// segments before the first wildcard, with their dot (`bot1.*` →
    /// `bot1.`, `>` → the empty string); the whole text for a pattern
    /// without wildcards.
    pub fn literal_prefix(&self) -> String {
        let lits: Vec<&str> = self
            .segs
            .iter()
            .map_while(|s| match s {
                Seg::Lit(l) => Some(&**l),
                _ => None,
            })
            .collect();
        if lits.len() == self.segs.len() {
            return self.text.to_string();
        }
        let mut p = lits.join(".");
        if !lits.is_empty() {
            p.push('.');
        }
        p
    }

    /// Whether `name` (a key or a published topic, taken literally: a `*`
    /// in a key is just a character) is inside the pattern.
    pub fn matches(&self, name: &str) -> bool {
        let mut name = name.split('.');
        for seg in self.segs.iter() {
            match seg {
                Seg::Rest => return name.next().is_some(),
                Seg::One => {
                    if name.next().is_none() {
                        return false;
                    }
                }
                Seg::Lit(l) => {
                    if name.next() != Some(&**l) {
                        return false;
                    }
                }
            }
        }
        name.next().is_none()
    }

    /// Whether every topic that the subscription pattern `sub` (already
    /// validated) matches is matched by this pattern too.
    pub fn covers(&self, sub: &str) -> bool {
        let mut sub = segs_of(sub);
        for seg in self.segs.iter() {
            let Some(s) = sub.next() else {
                return false; // this pattern needs more segments
            };
            match (seg.as_ref(), s) {
                // One or more of anything: covers whatever is left.
                (SegRef::Rest, _) => return true,
                // `>` in the subscription reaches further than `*` or a
                // literal.
                (_, SegRef::Rest) => return false,
                (SegRef::One, _) => {}
                (SegRef::Lit(a), SegRef::Lit(b)) if a == b => {}
                (SegRef::Lit(_), _) => return false,
            }
        }
        sub.next().is_none()
    }

    /// Whether some topic matches both this pattern and `other` (a
    /// validated pattern).
    pub fn overlaps(&self, other: &str) -> bool {
        let mut other = segs_of(other);
        for seg in self.segs.iter() {
            let Some(o) = other.next() else {
                return false;
            };
            match (seg.as_ref(), o) {
                // Either side takes one or more of anything, and both
                // still need at least one segment here: some topic fits.
                (SegRef::Rest, _) | (_, SegRef::Rest) => return true,
                (SegRef::One, _) | (_, SegRef::One) => {}
                (SegRef::Lit(a), SegRef::Lit(b)) if a == b => {}
                (SegRef::Lit(_), SegRef::Lit(_)) => return false,
            }
        }
        other.next().is_none()
    }
}

/// The key ranges (prefixes) a listing of the keys starting with
/// `prefix` needs to scan to find every key one of `allow` matches: each
/// pattern's literal start, narrowed to `prefix`, those that cannot meet
/// it left out. Sorted, and none is a prefix of another (so the ranges are
/// disjoint and in key order).
pub fn ranges(allow: &[Pattern], prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = allow
        .iter()
        .filter_map(|p| {
            let lit = p.literal_prefix();
            if lit.starts_with(prefix) {
                Some(lit)
            } else if prefix.starts_with(lit.as_str()) {
                Some(prefix.to_string())
            } else {
                None
            }
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    let mut kept: Vec<String> = Vec::with_capacity(out.len());
    for r in out {
        if kept.last().is_some_and(|k| r.starts_with(k.as_str())) {
            continue;
        }
        kept.push(r);
    }
    kept
}

/// One right's allow and deny lists; deny wins, and an empty allow list
/// allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub allow: Vec<Pattern>,
    pub deny: Vec<Pattern>,
}

impl Rule {
    /// Whether a key or a published topic is allowed.
    pub fn allows(&self, name: &str) -> bool {
        self.allow.iter().any(|p| p.matches(name)) && !self.deny.iter().any(|p| p.matches(name))
    }

    /// Whether a subscription pattern is allowed: some allowed pattern
    /// covers it, and it overlaps no denied one (it could receive a denied
    /// subject otherwise).
    pub fn allows_pattern(&self, sub: &str) -> bool {
        self.allow.iter().any(|p| p.covers(sub)) && !self.deny.iter().any(|p| p.overlaps(sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn matching() {
        assert!(p("bot1.*").matches("bot1.x"));
        assert!(!p("bot1.*").matches("bot1.x.y"));
        assert!(!p("bot1.*").matches("bot1"));
        assert!(!p("bot1.*").matches("bot2.x"));
        assert!(p("bot1.>").matches("bot1.x.y"));
        assert!(p("bot1.>").matches("bot1.x"));
        assert!(!p("bot1.>").matches("bot1"));
        assert!(p(">").matches("anything.at.all"));
        assert!(p("a.*.c").matches("a.b.c"));
        assert!(!p("a.*.c").matches("a.b.d"));
        assert!(p("exact").matches("exact"));
        assert!(!p("exact").matches("exact.more"));
        assert!(!p("bot1.*").matches("bot10.x"), "segments, not prefixes");
        // A wildcard character in a key is literal.
        assert!(!p("bot1.x").matches("bot1.*"));
        assert!(p("bot1.*").matches("bot1.*"));
    }

    #[test]
    fn covering() {
        assert!(p("events.>").covers("events.a.*"));
        assert!(p("events.>").covers("events.>"));
        assert!(p("events.>").covers("events.a"));
        assert!(!p("events.>").covers("events"));
        assert!(!p("events.>").covers(">"));
        assert!(p("events.*").covers("events.a"));
        assert!(p("events.*").covers("events.*"));
        assert!(!p("events.*").covers("events.>"));
        assert!(!p("events.*").covers("events.a.b"));
        assert!(!p("events.a").covers("events.*"));
        assert!(p("*.b").covers("a.b"));
        assert!(!p("*.b").covers("*.*"));
        assert!(p("*.*").covers("*.b"));
        assert!(
            !p("*.>").covers(">"),
            "`>` may be one segment, `*.>` needs two"
        );
        assert!(p(">").covers(">"));
        assert!(p(">").covers("*.x.>"));
        assert!(!p("a.b").covers("a"));
        assert!(!p("a").covers("a.b"));
    }

    #[test]
    fn overlapping() {
        assert!(p("events.secret").overlaps("events.>"));
        assert!(p("events.secret").overlaps("events.*"));
        assert!(!p("events.secret").overlaps("events.public"));
        assert!(!p("events.secret").overlaps("events.*.x"));
        assert!(p("events.>").overlaps("*.x"));
        assert!(p("*.x").overlaps("a.*"));
        assert!(!p("a.b").overlaps("a"));
        assert!(!p("a.>").overlaps("a"));
        assert!(p(">").overlaps("a"));
    }

    #[test]
    fn literal_prefixes_and_scan_ranges() {
        assert_eq!(p("bot1.*").literal_prefix(), "bot1.");
        assert_eq!(p("a.b.>").literal_prefix(), "a.b.");
        assert_eq!(p("*.x").literal_prefix(), "");
        assert_eq!(p(">").literal_prefix(), "");
        assert_eq!(p("a.b").literal_prefix(), "a.b");
        let allow = [p("bot1.*"), p("shared.>"), p("shared.x.*"), p("bot2.y")];
        assert_eq!(ranges(&allow, ""), ["bot1.", "bot2.y", "shared."]);
        assert_eq!(ranges(&allow, "shared.x.1"), ["shared.x.1"]);
        assert_eq!(ranges(&allow, "bot"), ["bot1.", "bot2.y"]);
        assert!(ranges(&allow, "other").is_empty());
        assert_eq!(ranges(&[p(">")], "k"), ["k"]);
        assert!(ranges(&[], "").is_empty());
    }

    #[test]
    fn rules_deny_wins_and_empty_allows_nothing() {
        let r = Rule {
            allow: vec![p("events.>")],
            deny: vec![p("events.secret")],
        };
        assert!(r.allows("events.a"));
        assert!(!r.allows("events.secret"));
        assert!(r.allows_pattern("events.public.*"));
        assert!(!r.allows_pattern("events.*"), "could receive events.secret");
        assert!(!r.allows_pattern("other.>"));
        let none = Rule::default();
        assert!(!none.allows("x"));
        assert!(!none.allows_pattern("x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "a..b", "a.>.b", "a*", "a.b>", ".a"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
