//! A client socket that sends the fuzz input and then closes, and swallows what the hub
//! writes back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads hand out the input in pieces of fuzzer-chosen sizes (as TCP segments arrive),
/// then end of stream; writes always succeed.
#[derive(Debug)]
pub struct ScriptedIo<'a> {
    input: &'a [u8],
    sizes: &'a [u8],
    read: usize,
    /// After the input: no end of stream, the client just stays (never woken again).
    hold_open: bool,
    /// Bytes the hub wrote.
    pub written: usize,
}

impl<'a> ScriptedIo<'a> {
    /// Reads `input`, in read sizes taken in turn from `sizes` (0 or none: what fits).
    pub fn new(input: &'a [u8], sizes: &'a [u8]) -> Self {
        ScriptedIo {
            input,
            sizes,
            read: 0,
            hold_open: false,
            written: 0,
        }
    }

    /// Like [`ScriptedIo::new`] with all of `input` at once, and a connection that stays
    /// open after it.
    pub fn held_open(input: &'a [u8]) -> Self {
        ScriptedIo {
            hold_open: true,
            ..ScriptedIo::new(input, &[])
        }
    }
}

impl AsyncRead for ScriptedIo<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = match self.sizes.get(self.read % self.sizes.len().max(1)) {
            Some(&s) if s > 0 => usize::from(s),
            _ => usize::MAX,
        };
        if self.input.is_empty() && self.hold_open {
            return Poll::Pending;
        }
        let n = size.min(buf.remaining()).min(self.input.len());
        let (chunk, rest) = self.input.split_at(n);
        buf.put_slice(chunk);
        self.input = rest;
        self.read += 1;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedIo<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
