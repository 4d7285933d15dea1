//! The connection engine: one established P2P session over a byte stream, shared by the
//! task that reads it and the callers that send on it. Outbound connections
//! ([`crate::peer`]) and inbound ones ([`crate::listener`]) both run on it; they keep only
//! what is theirs (dialling and the pool; accepting, slots and the responder's decisions).
//!
//! Sending ([`Connection::send`]): the caller seals its frame straight into the output
//! buffer under one lock (so 2.1 counter nonces go out in order), checks its size against the
//! frame limit, records its completion in the ack queue, and writes the buffer itself when
//! nothing else is in flight (see [`out`]): a request or a response costs no hand-off to
//! another task. Otherwise, on a connection with a writer task (outbound), it leaves the
//! frame to that task, which writes everything queued meanwhile at once.
//!
//! Acks come back in order: the reading task calls [`Connection::acked`] (or
//! [`Connection::refused`] for an error frame) and the oldest entry of the queue completes.
//! The queue is bounded ([`crate::defaults::MAX_AWAITING_ACK`]): at the bound, a sender waits
//! for a place (or the close) before it seals, so a peer that stops acking slows its senders
//! down instead of growing our memory. When the connection ends, everything still queued
//! fails as lost ([`Connection::close`]).
//!
//! Receiving ([`Connection::deliver`]): a message the peer sent goes to the [`Inbox`]; when the
//! application's queue is full, the reading task writes what it owes, then waits for room
//! without reading further, so the sender stops getting acks (backpressure, not loss).
//!
//! The read side is any [`tokio::io::AsyncRead`]; the write side any [`WriteHalf`] (TCP, or
//! an in-memory stream through [`transport::Piped`]).

pub(crate) mod out;
pub(crate) mod transport;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use m2m_proto::crypto::encode_payload;
use m2m_proto::frame::errors;
use m2m_proto::session::IncomingMessage;
use m2m_proto::{Initiator, Responder, SessionError};
use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::AgentError;
use crate::inbox::{Inbox, NotTaken};
use crate::message::Message;
pub(crate) use out::{Flush, PendingOutput};
pub(crate) use transport::WriteHalf;

/// A session state machine that seals messages: the [`Initiator`] outbound, the
/// [`Responder`] inbound (2.1 responses).
pub(crate) trait Seal: Send + 'static {
    /// Appends the sealed frame of one message to `out`.
    fn seal_into(
        &mut self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError>;
}

/// Both state machines seal with the same signature, with the thread's RNG.
macro_rules! seal_with_thread_rng {
    ($($machine:ty),*) => {$(
        impl Seal for $machine {
            fn seal_into(
                &mut self,
                message_type: &str,
                plaintext: &[u8],
                correlation_id: &str,
                out: &mut Vec<u8>,
            ) -> Result<(), SessionError> {
                <$machine>::seal_into(
                    self,
                    message_type,
                    plaintext,
                    Some(correlation_id),
                    &mut rand::thread_rng(),
                    out,
                )
            }
        }
    )*};
}

seal_with_thread_rng!(Initiator, Responder);

/// How a queued message ended.
#[derive(Debug)]
enum Outcome {
    Acked,
    /// The peer answered with an error frame.
    Refused(AgentError),
    /// The connection went away before the ack.
    Lost(String),
}

/// Why [`Connection::send`] did not get its message acked.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The connection is gone, or went before the ack; `nothing_acked` when the peer acked
    /// nothing after we queued (so a retry on a fresh connection cannot duplicate).
    Lost { reason: String, nothing_acked: bool },
    /// The session would not seal (not established, or not the session the caller wanted).
    Seal(SessionError),
    /// The sealed frame of `len` bytes is over the frame limit.
    TooLarge { len: usize },
    /// The peer answered with an error frame.
    Refused(AgentError),
}

/// One queued message awaiting its ack; holds its place in the bounded queue.
struct AwaitingAck {
    done: oneshot::Sender<Outcome>,
    _place: OwnedSemaphorePermit,
}

/// What the connection's tasks and its senders share.
pub(crate) struct Connection<S, W> {
    session: Mutex<S>,
    out: Mutex<PendingOutput<W>>,
    awaiting_ack: Mutex<VecDeque<AwaitingAck>>,
    /// Places in `awaiting_ack`.
    places: Arc<Semaphore>,
    /// Acks received so far.
    acks: AtomicU64,
    /// Wakes the task that waits for the stream on a sender's behalf: the stream was full,
    /// or frames were left to batch.
    wake_writer: Notify,
    closed: CancellationToken,
    max_frame_len: usize,
    /// A writer task batches frames queued behind others (outbound); without one (inbound)
    /// a sender writes whenever nobody waits on the stream.
    batches: bool,
}

impl<S, W> std::fmt::Debug for Connection<S, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Longest line sent.
    pub max_frame_len: usize,
    /// Messages awaiting their ack at once.
    pub max_awaiting_ack: usize,
}

impl<S: Seal, W: WriteHalf> Connection<S, W> {
    /// An established session over `writer`, closed with `closed` (or by
    /// [`Connection::close`]); `batches` when a writer task takes frames queued behind others.
    pub(crate) fn new(
        session: S,
        writer: Arc<W>,
        closed: CancellationToken,
        limits: ConnLimits,
        batches: bool,
    ) -> Self {
        Connection {
            session: Mutex::new(session),
            out: Mutex::new(PendingOutput::new(writer)),
            awaiting_ack: Mutex::new(VecDeque::new()),
            places: Arc::new(Semaphore::new(limits.max_awaiting_ack.max(1))),
            acks: AtomicU64::new(0),
            wake_writer: Notify::new(),
            closed,
            max_frame_len: limits.max_frame_len,
            batches,
        }
    }

    /// The session state machine.
    pub(crate) fn session(&self) -> MutexGuard<'_, S> {
        self.session.lock()
    }

    /// The pending output (the reading task appends acks and answers to it).
    pub(crate) fn out(&self) -> MutexGuard<'_, PendingOutput<W>> {
        self.out.lock()
    }

    /// Cancelled once the connection is closing.
    pub(crate) fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Longest line sent.
    pub(crate) fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Whether the connection is closing or closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when a sender wants the task to wait for the stream on its behalf.
    pub(crate) async fn writer_wanted(&self) {
        self.wake_writer.notified().await
    }

    /// Seals one message, queues it for its ack and writes it (see the module docs); resolves
    /// when the peer acked it. `may_seal` sees the session first: `false` refuses with
    /// [`SendError::Seal`]. Not bounded in time: the caller applies the send timeout.
    pub(crate) async fn send(
        &self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: &str,
        may_seal: impl FnOnce(&S) -> bool,
    ) -> Result<(), SendError> {
        let lost = || SendError::Lost {
            reason: "connection closed".into(),
            nothing_acked: true,
        };
        let place = match self.places.clone().try_acquire_owned() {
            Ok(place) => place,
            Err(_) => tokio::select! {
                biased;
                _ = self.closed.cancelled() => return Err(lost()),
                place = self.places.clone().acquire_owned() => place.map_err(|_| lost())?,
            },
        };
        let acks_before = self.acks.load(Ordering::Acquire);
        let (done, outcome) = oneshot::channel();
        {
            let mut out = self.out.lock();
            if out.is_closed() || self.closed.is_cancelled() {
                return Err(lost());
            }
            let start = out.buf.len();
            let sealed = {
                let mut session = self.session.lock();
                if may_seal(&session) {
                    session.seal_into(message_type, plaintext, correlation_id, &mut out.buf)
                } else {
                    Err(SessionError::NotEstablished)
                }
            };
            if let Err(e) = sealed {
                out.buf.truncate(start);
                return Err(SendError::Seal(e));
            }
            let len = out.buf.len() - start;
            if len > self.max_frame_len + 1 {
                out.buf.truncate(start);
                return Err(SendError::TooLarge { len });
            }
            // Recorded before the bytes are written, so an ack can never arrive ahead of
            // its entry.
            let alone = {
                let mut awaiting = self.awaiting_ack.lock();
                awaiting.push_back(AwaitingAck {
                    done,
                    _place: place,
                });
                awaiting.len() == 1
            };
            if alone || !self.batches {
                self.flush_or_hand_over(&mut out);
            } else if !out.busy {
                out.busy = true;
                self.wake_writer.notify_one();
            }
        }
        let nothing_acked = || self.acks.load(Ordering::Acquire) == acks_before;
        match outcome.await {
            Ok(Outcome::Acked) => Ok(()),
            Ok(Outcome::Refused(e)) => Err(SendError::Refused(e)),
            Ok(Outcome::Lost(reason)) => Err(SendError::Lost {
                reason,
                nothing_acked: nothing_acked(),
            }),
            Err(_) => Err(SendError::Lost {
                reason: "connection closed".into(),
                nothing_acked: nothing_acked(),
            }),
        }
    }

    /// Writes what `out` holds now, unless a task waits on the stream already; if the stream
    /// is full, the task that waits for it takes over.
    pub(crate) fn flush_or_hand_over(&self, out: &mut PendingOutput<W>) {
        if out.busy || !out.pending() {
            return;
        }
        match out.try_flush() {
            Flush::Done => {}
            Flush::Blocked => {
                out.busy = true;
                self.wake_writer.notify_one();
            }
            Flush::Closed => self.closed.cancel(),
        }
    }

    /// Writes everything pending, waiting for the stream up to `timeout` at a time; false
    /// when it failed or took nothing in time.
    pub(crate) async fn drain(&self, writer: &W, timeout: std::time::Duration) -> bool {
        out::drain(&self.out, writer, timeout).await
    }

    /// Messages sent and not yet acked (tests).
    #[cfg(test)]
    pub(crate) fn awaiting_ack(&self) -> usize {
        self.awaiting_ack.lock().len()
    }

    /// The peer acked the oldest queued message.
    pub(crate) fn acked(&self) {
        self.acks.fetch_add(1, Ordering::AcqRel);
        self.complete_oldest(Outcome::Acked);
    }

    /// The peer answered the oldest queued message with an error frame (it answers in order).
    pub(crate) fn refused(&self, error: AgentError) {
        self.complete_oldest(Outcome::Refused(error));
    }

    fn complete_oldest(&self, outcome: Outcome) {
        let oldest = self.awaiting_ack.lock().pop_front();
        if let Some(a) = oldest {
            let _ = a.done.send(outcome);
        }
    }

    /// Fails everything awaiting its ack as lost (`reason`).
    pub(crate) fn fail_all(&self, reason: &str) {
        let failed: Vec<AwaitingAck> = self.awaiting_ack.lock().drain(..).collect();
        for a in failed {
            let _ = a.done.send(Outcome::Lost(reason.to_owned()));
        }
    }

    /// Closes the connection: no more sends, the output is dropped, queued messages fail.
    pub(crate) fn close(&self, reason: &str) {
        self.closed.cancel();
        self.out.lock().close();
        self.fail_all(reason);
    }

    /// Gives a message the peer sent (its line `wire_len` bytes long) to the inbox; when the
    /// application's queue is full,
    /// first runs `before_waiting` (write what we owe; `false` ends the connection), then
    /// waits for room until the connection closes. `Ok(true)` when it had to wait.
    pub(crate) async fn deliver(
        &self,
        inbox: &Inbox,
        message: Message,
        wire_len: usize,
        before_waiting: impl AsyncFnOnce() -> bool,
    ) -> Result<bool, &'static str> {
        match inbox.try_deliver(message, wire_len) {
            Ok(()) => Ok(false),
            Err(NotTaken::Closed) => Err("agent closing"),
            Err(NotTaken::Full(message)) => {
                if !before_waiting().await {
                    return Err("connection failed");
                }
                let delivered = tokio::select! {
                    biased;
                    _ = self.closed.cancelled() => return Err("connection closed"),
                    d = inbox.deliver(*message, wire_len) => d,
                };
                delivered.map(|()| true).map_err(|_| "agent closing")
            }
        }
    }
}

/// The plaintext of a payload: a string's own bytes (no copy), else its JSON.
pub(crate) fn plaintext(payload: &Value) -> Cow<'_, [u8]> {
    match payload {
        Value::String(s) => Cow::Borrowed(s.as_bytes()),
        other => Cow::Owned(encode_payload(other)),
    }
}

/// The error a peer's `{"error":…}` frame stands for.
pub(crate) fn peer_error(address: &str, error: String) -> AgentError {
    if error == errors::DECRYPTION_FAILED {
        AgentError::DecryptionFailed {
            address: address.to_owned(),
        }
    } else {
        AgentError::Peer {
            address: address.to_owned(),
            error,
        }
    }
}

/// The application-facing form of an opened message that came by `route`.
pub(crate) fn to_message(m: IncomingMessage, route: crate::message::Route) -> Message {
    Message {
        from: m.from,
        message_type: m.message_type,
        payload: m.payload,
        correlation_id: m.correlation_id.map(|c| match c {
            Value::String(s) => s,
            other => other.to_string(),
        }),
        timestamp: now_ms(),
        encrypted: true,
        authenticated: m.authenticated,
        route,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
