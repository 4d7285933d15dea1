//! JSON-lines framing with a maximum line length.
//!
//! Bytes go in with [`LineDecoder::push`]; whole lines come out of [`LineDecoder::next_line`].
//! A line longer than the limit is an error as soon as the limit is passed, so a peer can
//! never make us buffer more than `max_line + one read`.

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

    /// Drops consumed bytes from the front when that is cheap or worth it.
    fn compact(&mut self) {
        if self.start > 0 && self.start == self.filled {
            self.filled = 0;
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.filled {
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
        let need = self.filled + min;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        &mut self.buf[self.filled..]
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
