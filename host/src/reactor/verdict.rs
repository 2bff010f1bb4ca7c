//! What a module's [`Verdict`] may legally say, given what it was handed:
//! a pure function, so every rule is tested without a socket or a module.
//!
//! The event loop checks each verdict from `on_message` and each one from
//! `on_deferred` here before acting on it. A verdict that breaks a rule is
//! a [`Violation`]: the loop counts a fault of the module and closes the
//! connection (see `dispatch`).

use module_api::{Action, Verdict};

/// What the module was handed, and what it is allowed to do.
#[derive(Clone, Copy, Debug)]
pub struct Given {
    /// Input bytes the module was given (unused for a deferred call,
    /// whose message was consumed when it was deferred).
    pub available: usize,
    /// Whether the call appended to the connection's output.
    pub wrote: bool,
    /// Whether the verdict answers `on_deferred` (the worker pool) rather
    /// than `on_message`.
    pub deferred: bool,
    /// Whether the generation's manifest declares that it defers work.
    pub defers_declared: bool,
}

/// A verdict that keeps the rules, reduced to what the loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Wait for more bytes.
    NeedMore,
    /// Hand the first `consumed` bytes to the worker pool.
    Defer { consumed: usize },
    /// Relay the connection to the verdict's upstream.
    Proxy,
    /// The message of `consumed` bytes is answered (`Done`, `Close`,
    /// `Keep`).
    Finish { consumed: usize },
}

/// A rule a verdict broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("protocol violation: consumed more bytes than it was given")]
    ConsumedTooMuch,
    #[error("protocol violation: NeedMore with output or consumed bytes")]
    NeedMoreWithOutput,
    #[error("protocol violation: Defer without a message or with output")]
    DeferMalformed,
    #[error("protocol violation: Defer, but its manifest does not declare that it defers")]
    DeferUndeclared,
    #[error("protocol violation: Proxy with consumed bytes")]
    ProxyConsumed,
    #[error("protocol violation: Done without consuming input")]
    DoneConsumedNothing,
    #[error("protocol violation: deferred call answered {0:?}")]
    DeferredAnswered(Action),
}

/// Checks `v` against the rules of [`Action`] for a call handed `given`.
#[inline]
pub fn check(v: &Verdict, given: Given) -> Result<Checked, Violation> {
    if given.deferred {
        // The message was consumed when it was deferred: a deferred call
        // can only answer it.
        return match v.action {
            Action::Done | Action::Close | Action::Keep => Ok(Checked::Finish { consumed: 0 }),
            other => Err(Violation::DeferredAnswered(other)),
        };
    }
    if v.consumed > given.available as u64 {
        return Err(Violation::ConsumedTooMuch);
    }
    let consumed = v.consumed as usize;
    match v.action {
        Action::NeedMore if consumed != 0 || given.wrote => Err(Violation::NeedMoreWithOutput),
        Action::NeedMore => Ok(Checked::NeedMore),
        Action::Defer if consumed == 0 || given.wrote => Err(Violation::DeferMalformed),
        // `Manifest::defers` is a promise the host holds a module to: one
        // that never said it defers must not load the worker pool.
        Action::Defer if !given.defers_declared => Err(Violation::DeferUndeclared),
        Action::Defer => Ok(Checked::Defer { consumed }),
        // The output written with `Proxy` goes to the upstream first.
        Action::Proxy if consumed != 0 => Err(Violation::ProxyConsumed),
        Action::Proxy => Ok(Checked::Proxy),
        // `Close` may answer nothing (closing on garbage); `Done` and
        // `Keep` hand the connection on and must have taken a message, or
        // the next call would see the same bytes forever.
        Action::Done | Action::Keep if consumed == 0 => Err(Violation::DoneConsumedNothing),
        Action::Done | Action::Close | Action::Keep => Ok(Checked::Finish { consumed }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_message(available: usize, wrote: bool) -> Given {
        Given {
            available,
            wrote,
            deferred: false,
            defers_declared: true,
        }
    }

    fn with(action: Action, consumed: u64) -> Verdict {
        let mut v = Verdict::NEED_MORE;
        v.action = action;
        v.consumed = consumed;
        v
    }

    #[test]
    fn consumed_more_than_available() {
        for action in [Action::Done, Action::Close, Action::Keep, Action::Defer] {
            assert_eq!(
                check(&with(action, 11), on_message(10, false)),
                Err(Violation::ConsumedTooMuch),
                "{action:?}"
            );
        }
        assert_eq!(
            check(&with(Action::Proxy, 1), on_message(0, false)),
            Err(Violation::ConsumedTooMuch)
        );
    }

    #[test]
    fn need_more() {
        assert_eq!(
            check(&with(Action::NeedMore, 0), on_message(5, false)),
            Ok(Checked::NeedMore)
        );
        assert_eq!(
            check(&with(Action::NeedMore, 0), on_message(5, true)),
            Err(Violation::NeedMoreWithOutput)
        );
        assert_eq!(
            check(&with(Action::NeedMore, 3), on_message(5, false)),
            Err(Violation::NeedMoreWithOutput)
        );
    }

    #[test]
    fn defer() {
        assert_eq!(
            check(&with(Action::Defer, 4), on_message(10, false)),
            Ok(Checked::Defer { consumed: 4 })
        );
        assert_eq!(
            check(&with(Action::Defer, 0), on_message(10, false)),
            Err(Violation::DeferMalformed),
            "no message"
        );
        assert_eq!(
            check(&with(Action::Defer, 4), on_message(10, true)),
            Err(Violation::DeferMalformed),
            "with output"
        );
        let undeclared = Given {
            defers_declared: false,
            ..on_message(10, false)
        };
        assert_eq!(
            check(&with(Action::Defer, 4), undeclared),
            Err(Violation::DeferUndeclared)
        );
        // Declaring nothing limits only `Defer`.
        assert_eq!(
            check(&with(Action::Done, 4), undeclared),
            Ok(Checked::Finish { consumed: 4 })
        );
    }

    #[test]
    fn proxy() {
        assert_eq!(
            check(&with(Action::Proxy, 0), on_message(10, true)),
            Ok(Checked::Proxy),
            "output goes to the upstream first"
        );
        assert_eq!(
            check(&with(Action::Proxy, 2), on_message(10, false)),
            Err(Violation::ProxyConsumed)
        );
    }

    #[test]
    fn done_close_keep() {
        for action in [Action::Done, Action::Close, Action::Keep] {
            assert_eq!(
                check(&with(action, 10), on_message(10, true)),
                Ok(Checked::Finish { consumed: 10 }),
                "{action:?}"
            );
        }
        assert_eq!(
            check(&with(Action::Done, 0), on_message(10, true)),
            Err(Violation::DoneConsumedNothing)
        );
        assert_eq!(
            check(&with(Action::Keep, 0), on_message(10, false)),
            Err(Violation::DoneConsumedNothing)
        );
        assert_eq!(
            check(&with(Action::Close, 0), on_message(10, false)),
            Ok(Checked::Finish { consumed: 0 }),
            "Close may take nothing"
        );
    }

    #[test]
    fn deferred_answers() {
        let deferred = Given {
            available: 0,
            wrote: true,
            deferred: true,
            defers_declared: true,
        };
        for action in [Action::Done, Action::Close, Action::Keep] {
            assert_eq!(
                check(&with(action, 0), deferred),
                Ok(Checked::Finish { consumed: 0 }),
                "{action:?}"
            );
        }
        for action in [Action::Defer, Action::NeedMore, Action::Proxy] {
            assert_eq!(
                check(&with(action, 0), deferred),
                Err(Violation::DeferredAnswered(action)),
                "{action:?}"
            );
        }
    }

    #[test]
    fn violations_read_as_protocol_violations() {
        assert_eq!(
            Violation::DeferredAnswered(Action::Defer).to_string(),
            "protocol violation: deferred call answered Defer"
        );
        assert!(Violation::DeferUndeclared.to_string().contains("manifest"));
    }
}
