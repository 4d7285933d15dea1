//! Outbound P2P connections: one encrypted session per peer, reused for many messages with
//! pipelined acks, in a pool keyed by address and [`Credentials`] (so a session made under
//! one expectation of the peer's identity never carries a send that expects another).
//!
//! [`PeerConnection::open`] dials and runs the [`Initiator`] handshake (2.1: then sends
//! `auth` before anything else); the established session then runs on the connection
//! engine ([`crate::conn`]), which seals, size-checks, queues for the ack and writes. This
//! file adds two tasks per connection: a reader that matches acks (they come in order) to
//! the engine's queue, and on a 2.1 session hands messages the peer sends back (responses
//! above all) to the [`Inbox`], acked once taken, in one write per read; and a writer that
//! writes what senders left to it (frames queued behind others, writes the stream could not
//! take at once) and closes the connection once it has been idle for `pool_idle_close`,
//! before the peer's own idle close, so we never write into a connection the peer is tearing
//! down. An error frame fails the oldest in-flight message; a closed stream fails all of
//! them; dropping the last handle closes the connection too.
//!
//! The pool of these connections is in `pool.rs`, `ping` (no session) in `ping.rs`.
//!
//! Relay: a [`Dial::Relay`] opens a stream through the hub's relay instead of a TCP
//! connection ([`crate::relay`]) and runs the same handshake and engine on it; only 2.1
//! sessions go there (the caller demands the identity the record publishes).

use std::sync::Arc;
use std::time::Duration;

use m2m_proto::crypto::{NONCE_LEN, TAG_LEN};
use m2m_proto::{
    Identity, IdentityKey, Initiator, InitiatorEvent, LineDecoder, PeerExpectation, SessionError,
};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{self, out, ConnLimits, Connection, SendError, WriteHalf};
use crate::defaults::{MAX_AWAITING_ACK, READ_CHUNK};
use crate::error::{AgentError, Result};
use crate::inbox::Inbox;
use crate::message::Route;
use crate::relay::{relay_closed, RelayClient, RelayWriter};

mod ping;
mod pool;

pub(crate) use ping::ping;
#[cfg(test)]
pub(crate) use ping::ping_on;
pub(crate) use pool::{Pool, PoolError};

/// Who we are on an outbound session and what we demand of the peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Credentials {
    /// 2.0: declare `from`; nothing is proven either way.
    Plain {
        /// The id declared in the handshake.
        from: String,
    },
    /// 2.1: prove our identity (our `from` is its derived id) and have the peer prove
    /// `expect` — the key the hub vouches for — or, with `require`, at least some identity.
    Authenticated {
        /// The peer's identity key according to the hub.
        expect: Option<IdentityKey>,
        /// Refuse a 2.0 answer even when the hub vouches for nothing.
        require: bool,
    },
}

impl Credentials {
    /// 2.0 credentials declaring `from`.
    pub(crate) fn plain(from: &str) -> Self {
        Credentials::Plain {
            from: from.to_owned(),
        }
    }
}

/// How an outbound connection is made.
#[derive(Debug, Clone)]
pub(crate) enum Dial {
    /// A TCP connection to `address`; connect and handshake within `timeout` (a failure
    /// there sent nothing, so the caller may try another route).
    Tcp {
        /// `host:port`.
        address: String,
        /// Bound of the connect and the handshake.
        timeout: Duration,
    },
    /// A stream through the hub's relay to agent `agent`.
    Relay {
        /// The relay of our hub WebSocket.
        client: Arc<RelayClient>,
        /// The destination's id.
        agent: String,
    },
}

impl Dial {
    /// A direct dial bounded only by the caller's timeout.
    pub(crate) fn tcp(address: &str) -> Self {
        Dial::Tcp {
            address: address.to_owned(),
            timeout: Duration::MAX,
        }
    }

    /// The pool's key: the address, or `relay:<id>` (never a `host:port`).
    pub(crate) fn key(&self) -> String {
        match self {
            Dial::Tcp { address, .. } => address.clone(),
            Dial::Relay { agent, .. } => format!("relay:{agent}"),
        }
    }

    /// What errors name: the address, or `relay:<id>`.
    fn label(&self) -> String {
        self.key()
    }

    pub(crate) fn route(&self) -> Route {
        match self {
            Dial::Tcp { .. } => Route::Direct,
            Dial::Relay { .. } => Route::Relay,
        }
    }
}

/// Why [`PeerConnection::open`] failed: `dial` when nothing was sent (connect or handshake
/// failed), so another route may be tried.
#[derive(Debug)]
pub(crate) struct OpenError {
    pub error: AgentError,
}

/// Bounds of outbound connections.
#[derive(Debug, Clone)]
pub(crate) struct OutboundSettings {
    pub max_frame_len: usize,
    pub write_timeout: Duration,
    pub pool_idle_close: Duration,
}

/// How a send on one connection failed.
pub(crate) enum SendFailure {
    /// The connection is gone; `nothing_acked` when the peer acked nothing after we queued.
    Lost { reason: String, nothing_acked: bool },
    /// A definite failure (error frame, payload too large).
    Failed(AgentError),
}

fn too_large(len: usize, max: usize) -> AgentError {
    AgentError::InvalidPayload(format!(
        "message of about {len} bytes exceeds the {max}-byte frame limit"
    ))
}

/// One established outbound session.
pub(crate) struct PeerConnection {
    conn: Outbound,
    address: String,
    /// What the session was made under: it is reused only for the same.
    credentials: Credentials,
}

/// The engine of an outbound connection, over TCP or the relay.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// A TCP connection.
    Tcp(Arc<Connection<Initiator, tokio::net::tcp::OwnedWriteHalf>>),
    /// A relayed stream.
    Relay(Arc<Connection<Initiator, RelayWriter>>),
}

/// Runs `$body` with `$c` bound to the engine, whichever its transport.
macro_rules! on_engine {
    ($outbound:expr, $c:ident => $body:expr) => {
        match $outbound {
            Outbound::Tcp($c) => $body,
            Outbound::Relay($c) => $body,
        }
    };
}

impl Outbound {
    pub(crate) fn is_closed(&self) -> bool {
        on_engine!(self, c => c.is_closed())
    }

    fn closed(&self) -> &CancellationToken {
        on_engine!(self, c => c.closed())
    }

    fn max_frame_len(&self) -> usize {
        on_engine!(self, c => c.max_frame_len())
    }

    #[cfg(test)]
    fn awaiting_ack(&self) -> usize {
        on_engine!(self, c => c.awaiting_ack())
    }

    async fn send(
        &self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: &str,
    ) -> std::result::Result<(), SendError> {
        on_engine!(self, c => c.send(message_type, plaintext, correlation_id, |_| true).await)
    }
}

/// Writes all of `buf`, waiting for the stream as needed.
async fn write_all<W: WriteHalf>(writer: &W, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match writer.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => writer.writable().await?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The error of a relayed stream's IO error `e`: the hub's CLOSE reason when it closed it.
fn io_error(dial: &Dial, e: std::io::Error) -> AgentError {
    match (dial, relay_closed(&e)) {
        (Dial::Relay { agent, .. }, Some(closed)) => AgentError::RelayClosed {
            agent: agent.clone(),
            reason: closed.reason,
            detail: closed.detail,
        },
        _ => AgentError::unreachable_io(&dial.label(), e),
    }
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConnection")
            .field("address", &self.address)
            .field("closed", &self.conn.is_closed())
            .finish()
    }
}

fn session_error(address: &str, e: SessionError) -> AgentError {
    match e {
        SessionError::PeerError(error) => conn::peer_error(address, error),
        e @ (SessionError::Authentication(_) | SessionError::DowngradeRefused) => {
            AgentError::Authentication {
                address: address.to_owned(),
                reason: e.to_string(),
            }
        }
        e @ (SessionError::Protocol(_)
        | SessionError::Crypto(_)
        | SessionError::Replay
        | SessionError::DecryptionFailed) => AgentError::misbehaved(address, e),
        // We sealed before the handshake completed: our bug, not the peer's.
        e @ SessionError::NotEstablished => AgentError::Peer {
            address: address.to_owned(),
            error: e.to_string(),
        },
    }
}

impl PeerConnection {
    /// Connects (`dial`) and completes the handshake under `credentials` (2.1: as
    /// `identity`). A TCP dial is bounded by its timeout, connect and handshake together;
    /// the rest by the caller's timeout.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        dial: &Dial,
        credentials: &Credentials,
        identity: &Identity,
        settings: &OutboundSettings,
        inbox: &Arc<Inbox>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> std::result::Result<Arc<Self>, OpenError> {
        let label = dial.label();
        let fail = |error| OpenError { error };
        let conn = match dial {
            Dial::Tcp { address, timeout } => {
                let dialled = async {
                    let stream = TcpStream::connect(address.as_str())
                        .await
                        .map_err(|e| AgentError::unreachable_io(address, e))?;
                    let _ = stream.set_nodelay(true);
                    let (reader, writer) = stream.into_split();
                    establish(
                        dial,
                        reader,
                        Arc::new(writer),
                        credentials,
                        identity,
                        settings,
                        cancel,
                    )
                    .await
                };
                let established = match tokio::time::timeout(*timeout, dialled).await {
                    Ok(r) => r.map_err(fail)?,
                    Err(_) => {
                        return Err(fail(AgentError::timeout(
                            format!("direct connect to {address}"),
                            *timeout,
                        )))
                    }
                };
                Outbound::Tcp(start(
                    established,
                    &label,
                    inbox,
                    dial.route(),
                    settings,
                    tracker,
                ))
            }
            Dial::Relay { client, agent } => {
                let stream = client.open(agent).map_err(fail)?;
                let (reader, writer) = stream.split();
                let established = establish(
                    dial,
                    reader,
                    Arc::new(writer),
                    credentials,
                    identity,
                    settings,
                    cancel,
                )
                .await
                .map_err(fail)?;
                Outbound::Relay(start(
                    established,
                    &label,
                    inbox,
                    Route::Relay,
                    settings,
                    tracker,
                ))
            }
        };
        Ok(Arc::new(PeerConnection {
            conn,
            address: label,
            credentials: credentials.clone(),
        }))
    }

    fn is_usable(&self, credentials: &Credentials) -> bool {
        !self.conn.is_closed() && self.credentials == *credentials
    }

    /// Seals and sends one message; resolves when the peer acked it (see [`Connection::send`]).
    pub(crate) async fn send(
        &self,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> std::result::Result<(), SendFailure> {
        let max = self.conn.max_frame_len();
        let plaintext = conn::plaintext(payload);
        // base64 of nonce + tag + ciphertext, plus the frame around it: refused before the
        // cost of sealing it.
        let estimate = (NONCE_LEN + TAG_LEN + plaintext.len()).div_ceil(3) * 4
            + message_type.len()
            + correlation_id.len()
            + 64;
        if estimate > max {
            return Err(SendFailure::Failed(too_large(estimate, max)));
        }
        match self
            .conn
            .send(message_type, &plaintext, correlation_id)
            .await
        {
            Ok(()) => Ok(()),
            Err(SendError::Lost {
                reason,
                nothing_acked,
            }) => Err(SendFailure::Lost {
                reason,
                nothing_acked,
            }),
            Err(SendError::Seal(e)) => Err(SendFailure::Failed(session_error(&self.address, e))),
            Err(SendError::TooLarge { len }) => Err(SendFailure::Failed(too_large(len, max))),
            Err(SendError::Refused(e)) => Err(SendFailure::Failed(e)),
        }
    }

    /// Closes the connection; in-flight messages fail.
    pub(crate) fn close(&self) {
        self.conn.closed().cancel();
    }

    /// Messages sent and not yet acked (tests).
    #[cfg(test)]
    pub(crate) fn awaiting_ack(&self) -> usize {
        self.conn.awaiting_ack()
    }

    /// Resolves once the connection is closed (tests wait for the peer's close with it).
    #[cfg(test)]
    pub(crate) async fn closed(&self) {
        self.conn.closed().cancelled().await
    }
}

impl Drop for PeerConnection {
    /// The last handle gone (the pool dropped or replaced it): nobody can send on it any
    /// more, so it closes.
    fn drop(&mut self) {
        self.conn.closed().cancel();
    }
}

/// The established engine of a new connection, with its reader and decoder.
type Established<R, W> = (Connection<Initiator, W>, R, LineDecoder, Arc<W>);

/// Runs the initiator handshake on a new stream (`dial` names it in errors).
/// Starts the two tasks of an established connection (the reader of acks and messages, the
/// writer of what senders left behind) on `tracker`; returns its engine.
fn start<R, W>(
    (conn, reader, decoder, writer): Established<R, W>,
    label: &str,
    inbox: &Arc<Inbox>,
    route: Route,
    settings: &OutboundSettings,
    tracker: &TaskTracker,
) -> Arc<Connection<Initiator, W>>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: WriteHalf,
{
    let conn = Arc::new(conn);
    tracker.spawn(read_frames(
        reader,
        decoder,
        conn.clone(),
        label.to_owned(),
        inbox.clone(),
        route,
    ));
    tracker.spawn(write_frames(writer, conn.clone(), settings.clone()));
    conn
}

async fn establish<R, W>(
    dial: &Dial,
    mut reader: R,
    writer: Arc<W>,
    credentials: &Credentials,
    identity: &Identity,
    settings: &OutboundSettings,
    cancel: &CancellationToken,
) -> Result<Established<R, W>>
where
    R: AsyncRead + Unpin,
    W: WriteHalf,
{
    let address = dial.label();
    let address = address.as_str();
    let (mut session, hello) = match credentials {
        Credentials::Plain { from } => Initiator::new(from, &mut rand::thread_rng()),
        Credentials::Authenticated { expect, require } => Initiator::new_authenticated(
            identity,
            PeerExpectation {
                identity: *expect,
                require_authenticated: *require,
            },
            &mut rand::thread_rng(),
        ),
    };
    write_all(&*writer, &hello.encode())
        .await
        .map_err(|e| io_error(dial, e))?;
    let mut decoder = LineDecoder::new(settings.max_frame_len);
    'handshake: loop {
        let n = reader
            .read(decoder.read_buf(READ_CHUNK))
            .await
            .map_err(|e| io_error(dial, e))?;
        if n == 0 {
            return Err(AgentError::unreachable(
                address,
                "connection closed during handshake",
            ));
        }
        decoder.commit(n);
        loop {
            let event = match decoder.next_line() {
                Ok(Some(line)) => session.handle_line(line),
                Ok(None) => break,
                Err(e) => return Err(AgentError::misbehaved(address, e)),
            };
            match event {
                Ok(InitiatorEvent::Established) => break 'handshake,
                Ok(_) => {}
                Err(e) => return Err(session_error(address, e)),
            }
        }
    }
    // 2.1: the initiator proves its identity before its first message.
    if let Some(auth) = session.take_auth_frame() {
        write_all(&*writer, &auth.encode())
            .await
            .map_err(|e| io_error(dial, e))?;
    }
    let conn = Connection::new(
        session,
        writer.clone(),
        cancel.child_token(),
        ConnLimits {
            max_frame_len: settings.max_frame_len,
            max_awaiting_ack: MAX_AWAITING_ACK,
        },
        true,
    );
    Ok((conn, reader, decoder, writer))
}

/// Reads acks (and, on a 2.1 session, messages the peer sends back) until the connection
/// ends; then fails whatever is still in flight.
async fn read_frames<R, W>(
    mut reader: R,
    mut decoder: LineDecoder,
    conn: Arc<Connection<Initiator, W>>,
    address: String,
    inbox: Arc<Inbox>,
    route: Route,
) where
    R: AsyncRead + Unpin,
    W: WriteHalf,
{
    let reason: String = 'conn: loop {
        // Lines left over from the handshake's last read come first.
        let mut acks_owed = false;
        loop {
            let (line_len, event) = match decoder.next_line() {
                Ok(Some(line)) => (line.len(), conn.session().handle_line(line)),
                Ok(None) => break,
                Err(e) => break 'conn e.to_string(),
            };
            match event {
                Ok(InitiatorEvent::Acked(_)) => conn.acked(),
                Ok(InitiatorEvent::Message { message, ack }) => {
                    // Written before waiting for room: the acks this read owes already.
                    let flush = async || {
                        conn.flush_or_hand_over(&mut conn.out());
                        true
                    };
                    if let Err(reason) = conn
                        .deliver(&inbox, conn::to_message(message, route), line_len, flush)
                        .await
                    {
                        break 'conn reason.to_owned();
                    }
                    // Acked only once the inbox took it, as the responder does; written
                    // with the other acks of this read.
                    ack.encode_into(&mut conn.out().buf);
                    acks_owed = true;
                }
                Ok(_) => {}
                // The responder answers in order: the error is about the oldest message.
                Err(SessionError::PeerError(error)) => {
                    conn.refused(conn::peer_error(&address, error))
                }
                Err(e) => break 'conn e.to_string(),
            }
        }
        if acks_owed {
            // Let the requester that the response woke run first: its next request then
            // carries these acks in the same write.
            out::let_others_write_first().await;
            conn.flush_or_hand_over(&mut conn.out());
        }
        let read = tokio::select! {
            biased;
            _ = conn.closed().cancelled() => break 'conn "connection closed".into(),
            // Straight into the decoder's buffer: no copy of what was read.
            read = reader.read(decoder.read_buf(READ_CHUNK)) => read,
        };
        match read {
            Ok(0) => break "connection closed by peer".into(),
            Ok(n) => decoder.commit(n),
            Err(e) => break e.to_string(),
        }
    };
    conn.closed().cancel();
    conn.fail_all(&reason);
}

/// Writes what senders left to it (frames batched while others were in flight, or the rest
/// of a write the stream could not take at once), and closes the connection once it has
/// been idle for `pool_idle_close`.
async fn write_frames<W: WriteHalf>(
    writer: Arc<W>,
    conn: Arc<Connection<Initiator, W>>,
    settings: OutboundSettings,
) {
    loop {
        let idle_since = conn.out().last_write;
        tokio::select! {
            biased;
            _ = conn.closed().cancelled() => break,
            _ = conn.writer_wanted() => {
                out::let_others_append_first().await;
                if !conn.drain(&writer, settings.write_timeout).await {
                    break;
                }
            }
            _ = tokio::time::sleep_until(idle_since + settings.pool_idle_close) => {
                let out = conn.out();
                if out.last_write == idle_since && !out.busy {
                    break;
                }
            }
        }
    }
    conn.close("connection closed");
    // Our handle is the last one: dropping it shuts the write side down.
    drop(writer);
}
