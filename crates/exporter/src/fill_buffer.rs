//! A fixed-size buffer that a producer fills in place (`spare`, then `commit`) and that is
//! handed on whole (`take`) when full or at the end: the parallel gzip's blocks and the writer
//! thread's chunks, with no copy between the tar and the consumer.

/// See the module docs.
pub(crate) struct FillBuffer {
    buf: Vec<u8>,
    filled: usize,
    size: usize,
}

impl FillBuffer {
    /// An empty buffer that holds up to `size` bytes (allocated on first use).
    pub(crate) fn new(size: usize) -> FillBuffer {
        FillBuffer {
            buf: Vec::new(),
            filled: 0,
            size,
        }
    }

    /// Room for up to `max` more bytes (at least one when `max > 0`); [`FillBuffer::commit`]
    /// then takes what was put there.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; self.size];
        }
        let end = self.size.min(self.filled.saturating_add(max));
        &mut self.buf[self.filled..end]
    }

    /// Takes the first `n` bytes of the last [`FillBuffer::spare`] as written; whether the
    /// buffer is now full.
    pub(crate) fn commit(&mut self, n: usize) -> bool {
        self.filled += n;
        debug_assert!(self.filled <= self.buf.len());
        self.filled == self.size
    }

    /// What was put in the buffer, which starts empty again; `None` when it is empty.
    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        if self.filled == 0 {
            return None;
        }
        let mut data = std::mem::take(&mut self.buf);
        data.truncate(self.filled);
        self.filled = 0;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_to_its_size_and_hands_on_what_was_committed() {
        let mut b = FillBuffer::new(4);
        assert!(b.take().is_none());
        b.spare(3)[..2].copy_from_slice(b"ab");
        assert!(!b.commit(2));
        assert_eq!(b.spare(10).len(), 2, "never more than the room left");
        b.spare(10).copy_from_slice(b"cd");
        assert!(b.commit(2));
        assert_eq!(b.take().unwrap(), b"abcd");
        b.spare(1)[0] = b'e';
        b.commit(1);
        assert_eq!(b.take().unwrap(), b"e");
        assert!(b.take().is_none());
    }
}
