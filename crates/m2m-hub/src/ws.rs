//! `/ws`: the upgrade (connection cap, client address) and one session loop per
//! WebSocket.
//!
//! The hub does the upgrade itself (the same checks and response as axum's
//! `WebSocketUpgrade`) so that it owns the
//! [`WebSocketStream`]: tungstenite reads frames (and answers pings and closes), while
//! replies are written by the session straight to the socket, in batches (see
//! [`Outbox`]). Writing through tungstenite would copy every reply into a per-connection
//! buffer that keeps the capacity of the largest reply ever sent: after a few 16 KB
//! `discover` replies, 10,000 idle connections held over 250 MiB that way.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use m2m_proto::hub::{Challenge, CLOSE_SUPERSEDED};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

use crate::address;
use crate::budget::Charge;
use crate::client::Client;
use crate::defaults::{self, BATCH_BYTES, BATCH_REPLIES, WEBSOCKET_READ_BUFFER as READ_BUFFER};
use crate::http::{json_error, ClientAddr};
use crate::metered::Metered;
use crate::metrics::Refusal;
use crate::reply::error_text;
use crate::server::{Ticket, TicketSlot};
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
    // The connection's admission ticket moves into the session: from now on it costs
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
    tokio::spawn(async move {
        // A failed or slow upgrade (the client went away) just drops the permit.
        let upgraded =
            match tokio::time::timeout(state.config.limits.upgrade_timeout, on_upgrade).await {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(_)) => return,
                Err(_) => {
                    state.metrics.refused(Refusal::UpgradeTimeout);
                    return;
                }
            };
        let io = Metered::new(
            TokioIo::new(upgraded),
            state.admission.memory.frames.empty(),
        );
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let tracker = state.sessions.clone();
        tracker
            .track_future(run_session(state, socket, ip, (permit, ticket)))
            .await;
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
    let hard = limits.hard_max_message_bytes.max(limits.max_message_bytes);
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
/// everything a client pipelined go out in one write ([`BATCH_REPLIES`], [`BATCH_BYTES`]).
pub(crate) async fn run_session<S>(
    state: Arc<HubState>,
    mut socket: WebSocketStream<Metered<S>>,
    ip: IpAddr,
    _held: (OwnedSemaphorePermit, Option<Ticket>),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    state.accepted.fetch_add(1, Ordering::Relaxed);
    state.open.fetch_add(1, Ordering::Relaxed);
    let limits = state.config.limits.clone();
    let timeout = state.write_timeout();
    let mut client = Client::new(ip, state.request_rate, state.instant());
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
    let quiet_limit = |first: bool, registered: bool| {
        if first {
            limits.first_frame_timeout.min(limits.idle_timeout)
        } else if registered {
            limits.registered_idle_timeout
        } else {
            limits.idle_timeout
        }
    };
    let idle = tokio::time::sleep(quiet_limit(true, false));
    let mut idle = pin!(idle);
    loop {
        let mut next = tokio::select! {
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
            next = socket.next() => next,
        };
        heard = tokio::time::Instant::now();
        first = false;
        // Answer what has arrived, then write the replies together.
        let end = loop {
            match next {
                None | Some(Ok(Message::Close(_))) => break End::Closed,
                Some(Err(e)) => {
                    if is_too_big(&e) {
                        state.metrics.oversized.fetch_add(1, Ordering::Relaxed);
                        out.push(error_text(errors::MESSAGE_TOO_LARGE, None));
                        break End::TooBig;
                    }
                    if socket.get_ref().starved() {
                        state.metrics.refused(Refusal::MemoryFrame);
                        break End::Refused(CLOSE_TRY_AGAIN_LATER, errors::OVERLOADED);
                    }
                    if matches!(e, tungstenite::Error::Utf8(_)) {
                        state.metrics.refused(Refusal::InvalidUtf8);
                        break End::Refused(CLOSE_INVALID_PAYLOAD, "invalid UTF-8");
                    }
                    break End::Closed;
                }
                Some(Ok(Message::Text(t))) => {
                    socket.get_mut().message_done();
                    let reply = state.handle_text(&mut client, t.as_str()).await;
                    out.offer(reply, t.as_str(), &state);
                }
                // The original reads binary frames as text too.
                Some(Ok(Message::Binary(b))) => {
                    socket.get_mut().message_done();
                    match std::str::from_utf8(&b) {
                        Ok(t) => {
                            let reply = state.handle_text(&mut client, t).await;
                            out.offer(reply, t, &state);
                        }
                        Err(_) => out.push(error_text(errors::INVALID_JSON, None)),
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    socket.get_mut().message_done();
                }
            }
            if out.is_full() {
                break End::Open;
            }
            // `next` is cancel-safe: when nothing is buffered or readable, nothing is lost.
            match socket.next().now_or_never() {
                Some(more) => next = more,
                None => break End::Open,
            }
        };
        match end {
            End::Open => {
                if let Err(failed) = out.write(&mut socket, timeout, true).await {
                    if failed == WriteFailed::TimedOut {
                        state.metrics.refused(Refusal::WriteTimeout);
                    }
                    break;
                }
            }
            End::Refused(code, reason) => {
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
    // Once per connection: boxed, so that its future does not enlarge every session's.
    Box::pin(state.close_client(&mut client)).await;
    state.open.fetch_sub(1, Ordering::Relaxed);
}

/// How a run of received messages ended.
enum End {
    /// Nothing more to read for now: write the replies and wait.
    Open,
    /// The client closed (or the connection failed).
    Closed,
    /// The client sent a message over the limit.
    TooBig,
    /// A limit refused the message being received: close with this code and reason.
    Refused(u16, &'static str),
}

/// Replies waiting to be written, as unmasked text frames (RFC 6455 5.2): a 2–10 byte
/// header each and the reply itself, written with one vectored write. Nothing is copied,
/// and nothing outlives the write but a one-slot list.
///
/// Reply bytes beyond [`defaults::FREE_REPLY_BYTES`] are charged to the memory budget until
/// written; a reply the budget cannot hold is replaced by an `overloaded` error.
#[derive(Debug, Default)]
struct Outbox {
    frames: Vec<(FrameHeader, String)>,
    bytes: usize,
    charge: Option<Charge>,
}

impl Outbox {
    /// An outbox whose replies are charged to `charge`'s budget.
    fn charged(charge: Charge) -> Outbox {
        Outbox {
            charge: Some(charge),
            ..Outbox::default()
        }
    }

    /// Queues the reply to `request`, or, when the budget cannot hold it, an `overloaded`
    /// error with the request's correlationId.
    fn offer(&mut self, reply: String, request: &str, state: &HubState) {
        let total = self.bytes + reply.len();
        let fits = match &mut self.charge {
            Some(charge) if total > defaults::FREE_REPLY_BYTES => {
                charge.resize(total - defaults::FREE_REPLY_BYTES)
            }
            _ => true,
        };
        if fits {
            self.push(reply);
        } else {
            drop(reply);
            state.metrics.refused(Refusal::MemoryReply);
            self.push(error_text(errors::OVERLOADED, correlation_id(request)));
        }
    }

    fn push(&mut self, text: String) {
        self.bytes += text.len();
        self.frames.push((FrameHeader::text(text.len()), text));
    }

    fn is_full(&self) -> bool {
        self.frames.len() >= BATCH_REPLIES || self.bytes >= BATCH_BYTES
    }

    /// Writes and flushes the frames within `timeout` (tried once at once, so that a
    /// write the socket takes right away sets no timer), and empties the box. With
    /// `after_tungstenite`, whatever tungstenite still holds (a pong) goes first, so that
    /// frames never interleave.
    async fn write<S>(
        &mut self,
        socket: &mut WebSocketStream<S>,
        timeout: Duration,
        after_tungstenite: bool,
    ) -> Result<(), WriteFailed>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames = &self.frames;
        let result = within(timeout, async move {
            if after_tungstenite {
                socket.flush().await.map_err(|_| ())?;
            }
            write_frames(socket.get_mut(), frames).await.map_err(|_| ())
        })
        .await;
        if self.frames.capacity() > 4 {
            self.frames = Vec::new();
        } else {
            self.frames.clear();
        }
        self.bytes = 0;
        if let Some(charge) = &mut self.charge {
            charge.resize(0);
        }
        result
    }
}

/// Runs `write`, bounded by `timeout`; a write that completes on its first poll (the
/// usual case: the socket has room) does not touch the timer.
async fn within<F>(timeout: Duration, write: F) -> Result<(), WriteFailed>
where
    F: Future<Output = Result<(), ()>>,
{
    let mut write = pin!(write);
    match write.as_mut().now_or_never() {
        Some(result) => result.map_err(|()| WriteFailed::Error),
        None => match tokio::time::timeout(timeout, write).await {
            Ok(result) => result.map_err(|()| WriteFailed::Error),
            Err(_) => Err(WriteFailed::TimedOut),
        },
    }
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFailed {
    /// The connection failed.
    Error,
    /// The client did not read fast enough (`write_timeout`).
    TimedOut,
}

/// The header of an unfragmented, unmasked text frame.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    fn text(payload: usize) -> FrameHeader {
        let mut bytes = [0u8; 10];
        bytes[0] = 0x81; // FIN + text
        let len = match payload {
            0..=125 => {
                bytes[1] = payload as u8;
                2
            }
            126..=0xffff => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
                10
            }
        };
        FrameHeader { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes every frame (vectored: headers and replies in place) and flushes.
async fn write_frames<W>(w: &mut W, frames: &[(FrameHeader, String)]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(frames.len() * 2);
    for (header, text) in frames {
        slices.push(IoSlice::new(header.as_bytes()));
        if !text.is_empty() {
            slices.push(IoSlice::new(text.as_bytes()));
        }
    }
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    w.flush().await
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

/// The correlationId of a request, for an error that replaces its reply (rare path: the
/// request is parsed again).
fn correlation_id(request: &str) -> Option<serde_json::Value> {
    m2m_proto::hub::HubRequest::parse(request)
        .ok()
        .and_then(|r| r.correlation_id)
}

fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames the outbox writes read back, through tungstenite's client, as the same
    /// messages, whatever their size and around tungstenite's own pongs.
    #[tokio::test]
    async fn outbox_frames_read_back_as_the_replies() {
        let (server_io, client_io) = tokio::io::duplex(8 * 1024);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let sizes = [0usize, 1, 125, 126, 127, 65535, 65536, 70_000];
        let replies: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut s = "é".repeat(n / 2);
                s.push_str(&"x".repeat(n % 2));
                s.push_str(&i.to_string());
                s
            })
            .collect();
        let reader = tokio::spawn(async move {
            client
                .send(Message::Ping(b"p".to_vec().into()))
                .await
                .unwrap();
            client.send(Message::Text("hello".into())).await.unwrap();
            let mut got = Vec::new();
            while got.len() < 8 {
                match client.next().await.unwrap().unwrap() {
                    Message::Text(t) => got.push(t.as_str().to_owned()),
                    Message::Pong(p) => assert_eq!(&p[..], b"p"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        // The ping is answered by tungstenite while reading, before the replies go out.
        match server.next().await.unwrap().unwrap() {
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(server.next().await, Some(Ok(Message::Text(_)))));
        let mut out = Outbox::default();
        for (i, r) in replies.iter().enumerate() {
            out.push(r.clone());
            if i % 3 == 2 {
                out.write(&mut server, Duration::from_secs(5), true)
                    .await
                    .unwrap();
            }
        }
        out.write(&mut server, Duration::from_secs(5), true)
            .await
            .unwrap();
        assert!(out.frames.is_empty() && out.frames.capacity() <= 4);
        assert_eq!(reader.await.unwrap(), replies);
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(FrameHeader::text(0).as_bytes(), [0x81, 0]);
        assert_eq!(FrameHeader::text(125).as_bytes(), [0x81, 125]);
        assert_eq!(FrameHeader::text(126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(FrameHeader::text(16184).as_bytes(), [0x81, 126, 0x3f, 0x38]);
        assert_eq!(FrameHeader::text(65535).as_bytes(), [0x81, 126, 0xff, 0xff]);
        assert_eq!(
            FrameHeader::text(65536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }
}
