//! From a request target to a file under the root, safely.
//!
//! Two steps. [`normalize`] is pure: it percent-decodes the path, drops
//! empty and `.` segments and refuses `..`, NUL and anything that is not an
//! absolute path, yielding the *key* (`/a/b.txt`, `/dir/`) that also names
//! the cache entry. [`locate`] touches the file system: it joins the key
//! under the canonical root, canonicalizes the result (resolving symlinks)
//! and refuses anything that lands outside the root, then applies the
//! directory rules (redirect to `dir/`, serve the index file).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use module_api::http::percent_decode;

/// A request path that must not be served: answer 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPath;

/// The path part of a request target: origin form (`/a?q`) as is,
/// absolute form (`http://host/a?q`) without scheme and authority. `None`
/// for anything else (`*`, authority form).
pub fn target_path(target: &str) -> Option<(&str, Option<&str>)> {
    let rest = if target.starts_with('/') {
        target
    } else {
        let scheme_end = target.find("://")?;
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let after = &target[scheme_end + 3..];
        match after.find(['/', '?']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            Some(i) => return Some(("/", Some(&after[i + 1..]))),
            None => "/",
        }
    };
    Some(match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    })
}

/// Decodes and normalizes a request path into a key: it starts with `/`,
/// has no empty, `.` or `..` segments, and ends with `/` when the request
/// named a directory. Borrows when the path is already in that form.
pub fn normalize(raw: &str) -> Result<Cow<'_, [u8]>, BadPath> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(BadPath);
    }
    if is_normal(b) {
        return Ok(Cow::Borrowed(b));
    }
    let decoded = percent_decode(raw).ok_or(BadPath)?;
    if decoded.contains(&0) {
        return Err(BadPath);
    }
    let mut key = Vec::with_capacity(decoded.len());
    let mut dir = false;
    for seg in decoded.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => dir = true,
            b".." => return Err(BadPath),
            s => {
                key.push(b'/');
                key.extend_from_slice(s);
                dir = false;
            }
        }
    }
    if key.is_empty() || dir {
        key.push(b'/');
    }
    Ok(Cow::Owned(key))
}

/// Whether `b` (starting with `/`) is already a key: no escapes, no NUL,
/// no empty (except a trailing one), `.` or `..` segment.
fn is_normal(b: &[u8]) -> bool {
    if b.iter().any(|&c| c == b'%' || c == 0) {
        return false;
    }
    let inner = &b[1..];
    let mut segs = inner.split(|&c| c == b'/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg == b"." || seg == b".." || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Percent-encodes a key for a `Location` header.
pub fn encode(key: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in key {
        let safe = c.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&c);
        if safe {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        }
    }
}

/// Where a key leads.
#[derive(Debug)]
pub enum Found {
    /// A regular file: its canonical path and metadata.
    File { path: PathBuf, meta: Metadata },
    /// A directory named without the trailing slash: redirect to `key/`.
    Redirect,
}

/// Why a key leads nowhere.
#[derive(Debug)]
pub enum Missing {
    /// 404: absent, outside the root, not a regular file, no index.
    NotFound,
    /// 403: the file system refused access.
    Forbidden,
    /// 500: the server is out of a resource (descriptors, memory) or the
    /// disk failed; worth logging.
    Error(io::Error),
}

/// Finds the file a key names under `root` (which must be canonical).
/// A directory key (`/dir/`) serves `index` inside it.
pub fn locate(root: &Path, key: &[u8], index: &str) -> Result<Found, Missing> {
    let wants_dir = key.ends_with(b"/");
    let rel = key.strip_prefix(b"/").ok_or(Missing::NotFound)?;
    let rel = rel.strip_suffix(b"/").unwrap_or(rel);
    if rel.starts_with(b"/") {
        // Never join an absolute path: it would replace the root.
        return Err(Missing::NotFound);
    }
    let (path, meta) = inside(root, &root.join(OsStr::from_bytes(rel)))?;
    if meta.is_file() {
        return if wants_dir {
            Err(Missing::NotFound)
        } else {
            Ok(Found::File { path, meta })
        };
    }
    if !meta.is_dir() {
        return Err(Missing::NotFound);
    }
    if !wants_dir {
        return Ok(Found::Redirect);
    }
    let (path, meta) = inside(root, &path.join(index))?;
    if meta.is_file() {
        Ok(Found::File { path, meta })
    } else {
        Err(Missing::NotFound)
    }
}

/// Canonicalizes `path` and stats it, refusing anything outside `root`.
fn inside(root: &Path, path: &Path) -> Result<(PathBuf, Metadata), Missing> {
    let canonical = fs::canonicalize(path).map_err(missing)?;
    if !canonical.starts_with(root) {
        return Err(Missing::NotFound);
    }
    let meta = fs::metadata(&canonical).map_err(missing)?;
    Ok((canonical, meta))
}

/// Classifies a file-system error for the response.
pub fn missing(e: io::Error) -> Missing {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EIO) => Missing::Error(e),
        _ if e.kind() == io::ErrorKind::PermissionDenied => Missing::Forbidden,
        _ => Missing::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    fn norm(s: &str) -> Result<String, BadPath> {
        normalize(s).map(|k| String::from_utf8(k.into_owned()).unwrap())
    }

    #[test]
    fn normal_paths_borrow() {
        for p in ["/", "/a", "/a/b.txt", "/dir/", "/.well-known/x", "/a..b"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn normalizes() {
        assert_eq!(norm("//etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(norm("/a/./b").unwrap(), "/a/b");
        assert_eq!(norm("/a//b/").unwrap(), "/a/b/");
        assert_eq!(norm("/a/.").unwrap(), "/a/");
        assert_eq!(norm("/%61%20b").unwrap(), "/a b");
        assert_eq!(norm("/dir%2F").unwrap(), "/dir/");
        assert_eq!(norm("/./").unwrap(), "/");
    }

    #[test]
    fn refuses_escapes() {
        for p in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/a/%2e%2e",
            "/a%00b",
            "/%zz",
            "etc/passwd",
            "",
        ] {
            assert_eq!(norm(p), Err(BadPath), "{p}");
        }
    }

    #[test]
    fn target_forms() {
        assert_eq!(target_path("/a?x=1"), Some(("/a", Some("x=1"))));
        assert_eq!(target_path("/a"), Some(("/a", None)));
        assert_eq!(target_path("http://h:1/b/c?q"), Some(("/b/c", Some("q"))));
        assert_eq!(target_path("HTTPS://h"), Some(("/", None)));
        assert_eq!(target_path("http://h?q"), Some(("/", Some("q"))));
        assert_eq!(target_path("*"), None);
        assert_eq!(target_path("h:443"), None);
        assert_eq!(target_path("ftp://h/x"), None);
    }

    #[test]
    fn encodes_locations() {
        let mut out = Vec::new();
        encode(b"/a b/%?#\xff/", &mut out);
        assert_eq!(out, b"/a%20b/%25%3F%23%FF/");
    }

    fn site() -> (TempDir, PathBuf) {
        let dir = TempDir::new();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub/empty")).unwrap();
        fs::write(root.join("index.html"), "home").unwrap();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(root.join("sub/index.html"), "sub").unwrap();
        fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("alias")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("secret.txt"),
            root.join("sub/empty/index.html"),
        )
        .unwrap();
        let root = fs::canonicalize(root).unwrap();
        (dir, root)
    }

    fn file(root: &Path, key: &str) -> Option<PathBuf> {
        match locate(root, key.as_bytes(), "index.html") {
            Ok(Found::File { path, .. }) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn locates_files_and_indexes() {
        let (_dir, root) = site();
        assert_eq!(file(&root, "/a.txt"), Some(root.join("a.txt")));
        assert_eq!(file(&root, "/"), Some(root.join("index.html")));
        assert_eq!(file(&root, "/sub/"), Some(root.join("sub/index.html")));
        assert_eq!(file(&root, "/alias"), Some(root.join("a.txt")));
        assert!(matches!(
            locate(&root, b"/sub", "index.html"),
            Ok(Found::Redirect)
        ));
        assert!(matches!(
            locate(&root, b"/a.txt/", "index.html"),
            Err(Missing::NotFound)
        ));
        assert!(matches!(
            locate(&root, b"/nope", "index.html"),
            Err(Missing::NotFound)
        ));
    }

    #[test]
    fn symlinks_out_of_the_root_are_not_found() {
        let (_dir, root) = site();
        assert!(file(&root, "/leak").is_none());
        assert!(file(&root, "/etc/passwd").is_none());
        assert!(file(&root, "/sub/empty/").is_none());
        // `//etc/passwd` normalizes to a path under the root.
        let key = normalize("//etc/passwd").unwrap();
        assert!(file(&root, std::str::from_utf8(&key).unwrap()).is_none());
    }
}
