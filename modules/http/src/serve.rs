//! Answering GET and HEAD from the file system through the cache.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use module_api::http::{self, Request};
use module_api::{FileBody, RVec, SharedBody};

use crate::cache::{Entry, Stamp};
use crate::conditional::{self, Conditions, Validators};
use crate::path::{self, Found, Missing};
use crate::range;
use crate::reply::{Reply, Sent};
use crate::site::Http;

/// Cached bodies at least this large are shared with the host rather than
/// copied into the output buffer.
const SHARE_ABOVE: u64 = 16 * 1024;

/// A cache lookup's result.
enum Lookup {
    /// The entry and, when the lookup had to open the file, the open file.
    Entry(Arc<Entry>, Option<File>),
    /// A directory named without its trailing slash.
    Redirect,
}

/// Answers a GET or HEAD request for a file under the root.
pub fn serve(http: &Http, req: &Request<'_, '_>, reply: Reply, out: &mut RVec<u8>) -> Sent {
    let bad = |out: &mut RVec<u8>| {
        let reply = Reply {
            keep_alive: false,
            ..reply
        };
        Sent::new(400, reply.error(out, 400, b""), &reply)
    };
    let Some((raw_path, query)) = path::target_path(req.target) else {
        return bad(out);
    };
    let Ok(key) = path::normalize(raw_path) else {
        return bad(out);
    };
    // A file that changes between lookup and open is looked up again once.
    for _ in 0..2 {
        let (entry, file) = match lookup(http, &key) {
            Ok(Lookup::Entry(entry, file)) => (entry, file),
            Ok(Lookup::Redirect) => return redirect(&key, query, reply, out),
            Err(missing) => return not_served(missing, &key, reply, out),
        };
        if let Some(sent) = respond(req, &entry, file, reply, out) {
            return sent;
        }
        http.cache.remove_if(&key, &entry);
    }
    let sent = Sent::new(503, reply.error(out, 503, b"Retry-After: 1\r\n"), &reply);
    log::warn!(
        "{}: file keeps changing while served",
        String::from_utf8_lossy(&key)
    );
    sent
}

/// Writes the response for `entry`, or returns `None` without writing
/// anything when the file on disk no longer matches the entry.
fn respond(
    req: &Request<'_, '_>,
    entry: &Arc<Entry>,
    file: Option<File>,
    reply: Reply,
    out: &mut RVec<u8>,
) -> Option<Sent> {
    let validators = Validators {
        etag: entry.etag(),
        mtime: entry.stamp.mtime_secs(),
    };
    let conditions = Conditions {
        if_match: req.header("if-match"),
        if_none_match: req.header("if-none-match"),
        if_modified_since: req.header("if-modified-since"),
        if_unmodified_since: req.header("if-unmodified-since"),
    };
    if conditions.any() {
        match conditions.evaluate(&validators) {
            conditional::Verdict::Proceed => {}
            conditional::Verdict::NotModified => {
                reply.start(out, 304);
                out.extend_from_copy_slice(entry.validator_lines());
                out.extend_from_copy_slice(b"\r\n");
                return Some(Sent::new(304, 0, &reply));
            }
            conditional::Verdict::PreconditionFailed => {
                return Some(Sent::new(412, reply.error(out, 412, b""), &reply));
            }
        }
    }

    let len = entry.stamp.len;
    // Ranges are defined for GET only.
    let range = match req.header("range") {
        Some(r) if !reply.head_only => {
            let current = match req.header("if-range") {
                Some(v) => conditional::if_range_holds(v, &validators),
                None => true,
            };
            if current {
                range::evaluate(r, len)
            } else {
                range::Outcome::Full
            }
        }
        _ => range::Outcome::Full,
    };
    let (status, start, count) = match range {
        range::Outcome::Full => (200, 0, len),
        range::Outcome::Partial { start, end } => (206, start, end - start + 1),
        range::Outcome::Unsatisfiable => {
            let content_range = format!("Content-Range: bytes */{len}\r\n");
            let bytes = reply.error(out, 416, content_range.as_bytes());
            return Some(Sent::new(416, bytes, &reply));
        }
    };

    // A body not held in memory is sent from the file; open (or reuse) it
    // and make sure it is still the file the entry describes.
    let send_file = !reply.head_only && count > 0 && entry.body.is_none();
    let file = match file {
        Some(f) if send_file => Some(f),
        None if send_file => Some(open_current(entry)?),
        _ => None,
    };

    reply.start(out, status);
    out.extend_from_copy_slice(&entry.head);
    if status == 206 {
        out.extend_from_copy_slice(b"Content-Range: bytes ");
        http::push_u64(out, start);
        out.push(b'-');
        http::push_u64(out, start + count - 1);
        out.push(b'/');
        http::push_u64(out, len);
        out.extend_from_copy_slice(b"\r\n");
    }
    http::end_head(out, count);
    let mut sent = Sent::new(status, 0, &reply);
    if reply.head_only {
        return Some(sent);
    }
    sent.bytes = count;
    if let Some(body) = &entry.body {
        // `start + count <= len == body.len()`: both come from the entry.
        let range = start as usize..(start + count) as usize;
        let open = entry.open.as_ref().filter(|_| count >= SHARE_ABOVE);
        if let Some(open) = open {
            // Large bodies: the kernel sends them from the page cache.
            sent.file = FileBody::from_arc(Arc::clone(open), start, count);
        } else if count >= SHARE_ABOVE {
            // Large bodies go out straight from the cache, with no copy.
            sent.body = SharedBody::from_arc(entry.clone(), range);
        } else {
            out.extend_from_copy_slice(&body[range]);
        }
    } else if let Some(file) = file {
        sent.file = FileBody::owned(file, start, count);
    }
    Some(sent)
}

/// The cached entry for `key`, re-checked against the disk when due, or
/// a fresh one.
fn lookup(http: &Http, key: &[u8]) -> Result<Lookup, Missing> {
    let cfg = &http.cfg;
    if let Some(entry) = http.cache.get(key) {
        if cfg.revalidate_ms != 0 && !entry.due(cfg.revalidate_ms) {
            return Ok(Lookup::Entry(entry, None));
        }
        let found = path::locate(&cfg.root, key, &cfg.index);
        if let Ok(Found::File { path, meta }) = &found {
            if *path == entry.file && Stamp::of(meta) == entry.stamp {
                return Ok(Lookup::Entry(entry, None));
            }
        }
        http.cache.remove_if(key, &entry);
        return load(http, key, found?);
    }
    load(http, key, path::locate(&cfg.root, key, &cfg.index)?)
}

/// Builds the entry for a located file, reading it into memory when small,
/// and caches it.
fn load(http: &Http, key: &[u8], found: Found) -> Result<Lookup, Missing> {
    let path = match found {
        Found::Redirect => return Ok(Lookup::Redirect),
        Found::File { path, .. } => path,
    };
    let file = open(&path).map_err(path::missing)?;
    let meta = file.metadata().map_err(path::missing)?;
    if !meta.is_file() {
        return Err(Missing::NotFound);
    }
    let stamp = Stamp::of(&meta);
    if stamp.len > http.cfg.cache_max_file {
        let entry = Arc::new(Entry::new(path, stamp, None));
        http.cache.insert(key, Arc::clone(&entry));
        return Ok(Lookup::Entry(entry, Some(file)));
    }
    let mut body = Vec::with_capacity(stamp.len as usize);
    (&file)
        .take(stamp.len + 1)
        .read_to_end(&mut body)
        .map_err(path::missing)?;
    if body.len() as u64 == stamp.len {
        let mut entry = Entry::new(path, stamp, Some(body.into()));
        if stamp.len >= SHARE_ABOVE {
            entry.open = Some(Arc::new(file));
        }
        let entry = Arc::new(entry);
        http.cache.insert(key, Arc::clone(&entry));
        Ok(Lookup::Entry(entry, None))
    } else {
        // Written to while we read it: serve what we read, cache nothing.
        let stamp = Stamp {
            len: body.len() as u64,
            ..stamp
        };
        let entry = Entry::new(path, stamp, Some(body.into()));
        Ok(Lookup::Entry(Arc::new(entry), None))
    }
}

/// Opens a file for reading without ever blocking on a FIFO or device
/// swapped in behind our back.
fn open(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Opens the entry's file if it is still the file the entry describes.
fn open_current(entry: &Entry) -> Option<File> {
    let file = open(&entry.file).ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && Stamp::of(&meta) == entry.stamp).then_some(file)
}

/// 301 to the directory's canonical form, `key/`.
fn redirect(key: &[u8], query: Option<&str>, reply: Reply, out: &mut RVec<u8>) -> Sent {
    let mut extra = Vec::with_capacity(key.len() + 16);
    extra.extend_from_slice(b"Location: ");
    path::encode(key, &mut extra);
    extra.push(b'/');
    if let Some(q) = query {
        extra.push(b'?');
        extra.extend_from_slice(q.as_bytes());
    }
    extra.extend_from_slice(b"\r\n");
    Sent::new(301, reply.error(out, 301, &extra), &reply)
}

fn not_served(missing: Missing, key: &[u8], reply: Reply, out: &mut RVec<u8>) -> Sent {
    let status = match missing {
        Missing::NotFound => 404,
        Missing::Forbidden => 403,
        Missing::Error(e) => {
            log::error!("{}: {e}", String::from_utf8_lossy(key));
            500
        }
    };
    Sent::new(status, reply.error(out, status, b""), &reply)
}
