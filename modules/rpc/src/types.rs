//! The small value types the transports, the connection table, the
//! writer and the handover pass between them: how a submission is framed
//! ([`Kind`]), the writer's answer ([`Reply`]) and whether a generation
//! serves ([`Mode`]). A leaf: it imports nothing from the crate, so every
//! layer may name these without pulling in the one that produces them.

/// How a submission's input is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Newline-separated messages; each reply ends with a newline.
    Lines,
    /// One message (an HTTP body); the reply has no newline.
    Body,
}

/// The answer to a submission.
#[derive(Debug, Default)]
pub struct Reply {
    /// The replies, each line's ending with a newline (`Lines`).
    pub out: Vec<u8>,
    /// Bytes of the input answered: all of it, or up to the end of the
    /// line after which the reply passed the budget. Lines after that
    /// were not evaluated (not written) and must be submitted again.
    pub taken: usize,
    /// Close the connection after this reply (too many failed logins).
    pub close: bool,
}

/// Whether a generation serves requests itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    /// Handed over: forwards everything to the current generation.
    Frozen,
    /// Another process owns the database (see [`crate::owner`]): requests
    /// wait until it lets go.
    Standby,
}
