//! Subjects and subject patterns, as in NATS: dot-separated tokens; in a
//! pattern `*` stands for one whole token and a last `>` for one or more.
//! [`check_topic`] is the one validation every subject-taking method
//! uses (publish, subscribe, request, presence), so all of them refuse
//! the same inputs with the same -32602 text.

use crate::jsonrpc::RpcError;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most segments in a topic or pattern.
pub const MAX_SEGMENTS: usize = 32;
/// The prefix of reply subjects (`bus.request`'s inboxes).
pub const INBOX_PREFIX: &str = "_INBOX.";

/// Checks a topic (`pattern == false`) or a pattern.
pub fn check_topic(topic: &str, pattern: bool) -> Result<(), RpcError> {
    let what = if pattern { "pattern" } else { "topic" };
    let bad = |why: &str| {
        Err(RpcError::invalid_params(format!(
            "bad {what} {topic:?}: {why}"
        )))
    };
    if topic.is_empty() || topic.len() > MAX_TOPIC_BYTES {
        return bad("must be 1 to 256 bytes");
    }
    // NATS splits a protocol line on whitespace, so a subject with a
    // space could never be carried to it; control characters
    // would corrupt logs.
    let bytes = topic.as_bytes();
    let clean = if bytes.is_ascii() {
        // ASCII whitespace and controls are the bytes up to the space, and DEL.
        bytes.iter().all(|&b| b > b' ' && b != 0x7f)
    } else {
        !topic.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if !clean {
        return bad("segments cannot contain spaces or control characters");
    }
    // One pass over the bytes for what every publish needs to know; the
    // segment by segment walk below only runs to name what is wrong.
    let (mut segs, mut empty, mut wild) = (1, bytes[0] == b'.', false);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'.' => {
                segs += 1;
                empty |= bytes.get(i + 1).map_or(true, |&n| n == b'.');
            }
            b'*' | b'>' => wild = true,
            _ => {}
        }
    }
    if segs > MAX_SEGMENTS {
        return bad("too many segments");
    }
    if !empty && !wild {
        return Ok(());
    }
    for (i, seg) in topic.split('.').enumerate() {
        if seg.is_empty() {
            return bad("empty segment");
        }
        if !seg.contains(['*', '>']) {
            continue;
        }
        if !pattern {
            return bad("`*` and `>` are for patterns, not for published topics");
        }
        if seg.contains('*') && seg != "*" {
            return bad("`*` must be a whole segment");
        }
        if seg.contains('>') && (seg != ">" || i + 1 != segs) {
            return bad("`>` must be the whole last segment");
        }
    }
    Ok(())
}

/// Checks a queue group name: 1 to 64 bytes of letters, digits and
/// `_-.` (a NATS queue name is one whitespace-free token).
pub fn check_queue(name: &str) -> Result<(), RpcError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params(format!(
            "bad queue {name:?}: must be 1 to 64 letters, digits, `_`, `-` or `.`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_spaces_and_control_characters() {
        for bad in ["a b", "a.b c", "a\tb", "a\u{7}", "\u{a0}x", "a\n"] {
            let e = check_topic(bad, true).unwrap_err();
            assert!(
                e.message.contains("spaces or control characters"),
                "{bad:?}: {}",
                e.message
            );
            assert!(check_topic(bad, false).is_err());
        }
        assert!(check_topic("a.é.ü", false).is_ok(), "other unicode is fine");
    }

    #[test]
    fn every_mistake_is_named() {
        let why = |t: &str, pattern: bool| check_topic(t, pattern).unwrap_err().message;
        for (t, pattern, says) in [
            ("", false, "1 to 256 bytes"),
            (".a", false, "empty segment"),
            ("a.", true, "empty segment"),
            ("a..b", false, "empty segment"),
            (".", false, "empty segment"),
            ("a.b*", true, "`*` must be a whole segment"),
            ("a.>.b", true, "`>` must be the whole last segment"),
            ("a.*", false, "not for published topics"),
            ("é..x", false, "empty segment"),
            ("a\u{7f}", false, "spaces or control characters"),
        ] {
            assert!(why(t, pattern).contains(says), "{t:?}: {}", why(t, pattern));
        }
        let deep = vec!["s"; MAX_SEGMENTS + 1].join(".");
        assert!(why(&deep, false).contains("too many segments"));
        let deepest = vec!["s"; MAX_SEGMENTS].join(".");
        assert!(check_topic(&deepest, false).is_ok());
        for good in ["a", "a.b.c", "é.ü", "_INBOX.x1", "a.*.>"] {
            assert!(check_topic(good, true).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn queue_names() {
        for good in ["workers", "w-1", "a.b", "A_9"] {
            assert!(check_queue(good).is_ok(), "{good:?}");
        }
        let long = "q".repeat(65);
        for bad in ["", "a b", "a*", ">", long.as_str()] {
            assert!(check_queue(bad).is_err(), "{bad:?}");
        }
    }
}
