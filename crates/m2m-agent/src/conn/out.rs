//! Output of a connection, written by whichever task produced the bytes.
//!
//! A task that has frames to send appends them to the connection's [`PendingOutput`] under
//! its lock and, when no other task is waiting on the stream, writes them at once with a
//! non-blocking `try_write` ([`PendingOutput::try_flush`]): a request or a response costs no
//! hand-off to a writer task. Only when the stream's buffer is full does a task have to wait
//! ([`drain`]); meanwhile [`PendingOutput::busy`] is set and other tasks only append, so
//! frames keep their order and are written together once the stream takes more.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::transport::WriteHalf;
use crate::defaults::KEEP_OUTPUT_CAPACITY;

/// A connection's pending output.
#[derive(Debug)]
pub(crate) struct PendingOutput<W> {
    /// Bytes to write: `buf[written..]`.
    pub buf: Vec<u8>,
    written: usize,
    /// A task is waiting for the socket to take `buf` ([`drain`]): others only append.
    pub busy: bool,
    /// `None` once the connection is closed.
    writer: Option<Arc<W>>,
    /// When bytes last went out.
    pub last_write: Instant,
}

/// What [`PendingOutput::try_flush`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything is written.
    Done,
    /// The socket takes no more now; the rest is still in the buffer.
    Blocked,
    /// The connection is closed or failed.
    Closed,
}

impl<W: WriteHalf> PendingOutput<W> {
    pub(crate) fn new(writer: Arc<W>) -> Self {
        PendingOutput {
            buf: Vec::new(),
            written: 0,
            busy: false,
            writer: Some(writer),
            last_write: Instant::now(),
        }
    }

    /// Whether bytes wait to be written.
    pub(crate) fn pending(&self) -> bool {
        self.written < self.buf.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.writer.is_none()
    }

    /// Drops our handle on the socket (the last one shuts its write side down) and what
    /// was not written.
    pub(crate) fn close(&mut self) {
        self.writer = None;
        self.buf = Vec::new();
        self.written = 0;
    }

    /// Writes as much as the socket takes without waiting.
    pub(crate) fn try_flush(&mut self) -> Flush {
        let Some(w) = self.writer.as_ref() else {
            return Flush::Closed;
        };
        let start = self.written;
        let result = loop {
            if self.written == self.buf.len() {
                break Flush::Done;
            }
            match w.try_write(&self.buf[self.written..]) {
                Ok(0) => break Flush::Closed,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Flush::Blocked,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break Flush::Closed,
            }
        };
        if self.written > start {
            self.last_write = Instant::now();
        }
        if result == Flush::Done {
            self.written = 0;
            if self.buf.capacity() > KEEP_OUTPUT_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
        result
    }
}

/// Lets the tasks that are ready run once before the caller writes, so that what they send
/// at once (a response to a message just delivered, the next request after a response)
/// leaves in the same write. Only on a current-thread runtime: there the ready tasks run
/// right here; on a multi-thread runtime a yield wakes another worker thread, which cost
/// more than the write it saves (measured with `m2m-bench p2p`).
pub(crate) async fn let_others_write_first() {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        tokio::task::yield_now().await;
    }
}

/// Before a writer task writes frames left to it: on a multi-thread runtime, lets the
/// senders woken together with it (by one read's acks) append theirs first, so that they
/// leave in one write instead of one write and one wake-up each. On a current-thread
/// runtime the writer task runs after them anyway.
pub(crate) async fn let_others_append_first() {
    if tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::CurrentThread
    {
        tokio::task::yield_now().await;
    }
}

/// Writes everything `out` holds, waiting for the socket as needed, until it is empty; then
/// clears [`PendingOutput::busy`]. False when the socket failed or took nothing for `timeout`.
pub(crate) async fn drain<W: WriteHalf>(
    out: &Mutex<PendingOutput<W>>,
    writer: &W,
    timeout: Duration,
) -> bool {
    loop {
        {
            let mut o = out.lock();
            match o.try_flush() {
                Flush::Done => {
                    o.busy = false;
                    return true;
                }
                Flush::Closed => return false,
                Flush::Blocked => o.busy = true,
            }
        }
        match tokio::time::timeout(timeout, writer.writable()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// More than the socket takes at once: `try_flush` writes what it can without waiting,
    /// `drain` waits for the reader and delivers every byte in order, then clears `busy`;
    /// appends made meanwhile follow the earlier bytes.
    #[tokio::test]
    async fn a_full_socket_is_drained_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (_r, w) = client.into_split();
        let w = Arc::new(w);
        let out = Mutex::new(PendingOutput::new(w.clone()));
        let total = 32 * 1024 * 1024;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let first = {
            let mut o = out.lock();
            o.buf.extend_from_slice(&data[..total / 2]);
            o.try_flush()
        };
        assert_eq!(first, Flush::Blocked, "32 MiB fit in the socket buffers");
        out.lock().busy = true;
        out.lock().buf.extend_from_slice(&data[total / 2..]);
        let reader = tokio::spawn(async move {
            let mut got = Vec::with_capacity(total);
            while got.len() < total {
                let mut chunk = vec![0u8; 1 << 20];
                let n = server.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&chunk[..n]);
            }
            got
        });
        assert!(drain(&out, &w, Duration::from_secs(30)).await);
        assert!(!out.lock().busy && !out.lock().pending());
        assert!(reader.await.unwrap() == data);
        out.lock().close();
        assert_eq!(out.lock().try_flush(), Flush::Closed);
    }
}
