//! `/ws`: the upgrade (connection cap, client address) and one client task per
//! WebSocket.
//!
//! The hub does the upgrade itself (the same checks and response as axum's
//! `WebSocketUpgrade`) so that it owns the
//! [`WebSocketStream`]: tungstenite reads frames (and answers pings and closes), while
//! replies are written by the client task straight to the socket, in batches (see
//! [`Outbox`]). Writing through tungstenite would copy every reply into a per-connection
//! buffer that keeps the capacity of the largest reply ever sent: after a few 16 KB
//! `discover` replies, 10,000 idle connections held over 250 MiB that way.

use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use m2m_proto::hub::{Challenge, CLOSE_SUPERSEDED};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

mod batch;

use batch::{read_batch, relay_turn, End, Turn};

use crate::address;
use crate::client::Client;
use crate::defaults::{self, WEBSOCKET_READ_BUFFER as READ_BUFFER};
use crate::http::{json_error, websocket_url, ClientAddr};
use crate::metered::Metered;
use crate::metrics::Refusal;
use crate::outbox::{Outbox, WriteFailed};
use crate::server::{LocalAddr, Ticket, TicketSlot};
use crate::state::HubState;
use m2m_proto::hub::errors;

/// Close code: going away (hub shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: message too big.
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: normal (idle client).
const CLOSE_NORMAL: u16 = 1000;
/// Close code: a text frame that is not UTF-8 (RFC 6455 7.4.1).
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code: protocol error (a malformed relay frame, docs/RELAY.md).
const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: try again later (the memory budget is spent).
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// `GET /ws`.
pub(crate) async fn upgrade(
    State(state): State<Arc<HubState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(accept) = handshake(&parts.method, parts.version, &parts.headers) else {
        return json_error(StatusCode::BAD_REQUEST, errors::UPGRADE_REQUIRED);
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return json_error(StatusCode::BAD_REQUEST, errors::UPGRADE_REQUIRED);
    };
    if state.shutdown.is_cancelled() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, errors::SHUTTING_DOWN);
    }
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        state
            .metrics
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            errors::TOO_MANY_CONNECTIONS,
        );
    };
    let ip = address::client_ip(peer, &parts.headers, state.config.trust_proxy);
    // The connection's admission ticket moves into the client task: from now on it costs
    // what a WebSocket costs (less than an HTTP head: the charge only shrinks).
    let mut ticket = parts
        .extensions
        .get::<TicketSlot>()
        .and_then(|slot| slot.0.lock().take());
    if let Some(ticket) = &mut ticket {
        ticket.resize(defaults::WEBSOCKET_COST);
        if state.config.trust_proxy {
            // Behind a proxy the accept loop saw only the proxy: the share is the
            // forwarded client's.
            let Some(share) = state.admission.share_of(ip) else {
                state.metrics.refused(Refusal::ConnectionsPerIp);
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    errors::TOO_MANY_CONNECTIONS,
                );
            };
            ticket.set_share(share);
        }
    }
    let config = socket_config(&state);
    let local = parts.extensions.get::<LocalAddr>().copied();
    let hub_url: Arc<str> = Arc::from(websocket_url(&state, local));
    // Owned by the hub's WebSocket tracker from the start (shutdown waits for it); the
    // upgrade itself gives way to shutdown.
    let tracker = state.websockets.clone();
    tracker.spawn(async move {
        // A failed or slow upgrade (the client went away) just drops the permit.
        let upgrade = tokio::time::timeout(state.config.limits.upgrade_timeout, on_upgrade);
        let upgraded = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return,
            upgraded = upgrade => match upgraded {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(_)) => return,
                Err(_) => {
                    state.metrics.refused(Refusal::UpgradeTimeout);
                    return;
                }
            },
        };
        let io = Metered::new(
            TokioIo::new(upgraded),
            state.admission.memory.frames.empty(),
        );
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        serve_client(state, socket, ip, Some(hub_url), (permit, ticket)).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Checks an upgrade request as axum's `WebSocketUpgrade` does and returns the
/// `Sec-WebSocket-Accept` of the 101 reply. The server speaks HTTP/1.1 only (axum is
/// built without `http2`), so there is no RFC 8441 `CONNECT` to accept.
fn handshake(method: &Method, version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version > Version::HTTP_11
        || method != Method::GET
        || !header_contains(headers, header::CONNECTION, "upgrade")
        || !header_eq(headers, header::UPGRADE, "websocket")
        || !header_eq(headers, header::SEC_WEBSOCKET_VERSION, "13")
    {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes())).ok()
}

fn header_eq(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether the comma-separated header `key` lists the token `value` (RFC 9110 5.6.1):
/// `Connection: keep-alive, Upgrade` does, `Connection: notupgradeX` does not.
fn header_contains(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers.get_all(&key).iter().any(|h| {
        h.as_bytes()
            .split(|b| *b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(value.as_bytes()))
    })
}

/// The tungstenite configuration of a hub WebSocket.
pub(crate) fn socket_config(state: &HubState) -> WebSocketConfig {
    let limits = &state.config.limits;
    // Relay DATA frames are binary messages of up to 5 + 64 KiB whatever the text limit
    // (text over `max_message_bytes` is refused by the action layer, as before).
    let relay_frame = m2m_proto::relay::DATA_HEADER + m2m_proto::relay::MAX_DATA;
    // A `mail` carries up to `max_sealed` bytes as base64 (docs/MAILBOX.md).
    let mail_frame = if state.config.mailbox.enabled {
        crate::actions::mail_frame_limit(state.config.mailbox.max_sealed)
    } else {
        0
    };
    let hard = limits
        .hard_max_message_bytes
        .max(limits.max_message_bytes)
        .max(relay_frame)
        .max(mail_frame);
    // Only close and pong frames go through tungstenite's writer: they are written at once.
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(hard.saturating_mul(4))
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
}

/// Serves one WebSocket until it closes, the client idles out, the hub shuts down, or a
/// newer registration takes over one of its agents (2.1); then its agents go offline. The
/// first message is the 2.1 challenge `{"event":"challenge","nonce":…}` (original agents
/// ignore unsolicited messages).
///
/// Requests already received are answered before any reply is written: the replies to
/// everything a client pipelined go out in one write ([`crate::defaults::BATCH_REPLIES`], [`crate::defaults::BATCH_BYTES`]).
pub(crate) async fn serve_client<S>(
    state: Arc<HubState>,
    mut socket: WebSocketStream<Metered<S>>,
    ip: IpAddr,
    hub_url: Option<Arc<str>>,
    _held: (OwnedSemaphorePermit, Option<Ticket>),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    state.accepted.fetch_add(1, Ordering::Relaxed);
    state.open.fetch_add(1, Ordering::Relaxed);
    // Only the three quiet limits, not a copy of every limit: what the task keeps across
    // its awaits is part of every WebSocket's memory.
    let limits = &state.config.limits;
    let (first_quiet, idle_quiet, registered_quiet) = (
        limits.first_frame_timeout.min(limits.idle_timeout),
        limits.idle_timeout,
        limits.registered_idle_timeout,
    );
    let timeout = state.write_timeout();
    let mut client = Client::new(ip, state.request_rate, state.instant());
    client.hub_url = hub_url;
    let challenge = serde_json::to_string(&Challenge::new(client.nonce()))
        .unwrap_or_else(|_| String::from("{}"));
    let mut out = Outbox::charged(state.admission.memory.replies.empty());
    out.push(challenge);
    if out.write(&mut socket, timeout, true).await.is_err() {
        state.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    // Registered once as waiters, not once per message.
    let shutdown = state.shutdown.clone();
    let evicted = client.evicted();
    let mut shutting_down = pin!(shutdown.cancelled());
    let mut superseded = pin!(evicted.cancelled());
    // One timer, re-armed lazily: messages only move `heard`; when the timer fires early
    // (the client was heard meanwhile) it is set to the real deadline.
    let mut heard = tokio::time::Instant::now();
    let mut first = true;
    let quiet_limit = move |first: bool, registered: bool| {
        if first {
            first_quiet
        } else if registered {
            registered_quiet
        } else {
            idle_quiet
        }
    };
    let idle = tokio::time::sleep(quiet_limit(true, false));
    let mut idle = pin!(idle);
    // While the relay's bytes/s limit makes the reader wait: until when.
    let mut resume_at: Option<tokio::time::Instant> = None;
    loop {
        let port = client.relay.as_ref().map(|a| a.port.clone());
        let woken = async {
            match &port {
                Some(port) => port.woken().await,
                None => std::future::pending().await,
            }
        };
        // The mailbox subscription's next delivery turn (docs/MAILBOX.md).
        let mail_due = crate::mailbox::turn_due(&client, &state);
        let mut mail_turn = false;
        let resume = async {
            match resume_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            biased;
            _ = &mut shutting_down => {
                close(&mut socket, CLOSE_GOING_AWAY, "hub shutting down", timeout).await;
                break;
            }
            _ = &mut superseded => {
                close(&mut socket, CLOSE_SUPERSEDED, "superseded", timeout).await;
                break;
            }
            _ = &mut idle => {
                let deadline = heard + quiet_limit(first, client.is_registered());
                if deadline > tokio::time::Instant::now() {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                state.metrics.refused(if first {
                    Refusal::FirstFrameTimeout
                } else {
                    Refusal::IdleTimeout
                });
                close(&mut socket, CLOSE_NORMAL, "idle", timeout).await;
                break;
            }
            _ = resume => {
                resume_at = None;
                None
            }
            // Before reading: a client that keeps sending cannot starve its mail.
            _ = mail_due => {
                mail_turn = true;
                None
            }
            // Reading first: every turn drains the inbox too, so a busy inbox cannot keep
            // this client's own frames (its CREDIT among them) from being read.
            next = socket.next(), if resume_at.is_none() => Some(next),
            _ = woken => None,
        };
        let end = match event {
            Some(next) => {
                heard = tokio::time::Instant::now();
                first = false;
                read_batch(
                    &state,
                    &mut socket,
                    &mut client,
                    &mut out,
                    next,
                    &mut resume_at,
                )
                .await
            }
            None => End::Open,
        };
        // What other WebSockets relayed to this one goes out with the replies; what this
        // one relayed to others is handed over, one push per destination.
        match relay_turn(&state, &mut client, &mut out) {
            Turn::Quiet => {}
            Turn::Attached => Box::pin(state.publish_relay(&client)).await,
            Turn::Detached => client.relay = None,
        }
        if mail_turn && matches!(end, End::Open) {
            Box::pin(state.mail_turn(&mut client, &mut out)).await;
        }
        match end {
            End::Open => {
                if let Err(failed) = out.write(&mut socket, timeout, true).await {
                    if failed == WriteFailed::TimedOut {
                        state.metrics.refused(Refusal::WriteTimeout);
                    }
                    break;
                }
                if let Some(att) = client.relay.as_deref_mut() {
                    att.written(&state.relay);
                }
            }
            End::CloseWith(code, reason) => {
                let _ = out.write(&mut socket, timeout, false).await;
                close(&mut socket, code, reason, timeout).await;
                break;
            }
            End::Closed => {
                // Replies to what came before the close still go out. Not through
                // tungstenite, which would first send its answer to the close.
                let _ = out.write(&mut socket, timeout, false).await;
                break;
            }
            End::TooBig => {
                let _ = out.write(&mut socket, timeout, false).await;
                close(
                    &mut socket,
                    CLOSE_TOO_BIG,
                    errors::MESSAGE_TOO_LARGE,
                    timeout,
                )
                .await;
                break;
            }
        }
    }
    if let Some(mut att) = client.relay.take() {
        att.end(&state.relay, None);
    }
    // Mail in flight stays stored: the agent's next subscription gets it.
    if let Some(d) = client.mailbox.take() {
        state.mailbox.unsubscribe(&d.recipient, &d.sub);
    }
    // Once per connection: boxed, so that its future does not enlarge every client task's.
    Box::pin(state.close_client(&mut client)).await;
    state.open.fetch_sub(1, Ordering::Relaxed);
}

async fn close<S>(
    socket: &mut WebSocketStream<S>,
    code: u16,
    reason: &'static str,
    timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(timeout, socket.send(Message::Close(Some(frame)))).await;
}
