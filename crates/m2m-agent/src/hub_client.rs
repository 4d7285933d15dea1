//! The hub's WebSocket (PROTOCOL.md A2): one connection, requests multiplexed by
//! correlationId.
//!
//! [`HubClient::request`] gives each request a fresh 16-hex-char correlationId, parks a
//! oneshot under it and writes the JSON text; the connection task reads replies and wakes the
//! matching request. Messages with no waiting request (a 2.1 `{"event":"challenge"}`, late
//! replies) are ignored. When the socket closes, every waiting request fails and
//! [`HubClient::closed`] resolves, which is what the agent's supervisor waits for.
//!
//! Relay (docs/RELAY.md): once [`HubClient::attach_relay`] got the hub's ok, binary messages
//! are relay frames, handed to the WebSocket's [`RelayClient`]; the frames its streams queue
//! are written as binary messages, a batch of them per flush. Before that (and on a 2.0 hub,
//! forever) no binary frame is sent, and a binary message is read as text, as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{SinkExt, StreamExt};
use m2m_proto::hub::{HubRequest, CLOSE_SUPERSEDED, STATUS_ERROR};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{AgentError, Result};
use crate::relay::{OnOpen, RelayClient};

use crate::defaults::{
    HUB_OUTGOING_QUEUE as OUTGOING_QUEUE, MAX_HUB_REPLY, RELAY_EARLY_FRAMES, RELAY_WRITE_BATCH,
};

/// Whether this WebSocket carries relay frames.
enum RelaySlot {
    /// Not attached: binary messages are read as text.
    Off,
    /// The `relay` action is on its way: frames that arrive before its reply is handled
    /// are kept for the relay client.
    Early(Vec<Vec<u8>>),
    /// Attached.
    On(Arc<RelayClient>),
}

/// One WebSocket connection to the hub; a reconnect makes a new one (our presence across
/// them is [`HubPresence`](crate::hub_presence::HubPresence)). Cheap to clone.
#[derive(Clone)]
pub(crate) struct HubClient {
    inner: Arc<Inner>,
}

struct Inner {
    outgoing: mpsc::Sender<String>,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    closed: CancellationToken,
    timeout: Duration,
    /// The hub closed us with 4001: our identity registered again elsewhere.
    superseded: AtomicBool,
    /// Relay frames to write (binary).
    frames: mpsc::UnboundedSender<Vec<u8>>,
    relay: Mutex<RelaySlot>,
    /// Mailbox: where the hub's `mail` / `mail_drained` events go, once subscribed.
    mail_events: Mutex<Option<mpsc::Sender<Value>>>,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("closed", &self.is_closed())
            .field("pending", &self.inner.pending.lock().len())
            .finish()
    }
}

/// A fresh correlationId: 16 hex chars, as the original SDK makes them.
pub(crate) fn correlation_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl HubClient {
    /// Opens the WebSocket at `url`. The connection task is tracked by `tracker` and stops
    /// when `parent` is cancelled.
    pub(crate) async fn connect(
        url: &str,
        timeout: Duration,
        parent: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self> {
        install_crypto_provider();
        let config = WebSocketConfig::default().max_message_size(Some(MAX_HUB_REPLY));
        let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
        let (ws, _) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| AgentError::timeout("hub connect", timeout))?
            .map_err(|e| AgentError::unreachable(url, e))?;
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let (frames, frames_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            outgoing: tx,
            pending: Mutex::new(HashMap::new()),
            closed: parent.child_token(),
            timeout,
            superseded: AtomicBool::new(false),
            frames,
            relay: Mutex::new(RelaySlot::Off),
            mail_events: Mutex::new(None),
        });
        tracker.spawn(run(ws, rx, frames_rx, inner.clone()));
        Ok(HubClient { inner })
    }

    /// Whether the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Whether the hub closed the connection because our identity registered again on a
    /// newer connection (2.1, close code 4001).
    pub(crate) fn is_superseded(&self) -> bool {
        self.inner.superseded.load(Ordering::Acquire)
    }

    /// Resolves when the connection is gone.
    pub(crate) async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Closes the connection (a close frame, then the socket).
    pub(crate) fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Sends the `relay` action `req` and, on the hub's ok, attaches this WebSocket's
    /// [`RelayClient`] (streams the hub opens go to `on_open`).
    pub(crate) async fn attach_relay(
        &self,
        req: HubRequest,
        on_open: Option<OnOpen>,
    ) -> Result<Arc<RelayClient>> {
        {
            let mut slot = self.inner.relay.lock();
            match &*slot {
                RelaySlot::On(client) => return Ok(client.clone()),
                RelaySlot::Early(_) => {}
                RelaySlot::Off => *slot = RelaySlot::Early(Vec::new()),
            }
        }
        let attached = match self
            .request::<m2m_proto::hub::reply::RelayAttached>(req)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                *self.inner.relay.lock() = RelaySlot::Off;
                return Err(e);
            }
        };
        let client = RelayClient::new(attached, self.inner.frames.clone(), on_open);
        let early = {
            let mut slot = self.inner.relay.lock();
            match std::mem::replace(&mut *slot, RelaySlot::On(client.clone())) {
                RelaySlot::Early(frames) => frames,
                RelaySlot::On(other) => {
                    // Another attach won the race: keep its client.
                    *slot = RelaySlot::On(other.clone());
                    return Ok(other);
                }
                RelaySlot::Off => Vec::new(),
            }
        };
        for frame in early {
            if client.on_frame(&frame).is_err() {
                self.close();
            }
        }
        if self.is_closed() {
            client.shutdown();
        }
        Ok(client)
    }

    /// Mailbox: from now on, the hub's `mail` and `mail_drained` events go to the returned
    /// queue (of `capacity`; an event that does not fit is dropped unacked, and the hub
    /// pushes it again after its ack timeout).
    pub(crate) fn mail_events(&self, capacity: usize) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.inner.mail_events.lock() = Some(tx);
        rx
    }

    /// The relay client of this WebSocket, once attached.
    pub(crate) fn relay(&self) -> Option<Arc<RelayClient>> {
        match &*self.inner.relay.lock() {
            RelaySlot::On(client) => Some(client.clone()),
            _ => None,
        }
    }

    /// Sends `req` (its correlationId is replaced) and waits for the matching reply; an
    /// `{"status":"error"}` reply is [`AgentError::Hub`] with the hub's error string.
    pub(crate) async fn request<T: DeserializeOwned>(&self, mut req: HubRequest) -> Result<T> {
        let action = req
            .action_name()
            .map(str::to_owned)
            .unwrap_or_else(|| "hub request".to_owned());
        let id = correlation_id();
        req.correlation_id = Some(Value::String(id.clone()));
        let text = serde_json::to_string(&req)
            .map_err(|e| AgentError::InvalidPayload(format!("hub request: {e}")))?;
        let (tx, rx) = oneshot::channel();
        if self.is_closed() {
            return Err(AgentError::NotConnected);
        }
        self.inner.pending.lock().insert(id.clone(), tx);
        let timeout = self.inner.timeout;
        let outcome = tokio::time::timeout(timeout, async {
            self.inner
                .outgoing
                .send(text)
                .await
                .map_err(|_| AgentError::NotConnected)?;
            rx.await.map_err(|_| AgentError::NotConnected)
        })
        .await;
        let reply = match outcome {
            Ok(r) => r,
            Err(_) => Err(AgentError::timeout(format!("hub {action}"), timeout)),
        };
        if reply.is_err() {
            self.inner.pending.lock().remove(&id);
        }
        parse_reply(reply?)
    }
}

fn parse_reply<T: DeserializeOwned>(reply: Value) -> Result<T> {
    if reply.get("status").and_then(Value::as_str) == Some(STATUS_ERROR) {
        let error = match reply.get("error") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "unknown error".to_owned(),
        };
        return Err(AgentError::Hub(error));
    }
    serde_json::from_value(reply).map_err(|e| AgentError::Hub(format!("malformed reply: {e}")))
}

/// rustls needs a process-wide crypto provider; this crate builds with `ring` only.
fn install_crypto_provider() {
    // Already installed (by us or the application) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Writes `first` and the relay frames queued behind it (up to a batch), then flushes.
async fn write_frames(
    ws: &mut Ws,
    first: Vec<u8>,
    frames: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> std::result::Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.feed(WsMessage::binary(first)).await?;
    for _ in 1..RELAY_WRITE_BATCH {
        match frames.try_recv() {
            Ok(frame) => ws.feed(WsMessage::binary(frame)).await?,
            Err(_) => break,
        }
    }
    ws.flush().await
}

/// A binary message from the hub: a relay frame once attached, else text as before.
/// False when the WebSocket must close (a malformed frame).
fn on_binary(inner: &Inner, bytes: &[u8]) -> bool {
    let client = {
        let mut slot = inner.relay.lock();
        match &mut *slot {
            RelaySlot::Off => None,
            RelaySlot::Early(frames) => {
                if frames.len() < RELAY_EARLY_FRAMES {
                    frames.push(bytes.to_vec());
                }
                return true;
            }
            RelaySlot::On(client) => Some(client.clone()),
        }
    };
    match client {
        Some(client) => match client.on_frame(bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "hub sent a malformed relay frame");
                false
            }
        },
        None => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                dispatch(inner, text);
            }
            true
        }
    }
}

async fn run(
    mut ws: Ws,
    mut outgoing: mpsc::Receiver<String>,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    inner: Arc<Inner>,
) {
    let write_timeout = inner.timeout;
    loop {
        tokio::select! {
            biased;
            _ = inner.closed.cancelled() => {
                let _ = tokio::time::timeout(write_timeout, ws.close(None)).await;
                break;
            }
            Some(text) = outgoing.recv() => {
                let sent = tokio::time::timeout(write_timeout, ws.send(WsMessage::text(text))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::debug!("hub write failed or timed out");
                    break;
                }
            }
            Some(frame) = frames.recv() => {
                let sent = tokio::time::timeout(write_timeout, write_frames(&mut ws, frame, &mut frames)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::debug!("hub relay write failed or timed out");
                    break;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => dispatch(&inner, text.as_str()),
                Some(Ok(WsMessage::Binary(bytes))) => {
                    if !on_binary(&inner, &bytes) {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    if frame.is_some_and(|f| u16::from(f.code) == CLOSE_SUPERSEDED) {
                        inner.superseded.store(true, Ordering::Release);
                    }
                    break;
                }
                None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "hub connection failed");
                    break;
                }
            },
        }
    }
    inner.closed.cancel();
    // Dropping the senders fails every waiting request at once.
    inner.pending.lock().clear();
    let relay = std::mem::replace(&mut *inner.relay.lock(), RelaySlot::Off);
    if let RelaySlot::On(client) = relay {
        client.shutdown();
    }
}

fn dispatch(inner: &Inner, text: &str) {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        tracing::debug!("hub sent a message that is not JSON");
        return;
    };
    let id = match value.get("correlationId") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            let event = value.get("event").and_then(Value::as_str);
            if matches!(
                event,
                Some(m2m_proto::mailbox::EVENT_MAIL | m2m_proto::mailbox::EVENT_DRAINED)
            ) {
                if let Some(tx) = inner.mail_events.lock().as_ref() {
                    if tx.try_send(value).is_err() {
                        tracing::debug!("mail event queue full; the hub pushes it again");
                    }
                    return;
                }
            }
            // Unsolicited (e.g. a 2.1 challenge): nothing waits for it.
            tracing::trace!("unsolicited hub message ignored");
            return;
        }
    };
    let waiter = inner.pending.lock().remove(&id);
    if let Some(tx) = waiter {
        let _ = tx.send(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_proto::hub::{Empty, HeartbeatAck};
    use serde_json::json;

    #[test]
    fn replies_are_typed() {
        let ok: HeartbeatAck =
            parse_reply(json!({"status":"ok","timestamp":5,"correlationId":"x"})).unwrap();
        assert_eq!(ok.timestamp, 5);
        let _: Empty = parse_reply(json!({"status":"ok"})).unwrap();
        assert_eq!(
            parse_reply::<Empty>(json!({"status":"error","error":"agent_not_found"})),
            Err(AgentError::Hub("agent_not_found".into()))
        );
        assert!(matches!(
            parse_reply::<HeartbeatAck>(json!({"status":"ok"})),
            Err(AgentError::Hub(_))
        ));
    }

    #[test]
    fn correlation_ids_are_16_hex() {
        let id = correlation_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
