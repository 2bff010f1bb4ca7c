//! A connection's input buffer: a pooled vector with a consumed offset, so
//! that pipelined messages are consumed without moving bytes each time.

use super::READ_BUF;

/// A growable read buffer with a consumed offset. Empty (no allocation)
/// while detached: an idle connection holds none.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    #[inline]
    pub fn is_attached(&self) -> bool {
        !self.data.is_empty()
    }

    /// Bytes held beyond a pooled buffer's size (grown for a large
    /// message): what `max_buffered_bytes` counts.
    #[inline]
    pub fn grown(&self) -> usize {
        self.data.len().saturating_sub(READ_BUF)
    }

    pub(super) fn attach(&mut self, buf: Vec<u8>) {
        debug_assert!(buf.len() >= READ_BUF);
        self.data = buf;
        self.start = 0;
        self.end = 0;
    }

    /// Gives the buffer back (only when empty).
    pub(super) fn detach(&mut self) -> Option<Vec<u8>> {
        if self.is_attached() && self.is_empty() {
            self.start = 0;
            self.end = 0;
            Some(std::mem::take(&mut self.data))
        } else {
            None
        }
    }

    /// The unconsumed bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Drops the first `n` unconsumed bytes (a finished message).
    #[inline]
    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room to read into; false when the buffer holds `max` bytes.
    pub(super) fn make_room(&mut self, max: usize) -> bool {
        if self.end < self.data.len() {
            return true;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.data.len() >= max {
            return false;
        }
        let new_len = (self.data.len() * 2).min(max);
        self.data.resize(new_len, 0);
        true
    }

    /// The free space after the unconsumed bytes (see [`Self::make_room`]).
    #[inline]
    pub(super) fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }

    /// Records `n` bytes read into [`Self::spare`].
    #[inline]
    pub(super) fn filled(&mut self, n: usize) {
        self.end += n;
        debug_assert!(self.end <= self.data.len());
    }
}
