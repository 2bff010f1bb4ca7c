//! The durable streams' data that the database layer needs: the tables
//! ([`SCHEMA`]), a batch's changes to them ([`Op`], with the configs it
//! carries: [`StreamConfig`], [`Discard`], [`ConsumerConfig`]) and
//! [`write`], which applies them inside the writer's transaction.
//!
//! It lives apart from [`crate::streams`] so that [`crate::db`] and
//! [`crate::entry`] (whose batch overlay carries the ops) sit below the
//! streams and do not import them (`docs/ARCHITECTURE.md`: no import
//! circles). It imports nothing from the crate.

use rusqlite::{params, Connection};

/// Created when the database is opened (`db.rs`).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    name          TEXT PRIMARY KEY NOT NULL,
    subjects      TEXT NOT NULL,
    max_msgs      INTEGER NOT NULL,
    max_bytes     INTEGER NOT NULL,
    max_age_ms    INTEGER NOT NULL,
    max_msg_bytes INTEGER NOT NULL,
    discard       TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    first_seq     INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    bytes         INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_msgs (
    stream  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    size    INTEGER NOT NULL,
    subject TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers (
    stream          TEXT NOT NULL,
    name            TEXT NOT NULL,
    filter          TEXT,
    deliver         TEXT NOT NULL,
    ack_wait_ms     INTEGER NOT NULL,
    max_deliver     INTEGER NOT NULL,
    max_ack_pending INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    ack_floor       INTEGER NOT NULL,
    acked_above     TEXT NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;
";

/// One change to the stream tables, in the order the batch made it.
#[derive(Debug, Clone)]
pub enum Op {
    CreateStream(Box<StreamConfig>, u64),
    DeleteStream(String),
    Append {
        stream: String,
        seq: u64,
        at_ms: u64,
        subject: String,
        data: String,
    },
    /// Deletes the messages below `below`.
    Trim {
        stream: String,
        below: u64,
    },
    /// The stream's counters after the changes before it.
    State {
        stream: String,
        first: u64,
        last: u64,
        bytes: u64,
    },
    CreateConsumer(Box<ConsumerConfig>, u64, u64),
    DeleteConsumer(String, String),
    /// The acknowledged floor and the acknowledged sequences above it.
    Acks {
        stream: String,
        consumer: String,
        floor: u64,
        above: Vec<u64>,
    },
}

/// The size a message counts for in a stream's bytes.
pub fn msg_size(subject: &str, data: &str) -> u64 {
    (subject.len() + data.len()) as u64
}

/// Writes `ops` (the caller holds the transaction).
pub fn write(conn: &Connection, ops: &[Op]) -> rusqlite::Result<()> {
    for op in ops {
        match op {
            Op::CreateStream(c, created) => {
                conn.prepare_cached(
                    "INSERT INTO streams (name, subjects, max_msgs, max_bytes, max_age_ms,
                     max_msg_bytes, discard, created_ms, first_seq, last_seq, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 0, 0)",
                )?
                .execute(params![
                    c.name,
                    serde_json::to_string(&c.subjects).unwrap_or_default(),
                    c.max_msgs,
                    c.max_bytes,
                    c.max_age_ms as i64,
                    c.max_msg_bytes as i64,
                    c.discard.name(),
                    *created as i64
                ])?;
            }
            Op::DeleteStream(name) => {
                for sql in [
                    "DELETE FROM streams WHERE name = ?1",
                    "DELETE FROM stream_msgs WHERE stream = ?1",
                    "DELETE FROM consumers WHERE stream = ?1",
                ] {
                    conn.prepare_cached(sql)?.execute([name])?;
                }
            }
            Op::Append {
                stream,
                seq,
                at_ms,
                subject,
                data,
            } => {
                conn.prepare_cached(
                    "INSERT INTO stream_msgs (stream, seq, at_ms, size, subject, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    stream,
                    *seq as i64,
                    *at_ms as i64,
                    msg_size(subject, data) as i64,
                    subject,
                    data
                ])?;
            }
            Op::Trim { stream, below } => {
                conn.prepare_cached("DELETE FROM stream_msgs WHERE stream = ?1 AND seq < ?2")?
                    .execute(params![stream, *below as i64])?;
            }
            Op::State {
                stream,
                first,
                last,
                bytes,
            } => {
                conn.prepare_cached(
                    "UPDATE streams SET first_seq = ?2, last_seq = ?3, bytes = ?4 WHERE name = ?1",
                )?
                .execute(params![
                    stream,
                    *first as i64,
                    *last as i64,
                    *bytes as i64
                ])?;
            }
            Op::CreateConsumer(c, floor, created) => {
                conn.prepare_cached(
                    "INSERT INTO consumers (stream, name, filter, deliver, ack_wait_ms,
                     max_deliver, max_ack_pending, created_ms, ack_floor, acked_above)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '[]')",
                )?
                .execute(params![
                    c.stream,
                    c.name,
                    c.filter,
                    c.deliver,
                    c.ack_wait_ms as i64,
                    c.max_deliver,
                    c.max_ack_pending as i64,
                    *created as i64,
                    *floor as i64
                ])?;
            }
            Op::DeleteConsumer(stream, name) => {
                conn.prepare_cached("DELETE FROM consumers WHERE stream = ?1 AND name = ?2")?
                    .execute([stream, name])?;
            }
            Op::Acks {
                stream,
                consumer,
                floor,
                above,
            } => {
                conn.prepare_cached(
                    "UPDATE consumers SET ack_floor = ?3, acked_above = ?4
                     WHERE stream = ?1 AND name = ?2",
                )?
                .execute(params![
                    stream,
                    consumer,
                    *floor as i64,
                    serde_json::to_string(above).unwrap_or_default()
                ])?;
            }
        }
    }
    Ok(())
}

/// What a full stream does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// Drop the oldest messages.
    Old,
    /// Refuse the new one (-32050).
    New,
}

impl Discard {
    pub fn name(self) -> &'static str {
        match self {
            Discard::Old => "old",
            Discard::New => "new",
        }
    }
}

/// A stream's config. Limits: -1 (counts) or 0 (`max_age_ms`) is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    pub subjects: Vec<String>,
    pub max_msgs: i64,
    pub max_bytes: i64,
    pub max_age_ms: u64,
    pub max_msg_bytes: u64,
    pub discard: Discard,
}

/// A consumer's config, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub stream: String,
    pub name: String,
    pub filter: Option<String>,
    /// `"all"`, `"new"`, `"last"` or `{"seq":N}` (JSON text).
    pub deliver: String,
    pub ack_wait_ms: u64,
    /// -1: no limit.
    pub max_deliver: i64,
    pub max_ack_pending: usize,
}
