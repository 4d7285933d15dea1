//! P2P tests without a hub: our responder against hostile raw clients (`inbound.rs`), and
//! our pooled initiator against our responder and hand-driven peers (`outbound.rs`). This
//! file holds what both use. Tests of deadlines and rates drive the responder over
//! in-memory streams ([`MemoryListener`]) on paused time: real sockets let paused time jump
//! ahead while the kernel carries bytes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::{Frame, Identity, Initiator, InitiatorEvent};
use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
    ReadHalf, WriteHalf,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::transport::Piped;
use crate::error::AgentError;
use crate::identity::LocalIdentity;
use crate::inbox::Inbox;
use crate::listener::{
    handle_connection, serve, InboundContext, InboundLimits, InboundSessions, SharedLimits,
};
use crate::peer::{Credentials, OutboundSettings, Pool};
use crate::refusals::RefusalCounter;
use crate::slots::InboundSlots;

mod inbound;
mod outbound;

struct Server {
    address: String,
    inbox: Arc<Inbox>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn limits() -> InboundLimits {
    InboundLimits {
        max_frame_len: 4096,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_per_ip: 64,
        buffer_budget: crate::defaults::INBOUND_BUFFER_BUDGET,
        handshakes_per_second: crate::defaults::HANDSHAKES_PER_SECOND_PER_IP,
        handshake_burst: crate::defaults::HANDSHAKE_BURST_PER_IP,
    }
}

async fn server_with(limits: InboundLimits, capacity: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let inbox = Inbox::new(capacity, crate::defaults::INBOX_BYTES);
    let cancel = CancellationToken::new();
    let refusals = Arc::new(RefusalCounter::default());
    tokio::spawn(serve(
        listener,
        InboundContext {
            inbox: inbox.clone(),
            local: Arc::new(LocalIdentity::new(
                Identity::generate(&mut rand::thread_rng()),
                false,
                false,
            )),
            sessions: Arc::new(InboundSessions::default()),
            refusals: refusals.clone(),
            route: crate::message::Route::Direct,
        },
        InboundSlots::new(limits.max_connections, limits.max_per_ip, refusals),
        SharedLimits::new(limits),
        cancel.clone(),
        TaskTracker::new(),
    ));
    Server {
        address,
        inbox,
        cancel,
    }
}

/// Sends `payload(i)` for each `i` in `0..n` from `pool` to `address` at once (message type
/// `n`, correlationId `c{i}`), each in its own task.
fn spawn_sends(
    pool: &Arc<Pool>,
    address: &str,
    n: usize,
    payload: impl Fn(usize) -> Value,
) -> tokio::task::JoinSet<Result<(), AgentError>> {
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..n {
        let pool = pool.clone();
        let address = address.to_owned();
        let payload = payload(i);
        sends.spawn(async move {
            pool.send(
                &address,
                &Credentials::plain("me"),
                "n",
                &payload,
                &format!("c{i}"),
            )
            .await
        });
    }
    sends
}

fn pool_with(idle: Duration) -> Pool {
    Pool::new(
        OutboundSettings {
            max_frame_len: 4096,
            write_timeout: Duration::from_secs(5),
            pool_idle_close: idle,
        },
        Identity::generate(&mut rand::thread_rng()),
        Inbox::new(16, crate::defaults::INBOX_BYTES),
        CancellationToken::new(),
        TaskTracker::new(),
    )
}

/// The responder's side of an in-memory stream.
type MemoryWriter = Piped<WriteHalf<DuplexStream>>;

/// Our responder without a socket: each [`MemoryListener::connect`] runs one inbound
/// connection's task over an in-memory stream, with the slots and limits they all share.
struct MemoryListener {
    shared: Arc<SharedLimits>,
    slots: Arc<InboundSlots>,
    context: InboundContext<MemoryWriter>,
    cancel: CancellationToken,
}

impl MemoryListener {
    fn new(limits: InboundLimits) -> Self {
        let refusals = Arc::new(RefusalCounter::default());
        MemoryListener {
            slots: InboundSlots::new(limits.max_connections, limits.max_per_ip, refusals.clone()),
            shared: SharedLimits::new(limits),
            context: InboundContext {
                inbox: Inbox::new(16, crate::defaults::INBOX_BYTES),
                local: Arc::new(LocalIdentity::new(
                    Identity::generate(&mut rand::thread_rng()),
                    false,
                    false,
                )),
                sessions: Arc::new(InboundSessions::default()),
                refusals,
                route: crate::message::Route::Direct,
            },
            cancel: CancellationToken::new(),
        }
    }

    /// A connection from `ip`: its task starts now (its deadlines count from here).
    fn connect(&self, ip: [u8; 4]) -> Raw<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>> {
        let ip = IpAddr::from(ip);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(server);
        let slot = self.slots.admit(ip, Instant::now()).unwrap();
        tokio::spawn(handle_connection(
            r,
            Arc::new(Piped::new(w)),
            ip,
            None,
            self.context.clone(),
            self.shared.clone(),
            self.cancel.clone(),
            slot,
        ));
        let (reader, writer) = tokio::io::split(client);
        Raw {
            reader: BufReader::new(reader),
            writer,
        }
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A raw line client.
struct Raw<R = OwnedReadHalf, W = OwnedWriteHalf> {
    reader: BufReader<R>,
    writer: W,
}

impl Raw {
    async fn connect(address: &str) -> Raw {
        let (r, w) = TcpStream::connect(address).await.unwrap().into_split();
        Raw {
            reader: BufReader::new(r),
            writer: w,
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Raw<R, W> {
    async fn send(&mut self, line: &[u8]) {
        self.writer.write_all(line).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    /// The next line as JSON, or `None` at EOF / reset.
    async fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    /// Performs a valid handshake and returns the initiator.
    async fn handshake(&mut self, from: &str) -> Initiator {
        let (mut init, hello) = Initiator::new(from, &mut rand::thread_rng());
        self.writer.write_all(&hello.encode()).await.unwrap();
        let ack = self.recv().await.unwrap();
        assert_eq!(ack["type"], "handshake_ack");
        let ev = init.handle_line(ack.to_string().as_bytes()).unwrap();
        assert_eq!(ev, InitiatorEvent::Established);
        init
    }
}

/// A hand-driven peer's side of the handshake on an accepted stream: reads the `handshake`
/// line and answers it.
async fn accept_handshake(
    stream: tokio::net::TcpStream,
) -> (
    tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    tokio::net::tcp::OwnedWriteHalf,
    m2m_proto::Responder,
) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut responder = m2m_proto::Responder::new();
    let hello = lines.next_line().await.unwrap().unwrap();
    let m2m_proto::ResponderOutput::Send(ack) =
        responder.handle_line(hello.as_bytes(), &mut rand::thread_rng())
    else {
        panic!("no handshake_ack");
    };
    w.write_all(&ack.encode()).await.unwrap();
    (lines, w, responder)
}
