//! The P2P responder (PROTOCOL.md A4): an accept loop and one task per inbound connection.
//!
//! Bytes → [`LineDecoder`] (refuses lines over the frame limit) → [`Responder`] (the protocol
//! decisions) → frames written back in order, coalesced into one write per read. A delivered
//! message goes to the [`Inbox`] and is acked only once the inbox took it; while the
//! application's queue is full this connection stops reading, so the sender stops getting
//! acks. Bounds (issue 13; every number in [`crate::defaults`]): connection slots with a share
//! per source address and eviction of the least useful holder when they run short
//! ([`crate::slots`]), an agent-wide budget for read buffers beyond one read each
//! ([`crate::budget`]; over it the connection closes with `overloaded`), one handshake per
//! connection and a handshake rate per source address ([`m2m_proto::rate`]), a handshake
//! deadline, an idle deadline and a write timeout.
//!
//! 2.1 (PROTOCOL.md B): while [`LocalIdentity::authenticates`], each connection gets a
//! [`Responder::with_identity`], which authenticates 2.1 initiators and serves 2.0 ones
//! unless the agent refuses unauthenticated peers. Once a session is authenticated it is
//! listed in [`InboundSessions`] under the peer's verified id, so that
//! [`Agent::respond`](crate::Agent::respond) can send the response back on this very
//! connection (sealed by the responder, acked by the initiator): an agent that accepts no
//! inbound connections can still make requests. `respond` seals and writes the response
//! itself through the connection engine ([`crate::conn`]); the connection's task only
//! finishes writes the stream could not take at once. After a read that delivered messages
//! the task lets the application run once before writing the acks, so that an immediate
//! response leaves in the same write as the request's ack.
//!
//! Relay (docs/RELAY.md section 4): a stream the hub opens towards us runs on this same path
//! ([`handle_connection`] over a [`crate::relay::RelayStream`]): the same slots, budget and
//! handshake rate, with the source key being the agent id the hub stamped in the OPEN
//! ([`relay_source`]) instead of an IP. Over the relay only 2.1 is served, and the identity
//! the initiator proves must be the stamped id, or the connection closes before anything
//! reaches the application.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::frame::{errors, ParsedFrame};
use m2m_proto::rate::{KeyedBuckets, Rate};
use m2m_proto::{Frame, LineDecoder, Responder, ResponderOutput};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::{BufferBudget, BufferCharge};
use crate::conn::{self, out, ConnLimits, Connection, SendError, WriteHalf};
use crate::defaults::{ACCEPT_RETRY_DELAY, FLUSH_AT, MAX_AWAITING_ACK, MIN_READ, READ_CHUNK};
use crate::error::AgentError;
use crate::identity::LocalIdentity;
use crate::inbox::Inbox;
use crate::message::Route;
use crate::refusals::{Limit, RefusalCounter};
use crate::slots::{InboundSlots, Slot, Stage};

/// The engine of one inbound connection: [`Agent::respond`](crate::Agent::respond) seals
/// and writes responses on it; its task reads it.
type InboundConn<W> = Connection<Responder, W>;

/// Why a message could not go back on an inbound session.
#[derive(Debug)]
pub(crate) enum NotSentBack {
    /// No live authenticated session from that peer, or it ended before the ack: use
    /// another route.
    NoSession,
    /// A definite failure (the message is too large for a frame).
    Failed(AgentError),
}

/// One listed session: its key and its connection.
type BackRoute<W> = (u64, Arc<InboundConn<W>>);

/// Live authenticated inbound sessions by the peer's verified id (over TCP in the agent;
/// over in-memory streams in tests).
#[derive(Debug)]
pub(crate) struct InboundSessions<W = OwnedWriteHalf> {
    next_key: AtomicU64,
    live: Mutex<HashMap<String, Vec<BackRoute<W>>>>,
}

impl<W> Default for InboundSessions<W> {
    fn default() -> Self {
        InboundSessions {
            next_key: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
        }
    }
}

/// A session's entry in [`InboundSessions`]; dropping it removes the entry.
struct Listed<W> {
    sessions: Arc<InboundSessions<W>>,
    peer: String,
    key: u64,
}

impl<W> Drop for Listed<W> {
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

impl<W: WriteHalf> InboundSessions<W> {
    fn list(self: &Arc<Self>, peer: &str, conn: &Arc<InboundConn<W>>) -> Listed<W> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .entry(peer.to_owned())
            .or_default()
            .push((key, conn.clone()));
        Listed {
            sessions: self.clone(),
            peer: peer.to_owned(),
            key,
        }
    }

    /// Sends a message back to `peer` on its newest live authenticated session; resolves
    /// when the peer acked it. Not bounded in time: the caller applies the send timeout.
    ///
    /// The caller seals the frame and writes it to the socket itself; only if the socket
    /// is full does the connection's task finish the write.
    pub(crate) async fn send_back(
        &self,
        peer: &str,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<(), NotSentBack> {
        let conn = self
            .live
            .lock()
            .get(peer)
            .and_then(|list| list.last().map(|(_, conn)| conn.clone()))
            .ok_or(NotSentBack::NoSession)?;
        let plaintext = conn::plaintext(payload);
        // Re-keyed by a new handshake since it was listed: not that peer's session.
        let sent = conn
            .send(message_type, &plaintext, correlation_id, |responder| {
                responder.peer_id() == Some(peer)
            })
            .await;
        match sent {
            Ok(()) => Ok(()),
            Err(SendError::Lost { .. } | SendError::Seal(_)) => Err(NotSentBack::NoSession),
            Err(SendError::TooLarge { .. }) => {
                Err(NotSentBack::Failed(AgentError::InvalidPayload(format!(
                    "response exceeds the {}-byte frame limit",
                    conn.max_frame_len()
                ))))
            }
            Err(SendError::Refused(e)) => Err(NotSentBack::Failed(e)),
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
    pub max_per_ip: usize,
    pub buffer_budget: usize,
    pub handshakes_per_second: u32,
    pub handshake_burst: u32,
}

/// What the connections of one listener share to stay within the limits.
#[derive(Debug)]
pub(crate) struct SharedLimits {
    limits: InboundLimits,
    budget: BufferBudget,
    /// Handshakes per source address (issue 13 #9): one costs us an X25519 exchange and,
    /// for 2.1, an Ed25519 signature and a verification.
    handshake_rate: Mutex<KeyedBuckets>,
}

impl SharedLimits {
    pub(crate) fn new(limits: InboundLimits) -> Arc<Self> {
        Arc::new(SharedLimits {
            budget: BufferBudget::new(limits.buffer_budget, READ_CHUNK),
            handshake_rate: Mutex::new(KeyedBuckets::new(
                Rate::per_second(limits.handshakes_per_second, limits.handshake_burst),
                crate::defaults::RATE_TRACKED_ADDRESSES,
            )),
            limits,
        })
    }
}

/// What every inbound connection shares.
#[derive(Debug)]
pub(crate) struct InboundContext<W = OwnedWriteHalf> {
    pub inbox: Arc<Inbox>,
    pub local: Arc<LocalIdentity>,
    pub sessions: Arc<InboundSessions<W>>,
    pub refusals: Arc<RefusalCounter>,
    /// How these connections reach us: over the relay only 2.1 is served.
    pub route: Route,
}

impl<W> Clone for InboundContext<W> {
    fn clone(&self) -> Self {
        InboundContext {
            inbox: self.inbox.clone(),
            local: self.local.clone(),
            sessions: self.sessions.clone(),
            refusals: self.refusals.clone(),
            route: self.route,
        }
    }
}

/// The source key of a relayed connection: the raw bytes of the agent id the hub stamped,
/// read as an IPv6 address, so that the slots and the handshake rate (keyed by source,
/// IPv6 by /64) count each relayed agent apart, as they count each IP. The first 64 bits of
/// an id are a hash: no real network prefix is singled out, and none can be aimed at.
pub(crate) fn relay_source(raw: &m2m_proto::relay::RawAgentId) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(*raw))
}

/// Accepts P2P connections until `cancel`; each runs on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    context: InboundContext,
    slots: Arc<InboundSlots>,
    shared: Arc<SharedLimits>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match slots.admit(peer.ip(), Instant::now()) {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    let (reader, writer) = stream.into_split();
                    tracker.spawn(handle_connection(
                        reader,
                        Arc::new(writer),
                        peer.ip(),
                        None,
                        context.clone(),
                        shared.clone(),
                        cancel.clone(),
                        slot,
                    ));
                }
                // Counted and logged by the slots.
                Err(_) => drop(stream),
            },
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// Whether `line` is a handshake (which costs us a key exchange).
fn is_handshake(line: &[u8]) -> bool {
    matches!(
        Frame::parse_borrowed(line),
        Ok(ParsedFrame::Other(Frame::Handshake { .. }))
    )
}

/// The stage of a connection for eviction.
fn stage(responder: &Responder) -> Stage {
    if responder.is_authenticated() {
        Stage::Authenticated
    } else if responder.is_established() {
        Stage::Unauthenticated
    } else {
        Stage::Handshaking
    }
}

/// One inbound connection, from its first byte to its close: the deadlines, the read
/// budget, the handshake rate, the responder's decisions, delivery to the inbox and the
/// answers, over any byte stream (`reader`, `writer`). `stamped`: over the relay, the agent
/// id the hub says opened the stream, which the initiator's identity must prove.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handle_connection<R, W>(
    mut reader: R,
    writer: Arc<W>,
    ip: IpAddr,
    stamped: Option<String>,
    context: InboundContext<W>,
    shared: Arc<SharedLimits>,
    cancel: CancellationToken,
    slot: Slot,
) where
    R: AsyncRead + Unpin,
    W: WriteHalf,
{
    let limits = &shared.limits;
    let mut charge: BufferCharge = shared.budget.charge();
    let mut stage_seen = Stage::Handshaking;
    let inbox = &context.inbox;
    let relayed = context.route == Route::Relay;
    let responder = if relayed {
        // No 2.0 over the relay: the stamped id must be proven.
        Responder::with_identity(
            context.local.identity().clone(),
            m2m_proto::PeerPolicy::AuthenticatedOnly,
        )
    } else if context.local.authenticates() {
        Responder::with_identity(context.local.identity().clone(), context.local.policy())
    } else {
        Responder::new()
    };
    let conn = Arc::new(Connection::new(
        responder,
        writer.clone(),
        cancel.child_token(),
        ConnLimits {
            max_frame_len: limits.max_frame_len,
            max_awaiting_ack: MAX_AWAITING_ACK,
        },
        false,
    ));
    // Once authenticated: our entry in `InboundSessions`.
    let mut listed: Option<Listed<W>> = None;
    let mut decoder = LineDecoder::new(limits.max_frame_len);
    let handshake_deadline = Instant::now() + limits.handshake_timeout;
    let mut last_read = Instant::now();
    // Writes what the connection owes (tries at once, then waits for room).
    let flush = || conn.drain(&writer, limits.write_timeout);

    'conn: loop {
        let idle_deadline = last_read + limits.idle_timeout;
        let deadline = if conn.session().is_established() {
            idle_deadline
        } else {
            idle_deadline.min(handshake_deadline)
        };
        let room = READ_CHUNK.saturating_sub(decoder.buffered()).max(MIN_READ);
        if charge.cover(decoder.grown_capacity(room)).is_err() {
            context.refusals.refused(Limit::BufferBudget, &ip);
            Frame::error(errors::OVERLOADED).encode_into(&mut conn.out().buf);
            let _ = flush().await;
            break;
        }
        let read = tokio::select! {
            biased;
            // The agent stops, or a write found the stream closed.
            _ = conn.closed().cancelled() => break,
            // A newcomer took our slot (we were the least useful connection).
            _ = slot.evicted.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            // A response writer found the stream full: wait for it on its behalf.
            _ = conn.writer_wanted() => {
                if !flush().await {
                    break;
                }
                continue;
            }
            // Straight into the decoder's buffer: no copy of what was read.
            read = reader.read(decoder.read_buf(room)) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last_read = Instant::now();
        decoder.commit(n);
        let mut close = false;
        let mut delivered_any = false;
        loop {
            let mut line_len = 0;
            let output = match decoder.next_line() {
                Ok(Some(line)) => {
                    line_len = line.len();
                    let mut responder = conn.session();
                    if responder.awaits_handshake()
                        && is_handshake(line)
                        && !shared
                            .handshake_rate
                            .lock()
                            .try_take(ip, Instant::now().into_std())
                    {
                        context.refusals.refused(Limit::HandshakeRate, &ip);
                        ResponderOutput::SendAndClose(Frame::error(errors::RATE_LIMITED))
                    } else {
                        responder.handle_line(line, &mut rand::thread_rng())
                    }
                }
                Ok(None) => break,
                Err(_) => conn.session().line_too_long(),
            };
            match output {
                ResponderOutput::Nothing => {}
                // The initiator acked a message we sent back on this session.
                ResponderOutput::Acked(_) => conn.acked(),
                ResponderOutput::Send(frame) => frame.encode_into(&mut conn.out().buf),
                ResponderOutput::SendAndClose(frame) => {
                    frame.encode_into(&mut conn.out().buf);
                    close = true;
                    break;
                }
                ResponderOutput::Deliver { message, ack } => {
                    if let Some(stamped) = &stamped {
                        if conn.session().peer_id() != Some(stamped.as_str()) {
                            // The hub stamped someone other than who proved it: a lying hub.
                            tracing::debug!(%stamped, "relayed peer proved another identity");
                            Frame::error(errors::AUTHENTICATION_FAILED)
                                .encode_into(&mut conn.out().buf);
                            close = true;
                            break;
                        }
                    }
                    // Listed before the application sees the message, so that its
                    // response finds this session.
                    relist(&conn, &mut listed, &context.sessions);
                    // The application is behind: send what we owe, then wait for room
                    // without reading further, which slows the sender down.
                    match conn
                        .deliver(
                            inbox,
                            conn::to_message(message, context.route),
                            line_len,
                            flush,
                        )
                        .await
                    {
                        Ok(false) => {}
                        // Time spent waiting for the application is not idleness.
                        Ok(true) => last_read = Instant::now(),
                        Err(_) => break 'conn,
                    }
                    ack.encode_into(&mut conn.out().buf);
                    delivered_any = true;
                }
            }
            let full = conn.out().buf.len() >= FLUSH_AT;
            if full && !flush().await {
                break 'conn;
            }
        }
        if delivered_any && !close {
            // Let the application run before the acks go out: a response it sends at once
            // (a request's) then leaves in the same write as the ack, and the requester
            // reads both at once.
            out::let_others_write_first().await;
        }
        if !flush().await || close {
            break;
        }
        let now_stage = stage(&conn.session());
        if delivered_any || now_stage != stage_seen {
            stage_seen = now_stage;
            slot.useful(now_stage, Instant::now());
        }
        relist(&conn, &mut listed, &context.sessions);
    }
    drop(listed);
    // What we sent back and was not acked is lost: `send_back` callers use another route.
    conn.close("connection closed");
    // The last handle on the write side: dropping it shuts it down.
    drop(writer);
}

/// Lists the session once authenticated; unlists it if a new handshake re-keyed it (as
/// someone else, or as 2.0): what we sent back before is then lost.
fn relist<W: WriteHalf>(
    conn: &Arc<InboundConn<W>>,
    listed: &mut Option<Listed<W>>,
    sessions: &Arc<InboundSessions<W>>,
) {
    let responder = conn.session();
    let peer = responder
        .is_authenticated()
        .then(|| responder.peer_id())
        .flatten();
    if listed.as_ref().map(|l| l.peer.as_str()) != peer {
        let peer = peer.map(str::to_owned);
        drop(responder);
        *listed = peer.map(|p| sessions.list(&p, conn));
        conn.fail_all("re-keyed");
    }
}
