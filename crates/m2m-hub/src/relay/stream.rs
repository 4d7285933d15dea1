//! One attached WebSocket's half of the relay: its stream table, what its client sends
//! ([`Attachment::on_frame`]) and what other tasks queued for it ([`Attachment::on_inbox`]).
//! Owned by the WebSocket's task; nothing here is shared but the [`Port`]s.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use m2m_proto::relay::{
    kind, CloseReason, Opener, RawAgentId, Reachable, RelayFrame, RelayFrameError, SendCredit,
};

use super::rate::ByteBucket;
use super::{Msg, Port, Relay};
use crate::defaults::{RELAY_MIN_FRAME_COST as MIN_FRAME_COST, RELAY_PUSH_BYTES as PUSH_BYTES};
use crate::metrics::{Metrics, Refusal};
use crate::outbox::Outbox;

/// One end of a stream.
#[derive(Debug)]
pub(super) struct End {
    /// The other end's WebSocket and its id for the stream.
    pub(super) peer: Arc<Port>,
    pub(super) peer_stream: u32,
    /// What this end's client may still send (the hub checks it).
    pub(super) send: SendCredit,
    /// Last DATA in either direction.
    pub(super) last_data: Instant,
    /// This end's client opened the stream (the gauge counts streams there).
    pub(super) opener: bool,
}

/// A relay frame that breaks the rules of docs/RELAY.md badly enough to close the
/// WebSocket (1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    /// The message is not a frame.
    #[error("malformed relay frame: {0}")]
    Frame(#[from] RelayFrameError),
    /// An OPEN with an even (hub-side) id.
    #[error("relay OPEN with an even stream id")]
    Parity,
}

/// The relay state of one attached WebSocket (what it receives: [`super::inbox`]).
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) port: Arc<Port>,
    /// Routable and answered (false while the reachability probe runs).
    pub(crate) active: bool,
    /// The probe's result (the `reachable` of the reply and the record).
    pub(crate) reachable: Option<Reachable>,
    pub(super) streams: HashMap<u32, End>,
    pub(super) outgoing: Vec<(Arc<Port>, Vec<Msg>)>,
    pub(super) outgoing_bytes: usize,
    /// DATA bytes moved into the outbox, released from the budget once written.
    pub(super) written: usize,
    pub(super) spare: Vec<Msg>,
    pub(super) rate: ByteBucket,
}

impl Attachment {
    /// A new attachment on `port`.
    pub(crate) fn new(port: Arc<Port>, relay: &Relay) -> Attachment {
        Attachment {
            port,
            active: false,
            reachable: None,
            streams: HashMap::new(),
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            written: 0,
            spare: Vec::new(),
            rate: ByteBucket::new(relay.config.rate, relay.config.burst),
        }
    }

    pub(super) fn queue(&mut self, to: &Arc<Port>, msg: Msg) {
        if let Msg::Data { bytes, .. } = &msg {
            self.outgoing_bytes += bytes.len();
        }
        match self
            .outgoing
            .iter_mut()
            .rev()
            .find(|(p, _)| Arc::ptr_eq(p, to))
        {
            Some((_, msgs)) => msgs.push(msg),
            None => self.outgoing.push((to.clone(), vec![msg])),
        }
    }

    /// Whether enough is queued towards other WebSockets that it should be pushed now.
    pub(crate) fn should_push(&self) -> bool {
        self.outgoing_bytes >= PUSH_BYTES
    }

    /// Pushes what was queued towards other WebSockets (one lock each). Streams towards a
    /// WebSocket that closed meanwhile are closed with `gone`.
    pub(crate) fn push(&mut self, relay: &Relay, out: &mut Outbox) {
        self.outgoing_bytes = 0;
        for (port, msgs) in std::mem::take(&mut self.outgoing) {
            if let Err(back) = port.push(msgs) {
                for msg in back {
                    if let Msg::Data { bytes, .. } = msg {
                        relay.release(bytes.len());
                    }
                }
                let dead: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|(_, e)| Arc::ptr_eq(&e.peer, &port))
                    .map(|(id, _)| *id)
                    .collect();
                for id in dead {
                    if let Some(end) = self.remove(relay, id) {
                        drop(end);
                        close_frame(out, id, CloseReason::Gone, b"");
                    }
                }
            }
        }
    }

    pub(super) fn remove(&mut self, relay: &Relay, id: u32) -> Option<End> {
        let end = self.streams.remove(&id)?;
        if end.opener {
            relay.streams_open.fetch_sub(1, Ordering::Relaxed);
        }
        Some(end)
    }

    /// Closes stream `id` towards both ends with `reason`.
    pub(super) fn close_both(
        &mut self,
        relay: &Relay,
        id: u32,
        reason: CloseReason,
        out: &mut Outbox,
    ) {
        if let Some(end) = self.remove(relay, id) {
            close_frame(out, id, reason, b"");
            self.queue(
                &end.peer,
                Msg::Close {
                    stream: end.peer_stream,
                    reason,
                    detail: Bytes::new(),
                },
            );
        }
    }

    /// Handles one binary message of this WebSocket's client. Returns how long the reader
    /// must wait before the next one (the rate limit), or the fault that closes the socket.
    pub(crate) fn on_frame(
        &mut self,
        relay: &Relay,
        metrics: &Metrics,
        message: Bytes,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<Option<Duration>, Malformed> {
        // Every frame costs at least MIN_FRAME_COST of the bytes/s budget: control frames
        // make the hub and the other end work too.
        let cost = message.len().max(MIN_FRAME_COST) as u64;
        self.frame(relay, metrics, message, now, out)?;
        let wait = self.rate.take(cost, tokio::time::Instant::now());
        if wait.is_some() {
            metrics.refused(Refusal::RelayRate);
        }
        Ok(wait)
    }

    fn frame(
        &mut self,
        relay: &Relay,
        metrics: &Metrics,
        message: Bytes,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Malformed> {
        match RelayFrame::parse(&message)? {
            RelayFrame::Open { stream, peer } => {
                if Opener::of(stream) != Some(Opener::Client) {
                    return Err(Malformed::Parity);
                }
                self.open(relay, metrics, stream, peer, now, out);
                Ok(())
            }
            RelayFrame::Data { stream, bytes } => {
                let n = bytes.len();
                let Some(end) = self.streams.get_mut(&stream) else {
                    return Ok(());
                };
                if end.send.consume(n).is_err() {
                    metrics.refused(Refusal::RelayProtocol);
                    self.close_both(relay, stream, CloseReason::Protocol, out);
                    return Ok(());
                }
                if !relay.charge(n) {
                    metrics.refused(Refusal::RelayBudget);
                    self.close_both(relay, stream, CloseReason::Budget, out);
                    return Ok(());
                }
                end.last_data = now;
                let (peer, peer_stream) = (end.peer.clone(), end.peer_stream);
                relay.bytes_total.fetch_add(n as u64, Ordering::Relaxed);
                let bytes = message.slice(message.len() - n..);
                self.queue(
                    &peer,
                    Msg::Data {
                        stream: peer_stream,
                        bytes,
                    },
                );
                Ok(())
            }
            RelayFrame::Credit { stream, bytes } => {
                if let Some(end) = self.streams.get(&stream) {
                    let (peer, peer_stream) = (end.peer.clone(), end.peer_stream);
                    self.queue(
                        &peer,
                        Msg::Credit {
                            stream: peer_stream,
                            bytes,
                        },
                    );
                }
                Ok(())
            }
            RelayFrame::Close { stream, reason, .. } => {
                if let Some(end) = self.remove(relay, stream) {
                    // The detail is forwarded as sent (it parsed: at most 256 bytes of UTF-8).
                    let detail = message.slice(6..);
                    self.queue(
                        &end.peer,
                        Msg::Close {
                            stream: end.peer_stream,
                            reason,
                            detail,
                        },
                    );
                }
                Ok(())
            }
        }
    }

    fn open(
        &mut self,
        relay: &Relay,
        metrics: &Metrics,
        stream: u32,
        peer: RawAgentId,
        now: Instant,
        out: &mut Outbox,
    ) {
        if self.streams.contains_key(&stream) {
            // The id of a stream still open: the client broke the rules on it.
            metrics.refused(Refusal::RelayProtocol);
            self.close_both(relay, stream, CloseReason::Protocol, out);
            return;
        }
        if self.streams.len() >= relay.config.max_streams as usize {
            metrics.refused(Refusal::RelayStreams);
            close_frame(out, stream, CloseReason::Limit, b"");
            return;
        }
        let Some((dest, dest_stream)) = relay
            .lookup(&peer)
            .and_then(|dest| Some((dest.clone(), dest.next_stream()?)))
        else {
            metrics.refused(Refusal::RelayUnreachable);
            close_frame(out, stream, CloseReason::Unreachable, b"");
            return;
        };
        relay.streams_total.fetch_add(1, Ordering::Relaxed);
        relay.streams_open.fetch_add(1, Ordering::Relaxed);
        self.streams.insert(
            stream,
            End {
                peer: dest.clone(),
                peer_stream: dest_stream,
                send: SendCredit::new(relay.config.window),
                last_data: now,
                opener: true,
            },
        );
        let from = self.port.clone();
        self.queue(
            &dest,
            Msg::Open {
                stream: dest_stream,
                // The verified id of this WebSocket, never one the client wrote.
                peer: from.id,
                from,
                from_stream: stream,
            },
        );
    }
}

/// Queues a CLOSE frame towards this client.
pub(super) fn close_frame(out: &mut Outbox, stream: u32, reason: CloseReason, detail: &[u8]) {
    let mut head = [0u8; 6];
    head[0] = kind::CLOSE;
    head[1..5].copy_from_slice(&stream.to_be_bytes());
    head[5] = reason.code();
    out.push_binary(&head, Bytes::copy_from_slice(detail));
}
