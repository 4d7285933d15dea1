//! `/ws`: the upgrade (connection cap, client address) and one session loop per
//! WebSocket. The loop is generic over a message `Stream + Sink`, so it runs on axum's
//! socket in the server and on channels in tests.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use m2m_proto::hub::{Challenge, CLOSE_SUPERSEDED};
use tokio::sync::OwnedSemaphorePermit;

use crate::address;
use crate::codes;
use crate::http::{json_error, ClientAddr};
use crate::state::{error_text, HubState, Session};

/// Close code: going away (hub shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: message too big.
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: normal (idle client).
const CLOSE_NORMAL: u16 = 1000;
/// Read buffer per connection. Hub messages are small; 100k connections × 4 KiB stays far
/// inside the memory budget, and a larger message simply grows the buffer for its read.
const READ_BUFFER: usize = 4 * 1024;

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(state): State<Arc<HubState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return json_error(StatusCode::BAD_REQUEST, codes::UPGRADE_REQUIRED);
    };
    if state.shutdown.is_cancelled() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, codes::SHUTTING_DOWN);
    }
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        state
            .metrics
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        return json_error(StatusCode::SERVICE_UNAVAILABLE, codes::TOO_MANY_CONNECTIONS);
    };
    let ip = address::client_ip(peer, &headers, state.config.trust_proxy);
    let limits = &state.config.limits;
    let hard = limits.hard_max_message_bytes.max(limits.max_message_bytes);
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(hard.saturating_mul(4))
        .max_message_size(hard)
        .max_frame_size(hard)
        .on_upgrade(move |socket| {
            let tracker = state.sessions.clone();
            tracker.track_future(run_session(state, socket, ip, permit))
        })
        .into_response()
}

/// Serves one WebSocket until it closes, the client idles out, the hub shuts down, or a
/// newer registration takes over one of its agents (2.1); then its agents go offline. The
/// first message is the 2.1 challenge `{"event":"challenge","nonce":…}` (original agents
/// ignore unsolicited messages).
pub(crate) async fn run_session<S>(
    state: Arc<HubState>,
    mut socket: S,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
) where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    state.accepted.fetch_add(1, Ordering::Relaxed);
    state.open.fetch_add(1, Ordering::Relaxed);
    let limits = state.config.limits.clone();
    let mut session = Session::new(ip, limits.request_burst);
    let shutdown = state.shutdown.clone();
    let evicted = session.evicted();
    let challenge = serde_json::to_string(&Challenge::new(session.nonce()))
        .unwrap_or_else(|_| String::from("{}"));
    if send(&mut socket, challenge, &state).await.is_err() {
        state.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    loop {
        // A registered agent may stay quiet (the sweep judges it); an anonymous client
        // that says nothing only holds a slot.
        let registered = session.is_registered();
        let idle = async {
            if registered {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(limits.idle_timeout).await
            }
        };
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                close(&mut socket, CLOSE_GOING_AWAY, "hub shutting down", &state).await;
                break;
            }
            _ = evicted.cancelled() => {
                close(&mut socket, CLOSE_SUPERSEDED, "superseded", &state).await;
                break;
            }
            _ = idle => {
                close(&mut socket, CLOSE_NORMAL, "idle", &state).await;
                break;
            }
            next = socket.next() => next,
        };
        let text = match next {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Err(e)) => {
                if is_too_big(e) {
                    state.metrics.oversized.fetch_add(1, Ordering::Relaxed);
                    let reply = error_text(codes::MESSAGE_TOO_LARGE, None);
                    let _ = send(&mut socket, reply, &state).await;
                    close(&mut socket, CLOSE_TOO_BIG, codes::MESSAGE_TOO_LARGE, &state).await;
                }
                break;
            }
            Some(Ok(Message::Text(t))) => state.handle_text(&mut session, t.as_str()).await,
            // The original reads binary frames as text too.
            Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b) {
                Ok(t) => state.handle_text(&mut session, t).await,
                Err(_) => error_text(codes::INVALID_JSON, None),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        if send(&mut socket, text, &state).await.is_err() {
            break;
        }
    }
    state.close_session(&mut session).await;
    state.open.fetch_sub(1, Ordering::Relaxed);
}

async fn send<S>(socket: &mut S, text: String, state: &HubState) -> Result<(), ()>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    match tokio::time::timeout(
        state.write_timeout(),
        socket.send(Message::Text(text.into())),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close<S>(socket: &mut S, code: u16, reason: &'static str, state: &HubState)
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(
        state.write_timeout(),
        socket.send(Message::Close(Some(frame))),
    )
    .await;
}

fn is_too_big(e: axum::Error) -> bool {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => matches!(*e, tungstenite::Error::Capacity(_)),
        Err(_) => false,
    }
}
