//! Outbound P2P connections: one encrypted session per peer, reused for many messages with
//! pipelined acks, in a pool keyed by address and [`Credentials`] (so a session made under
//! one expectation of the peer's identity never carries a send that expects another).
//!
//! [`PeerConnection::open`] connects and runs the [`Initiator`] handshake (2.1: then sends
//! `auth` before anything else). After that a writer task takes sealed frames from a bounded
//! queue, records each sender's completion in the in-flight FIFO and writes frames in
//! batches; a reader task matches acks (they come in order) to that FIFO. On a 2.1 session
//! the peer may also send messages back (responses above all): the reader hands them to the
//! [`Inbox`] and has the writer ack them once taken. An error frame fails the oldest in-flight
//! message; a closed socket fails all of them. The writer closes the connection once it has been idle for
//! `pool_idle_close`, before the peer's own idle close, so we never write into a connection
//! the peer is tearing down.
//!
//! [`Pool::send`] reuses a live connection, and when a reused one turns out dead before the
//! peer acked anything we queued, retries once on a fresh connection.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{AgentError, Result};
use crate::inbox::{Inbox, Refused};
use crate::listener::to_message;

/// Messages sealed and queued for the writer before senders wait.
const QUEUE_DEPTH: usize = 1024;
/// Messages written and not yet acked, per connection.
const MAX_IN_FLIGHT: usize = 4096;
/// Largest batch of frames written at once.
const WRITE_BATCH: usize = 256 * 1024;
/// Bytes read at once.
const READ_CHUNK: usize = 64 * 1024;
/// Pool entries kept before dead ones are swept.
const MAX_POOL_SLOTS: usize = 1024;
/// Acks for messages the peer sent back, queued for the writer.
const CONTROL_DEPTH: usize = 64;

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

struct Outgoing {
    message_type: String,
    plaintext: Vec<u8>,
    correlation_id: String,
    in_flight: InFlight,
}

fn too_large(len: usize, max: usize) -> AgentError {
    AgentError::InvalidPayload(format!(
        "message of about {len} bytes exceeds the {max}-byte frame limit"
    ))
}

/// State shared by a connection's handle and its two tasks.
struct Shared {
    address: String,
    session: Mutex<Initiator>,
    in_flight: Mutex<VecDeque<InFlight>>,
    acks: AtomicU64,
    closed: CancellationToken,
    /// Where messages the peer sends back on this session go.
    inbox: Arc<Inbox>,
}

impl Shared {
    fn fail_all(&self, reason: &str) {
        let failed: Vec<InFlight> = self.in_flight.lock().drain(..).collect();
        for f in failed {
            let _ = f.done.send(Err(Outcome::Lost(reason.to_owned())));
        }
    }
}

/// One established outbound session.
pub(crate) struct PeerConnection {
    shared: Arc<Shared>,
    /// What the session was made under: it is reused only for the same.
    credentials: Credentials,
    queue: mpsc::Sender<Outgoing>,
    slots: Arc<Semaphore>,
    max_frame_len: usize,
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
        let mut buf = vec![0u8; READ_CHUNK];
        'handshake: loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| AgentError::unreachable(address, e))?;
            if n == 0 {
                return Err(AgentError::unreachable(
                    address,
                    "connection closed during handshake",
                ));
            }
            decoder.push(&buf[..n]);
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
        let shared = Arc::new(Shared {
            address: address.to_owned(),
            session: Mutex::new(session),
            in_flight: Mutex::new(VecDeque::new()),
            acks: AtomicU64::new(0),
            closed: cancel.child_token(),
            inbox: inbox.clone(),
        });
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let (control, control_rx) = mpsc::channel(CONTROL_DEPTH);
        tracker.spawn(read_frames(reader, decoder, buf, shared.clone(), control));
        tracker.spawn(write_frames(
            writer,
            rx,
            control_rx,
            shared.clone(),
            settings.clone(),
        ));
        Ok(Arc::new(PeerConnection {
            shared,
            credentials: credentials.clone(),
            queue,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            max_frame_len: settings.max_frame_len,
        }))
    }

    fn is_usable(&self, credentials: &Credentials) -> bool {
        !self.shared.closed.is_cancelled() && self.credentials == *credentials
    }

    /// Seals and sends one message; resolves when the peer acked it.
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
        let slot = tokio::select! {
            biased;
            _ = self.shared.closed.cancelled() => return Err(lost("connection closed")),
            slot = self.slots.clone().acquire_owned() => slot.map_err(|_| lost("connection closed"))?,
        };
        // Sealed by the writer, in queue order: 2.1 counter nonces must go out in sequence.
        let plaintext = encode_payload(payload);
        // base64 of nonce + tag + ciphertext, plus the frame around it.
        let estimate = (NONCE_LEN + TAG_LEN + plaintext.len()).div_ceil(3) * 4
            + message_type.len()
            + correlation_id.len()
            + 64;
        if estimate > self.max_frame_len {
            return Err(SendFailure::Failed(too_large(estimate, self.max_frame_len)));
        }
        let acks_before = self.shared.acks.load(Ordering::Acquire);
        let (done, outcome) = oneshot::channel();
        let queued = Outgoing {
            message_type: message_type.to_owned(),
            plaintext,
            correlation_id: correlation_id.to_owned(),
            in_flight: InFlight { done, _slot: slot },
        };
        if self.queue.send(queued).await.is_err() {
            return Err(lost("connection closed"));
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

/// Reads acks (and, on a 2.1 session, messages the peer sends back) until the connection
/// ends; then fails whatever is still in flight.
async fn read_frames(
    mut reader: OwnedReadHalf,
    mut decoder: LineDecoder,
    mut buf: Vec<u8>,
    shared: Arc<Shared>,
    control: mpsc::Sender<Frame>,
) {
    let reason: String = 'conn: loop {
        // Lines left over from the handshake's last read come first.
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
                    // Acked only once the inbox took it, as the responder does.
                    let queued = tokio::select! {
                        biased;
                        _ = shared.closed.cancelled() => break 'conn "connection closed".into(),
                        q = control.send(ack) => q,
                    };
                    if queued.is_err() {
                        break 'conn "connection closed".into();
                    }
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
        let read = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break 'conn "connection closed".into(),
            read = reader.read(&mut buf) => read,
        };
        match read {
            Ok(0) => break "connection closed by peer".into(),
            Ok(n) => decoder.push(&buf[..n]),
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

async fn write_frames(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Outgoing>,
    mut control: mpsc::Receiver<Frame>,
    shared: Arc<Shared>,
    settings: OutboundSettings,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut last_write = Instant::now();
    loop {
        let first = tokio::select! {
            biased;
            _ = shared.closed.cancelled() => break,
            // Acks first: the peer's messages wait on them.
            Some(frame) = control.recv() => {
                frame.encode_into(&mut batch);
                None
            }
            _ = tokio::time::sleep_until(last_write + settings.pool_idle_close) => break,
            next = queue.recv() => match next {
                Some(o) => Some(o),
                None => break,
            },
        };
        let mut next = first;
        while let Some(o) = next.take() {
            seal_into(&shared, o, &mut batch, settings.max_frame_len);
            if batch.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        while let Ok(frame) = control.try_recv() {
            frame.encode_into(&mut batch);
        }
        if batch.is_empty() {
            continue;
        }
        let written = tokio::time::timeout(settings.write_timeout, writer.write_all(&batch)).await;
        batch.clear();
        if !matches!(written, Ok(Ok(()))) {
            break;
        }
        last_write = Instant::now();
    }
    shared.closed.cancel();
    shared.fail_all("connection closed");
    // Messages still queued fail when `queue` drops their completion senders.
    drop(queue);
    let _ = tokio::time::timeout(settings.write_timeout, writer.shutdown()).await;
}

/// Seals `o` and appends its frame to `batch`, or fails it if the frame is too large.
fn seal_into(shared: &Shared, o: Outgoing, batch: &mut Vec<u8>, max_frame_len: usize) {
    let sealed = shared.session.lock().seal_plaintext(
        &o.message_type,
        &o.plaintext,
        Some(Value::String(o.correlation_id)),
        &mut rand::thread_rng(),
    );
    let frame = match sealed {
        Ok(f) => f,
        Err(e) => {
            let error = session_error(&shared.address, e);
            let _ = o.in_flight.done.send(Err(Outcome::Refused(error)));
            return;
        }
    };
    let start = batch.len();
    frame.encode_into(batch);
    let len = batch.len() - start;
    if len > max_frame_len + 1 {
        batch.truncate(start);
        let _ = o
            .in_flight
            .done
            .send(Err(Outcome::Refused(too_large(len, max_frame_len))));
        return;
    }
    // Queued before the bytes are written, so an ack can never arrive ahead of its entry.
    shared.in_flight.lock().push_back(o.in_flight);
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<PeerConnection>>>>;

/// Outbound connections by address and credentials.
pub(crate) struct Pool {
    slots: Mutex<HashMap<(String, Credentials), Slot>>,
    settings: OutboundSettings,
    identity: Identity,
    inbox: Arc<Inbox>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("slots", &self.slots.lock().len())
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
        let key = (address.to_owned(), credentials.clone());
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(&key) {
            return slot.clone();
        }
        if slots.len() >= MAX_POOL_SLOTS {
            slots.retain(|_, slot| match slot.try_lock() {
                Ok(conn) => conn
                    .as_ref()
                    .is_some_and(|c| !c.shared.closed.is_cancelled()),
                Err(_) => true,
            });
        }
        let slot = Slot::default();
        slots.insert(key, slot.clone());
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
        let conn = PeerConnection::open(
            address,
            credentials,
            &self.identity,
            &self.settings,
            &self.inbox,
            &self.cancel,
            &self.tracker,
        )
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
        let slots: Vec<Slot> = self.slots.lock().drain().map(|(_, s)| s).collect();
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
