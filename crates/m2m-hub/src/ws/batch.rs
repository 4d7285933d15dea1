//! One turn of a WebSocket's task: answering what has arrived ([`read_batch`]) and the
//! relay's share of it ([`relay_turn`]): relay frames in, what other WebSockets relayed to
//! this one out, batched with the replies. Consecutive `mail`s of a read batch are stored
//! together ([`MailBatch`]).

use std::sync::atomic::Ordering;

use futures_util::{FutureExt, StreamExt};
use m2m_proto::hub::errors;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::{CLOSE_INVALID_PAYLOAD, CLOSE_PROTOCOL, CLOSE_TRY_AGAIN_LATER};
use crate::actions::{MailBatch, Staged};
use crate::client::Client;
use crate::metered::Metered;
use crate::metrics::Refusal;
use crate::outbox::Outbox;
use crate::reply::error_text;
use crate::state::HubState;

/// Answers what has arrived, starting with `next`, until nothing more is readable at once
/// or the outbox is full; relay frames of an attached client go to its attachment.
pub(super) async fn read_batch<S>(
    state: &HubState,
    socket: &mut WebSocketStream<Metered<S>>,
    client: &mut Client,
    out: &mut Outbox,
    mut next: Option<Result<Message, tungstenite::Error>>,
    resume_at: &mut Option<tokio::time::Instant>,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Consecutive `mail`s wait here and are stored in one transaction (before anything
    // else is handled, and before this returns): replies stay in order.
    let mut mails = MailBatch::default();
    loop {
        if !matches!(next, Some(Ok(Message::Text(_)))) {
            mails.flush(state, out).await;
        }
        match next {
            None | Some(Ok(Message::Close(_))) => return End::Closed,
            Some(Err(e)) => {
                if is_too_big(&e) {
                    state.metrics.oversized.fetch_add(1, Ordering::Relaxed);
                    out.push(error_text(errors::MESSAGE_TOO_LARGE, None));
                    return End::TooBig;
                }
                if socket.get_ref().starved() {
                    state.metrics.refused(Refusal::MemoryFrame);
                    return End::CloseWith(CLOSE_TRY_AGAIN_LATER, errors::OVERLOADED);
                }
                if matches!(e, tungstenite::Error::Utf8(_)) {
                    state.metrics.refused(Refusal::InvalidUtf8);
                    return End::CloseWith(CLOSE_INVALID_PAYLOAD, "invalid UTF-8");
                }
                return End::Closed;
            }
            Some(Ok(Message::Text(t))) => {
                socket.get_mut().message_done();
                let reply = match state.stage(client, t.as_str()) {
                    Staged::Mail(m) => {
                        if mails.push(state, m, t.clone()) {
                            mails.flush(state, out).await;
                        }
                        String::new()
                    }
                    Staged::Reply(reply) => {
                        mails.flush(state, out).await;
                        reply
                    }
                    Staged::Run(p) => {
                        mails.flush(state, out).await;
                        state.run_staged(client, p, t.as_str()).await
                    }
                };
                // A deferred reply (`relay` waiting for its probe) comes later.
                if !reply.is_empty() {
                    out.offer(reply, t.as_str(), state);
                }
            }
            Some(Ok(Message::Binary(b))) => {
                socket.get_mut().message_done();
                if let Some(att) = client.attached() {
                    let now = state.instant();
                    match att.on_frame(&state.relay, &state.metrics, b, now, out) {
                        Ok(None) => {}
                        Ok(Some(wait)) => {
                            // Backpressure: nothing more is read until the bytes are paid.
                            *resume_at = Some(tokio::time::Instant::now() + wait);
                            return End::Open;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "relay frame refused");
                            state.metrics.refused(Refusal::RelayProtocol);
                            return End::CloseWith(CLOSE_PROTOCOL, "malformed relay frame");
                        }
                    }
                    if att.should_push() {
                        return End::Open;
                    }
                } else {
                    // The original reads binary frames as text too.
                    match std::str::from_utf8(&b) {
                        Ok(t) => {
                            let reply = state.handle_text(client, t).await;
                            if !reply.is_empty() {
                                out.offer(reply, t, state);
                            }
                        }
                        Err(_) => out.push(error_text(errors::INVALID_JSON, None)),
                    }
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                socket.get_mut().message_done();
            }
        }
        // The batch's replies are not in `out` until it is stored: a batch grows to its
        // own bound (`MAIL_STORE_BATCH`) while `out` holds what came before it.
        if out.is_full() {
            mails.flush(state, out).await;
            return End::Open;
        }
        // `next` is cancel-safe: when nothing is buffered or readable, nothing is lost.
        match socket.next().now_or_never() {
            Some(more) => next = more,
            None => {
                mails.flush(state, out).await;
                return End::Open;
            }
        }
    }
}

/// What a relay turn changed.
pub(super) enum Turn {
    /// Frames only.
    Quiet,
    /// The deferred `relay` reply went out: publish the record's relay fields.
    Attached,
    /// A newer attachment replaced this one: the caller drops it (its streams were closed
    /// `gone`).
    Detached,
}

/// The relay's turn after a read batch or a wake-up: drains the inbox into `out` and
/// pushes what this client relayed.
pub(super) fn relay_turn(state: &HubState, client: &mut Client, out: &mut Outbox) -> Turn {
    let Some(att) = client.relay.as_deref_mut() else {
        return Turn::Quiet;
    };
    let events = att.on_inbox(&state.relay, &state.metrics, state.instant(), out);
    if events.detached {
        att.end(&state.relay, Some(out));
        return Turn::Detached;
    }
    att.push(&state.relay, out);
    if events.attached {
        Turn::Attached
    } else {
        Turn::Quiet
    }
}

/// How a run of received messages ended.
pub(super) enum End {
    /// Nothing more to read for now: write the replies and wait.
    Open,
    /// The client closed (or the connection failed).
    Closed,
    /// The client sent a message over the limit.
    TooBig,
    /// A limit refused the message being received: close with this code and reason.
    CloseWith(u16, &'static str),
}

fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}
