//! One attached WebSocket's half of the relay: its stream table, what its client sends
//! ([`Attachment::on_frame`]) and what other tasks queued for it ([`Attachment::on_inbox`]).
//! Owned by the WebSocket's task; nothing here is shared but the [`Port`]s.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use m2m_proto::relay::{
    data_header, kind, CloseReason, Opener, RawAgentId, Reachable, RelayFrame, RelayFrameError,
    SendCredit,
};

use super::{Msg, Port, Relay};
use crate::metrics::{Metrics, Refusal};
use crate::outbox::Outbox;

/// Queued messages towards other WebSockets are pushed once this many bytes are waiting
/// (or at the end of a read batch, whichever is first): a few DATA frames per push.
const PUSH_BYTES: usize = 256 * 1024;

/// One end of a stream.
#[derive(Debug)]
struct End {
    /// The other end's WebSocket and its id for the stream.
    peer: Arc<Port>,
    peer_stream: u32,
    /// What this end's client may still send (the hub checks it).
    send: SendCredit,
    /// Last DATA in either direction.
    last_data: Instant,
    /// This end's client opened the stream (the gauge counts streams there).
    opener: bool,
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

/// The relay state of one attached WebSocket.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) port: Arc<Port>,
    /// Routable and answered (false while the reachability probe runs).
    pub(crate) active: bool,
    /// The probe's result (the `reachable` of the reply and the record).
    pub(crate) reachable: Option<Reachable>,
    streams: HashMap<u32, End>,
    outgoing: Vec<(Arc<Port>, Vec<Msg>)>,
    outgoing_bytes: usize,
    /// DATA bytes moved into the outbox, released from the budget once written.
    written: usize,
    spare: Vec<Msg>,
    rate: ByteBucket,
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

    fn queue(&mut self, to: &Arc<Port>, msg: Msg) {
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

    fn remove(&mut self, relay: &Relay, id: u32) -> Option<End> {
        let end = self.streams.remove(&id)?;
        if end.opener {
            relay.streams_open.fetch_sub(1, Ordering::Relaxed);
        }
        Some(end)
    }

    /// Closes stream `id` towards both ends with `reason`.
    fn close_both(&mut self, relay: &Relay, id: u32, reason: CloseReason, out: &mut Outbox) {
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
        match RelayFrame::parse(&message)? {
            RelayFrame::Open { stream, peer } => {
                if Opener::of(stream) != Some(Opener::Client) {
                    return Err(Malformed::Parity);
                }
                self.open(relay, metrics, stream, peer, now, out);
                Ok(None)
            }
            RelayFrame::Data { stream, bytes } => {
                let n = bytes.len();
                let Some(end) = self.streams.get_mut(&stream) else {
                    return Ok(None);
                };
                if end.send.consume(n).is_err() {
                    metrics.refused(Refusal::RelayProtocol);
                    self.close_both(relay, stream, CloseReason::Protocol, out);
                    return Ok(None);
                }
                if !relay.charge(n) {
                    metrics.refused(Refusal::RelayBudget);
                    self.close_both(relay, stream, CloseReason::Budget, out);
                    return Ok(None);
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
                let wait = self.rate.take(n as u64, tokio::time::Instant::now());
                if wait.is_some() {
                    metrics.refused(Refusal::RelayRate);
                }
                Ok(wait)
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
                Ok(None)
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
                Ok(None)
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

    /// Takes what other tasks queued for this WebSocket into `out`. Returns `false` when
    /// the attachment ended (a newer one replaced it: the caller drops it).
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
                        self.reachable = reachable;
                        relay.insert(&self.port);
                        events.attached = true;
                    }
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

/// Queues a CLOSE frame towards this client.
fn close_frame(out: &mut Outbox, stream: u32, reason: CloseReason, detail: &[u8]) {
    let mut head = [0u8; 6];
    head[0] = kind::CLOSE;
    head[1..5].copy_from_slice(&stream.to_be_bytes());
    head[5] = reason.code();
    out.push_binary(&head, Bytes::copy_from_slice(detail));
}

/// Relayed bytes per second of one WebSocket: a token bucket that may go into debt, so a
/// frame is never refused; the reader waits until the debt is paid (backpressure).
#[derive(Debug)]
struct ByteBucket {
    rate: u64,
    burst: u64,
    tokens: i64,
    at: Option<tokio::time::Instant>,
}

impl ByteBucket {
    fn new(rate: u64, burst: u64) -> ByteBucket {
        let burst = burst.max(1);
        ByteBucket {
            rate,
            burst,
            tokens: i64::try_from(burst).unwrap_or(i64::MAX),
            at: None,
        }
    }

    /// Takes `n` bytes at `now`; how long to wait before reading more, when in debt.
    fn take(&mut self, n: u64, now: tokio::time::Instant) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let burst = i64::try_from(self.burst).unwrap_or(i64::MAX);
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_nanos();
            let refill = elapsed.saturating_mul(u128::from(self.rate)) / 1_000_000_000;
            let refill = i64::try_from(refill).unwrap_or(i64::MAX);
            self.tokens = self.tokens.saturating_add(refill).min(burst);
        }
        self.at = Some(now);
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
        if self.tokens >= 0 {
            return None;
        }
        let debt = self.tokens.unsigned_abs();
        let nanos = u128::from(debt) * 1_000_000_000 / u128::from(self.rate);
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bucket_lends_and_makes_the_reader_wait_for_the_debt() {
        let t0 = tokio::time::Instant::now();
        let mut b = ByteBucket::new(1000, 500);
        assert_eq!(b.take(500, t0), None, "the burst is free");
        assert_eq!(b.take(250, t0), Some(Duration::from_millis(250)));
        // 250 ms later the debt is paid; one more byte is owed.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(b.take(1, t1), Some(Duration::from_millis(1)));
        let mut unlimited = ByteBucket::new(0, 0);
        assert_eq!(unlimited.take(u64::MAX, t0), None);
    }
}
