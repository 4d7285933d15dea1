//! One relayed stream (docs/RELAY.md section 2) as the byte stream the connection engine
//! runs on: [`RelayReader`] is an [`AsyncRead`] over the DATA frames the hub delivers for the
//! stream (at most a window of them, [`RecvWindow`]), returning CREDIT as it is read;
//! [`RelayWriter`] is the engine's [`WriteHalf`]: a write becomes DATA frames of at most
//! [`MAX_DATA`] bytes within the [`SendCredit`] the other end granted, and takes nothing
//! while there is none (backpressure). A CLOSE from the hub ends both halves: a reader sees
//! the end of the stream (`normal`) or an error carrying the reason ([`RelayClosedError`]).
//! Dropping both halves sends CLOSE `normal`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use m2m_proto::relay::{CloseReason, RecvWindow, RelayFrame, SendCredit, MAX_DATA};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, Notify};

use crate::conn::WriteHalf;

/// The hub closed a relayed stream: the reason a reader's or writer's IO error carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("relay stream closed: {reason}")]
pub(crate) struct RelayClosedError {
    /// The CLOSE frame's reason.
    pub reason: CloseReason,
    /// Its detail.
    pub detail: String,
}

/// The relay stream's error of `e`, if it is one.
pub(crate) fn relay_closed(e: &io::Error) -> Option<RelayClosedError> {
    e.get_ref()?.downcast_ref::<RelayClosedError>().cloned()
}

/// What both halves and the relay client share of one stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    /// DATA received and not yet read.
    recv: VecDeque<Vec<u8>>,
    /// Read offset into the front chunk.
    front_read: usize,
    window: RecvWindow,
    reader: Option<Waker>,
    credit: SendCredit,
    /// Set once the stream is closed (by the hub, or by us).
    closed: Option<RelayClosedError>,
}

/// One stream's shared part.
#[derive(Debug)]
pub(crate) struct Shared {
    pub id: u32,
    /// The agent at the other end (32 hex).
    pub peer: String,
    state: Mutex<StreamState>,
    writable: Notify,
    /// Frames to the hub's WebSocket.
    out: mpsc::UnboundedSender<Vec<u8>>,
}

impl Shared {
    pub(crate) fn new(
        id: u32,
        peer: String,
        window: u32,
        out: mpsc::UnboundedSender<Vec<u8>>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            id,
            peer,
            state: Mutex::new(StreamState {
                recv: VecDeque::new(),
                front_read: 0,
                window: RecvWindow::new(window),
                reader: None,
                credit: SendCredit::new(window),
                closed: None,
            }),
            writable: Notify::new(),
            out,
        })
    }

    /// A DATA frame from the hub; `Err` when it broke the window (the stream must close).
    pub(crate) fn on_data(&self, bytes: &[u8]) -> Result<(), ()> {
        let mut s = self.state.lock();
        if s.closed.is_some() {
            return Ok(());
        }
        s.window.on_data(bytes.len()).map_err(|_| ())?;
        s.recv.push_back(bytes.to_vec());
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        Ok(())
    }

    /// A CREDIT frame from the hub; `Err` when it granted more than was in flight.
    pub(crate) fn on_credit(&self, bytes: u32) -> Result<(), ()> {
        let granted = self.state.lock().credit.grant(bytes).map_err(|_| ());
        self.writable.notify_waiters();
        granted
    }

    /// The stream ended (`reason`); wakes both halves. Returns whether it was open.
    pub(crate) fn on_close(&self, reason: CloseReason, detail: &str) -> bool {
        let was_open = {
            let mut s = self.state.lock();
            let was_open = s.closed.is_none();
            if was_open {
                s.closed = Some(RelayClosedError {
                    reason,
                    detail: detail.to_owned(),
                });
            }
            if let Some(w) = s.reader.take() {
                w.wake();
            }
            was_open
        };
        self.writable.notify_waiters();
        was_open
    }

    /// Closes the stream from our side: CLOSE `reason` to the hub, unless it is closed.
    pub(crate) fn close(&self, reason: CloseReason) {
        if self.on_close(reason, "") {
            let frame = RelayFrame::Close {
                stream: self.id,
                reason,
                detail: "",
            };
            let _ = self.out.send(frame.to_vec());
        }
    }

    fn closed_error(s: &StreamState) -> Option<io::Error> {
        s.closed.as_ref().map(|c| {
            let kind = match c.reason {
                CloseReason::Normal => io::ErrorKind::BrokenPipe,
                _ => io::ErrorKind::ConnectionReset,
            };
            io::Error::new(kind, c.clone())
        })
    }
}

/// Closes the stream (CLOSE `normal`) once both halves are gone; the client forgets it.
pub(crate) struct Handle {
    pub shared: Arc<Shared>,
    /// Removes the stream from the client's table.
    pub forget: Box<dyn Fn(u32) + Send + Sync>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("stream", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close(CloseReason::Normal);
        (self.forget)(self.shared.id);
    }
}

/// A relayed stream, before it is split.
#[derive(Debug)]
pub(crate) struct RelayStream {
    handle: Arc<Handle>,
}

impl RelayStream {
    pub(crate) fn new(handle: Handle) -> Self {
        RelayStream {
            handle: Arc::new(handle),
        }
    }

    /// The agent at the other end.
    pub(crate) fn peer(&self) -> &str {
        &self.handle.shared.peer
    }

    /// The read and the write half.
    pub(crate) fn split(self) -> (RelayReader, RelayWriter) {
        (
            RelayReader {
                handle: self.handle.clone(),
            },
            RelayWriter {
                handle: self.handle,
            },
        )
    }
}

/// The read half of a relayed stream.
#[derive(Debug)]
pub(crate) struct RelayReader {
    handle: Arc<Handle>,
}

impl AsyncRead for RelayReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.handle.shared;
        let credit = {
            let mut guard = shared.state.lock();
            let s = &mut *guard;
            if s.recv.is_empty() {
                return match Shared::closed_error(s) {
                    // Everything sent before a `normal` CLOSE arrived: the end of the stream.
                    Some(_) if s.closed.as_ref().map(|c| c.reason) == Some(CloseReason::Normal) => {
                        Poll::Ready(Ok(()))
                    }
                    Some(e) => Poll::Ready(Err(e)),
                    None => {
                        s.reader = Some(cx.waker().clone());
                        Poll::Pending
                    }
                };
            }
            let mut taken = 0;
            while buf.remaining() > 0 {
                let Some(front) = s.recv.front() else { break };
                let rest = &front[s.front_read..];
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                taken += n;
                s.front_read += n;
                if s.front_read == front.len() {
                    s.recv.pop_front();
                    s.front_read = 0;
                }
            }
            if s.closed.is_some() {
                None
            } else {
                s.window.on_consumed(taken)
            }
        };
        if let Some(bytes) = credit {
            let frame = RelayFrame::Credit {
                stream: shared.id,
                bytes,
            };
            let _ = shared.out.send(frame.to_vec());
        }
        Poll::Ready(Ok(()))
    }
}

/// The write half of a relayed stream: the engine's [`WriteHalf`].
#[derive(Debug)]
pub(crate) struct RelayWriter {
    handle: Arc<Handle>,
}

impl RelayWriter {
    /// Closes the stream with `reason` (CLOSE to the hub), e.g. `refused`.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.handle.shared.close(reason);
    }
}

impl WriteHalf for RelayWriter {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let shared = &self.handle.shared;
        let mut s = shared.state.lock();
        if let Some(e) = Shared::closed_error(&s) {
            return Err(e);
        }
        let n = buf.len().min(s.credit.available() as usize);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.credit
            .consume(n)
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        for chunk in buf[..n].chunks(MAX_DATA) {
            let frame = RelayFrame::Data {
                stream: shared.id,
                bytes: chunk,
            };
            if shared.out.send(frame.to_vec()).is_err() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        Ok(n)
    }

    async fn writable(&self) -> io::Result<()> {
        let shared = &self.handle.shared;
        loop {
            let notified = shared.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = shared.state.lock();
                if s.closed.is_some() || s.credit.available() > 0 {
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}
