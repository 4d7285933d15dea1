//! The P2P responder (PROTOCOL.md A4): an accept loop and one task per inbound connection.
//!
//! Bytes → [`LineDecoder`] (refuses lines over the frame limit) → [`Responder`] (the protocol
//! decisions) → frames written back in order, coalesced into one write per read. A delivered
//! message goes to the [`Inbox`] and is acked only once the inbox took it; while the
//! application's queue is full this connection stops reading, so the sender stops getting
//! acks. Bounds (issue 13; every number in [`crate::defaults`]): connection slots with a share
//! per source address and eviction of the least useful holder when they run short
//! ([`crate::slots`]), an agent-wide budget for read buffers beyond one read each
//! ([`crate::budget`]; over it the connection closes with `overloaded`), one handshake per
//! connection and a handshake rate per source address ([`crate::rate`]), a handshake
//! deadline, an idle deadline and a write timeout.
//!
//! 2.1 (PROTOCOL.md B): while [`LocalIdentity::authenticates`], each connection gets a
//! [`Responder::with_identity`], which authenticates 2.1 initiators and serves 2.0 ones
//! unless the agent refuses unauthenticated peers. Once a session is authenticated it is
//! listed in [`InboundSessions`] under the peer's verified id, so that
//! [`Agent::respond`](crate::Agent::respond) can send the response back on this very
//! connection (sealed by the responder, acked by the initiator): an agent that accepts no
//! inbound connections can still make requests. `respond` seals and writes the response
//! itself (see [`crate::wire`]); the connection's task only finishes writes the socket
//! could not take at once. After a read that delivered messages the task lets the
//! application run once before writing the acks, so that an immediate response leaves in
//! the same write as the request's ack.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use m2m_proto::frame::{errors, ParsedFrame};
use m2m_proto::session::IncomingMessage;
use m2m_proto::{Frame, LineDecoder, Responder, ResponderOutput, SessionError};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::{BufferBudget, BufferCharge};
use crate::error::AgentError;
use crate::identity::LocalIdentity;
use crate::inbox::{Inbox, Refused};
use crate::message::Message;
use crate::rate::HandshakeRate;
use crate::slots::{InboundSlots, Slot, Stage};
use crate::wire::{self, Flush, Out};

/// Bytes read from a socket at once: a connection's free read buffer
/// ([`crate::defaults::FREE_BUFFER_PER_CONNECTION`]).
const READ_CHUNK: usize = 64 * 1024;
/// Least room asked for a read while part of a line is buffered: the buffer then grows by
/// what arrives, not by a whole read per byte trickled in.
const MIN_READ: usize = 8 * 1024;
/// Pending output is flushed once it reaches this size, even mid-read.
const FLUSH_AT: usize = 256 * 1024;

/// What an inbound connection's task shares with [`Agent::respond`](crate::Agent::respond)
/// callers, which seal and write responses on it themselves.
struct InboundConn {
    responder: Mutex<Responder>,
    out: Mutex<Out>,
    /// Messages we sent back that await the initiator's ack (acks come in order).
    sent_back: Mutex<VecDeque<oneshot::Sender<Result<(), AgentError>>>>,
    /// Wakes the connection's task to wait for the socket on a writer's behalf.
    wake: Notify,
    max_frame_len: usize,
}

impl std::fmt::Debug for InboundConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundConn").finish_non_exhaustive()
    }
}

/// Why a message could not go back on an inbound session.
#[derive(Debug)]
pub(crate) enum NotSentBack {
    /// No live authenticated session from that peer, or it ended before the ack: use
    /// another route.
    NoSession,
    /// A definite failure (the message is too large for a frame).
    Failed(AgentError),
}

/// One listed session: its key and its connection.
type BackRoute = (u64, Arc<InboundConn>);

/// Live authenticated inbound sessions by the peer's verified id.
#[derive(Debug, Default)]
pub(crate) struct InboundSessions {
    next_key: AtomicU64,
    live: Mutex<HashMap<String, Vec<BackRoute>>>,
}

/// A session's entry in [`InboundSessions`]; dropping it removes the entry.
struct Listed {
    sessions: Arc<InboundSessions>,
    peer: String,
    key: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut live = self.sessions.live.lock();
        if let Some(list) = live.get_mut(&self.peer) {
            list.retain(|(k, _)| *k != self.key);
            if list.is_empty() {
                live.remove(&self.peer);
            }
        }
    }
}

impl InboundSessions {
    fn list(self: &Arc<Self>, peer: &str, conn: &Arc<InboundConn>) -> Listed {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .entry(peer.to_owned())
            .or_default()
            .push((key, conn.clone()));
        Listed {
            sessions: self.clone(),
            peer: peer.to_owned(),
            key,
        }
    }

    /// Sends a message back to `peer` on its newest live authenticated session; resolves
    /// when the peer acked it. Not bounded in time: the caller applies the send timeout.
    ///
    /// The caller seals the frame and writes it to the socket itself; only if the socket
    /// is full does the connection's task finish the write.
    pub(crate) async fn send_back(
        &self,
        peer: &str,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<(), NotSentBack> {
        let conn = self
            .live
            .lock()
            .get(peer)
            .and_then(|list| list.last().map(|(_, conn)| conn.clone()))
            .ok_or(NotSentBack::NoSession)?;
        let plaintext = crate::peer::plaintext(payload);
        let (done, acked) = oneshot::channel();
        {
            let mut out = conn.out.lock();
            if out.is_closed() {
                return Err(NotSentBack::NoSession);
            }
            let start = out.buf.len();
            let sealed = {
                let mut responder = conn.responder.lock();
                // Re-keyed by a new handshake since it was listed: not that peer's session.
                if responder.peer_id() == Some(peer) {
                    responder.seal_into(
                        message_type,
                        &plaintext,
                        Some(correlation_id),
                        &mut rand::thread_rng(),
                        &mut out.buf,
                    )
                } else {
                    Err(SessionError::NotEstablished)
                }
            };
            if sealed.is_err() {
                out.buf.truncate(start);
                return Err(NotSentBack::NoSession);
            }
            if out.buf.len() - start > conn.max_frame_len + 1 {
                out.buf.truncate(start);
                return Err(NotSentBack::Failed(AgentError::InvalidPayload(format!(
                    "response exceeds the {}-byte frame limit",
                    conn.max_frame_len
                ))));
            }
            conn.sent_back.lock().push_back(done);
            if !out.busy {
                match out.try_flush() {
                    Flush::Done => {}
                    // The connection's task waits for the socket (or notices it failed).
                    Flush::Blocked | Flush::Closed => {
                        out.busy = true;
                        conn.wake.notify_one();
                    }
                }
            }
        }
        // Not held while waiting: the connection drops `done` when it ends.
        drop(conn);
        match acked.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotSentBack::Failed(e)),
            Err(_) => Err(NotSentBack::NoSession),
        }
    }
}

/// Bounds of inbound connections.
#[derive(Debug, Clone)]
pub(crate) struct InboundLimits {
    pub max_frame_len: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub buffer_budget: usize,
    pub handshakes_per_second: u32,
    pub handshake_burst: u32,
}

/// What the connections of one listener share to stay within the limits.
#[derive(Debug)]
struct Shared {
    limits: InboundLimits,
    budget: BufferBudget,
    rate: HandshakeRate,
}

/// What every inbound connection shares.
#[derive(Debug, Clone)]
pub(crate) struct InboundContext {
    pub inbox: Arc<Inbox>,
    pub local: Arc<LocalIdentity>,
    pub sessions: Arc<InboundSessions>,
}

/// Accepts P2P connections until `cancel`; each runs on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    context: InboundContext,
    limits: InboundLimits,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = InboundSlots::new(limits.max_connections, limits.max_per_ip);
    let shared = Arc::new(Shared {
        budget: BufferBudget::new(limits.buffer_budget, READ_CHUNK),
        rate: HandshakeRate::new(
            limits.handshakes_per_second,
            limits.handshake_burst,
            crate::defaults::RATE_TRACKED_ADDRESSES,
        ),
        limits,
    });
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match slots.admit(peer.ip(), Instant::now()) {
                Ok(slot) => {
                    tracker.spawn(handle_connection(
                        stream,
                        peer.ip(),
                        context.clone(),
                        shared.clone(),
                        cancel.clone(),
                        slot,
                    ));
                }
                Err(refused) => {
                    tracing::debug!(%peer, ?refused, "no inbound slot for this source; closing");
                    drop(stream);
                }
            },
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// The application-facing form of an opened message.
pub(crate) fn to_message(m: IncomingMessage) -> Message {
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
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether `line` is a handshake (which costs us a key exchange).
fn is_handshake(line: &[u8]) -> bool {
    matches!(
        Frame::parse_borrowed(line),
        Ok(ParsedFrame::Other(Frame::Handshake { .. }))
    )
}

/// The stage of a connection for eviction.
fn stage(responder: &Responder) -> Stage {
    if responder.is_authenticated() {
        Stage::Authenticated
    } else if responder.is_established() {
        Stage::Unauthenticated
    } else {
        Stage::Handshaking
    }
}

async fn handle_connection(
    stream: TcpStream,
    ip: IpAddr,
    context: InboundContext,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    slot: Slot,
) {
    let limits = &shared.limits;
    let mut charge: BufferCharge = shared.budget.charge();
    let mut stage_seen = Stage::Handshaking;
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(writer);
    let inbox = &context.inbox;
    let responder = if context.local.authenticates() {
        Responder::with_identity(context.local.identity().clone(), context.local.policy())
    } else {
        Responder::new()
    };
    let conn = Arc::new(InboundConn {
        responder: Mutex::new(responder),
        out: Mutex::new(Out::new(writer.clone())),
        sent_back: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        max_frame_len: limits.max_frame_len,
    });
    // Once authenticated: our entry in `InboundSessions`.
    let mut listed: Option<Listed> = None;
    let mut decoder = LineDecoder::new(limits.max_frame_len);
    let handshake_deadline = Instant::now() + limits.handshake_timeout;
    let mut last_read = Instant::now();
    // Writes what the connection owes (`wire::drain` tries at once, then waits for room).
    let flush = || wire::drain(&conn.out, &writer, limits.write_timeout);

    'conn: loop {
        let idle_deadline = last_read + limits.idle_timeout;
        let deadline = if conn.responder.lock().is_established() {
            idle_deadline
        } else {
            idle_deadline.min(handshake_deadline)
        };
        let room = READ_CHUNK.saturating_sub(decoder.buffered()).max(MIN_READ);
        if charge.cover(decoder.grown_capacity(room)).is_err() {
            tracing::debug!(%ip, "inbound buffer budget spent; closing");
            Frame::error(errors::OVERLOADED).encode_into(&mut conn.out.lock().buf);
            let _ = flush().await;
            break;
        }
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            // A newcomer took our slot (we were the least useful connection).
            _ = slot.evicted.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            // A response writer found the socket full: wait for it on its behalf.
            _ = conn.wake.notified() => {
                if !flush().await {
                    break;
                }
                continue;
            }
            // Straight into the decoder's buffer: no copy of what was read.
            read = reader.read(decoder.read_buf(room)) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last_read = Instant::now();
        decoder.commit(n);
        let mut close = false;
        let mut delivered_any = false;
        loop {
            let output = match decoder.next_line() {
                Ok(Some(line)) => {
                    let mut responder = conn.responder.lock();
                    if responder.awaits_handshake()
                        && is_handshake(line)
                        && !shared.rate.allow(ip, Instant::now())
                    {
                        tracing::debug!(%ip, "handshake rate exceeded; closing");
                        ResponderOutput::SendAndClose(Frame::error(errors::RATE_LIMITED))
                    } else {
                        responder.handle_line(line, &mut rand::thread_rng())
                    }
                }
                Ok(None) => break,
                Err(_) => conn.responder.lock().line_too_long(),
            };
            match output {
                ResponderOutput::Nothing => {}
                // The initiator acked a message we sent back on this session.
                ResponderOutput::Acked(_) => {
                    let done = conn.sent_back.lock().pop_front();
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                }
                ResponderOutput::Send(frame) => frame.encode_into(&mut conn.out.lock().buf),
                ResponderOutput::SendAndClose(frame) => {
                    frame.encode_into(&mut conn.out.lock().buf);
                    close = true;
                    break;
                }
                ResponderOutput::Deliver { message, ack } => {
                    // Listed before the application sees the message, so that its
                    // response finds this session.
                    relist(&conn, &mut listed, &context.sessions);
                    match inbox.try_deliver(to_message(message)) {
                        Ok(()) => {}
                        Err(Refused::Closed) => break 'conn,
                        Err(Refused::Full(msg)) => {
                            // The application is behind: send what we owe, then wait for room
                            // without reading further, which slows the sender down.
                            if !flush().await {
                                break 'conn;
                            }
                            let delivered = tokio::select! {
                                biased;
                                _ = cancel.cancelled() => break 'conn,
                                d = inbox.deliver(*msg) => d,
                            };
                            if delivered.is_err() {
                                break 'conn;
                            }
                            // Time spent waiting for the application is not idleness.
                            last_read = Instant::now();
                        }
                    }
                    ack.encode_into(&mut conn.out.lock().buf);
                    delivered_any = true;
                }
            }
            let full = conn.out.lock().buf.len() >= FLUSH_AT;
            if full && !flush().await {
                break 'conn;
            }
        }
        if delivered_any && !close {
            // Let the application run before the acks go out: a response it sends at once
            // (a request's) then leaves in the same write as the ack, and the requester
            // reads both at once.
            wire::let_others_write_first().await;
        }
        if !flush().await || close {
            break;
        }
        let now_stage = stage(&conn.responder.lock());
        if delivered_any || now_stage != stage_seen {
            stage_seen = now_stage;
            slot.useful(now_stage, Instant::now());
        }
        relist(&conn, &mut listed, &context.sessions);
    }
    drop(listed);
    conn.out.lock().close();
    conn.sent_back.lock().clear();
    // The last handle on the write side: dropping it shuts it down.
    drop(writer);
}

/// Lists the session once authenticated; unlists it if a new handshake re-keyed it (as
/// someone else, or as 2.0): what we sent back before is then lost.
fn relist(conn: &Arc<InboundConn>, listed: &mut Option<Listed>, sessions: &Arc<InboundSessions>) {
    let responder = conn.responder.lock();
    let peer = responder
        .is_authenticated()
        .then(|| responder.peer_id())
        .flatten();
    if listed.as_ref().map(|l| l.peer.as_str()) != peer {
        let peer = peer.map(str::to_owned);
        drop(responder);
        *listed = peer.map(|p| sessions.list(&p, conn));
        conn.sent_back.lock().clear();
    }
}
