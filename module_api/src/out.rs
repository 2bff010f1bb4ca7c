//! [`Out`], the buffer a handler writes its reply into.
//!
//! The host owns the buffer (an `RVec<u8>`, the type the stable ABI passes)
//! and sends whatever a call appended to it. `RVec::extend_from_slice`
//! clones element by element, which shows on large replies; `Out` is the
//! same buffer seen through a wrapper whose byte-appending methods
//! (`extend_from_slice`, [`Out::put`], `io::Write`, `fmt::Write`) copy
//! with `memcpy`. Everything else an `RVec<u8>` offers is reached through
//! `Deref`, so helpers that take `&mut RVec<u8>` accept `&mut Out` as is.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};

use abi_stable::std_types::RVec;

/// The reply buffer handed to [`crate::Handler`] methods: append bytes, and
/// the host sends them after the call returns.
///
/// `#[repr(transparent)]` over `RVec<u8>`, so the host's buffer is viewed
/// in place ([`Out::from_mut`]) and never copied.
#[repr(transparent)]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Out(RVec<u8>);

impl Out {
    /// An empty buffer (for tests and for building a reply aside).
    pub fn new() -> Out {
        Out(RVec::new())
    }

    /// Views the host's buffer as an `Out`, in place.
    pub fn from_mut(buf: &mut RVec<u8>) -> &mut Out {
        let ptr: *mut RVec<u8> = buf;
        // SAFETY: `Out` is `#[repr(transparent)]` over `RVec<u8>`, so both
        // have the same layout and validity; the returned borrow has the
        // lifetime of `buf` and is the only way to reach it meanwhile.
        unsafe { &mut *ptr.cast::<Out>() }
    }

    /// Appends `bytes` with one `memcpy` (shadows `RVec`'s per-element
    /// clone).
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0.extend_from_copy_slice(bytes);
    }

    /// Appends `bytes` (anything that is a byte slice: `&str`, `String`,
    /// `Vec<u8>`, arrays) and returns the buffer, so appends chain:
    /// `out.put("HTTP/1.1 ").put(status)`.
    #[inline]
    pub fn put(&mut self, bytes: impl AsRef<[u8]>) -> &mut Out {
        self.0.extend_from_copy_slice(bytes.as_ref());
        self
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> RVec<u8> {
        self.0
    }
}

impl From<RVec<u8>> for Out {
    fn from(buf: RVec<u8>) -> Out {
        Out(buf)
    }
}

impl Deref for Out {
    type Target = RVec<u8>;

    fn deref(&self) -> &RVec<u8> {
        &self.0
    }
}

impl DerefMut for Out {
    fn deref_mut(&mut self) -> &mut RVec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for Out {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl io::Write for Out {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_copy_slice(buf);
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.extend_from_copy_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Write for Out {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_copy_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_through_every_door() {
        let mut buf = RVec::new();
        buf.extend_from_copy_slice(b"a");
        let out = Out::from_mut(&mut buf);
        out.extend_from_slice(b"b");
        out.put("c").put(vec![b'd']);
        io::Write::write_all(out, b"e").unwrap();
        fmt::Write::write_fmt(out, format_args!("{}", 7)).unwrap();
        // Deref reaches the rest of RVec.
        out.push(b'!');
        assert_eq!(out.len(), 7);
        assert_eq!(buf.as_slice(), b"abcde7!");
    }

    #[test]
    fn truncate_and_into_inner() {
        let mut out = Out::new();
        out.put("hello");
        out.truncate(2);
        assert_eq!(out.as_bytes(), b"he");
        assert_eq!(out.into_inner().as_slice(), b"he");
    }
}
