//! A WebSocket's stream, charged to the memory budget for the unfinished message it is
//! receiving. tungstenite buffers a message until it is complete (up to
//! `hard_max_message_bytes`); without this, 9,000 connections each holding an unfinished
//! 256 KiB frame took 3.1 GB in 4 s. Every byte read since the last complete message
//! beyond [`defaults::FREE_FRAME_BYTES`] is charged; when the budget cannot cover a read,
//! the read fails, [`Metered::starved`] says why, and the session closes with 1013.
//!
//! [`WriteDeadline`] gives every write on a connection a deadline for making progress.
//!
//! [`ChargedBody`] is an HTTP response body charged to the reply share while it waits to
//! be written, as a WebSocket's queued replies are (`crate::outbox`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use bytes::Bytes;

use crate::budget::Charge;
use crate::defaults::{self, HTTP_BODY_CHUNK};

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
        if this.pending > defaults::FREE_FRAME_BYTES
            && !this
                .charge
                .resize(this.pending - defaults::FREE_FRAME_BYTES)
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

/// A whole HTTP response body, handed to hyper [`HTTP_BODY_CHUNK`] bytes at a time and
/// charged for what has not been handed over yet (beyond [`defaults::FREE_REPLY_BYTES`]).
/// hyper asks for the next chunk only once its write buffer has room, so a client that
/// does not read keeps the rest charged until the write timeout closes the connection; the
/// charge goes with the body when it is done or dropped. The size hint stays exact, so the
/// response keeps its `Content-Length` and its bytes.
#[derive(Debug)]
pub(crate) struct ChargedBody {
    rest: Bytes,
    charge: Charge,
}

impl ChargedBody {
    /// `body`, whose charge (already taken) is `charge`.
    pub(crate) fn new(body: Bytes, charge: Charge) -> ChargedBody {
        ChargedBody { rest: body, charge }
    }

    /// The bytes of `len` beyond the allowance: what a body of that size is charged for.
    pub(crate) fn cost(len: usize) -> usize {
        len.saturating_sub(defaults::FREE_REPLY_BYTES)
    }
}

impl hyper::body::Body for ChargedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            this.charge.resize(0);
            return Poll::Ready(None);
        }
        let chunk = this.rest.split_to(this.rest.len().min(HTTP_BODY_CHUNK));
        // Shrinking always succeeds.
        this.charge.resize(ChargedBody::cost(this.rest.len()));
        Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.rest.len() as u64)
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

/// A stream whose writes must make progress within a deadline: an HTTP response (an
/// `/agents?limit=500` page is megabytes) to a client that never reads would otherwise be
/// held as long as the connection stays open — hyper has no write timeout of its own.
#[derive(Debug)]
pub(crate) struct WriteDeadline<S> {
    inner: S,
    limit: std::time::Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner`; a write that stays pending for `limit` fails with `TimedOut`.
    pub(crate) fn new(inner: S, limit: std::time::Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Arms the deadline at the first pending write, disarms it at progress; `Err` once it
    /// passed.
    fn pending(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::ErrorKind::TimedOut.into()),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> WriteDeadline<S> {
    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => match self.pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_deadline() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(client, Duration::from_secs(10));
        // 1 KiB fits the pipe; the next write waits for a reader that never comes.
        w.write_all(&[0u8; 1024]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = w.write_all(&[0u8; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_resets_the_deadline() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(client, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            // A slow but steady reader: 512 bytes every 6 s.
            while total < 4096 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                total += server.read(&mut buf).await.unwrap();
            }
            total
        });
        w.write_all(&[0u8; 4096]).await.unwrap();
        drop(w);
        assert!(reader.await.unwrap() >= 4096);
    }
}
