//! The write half the engine writes to, whichever task has the bytes.
//!
//! The engine writes without a writer task in the common case (see [`super::out`]): it needs
//! a write that returns at once when the stream is full ([`WriteHalf::try_write`]) and a way
//! to wait until it takes more ([`WriteHalf::writable`]), both through a shared reference.
//! TCP has both natively. [`Piped`] gives them to any [`AsyncWrite`] (an in-memory
//! [`tokio::io::duplex`] in tests, a relayed stream later) behind a lock.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::io::AsyncWrite;

/// The write half of a connection's byte stream.
pub(crate) trait WriteHalf: Send + Sync + 'static {
    /// Writes what the stream takes now; [`io::ErrorKind::WouldBlock`] when it takes nothing.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;

    /// Resolves once the stream may take more (or has failed).
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl WriteHalf for tokio::net::tcp::OwnedWriteHalf {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        tokio::net::tcp::OwnedWriteHalf::try_write(self, buf)
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        tokio::net::tcp::OwnedWriteHalf::writable(self)
    }
}

/// Any [`AsyncWrite`] as a [`WriteHalf`]. Its `poll_write` of an empty buffer must wait
/// while the stream is full, as [`tokio::io::DuplexStream`]'s does: that is how
/// [`WriteHalf::writable`] waits.
// Only tests run connections on it.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Piped<W>(Mutex<W>);

#[cfg_attr(not(test), allow(dead_code))]
impl<W> Piped<W> {
    pub(crate) fn new(stream: W) -> Self {
        Piped(Mutex::new(stream))
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> WriteHalf for Piped<W> {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self.0.lock()).poll_write(&mut cx, buf) {
            Poll::Ready(written) => written,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        poll_fn(|cx| {
            Pin::new(&mut *self.0.lock())
                .poll_write(cx, &[])
                .map_ok(|_| ())
        })
    }
}
