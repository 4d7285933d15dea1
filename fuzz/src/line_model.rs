//! The line framing of `m2m_proto::codec` written the obvious way, to compare against.

use m2m_proto::codec::LineTooLong;

/// Buffers everything and splits on `\n`.
#[derive(Debug)]
pub struct LineModel {
    pending: Vec<u8>,
    max: usize,
}

impl LineModel {
    /// A model refusing lines longer than `max` bytes (without the `\n`).
    pub fn new(max: usize) -> Self {
        LineModel {
            pending: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// Bytes not yet returned.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// The next non-blank line without `\n` and one trailing `\r`; `Ok(None)` when no whole
    /// line is buffered; an error once a line (or the unterminated rest) passes `max`.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        loop {
            let Some(pos) = self.pending.iter().position(|&b| b == b'\n') else {
                if self.pending.len() > self.max {
                    return Err(LineTooLong { max: self.max });
                }
                return Ok(None);
            };
            if pos > self.max {
                return Err(LineTooLong { max: self.max });
            }
            let mut line: Vec<u8> = self.pending.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(line));
        }
    }
}
