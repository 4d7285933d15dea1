//! Outbound P2P connections: one encrypted session per peer, reused for many messages with
//! pipelined acks, in a pool keyed by address and [`Credentials`] (so a session made under
//! one expectation of the peer's identity never carries a send that expects another).
//!
//! [`PeerConnection::open`] connects and runs the [`Initiator`] handshake (2.1: then sends
//! `auth` before anything else). After that a sender seals its frame straight into the
//! connection's output buffer (under one lock, so 2.1 counter nonces go out in order) and
//! records its completion in the in-flight FIFO. A sender with nothing else in flight
//! writes the buffer itself (see [`crate::wire`]): a request costs no hand-off to another
//! task. With other messages in flight it leaves the frame to the writer task, which
//! writes everything queued meanwhile at once; the writer task also finishes writes the
//! socket could not take at once. A reader task matches acks (they come in order) to the
//! FIFO. On a 2.1 session the peer may also send messages back (responses above all): the
//! reader hands them to the [`Inbox`] and acks them once taken, in one write per read. An
//! error frame fails the oldest in-flight message; a closed socket fails all of them. The
//! writer task closes the connection once it has been idle for `pool_idle_close`, before
//! the peer's own idle close, so we never write into a connection the peer is tearing
//! down; dropping the last handle closes it too.
//!
//! [`Pool::send`] reuses a live connection, and when a reused one turns out dead before the
//! peer acked anything we queued, retries once on a fresh connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::borrow::Cow;

use m2m_proto::crypto::{encode_payload, NONCE_LEN, TAG_LEN};
use m2m_proto::frame::{errors, Frame};
use m2m_proto::{
    Identity, IdentityKey, Initiator, InitiatorEvent, LineDecoder, PeerExpectation, SessionError,
};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{AgentError, Result};
use crate::inbox::{Inbox, Refused};
use crate::listener::to_message;
use crate::wire::{self, Flush, Out};

/// Messages written and not yet acked, per connection.
const MAX_IN_FLIGHT: usize = 4096;
/// Bytes read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Pool entries kept before dead ones are swept.
const MAX_POOL_SLOTS: usize = 1024;

/// Who we are on an outbound session and what we demand of the peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Credentials {
    /// 2.0: declare `from`; nothing is proven either way.
    Plain {
        /// The id declared in the handshake.
        from: String,
    },
    /// 2.1: prove our identity (our `from` is its derived id) and have the peer prove
    /// `expect` — the key the hub vouches for — or, with `require`, at least some identity.
    Authenticated {
        /// The peer's identity key according to the hub.
        expect: Option<IdentityKey>,
        /// Refuse a 2.0 answer even when the hub vouches for nothing.
        require: bool,
    },
}

impl Credentials {
    /// 2.0 credentials declaring `from`.
    pub(crate) fn plain(from: &str) -> Self {
        Credentials::Plain {
            from: from.to_owned(),
        }
    }
}

/// Bounds of outbound connections.
#[derive(Debug, Clone)]
pub(crate) struct OutboundSettings {
    pub max_frame_len: usize,
    pub write_timeout: Duration,
    pub pool_idle_close: Duration,
}

/// How a queued message ended, as the connection tasks see it.
enum Outcome {
    /// The connection went away before the ack.
    Lost(String),
    /// The peer answered with an error frame.
    Refused(AgentError),
}

/// How a send on one connection failed.
pub(crate) enum SendFailure {
    /// The connection is gone; `nothing_acked` when the peer acked nothing after we queued.
    Lost { reason: String, nothing_acked: bool },
    /// A definite failure (error frame, payload too large).
    Failed(AgentError),
}

struct InFlight {
    done: oneshot::Sender<Result<(), Outcome>>,
    _slot: OwnedSemaphorePermit,
}

fn too_large(len: usize, max: usize) -> AgentError {
    AgentError::InvalidPayload(format!(
        "message of about {len} bytes exceeds the {max}-byte frame limit"
    ))
}

/// State shared by a connection's handle, its reader task and its writer task.
struct Shared {
    address: String,
    session: Mutex<Initiator>,
    /// Frames to write. Senders seal into it under its lock (so 2.1 counter nonces go out in
    /// order) and write it themselves when nothing else waits on the socket.
    out: Mutex<Out>,
    in_flight: Mutex<VecDeque<InFlight>>,
    acks: AtomicU64,
    closed: CancellationToken,
    /// Wakes the writer task: the socket was full, or frames were left to batch.
    wake_writer: Notify,
    /// Where messages the peer sends back on this session go.
    inbox: Arc<Inbox>,
    max_frame_len: usize,
}

impl Shared {
    fn fail_all(&self, reason: &str) {
        let failed: Vec<InFlight> = self.in_flight.lock().drain(..).collect();
        for f in failed {
            let _ = f.done.send(Err(Outcome::Lost(reason.to_owned())));
        }
    }

    /// Writes what `out` holds now, unless a task waits on the socket already; if the socket
    /// is full, the writer task takes over.
    fn flush_or_hand_over(&self, out: &mut Out) {
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
}

/// One established outbound session.
pub(crate) struct PeerConnection {
    shared: Arc<Shared>,
    /// What the session was made under: it is reused only for the same.
    credentials: Credentials,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("address", &self.shared.address)
            .field("closed", &self.shared.closed.is_cancelled())
            .finish()
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

fn session_error(address: &str, e: SessionError) -> AgentError {
    match e {
        SessionError::PeerError(error) => peer_error(address, error),
        e @ (SessionError::Authentication(_) | SessionError::DowngradeRefused) => {
            AgentError::Authentication {
                address: address.to_owned(),
                reason: e.to_string(),
            }
        }
        other => AgentError::Peer {
            address: address.to_owned(),
            error: other.to_string(),
        },
    }
}

/// The plaintext of a payload: a string's own bytes (no copy), else its JSON.
pub(crate) fn plaintext(payload: &Value) -> Cow<'_, [u8]> {
    match payload {
        Value::String(s) => Cow::Borrowed(s.as_bytes()),
        other => Cow::Owned(encode_payload(other)),
    }
}

impl PeerConnection {
    /// Connects to `address` and completes the handshake under `credentials` (2.1: as
    /// `identity`). Bounded by the caller's timeout.
    pub(crate) async fn open(
        address: &str,
        credentials: &Credentials,
        identity: &Identity,
        settings: &OutboundSettings,
        inbox: &Arc<Inbox>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| AgentError::unreachable(address, e))?;
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (mut session, hello) = match credentials {
            Credentials::Plain { from } => Initiator::new(from, &mut rand::thread_rng()),
            Credentials::Authenticated { expect, require } => Initiator::new_authenticated(
                identity,
                PeerExpectation {
                    identity: *expect,
                    require_authenticated: *require,
                },
                &mut rand::thread_rng(),
            ),
        };
        writer
            .write_all(&hello.encode())
            .await
            .map_err(|e| AgentError::unreachable(address, e))?;
        let mut decoder = LineDecoder::new(settings.max_frame_len);
        'handshake: loop {
            let n = reader
                .read(decoder.read_buf(READ_CHUNK))
                .await
                .map_err(|e| AgentError::unreachable(address, e))?;
            if n == 0 {
                return Err(AgentError::unreachable(
                    address,
                    "connection closed during handshake",
                ));
            }
            decoder.commit(n);
            loop {
                let event = match decoder.next_line() {
                    Ok(Some(line)) => session.handle_line(line),
                    Ok(None) => break,
                    Err(e) => {
                        return Err(AgentError::Peer {
                            address: address.to_owned(),
                            error: e.to_string(),
                        })
                    }
                };
                match event {
                    Ok(InitiatorEvent::Established) => break 'handshake,
                    Ok(_) => {}
                    Err(e) => return Err(session_error(address, e)),
                }
            }
        }
        // 2.1: the initiator proves its identity before its first message.
        if let Some(auth) = session.take_auth_frame() {
            writer
                .write_all(&auth.encode())
                .await
                .map_err(|e| AgentError::unreachable(address, e))?;
        }
        let writer = Arc::new(writer);
        let shared = Arc::new(Shared {
            address: address.to_owned(),
            session: Mutex::new(session),
            out: Mutex::new(Out::new(writer.clone())),
            in_flight: Mutex::new(VecDeque::new()),
            acks: AtomicU64::new(0),
            closed: cancel.child_token(),
            wake_writer: Notify::new(),
            inbox: inbox.clone(),
            max_frame_len: settings.max_frame_len,
        });
        tracker.spawn(read_frames(reader, decoder, shared.clone()));
        tracker.spawn(write_frames(writer, shared.clone(), settings.clone()));
        Ok(Arc::new(PeerConnection {
            shared,
            credentials: credentials.clone(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }))
    }

    fn is_usable(&self, credentials: &Credentials) -> bool {
        !self.shared.closed.is_cancelled() && self.credentials == *credentials
    }

    /// Seals and sends one message; resolves when the peer acked it.
    ///
    /// The caller seals the frame into the connection's output and, when it is the only
    /// message outstanding, writes it itself (no hand-off to another task: the latency of a
    /// request). With others in flight it leaves the frame to the writer task, which writes
    /// every frame queued meanwhile at once (the throughput of many senders).
    pub(crate) async fn send(
        &self,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> std::result::Result<(), SendFailure> {
        let lost = |reason: &str| SendFailure::Lost {
            reason: reason.to_owned(),
            nothing_acked: true,
        };
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => tokio::select! {
                biased;
                _ = self.shared.closed.cancelled() => return Err(lost("connection closed")),
                slot = self.slots.clone().acquire_owned() => slot.map_err(|_| lost("connection closed"))?,
            },
        };
        let plaintext = plaintext(payload);
        // base64 of nonce + tag + ciphertext, plus the frame around it.
        let estimate = (NONCE_LEN + TAG_LEN + plaintext.len()).div_ceil(3) * 4
            + message_type.len()
            + correlation_id.len()
            + 64;
        if estimate > self.shared.max_frame_len {
            return Err(SendFailure::Failed(too_large(
                estimate,
                self.shared.max_frame_len,
            )));
        }
        let acks_before = self.shared.acks.load(Ordering::Acquire);
        let (done, outcome) = oneshot::channel();
        {
            let shared = &*self.shared;
            let mut out = shared.out.lock();
            if out.is_closed() || shared.closed.is_cancelled() {
                return Err(lost("connection closed"));
            }
            let start = out.buf.len();
            let sealed = shared.session.lock().seal_into(
                message_type,
                &plaintext,
                Some(correlation_id),
                &mut rand::thread_rng(),
                &mut out.buf,
            );
            if let Err(e) = sealed {
                out.buf.truncate(start);
                return Err(SendFailure::Failed(session_error(&shared.address, e)));
            }
            let len = out.buf.len() - start;
            if len > shared.max_frame_len + 1 {
                out.buf.truncate(start);
                return Err(SendFailure::Failed(too_large(len, shared.max_frame_len)));
            }
            // Recorded before the bytes are written, so an ack can never arrive ahead of
            // its entry.
            let alone = {
                let mut in_flight = shared.in_flight.lock();
                in_flight.push_back(InFlight { done, _slot: slot });
                in_flight.len() == 1
            };
            if alone {
                shared.flush_or_hand_over(&mut out);
            } else if !out.busy {
                out.busy = true;
                shared.wake_writer.notify_one();
            }
        }
        let nothing_acked = || self.shared.acks.load(Ordering::Acquire) == acks_before;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Outcome::Refused(e))) => Err(SendFailure::Failed(e)),
            Ok(Err(Outcome::Lost(reason))) => Err(SendFailure::Lost {
                reason,
                nothing_acked: nothing_acked(),
            }),
            Err(_) => Err(SendFailure::Lost {
                reason: "connection closed".into(),
                nothing_acked: nothing_acked(),
            }),
        }
    }

    /// Closes the connection; in-flight messages fail.
    pub(crate) fn close(&self) {
        self.shared.closed.cancel();
    }
}

impl Drop for PeerConnection {
    /// The last handle gone (the pool dropped or replaced it): nobody can send on it any
    /// more, so it closes.
    fn drop(&mut self) {
        self.shared.closed.cancel();
    }
}

/// Reads acks (and, on a 2.1 session, messages the peer sends back) until the connection
/// ends; then fails whatever is still in flight.
async fn read_frames(mut reader: OwnedReadHalf, mut decoder: LineDecoder, shared: Arc<Shared>) {
    let reason: String = 'conn: loop {
        // Lines left over from the handshake's last read come first.
        let mut acks_owed = false;
        loop {
            let event = match decoder.next_line() {
                Ok(Some(line)) => shared.session.lock().handle_line(line),
                Ok(None) => break,
                Err(e) => break 'conn e.to_string(),
            };
            match event {
                Ok(InitiatorEvent::Acked(_)) => {
                    shared.acks.fetch_add(1, Ordering::AcqRel);
                    let first = shared.in_flight.lock().pop_front();
                    if let Some(f) = first {
                        let _ = f.done.send(Ok(()));
                    }
                }
                Ok(InitiatorEvent::Message { message, ack }) => {
                    if let Err(reason) = hand_off(&shared, to_message(message)).await {
                        break 'conn reason;
                    }
                    // Acked only once the inbox took it, as the responder does; written
                    // with the other acks of this read.
                    ack.encode_into(&mut shared.out.lock().buf);
                    acks_owed = true;
                }
                Ok(_) => {}
                Err(SessionError::PeerError(error)) => {
                    // The responder answers in order: the error is about the oldest message.
                    let first = shared.in_flight.lock().pop_front();
                    if let Some(f) = first {
                        let _ = f
                            .done
                            .send(Err(Outcome::Refused(peer_error(&shared.address, error))));
                    }
                }
                Err(e) => break 'conn e.to_string(),
            }
        }
        if acks_owed {
            // Let the requester that the response woke run first: its next request then
            // carries these acks in the same write.
            wire::let_others_write_first().await;
            shared.flush_or_hand_over(&mut shared.out.lock());
        }
        let read = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break 'conn "connection closed".into(),
            // Straight into the decoder's buffer: no copy of what was read.
            read = reader.read(decoder.read_buf(READ_CHUNK)) => read,
        };
        match read {
            Ok(0) => break "connection closed by peer".into(),
            Ok(n) => decoder.commit(n),
            Err(e) => break e.to_string(),
        }
    };
    shared.closed.cancel();
    shared.fail_all(&reason);
}

/// Gives a message the peer sent back to the inbox (a response to a pending request goes
/// straight to it), waiting for room like the responder does.
async fn hand_off(shared: &Shared, message: crate::message::Message) -> Result<(), String> {
    match shared.inbox.try_deliver(message) {
        Ok(()) => Ok(()),
        Err(Refused::Closed) => Err("agent closing".into()),
        Err(Refused::Full(message)) => {
            let delivered = tokio::select! {
                biased;
                _ = shared.closed.cancelled() => return Err("connection closed".into()),
                d = shared.inbox.deliver(*message) => d,
            };
            delivered.map_err(|_| "agent closing".to_owned())
        }
    }
}

/// Writes what senders left to it (frames batched while others were in flight, or the rest
/// of a write the socket could not take at once), and closes the connection once it has
/// been idle for `pool_idle_close`.
async fn write_frames(
    writer: Arc<OwnedWriteHalf>,
    shared: Arc<Shared>,
    settings: OutboundSettings,
) {
    loop {
        let idle_since = shared.out.lock().last_write;
        tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break,
            _ = shared.wake_writer.notified() => {
                wire::let_others_append_first().await;
                if !wire::drain(&shared.out, &writer, settings.write_timeout).await {
                    break;
                }
            }
            _ = tokio::time::sleep_until(idle_since + settings.pool_idle_close) => {
                let out = shared.out.lock();
                if out.last_write == idle_since && !out.busy {
                    break;
                }
            }
        }
    }
    shared.closed.cancel();
    shared.out.lock().close();
    shared.fail_all("connection closed");
    // Our handle is the last one: dropping it shuts the write side down.
    drop(writer);
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<PeerConnection>>>>;

/// Outbound connections by address and credentials.
pub(crate) struct Pool {
    /// By address, then credentials (looked up without building an owned key per send).
    slots: Mutex<HashMap<String, Vec<(Credentials, Slot)>>>,
    settings: OutboundSettings,
    identity: Identity,
    inbox: Arc<Inbox>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field(
                "slots",
                &self.slots.lock().values().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(
        settings: OutboundSettings,
        identity: Identity,
        inbox: Arc<Inbox>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Pool {
            slots: Mutex::new(HashMap::new()),
            settings,
            identity,
            inbox,
            cancel,
            tracker,
        }
    }

    fn slot(&self, address: &str, credentials: &Credentials) -> Slot {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots
            .get(address)
            .and_then(|list| list.iter().find(|(c, _)| c == credentials))
        {
            return slot.1.clone();
        }
        if slots.values().map(Vec::len).sum::<usize>() >= MAX_POOL_SLOTS {
            slots.retain(|_, list| {
                list.retain(|(_, slot)| match slot.try_lock() {
                    Ok(conn) => conn
                        .as_ref()
                        .is_some_and(|c| !c.shared.closed.is_cancelled()),
                    Err(_) => true,
                });
                !list.is_empty()
            });
        }
        let slot = Slot::default();
        slots
            .entry(address.to_owned())
            .or_default()
            .push((credentials.clone(), slot.clone()));
        slot
    }

    /// The pooled connection to `address` (reused = true), or a new one.
    async fn connection(
        &self,
        address: &str,
        credentials: &Credentials,
    ) -> Result<(Arc<PeerConnection>, bool)> {
        let slot = self.slot(address, credentials);
        let mut held = slot.lock().await;
        if let Some(conn) = held.as_ref().filter(|c| c.is_usable(credentials)) {
            return Ok((conn.clone(), true));
        }
        // Boxed: the handshake's state is most of this future's size, and every send would
        // otherwise copy it around.
        let conn = Box::pin(PeerConnection::open(
            address,
            credentials,
            &self.identity,
            &self.settings,
            &self.inbox,
            &self.cancel,
            &self.tracker,
        ))
        .await?;
        if let Some(old) = held.replace(conn.clone()) {
            old.close();
        }
        Ok((conn, false))
    }

    /// Sends one message to `address` under `credentials` over a pooled connection. Not
    /// bounded in time: the caller applies the send timeout.
    pub(crate) async fn send(
        &self,
        address: &str,
        credentials: &Credentials,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        let (conn, reused) = self.connection(address, credentials).await?;
        match conn.send(message_type, payload, correlation_id).await {
            Ok(()) => Ok(()),
            Err(SendFailure::Failed(e)) => Err(e),
            Err(SendFailure::Lost {
                nothing_acked: true,
                ..
            }) if reused => {
                tracing::debug!(address, "pooled connection was dead; retrying on a new one");
                let (conn, _) = self.connection(address, credentials).await?;
                match conn.send(message_type, payload, correlation_id).await {
                    Ok(()) => Ok(()),
                    Err(SendFailure::Failed(e)) => Err(e),
                    Err(SendFailure::Lost { reason, .. }) => {
                        Err(AgentError::unreachable(address, reason))
                    }
                }
            }
            Err(SendFailure::Lost { reason, .. }) => Err(AgentError::unreachable(address, reason)),
        }
    }

    /// Closes every pooled connection (used when our id or hub standing changes).
    pub(crate) fn clear(&self) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .drain()
            .flat_map(|(_, list)| list.into_iter().map(|(_, s)| s))
            .collect();
        for slot in slots {
            if let Ok(conn) = slot.try_lock() {
                if let Some(c) = conn.as_ref() {
                    c.close();
                }
            }
        }
    }

    /// Number of live pooled connections (tests).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.slots
            .lock()
            .values()
            .flatten()
            .map(|(_, s)| s)
            .filter(|s| {
                s.try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| !c.shared.closed.is_cancelled()))
                    .unwrap_or(true)
            })
            .count()
    }
}

/// Round trip of `{"type":"ping"}` → `{"type":"pong"}` on a fresh connection.
pub(crate) async fn ping(address: &str, max_frame_len: usize) -> Result<Duration> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| AgentError::unreachable(address, e))?;
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    stream
        .write_all(&Frame::Ping.encode())
        .await
        .map_err(|e| AgentError::unreachable(address, e))?;
    let mut decoder = LineDecoder::new(max_frame_len);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| AgentError::unreachable(address, e))?;
        if n == 0 {
            return Err(AgentError::unreachable(address, "closed without pong"));
        }
        decoder.push(&buf[..n]);
        while let Some(line) = decoder.next_line().map_err(|e| AgentError::Peer {
            address: address.to_owned(),
            error: e.to_string(),
        })? {
            match Frame::parse(line) {
                Ok(Frame::Pong) => {
                    let rtt = started.elapsed();
                    let _ = stream.shutdown().await;
                    return Ok(rtt);
                }
                Ok(Frame::Error(error)) => return Err(peer_error(address, error)),
                _ => {}
            }
        }
    }
}
