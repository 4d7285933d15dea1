//! A WebSocket's stream, charged to the memory budget for the unfinished message it is
//! receiving. tungstenite buffers a message until it is complete (up to
//! `hard_max_message_bytes`); without this, 9,000 connections each holding an unfinished
//! 256 KiB frame took 3.1 GB in 4 s. Every byte read since the last complete message
//! beyond [`limits::FREE_FRAME_BYTES`] is charged; when the budget cannot cover a read,
//! the read fails, [`Metered::starved`] says why, and the session closes with 1013.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::budget::Charge;
use crate::limits;

/// A stream whose unread-message bytes are charged.
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    charge: Charge,
    pending: usize,
    starved: bool,
}

impl<S> Metered<S> {
    /// Wraps `inner`, charging unfinished messages to `charge` (empty at first).
    pub(crate) fn new(inner: S, charge: Charge) -> Self {
        Metered {
            inner,
            charge,
            pending: 0,
            starved: false,
        }
    }

    /// A message was completed: what was read for it is no longer held by the reader.
    /// (Bytes of the next message read in the same chunk go uncharged: at most one read.)
    pub(crate) fn message_done(&mut self) {
        if self.pending != 0 {
            self.pending = 0;
            self.charge.resize(0);
        }
    }

    /// Whether a read failed because the memory budget was spent.
    pub(crate) fn starved(&self) -> bool {
        self.starved
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.starved {
            return Poll::Ready(Err(io::Error::other("memory budget spent")));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.pending += buf.filled().len() - before;
        if this.pending > limits::FREE_FRAME_BYTES
            && !this.charge.resize(this.pending - limits::FREE_FRAME_BYTES)
        {
            this.starved = true;
            return Poll::Ready(Err(io::Error::other("memory budget spent")));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn unfinished_messages_are_charged_until_done_and_refused_past_the_budget() {
        let budget = Budget::new(8 * 1024);
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let mut metered = Metered::new(rx, budget.empty());
        let mut buf = vec![0u8; 64 * 1024];
        tx.write_all(&[0u8; 6 * 1024]).await.unwrap();
        let mut got = 0;
        while got < 6 * 1024 {
            got += metered.read(&mut buf).await.unwrap();
        }
        assert_eq!(budget.used_bytes(), 5 * 1024, "6 KiB read, 1 KiB free");
        metered.message_done();
        assert_eq!(budget.used_bytes(), 0);
        tx.write_all(&[0u8; 10 * 1024]).await.unwrap();
        let mut failed = false;
        for _ in 0..32 {
            if metered.read(&mut buf).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(
            failed && metered.starved(),
            "10 KiB needs 9 KiB of an 8 KiB budget"
        );
        drop(metered);
        assert_eq!(
            budget.used_bytes(),
            0,
            "the charge is released with the stream"
        );
    }
}
