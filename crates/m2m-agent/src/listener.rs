//! The P2P responder (PROTOCOL.md A4): an accept loop and one task per inbound connection.
//!
//! Bytes → [`LineDecoder`] (refuses lines over the frame limit) → [`Responder`] (the protocol
//! decisions) → frames written back in order, coalesced into one write per read. A delivered
//! message goes to the [`Inbox`] and is acked only once the inbox took it; while the
//! application's queue is full this connection stops reading, so the sender stops getting
//! acks. Bounds: a connection cap (a semaphore; over it, connections are closed at once), a
//! handshake deadline, an idle deadline and a write timeout.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use m2m_proto::session::IncomingMessage;
use m2m_proto::{LineDecoder, Responder, ResponderOutput};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::inbox::{Inbox, Refused};
use crate::message::Message;

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// Pending output is flushed once it reaches this size, even mid-read.
const FLUSH_AT: usize = 256 * 1024;

/// Bounds of inbound connections.
#[derive(Debug, Clone)]
pub(crate) struct InboundLimits {
    pub max_frame_len: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// Accepts P2P connections until `cancel`; each runs on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    inbox: Arc<Inbox>,
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
                        inbox.clone(),
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
    inbox: Arc<Inbox>,
    limits: Arc<InboundLimits>,
    cancel: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut responder = Responder::new();
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
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
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
                // `Acked` answers messages a 2.1 responder sends back; a 2.0 one sends none.
                ResponderOutput::Nothing | ResponderOutput::Acked(_) => {}
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
    }
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
