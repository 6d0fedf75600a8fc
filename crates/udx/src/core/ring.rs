//! A bounded byte ring: the send buffer (unacked + unsent bytes) and the receive buffer
//! (in-order bytes the application has not read yet). Storage grows by doubling (from 64 KiB)
//! as needed, never beyond the configured capacity; writes beyond it are refused. An idle
//! stream that never moved much data keeps a small buffer.

/// A byte FIFO with a fixed capacity.
#[derive(Debug, Default)]
pub(crate) struct ByteRing {
    /// Storage, grown on demand up to `cap`.
    buf: Vec<u8>,
    /// The configured capacity.
    cap: usize,
    /// Index of the first byte.
    head: usize,
    /// Bytes stored.
    len: usize,
}

impl ByteRing {
    pub(crate) fn new(cap: usize) -> Self {
        ByteRing {
            buf: Vec::new(),
            cap,
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn free(&self) -> usize {
        self.cap - self.len
    }

    /// Appends as much of `data` as fits; returns how much.
    pub(crate) fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        if n == 0 {
            return 0;
        }
        if self.len + n > self.buf.len() {
            self.grow(self.len + n);
        }
        let size = self.buf.len();
        let tail = (self.head + self.len) % size;
        let first = n.min(size - tail);
        self.buf[tail..tail + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }

    fn grow(&mut self, need: usize) {
        // Start small (an idle connection holds little) and double as data flows.
        let mut size = self.buf.len().max(4 * 1024);
        while size < need {
            size *= 2;
        }
        let size = size.min(self.cap);
        let mut next = vec![0u8; size];
        self.copy_at(0, &mut next[..self.len]);
        self.buf = next;
        self.head = 0;
    }

    /// Copies bytes starting `at` bytes after the head into `out` (fully); `at + out.len()`
    /// must not exceed the length.
    pub(crate) fn copy_at(&self, at: usize, out: &mut [u8]) {
        debug_assert!(at + out.len() <= self.len);
        if out.is_empty() {
            return;
        }
        let size = self.buf.len();
        let start = (self.head + at) % size;
        let first = out.len().min(size - start);
        let (a, b) = out.split_at_mut(first);
        a.copy_from_slice(&self.buf[start..start + first]);
        b.copy_from_slice(&self.buf[..b.len()]);
    }

    /// Drops `n` bytes from the front.
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.buf.len()
        };
    }

    /// Moves up to `out.len()` bytes from the front into `out`.
    pub(crate) fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        self.copy_at(0, &mut out[..n]);
        self.consume(n);
        n
    }

    /// Bytes of storage held (grown on demand, released by [`ByteRing::shrink_if_empty`]).
    pub(crate) fn storage(&self) -> usize {
        self.buf.len()
    }

    /// Releases the storage when empty.
    pub(crate) fn shrink_if_empty(&mut self) {
        if self.len == 0 {
            self.buf = Vec::new();
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_bounds() {
        let mut r = ByteRing::new(8);
        assert_eq!(r.push(b"abcdef"), 6);
        let mut o = [0u8; 4];
        assert_eq!(r.pop_into(&mut o), 4);
        assert_eq!(&o, b"abcd");
        assert_eq!(r.push(b"ghijklmn"), 6); // only 6 free
        assert_eq!(r.len(), 8);
        let mut all = [0u8; 8];
        r.copy_at(0, &mut all);
        assert_eq!(&all, b"efghijkl");
        let mut mid = [0u8; 3];
        r.copy_at(4, &mut mid);
        assert_eq!(&mid, b"ijk");
        r.consume(8);
        assert!(r.is_empty());
        r.shrink_if_empty();
        assert_eq!(r.push(b"xy"), 2);
        assert_eq!(r.free(), 6);
    }

    #[test]
    fn grows_keeping_order() {
        let mut r = ByteRing::new(1 << 20);
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        assert_eq!(r.push(&data[..50_000]), 50_000);
        let mut o = vec![0u8; 30_000];
        r.pop_into(&mut o);
        assert_eq!(o[..], data[..30_000]);
        assert_eq!(r.push(&data[50_000..]), 150_000); // wraps, then grows
        let mut all = vec![0u8; r.len()];
        r.copy_at(0, &mut all);
        assert_eq!(all[..], data[30_000..]);
        assert!(r.buf.len() <= 1 << 20);
    }
}
