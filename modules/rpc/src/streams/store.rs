//! The SQL of durable streams: the reads ([`load`], [`read_from`], [`read_one`],
//! [`sizes_from`]) done through the streams' own read-only connection.
//! The tables and the changes a batch makes to them ([`Op`], written
//! inside the writer's transaction by [`write`]) are in
//! [`crate::stream_sql`], below the database layer, and re-exported here.
//!
//! As in `kv`, the message body (`data`) is the last column, so that
//! reading sequence numbers, times and sizes (limits, expiry) never
//! touches its overflow pages.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::consumer::{Consumer, ConsumerConfig};
use super::{Discard, Stream, StreamConfig};

pub use crate::stream_sql::{msg_size, write, Op, SCHEMA};

/// A read-only connection to the database at `path`.
pub fn open_read(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {} for the streams: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
    Ok(conn)
}

fn u(v: i64) -> u64 {
    v.max(0) as u64
}

/// Every stream and consumer as committed.
pub fn load(conn: &Connection) -> rusqlite::Result<(Vec<Stream>, Vec<Consumer>)> {
    let mut streams = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name, subjects, max_msgs, max_bytes, max_age_ms, max_msg_bytes, discard,
         created_ms, first_seq, last_seq, bytes FROM streams",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let subjects: String = r.get(1)?;
        let discard: String = r.get(6)?;
        streams.push(Stream {
            cfg: StreamConfig {
                name: r.get(0)?,
                subjects: serde_json::from_str(&subjects).unwrap_or_default(),
                max_msgs: r.get(2)?,
                max_bytes: r.get(3)?,
                max_age_ms: u(r.get(4)?),
                max_msg_bytes: u(r.get(5)?),
                discard: if discard == "new" {
                    Discard::New
                } else {
                    Discard::Old
                },
            },
            created_ms: u(r.get(7)?),
            first_seq: u(r.get(8)?),
            last_seq: u(r.get(9)?),
            bytes: u(r.get(10)?),
        });
    }
    let mut consumers = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT stream, name, filter, deliver, ack_wait_ms, max_deliver, max_ack_pending,
         created_ms, ack_floor, acked_above FROM consumers",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let above: String = r.get(9)?;
        let cfg = ConsumerConfig {
            stream: r.get(0)?,
            name: r.get(1)?,
            filter: r.get(2)?,
            deliver: r.get(3)?,
            ack_wait_ms: u(r.get(4)?),
            max_deliver: r.get(5)?,
            max_ack_pending: u(r.get(6)?) as usize,
        };
        let above: Vec<u64> = serde_json::from_str(&above).unwrap_or_default();
        consumers.push(Consumer::new(
            cfg,
            u(r.get(7)?),
            u(r.get(8)?),
            above.into_iter().collect(),
        ));
    }
    Ok((streams, consumers))
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub seq: u64,
    pub subject: String,
    pub data: String,
}

/// Up to `limit` messages of `stream` from `seq` on, in order.
pub fn read_from(
    conn: &Connection,
    stream: &str,
    seq: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Msg>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, subject, data FROM stream_msgs WHERE stream = ?1 AND seq >= ?2
         ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![stream, seq as i64, limit as i64], |r| {
        Ok(Msg {
            seq: u(r.get(0)?),
            subject: r.get(1)?,
            data: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// The message `seq` of `stream`, if it is still stored.
pub fn read_one(conn: &Connection, stream: &str, seq: u64) -> rusqlite::Result<Option<Msg>> {
    Ok(read_from(conn, stream, seq, 1)?
        .into_iter()
        .next()
        .filter(|m| m.seq == seq))
}

/// `(seq, at_ms, size)` of up to `limit` messages of `stream` from `seq`
/// on (the body is not read).
pub fn sizes_from(
    conn: &Connection,
    stream: &str,
    seq: u64,
    limit: usize,
) -> rusqlite::Result<Vec<(u64, u64, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at_ms, size FROM stream_msgs WHERE stream = ?1 AND seq >= ?2
         ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![stream, seq as i64, limit as i64], |r| {
        Ok((u(r.get(0)?), u(r.get(1)?), u(r.get(2)?)))
    })?;
    rows.collect()
}

/// The last message of `stream` at or below `seq` whose subject `keep`
/// accepts, looking at up to `limit` messages.
pub fn last_matching(
    conn: &Connection,
    stream: &str,
    seq: u64,
    limit: usize,
    keep: impl Fn(&str) -> bool,
) -> rusqlite::Result<Option<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, subject FROM stream_msgs WHERE stream = ?1 AND seq <= ?2
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![stream, seq as i64, limit as i64])?;
    while let Some(r) = rows.next()? {
        if keep(r.get_ref(1)?.as_str()?) {
            return Ok(Some(u(r.get(0)?)));
        }
    }
    Ok(None)
}

/// Whether the message `seq` of `stream` exists (for tests and checks).
pub fn exists(conn: &Connection, stream: &str, seq: u64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM stream_msgs WHERE stream = ?1 AND seq = ?2")?
        .query_row(params![stream, seq as i64], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}
