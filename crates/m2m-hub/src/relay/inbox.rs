//! The receiving side of an [`Attachment`]: what other WebSockets' tasks queued for it
//! (frames, the deferred attach reply, detach and sweep requests), and its end.

use std::time::Instant;

use bytes::Bytes;
use m2m_proto::relay::{data_header, kind, CloseReason, SendCredit};

use super::stream::{close_frame, Attachment, End};
use super::{Msg, Relay};
use crate::metrics::{Metrics, Refusal};
use crate::outbox::Outbox;

impl Attachment {
    /// Takes what other tasks queued for this WebSocket into `out`. What else it
    /// brought (the deferred reply went out, a newer attachment replaced this one).
    pub(crate) fn on_inbox(
        &mut self,
        relay: &Relay,
        metrics: &Metrics,
        now: Instant,
        out: &mut Outbox,
    ) -> InboxEvents {
        let mut msgs = std::mem::take(&mut self.spare);
        self.port.take(&mut msgs);
        let mut events = InboxEvents::default();
        for msg in msgs.drain(..) {
            match msg {
                Msg::Open {
                    stream,
                    peer,
                    from,
                    from_stream,
                } => {
                    if self.streams.len() >= relay.config.max_streams as usize {
                        metrics.refused(Refusal::RelayStreams);
                        self.queue(
                            &from,
                            Msg::Close {
                                stream: from_stream,
                                reason: CloseReason::Limit,
                                detail: Bytes::new(),
                            },
                        );
                        continue;
                    }
                    self.streams.insert(
                        stream,
                        End {
                            peer: from,
                            peer_stream: from_stream,
                            send: SendCredit::new(relay.config.window),
                            last_data: now,
                            opener: false,
                        },
                    );
                    let mut head = [0u8; 21];
                    head[0] = kind::OPEN;
                    head[1..5].copy_from_slice(&stream.to_be_bytes());
                    head[5..].copy_from_slice(&peer);
                    out.push_binary(&head, Bytes::new());
                }
                Msg::Data { stream, bytes } => {
                    self.written += bytes.len();
                    if let Some(end) = self.streams.get_mut(&stream) {
                        end.last_data = now;
                        out.push_binary(&data_header(stream), bytes);
                    }
                }
                Msg::Credit { stream, bytes } => {
                    if let Some(end) = self.streams.get_mut(&stream) {
                        if end.send.grant(bytes).is_ok() {
                            let mut head = [0u8; 9];
                            head[0] = kind::CREDIT;
                            head[1..5].copy_from_slice(&stream.to_be_bytes());
                            head[5..].copy_from_slice(&bytes.to_be_bytes());
                            out.push_binary(&head, Bytes::new());
                        } else {
                            metrics.refused(Refusal::RelayProtocol);
                            self.close_both(relay, stream, CloseReason::Protocol, out);
                        }
                    }
                }
                Msg::Close {
                    stream,
                    reason,
                    detail,
                } => {
                    if self.remove(relay, stream).is_some() {
                        close_frame(out, stream, reason, &detail);
                    }
                }
                Msg::Attached { reply, reachable } => {
                    if !self.active {
                        self.active = true;
                        relay.insert(&self.port);
                    }
                    // Also when a second `relay` activated the attachment meanwhile: the
                    // probe's result is stored all the same.
                    self.reachable = reachable;
                    events.attached = true;
                    out.push(reply);
                }
                Msg::Detach => events.detached = true,
                Msg::Sweep => self.sweep(relay, metrics, now, out),
            }
        }
        self.spare = msgs;
        events
    }

    /// Closes (`idle`) the streams with no DATA either way for `stream_idle`.
    fn sweep(&mut self, relay: &Relay, metrics: &Metrics, now: Instant, out: &mut Outbox) {
        let limit = relay.config.stream_idle;
        let idle: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_data) >= limit)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            metrics.refused(Refusal::RelayIdle);
            self.close_both(relay, id, CloseReason::Idle, out);
        }
    }

    /// After the outbox was written: the DATA it held leaves the budget.
    pub(crate) fn written(&mut self, relay: &Relay) {
        relay.release(std::mem::take(&mut self.written));
    }

    /// Ends the attachment (the WebSocket closed, or a newer attachment replaced it): no
    /// more is queued for it, what was is dropped (streams opened towards it are closed
    /// `gone` at their opener), and every stream it had is closed `gone` at the other end
    /// (and, when `out` is given, towards this client too).
    pub(crate) fn end(&mut self, relay: &Relay, mut out: Option<&mut Outbox>) {
        relay.remove(&self.port);
        for msg in self.port.close() {
            match msg {
                Msg::Data { bytes, .. } => relay.release(bytes.len()),
                Msg::Open {
                    from, from_stream, ..
                } => self.queue(
                    &from,
                    Msg::Close {
                        stream: from_stream,
                        reason: CloseReason::Gone,
                        detail: Bytes::new(),
                    },
                ),
                _ => {}
            }
        }
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(end) = self.remove(relay, id) {
                if let Some(out) = out.as_deref_mut() {
                    close_frame(out, id, CloseReason::Gone, b"");
                }
                self.queue(
                    &end.peer,
                    Msg::Close {
                        stream: end.peer_stream,
                        reason: CloseReason::Gone,
                        detail: Bytes::new(),
                    },
                );
            }
        }
        self.written(relay);
        // Other ports only: a closed one hands its messages back, which then hold nothing.
        for (port, msgs) in std::mem::take(&mut self.outgoing) {
            if let Err(back) = port.push(msgs) {
                for msg in back {
                    if let Msg::Data { bytes, .. } = msg {
                        relay.release(bytes.len());
                    }
                }
            }
        }
        self.active = false;
    }
}

/// What the inbox brought besides frames.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct InboxEvents {
    /// The deferred attach reply went out: the attachment is routable now.
    pub(crate) attached: bool,
    /// A newer attachment of the same id replaced this one.
    pub(crate) detached: bool,
}
