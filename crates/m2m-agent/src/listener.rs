//! The P2P responder (PROTOCOL.md A4): an accept loop and one task per inbound connection.
//!
//! Bytes → [`LineDecoder`] (refuses lines over the frame limit) → [`Responder`] (the protocol
//! decisions) → frames written back in order, coalesced into one write per read. A delivered
//! message goes to the [`Inbox`] and is acked only once the inbox took it; while the
//! application's queue is full this connection stops reading, so the sender stops getting
//! acks. Bounds: a connection cap (a semaphore; over it, connections are closed at once), a
//! handshake deadline, an idle deadline and a write timeout.
//!
//! 2.1 (PROTOCOL.md B): while [`LocalIdentity::authenticates`], each connection gets a
//! [`Responder::with_identity`], which authenticates 2.1 initiators and serves 2.0 ones
//! unless the agent refuses unauthenticated peers. Once a session is authenticated it is
//! listed in [`InboundSessions`] under the peer's verified id, so that
//! [`Agent::respond`](crate::Agent::respond) can send the response back on this very
//! connection (sealed by the responder, acked by the initiator): an agent that accepts no
//! inbound connections can still make requests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use m2m_proto::session::IncomingMessage;
use m2m_proto::{LineDecoder, Responder, ResponderOutput};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::AgentError;
use crate::identity::LocalIdentity;
use crate::inbox::{Inbox, Refused};
use crate::message::Message;

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// Pending output is flushed once it reaches this size, even mid-read.
const FLUSH_AT: usize = 256 * 1024;
/// Messages queued to go back on one inbound session before `respond` waits.
const BACK_QUEUE: usize = 64;

/// A message to send back to the initiator of an authenticated inbound session.
pub(crate) struct SendBack {
    message_type: String,
    payload: Value,
    correlation_id: String,
    /// Resolved when the initiator acked it; dropped if the session ends first.
    done: oneshot::Sender<Result<(), AgentError>>,
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

/// One listed session: its key and where to queue messages for it.
type BackRoute = (u64, mpsc::Sender<SendBack>);

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
    rx: mpsc::Receiver<SendBack>,
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
    fn list(self: &Arc<Self>, peer: &str) -> Listed {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(BACK_QUEUE);
        self.live
            .lock()
            .entry(peer.to_owned())
            .or_default()
            .push((key, tx));
        Listed {
            sessions: self.clone(),
            peer: peer.to_owned(),
            key,
            rx,
        }
    }

    /// Sends a message back to `peer` on its newest live authenticated session; resolves
    /// when the peer acked it. Not bounded in time: the caller applies the send timeout.
    pub(crate) async fn send_back(
        &self,
        peer: &str,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<(), NotSentBack> {
        let tx = self
            .live
            .lock()
            .get(peer)
            .and_then(|list| list.last().map(|(_, tx)| tx.clone()))
            .ok_or(NotSentBack::NoSession)?;
        let (done, acked) = oneshot::channel();
        tx.send(SendBack {
            message_type: message_type.to_owned(),
            payload: payload.clone(),
            correlation_id: correlation_id.to_owned(),
            done,
        })
        .await
        .map_err(|_| NotSentBack::NoSession)?;
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
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracker.spawn(handle_connection(
                        stream,
                        context.clone(),
                        limits.clone(),
                        cancel.clone(),
                        permit,
                    ));
                }
                Err(_) => {
                    tracing::debug!(%peer, "inbound connection cap reached; closing");
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

async fn handle_connection(
    stream: TcpStream,
    context: InboundContext,
    limits: Arc<InboundLimits>,
    cancel: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let inbox = &context.inbox;
    let mut responder = if context.local.authenticates() {
        Responder::with_identity(context.local.identity().clone(), context.local.policy())
    } else {
        Responder::new()
    };
    // Once authenticated: our entry in `InboundSessions`, and the messages we sent back that
    // await the initiator's ack (acks come in order).
    let mut listed: Option<Listed> = None;
    let mut sent_back: VecDeque<oneshot::Sender<Result<(), AgentError>>> = VecDeque::new();
    let mut decoder = LineDecoder::new(limits.max_frame_len);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out: Vec<u8> = Vec::new();
    let handshake_deadline = Instant::now() + limits.handshake_timeout;
    let mut last_read = Instant::now();

    'conn: loop {
        let idle_deadline = last_read + limits.idle_timeout;
        let deadline = if responder.is_established() {
            idle_deadline
        } else {
            idle_deadline.min(handshake_deadline)
        };
        let back = async {
            match listed.as_mut() {
                Some(l) => l.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            Some(back) = back => {
                let sealed = responder.seal(
                    &back.message_type,
                    &back.payload,
                    Some(Value::String(back.correlation_id)),
                    &mut rand::thread_rng(),
                );
                // Dropping `done` (not established any more) sends the caller elsewhere.
                if let Ok(frame) = sealed {
                    let start = out.len();
                    frame.encode_into(&mut out);
                    if out.len() - start > limits.max_frame_len + 1 {
                        out.truncate(start);
                        let _ = back.done.send(Err(AgentError::InvalidPayload(format!(
                            "response exceeds the {}-byte frame limit",
                            limits.max_frame_len
                        ))));
                    } else {
                        sent_back.push_back(back.done);
                    }
                }
                if !flush(&mut writer, &mut out, limits.write_timeout).await {
                    break;
                }
                continue;
            }
            read = reader.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last_read = Instant::now();
        decoder.push(&buf[..n]);
        let mut close = false;
        loop {
            let output = match decoder.next_line() {
                Ok(Some(line)) => responder.handle_line(line, &mut rand::thread_rng()),
                Ok(None) => break,
                Err(_) => responder.line_too_long(),
            };
            match output {
                ResponderOutput::Nothing => {}
                // The initiator acked a message we sent back on this session.
                ResponderOutput::Acked(_) => {
                    if let Some(done) = sent_back.pop_front() {
                        let _ = done.send(Ok(()));
                    }
                }
                ResponderOutput::Send(frame) => frame.encode_into(&mut out),
                ResponderOutput::SendAndClose(frame) => {
                    frame.encode_into(&mut out);
                    close = true;
                    break;
                }
                ResponderOutput::Deliver { message, ack } => {
                    match inbox.try_deliver(to_message(message)) {
                        Ok(()) => {}
                        Err(Refused::Closed) => break 'conn,
                        Err(Refused::Full(msg)) => {
                            // The application is behind: send what we owe, then wait for room
                            // without reading further, which slows the sender down.
                            if !flush(&mut writer, &mut out, limits.write_timeout).await {
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
                    ack.encode_into(&mut out);
                }
            }
            if out.len() >= FLUSH_AT && !flush(&mut writer, &mut out, limits.write_timeout).await {
                break 'conn;
            }
        }
        if !flush(&mut writer, &mut out, limits.write_timeout).await || close {
            break;
        }
        // List the session once authenticated; unlist it if a new handshake re-keyed it
        // (as someone else, or as 2.0): what we sent back before is then lost.
        let peer = responder
            .is_authenticated()
            .then(|| responder.peer_id())
            .flatten();
        if listed.as_ref().map(|l| l.peer.as_str()) != peer {
            listed = peer.map(|p| context.sessions.list(p));
            sent_back.clear();
        }
    }
    drop(listed);
    let _ = tokio::time::timeout(limits.write_timeout, writer.shutdown()).await;
}

/// Writes and clears `out`; false when the peer is gone or too slow.
async fn flush(writer: &mut OwnedWriteHalf, out: &mut Vec<u8>, timeout: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = matches!(
        tokio::time::timeout(timeout, writer.write_all(out)).await,
        Ok(Ok(()))
    );
    out.clear();
    ok
}
