//! JSON-lines framing with a maximum line length.
//!
//! Bytes go in with [`LineDecoder::push`]; whole lines come out of [`LineDecoder::next_line`].
//! A line longer than the limit is an error as soon as the limit is passed, so a peer can
//! never make us buffer more than `max_line + one read`. The buffer grows only as data
//! arrives (never past `max_line + one read`, however the allocator would round a doubling),
//! and a large buffer is given back once it holds nothing, so an idle connection that once
//! carried a large line keeps only a small one. [`LineDecoder::grown_capacity`] tells the
//! IO layer what a read would allocate before it does, so it can charge a memory budget.

use crate::defaults::{KEPT_IDLE_LINE_BUFFER, LINE_BUFFER_COMPACT_AFTER};

/// A line over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max} bytes")]
pub struct LineTooLong {
    /// The limit that was passed.
    pub max: usize,
}

/// Splits a byte stream into `\n`-terminated lines.
#[derive(Debug)]
pub struct LineDecoder {
    /// `buf[..filled]` holds received bytes; the rest is room to read into.
    buf: Vec<u8>,
    filled: usize,
    /// Start of the unread part of `buf`.
    start: usize,
    /// Bytes after `start` already scanned for `\n` without finding one.
    scanned: usize,
    max: usize,
}

impl LineDecoder {
    /// A decoder refusing lines longer than `max` bytes (without the `\n`).
    pub fn new(max: usize) -> Self {
        LineDecoder {
            buf: Vec::new(),
            filled: 0,
            start: 0,
            scanned: 0,
            max,
        }
    }

    /// Drops consumed bytes from the front when that is cheap or worth it; gives back a
    /// large buffer that holds nothing.
    fn compact(&mut self) {
        if self.start > 0 && self.start == self.filled {
            self.filled = 0;
            self.start = 0;
        }
        if self.filled == 0 && self.buf.capacity() > KEPT_IDLE_LINE_BUFFER {
            self.buf = Vec::new();
        } else if self.start > LINE_BUFFER_COMPACT_AFTER && self.start * 2 > self.filled {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        let room = self.read_buf(data.len());
        room[..data.len()].copy_from_slice(data);
        self.commit(data.len());
    }

    /// Room for at least `min` more bytes, to read into directly (then [`commit`] what was
    /// read): the bytes are not copied from a read buffer, and the room is kept for the
    /// next read.
    ///
    /// [`commit`]: LineDecoder::commit
    pub fn read_buf(&mut self, min: usize) -> &mut [u8] {
        self.compact();
        let want = self.grown_capacity(min);
        if self.buf.len() < want {
            // Exactly `want`: `resize` alone may double the allocation.
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// The buffer size [`LineDecoder::read_buf`]`(min)` would leave (at least the current
    /// one): doubling while far below the line limit, so a growing line is copied a few
    /// times only, but never past what the limit and one read can need.
    pub fn grown_capacity(&self, min: usize) -> usize {
        let (start, filled, len) = if self.start == self.filled {
            // `compact` empties the buffer first, and frees it if it is large.
            let len = if self.buf.capacity() > KEPT_IDLE_LINE_BUFFER {
                0
            } else {
                self.buf.len()
            };
            (0, 0, len)
        } else {
            (self.start, self.filled, self.buf.len())
        };
        let need = filled + min;
        if len >= need {
            return len;
        }
        // Unread bytes past `max + 1` are an error, so nothing beyond is ever needed.
        let ceiling = (start + self.max + 1 + min).max(need);
        need.max(len * 2).min(ceiling)
    }

    /// Bytes allocated for the buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Takes `n` bytes read into [`LineDecoder::read_buf`].
    pub fn commit(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buf.len());
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.filled - self.start
    }

    /// The next complete line without its `\n` (and without a trailing `\r`); blank lines
    /// are skipped. `Ok(None)` means more bytes are needed.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, LineTooLong> {
        loop {
            let unread = &self.buf[self.start..self.filled];
            match memchr(b'\n', &unread[self.scanned..]) {
                Some(pos) => {
                    let end = self.scanned + pos;
                    if end > self.max {
                        return Err(LineTooLong { max: self.max });
                    }
                    let line_start = self.start;
                    self.start += end + 1;
                    self.scanned = 0;
                    let mut line = &self.buf[line_start..line_start + end];
                    if let [rest @ .., b'\r'] = line {
                        line = rest;
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(line));
                }
                None => {
                    self.scanned = unread.len();
                    if self.scanned > self.max {
                        return Err(LineTooLong { max: self.max });
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// SIMD newline search: a byte-by-byte scan was 6.7 % of the CPU of 64 KiB transfers
/// (docs/PERFORMANCE.md).
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_pushes() {
        let mut d = LineDecoder::new(100);
        d.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(d.next_line().unwrap(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(d.next_line().unwrap(), None);
        d.push(b":2}\r\n\n\n");
        assert_eq!(d.next_line().unwrap(), Some(&b"{\"b\":2}"[..]));
        assert_eq!(d.next_line().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn reads_in_place_like_push() {
        let input = b"{\"a\":1}\n\n{\"bb\":22}\r\n{\"c\"".repeat(5000);
        for chunk in [1usize, 7, 64, 4096, 70_000] {
            let (mut pushed, mut read) = (LineDecoder::new(100), LineDecoder::new(100));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for part in input.chunks(chunk) {
                pushed.push(part);
                let room = read.read_buf(part.len());
                room[..part.len()].copy_from_slice(part);
                read.commit(part.len());
                while let Some(l) = pushed.next_line().unwrap() {
                    a.push(l.to_vec());
                }
                while let Some(l) = read.next_line().unwrap() {
                    b.push(l.to_vec());
                }
                assert_eq!(pushed.buffered(), read.buffered());
            }
            assert_eq!(a, b);
            assert_eq!(a.len(), 10_000);
        }
        // Committing more than the room takes only the room.
        let mut d = LineDecoder::new(100);
        let room = d.read_buf(4).len();
        d.commit(room + 10);
        assert_eq!(d.buffered(), room);
    }

    /// Issue 13 #6: a 1.04 MB unfinished line trickled in held ~2 MiB (the buffer doubled
    /// past the limit); now it never holds more than the limit plus one read, and gives the
    /// memory back once the line is done.
    #[test]
    fn buffer_grows_with_the_data_and_never_doubles_past_the_limit() {
        const MAX: usize = 1024 * 1024;
        const READ: usize = 64 * 1024;
        let mut d = LineDecoder::new(MAX);
        assert_eq!(d.capacity(), 0);
        let mut sent = 0;
        while sent < 1_040_000 {
            let chunk = 1000.min(1_040_000 - sent);
            let predicted = d.grown_capacity(READ);
            let room = d.read_buf(READ);
            room[..chunk].fill(b'x');
            d.commit(chunk);
            assert_eq!(d.capacity(), predicted);
            sent += chunk;
            assert_eq!(d.next_line(), Ok(None));
            assert!(d.capacity() <= MAX + 1 + READ, "{}", d.capacity());
            // Grows with the data: never more than twice what arrived and one read.
            assert!(
                d.capacity() <= 2 * (sent + READ),
                "{} for {sent}",
                d.capacity()
            );
        }
        d.push(b"\n");
        assert_eq!(d.next_line().unwrap().map(<[u8]>::len), Some(1_040_000));
        assert_eq!(d.next_line(), Ok(None));
        // Nothing buffered: the next read starts from a small buffer again.
        d.read_buf(READ);
        assert!(d.capacity() <= READ * 2, "{}", d.capacity());
    }

    #[test]
    fn refuses_long_lines_early() {
        let mut d = LineDecoder::new(8);
        d.push(b"0123456789");
        assert_eq!(d.next_line(), Err(LineTooLong { max: 8 }));
        let mut d = LineDecoder::new(8);
        d.push(b"012345678\n");
        assert_eq!(d.next_line(), Err(LineTooLong { max: 8 }));
        let mut d = LineDecoder::new(8);
        d.push(b"01234567\n");
        assert_eq!(d.next_line().unwrap(), Some(&b"01234567"[..]));
    }
}
